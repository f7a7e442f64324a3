"""The registered architectures: our Fixup ResNets, torchvision ResNets and timm models.

Adapters, not forks: torchvision and timm build the networks; we only fit the input channels and
the head and read ImageNet weights from torchvision's local cache. Nothing here downloads.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from transferscope.errors import TransferscopeError, did_you_mean, unknown_name
from transferscope.models.fixup import fixup_resnet50, fixup_small
from transferscope.models.registry import register
from transferscope.models.weights import read_state

register("fixup-small")(fixup_small)
register("fixup-resnet50")(fixup_resnet50)


def _weights_enum(arch: str) -> Any:
    from torchvision import models

    return {"resnet18": models.ResNet18_Weights, "resnet50": models.ResNet50_Weights}[arch]


def imagenet_weights_path(arch: str, variant: str = "IMAGENET1K_V1") -> Path:
    """Where torchvision caches ``arch``'s ImageNet weights: ``torch.hub.get_dir()``/checkpoints.

    ``torch.hub.get_dir()`` follows ``$TORCH_HOME`` (default ``~/.cache/torch``) + ``/hub``.
    """
    enum = _weights_enum(arch)
    try:
        url = enum[variant.upper()].url
    except KeyError:
        raise unknown_name(f"ImageNet variant of {arch}", variant, [w.name for w in enum]) from None
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def imagenet_state(arch: str, variant: str = "IMAGENET1K_V1") -> tuple[dict[str, Tensor], str]:
    """``arch``'s torchvision ImageNet state dict from the local cache, and its path.

    Never downloads: a missing file raises a TransferscopeError that says where to put it.
    """
    path = imagenet_weights_path(arch, variant)
    if not path.is_file():
        url = _weights_enum(arch)[variant.upper()].url
        fetch = f'torchvision.models.{arch}(weights="{variant.upper()}")'
        raise TransferscopeError(
            f"ImageNet weights for {arch} ({variant.upper()}) are not in torchvision's cache: "
            f"expected {path}. transferscope never downloads; on a machine with internet run "
            f"python -c 'import torchvision; {fetch}' and copy the file there, or fetch {url} "
            f"into {path.parent} (set TORCH_HOME to use another cache directory)"
        )
    return read_state(path), str(path)


def _torchvision_resnet(arch: str, num_outputs: int, in_channels: int) -> nn.Module:
    from torchvision import models

    model = getattr(models, arch)(weights=None, num_classes=num_outputs)
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(
            in_channels,
            old.out_channels,
            kernel_size=old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            bias=False,
        )
        # torchvision's own ResNet init for convolutions.
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


@register("resnet18", imagenet=partial(imagenet_state, "resnet18"))
def resnet18(num_outputs: int, in_channels: int = 3) -> nn.Module:
    """torchvision ResNet-18 (BatchNorm): (B, in_channels, H, W) -> (B, num_outputs)."""
    return _torchvision_resnet("resnet18", num_outputs, in_channels)


@register("resnet50", imagenet=partial(imagenet_state, "resnet50"))
def resnet50(num_outputs: int, in_channels: int = 3) -> nn.Module:
    """torchvision ResNet-50 (BatchNorm): (B, in_channels, H, W) -> (B, num_outputs)."""
    return _torchvision_resnet("resnet50", num_outputs, in_channels)


@register("timm", prefix=True)
def timm_model(name: str, num_outputs: int, in_channels: int = 3, **options: Any) -> nn.Module:
    """Any timm model, ``timm:<name>``, built without pretrained weights (files only).

    Extra options go to ``timm.create_model``. Input (B, in_channels, H, W) -> (B, num_outputs).
    """
    try:
        import timm
    except ImportError as error:
        raise TransferscopeError(
            f"model 'timm:{name}' needs timm: pip install transferscope[timm]"
        ) from error
    if not timm.is_model(name):
        # timm knows about a thousand names: suggest the nearest instead of listing them.
        raise TransferscopeError(
            f"unknown timm model '{name}'{did_you_mean(name, timm.list_models())}; "
            "see timm.list_models()"
        )
    try:
        return timm.create_model(
            name, pretrained=False, num_classes=num_outputs, in_chans=in_channels, **options
        )
    except TypeError as error:
        raise TransferscopeError(
            f"timm model '{name}' rejected its options {sorted(options)}: {error}"
        ) from error
