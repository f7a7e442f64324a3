"""Reading weight files safely and loading them into a model with clear errors.

A user's P (Neyshabur et al. 2020: "the model pre-trained on the source domain") arrives as a file. Files are
read without executing code: ``.safetensors`` via safetensors, ``.pt``/``.pth`` via
``torch.load(weights_only=True)``. Loading is strict; a checkpoint of another architecture fails
with one message listing missing keys, unexpected keys and shape mismatches.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from transferscope.errors import TransferscopeError
from transferscope.models.layout import layout

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SUFFIXES = (".safetensors", *TORCH_SUFFIXES)
_LISTED = 10
# Training checkpoints often nest the weights under one of these keys.
_NESTED = ("state_dict", "model_state_dict", "model", "module", "state", "weights")
# Prefixes added by DistributedDataParallel and torch.compile around the real module.
_WRAPPERS = ("module.", "_orig_mod.")


def read_state(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weight file (``.safetensors``, or ``.pt``/``.pth``/``.bin``/``.ckpt``).

    Torch files are read with ``weights_only=True``: a file that needs arbitrary unpickling (a whole
    pickled model, custom classes) is refused. A dict holding the weights under ``state_dict``,
    ``model`` or similar is unwrapped, and a ``module.``/``_orig_mod.`` prefix on every key
    (DDP, torch.compile) is removed. Tensors come back on the CPU.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TransferscopeError(f"weight file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _unwrap_keys(load_file(str(path)))
        except Exception as error:
            raise TransferscopeError(
                f"cannot read {path} as safetensors: {_first_line(error)}"
            ) from error
    if suffix not in TORCH_SUFFIXES:
        raise TransferscopeError(
            f"cannot read weights from {path}: expected one of {', '.join(SUFFIXES)}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise TransferscopeError(
            f"refused to load {path}: torch.load(weights_only=True) failed "
            f"({_first_line(error)}); it holds more than tensors (e.g. a pickled model or custom "
            "classes), which could run code. Re-save only the weights: "
            "torch.save(model.state_dict(), 'weights.pt') or safetensors.torch.save_file(...)"
        ) from error
    return _unwrap_keys(_find_state(obj, path))


def load_state(
    model: nn.Module,
    state: Mapping[str, Tensor],
    what: str = "checkpoint",
    ignore_head: bool = False,
) -> None:
    """Load ``state`` into ``model`` strictly, or raise one error naming every mismatch.

    With ``ignore_head``, the head's entries (see :func:`layout`) are dropped from ``state`` and the
    model keeps its own head: the state dict of P loaded under a new classifier. BatchNorm
    ``num_batches_tracked`` counters absent from old checkpoints (e.g. torchvision's) keep the
    model's value. The error lists at most 10 missing keys, unexpected keys and shape mismatches
    each, and names ``what`` (e.g. the file path).
    """
    expected = model.state_dict()
    if ignore_head:
        head = layout(model).head
        state = {k: v for k, v in state.items() if not _within(k, head)}
        own = {k for k in expected if _within(k, head)}
    else:
        own = set()
    missing = [
        k
        for k in expected
        if k not in state and k not in own and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: expected {tuple(expected[k].shape)} vs got {tuple(v.shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = [
            _listing(f"{len(items)} {label}", items)
            for label, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            )
            if items
        ]
        raise TransferscopeError(
            f"{what} does not fit {type(model).__name__}: {'; '.join(parts)}. Was it saved from "
            "another architecture or with other options (widths, in_channels, num_outputs)? "
            "Build the model it was saved from"
        )
    merged = {k: v for k, v in expected.items() if k not in state}
    merged.update(state)
    model.load_state_dict(merged, strict=True)


def adapt_stem(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Fit the stem's input channels of ``state`` to ``model`` (e.g. RGB weights for grayscale).

    The stem's weight is the first convolution kernel in it (``conv1.weight`` of a ResNet,
    ``patch_embed.proj.weight`` of a timm ViT, ``stem.0.weight`` of a timm ConvNeXt). When only
    that weight's input-channel count differs (shape (C_out, C_in, k, k)), one channel
    gets the sum over the file's channels (a gray image replicated to RGB gives the same response);
    more channels get the file's channels repeated cyclically, scaled by C_file / C_model (timm's
    ``adapt_input_conv`` rule). Everything else is returned unchanged.
    """
    key = stem_weight_key(model)
    if key is None:
        return state
    target = model.state_dict().get(key)
    weight = state.get(key)
    if target is None or weight is None or weight.ndim != 4 or target.shape == weight.shape:
        return state
    if weight.shape[0] != target.shape[0] or weight.shape[2:] != target.shape[2:]:
        return state
    channels, given = target.shape[1], weight.shape[1]
    if channels == 1:
        adapted = weight.sum(dim=1, keepdim=True)
    else:
        index = torch.arange(channels) % given
        adapted = weight[:, index] * (given / channels)
    return {**state, key: adapted}


def stem_weight_key(model: nn.Module) -> str | None:
    """The state-dict key of the first 4-d (convolution) weight in ``model``'s stem, or None."""
    stem = layout(model).stem
    for key, value in model.state_dict().items():
        if _within(key, stem) and key.endswith("weight") and value.ndim == 4:
            return key
    return None


def _find_state(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        for key in _NESTED:
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, Tensor) for v in inner.values())
            ):
                return dict(inner)
        keys = ", ".join(map(str, list(obj)[:_LISTED]))
        raise TransferscopeError(
            f"{path} holds a dict without a state dict of tensors (top-level keys: {keys}); save "
            "model.state_dict() itself, or under the key 'state_dict'"
        )
    raise TransferscopeError(
        f"{path} holds a {type(obj).__name__}, not a state dict; save model.state_dict()"
    )


def _unwrap_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in _WRAPPERS:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _listing(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return f"{label}: {shown}{more}"


def _within(key: str, module: str) -> bool:
    return key == module or key.startswith(module + ".")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
