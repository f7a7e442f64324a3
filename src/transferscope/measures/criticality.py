"""Module criticality (Chatterji et al.) and its search over (α, σ) (Neyshabur et al. 2020, §3.4).

For a module i with initial value θ_i^0 (P-T: P's weights; RI-T: the random init) and final value
θ_i^F, let θ_i^α = (1 − α) θ_i^0 + α θ_i^F with every other module at its final value. Then

    μ_i(ε) = min over feasible (α, σ) of  α² ‖θ_i^F − θ_i^0‖²_F / σ²

where (α, σ) is feasible when E_{u ~ N(0, σ² I)} L_S(θ_i^α + u, θ_{-i}^F) ≤ ε, the expectation
being the mean over ``noise_samples`` draws of u (on module i's parameters only) and L_S the mean
training loss on a fixed subset of at most ``max_examples`` training examples. ε is an absolute
``epsilon``, or ``L_S(θ^F) + margin``, or ``tolerance × L_S(θ^F)`` (in that order of precedence).
The network criticality is the sum over modules.

α runs over ``linspace(0, 1, num_alphas)`` and σ over ``num_sigmas`` geometrically spaced values
from ``min_sigma`` (default ``max_sigma``/10⁴: vanishing noise) to ``max_sigma``. The grid must
reach vanishing noise: at α = 1 and σ → 0 the constraint holds whenever the final model meets ε,
so μ_i is then finite (at most ‖θ_i^F − θ_i^0‖² / min_sigma²). A module for which no grid point
is feasible has μ_i > ‖θ_i^F − θ_i^0‖² / min_sigma² (the largest value the grid can show): it is
reported as that lower bound, never as 0, and the network criticality is then a lower bound too.
At α = 0 the module is rewound to θ_i^0 and μ = 0 whenever that is feasible for some σ.

Models with BatchNorm running statistics get them recomputed on the training subset at each α
(with module i at θ_i^α, before noise), as the interpolation does at each λ (Neyshabur et al. 2020, §3.3):
interpolated statistics describe no model.

Search (``search``):

- ``"pruned"`` (the default): exact, assuming nothing. The cells are tried in ascending order of
  α² ‖θ_i^F − θ_i^0‖² / σ², and the first feasible one gives μ_i: every cell below μ must be
  shown infeasible, and no other is evaluated, the fewest evaluations an exact search can make.
- ``"bisection"``: for a fixed α, μ falls as σ grows, so only the largest feasible σ matters.
  Assuming feasibility is monotone in σ for the fixed noise draws (feasible at σ, then at every
  smaller σ of the grid), it is found by bisection, over the σ that could still beat the best μ
  found so far: α = 0 at the smallest σ first, then α from 1 down (α = 1 gives a bound early,
  which narrows every later α to the few σ near the boundary). Nothing forces that
  monotonicity: a noise draw can lower the loss, so a row may be infeasible at one σ and
  feasible at a larger one, and bisection then misses that cell. Its μ is then larger than the
  grid's (never smaller: every μ it reports is a cell it found feasible). It happens in practice
  at α = 0: a rewound module that misses ε without noise can meet it with one draw (2 of the 60
  modules of the mini preset's study, μ 0 on the grid, 15 and 35 by bisection). Bisection needs
  far fewer evaluations when μ is large (6.7x fewer forward passes than the grid where the exact
  search needs 3.2x, ``bench/criticality.py``), about as many when μ is 0 or small.
- ``"grid"``: every (α, σ) with every noise sample, the exhaustive reference.

The noise draws are fixed per (module, sample) (common random numbers, reused at every α and σ),
so the searches and the exhaustive grid decide every (α, σ) identically. An evaluation stops as
soon as the running sum of per-sample losses exceeds ``noise_samples × ε``: losses are
non-negative, so the mean can only end above ε (an exact shortcut, not a heuristic).

The states with one module moved and their evaluation on fixed batches are
:mod:`transferscope.measures.module_probe`. The rewind test (:func:`rewind_modules`) and the
criticality heat maps (:func:`criticality_heatmap`) are :mod:`transferscope.measures.rewind`;
both are re-exported here, with :class:`ProbeInputs` (the network and data they take).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from transferscope.data.base import Task
from transferscope.errors import TransferscopeError
from transferscope.measures.batchnorm import bn_buffers, recalibrated_statistics
from transferscope.measures.module_probe import (
    PerturbedModule,
    ProbeInputs,
    alpha_grid,
    default_modules,
)
from transferscope.measures.rewind import criticality_heatmap, rewind_modules
from transferscope.training.loaders import BatchTransform

Search = Literal["bisection", "pruned", "grid"]


@dataclass
class CriticalityResult:
    """μ_i(ε) per module and the network criticality (Neyshabur et al. 2020, §3.4).

    Attributes:
        modules: module paths, input to output.
        mu: μ_i, or None when no (α, σ) on the grid is feasible (see ``mu_bound``).
        mu_bound: for each infeasible module, the lower bound ‖θ_i^F − θ_i^0‖² / min σ²: its μ
            exceeds every value the grid can show.
        distance: ‖θ_i^F − θ_i^0‖_F over the module's parameters.
        argmin: the (α, σ) attaining μ_i, or None.
        network_criticality: the sum of μ_i when every module is finite, else None.
        network_criticality_bound: a lower bound on the sum when some module is infeasible (the
            finite μ plus the bounds of the others), else None.
        infeasible: modules with μ_i None.
        final_loss: L_S(θ^F), mean training loss on the subset (nats); epsilon: the threshold.
        final_meets_epsilon: whether L_S(θ^F) ≤ ε (if not, no module can be feasible).
        alphas, sigmas: the grids searched. forward_passes: model forwards (batches) spent.
        examples: size of the training subset. recalibrated: BatchNorm statistics recomputed
            at each α.
    """

    modules: list[str]
    mu: dict[str, float | None]
    distance: dict[str, float]
    argmin: dict[str, tuple[float, float] | None]
    network_criticality: float | None
    infeasible: list[str]
    final_loss: float
    epsilon: float
    alphas: list[float]
    sigmas: list[float]
    forward_passes: int
    examples: int
    search: str = "pruned"
    mu_bound: dict[str, float] = field(default_factory=dict)
    network_criticality_bound: float | None = None
    final_meets_epsilon: bool = True
    recalibrated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "modules": self.modules,
            "mu": self.mu,
            "mu_bound": self.mu_bound,
            "network_criticality": self.network_criticality,
            "network_criticality_bound": self.network_criticality_bound,
            "infeasible_modules": self.infeasible,
            "distance": self.distance,
            "argmin": {m: list(v) if v else None for m, v in self.argmin.items()},
            "final_loss": self.final_loss,
            "epsilon": self.epsilon,
            "final_meets_epsilon": self.final_meets_epsilon,
            "alphas": self.alphas,
            "sigmas": self.sigmas,
            "sigma_grid": "geometric",
            "forward_passes": self.forward_passes,
            "examples": self.examples,
            "search": self.search,
            "recalibrated_batchnorm": self.recalibrated,
        }


VANISHING = 1e-4  # default min_sigma as a fraction of max_sigma


def sigma_grid(
    num_sigmas: int, max_sigma: float = 1.0, min_sigma: float | None = None
) -> list[float]:
    """``num_sigmas`` geometrically spaced noise levels from ``min_sigma`` to ``max_sigma``.

    ``min_sigma`` defaults to ``max_sigma`` × 10⁻⁴, small enough that θ^F plus that noise has
    the final loss to many digits, so α = 1 at the smallest σ is feasible whenever the final model
    meets ε. One level (``num_sigmas`` = 1) is ``max_sigma`` alone.

    Example:
        >>> from transferscope.measures.criticality import sigma_grid
        >>> [round(s, 6) for s in sigma_grid(3)]  # from max_sigma / 10⁴ to max_sigma
        [0.0001, 0.01, 1.0]
        >>> sigma_grid(2, max_sigma=1.0, min_sigma=0.5), sigma_grid(1, max_sigma=0.3)
        ([0.5, 1.0], [0.3])
    """
    if num_sigmas < 1 or max_sigma <= 0:
        raise TransferscopeError(
            f"a σ grid needs num_sigmas >= 1 and max_sigma > 0, got {num_sigmas}, {max_sigma}"
        )
    low = max_sigma * VANISHING if min_sigma is None else float(min_sigma)
    if not 0 < low <= max_sigma:
        raise TransferscopeError(
            f"min_sigma must be in (0, max_sigma = {max_sigma:g}], got {low:g}"
        )
    if num_sigmas == 1:
        return [float(max_sigma)]
    grid = torch.logspace(
        math.log10(low), math.log10(max_sigma), num_sigmas, dtype=torch.float64
    ).tolist()
    grid[0], grid[-1] = low, float(max_sigma)  # exact ends, free of log/exp rounding
    return [float(x) for x in grid]


def module_criticality(
    model: nn.Module,
    init_state: Mapping[str, Tensor],
    final_state: Mapping[str, Tensor],
    data: Dataset,
    modules: Sequence[str] | None = None,
    *,
    task: Task = "multiclass",
    num_alphas: int = 11,
    num_sigmas: int = 11,
    noise_samples: int = 5,
    tolerance: float = 1.01,
    epsilon: float | None = None,
    margin: float | None = None,
    max_sigma: float = 1.0,
    min_sigma: float | None = None,
    seed: int = 0,
    max_examples: int | None = 1000,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    transform: BatchTransform | None = None,
    search: Search = "pruned",
    recalibrate_batchnorm: bool | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> CriticalityResult:
    """μ_i(ε) of each module and the network criticality (Neyshabur et al. 2020, §3.4; see the module docstring).

    Args:
        model: the architecture (its own weights are not used or changed).
        init_state, final_state: θ^0 and θ^F, state dicts of ``model``.
        data: TRAINING data; a fixed random subset of ``max_examples`` is loaded once.
        modules: module paths (default: stem, residual blocks, head, as in
            :func:`default_modules`).
        task: 'multiclass' or 'multilabel' (decides the loss).
        num_alphas, num_sigmas: grid sizes; noise_samples: draws of u per (α, σ).
        tolerance: ε = tolerance × L_S(θ^F), unless ``epsilon`` (absolute, nats) or ``margin``
            (ε = L_S(θ^F) + margin, nats) is given.
        max_sigma, min_sigma: the largest and smallest σ (absolute standard deviation per
            weight); the grid is geometric between them (see :func:`sigma_grid`).
        seed: of the noise draws and of the subset.
        search: 'pruned' (exact: cells in ascending order of their μ value until the first
            feasible one), 'bisection' (the largest feasible σ per α, assuming feasibility
            monotone in σ: the grid's μ when it is, else larger) or 'grid' (every (α, σ) with
            every sample: the exhaustive reference). See the module docstring.
        recalibrate_batchnorm: recompute BatchNorm running statistics at each α on the training
            subset; None (default) = exactly when the model has them.
        progress: called as ``progress(done, total, module)`` before each module's search
            (the search is the slow part: one call per module lets a caller show where it is).

    Returns:
        A :class:`CriticalityResult` (μ in units of squared weight distance over squared σ).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from transferscope.data.base import TensorImageDataset
        >>> from transferscope.measures.criticality import module_criticality
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(32, 1, 2, 2)
        >>> data = TensorImageDataset(x, x.flatten(1)[:, :3].argmax(dim=1))  # largest of 3 pixels
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Linear(4, 3))
        >>> final = {"1.weight": torch.eye(4), "1.bias": torch.zeros(4),
        ...          "2.weight": 20 * torch.eye(3, 4), "2.bias": torch.zeros(3)}
        >>> init = {**final, "2.weight": torch.zeros(3, 4)}  # only the head moved
        >>> grid = {"num_alphas": 3, "num_sigmas": 3, "noise_samples": 1}
        >>> result = module_criticality(model, init, final, data, ["1", "2"], **grid)
        >>> result.mu["1"], result.mu["2"] > 0  # a module that did not move is not critical
        (0.0, True)
        >>> round(result.distance["2"] ** 2, 4), round(result.epsilon / result.final_loss, 4)
        (1200.0, 1.01)
        >>> result.network_criticality == result.mu["1"] + result.mu["2"]
        True
        >>> every = module_criticality(model, init, final, data, ["1", "2"], search="grid", **grid)
        >>> every.mu == result.mu  # the pruned search is exact: the exhaustive grid's μ
        True
    """
    if search not in SEARCHES:
        raise TransferscopeError(f"search must be one of {', '.join(SEARCHES)}; got '{search}'")
    if num_alphas < 2 or num_sigmas < 1 or noise_samples < 1 or max_sigma <= 0:
        raise TransferscopeError(
            "module criticality needs num_alphas >= 2, num_sigmas >= 1, noise_samples >= 1 and "
            f"max_sigma > 0; got {num_alphas}, {num_sigmas}, {noise_samples}, {max_sigma}"
        )
    sigmas = sigma_grid(num_sigmas, max_sigma, min_sigma)
    inputs = ProbeInputs(
        model, init_state, final_state, data, modules,
        task=task, batch_size=batch_size, device=device, transform=transform,
    )  # fmt: skip
    setup = inputs.setup(max_examples, seed)
    names, params, init, final, probe = (
        setup.names, setup.params, setup.init, setup.final, setup.probe
    )  # fmt: skip
    work = probe.model
    bn_keys = bn_buffers(work)
    recal = (
        bool(bn_keys) if recalibrate_batchnorm is None else bool(recalibrate_batchnorm and bn_keys)
    )
    if recal:
        # L_S(θ^F) under the statistics every other point gets: recomputed on the same subset.
        final = {**final, **recalibrated_statistics(work, final, probe.batches, bn_keys)}
    final_loss = probe.loss_sum(final)
    if not math.isfinite(final_loss):
        raise TransferscopeError(
            f"the final weights' training loss is {final_loss}: module criticality needs a "
            "trained model with a finite loss"
        )
    if epsilon is not None:
        eps = float(epsilon)
    elif margin is not None:
        eps = final_loss + float(margin)
    else:
        eps = tolerance * final_loss
    alphas = alpha_grid(num_alphas)
    mu: dict[str, float | None] = {}
    argmin: dict[str, tuple[float, float] | None] = {}
    distance: dict[str, float] = {}
    for index, name in enumerate(names):
        if progress is not None:
            progress(index, len(names), name)
        mod = PerturbedModule(name, index, params, init, final, noise_samples, seed)
        distance[name] = mod.distance
        statistics: dict[float, dict[str, Tensor]] = {}

        def at_alpha(
            alpha: float,
            mod: PerturbedModule = mod,
            cache: dict[float, dict[str, Tensor]] = statistics,
        ) -> Mapping[str, Tensor]:
            """The final state, with BatchNorm statistics recomputed for module i at θ_i^α."""
            if not recal:
                return final
            if alpha not in cache:
                state = mod.state(final, alpha)
                cache[alpha] = recalibrated_statistics(work, state, probe.batches, bn_keys)
            return {**final, **cache[alpha]}

        def feasible(alpha: float, sigma: float, early: bool, mod: PerturbedModule = mod) -> bool:
            limit = noise_samples * eps
            total = 0.0
            base = at_alpha(alpha)
            for s in range(noise_samples):
                state = mod.state(base, alpha, sigma, s)
                if recal:
                    state.update({k: base[k] for k in bn_keys})
                total += probe.loss_sum(state, total, limit if early else math.inf)
                if early and total > limit:
                    return False
            return total <= limit

        find = SEARCHES[search]
        # The prefix is recorded at θ^F (BatchNorm statistics recomputed when ``recal``): the
        # modules before module i see the same input and weights at every α, so their
        # recomputed statistics, and outputs, are the ones recorded.
        with probe.varying(name, final):
            best = find(feasible, alphas, sigmas, mod.distance**2)
        mu[name] = None if best is None else best[0]
        argmin[name] = None if best is None else (best[1], best[2])
    infeasible = [m for m, v in mu.items() if v is None]
    # No grid point feasible: μ exceeds the largest value the grid can show (α = 1, min σ).
    bounds = {m: distance[m] ** 2 / sigmas[0] ** 2 for m in infeasible}
    finite_sum = float(sum(v for v in mu.values() if v is not None))
    return CriticalityResult(
        modules=names,
        mu=mu,
        distance=distance,
        argmin=argmin,
        network_criticality=None if infeasible else finite_sum,
        infeasible=infeasible,
        final_loss=final_loss,
        epsilon=eps,
        alphas=alphas,
        sigmas=sigmas,
        forward_passes=probe.forwards,
        examples=probe.n,
        search=search,
        mu_bound=bounds,
        network_criticality_bound=finite_sum + sum(bounds.values()) if infeasible else None,
        final_meets_epsilon=final_loss <= eps,
        recalibrated=recal,
    )


Best = tuple[float, float, float] | None  # (μ, α, σ)


def _exhaustive(feasible: Any, alphas: list[float], sigmas: list[float], d2: float) -> Best:
    """Every (α, σ), every noise sample in full: the reference the pruned search must equal."""
    best: Best = None
    for alpha in alphas:
        for sigma in sigmas:
            if feasible(alpha, sigma, early=False):
                value = alpha**2 * d2 / sigma**2
                if best is None or value < best[0]:
                    best = (value, alpha, sigma)
    return best


def _pruned(feasible: Any, alphas: list[float], sigmas: list[float], d2: float) -> Best:
    """The grid's μ, trying cells in ascending order of α² d² / σ²: the first feasible one is μ.

    Every cell whose value is below μ must be tried (any of them could be feasible), and no other
    is: the fewest evaluations any exact search can make. Nothing is assumed about how
    feasibility varies with α or σ (a noise draw can lower the loss), so the result is exactly
    the exhaustive grid's. The cells below μ are mostly small α with large σ, whose evaluation
    the early stop ends after the first batch; ties (α = 0: μ = 0 at every σ) go smallest σ
    first, the likeliest to be feasible.
    """
    cells = sorted(
        ((alpha**2 * d2 / sigma**2, sigma, alpha) for alpha in alphas for sigma in sigmas),
        key=lambda c: (c[0], c[1]),
    )
    for value, sigma, alpha in cells:
        if feasible(alpha, sigma, early=True):
            return (value, alpha, sigma)
    return None


def _bisection(feasible: Any, alphas: list[float], sigmas: list[float], d2: float) -> Best:
    """The largest feasible σ per α by bisection, over the σ that could beat the best μ so far.

    Assumes feasibility is monotone in σ at each α (see the module docstring): a σ found
    infeasible rules out every larger σ of that α, unseen. α = 0 first: μ is 0 at any feasible σ
    there, so the smallest σ decides, and a module that can be rewound costs one cell. Then α
    from 1 down: α near 1 is the likeliest to be feasible, and its μ leaves each smaller α only the
    σ above α/α' times the boundary found, usually one or two cells.
    """
    if d2 == 0:  # the module did not move: every α is θ^F, μ is 0 wherever it is feasible
        return (0.0, alphas[-1], sigmas[0]) if feasible(alphas[-1], sigmas[0], early=True) else None
    best: Best = None
    for alpha in [a for a in alphas if a == 0] + sorted((a for a in alphas if a), reverse=True):
        if alpha == 0:
            if feasible(alpha, sigmas[0], early=True):
                return (0.0, alpha, sigmas[0])
            continue
        # α² d² / σ² < best  <=>  σ > α d / √best: the σ that cannot improve are not tried.
        candidates = [
            j for j, s in enumerate(sigmas) if best is None or alpha**2 * d2 / s**2 < best[0]
        ]
        if not candidates:
            continue
        lo, hi = candidates[0], candidates[-1]
        if not feasible(alpha, sigmas[lo], early=True):
            continue  # monotone: every larger σ of this α is infeasible too
        while lo < hi:  # sigmas[lo] feasible; the largest feasible index is in [lo, hi]
            mid = (lo + hi + 1) // 2
            if feasible(alpha, sigmas[mid], early=True):
                lo = mid
            else:
                hi = mid - 1
        value = alpha**2 * d2 / sigmas[lo] ** 2
        if best is None or value < best[0]:
            best = (value, alpha, sigmas[lo])
    return best


def search_evaluations(search: str, num_alphas: int, num_sigmas: int, noise_samples: int) -> float:
    """Noise-sample evaluations one module's search typically makes (for time estimates; the
    count depends on where μ lies): the grid makes every one; the pruned search about the α = 0
    row (every cell below μ, and each row's cells are cheap only when a sample alone exceeds the
    limit); bisection about one α = 0 cell, a bisection at α = 1 and one or two cells per
    other α. On the mini preset's study: pruned 23, bisection 19 per module, against 26 and 19
    here.

    Example:
        >>> from transferscope.measures.criticality import search_evaluations
        >>> [search_evaluations(s, 11, 11, 5) for s in ("grid", "pruned", "bisection")]
        [605.0, 55.0, 47.5]
    """
    if search == "grid":
        return float(num_alphas * num_sigmas * noise_samples)
    if search == "bisection":
        cells = 1 + math.ceil(math.log2(num_sigmas)) + (num_alphas - 2) / 2
        return cells * noise_samples
    return float(num_sigmas * noise_samples)


SEARCHES: dict[str, Callable[[Any, list[float], list[float], float], Best]] = {
    "pruned": _pruned,
    "bisection": _bisection,
    "grid": _exhaustive,
}


__all__ = [
    "SEARCHES",
    "CriticalityResult",
    "ProbeInputs",
    "alpha_grid",
    "criticality_heatmap",
    "default_modules",
    "module_criticality",
    "rewind_modules",
    "search_evaluations",
    "sigma_grid",
]
