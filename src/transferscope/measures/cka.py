"""Linear CKA on feature matrices: one shot, in Gram space, unbiased HSIC, streamed (Neyshabur et al. 2020, §3.2, "Feature similarity").

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
  HSIC estimator (:func:`hsic_unbiased`) of each batch, averaged over batches.

Pure math on tensors: nothing here runs a model (that is :mod:`transferscope.measures.similarity`).
All arithmetic is float64.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from transferscope.errors import TransferscopeError

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

    Example:
        >>> import torch
        >>> from transferscope.measures.cka import linear_cka
        >>> _ = torch.manual_seed(0)
        >>> x, y = torch.randn(20, 5), torch.randn(20, 3)
        >>> round(linear_cka(x, x), 4)
        1.0
        >>> rotation, _ = torch.linalg.qr(torch.randn(5, 5))
        >>> round(linear_cka(x, 3 * x @ rotation), 4)  # invariant to rotation and scale
        1.0
        >>> 0 <= linear_cka(x, y) <= 1
        True
        >>> round(linear_cka(x, y), 6) == round(linear_cka(y, x), 6)  # symmetric
        True
        >>> linear_cka(x, torch.ones(20, 2))  # a constant side: undefined
        nan
    """
    xm, ym = _matrix(x, "x"), _matrix(y, "y")
    _check_pair(xm, ym)
    xc, yc = _centre(xm), _centre(ym.to(xm.device))
    num = (yc.T @ xc).square().sum()
    den = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    return _ratio(num, den)


def centre_gram(k: Tensor) -> Tensor:
    """H K H for H = I - 11^T / n, by subtracting row, column and grand means (O(n^2)).

    Example:
        >>> import torch
        >>> from transferscope.measures.cka import centre_gram
        >>> centre_gram(torch.tensor([[2.0, 1.0], [1.0, 3.0]]))
        tensor([[ 0.7500, -0.7500],
                [-0.7500,  0.7500]])
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(6, 3, dtype=torch.float64)
        >>> k, h = x @ x.T, torch.eye(6, dtype=torch.float64) - 1 / 6
        >>> torch.allclose(centre_gram(k), h @ k @ h)
        True
    """
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


def linear_cka_gram(x: Tensor, y: Tensor) -> float:
    """Linear CKA of ``x`` (n, p) and ``y`` (n, q) through n x n Gram matrices (reference form).

    K = X X^T and L = Y Y^T are centred (H K H), HSIC(K, L) = <HKH, HLH>_F / (n - 1)^2, and
    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) (the (n - 1)^2 factors cancel). Mathematically
    equal to :func:`linear_cka`; costs O(n^2 (p + q)) time and O(n^2) memory. float64.

    Example:
        >>> import math
        >>> import torch
        >>> from transferscope.measures.cka import linear_cka, linear_cka_gram
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(6, 500)  # few examples of many features: where this form is cheaper
        >>> round(linear_cka_gram(x, x), 4)
        1.0
        >>> y = torch.randn(6, 300)
        >>> math.isclose(linear_cka_gram(x, y), linear_cka(x, y), rel_tol=1e-9)
        True
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

    Example:
        >>> import torch
        >>> from transferscope.measures.cka import hsic_unbiased
        >>> _ = torch.manual_seed(0)
        >>> x, y = torch.randn(16, 3), torch.randn(16, 2)
        >>> k, l = x @ x.T, y @ y.T
        >>> hsic_unbiased(k, l).dtype
        torch.float64
        >>> torch.allclose(hsic_unbiased(k, l), hsic_unbiased(l, k))  # symmetric
        True
        >>> # the diagonals do not enter it, nor does a constant added to every entry
        >>> torch.allclose(hsic_unbiased(k + torch.eye(16), l), hsic_unbiased(k, l))
        True
        >>> torch.allclose(hsic_unbiased(k + 5.0, l), hsic_unbiased(k, l))
        True
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

    Example:
        >>> import math
        >>> import torch
        >>> from transferscope.measures.cka import CKAAccumulator, linear_cka
        >>> _ = torch.manual_seed(0)
        >>> x, y = torch.randn(12, 4), torch.randn(12, 3)
        >>> acc = CKAAccumulator()
        >>> for start in range(0, 12, 4):
        ...     acc.update(x[start : start + 4], y[start : start + 4])
        >>> acc.n, acc.mode  # 12 rows still take less memory than the running sums
        (12, 'rows')
        >>> math.isclose(acc.compute(), linear_cka(x, y), rel_tol=1e-9)  # exact, streamed
        True
        >>> sums = CKAAccumulator(strategy="sums")
        >>> sums.update(x, y)
        >>> sums.mode, math.isclose(sums.compute(), acc.compute(), rel_tol=1e-9)
        ('sums', True)
        >>> minibatch = CKAAccumulator(unbiased_minibatch=True)
        >>> for start in range(0, 12, 4):
        ...     minibatch.update(x[start : start + 4], x[start : start + 4])
        >>> round(minibatch.compute(), 4)  # a layer against itself
        1.0
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
            z: dict[str, Any] = {"dtype": torch.float64, "device": x64.device}
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


def multiply_adds(p: int, q: int, n: int, minibatch: bool = False, batch: int = 256) -> float:
    """Float64 multiply-adds of the CKA of ``n`` examples with ``p`` and ``q`` features, by the
    route :class:`CKAAccumulator` takes for them: what a time estimate counts.

    Exact ('auto' strategy): rows while they are smaller than the sums, then running sums
    (n (p² + q² + pq)); rows that stay rows end as feature products (the same count) when the
    examples outnumber the features, else as two centred n x n Gram matrices (n² (p + q)).
    Minibatch: one b x b Gram per side and batch of ``batch`` examples (n b (p + q)).

    Example:
        >>> from transferscope.measures.cka import multiply_adds
        >>> multiply_adds(2, 2, 100)  # narrow features: running sums, n (p² + q² + pq)
        1200.0
        >>> multiply_adds(1000, 1000, 10)  # wide features, few examples: n² (p + q)
        200000.0
        >>> multiply_adds(2, 2, 100, minibatch=True, batch=10)  # n b (p + q)
        4000.0
    """
    products = float(n) * (p * p + q * q + p * q)
    if minibatch:
        return float(n) * min(batch, n) * (p + q)
    rows, sums = 4 * n * (p + q), 8 * (p * p + q * q + p * q + p + q)
    if rows > sums or n * (p + q) >= p * p + q * q + p * q:
        return products
    return float(n) * n * (p + q)


def exact_state_bytes(p: int, q: int, n: int | None) -> int:
    """Bytes the exact accumulator needs at most: the smaller of the rows of n examples (float32)
    and the float64 sums (p x p, q x q, p x q); the sums alone when n is unknown.

    Example:
        >>> from transferscope.measures.cka import exact_state_bytes
        >>> exact_state_bytes(2, 3, None)  # 8 bytes x (4 + 9 + 6 + 2 + 3)
        192
        >>> exact_state_bytes(2, 3, 5)  # 5 rows of 2 + 3 float32 features are smaller
        100
    """
    sums = 8 * (p * p + q * q + p * q + p + q)
    return sums if n is None else min(sums, 4 * n * (p + q))


__all__ = [
    "DEFAULT_MAX_BYTES",
    "CKAAccumulator",
    "Strategy",
    "centre_gram",
    "exact_state_bytes",
    "hsic_unbiased",
    "linear_cka",
    "linear_cka_gram",
    "multiply_adds",
]
