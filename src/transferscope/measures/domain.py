"""How far a target domain is from the source, seen through P's penultimate features.

Neyshabur et al. (2020, §3.1) find that the benefit of pre-training, and the part of it that
block shuffling removes (feature reuse), is smaller on a target further from the source
(quickdraw against real). These functions put a number on "further": a distance between the
distributions of P's penultimate-layer features (the input of its classifier head) on source and
target images.

- :func:`frechet_distance`: the Fréchet distance of two Gaussians fitted to the features, as in
  FID (Heusel et al. 2017): ‖μ_s − μ_t‖² + tr(Σ_s + Σ_t − 2 (Σ_s^½ Σ_t Σ_s^½)^½).
- :func:`mmd_rbf`: the unbiased squared maximum mean discrepancy with a Gaussian (RBF) kernel
  (Gretton et al. 2012, eq. 3), bandwidth by the median heuristic.

Both are invariant to translations and orthogonal rotations of the feature space, and both
depend on the number of examples (a finite sample of one distribution is at a positive Fréchet
distance from another sample of it), so distances are compared at equal sample sizes.

The cross term tr((Σ_s^½ Σ_t Σ_s^½)^½) is the sum of the square roots of the eigenvalues of
Σ_s Σ_t. ``scipy.linalg.sqrtm(Σ_s Σ_t)`` (pytorch-fid's way) works on a product that is not
symmetric; when a covariance is rank-deficient (fewer examples than features, or dead ReLU units,
common at a penultimate layer) it warns that the matrix is singular and returns complex values
(imaginary parts up to 1e-4 on 48 examples of 64 features), which FID code then discards or
patches with an ε·I offset. Here it is computed from factors Σ = FᵀF (F: the centred examples
over √(n−1), or their QR factor R when there are more examples than features; from moments alone,
diag(√w) Vᵀ of the eigen-decomposition): the eigenvalues of Σ_s Σ_t are the squared singular
values of F_s F_tᵀ, so the cross term is the nuclear norm ‖F_s F_tᵀ‖_*, a form symmetric in the
two distributions. It is real and exact for rank-deficient covariances, and no square root of a
round-off-sized eigenvalue enters it (√ε of such an eigenvalue, 1e-8 relative, would be the error of
an eigenvalue-based square root of a singular product): from samples the distance is accurate to
a small multiple of float64 rounding times the size of its terms. The two distributions are taken
in a canonical order (by their means' and factors' bytes), so swapping the arguments runs the same
floating-point operations and gives the same bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from transferscope.errors import TransferscopeError
from transferscope.models.layout import layout
from transferscope.training.loaders import iterate


@torch.no_grad()
def penultimate_features(
    model: nn.Module,
    data: Any,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> np.ndarray:
    """The input of ``model``'s classifier head for every example of ``data``.

    Args:
        model: a network whose head :func:`transferscope.models.layout.layout` finds (for
            ResNets ``fc``, fed the globally pooled last stage).
        data: a dataset of (image, target) pairs, images as the model takes them.

    Returns:
        (n, d) float64 array, row i the features of example i (eval mode, no gradients).

    Example:
        >>> import torch
        >>> from transferscope.data.base import TensorImageDataset
        >>> from transferscope.measures.domain import penultimate_features
        >>> from transferscope.models.fixup import fixup_small
        >>> _ = torch.manual_seed(0)
        >>> model = fixup_small(num_outputs=3, in_channels=1, widths=(4, 8))
        >>> data = TensorImageDataset(torch.randn(5, 1, 8, 8), torch.zeros(5, dtype=torch.long))
        >>> features = penultimate_features(model, data, batch_size=2)
        >>> features.shape, features.dtype  # the 8 pooled channels that feed ``fc``
        ((5, 8), dtype('float64'))
    """
    head = dict(model.named_modules())[layout(model).head]
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        captured.append(inputs[0].detach().reshape(inputs[0].shape[0], -1).double().cpu())

    was_training = model.training
    model.eval().to(device)
    handle = head.register_forward_pre_hook(hook)
    try:
        for x, _ in iterate(data, batch_size, device=device):
            model(x)
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        raise TransferscopeError("no examples to compute features of (the data set is empty)")
    return torch.cat(captured).numpy()


def _matrix(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise TransferscopeError(f"{name} must be (examples, features), got shape {arr.shape}")
    if len(arr) < 2:
        raise TransferscopeError(f"{name} needs at least 2 examples, got {len(arr)}")
    return arr


def _cov_factor(cov: np.ndarray) -> np.ndarray:
    """F (d, d) with FᵀF = ``cov`` for a positive semi-definite (d, d) matrix: diag(√w) Vᵀ from
    its eigen-decomposition, round-off negative eigenvalues taken as 0."""
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    return np.sqrt(np.clip(w, 0.0, None))[:, None] * v.T


def _sample_factor(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (d,), F (min(n, d), d)) with FᵀF the unbiased covariance of the rows of ``x``."""
    mean = x.mean(axis=0)
    centred = x - mean
    if len(x) > x.shape[1]:
        # R of centred = QR: RᵀR = centredᵀcentred, and R is (d, d) instead of (n, d).
        centred = np.linalg.qr(centred, mode="r")
    return mean, centred / np.sqrt(len(x) - 1)


def _first(mu_a: np.ndarray, f_a: np.ndarray, mu_b: np.ndarray, f_b: np.ndarray) -> bool:
    """Whether distribution a comes first in the canonical order (shape, then the bytes of the
    mean, then those of the factor): a total order, so (a, b) and (b, a) are computed alike."""
    if f_a.shape != f_b.shape:
        return f_a.shape < f_b.shape
    key_a, key_b = mu_a.tobytes(), mu_b.tobytes()
    if key_a != key_b:
        return key_a < key_b
    return f_a.tobytes() <= f_b.tobytes()


def _frechet(
    mu_a: np.ndarray,
    f_a: np.ndarray,
    trace_a: float,
    mu_b: np.ndarray,
    f_b: np.ndarray,
    trace_b: float,
) -> float:
    """‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2‖F_a F_bᵀ‖_* for Σ = FᵀF (module docstring)."""
    if not _first(mu_a, f_a, mu_b, f_b):
        mu_a, f_a, trace_a, mu_b, f_b, trace_b = mu_b, f_b, trace_b, mu_a, f_a, trace_a
    cross = float(np.linalg.svd(f_a @ f_b.T, compute_uv=False).sum())
    diff = mu_a - mu_b
    value = float(diff @ diff) + (trace_a + trace_b) - 2.0 * cross
    return max(value, 0.0)  # a distance: round-off must not make it negative


def frechet_from_moments(
    mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """Fréchet (2-Wasserstein squared) distance of N(mu_a, cov_a) and N(mu_b, cov_b).

    ``‖μ_a − μ_b‖² + tr(Σ_a) + tr(Σ_b) − 2 tr((Σ_a^½ Σ_b Σ_a^½)^½)``: means (d,), covariances
    (d, d), positive semi-definite (rank-deficient allowed). Units: squared feature units.
    Symmetric in a and b to the last bit. From moments, a covariance's factor is its square
    root, whose round-off-sized eigenvalues become √ε-sized (1e-8 relative) entries: prefer
    :func:`frechet_distance` on the features when they are at hand.

    Example:
        >>> import numpy as np
        >>> from transferscope.measures.domain import frechet_from_moments
        >>> zero, one, eye = np.zeros(2), np.ones(2), np.eye(2)
        >>> frechet_from_moments(zero, eye, zero, eye)  # a distribution against itself
        0.0
        >>> round(frechet_from_moments(zero, eye, one, eye), 6)  # means apart: ‖μ_a − μ_b‖²
        2.0
        >>> round(frechet_from_moments(zero, eye, zero, 4 * eye), 6)  # tr(I + 4I − 2·2I)
        2.0
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != mu_a.shape * 2:
        raise TransferscopeError(
            f"moments of different shapes: means {mu_a.shape} and {mu_b.shape}, covariances "
            f"{cov_a.shape} and {cov_b.shape}"
        )
    return _frechet(
        mu_a,
        _cov_factor(cov_a),
        float(np.trace(cov_a)),
        mu_b,
        _cov_factor(cov_b),
        float(np.trace(cov_b)),
    )


def frechet_distance(x: Any, y: Any) -> float:
    """Fréchet distance between Gaussians fitted to features ``x`` (n, d) and ``y`` (m, d)
    (sample means, unbiased covariances), as FID does with Inception features. Symmetric in x
    and y to the last bit; accurate to a small multiple of float64 rounding times the size of
    its terms (module docstring), singular covariances included.

    Example:
        >>> import numpy as np
        >>> from transferscope.measures.domain import frechet_distance
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.standard_normal((20, 3)), rng.standard_normal((30, 3))
        >>> frechet_distance(x, x)
        0.0
        >>> frechet_distance(x, y) == frechet_distance(y, x)  # symmetric to the last bit
        True
        >>> round(frechet_distance(x, x + 1.0), 6)  # shifted by 1 in each of 3 features
        3.0
    """
    x, y = _matrix(x, "x"), _matrix(y, "y")
    if x.shape[1] != y.shape[1]:
        raise TransferscopeError(f"x has {x.shape[1]} features and y {y.shape[1]}")
    (mu_x, f_x), (mu_y, f_y) = _sample_factor(x), _sample_factor(y)
    return _frechet(mu_x, f_x, float((f_x * f_x).sum()), mu_y, f_y, float((f_y * f_y).sum()))


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.clip(d, 0.0, None)


def median_bandwidth(x: Any) -> float:
    """The median heuristic: the median Euclidean distance between distinct rows of ``x``.

    Example:
        >>> from transferscope.measures.domain import median_bandwidth
        >>> median_bandwidth([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # distances 3, 4 and 5
        4.0
    """
    x = _matrix(x, "x")
    d = np.sqrt(_squared_distances(x, x)[np.triu_indices(len(x), k=1)])
    med = float(np.median(d))
    if not med > 0:
        raise TransferscopeError("every example has the same features: no kernel bandwidth")
    return med


def mmd_rbf(x: Any, y: Any, bandwidth: float | None = None) -> tuple[float, float]:
    """Unbiased squared MMD of ``x`` (n, d) and ``y`` (m, d) with k(a, b) = exp(−‖a−b‖²/(2σ²)).

    σ = ``bandwidth``, or by default the median distance between distinct rows of x and y pooled.
    Returns (MMD², σ). The estimate is unbiased, so two samples of one distribution give values
    around 0, slightly negative about half the time (Gretton et al. 2012, eq. 3).

    Example:
        >>> import numpy as np
        >>> from transferscope.measures.domain import mmd_rbf
        >>> here, far = [[0.0], [0.0]], [[10.0], [10.0]]
        >>> mmd_rbf(here, here, bandwidth=1.0)  # (MMD², σ): one point mass against itself
        (0.0, 1.0)
        >>> mmd_rbf(here, far, bandwidth=1.0)  # far apart: k(x, y) ≈ 0, MMD² → 1 + 1
        (2.0, 1.0)
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.standard_normal((20, 3)), rng.standard_normal((30, 3))
        >>> mmd, sigma = mmd_rbf(x, y)  # two samples of N(0, I): around 0
        >>> abs(mmd) < 0.05, abs(mmd_rbf(y, x)[0] - mmd) < 1e-12  # and symmetric
        (True, True)
    """
    x, y = _matrix(x, "x"), _matrix(y, "y")
    if x.shape[1] != y.shape[1]:
        raise TransferscopeError(f"x has {x.shape[1]} features and y {y.shape[1]}")
    sigma = median_bandwidth(np.concatenate([x, y])) if bandwidth is None else float(bandwidth)
    if not sigma > 0:
        raise TransferscopeError(f"the kernel bandwidth must be positive, got {sigma}")
    gamma = 1.0 / (2.0 * sigma * sigma)
    n, m = len(x), len(y)
    kxx = np.exp(-gamma * _squared_distances(x, x))
    kyy = np.exp(-gamma * _squared_distances(y, y))
    kxy = np.exp(-gamma * _squared_distances(x, y))
    within_x = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * kxy.mean()), sigma


__all__ = [
    "frechet_distance",
    "frechet_from_moments",
    "median_bandwidth",
    "mmd_rbf",
    "penultimate_features",
]
