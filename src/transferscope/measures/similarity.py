"""Feature similarity of two models, layer by layer (Neyshabur et al. 2020, §3.2, "Feature similarity").

:func:`feature_similarity` runs two models on the same inputs and returns the linear CKA
(Kornblith et al. 2019) at each named layer (default: the paper's conv1 and stage outputs, see
:func:`transferscope.models.analysis_layers`); :func:`layer_similarity` also says how each layer
was measured and picks, per layer, the exact CKA or the minibatch CKA of Nguyen, Raghu & Kornblith
(2021) by the memory the exact state would take. Layers are named by :func:`resolve_layers` and
their activations captured with forward hooks (flattened, or globally average-pooled).

The CKA arithmetic itself (one shot, Gram space, unbiased HSIC, streamed accumulators) is in
:mod:`transferscope.measures.cka`; its public names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from transferscope.errors import TransferscopeError, did_you_mean
from transferscope.measures.cka import (
    DEFAULT_MAX_BYTES,
    CKAAccumulator,
    centre_gram,
    exact_state_bytes,
    hsic_unbiased,
    linear_cka,
    linear_cka_gram,
)
from transferscope.models.layout import analysis_layers


def _valid_layer_names(model: nn.Module, defaults: Mapping[str, str]) -> list[str]:
    names = list(defaults)
    names += [n for n, _ in model.named_modules() if n and n not in defaults]
    return names


def resolve_layers(
    model_a: nn.Module,
    model_b: nn.Module,
    layers: Sequence[str] | Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Display name -> module path of the layers to compare.

    ``None``: the paper's layers (:func:`analysis_layers` of ``model_a``: stem and stage outputs).
    A list of names: each is one of those display names or any module path of the models
    (``model.named_modules()``). A mapping gives display names explicitly. Every path must exist
    in both models; an unknown one raises a TransferscopeError naming the valid choices.

    Example:
        >>> from torch import nn
        >>> from transferscope.measures.similarity import resolve_layers
        >>> from transferscope.models.fixup import fixup_small
        >>> resnet = fixup_small(num_outputs=3, in_channels=1, widths=(4, 8))
        >>> resolve_layers(resnet, resnet)  # the paper's layers: stem and stage outputs
        {'conv1': 'conv1', 'layer1': 'layer1', 'layer2': 'layer2'}
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> resolve_layers(net, net, {"hidden": "1", "logits": "2"})
        {'hidden': '1', 'logits': '2'}
    """
    if layers is None:
        return dict(analysis_layers(model_a))
    try:
        defaults = analysis_layers(model_a)
    except TransferscopeError:  # a model without a known layout: module paths only
        defaults = {}
    if isinstance(layers, Mapping):
        wanted = dict(layers)
    elif isinstance(layers, str):
        raise TransferscopeError(f"layers must be a list of names, got the string '{layers}'")
    else:
        wanted = {name: defaults.get(name, name) for name in layers}
    modules_a = dict(model_a.named_modules())
    modules_b = dict(model_b.named_modules())
    for display, path in wanted.items():
        if path in modules_a and path in modules_b:
            continue
        valid = _valid_layer_names(model_a, defaults)
        shown = ", ".join(valid[:40]) + (
            f", ... ({len(valid) - 40} more)" if len(valid) > 40 else ""
        )
        where = "model_b" if path in modules_a else "the model"
        raise TransferscopeError(
            f"unknown layer '{display}'{did_you_mean(path, valid)}: {where} has no module "
            f"'{path}'; valid: {shown}"
        )
    return wanted


def _features(output: Any, pooled: bool) -> Tensor:
    out = output[0] if isinstance(output, tuple | list) else output
    if not isinstance(out, Tensor):
        raise TransferscopeError(f"a hooked layer returned {type(out).__name__}, not a tensor")
    out = out.detach()
    if pooled and out.ndim == 4:
        out = out.mean(dim=(2, 3))  # global average pool over H, W: (B, C)
    elif pooled and out.ndim == 3:
        out = out.mean(dim=1)  # token sequences (B, N, D): average over tokens
    return out.reshape(out.shape[0], -1).float()


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _inputs(batch: Any) -> Tensor:
    x = batch[0] if isinstance(batch, tuple | list) else batch
    if not isinstance(x, Tensor):
        raise TransferscopeError(
            f"batches must yield input tensors or (input, target) pairs, got {type(x).__name__}"
        )
    return x


class _Capture:
    """Forward hooks that keep the latest output of each named module."""

    def __init__(self, model: nn.Module, layers: Mapping[str, str], pooled: bool) -> None:
        self.values: dict[str, Tensor] = {}
        modules = dict(model.named_modules())
        self.handles = [
            modules[path].register_forward_hook(self._hook(name, pooled))
            for name, path in layers.items()
        ]

    def _hook(self, name: str, pooled: bool):
        def fn(module: nn.Module, inputs: Any, output: Any) -> None:
            self.values[name] = _features(output, pooled)

        return fn

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


Estimator = Literal["auto", "exact", "minibatch"]
MINIBATCH = "minibatch (unbiased HSIC, Nguyen et al. 2021)"


@dataclass(frozen=True)
class LayerSimilarity:
    """The CKA of one layer and how it was computed.

    Attributes:
        cka: linear CKA in [0, 1] (NaN for a constant layer), or None when ``error``.
        estimator: 'exact' (linear CKA over every example) or :data:`MINIBATCH`.
        features: (p, q), the features per example of each side (flattened or pooled).
        examples: examples seen. error: why the layer has no value.
    """

    cka: float | None
    estimator: str
    features: tuple[int, int]
    examples: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cka": self.cka,
            "estimator": self.estimator,
            "features": list(self.features),
            "examples": self.examples,
            "error": self.error,
        }


def _estimator_for(
    estimator: Estimator, p: int, q: int, n: int | None, max_exact_bytes: int | None
) -> bool:
    """Whether a layer uses minibatch CKA."""
    if estimator == "minibatch":
        return True
    if estimator == "exact" or max_exact_bytes is None:
        return False
    return exact_state_bytes(p, q, n) > max_exact_bytes


@torch.no_grad()
def layer_similarity(
    model_a: nn.Module,
    model_b: nn.Module,
    batches: Iterable[Any],
    layers: Sequence[str] | Mapping[str, str] | None = None,
    pooled: bool = False,
    max_examples: int | None = None,
    estimator: Estimator = "auto",
    max_exact_bytes: int | None = 1 << 30,
    strict: bool = False,
    expected_examples: int | None = None,
) -> dict[str, LayerSimilarity]:
    """Linear CKA between two models at each layer, with the estimator used (Kornblith et al.
    2019; Neyshabur et al. 2020, §3.2).

    Args:
        model_a, model_b, batches, layers, pooled, max_examples: as in
            :func:`feature_similarity`.
        estimator: 'exact' (every example, :class:`CKAAccumulator`), 'minibatch' (the unbiased
            HSIC estimator averaged over batches: memory O(batch²) whatever the width), or 'auto'
            (default): exact unless its state for this layer would exceed ``max_exact_bytes``
            (:func:`exact_state_bytes` at ``max_examples``), then minibatch. Flattened conv maps
            of a ResNet-50 at 224 px (802,816 features at conv1) need minibatch; a 28 px network
            does not. Batches of fewer than 4 examples are left out of minibatch layers.
        max_exact_bytes: the cap of 'auto' and the most an exact layer may hold.
        strict: raise the first layer's error instead of recording it per layer.
        expected_examples: how many examples ``batches`` holds, for the 'auto' choice (default
            ``max_examples``; unknown: only the size of the running sums decides).

    Returns:
        Ordered ``{display name: LayerSimilarity}``. A layer that fails (e.g. over its memory
        cap) has ``cka`` None and its ``error``; the other layers are still computed.

    Example:
        >>> import copy
        >>> import torch
        >>> from torch import nn
        >>> from transferscope.measures.similarity import MINIBATCH, layer_similarity
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> batches = [torch.randn(10, 4), torch.randn(10, 4)]
        >>> result = layer_similarity(net, copy.deepcopy(net), batches, layers=["1", "2"])
        >>> hidden = result["1"]
        >>> round(hidden.cka, 4), hidden.estimator, hidden.features, hidden.examples
        (1.0, 'exact', (8, 8), 20)
        >>> result = layer_similarity(net, net, batches, layers=["1"], estimator="minibatch")
        >>> result["1"].estimator == MINIBATCH, round(result["1"].cka, 4)
        (True, 1.0)
    """
    wanted = resolve_layers(model_a, model_b, layers)
    if max_examples is not None and max_examples < 1:
        raise TransferscopeError(f"max_examples must be >= 1, got {max_examples}")
    accumulators: dict[str, CKAAccumulator] = {}
    dims: dict[str, tuple[int, int]] = {}
    errors: dict[str, str] = {}
    modes = (model_a.training, model_b.training)
    capture_a = _Capture(model_a, wanted, pooled)
    capture_b = _Capture(model_b, wanted, pooled)
    device_a, device_b = _device(model_a), _device(model_b)
    seen = 0
    try:
        model_a.eval()
        model_b.eval()
        for batch in batches:
            x = _inputs(batch)
            if max_examples is not None:
                x = x[: max_examples - seen]
            if len(x) == 0:
                break
            model_a(x.to(device_a))
            model_b(x.to(device_b))
            for name in wanted:
                if name in errors:
                    continue
                missing = [
                    m
                    for m, c in (("model_a", capture_a), ("model_b", capture_b))
                    if name not in c.values
                ]
                if missing:
                    raise TransferscopeError(
                        f"layer '{name}' ({wanted[name]}) was not called in the forward pass of "
                        f"{' and '.join(missing)}; pick a module the forward pass uses"
                    )
                fa, fb = capture_a.values[name], capture_b.values[name]
                if name not in accumulators:
                    dims[name] = (fa.shape[1], fb.shape[1])
                    n = expected_examples if expected_examples is not None else max_examples
                    minibatch = _estimator_for(estimator, *dims[name], n, max_exact_bytes)
                    accumulators[name] = CKAAccumulator(minibatch, max_bytes=max_exact_bytes)
                accumulator = accumulators[name]
                if accumulator.unbiased_minibatch and len(x) < 4:
                    continue
                try:
                    accumulator.update(fa, fb)
                except TransferscopeError as e:
                    if strict:
                        raise
                    errors[name] = str(e)
                    accumulators[name].reset()
            capture_a.values.clear()
            capture_b.values.clear()
            seen += len(x)
            if max_examples is not None and seen >= max_examples:
                break
    finally:
        capture_a.remove()
        capture_b.remove()
        model_a.train(modes[0])
        model_b.train(modes[1])
    if seen == 0:
        raise TransferscopeError("feature_similarity got no examples (empty batches)")
    out: dict[str, LayerSimilarity] = {}
    for name in wanted:
        acc = accumulators.get(name)
        kind = MINIBATCH if acc is not None and acc.unbiased_minibatch else "exact"
        shape = dims.get(name, (0, 0))
        if name in errors or acc is None or acc.n == 0:
            why = errors.get(name, "no batch of at least 4 examples for minibatch CKA")
            if strict:
                raise TransferscopeError(f"layer '{name}': {why}")
            out[name] = LayerSimilarity(None, kind, shape, seen, why)
            continue
        out[name] = LayerSimilarity(acc.compute(), kind, shape, seen)
    return out


def feature_similarity(
    model_a: nn.Module,
    model_b: nn.Module,
    batches: Iterable[Any],
    layers: Sequence[str] | Mapping[str, str] | None = None,
    pooled: bool = False,
    max_examples: int | None = None,
    unbiased_minibatch: bool = False,
) -> dict[str, float]:
    """Linear CKA between two models' activations at each layer, on the same inputs (Kornblith
    et al. 2019; Neyshabur et al. 2020, §3.2).

    Args:
        model_a, model_b: models whose layers are compared (same architecture, or at least the
            named modules present in both). Both run in eval mode under ``no_grad``; their
            train/eval mode is restored afterwards. Inputs go to each model's device.
        batches: iterable of input batches (B, C, H, W), or of (input, target) pairs (a
            DataLoader); both models see each batch.
        layers: None for the paper's layers (``analysis_layers(model_a)``: conv1, layer1..), a
            list of those names or module paths, or a mapping display name -> module path.
        pooled: False: conv activations (B, C, H, W) are flattened to C*H*W features (the paper's
            setting). True: global-average-pooled to C features.
        max_examples: stop after this many examples (the last batch is truncated).
        unbiased_minibatch: minibatch CKA per batch (see :class:`CKAAccumulator`) instead of the
            exact value; batches with fewer than 4 examples are skipped.

    Returns:
        Ordered ``{display name: CKA}``, each a float in [0, 1] (NaN for a constant layer). Any
        layer's failure raises; :func:`layer_similarity` records it per layer instead and picks
        the estimator per layer by memory.

    Example:
        >>> import copy
        >>> import torch
        >>> from torch import nn
        >>> from transferscope.measures.similarity import feature_similarity
        >>> _ = torch.manual_seed(0)
        >>> net_a = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> net_b = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> batches = [torch.randn(10, 4), torch.randn(10, 4)]
        >>> same = feature_similarity(net_a, copy.deepcopy(net_a), batches, layers=["1", "2"])
        >>> {name: round(cka, 4) for name, cka in same.items()}  # a model against its copy
        {'1': 1.0, '2': 1.0}
        >>> other = feature_similarity(net_a, net_b, batches, layers=["1", "2"])
        >>> all(0 <= cka <= 1 for cka in other.values())
        True
    """
    result = layer_similarity(
        model_a,
        model_b,
        batches,
        layers=layers,
        pooled=pooled,
        max_examples=max_examples,
        estimator="minibatch" if unbiased_minibatch else "exact",
        max_exact_bytes=DEFAULT_MAX_BYTES,
        strict=True,
    )
    return {name: float(r.cka) for name, r in result.items() if r.cka is not None}


__all__ = [
    "MINIBATCH",
    "CKAAccumulator",
    "LayerSimilarity",
    "centre_gram",
    "exact_state_bytes",
    "feature_similarity",
    "hsic_unbiased",
    "layer_similarity",
    "linear_cka",
    "linear_cka_gram",
    "resolve_layers",
]
