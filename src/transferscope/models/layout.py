"""Where the stem, stages, residual blocks and head of a model live (module paths).

The analyses of Neyshabur et al. 2020, §3.2 (CKA at conv1 and each stage output) and section 4 (module
criticality per residual block) address modules by their path in ``model.named_modules()``. This
module finds those paths: models built by :func:`transferscope.models.build_model` carry their
layout; any ResNet-like module (``conv1``, ``layer1``.., ``fc``) and timm models (``feature_info``
plus ``pretrained_cfg["classifier"]``) have theirs inferred.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from torch import nn

from transferscope.errors import TransferscopeError

# The attribute under which a model carries its layout; deepcopy and pickling keep it.
LAYOUT_ATTR = "transferscope_layout"

_STAGE = re.compile(r"layer(\d+)")


@dataclass(frozen=True)
class ModelLayout:
    """Module paths of a model's parts, as in ``model.named_modules()``.

    Attributes:
        stem: the first layer (``"conv1"`` for ResNets); its output is the paper's "conv1" CKA
            layer.
        stages: the stage containers, input to output (``"layer1"``, ..., ``"layer4"``).
        blocks: every residual block, input to output (``"layer1.0"``, ``"layer1.1"``, ...): the
            "modules" of residual-block module criticality (Neyshabur et al. 2020, §3.4).
        head: the classifier replaced for P-T (``"fc"``).
    """

    stem: str
    stages: tuple[str, ...]
    blocks: tuple[str, ...]
    head: str


def set_layout(model: nn.Module, value: ModelLayout) -> nn.Module:
    """Attach ``value`` to ``model`` (checked against its modules) and return the model."""
    _check(model, value)
    setattr(model, LAYOUT_ATTR, value)
    return model


def layout(model: nn.Module) -> ModelLayout:
    """The stem, stages, residual blocks and head of ``model``.

    Uses the layout stored by the registry when present, otherwise infers it for ResNet-like
    modules (children ``conv1``, ``layer1``.. and ``fc``, as in torchvision and timm ResNets and our
    Fixup ResNets) and for timm models (``feature_info`` and ``get_classifier``). Anything else
    raises a TransferscopeError asking for explicit layer names.
    """
    stored = getattr(model, LAYOUT_ATTR, None)
    if isinstance(stored, ModelLayout):
        return stored
    inferred = _resnet_like(model) or _timm_like(model)
    if inferred is None:
        raise TransferscopeError(
            f"cannot tell the stem, stages and head of a {type(model).__name__}: it is neither "
            "ResNet-like (conv1, layer1.., fc) nor a timm model with feature_info; give the layer "
            "names explicitly (e.g. layers={'block1': 'features.3', ...}) or attach one with "
            "transferscope.models.set_layout(model, ModelLayout(stem=..., stages=..., blocks=..., "
            "head=...))"
        )
    _check(model, inferred)
    return inferred


def analysis_layers(model: nn.Module) -> dict[str, str]:
    """The paper's CKA layers (Neyshabur et al. 2020, §3.2): the stem, then each stage's output.

    Returns an ordered mapping display name -> module path; for ResNets
    ``{"conv1": "conv1", "layer1": "layer1", ..., "layer4": "layer4"}``. Hook the module at each
    path to get its output activations, shape (batch, channels, height, width).
    """
    parts = layout(model)
    return {path: path for path in (parts.stem, *parts.stages)}


Granularity = Literal["auto", "blocks", "layers"]
# Fewer residual blocks than this and "auto" measures per weight layer: a depth trend over the
# stem and three blocks has four points, and no rank test decides anything on four points.
MIN_BLOCK_UNITS = 6


def depth_units(model: nn.Module, granularity: Granularity = "auto") -> list[str]:
    """The modules of a depth trend, input to output, head left out (module paths).

    ``"blocks"``: the stem and every residual block (the paper's modules for ResNet-50).
    ``"layers"``: every convolution or linear layer outside the head, in definition order (a
    block's 1x1 shortcut after its branch). ``"auto"``: blocks when there are at least
    :data:`MIN_BLOCK_UNITS` of them with the stem, else layers, so that a small network still
    has enough modules for a rank correlation to decide.
    """
    parts = layout(model)
    blocks = [parts.stem, *parts.blocks]
    if granularity == "blocks" or (granularity == "auto" and len(blocks) >= MIN_BLOCK_UNITS):
        return blocks
    if granularity not in ("auto", "layers"):
        raise TransferscopeError(
            f"unknown module granularity '{granularity}'; valid: auto, blocks, layers"
        )
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear)
        and not _within(name, parts.head)
    ]


def _resnet_like(model: nn.Module) -> ModelLayout | None:
    children = dict(model.named_children())
    stages = sorted(
        (int(m.group(1)), name) for name in children if (m := _STAGE.fullmatch(name)) is not None
    )
    if "conv1" not in children or "fc" not in children or not stages:
        return None
    if [i for i, _ in stages] != list(range(1, len(stages) + 1)):
        return None
    stage_names = tuple(name for _, name in stages)
    blocks = tuple(
        f"{stage}.{child}" for stage in stage_names for child, _ in children[stage].named_children()
    )
    return ModelLayout(stem="conv1", stages=stage_names, blocks=blocks, head="fc")


def _timm_like(model: nn.Module) -> ModelLayout | None:
    info = getattr(model, "feature_info", None)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    head = cfg.get("classifier") if isinstance(cfg, dict) else None
    children = list(model.named_children())
    if not info or not isinstance(head, str) or not children:
        return None
    modules = dict(model.named_modules())
    # timm lists the stem's activation (e.g. 'act1') as its first feature: the stem proper is the
    # first child, and only feature modules after it count as stages.
    stem = children[0][0]
    stages = tuple(
        entry["module"]
        for entry in info
        if isinstance(entry, dict)
        and entry.get("module") in modules
        and not _within(entry["module"], stem)
        and modules[entry["module"]] is not modules[stem]
    )
    if not stages or head not in modules:
        return None
    blocks: list[str] = []
    for stage in stages:
        module = modules[stage]
        # A timm stage is either a Sequential of blocks or holds one under `.blocks` (ConvNeXt);
        # a ViT "stage" is a single block.
        inner = getattr(module, "blocks", None)
        if isinstance(module, nn.Sequential | nn.ModuleList):
            blocks += [f"{stage}.{name}" for name, _ in module.named_children()]
        elif isinstance(inner, nn.Sequential | nn.ModuleList):
            blocks += [f"{stage}.blocks.{name}" for name, _ in inner.named_children()]
        else:
            blocks.append(stage)
    return ModelLayout(stem=stem, stages=stages, blocks=tuple(blocks), head=head)


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent + ".")


def _check(model: nn.Module, value: ModelLayout) -> None:
    names = {name for name, _ in model.named_modules()}
    for path in (value.stem, *value.stages, *value.blocks, value.head):
        if path not in names:
            raise TransferscopeError(
                f"layout names module '{path}', which {type(model).__name__} does not have"
            )
