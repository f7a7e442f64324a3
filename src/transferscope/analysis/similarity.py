"""Feature similarity by centred kernel alignment (Neyshabur et al. 2020, §3.2, "Feature similarity").

Linear CKA (Kornblith et al. 2019) of activations X (n x p) and Y (n x q) of two models on the
same n inputs, with mean-centred columns:

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

It lies in [0, 1], is 1 for X = Y, and is invariant to orthogonal transforms and isotropic scaling
of either side. Three ways to compute it:

- :func:`linear_cka`: one shot, in feature space (p x p, q x q and p x q products).
- :func:`linear_cka_gram`: one shot, in Gram space (two n x n centred Gram matrices, HSIC); the
  textbook form, kept as a reference for tests and benchmarks.
- :class:`CKAAccumulator`: streamed over batches. Exact by default (the same number as the one-shot
  functions, from running sums; never an n x n matrix over the whole data set), or with
  ``unbiased_minibatch=True`` the minibatch CKA of Nguyen, Raghu & Kornblith (2021): the unbiased
  HSIC estimator of each batch, averaged over batches.

:func:`feature_similarity` runs two models on the same inputs and returns the CKA at each named
layer (default: the paper's conv1 and stage outputs, see :func:`transferscope.models.analysis_layers`).
All arithmetic is float64.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from transferscope.errors import TransferscopeError, did_you_mean
from transferscope.models.layout import analysis_layers

Strategy = Literal["auto", "sums", "rows"]

# Column chunk (in float64 elements per row-block) when Gram matrices are built from stored rows:
# bounds the float64 copy of a float32 activation block to about 64 MiB.
_CHUNK_ELEMENTS = 1 << 23
DEFAULT_MAX_BYTES = 4 << 30


def _matrix(x: Any, name: str) -> Tensor:
    """``x`` as an (n, features) tensor; extra dimensions are flattened into features."""
    t = x if isinstance(x, Tensor) else torch.as_tensor(x)
    t = t.detach()
    if t.ndim == 0:
        raise TransferscopeError(f"{name} must have an example dimension, got a scalar")
    return t.reshape(t.shape[0], -1) if t.ndim != 2 else t


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape[0] != y.shape[0]:
        raise TransferscopeError(
            f"CKA needs the same examples on both sides: x has {x.shape[0]} rows, y has "
            f"{y.shape[0]}"
        )


def _centre(x: Tensor) -> Tensor:
    x = x.to(torch.float64)
    return x - x.mean(dim=0, keepdim=True)


def _ratio(num: Tensor, den: Tensor) -> float:
    # A constant (e.g. dead) layer has zero variance: CKA is undefined there, not 0 or 1.
    return float(num / den) if float(den) > 0 else float("nan")


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of features ``x`` (n, p) and ``y`` (n, q), computed in feature space.

    Rows are examples; further dimensions (e.g. conv activations (n, C, H, W)) are flattened into
    features. Columns are mean-centred and everything is done in float64 (Neyshabur et al. 2020, §3.2). Costs
    O(n (p + q)^2) time and O((p + q)^2) memory; for p much larger than n prefer
    :func:`linear_cka_gram` or :class:`CKAAccumulator` (which picks the cheaper form).

    Returns:
        CKA in [0, 1]; NaN when either side has zero variance.
    """
    xm, ym = _matrix(x, "x"), _matrix(y, "y")
    _check_pair(xm, ym)
    xc, yc = _centre(xm), _centre(ym.to(xm.device))
    num = (yc.T @ xc).square().sum()
    den = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    return _ratio(num, den)


def centre_gram(k: Tensor) -> Tensor:
    """H K H for H = I - 11^T / n, by subtracting row, column and grand means (O(n^2))."""
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


def linear_cka_gram(x: Tensor, y: Tensor) -> float:
    """Linear CKA of ``x`` (n, p) and ``y`` (n, q) through n x n Gram matrices (reference form).

    K = X X^T and L = Y Y^T are centred (H K H), HSIC(K, L) = <HKH, HLH>_F / (n - 1)^2, and
    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) (the (n - 1)^2 factors cancel). Mathematically
    equal to :func:`linear_cka`; costs O(n^2 (p + q)) time and O(n^2) memory. float64.
    """
    xm, ym = _matrix(x, "x"), _matrix(y, "y")
    _check_pair(xm, ym)
    xd, yd = xm.to(torch.float64), ym.to(xm.device, torch.float64)
    kc, lc = centre_gram(xd @ xd.T), centre_gram(yd @ yd.T)
    num = (kc * lc).sum()
    den = torch.sqrt((kc * kc).sum() * (lc * lc).sum())
    return _ratio(num, den)


def hsic_unbiased(k: Tensor, l: Tensor) -> Tensor:  # noqa: E741 (the paper's names)
    """Unbiased HSIC estimator of Song et al. (2012) for symmetric n x n Gram matrices, n >= 4.

    With K~, L~ the Gram matrices with zeroed diagonals (Neyshabur et al. 2020, §3.2):
    HSIC1 = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3)).
    Returns a float64 scalar tensor.
    """
    n = k.shape[0]
    if n < 4:
        raise TransferscopeError(
            f"unbiased HSIC needs batches of at least 4 examples (n - 3 is in its denominator), "
            f"got {n}; use a larger batch size"
        )
    k, l = k.to(torch.float64), l.to(torch.float64)  # noqa: E741
    # Zeroing the diagonals is done algebraically (subtracting its terms), which spares two
    # n x n copies: tr(K~ L~) = sum_ij K_ij L_ij - sum_i K_ii L_ii for symmetric K, L.
    dk, dl = k.diagonal(), l.diagonal()
    trace = (k * l).sum() - (dk * dl).sum()
    sums = (k.sum() - dk.sum()) * (l.sum() - dl.sum()) / ((n - 1) * (n - 2))
    # 1^T K~ L~ 1 = (K~ 1) . (L~ 1) for symmetric K~: two vectors instead of an n x n product.
    cross = (k.sum(dim=1) - dk) @ (l.sum(dim=1) - dl) * (2.0 / (n - 2))
    return (trace + sums - cross) / (n * (n - 3))


class CKAAccumulator:
    """Linear CKA streamed over batches: ``update(x, y)`` per batch, then ``compute()``.

    Args:
        unbiased_minibatch: False (default): exact linear CKA over every example seen, equal to
            :func:`linear_cka` on the concatenated batches. True: minibatch CKA (Nguyen et al.
            2021, Neyshabur et al. 2020, §3.2), mean_i HSIC1(K_i, L_i) / sqrt(mean_i HSIC1(K_i, K_i) mean_i
            HSIC1(L_i, L_i)) over batches i, each of at least 4 examples; it estimates the
            population CKA with memory O(batch^2) whatever the feature sizes.
        strategy: how the exact mode keeps its state. ``"sums"``: the column sums and X^T X,
            Y^T Y, X^T Y of the (shifted) features, float64, memory O((p + q)^2) independent of n.
            ``"rows"``: the batches themselves, CKA from n x n Gram matrices at the end, memory
            O(n (p + q)). ``"auto"`` (default) keeps rows while they are smaller than the sums would
            be and then switches to sums, so memory stays at the smaller of the two: flattened conv
            activations (p in the tens of thousands) of a few thousand examples stay rows, pooled
            or fully connected features go to sums after a few batches. All three give the same
            number.
        max_bytes: the most the exact state may hold (default 4 GiB). Beyond it ``update`` raises
            a TransferscopeError suggesting pooled features, fewer examples or minibatch CKA,
            instead of exhausting memory (flattened ResNet-50 activations at 224 px are ~10^6
            features per layer).

    Batches are (b, p) and (b, q) tensors (extra dimensions flattened); every batch must have the
    same p and q. The state lives on the device of the first ``x``.
    """

    def __init__(
        self,
        unbiased_minibatch: bool = False,
        strategy: Strategy = "auto",
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        if strategy not in ("auto", "sums", "rows"):
            raise TransferscopeError(f"unknown CKA strategy '{strategy}'; valid: auto, sums, rows")
        self.unbiased_minibatch = unbiased_minibatch
        self.strategy: Strategy = strategy
        self.max_bytes = max_bytes
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen."""
        self.n = 0
        self._dims: tuple[int, int] | None = None
        self._device: torch.device | None = None
        # rows
        self._rows: list[tuple[Tensor, Tensor]] = []
        self._row_bytes = 0
        # sums (of features minus a fixed shift: the first batch's column means, which keeps the
        # centring subtraction X^T X - n mu mu^T from cancelling catastrophically).
        self._shift: tuple[Tensor, Tensor] | None = None
        self._sx: Tensor | None = None
        self._sy: Tensor | None = None
        self._sxx: Tensor | None = None
        self._syy: Tensor | None = None
        self._sxy: Tensor | None = None
        # unbiased minibatch
        self._batches = 0
        self._hsic = torch.zeros(3, dtype=torch.float64)  # (K, L), (K, K), (L, L)

    @property
    def mode(self) -> str:
        """Where the exact state is now: 'rows', 'sums' (or 'minibatch'); 'empty' before data."""
        if self.unbiased_minibatch:
            return "minibatch"
        if self._sxx is not None:
            return "sums"
        return "rows" if self._rows else "empty"

    @property
    def state_bytes(self) -> int:
        """Bytes held by the accumulator's tensors (for memory reports)."""
        tensors = [self._sx, self._sy, self._sxx, self._syy, self._sxy]
        total = sum(t.numel() * t.element_size() for t in tensors if t is not None)
        return total + self._row_bytes

    def _sums_bytes(self) -> int:
        assert self._dims is not None
        p, q = self._dims
        return 8 * (p * p + q * q + p * q + p + q)

    def update(self, x: Tensor, y: Tensor) -> None:
        """Add a batch: ``x`` (b, p) features of model A and ``y`` (b, q) of model B, same b inputs."""
        xm, ym = _matrix(x, "x"), _matrix(y, "y")
        _check_pair(xm, ym)
        dims = (xm.shape[1], ym.shape[1])
        if self._dims is None:
            self._dims = dims
            self._device = xm.device
        elif dims != self._dims:
            raise TransferscopeError(
                f"CKA batches must keep their feature sizes: first batch had (p, q) = {self._dims}, "
                f"this one {dims}"
            )
        ym = ym.to(self._device)
        xm = xm.to(self._device)
        if self.unbiased_minibatch:
            self._update_minibatch(xm, ym)
            return
        if xm.shape[0] == 0:
            return
        if self.strategy == "sums" or self._sxx is not None:
            self._check_memory(self._sums_bytes(), "running sums of p x p, q x q, p x q products")
            self.n += xm.shape[0]
            self._accumulate(xm, ym)
            return
        row_bytes = self._row_bytes + xm.shape[0] * (
            dims[0] * _stored_size(xm) + dims[1] * _stored_size(ym)
        )
        flush = self.strategy == "auto" and row_bytes > self._sums_bytes()
        if flush:
            self._check_memory(self._sums_bytes(), "running sums of p x p, q x q, p x q products")
        else:
            self._check_memory(row_bytes, f"the features of {self.n + xm.shape[0]} examples")
        self.n += xm.shape[0]
        self._rows.append((_stored(xm), _stored(ym)))
        self._row_bytes += sum(t.numel() * t.element_size() for t in self._rows[-1])
        if flush:
            self._flush_rows()

    def _check_memory(self, needed: int, what: str) -> None:
        if self.max_bytes is None or needed <= self.max_bytes:
            return
        assert self._dims is not None
        p, q = self._dims
        raise TransferscopeError(
            f"exact CKA of {p} and {q} features would hold {needed / 2**30:.1f} GiB ({what}), "
            f"over max_bytes = {self.max_bytes / 2**30:.1f} GiB; use pooled features "
            "(pooled=True / analyses.similarity.pooled), fewer examples (max_examples), or "
            "minibatch CKA (unbiased_minibatch=True, memory O(batch^2))"
        )

    def _update_minibatch(self, x: Tensor, y: Tensor) -> None:
        k, l = _gram(x), _gram(y)  # noqa: E741
        values = torch.stack([hsic_unbiased(k, l), hsic_unbiased(k, k), hsic_unbiased(l, l)])
        self._hsic = self._hsic.to(values.device) + values
        self._batches += 1
        self.n += x.shape[0]

    def _accumulate(self, x: Tensor, y: Tensor) -> None:
        x64, y64 = x.to(torch.float64), y.to(torch.float64)
        if self._shift is None:
            self._shift = (x64.mean(dim=0), y64.mean(dim=0))
            p, q = x64.shape[1], y64.shape[1]
            z = {"dtype": torch.float64, "device": x64.device}
            self._sx, self._sy = torch.zeros(p, **z), torch.zeros(q, **z)
            self._sxx, self._syy = torch.zeros(p, p, **z), torch.zeros(q, q, **z)
            self._sxy = torch.zeros(p, q, **z)
        assert self._sx is not None and self._sy is not None
        assert self._sxx is not None and self._syy is not None and self._sxy is not None
        xs, ys = x64 - self._shift[0], y64 - self._shift[1]
        self._sx += xs.sum(dim=0)
        self._sy += ys.sum(dim=0)
        self._sxx.addmm_(xs.T, xs)
        self._syy.addmm_(ys.T, ys)
        self._sxy.addmm_(xs.T, ys)

    def _flush_rows(self) -> None:
        rows, self._rows, self._row_bytes = self._rows, [], 0
        for x, y in rows:
            self._accumulate(x, y)

    def compute(self) -> float:
        """The CKA of everything seen so far (NaN if a side has zero variance).

        Raises:
            TransferscopeError: if no batch was added.
        """
        if self.n == 0:
            raise TransferscopeError("CKAAccumulator.compute() called before any update()")
        if self.unbiased_minibatch:
            kl, kk, ll = (self._hsic / self._batches).unbind()
            den = kk * ll
            return float(kl / torch.sqrt(den)) if float(den) > 0 else float("nan")
        if self._sxx is None:
            return self._compute_rows()
        assert self._sx is not None and self._sy is not None
        assert self._syy is not None and self._sxy is not None
        n = self.n
        # Centred products from shifted sums: sum (x - mu)(x - mu)^T = S_xx - s_x s_x^T / n.
        cxx = self._sxx - torch.outer(self._sx, self._sx) / n
        cyy = self._syy - torch.outer(self._sy, self._sy) / n
        cxy = self._sxy - torch.outer(self._sx, self._sy) / n
        num = cxy.square().sum()
        den = torch.linalg.matrix_norm(cxx) * torch.linalg.matrix_norm(cyy)
        return _ratio(num, den)

    def _compute_rows(self) -> float:
        x = torch.cat([r[0] for r in self._rows])
        y = torch.cat([r[1] for r in self._rows])
        n, p, q = x.shape[0], x.shape[1], y.shape[1]
        if n * (p + q) >= p * p + q * q + p * q:
            # Many examples, narrow features: the p x q products are cheaper than n x n Grams.
            return linear_cka(x, y)
        # Wide features (flattened conv maps), few examples: centred Gram matrices, built in
        # column chunks so the float64 copy of the activations stays small.
        k, l = _centred_gram(x), _centred_gram(y)  # noqa: E741
        num = (k * l).sum()
        den = torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l)
        return _ratio(num, den)


def _stored_size(t: Tensor) -> int:
    """Bytes per element of ``t`` once stored by :func:`_stored`."""
    return 8 if t.dtype == torch.float64 else 4


def _stored(t: Tensor) -> Tensor:
    # Activations arrive in float32 (or lower); keeping them in float32 halves the buffer, and
    # float64 inputs stay float64 so exactness tests do not lose digits.
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    return t.to(dtype=dtype, copy=True)


def _centred_gram(x: Tensor) -> Tensor:
    """(X - mu)(X - mu)^T in float64 for X (n, p), accumulated over column chunks."""
    n, p = x.shape
    mu = _column_mean(x)
    gram = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, p, step):
        block = x[:, start : start + step].to(torch.float64) - mu[start : start + step]
        gram.addmm_(block, block.T)
    return gram


def _gram(x: Tensor) -> Tensor:
    """X X^T in float64 for X (b, p), accumulated over column chunks: a float64 copy of a wide
    activation batch (10^6 features at 224 px) would cost more than the batch itself."""
    b, p = x.shape
    gram = torch.zeros(b, b, dtype=torch.float64, device=x.device)
    step = max(1, _CHUNK_ELEMENTS // max(b, 1))
    for start in range(0, p, step):
        block = x[:, start : start + step].to(torch.float64)
        gram.addmm_(block, block.T)
    return gram


def _column_mean(x: Tensor) -> Tensor:
    n, p = x.shape
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    return torch.cat([x[:, s : s + step].to(torch.float64).mean(dim=0) for s in range(0, p, step)])


# --------------------------------------------------------------------------------------------
# Two models, same inputs


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


def exact_state_bytes(p: int, q: int, n: int | None) -> int:
    """Bytes the exact accumulator needs at most: the smaller of the rows of n examples (float32)
    and the float64 sums (p x p, q x q, p x q); the sums alone when n is unknown."""
    sums = 8 * (p * p + q * q + p * q + p + q)
    return sums if n is None else min(sums, 4 * n * (p + q))


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
                acc = accumulators[name]
                if acc.unbiased_minibatch and len(x) < 4:
                    continue
                try:
                    acc.update(fa, fb)
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
