"""Before any training: do the source, the targets and the model fit together?

P-T feeds each target's images to P's network, so every target must have as many channels as P
was trained on: an RGB image folder as the target of a grayscale source used to train P and then
stop the study with a PyTorch traceback. (P given as ``model.pretrained`` is the exception: its
stem is fitted to each target's channels when it is loaded, see
:func:`transferscope.models.weights.adapt_stem`.) And the model must accept every image size it will see.
:func:`check_shapes` finds both at plan time, naming the target, the two shapes and the option that
fixes it. Nothing is adapted silently: a conversion the user did not ask for would change what the
study measures.
"""

from __future__ import annotations

from pathlib import Path

import torch

from transferscope.config import DataSpec, StudyConfig
from transferscope.data import registry as data_registry
from transferscope.data.base import DataInfo
from transferscope.errors import TransferscopeError
from transferscope.models import build_model


def _shape(info: DataInfo) -> str:
    return "x".join(str(d) for d in info.image_shape)


def _header_channels(path: Path, model: torch.nn.Module) -> int | None:
    """Input channels of the weights in a safetensors file, read from its header (the first
    4-D weight of ``model`` is the stem); None for other formats or an unknown layout."""
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return None
    from safetensors import safe_open

    stem = next((k for k, v in model.state_dict().items() if v.ndim == 4), None)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            for key in (stem, f"module.{stem}", f"_orig_mod.{stem}"):
                if key in keys:
                    return int(f.get_slice(key).get_shape()[1])
    except Exception:  # an unreadable file is reported, with its name, when it is loaded
        return None
    return None


def p_channels(cfg: StudyConfig, infos: dict[str, DataInfo]) -> tuple[int, str] | None:
    """The input channels of P and where they come from, or None when they cannot be known
    before loading P's weights."""
    model = cfg.model
    if cfg.pretrained is not None and cfg.pretrained.checkpoints:
        path = Path(max(cfg.pretrained.checkpoints.items(), key=lambda kv: float(kv[0]))[1])
    elif model.pretrained is not None:
        # model.pretrained (a weights file, ImageNet) is loaded by build_model, which fits its
        # stem to the target's channels (adapt_stem: RGB kernels summed for grayscale), as the
        # README's "your own pre-trained weights" says: no channel count to hold targets to.
        return None
    else:
        info = infos[cfg.source.label]
        return info.image_shape[0], f"P (pre-trained on '{cfg.source.label}', {_shape(info)})"
    with torch.random.fork_rng(devices=[]):
        skeleton = build_model(model.name, 2, 3, **model.options)
    channels = _header_channels(path, skeleton)
    return (channels, f"P (weights {path})") if channels is not None else None


def _fix(where: str, spec: DataSpec, channels: int) -> str:
    if "channels" in data_registry.option_names(spec.name):
        return f"set {where}.options.channels: {channels}"
    return f"use a target with {channels}-channel images"


def check_shapes(cfg: StudyConfig, infos: dict[str, DataInfo]) -> None:
    """Raise one clear error when a target's channels differ from P's, or when the model cannot
    take the images of the source or a target (a forward pass on zeros, on the CPU).

    Args:
        cfg: the study config.
        infos: metadata of the source (when P is trained here) and every target, by label.
    """
    p = p_channels(cfg, infos)
    for i, target in enumerate(cfg.targets):
        info = infos[target.label]
        if p is not None and info.image_shape[0] != p[0]:
            channels, what = p
            raise TransferscopeError(
                f"targets[{i}] '{target.label}' has {_shape(info)} images but {what} takes "
                f"{channels}-channel images, so P-T cannot be trained on it; "
                f"{_fix(f'targets[{i}]', target, channels)}"
            )
    seen: set[tuple[int, int, int]] = set()
    labelled = [(f"targets[{i}] '{t.label}'", infos[t.label]) for i, t in enumerate(cfg.targets)]
    if cfg.source.label in infos:
        labelled.insert(0, (f"source '{cfg.source.label}'", infos[cfg.source.label]))
    for where, info in labelled:
        if info.image_shape in seen:
            continue
        seen.add(info.image_shape)
        _try_forward(cfg, where, info)


def _try_forward(cfg: StudyConfig, where: str, info: DataInfo) -> None:
    """A forward pass of the model on two zero images of ``info``'s shape."""
    model = cfg.model
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            net = build_model(model.name, info.num_outputs, info.image_shape[0], **model.options)
            net.eval()(torch.zeros(2, *info.image_shape))
    except TransferscopeError:
        raise
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TransferscopeError(
            f"model '{model.name}' cannot take the {_shape(info)} images of {where}: {first}; "
            "change the data's image_size, or the model"
        ) from None


__all__ = ["check_shapes", "p_channels"]
