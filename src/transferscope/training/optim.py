"""Optimizers of a training recipe: SGD with momentum (the paper's) or AdamW with timm's
parameter groups (weight decay left off norms and biases, layer-wise lr decay).

Parameter groups come from timm's helpers (:func:`timm.optim.param_groups_weight_decay`,
:func:`timm.optim.param_groups_layer_decay`) and the optimizer from timm's factory
(:func:`timm.optim.create_optimizer_v2`), so a ViT or ConvNeXt trains with the groups a timm
user gets. transferscope adds two things on top:

- Fixup's scalar biases and scales train at ``scalar_lr_factor`` x lr (Zhang et al. 2019), with
  either optimizer: every group is split into its ordinary and its scalar parameters;
- layer-wise lr decay on models without a timm ``group_matcher`` (Fixup and torchvision
  ResNets, a user's own module with a layout): the layers are the model's stem, each residual
  block and the head (:mod:`transferscope.models.layout`). timm's own fallback for such models
  puts every parameter in one layer (the decay then does nothing), which would be a silent no-op.

Each group carries ``lr_factor``: the trainer sets its lr to the schedule's lr x ``lr_factor``
at every step (timm's schedulers do the same with ``lr_scale``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from transferscope.config.sections import TrainSpec
from transferscope.errors import TransferscopeError
from transferscope.models import scalar_parameter_names

# timm's names of the two optimizers: "momentum" is torch's SGD with classical momentum
# (timm's "sgd" is Nesterov's), "adamw" is torch.optim.AdamW.
_TIMM_NAMES = {"sgd": "momentum", "adamw": "adamw"}


class _LayoutGroups:
    """``model`` seen by timm's layer-decay helper with a ``group_matcher`` from its layout.

    timm calls ``named_parameters()`` and ``group_matcher(coarse=False)``; the matcher gives
    each parameter its layer: 0 for the stem and anything before the first block, i + 1 for
    block i, and the head and anything after the last block last.
    """

    def __init__(self, model: nn.Module) -> None:
        from transferscope.models.layout import layout

        self._model = model
        parts = layout(model)
        blocks = list(parts.blocks)
        self._layer: dict[str, float] = {}
        seen_block = False
        for name, _ in model.named_parameters():
            index = next((i for i, b in enumerate(blocks) if _within(name, b)), None)
            if index is not None:
                seen_block = True
                self._layer[name] = index + 1
            elif _within(name, parts.head) or seen_block:
                self._layer[name] = float("inf")
            else:
                self._layer[name] = 0

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Parameter]]:
        return self._model.named_parameters(*args, **kwargs)

    def group_matcher(self, coarse: bool = False) -> Any:
        return lambda name: self._layer[name]


def _within(name: str, module: str) -> bool:
    return name.startswith(module + ".")


def parameter_groups(model: nn.Module, spec: TrainSpec) -> list[dict[str, Any]]:
    """The parameter groups of ``spec``'s optimizer for ``model``.

    Each group: ``params``, ``weight_decay`` and ``lr_factor`` (layer decay's scale x Fixup's
    scalar factor). Groups without parameters are left out; the order is timm's, each group's
    scalars right after it.
    """
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    exclude = not spec.decays_every_weight
    no_decay = set(getattr(model, "no_weight_decay", lambda: set())()) if exclude else set()
    if spec.layer_decay is not None:
        view: Any = model if hasattr(model, "group_matcher") else _grouped(model)
        groups = param_groups_layer_decay(
            view,
            weight_decay=spec.weight_decay,
            layer_decay=spec.layer_decay,
            no_weight_decay_list=no_decay,
            weight_decay_exclude_1d=exclude,
        )
    elif exclude:
        groups = param_groups_weight_decay(
            model, weight_decay=spec.weight_decay, no_weight_decay_list=no_decay
        )
    else:  # every weight decays: one group (the paper's recipe)
        groups = [
            {
                "params": [p for p in model.parameters() if p.requires_grad],
                "weight_decay": spec.weight_decay,
            }
        ]
    scalar_names = scalar_parameter_names(model)
    scalars = {id(p) for n, p in model.named_parameters() if n in scalar_names}
    out = []
    for group in groups:
        scale = float(group.get("lr_scale", 1.0))
        ordinary = [p for p in group["params"] if id(p) not in scalars]
        scalar = [p for p in group["params"] if id(p) in scalars]
        for params, factor in ((ordinary, scale), (scalar, scale * spec.scalar_lr_factor)):
            if params:
                out.append(
                    {"params": params, "weight_decay": group["weight_decay"], "lr_factor": factor}
                )
    return out


def _grouped(model: nn.Module) -> _LayoutGroups:
    try:
        return _LayoutGroups(model)
    except TransferscopeError as e:
        raise TransferscopeError(
            f"layer_decay needs the model's layers, from a timm group_matcher or its layout: {e}"
        ) from None


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    """``spec``'s optimizer over ``model``'s parameters, built by timm's factory.

    sgd: torch's SGD with ``momentum`` (not Nesterov's); adamw: torch's AdamW with ``betas``.
    The default sgd recipe has the groups the paper's training had: every parameter decays,
    Fixup's scalars at ``scalar_lr_factor`` x lr.
    """
    from timm.optim import create_optimizer_v2

    extra: dict[str, Any] = {}
    if spec.optimizer == "adamw":
        extra["betas"] = tuple(spec.betas)
    return create_optimizer_v2(
        parameter_groups(model, spec),
        opt=_TIMM_NAMES[spec.optimizer],
        lr=spec.effective_lr,
        weight_decay=spec.weight_decay,
        momentum=spec.momentum,
        **extra,
    )


def optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, Tensor]:
    """Every tensor of the optimizer's per-parameter state, as ``"<entry>/<parameter name>"``
    (``momentum_buffer/fc.weight``, ``exp_avg/blocks.0.attn.qkv.weight``, AdamW's ``step``)."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                out[f"{key}/{names[id(param)]}"] = value
    return out


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, model: nn.Module, flat: dict[str, Tensor]
) -> None:
    """Inverse of :func:`optimizer_state` on a fresh optimizer of the same recipe.

    Goes through ``optimizer.load_state_dict``, which puts each entry on its parameter's device
    and dtype (AdamW's ``step`` stays where torch keeps it), so the next step is the one the
    interrupted run would have taken.
    """
    params = dict(model.named_parameters())
    per_param: dict[str, dict[str, Tensor]] = {}
    for flat_key, value in flat.items():
        key, _, name = flat_key.partition("/")
        if name not in params:
            raise TransferscopeError(
                f"the resume state has optimizer state for '{name}', which the model does not have"
            )
        per_param.setdefault(name, {})[key] = value
    index: dict[int, int] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            index[id(param)] = len(index)
    saved = optimizer.state_dict()
    saved["state"] = {index[id(params[name])]: state for name, state in per_param.items()}
    optimizer.load_state_dict(saved)


__all__ = ["load_optimizer_state", "make_optimizer", "optimizer_state", "parameter_groups"]
