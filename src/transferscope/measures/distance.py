"""Distance between two models in parameter space (Neyshabur et al. 2020, §3.2, "Parameter distance").

||theta_A - theta_B||_2 over all parameters, and the same norm restricted to each module (the stem,
each residual block, the head). Published whole-network values (ResNet-50, DomainNet): two P-T
~178-218, two RI-T ~776-822, P-T and P ~157-195: P-T models stay close to each other and to P.

The squares of the per-module distances sum to the square of the total, because every compared
entry belongs to exactly one module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from transferscope.errors import TransferscopeError
from transferscope.models.layout import ModelLayout, layout

StateLike = Mapping[str, Tensor] | nn.Module

# BatchNorm running statistics are estimates of the data, not trained parameters: they are left
# out of a state dict's distance (a module's named_parameters() never has them).
_STATISTICS = ("running_mean", "running_var")


@dataclass(frozen=True)
class ParameterDistance:
    """Result of :func:`parameter_distance`.

    Attributes:
        total: l2 norm of theta_A - theta_B over every compared entry (same units as the weights).
        per_module: module name -> l2 norm over that module's entries, in state-dict order.
        excluded: key -> why it was not compared (head of another shape, not floating point,
            BatchNorm statistic, ``exclude_head``).
        tensors: number of tensors compared.
        elements: number of scalar entries compared.
        module_elements: module name -> its number of compared entries.
        module_norm_a, module_norm_b: module name -> ||theta_A|| and ||theta_B|| over its entries.

    Example:
        >>> import torch
        >>> from transferscope.measures.distance import parameter_distance
        >>> a = {"body.weight": torch.tensor([6.0, 8.0]), "fc.weight": torch.tensor([1.0, 1.0])}
        >>> b = {"body.weight": torch.tensor([3.0, 4.0]), "fc.weight": torch.tensor([1.0, 1.0])}
        >>> d = parameter_distance(a, b)
        >>> d.total, d.per_module
        (5.0, {'body': 5.0, 'fc': 0.0})
        >>> d.relative()  # moved by its own size
        {'body': 1.0, 'fc': 0.0}
        >>> {m: round(v, 4) for m, v in d.rms().items()}
        {'body': 3.5355, 'fc': 0.0}
    """

    total: float
    per_module: dict[str, float]
    excluded: dict[str, str] = field(default_factory=dict)
    tensors: int = 0
    elements: int = 0
    module_elements: dict[str, int] = field(default_factory=dict)
    module_norm_a: dict[str, float] = field(default_factory=dict)
    module_norm_b: dict[str, float] = field(default_factory=dict)

    def relative(self) -> dict[str, float]:
        """Per module ||theta_A - theta_B|| / ||theta_B||: the size-free change of A from B (for
        P-T against P, how far fine-tuning moved each module relative to its size). Raw l2
        distances grow with a module's parameter count, so only this form compares modules.
        A module whose B norm is 0 is left out."""
        return {
            m: d / self.module_norm_b[m]
            for m, d in self.per_module.items()
            if self.module_norm_b.get(m, 0.0) > 0
        }

    def rms(self) -> dict[str, float]:
        """Per module root-mean-square entry difference, ||theta_A - theta_B|| / sqrt(entries)."""
        return {
            m: d / math.sqrt(self.module_elements[m])
            for m, d in self.per_module.items()
            if self.module_elements.get(m)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "per_module": dict(self.per_module),
            "per_module_relative": self.relative(),
            "per_module_rms": self.rms(),
            "module_elements": dict(self.module_elements),
            "excluded": dict(self.excluded),
            "tensors": self.tensors,
            "elements": self.elements,
        }


def layout_modules(model: nn.Module | ModelLayout) -> list[str]:
    """Module prefixes for per-module distances from a model's layout: stem, blocks, head.

    Example:
        >>> from transferscope.measures.distance import layout_modules
        >>> from transferscope.models import ModelLayout
        >>> from transferscope.models.fixup import fixup_small
        >>> layout_modules(fixup_small(num_outputs=3, in_channels=1, widths=(4, 8)))
        ['conv1', 'layer1.0', 'layer2.0', 'fc']
        >>> parts = ModelLayout(stem="0", stages=("1",), blocks=("1.0", "1.1"), head="2")
        >>> layout_modules(parts)
        ['0', '1.0', '1.1', '2']
    """
    parts = model if isinstance(model, ModelLayout) else layout(model)
    return [parts.stem, *parts.blocks, parts.head]


def _within(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def module_of(key: str, modules: Sequence[str] | None = None) -> str:
    """The module a state-dict key belongs to.

    With ``modules``, the longest listed prefix that contains ``key``. Otherwise (or when none
    does) the key without its last component, cut to at most two components: 'conv1.weight' ->
    'conv1', 'layer1.0.conv2.weight' -> 'layer1.0', 'fc.bias' -> 'fc'; a top-level parameter
    ('bias1') is its own module.

    Example:
        >>> from transferscope.measures.distance import module_of
        >>> [module_of(k) for k in ("conv1.weight", "layer1.0.conv2.weight", "fc.bias", "bias1")]
        ['conv1', 'layer1.0', 'fc', 'bias1']
        >>> module_of("layer1.0.conv2.weight", modules=["layer1", "layer1.0.conv2"])
        'layer1.0.conv2'
    """
    if modules:
        matches = [m for m in modules if _within(key, m)]
        if matches:
            return max(matches, key=len)
    parts = key.split(".")
    if len(parts) == 1:
        return key
    return ".".join(parts[:-1][:2])


def _state(obj: StateLike) -> dict[str, Tensor]:
    if isinstance(obj, nn.Module):
        return {k: v.detach() for k, v in obj.named_parameters()}
    return dict(obj)


# Where classifiers live in torchvision, timm and our Fixup ResNets (most specific first).
_HEAD_NAMES = ("head.fc", "fc", "classifier", "head", "last_linear")


def _head_of(obj: StateLike, state: Mapping[str, Tensor]) -> str | None:
    if isinstance(obj, nn.Module):
        try:
            return layout(obj).head
        except TransferscopeError:
            pass
    for name in _HEAD_NAMES:
        if f"{name}.weight" in state:
            return name
    # Otherwise the module of the last floating-point key: state dicts list the classifier last
    # (a safetensors file does not keep that order, hence the names above first).
    keys = [k for k, v in state.items() if v.is_floating_point()]
    return module_of(keys[-1]) if keys else None


def _listing(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def parameter_distance(
    state_a: StateLike,
    state_b: StateLike,
    modules: Sequence[str] | ModelLayout | None = None,
    head: str | None = None,
    exclude_head: bool = False,
) -> ParameterDistance:
    """||theta_A - theta_B||_2 over the whole network and per module (Neyshabur et al. 2020, §3.2).

    Args:
        state_a, state_b: state dicts (name -> tensor) or modules (their ``named_parameters()``).
            Only floating-point tensors count; from a state dict, BatchNorm running statistics
            are left out too.
        modules: module prefixes to group keys by (e.g. :func:`layout_modules` of the model: stem,
            residual blocks, head), or a :class:`ModelLayout`; default: the first two dotted
            components of each key's module ('conv1', 'layer1.0', 'fc'), see :func:`module_of`.
        head: the classifier's module path; default: a module's layout head; for a state dict
            the first of 'head.fc', 'fc', 'classifier', 'head', 'last_linear' that has a
            ``.weight``, else the module of its last floating-point key.
        exclude_head: leave the head out even when its shapes agree (e.g. P against P-T, whose
            heads answer different questions).

    The head is left out automatically when its shapes differ (P's 1000 classes against a target's
    345); ``excluded`` says which keys and why.

    Raises:
        TransferscopeError: keys present in one state only, or a shape mismatch outside the head;
            the message lists them.

    Example:
        >>> import math
        >>> from torch import nn
        >>> from transferscope.measures.distance import parameter_distance
        >>> net_a = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> net_b = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> parameter_distance(net_a, net_a).total  # a model is at distance 0 from itself
        0.0
        >>> d = parameter_distance(net_a, net_b)
        >>> d.total == parameter_distance(net_b, net_a).total  # symmetric
        True
        >>> list(d.per_module), d.tensors, d.elements
        (['0', '2'], 4, 67)
        >>> math.isclose(d.total**2, sum(v**2 for v in d.per_module.values()))
        True
        >>> sorted(parameter_distance(net_a, net_b, exclude_head=True).excluded)
        ['2.bias', '2.weight']
    """
    a, b = _state(state_a), _state(state_b)
    if isinstance(modules, ModelLayout):
        modules = layout_modules(modules)
    head = head if head is not None else _head_of(state_a, a)
    excluded: dict[str, str] = {}

    def floating(state: Mapping[str, Tensor]) -> list[str]:
        keys = []
        for k, v in state.items():
            if not v.is_floating_point():
                excluded[k] = f"not floating point ({v.dtype})"
            elif k.rsplit(".", 1)[-1] in _STATISTICS:
                excluded[k] = "BatchNorm running statistic, not a parameter"
            else:
                keys.append(k)
        return keys

    keys_a, keys_b = floating(a), floating(b)
    only_a = [k for k in keys_a if k not in set(keys_b)]
    only_b = [k for k in keys_b if k not in set(keys_a)]
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} only in the first: {_listing(only_a)}")
        if only_b:
            parts.append(f"{len(only_b)} only in the second: {_listing(only_b)}")
        raise TransferscopeError(
            f"the two models do not have the same parameters ({'; '.join(parts)}); compare "
            "models of one architecture"
        )
    mismatched = [k for k in keys_a if tuple(a[k].shape) != tuple(b[k].shape)]
    outside_head = [k for k in mismatched if head is None or not _within(k, head)]
    if outside_head:
        details = [f"{k}: {tuple(a[k].shape)} vs {tuple(b[k].shape)}" for k in outside_head]
        raise TransferscopeError(
            f"parameter shapes differ outside the head '{head}': {_listing(details)}; compare "
            "models of one architecture (only the classifier head may differ)"
        )
    drop_head = head is not None and (exclude_head or bool(mismatched))
    squares: dict[str, float] = {}
    norms_a: dict[str, float] = {}
    norms_b: dict[str, float] = {}
    counts: dict[str, int] = {}
    tensors = elements = 0
    for k in keys_a:
        if drop_head and head is not None and _within(k, head):
            excluded[k] = (
                f"head, shapes differ: {tuple(a[k].shape)} vs {tuple(b[k].shape)}"
                if mismatched
                else "head (exclude_head)"
            )
            continue
        ta = a[k].detach().to(torch.float64)
        tb = b[k].detach().to(device=ta.device, dtype=torch.float64)
        group = module_of(k, modules)
        squares[group] = squares.get(group, 0.0) + float((ta - tb).square().sum())
        norms_a[group] = norms_a.get(group, 0.0) + float(ta.square().sum())
        norms_b[group] = norms_b.get(group, 0.0) + float(tb.square().sum())
        counts[group] = counts.get(group, 0) + ta.numel()
        tensors += 1
        elements += ta.numel()
    total = math.sqrt(sum(squares.values()))
    return ParameterDistance(
        total=total,
        per_module={m: math.sqrt(s) for m, s in squares.items()},
        excluded=excluded,
        tensors=tensors,
        elements=elements,
        module_elements=counts,
        module_norm_a={m: math.sqrt(v) for m, v in norms_a.items()},
        module_norm_b={m: math.sqrt(v) for m, v in norms_b.items()},
    )


__all__ = ["ParameterDistance", "layout_modules", "module_of", "parameter_distance"]
