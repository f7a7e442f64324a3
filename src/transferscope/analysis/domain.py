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

The matrix square root: ``scipy.linalg.sqrtm(Σ_s Σ_t)`` (pytorch-fid's way) works on a product
that is not symmetric; when a covariance is rank-deficient (fewer examples than features, or
dead ReLU units, common at a penultimate layer) it warns that the matrix is singular and returns
complex values (imaginary parts up to 1e-4 on 48 examples of 64 features), which FID code then
discards or patches with an ε·I offset. Here the trace of the square root is computed from the
symmetric positive semi-definite form Σ_s^½ Σ_t Σ_s^½ by eigen-decompositions
(``numpy.linalg.eigh``), with round-off negative eigenvalues clipped to 0: real, exact for
rank-deficient covariances, and equal to sqrtm's trace where sqrtm is well defined.
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
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """The input of ``model``'s classifier head for every example of ``data``.

    Args:
        model: a network whose head :func:`transferscope.models.layout.layout` finds (for
            ResNets ``fc``, fed the globally pooled last stage).
        data: a dataset of (image, target) pairs, images as the model takes them.

    Returns:
        (n, d) float64 array, row i the features of example i (eval mode, no gradients).
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


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix (negative round-off -> 0)."""
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_moments(
    mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """Fréchet (2-Wasserstein squared) distance of N(mu_a, cov_a) and N(mu_b, cov_b).

    ``‖μ_a − μ_b‖² + tr(Σ_a) + tr(Σ_b) − 2 tr((Σ_a^½ Σ_b Σ_a^½)^½)``: means (d,), covariances
    (d, d), positive semi-definite (rank-deficient allowed). Units: squared feature units.
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != mu_a.shape * 2:
        raise TransferscopeError(
            f"moments of different shapes: means {mu_a.shape} and {mu_b.shape}, covariances "
            f"{cov_a.shape} and {cov_b.shape}"
        )
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    cross = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)
    return max(value, 0.0)  # a distance: round-off must not make it negative


def frechet_distance(x: Any, y: Any) -> float:
    """Fréchet distance between Gaussians fitted to features ``x`` (n, d) and ``y`` (m, d)
    (sample means, unbiased covariances), as FID does with Inception features."""
    x, y = _matrix(x, "x"), _matrix(y, "y")
    if x.shape[1] != y.shape[1]:
        raise TransferscopeError(f"x has {x.shape[1]} features and y {y.shape[1]}")
    return frechet_from_moments(
        x.mean(axis=0), np.cov(x, rowvar=False), y.mean(axis=0), np.cov(y, rowvar=False)
    )


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.clip(d, 0.0, None)


def median_bandwidth(x: Any) -> float:
    """The median heuristic: the median Euclidean distance between distinct rows of ``x``."""
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
