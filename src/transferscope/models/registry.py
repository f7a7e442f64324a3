"""Model builders by name.

A builder is a function ``build(num_outputs, in_channels, **options) -> nn.Module`` registered
under a name (``fixup-small``, ``fixup-resnet50``, ``resnet18``, ``resnet50``) or a prefix
(``timm:<name>``). Options are checked against the builder's signature, so a misspelt option fails
with the nearest valid name. :func:`build_model` also loads pre-trained weights (ImageNet from
torchvision's local cache, or a local file) under a fresh head, and attaches the model's layout.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from transferscope.errors import TransferscopeError, check_option_names, did_you_mean
from transferscope.models.layout import layout, set_layout
from transferscope.models.weights import SUFFIXES, adapt_stem, load_state, read_state
from transferscope.named import NamedRegistry

Builder = Callable[..., nn.Module]
# Given an ImageNet variant name (e.g. "IMAGENET1K_V1"), the state dict from the local cache.
ImagenetLoader = Callable[[str], tuple[dict[str, Tensor], str]]
_FIXED = ("num_outputs", "in_channels")


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    imagenet: ImagenetLoader | None = None


# The builders register when the package's __init__ imports their modules; this module imports
# none of them (a leaf registry, as timm's models/_registry.py).
_MODELS: NamedRegistry[_Entry] = NamedRegistry(
    "model", "transferscope.models", "name", empty_rest=False
)


def register(
    name: str, *, prefix: bool = False, imagenet: ImagenetLoader | None = None
) -> Callable[[Builder], Builder]:
    """Register ``build`` under ``name`` (or, with ``prefix``, every ``name:<x>``).

    ``imagenet`` reads the architecture's ImageNet weights for ``pretrained="imagenet"``.
    """

    def wrap(fn: Builder) -> Builder:
        _MODELS.add(name, _Entry(fn, imagenet), prefix=prefix)
        return fn

    return wrap


def available_models() -> list[str]:
    """Every registered model name; prefixed families appear as ``prefix:<name>``."""
    return _MODELS.available()


def _resolve(name: str) -> tuple[_Entry, dict[str, Any]]:
    return _MODELS.resolve(name)


def model_options(name: str) -> list[str]:
    """The options model ``name`` accepts besides ``num_outputs`` and ``in_channels``.

    Families that pass options through (``timm:<name>``) list none; their options are checked by
    the library that builds them.
    """
    entry, fixed = _resolve(name)
    params = inspect.signature(entry.builder).parameters
    return [
        p
        for p, spec in params.items()
        if p not in (*_FIXED, *fixed) and spec.kind is not inspect.Parameter.VAR_KEYWORD
    ]


def check_model_options(name: str, options: dict[str, Any]) -> None:
    """Raise a clear error for an option model ``name`` does not accept."""
    entry, _ = _resolve(name)
    params = inspect.signature(entry.builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    valid = model_options(name)
    check_option_names(f"model '{name}'", options, valid)


def build_model(
    name: str,
    num_outputs: int,
    in_channels: int = 3,
    pretrained: str | os.PathLike[str] | None = None,
    **options: Any,
) -> nn.Module:
    """Build model ``name`` with ``num_outputs`` logits for ``in_channels``-channel images.

    The model maps (B, in_channels, H, W) to logits (B, num_outputs). ``pretrained``:

    - None: the architecture's own initialisation (Fixup init for ``fixup-*``);
    - ``"imagenet"`` (or ``"imagenet:IMAGENET1K_V2"`` for another torchvision variant):
      torchvision's ImageNet weights, read only from torchvision's local cache
      (``torch.hub.get_dir()``/checkpoints); nothing is downloaded;
    - a path to a ``.safetensors``/``.pt``/``.pth`` file: weights read safely (see
      :func:`read_state`).

    Pre-trained weights are loaded strictly except for the head (``fc``), which is freshly
    initialised with ``num_outputs`` outputs: the starting point of P-T (Neyshabur et al. 2020). A
    stem trained on another channel count is adapted (see :func:`adapt_stem`). To load a whole
    checkpoint including its head, build with ``pretrained=None`` and call
    :func:`load_state(model, read_state(path))`.
    """
    entry, fixed = _resolve(name)
    check_model_options(name, options)
    if num_outputs < 1 or in_channels < 1:
        raise TransferscopeError(
            f"model '{name}' needs num_outputs >= 1 and in_channels >= 1, got {num_outputs} and "
            f"{in_channels}"
        )
    model = entry.builder(num_outputs=num_outputs, in_channels=in_channels, **fixed, **options)
    # Some timm architectures have no inferable layout: the model is still usable, and the
    # analyses that need a layout ask for explicit layer names.
    with contextlib.suppress(TransferscopeError):
        set_layout(model, layout(model))
    if pretrained is None:
        return model
    pretrained = str(pretrained)
    if pretrained.lower().partition(":")[0] == "imagenet":
        if entry.imagenet is None:
            raise TransferscopeError(
                f"model '{name}' has no ImageNet weights in transferscope; pass pretrained= a "
                f"local weight file ({', '.join(SUFFIXES)}), e.g. a checkpoint of your own P"
            )
        variant = pretrained.partition(":")[2] or "IMAGENET1K_V1"
        state, what = entry.imagenet(variant)
    else:
        path = Path(pretrained).expanduser()
        if path.suffix.lower() not in SUFFIXES:
            raise TransferscopeError(
                f"pretrained='{pretrained}' is neither 'imagenet' nor a weight file "
                f"({', '.join(SUFFIXES)}){did_you_mean(pretrained, ['imagenet'])}"
            )
        state, what = read_state(path), str(path)
    load_state(model, adapt_stem(model, state), what=what, ignore_head=True)
    return model
