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
(:func:`permutation_spec`). For a ResNet family:

- the residual stream: the stem's output channels and every block's output (last conv of the
  branch, its norm, and the identity shortcut it is added to) share one permutation, until a
  block with a 1x1 projection shortcut (``downsample``) starts a new stream;
- inside a block's branch, each conv's output channels (and its norm) have a permutation of their
  own, which the next conv's input channels follow;
- the classifier's input features follow the last stream; its outputs (classes) are never
  permuted, nor are Fixup's scalar biases and scales (one number per layer, unaffected by any
  reordering of channels).

BatchNorm weight, bias and running statistics follow their conv; ``num_batches_tracked`` is a
count. The running statistics are buffers, not weights: they move with their units but take no
part in the matching (in a stem they can be hundreds of times the size of the weights and would
decide the permutation alone), nor in the distances reported.

For a timm Vision Transformer (Dosovitskiy et al. 2021):

- the residual stream is one permutation of the embedding dimension shared by every block: the
  patch embedding's outputs, the class (and register) token and the position embedding, every
  LayerNorm on the stream (each block's two, the final one; LayerNorm is equivariant to a
  reordering of the features it normalises), the attention output projection's and the MLP's
  outputs, LayerScale, and the head's inputs;
- attention heads are units: one permutation of the heads per block moves each head's query, key
  and value rows of the fused ``qkv`` projection and its columns of the output projection
  together (attention within a head, and the sum over heads, are unchanged);
- each block's MLP hidden units have a permutation of their own (``fc1`` rows, ``fc2`` columns).

For a timm ConvNeXt (Liu et al. 2022): one residual stream per stage (the stem's or the
downsampling convolution's output channels, with its LayerNorm), which each block's depthwise
convolution (one filter per channel), LayerNorm, MLP output and layer scale ``gamma`` follow;
each block's MLP hidden channels; the downsampling layer's LayerNorm and input channels follow the
previous stage's stream; the head's LayerNorm and inputs follow the last.

Every floating entry of the state dict must be claimed by a permutation or be known to be
unaffected (the head's bias, Fixup's scalars, a ViT's per-head query/key norms): a variant with a
layer this module does not know (squeeze-excitation, a deep stem, a gated attention, an
attention-pooling head) is refused by name rather than aligned wrongly. Supported: :class:`~transferscope.models.fixup.FixupResNet` (fixup-small,
fixup-resnet50), torchvision's ResNet (resnet18/34/50/...) and timm's ResNet with the same
layers, timm's ``VisionTransformer`` and ``ConvNeXt``; anything else, and a variant with a layer
the spec does not know, is a TransferscopeError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from transferscope.errors import TransferscopeError
from transferscope.measures.interpolation import check_compatible

MAX_SWEEPS = 100


@dataclass(frozen=True)
class PermutationSpec:
    """Which state-dict axes each permutation acts on.

    Attributes:
        perms: permutation name -> ((state key, axis), ...) it reorders.
        sizes: permutation name -> number of units.
        units: (state key, axis) -> (width, sections) where a unit spans more than one entry of
            the axis: each unit is ``width`` consecutive entries, and the axis holds ``sections``
            consecutive blocks of ``sizes`` units (the fused q/k/v projection of an attention
            layer: 3 sections, heads ``head_dim`` wide). Absent: (1, 1), one entry per unit.
        followers: state keys that move with their units but are not matched (BatchNorm's
            running statistics: buffers, not weights; Git Re-Basin matches weights).
        axes: state key -> {axis: permutation name} (derived).

    Example:
        >>> from transferscope.measures.alignment import PermutationSpec
        >>> # the 8 hidden units of nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)):
        >>> # rows of the first layer's weight and bias, columns of the second layer's weight
        >>> spec = PermutationSpec(
        ...     {"hidden": (("0.weight", 0), ("0.bias", 0), ("2.weight", 1))}, {"hidden": 8}
        ... )
        >>> spec.axes
        {'0.weight': {0: 'hidden'}, '0.bias': {0: 'hidden'}, '2.weight': {1: 'hidden'}}
    """

    perms: dict[str, tuple[tuple[str, int], ...]]
    sizes: dict[str, int]
    axes: dict[str, dict[int, str]] = field(default_factory=dict)
    units: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    followers: frozenset[str] = frozenset()

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
        ResNet = BasicBlock = None
    if ResNet is not None and isinstance(model, ResNet):
        stages = [f"layer{i}" for i in range(1, 5)]
        first = model.layer1[0]
        return (_TV_BASIC if isinstance(first, BasicBlock) else _TV_BOTTLENECK), stages
    try:  # timm's ResNet names its layers as torchvision's does
        from timm.models.resnet import BasicBlock as TimmBasicBlock
        from timm.models.resnet import ResNet as TimmResNet
    except ImportError:  # timm is optional
        TimmResNet = TimmBasicBlock = None  # type: ignore[assignment,misc]
    if TimmResNet is not None and isinstance(model, TimmResNet):
        stages = [f"layer{i}" for i in range(1, 5)]
        first = model.get_submodule("layer1.0")
        return (_TV_BASIC if isinstance(first, TimmBasicBlock) else _TV_BOTTLENECK), stages
    raise _unsupported(model)


def _unsupported(model: nn.Module, why: str = "") -> TransferscopeError:
    return TransferscopeError(
        f"permutation alignment does not support {type(model).__name__}{why}: supported are "
        "fixup-small, fixup-resnet50, torchvision and timm ResNets (resnet18, resnet50, ...) and "
        "timm's VisionTransformer and ConvNeXt"
    )


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The :class:`PermutationSpec` of a supported model, from its module graph (module doc).

    Permutation names: ResNets: ``stream0``, ``stream1``, ... for the residual streams (a new one
    after each projection shortcut) and ``<block>.<conv>`` for the hidden channels of a branch.
    ViTs: ``stream``, ``blocks.<i>.heads`` and ``blocks.<i>.mlp``. ConvNeXts: ``stream<stage>``
    and ``stages.<s>.blocks.<b>.mlp``.

    Example:
        >>> from transferscope.measures.alignment import permutation_spec
        >>> from transferscope.models.fixup import fixup_small
        >>> spec = permutation_spec(fixup_small(num_outputs=3, in_channels=1, widths=(4, 8)))
        >>> spec.sizes  # a stream per projection shortcut, and each block's hidden channels
        {'stream0': 4, 'layer1.0.conv1': 4, 'layer2.0.conv1': 8, 'stream1': 8}
        >>> spec.axes["fc.weight"]  # the classifier's inputs follow the last stream
        {1: 'stream1'}
    """
    builder = _timm_spec_builder(model)
    spec = builder(model) if builder is not None else _resnet_spec(model)
    # Buffers (running statistics) follow their units; matching them too would let them outvote
    # the weights: a stem's running variance can be in the hundreds while its weights are ~0.1.
    buffers = frozenset(name for name, _ in model.named_buffers()) & frozenset(spec.axes)
    return PermutationSpec(spec.perms, spec.sizes, units=spec.units, followers=buffers)


def _resnet_spec(model: nn.Module) -> PermutationSpec:
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
                shortcut, *shortcut_norm = family.shortcut
                add(stream, f"{block}.{shortcut}.weight", 1)
                conv_out(
                    inner,
                    f"{block}.{shortcut}",
                    f"{block}.{shortcut_norm[0]}" if shortcut_norm else None,
                )
                stream = inner
    add(stream, f"{family.head}.weight", 1)
    sizes = {
        name: int(state[entries[0][0]].shape[entries[0][1]]) for name, entries in perms.items()
    }
    spec = PermutationSpec({k: tuple(v) for k, v in perms.items()}, sizes)
    from transferscope.models.fixup import scalar_parameter_names

    _check_claimed(model, spec, {f"{family.head}.bias", *scalar_parameter_names(model)})
    return spec


def _check_claimed(model: nn.Module, spec: PermutationSpec, unaffected: set[str]) -> None:
    """Refuse a model with a floating state entry that no permutation reorders and that is not
    known to be unaffected: a layer the spec does not know (a squeeze-excitation module, a deep
    stem, an attention-pooling head) would otherwise be left in place and break the function."""
    for key, value in model.state_dict().items():
        if value.is_floating_point() and key not in spec.axes and key not in unaffected:
            raise _unsupported(
                model, f" with '{key}' (a layer permutation alignment does not know how to reorder)"
            )


# --------------------------------------------------------------------------------------------
# the spec of a timm ViT or ConvNeXt


class _Builder:
    """Collects (permutation, key, axis) entries over a state dict; keys it does not hold are
    skipped (a layer without bias), and :meth:`spec` refuses any floating entry left unclaimed
    that is not listed as unaffected."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.state = model.state_dict()
        self.perms: dict[str, list[tuple[str, int]]] = {}
        self.units: dict[tuple[str, int], tuple[int, int]] = {}
        self.sizes: dict[str, int] = {}
        self.unaffected: set[str] = set()

    def add(self, perm: str, key: str, axis: int, width: int = 1, sections: int = 1) -> None:
        if key not in self.state:
            return
        self.perms.setdefault(perm, []).append((key, axis))
        if (width, sections) != (1, 1):
            self.units[(key, axis)] = (width, sections)
        length = int(self.state[key].shape[axis])
        n, rest = divmod(length, width * sections)
        if rest or self.sizes.setdefault(perm, n) != n:
            raise TransferscopeError(  # a bug in a spec, not a user error
                f"permutation spec: axis {axis} of '{key}' ({length}) does not hold "
                f"{self.sizes.get(perm, n)} units of {width} x {sections} for '{perm}'"
            )

    def norm(self, perm: str, module: str) -> None:
        """A LayerNorm (or any per-feature affine norm) whose features are ``perm``'s units."""
        for entry in ("weight", "bias"):
            self.add(perm, f"{module}.{entry}", 0)

    def linear(self, out_perm: str | None, in_perm: str | None, module: str) -> None:
        """A linear or convolution layer: outputs (weight rows, bias) and inputs (columns)."""
        if out_perm is not None:
            self.add(out_perm, f"{module}.weight", 0)
            self.add(out_perm, f"{module}.bias", 0)
        if in_perm is not None:
            self.add(in_perm, f"{module}.weight", 1)

    def spec(self) -> PermutationSpec:
        result = PermutationSpec(
            {k: tuple(v) for k, v in self.perms.items()}, dict(self.sizes), units=self.units
        )
        _check_claimed(self.model, result, self.unaffected)
        return result


def _vit_spec(model: nn.Module) -> PermutationSpec:
    from timm.models.vision_transformer import Block, VisionTransformer

    assert isinstance(model, VisionTransformer)  # _timm_spec_builder picks this spec for one
    spec = _Builder(model)
    stream = "stream"
    for key in ("cls_token", "reg_token", "pos_embed"):
        spec.add(stream, key, 2)
    spec.linear(stream, None, "patch_embed.proj")
    for name in ("patch_embed.norm", "norm_pre", "norm", "fc_norm"):
        spec.norm(stream, name)
    for i, block in enumerate(model.blocks):
        attn = getattr(block, "attn", None)
        if type(block) is not Block or attn is None or getattr(attn, "qkv", None) is None:
            raise _unsupported(model, f" with block {i} of type {type(block).__name__}")
        p, heads, hidden = f"blocks.{i}", f"blocks.{i}.heads", f"blocks.{i}.mlp"
        width = int(attn.head_dim)
        spec.norm(stream, f"{p}.norm1")
        spec.linear(None, stream, f"{p}.attn.qkv")
        spec.add(heads, f"{p}.attn.qkv.weight", 0, width, 3)
        spec.add(heads, f"{p}.attn.qkv.bias", 0, width, 3)
        for entry in ("weight", "bias"):  # a norm over the heads' concatenated outputs
            spec.add(heads, f"{p}.attn.norm.{entry}", 0, width)
            # per-dimension norms of queries and keys, shared by every head
            spec.unaffected |= {f"{p}.attn.q_norm.{entry}", f"{p}.attn.k_norm.{entry}"}
        spec.add(heads, f"{p}.attn.proj.weight", 1, width)
        spec.linear(stream, None, f"{p}.attn.proj")
        spec.add(stream, f"{p}.ls1.gamma", 0)
        spec.norm(stream, f"{p}.norm2")
        spec.linear(hidden, stream, f"{p}.mlp.fc1")
        spec.norm(hidden, f"{p}.mlp.norm")
        spec.linear(stream, hidden, f"{p}.mlp.fc2")
        spec.add(stream, f"{p}.ls2.gamma", 0)
    spec.linear(None, stream, "head")
    spec.unaffected.add("head.bias")
    return spec.spec()


def _convnext_spec(model: nn.Module) -> PermutationSpec:
    from timm.models.convnext import ConvNeXt, ConvNeXtBlock

    assert isinstance(model, ConvNeXt)  # _timm_spec_builder picks this spec for one
    spec = _Builder(model)
    stem = model.stem
    if not (isinstance(stem, nn.Sequential) and len(stem) == 2):
        raise _unsupported(model, " with a stem other than timm's patch stem (conv, norm)")
    stream = "stream0"
    spec.linear(stream, None, "stem.0")
    spec.norm(stream, "stem.1")
    for s, stage in enumerate(model.stages):
        if isinstance(stage.downsample, nn.Sequential):
            new = f"stream{s}"
            spec.norm(stream, f"stages.{s}.downsample.0")
            spec.linear(new, stream, f"stages.{s}.downsample.1")
            stream = new
        for b, block in enumerate(stage.blocks):  # type: ignore[arg-type]  # an nn.Sequential, typed Tensor | Module
            p, hidden = f"stages.{s}.blocks.{b}", f"stages.{s}.blocks.{b}.mlp"
            dw = block.conv_dw
            depthwise = dw.groups == dw.in_channels == dw.out_channels
            if type(block) is not ConvNeXtBlock or not depthwise:
                raise _unsupported(model, f" with block {p} of type {type(block).__name__}")
            # One filter per channel (weight (C, 1, k, k)): channels move with the stream.
            spec.linear(stream, None, f"{p}.conv_dw")
            spec.norm(stream, f"{p}.norm")
            spec.linear(hidden, stream, f"{p}.mlp.fc1")
            spec.norm(hidden, f"{p}.mlp.norm")
            spec.norm(hidden, f"{p}.mlp.grn")  # ConvNeXt V2: per-channel response norm
            spec.linear(stream, hidden, f"{p}.mlp.fc2")
            spec.add(stream, f"{p}.gamma", 0)
    spec.norm(stream, "norm_pre")
    spec.norm(stream, "head.norm")
    spec.linear(None, stream, "head.fc")
    spec.unaffected.add("head.fc.bias")
    return spec.spec()


def _timm_spec_builder(model: nn.Module) -> Callable[[nn.Module], PermutationSpec] | None:
    try:
        from timm.models.convnext import ConvNeXt
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:  # timm is optional
        return None
    if isinstance(model, VisionTransformer):
        return _vit_spec
    if isinstance(model, ConvNeXt):
        return _convnext_spec
    return None


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

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch.func import functional_call
        >>> from transferscope.measures.alignment import PermutationSpec, permute_state
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> spec = PermutationSpec(
        ...     {"hidden": (("0.weight", 0), ("0.bias", 0), ("2.weight", 1))}, {"hidden": 8}
        ... )
        >>> permuted = permute_state(spec, net.state_dict(), {"hidden": torch.randperm(8)})
        >>> x = torch.randn(5, 4)
        >>> torch.allclose(functional_call(net, permuted, (x,)), net(x))  # the same function
        True
        >>> torch.equal(permuted["2.bias"], net[2].bias)  # the outputs are never permuted
        True
    """
    out = dict(state)
    for key, axes in spec.axes.items():
        if key not in out:
            continue
        w = out[key]
        for axis, name in axes.items():
            if (key, axis) != except_axis:
                index = _entries(perms[name], *spec.units.get((key, axis), (1, 1)))
                w = torch.index_select(w, axis, index.to(w.device))
        out[key] = w
    return out


def _entries(perm: Tensor, width: int, sections: int) -> Tensor:
    """The axis entries of unit permutation ``perm`` when each unit is ``width`` consecutive
    entries, repeated in ``sections`` consecutive blocks of ``len(perm)`` units."""
    if width == 1 and sections == 1:
        return perm
    n = len(perm)
    within = (perm[:, None] * width + torch.arange(width)).reshape(-1)
    return torch.cat([s * n * width + within for s in range(sections)])


def _flat(w: Tensor, axis: int, width: int = 1, sections: int = 1) -> Tensor:
    """(units, everything else) of ``w`` along ``axis``: row i holds all of unit i's entries."""
    moved = torch.movedim(w, axis, 0)
    n = w.shape[axis] // (width * sections)
    grouped = moved.reshape(sections, n, width, -1).transpose(0, 1)
    return grouped.reshape(n, -1).double()


def _distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor], keys: set[str]) -> float:
    """L2 distance over the floating entries ``keys`` (float64)."""
    total = sum(
        float((v.detach().double() - b[k].detach().double()).pow(2).sum())
        for k, v in a.items()
        if k in keys and v.is_floating_point()
    )
    return total**0.5


@dataclass
class AlignmentResult:
    """B with its hidden units permuted to match A.

    Attributes:
        state: B's state dict, permuted (same keys, shapes and function as B).
        permutations: permutation name -> (units,) int64: unit i of the result is B's unit
            ``permutations[name][i]``.
        distance_before, distance_after: L2 distance ‖θ_A − θ_B‖ over every weight (the
            model's parameters: the entries matched; BatchNorm's running statistics left out),
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
    C[i, j] = Σ_(key, axis) ⟨A's unit i, B's unit j⟩ (other axes already permuted; the spec's
    followers left out) is solved as a linear assignment problem, and the new permutation is kept only if it strictly improves the
    objective (so the loop ends, and the distance to A never grows). Returns the permutations and
    the number of sweeps.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from transferscope.measures.alignment import (
        ...     PermutationSpec, permute_state, weight_matching
        ... )
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> spec = PermutationSpec(
        ...     {"hidden": (("0.weight", 0), ("0.bias", 0), ("2.weight", 1))}, {"hidden": 8}
        ... )
        >>> state_a = net.state_dict()
        >>> state_b = permute_state(spec, state_a, {"hidden": torch.randperm(8)})  # shuffled
        >>> perms, sweeps = weight_matching(spec, state_a, state_b)
        >>> aligned = permute_state(spec, state_b, perms)
        >>> all(torch.equal(aligned[k], v) for k, v in state_a.items())  # A's order recovered
        True
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
                if key in spec.followers:
                    continue
                w_b = permute_state(spec, {key: b[key]}, perms, except_axis=(key, axis))[key]
                shape = spec.units.get((key, axis), (1, 1))
                cost += _flat(a[key], axis, *shape) @ _flat(w_b, axis, *shape).T
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
        model: the architecture of both states (fixup-small, fixup-resnet50, a torchvision
            ResNet, a timm ViT or ConvNeXt); its own weights are not used.
        state_a, state_b: state dicts of ``model``'s keys and shapes.
        seed: the order in which each sweep visits the permutations.
        max_sweeps: stop after this many sweeps even if one still improved.

    Returns:
        An :class:`AlignmentResult`; ``result.state`` computes the same function as B (in eval
        mode; for a BatchNorm network running statistics are permuted too).

    Example:
        >>> import torch
        >>> from torch.func import functional_call
        >>> from transferscope.measures.alignment import align
        >>> from transferscope.models.fixup import fixup_small
        >>> _ = torch.manual_seed(0)
        >>> model = fixup_small(num_outputs=3, in_channels=1, widths=(4, 8))
        >>> def random_state():
        ...     return {k: torch.randn_like(v) for k, v in model.state_dict().items()}
        >>> state_a, state_b = random_state(), random_state()
        >>> result = align(model, state_a, state_b)
        >>> result.distance_after <= result.distance_before  # never further from A
        True
        >>> x = torch.randn(2, 1, 8, 8)
        >>> same = functional_call(model, result.state, (x,)), functional_call(model, state_b, (x,))
        >>> torch.allclose(*same, atol=1e-5)  # and still B's function
        True
        >>> align(model, state_a, state_a).distance_after  # a model aligned to itself
        0.0
    """
    check_compatible(state_a, state_b)
    check_compatible(dict(model.state_dict()), state_a, ("the model", "A"))
    spec = permutation_spec(model)
    perms, sweeps = weight_matching(spec, state_a, state_b, seed=seed, max_sweeps=max_sweeps)
    b = {k: v.detach() for k, v in state_b.items()}
    aligned = permute_state(spec, b, perms)
    weights = {name for name, _ in model.named_parameters()}
    before, after = _distance(state_a, b, weights), _distance(state_a, aligned, weights)
    return AlignmentResult(aligned, perms, before, after, sweeps)


__all__ = [
    "AlignmentResult",
    "PermutationSpec",
    "align",
    "permutation_spec",
    "permute_state",
    "weight_matching",
]
