"""Permutation alignment of two networks by weight matching (beyond the paper, Neyshabur et al. 2020, §3.3).

The paper finds a performance barrier on the straight line between two RI-T models. A network's
hidden units can be reordered without changing its function, so two models may sit in one basin
up to such a reordering. Weight matching (Ainsworth, Hayase, Srinivasa 2022, "Git Re-Basin",
§3.2) permutes the hidden units of B to best match A: it maximises

    Σ_entries ⟨θ_A, π(θ_B)⟩   ⇔   minimises ‖θ_A − π(θ_B)‖²  (permutations preserve norms)

by coordinate descent: one permutation at a time, holding the others fixed, the best one is a
linear assignment problem (:func:`scipy.optimize.linear_sum_assignment`), until a full sweep
improves none. Every accepted step lowers the distance, so alignment never moves B away from A.

Which tensor axes share a permutation is a :class:`PermutationSpec`, built from the module graph
of a ResNet family (:func:`permutation_spec`):

- the residual stream: the stem's output channels and every block's output (last conv of the
  branch, its norm, and the identity shortcut it is added to) share one permutation, until a
  block with a 1x1 projection shortcut (``downsample``) starts a new stream;
- inside a block's branch, each conv's output channels (and its norm) have a permutation of their
  own, which the next conv's input channels follow;
- the classifier's input features follow the last stream; its outputs (classes) are never
  permuted, nor are Fixup's scalar biases and scales (one number per layer, unaffected by any
  reordering of channels).

BatchNorm weight, bias and running statistics follow their conv; ``num_batches_tracked`` is a
count. Supported: :class:`~transferscope.models.fixup.FixupResNet` (fixup-small, fixup-resnet50)
and torchvision's ResNet (resnet18/34/50/...); anything else is a TransferscopeError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from transferscope.analysis.interpolation import check_compatible
from transferscope.errors import TransferscopeError

MAX_SWEEPS = 100


@dataclass(frozen=True)
class PermutationSpec:
    """Which state-dict axes each permutation acts on.

    Attributes:
        perms: permutation name -> ((state key, axis), ...) it reorders; all of them have the
            same length along that axis (the number of units).
        sizes: permutation name -> number of units.
    """

    perms: dict[str, tuple[tuple[str, int], ...]]
    sizes: dict[str, int]
    axes: dict[str, dict[int, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, entries in self.perms.items():
            for key, axis in entries:
                taken = self.axes.setdefault(key, {})
                if axis in taken:
                    raise TransferscopeError(
                        f"permutation spec: axis {axis} of '{key}' is claimed by both "
                        f"'{taken[axis]}' and '{name}'"
                    )
                taken[axis] = name


# --------------------------------------------------------------------------------------------
# the spec of a ResNet family


@dataclass(frozen=True)
class _Family:
    """Module names of one ResNet family: where the convs, norms and shortcuts are."""

    stem: tuple[str, ...]  # the stem conv, then its norm (if any)
    convs: tuple[str, ...]  # the convs of a block's branch, in order
    norms: tuple[str | None, ...]  # the norm after each of them (None: none)
    shortcut: tuple[str, ...]  # the projection shortcut's conv, then its norm (if any)
    head: str


_FIXUP_BASIC = _Family(("conv1",), ("conv1", "conv2"), (None, None), ("downsample",), "fc")
_FIXUP_BOTTLENECK = _Family(
    ("conv1",), ("conv1", "conv2", "conv3"), (None, None, None), ("downsample",), "fc"
)
_TV_BASIC = _Family(
    ("conv1", "bn1"), ("conv1", "conv2"), ("bn1", "bn2"), ("downsample.0", "downsample.1"), "fc"
)
_TV_BOTTLENECK = _Family(
    ("conv1", "bn1"),
    ("conv1", "conv2", "conv3"),
    ("bn1", "bn2", "bn3"),
    ("downsample.0", "downsample.1"),
    "fc",
)
_NORM_ENTRIES = ("weight", "bias", "running_mean", "running_var")


def _family(model: nn.Module) -> tuple[_Family, list[str]]:
    """The family of ``model`` and its stage names (layer1, layer2, ...), or a clear error."""
    from transferscope.models.fixup import FixupBasicBlock, FixupResNet

    stages: list[str]
    if isinstance(model, FixupResNet):
        stages = list(model._stage_names)
        first = getattr(model, stages[0])[0]
        return (_FIXUP_BASIC if isinstance(first, FixupBasicBlock) else _FIXUP_BOTTLENECK), stages
    try:
        from torchvision.models.resnet import BasicBlock, ResNet
    except ImportError:  # pragma: no cover - torchvision is a dependency
        ResNet = BasicBlock = None  # type: ignore[assignment,misc]
    if ResNet is not None and isinstance(model, ResNet):
        stages = [f"layer{i}" for i in range(1, 5)]
        first = model.layer1[0]
        return (_TV_BASIC if isinstance(first, BasicBlock) else _TV_BOTTLENECK), stages
    raise TransferscopeError(
        f"permutation alignment does not support {type(model).__name__}: supported are "
        "fixup-small, fixup-resnet50 and torchvision ResNets (resnet18, resnet50, ...)"
    )


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The :class:`PermutationSpec` of a supported ResNet, from its module graph (module doc).

    Permutation names: ``stream0``, ``stream1``, ... for the residual streams (a new one after
    each projection shortcut) and ``<block>.<conv>`` for the hidden channels of a branch.
    """
    family, stages = _family(model)
    state = model.state_dict()
    perms: dict[str, list[tuple[str, int]]] = {}

    def add(perm: str, key: str, axis: int) -> None:
        if key in state:
            perms.setdefault(perm, []).append((key, axis))

    def conv_out(perm: str, conv: str, norm: str | None) -> None:
        add(perm, f"{conv}.weight", 0)
        add(perm, f"{conv}.bias", 0)
        if norm is not None:
            for entry in _NORM_ENTRIES:
                add(perm, f"{norm}.{entry}", 0)

    stream = "stream0"
    conv_out(stream, family.stem[0], family.stem[1] if len(family.stem) > 1 else None)
    count = 0
    for stage in stages:
        for index in range(len(getattr(model, stage))):
            block = f"{stage}.{index}"
            has_shortcut = f"{block}.{family.shortcut[0]}.weight" in state
            inner = stream
            for i, (conv, norm) in enumerate(zip(family.convs, family.norms, strict=True)):
                add(inner, f"{block}.{conv}.weight", 1)
                last = i == len(family.convs) - 1
                if last and has_shortcut:
                    count += 1
                    inner = f"stream{count}"
                elif not last:
                    inner = f"{block}.{conv}"
                else:
                    inner = stream
                conv_out(inner, f"{block}.{conv}", None if norm is None else f"{block}.{norm}")
            if has_shortcut:
                conv, *norm = family.shortcut
                add(stream, f"{block}.{conv}.weight", 1)
                conv_out(inner, f"{block}.{conv}", f"{block}.{norm[0]}" if norm else None)
                stream = inner
    add(stream, f"{family.head}.weight", 1)
    sizes = {
        name: int(state[entries[0][0]].shape[entries[0][1]]) for name, entries in perms.items()
    }
    return PermutationSpec({k: tuple(v) for k, v in perms.items()}, sizes)


# --------------------------------------------------------------------------------------------
# applying and finding permutations


def permute_state(
    spec: PermutationSpec,
    state: Mapping[str, Tensor],
    perms: Mapping[str, Tensor],
    except_axis: tuple[str, int] | None = None,
) -> dict[str, Tensor]:
    """``state`` with unit i of every permuted axis replaced by unit ``perms[name][i]``.

    Entries no permutation touches (Fixup scalars, the classifier's bias, counts) are passed
    through unchanged. ``except_axis`` (key, axis) leaves that one axis as it is.
    """
    out = dict(state)
    for key, axes in spec.axes.items():
        if key not in out:
            continue
        w = out[key]
        for axis, name in axes.items():
            if (key, axis) != except_axis:
                w = torch.index_select(w, axis, perms[name].to(w.device))
        out[key] = w
    return out


def _flat(w: Tensor, axis: int) -> Tensor:
    return torch.movedim(w, axis, 0).reshape(w.shape[axis], -1).double()


def _distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """L2 distance over every floating entry (float64)."""
    total = sum(
        float((v.detach().double() - b[k].detach().double()).pow(2).sum())
        for k, v in a.items()
        if v.is_floating_point()
    )
    return total**0.5


@dataclass
class AlignmentResult:
    """B with its hidden units permuted to match A.

    Attributes:
        state: B's state dict, permuted (same keys, shapes and function as B).
        permutations: permutation name -> (units,) int64: unit i of the result is B's unit
            ``permutations[name][i]``.
        distance_before, distance_after: L2 distance ‖θ_A − θ_B‖ over every floating entry,
            before and after alignment (the weights' units).
        sweeps: coordinate-descent sweeps over all permutations until none improved.
    """

    state: dict[str, Tensor]
    permutations: dict[str, Tensor]
    distance_before: float
    distance_after: float
    sweeps: int

    def to_dict(self) -> dict[str, object]:
        return {
            "distance_before": self.distance_before,
            "distance_after": self.distance_after,
            "sweeps": self.sweeps,
            "units_moved": {
                name: int((p != torch.arange(len(p))).sum())
                for name, p in self.permutations.items()
            },
        }


def weight_matching(
    spec: PermutationSpec,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    *,
    seed: int = 0,
    max_sweeps: int = MAX_SWEEPS,
) -> tuple[dict[str, Tensor], int]:
    """Permutations of B's units that locally maximise Σ⟨θ_A, π(θ_B)⟩ (Git Re-Basin, alg. 1).

    Each sweep visits the permutations in a seeded random order; for each, the cost matrix
    C[i, j] = Σ_(key, axis) ⟨A's unit i, B's unit j⟩ (other axes already permuted) is solved as a
    linear assignment problem, and the new permutation is kept only if it strictly improves the
    objective (so the loop ends, and the distance to A never grows). Returns the permutations and
    the number of sweeps.
    """
    rng = np.random.default_rng(seed)
    perms = {name: torch.arange(n) for name, n in spec.sizes.items()}
    a = {k: v.detach().cpu() for k, v in state_a.items()}
    b = {k: v.detach().cpu() for k, v in state_b.items()}
    from scipy.optimize import linear_sum_assignment  # here: importing it takes ~0.7 s

    names = list(spec.perms)
    for sweep in range(1, max_sweeps + 1):
        improved = False
        for i in rng.permutation(len(names)):
            name = names[int(i)]
            n = spec.sizes[name]
            cost = torch.zeros(n, n, dtype=torch.float64)
            for key, axis in spec.perms[name]:
                w_b = permute_state(spec, {key: b[key]}, perms, except_axis=(key, axis))[key]
                cost += _flat(a[key], axis) @ _flat(w_b, axis).T
            rows, cols = linear_sum_assignment(cost.numpy(), maximize=True)
            current = float(cost[torch.arange(n), perms[name]].sum())
            best = float(cost.numpy()[rows, cols].sum())
            if best > current + 1e-12 * max(1.0, abs(current)):
                perms[name] = torch.as_tensor(cols, dtype=torch.int64)
                improved = True
        if not improved:
            return perms, sweep
    return perms, max_sweeps


def align(
    model: nn.Module,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    *,
    seed: int = 0,
    max_sweeps: int = MAX_SWEEPS,
) -> AlignmentResult:
    """Permute B's hidden units to best match A by weight matching (Git Re-Basin).

    Args:
        model: the architecture of both states (fixup-small, fixup-resnet50 or a torchvision
            ResNet); its own weights are not used.
        state_a, state_b: state dicts of ``model``'s keys and shapes.
        seed: the order in which each sweep visits the permutations.
        max_sweeps: stop after this many sweeps even if one still improved.

    Returns:
        An :class:`AlignmentResult`; ``result.state`` computes the same function as B (for a
        BatchNorm network also in eval mode: running statistics are permuted too).
    """
    check_compatible(state_a, state_b)
    check_compatible(dict(model.state_dict()), state_a, ("the model", "A"))
    spec = permutation_spec(model)
    perms, sweeps = weight_matching(spec, state_a, state_b, seed=seed, max_sweeps=max_sweeps)
    b = {k: v.detach() for k, v in state_b.items()}
    aligned = permute_state(spec, b, perms)
    before, after = _distance(state_a, b), _distance(state_a, aligned)
    return AlignmentResult(aligned, perms, before, after, sweeps)


__all__ = [
    "AlignmentResult",
    "PermutationSpec",
    "align",
    "permutation_spec",
    "permute_state",
    "weight_matching",
]
