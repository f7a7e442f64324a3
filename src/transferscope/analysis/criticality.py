"""Module criticality (Chatterji et al.), the rewind test and criticality heat maps (Neyshabur et al. 2020, §3.4).

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

Search: the (α, σ) cells are tried in ascending order of α² ‖θ_i^F − θ_i^0‖² / σ², and the first
feasible one gives μ_i: exact (nothing is assumed about how feasibility varies with σ or α) and
the fewest evaluations an exact search can make. The
noise draws are fixed per (module, sample) (common random numbers), so the search and the
exhaustive grid (``search="grid"``) decide every (α, σ) identically. An evaluation stops as soon as
the running sum of per-sample losses exceeds ``noise_samples × ε``: losses are non-negative, so the
mean can only end above ε (an exact shortcut, not a heuristic).

Also here: :func:`rewind_modules` (set one module back to θ_i^0 and evaluate) and
:func:`criticality_heatmap` (metric over an (α, σ) grid per module, with the distance
α ‖θ_i^F − θ_i^0‖), usually on a coarser grid with one noise sample to stay cheap.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import Dataset

from transferscope.analysis.interpolation import bn_buffers, recalibrated_statistics
from transferscope.analysis.replay import PrefixReplay
from transferscope.data.base import Task
from transferscope.errors import TransferscopeError
from transferscope.models.layout import layout
from transferscope.training.loaders import BatchTransform, epoch_order, forward_in_chunks, iterate
from transferscope.training.metrics import loss_fn, score

Search = Literal["pruned", "grid"]


def default_modules(model: nn.Module) -> list[str]:
    """The stem, every residual block and the head, input to output (module paths)."""
    parts = layout(model)
    return [parts.stem, *parts.blocks, parts.head]


def _within(key: str, module: str) -> bool:
    return key == module or key.startswith(module + ".")


def _check_states(
    model: nn.Module, init_state: Mapping[str, Tensor], final_state: Mapping[str, Tensor]
) -> None:
    names = dict(model.state_dict())
    for label, state in (("init_state", init_state), ("final_state", final_state)):
        bad = sorted(k for k in names if k not in state or state[k].shape != names[k].shape)
        extra = sorted(set(state) - set(names))
        if bad or extra:
            listed = ", ".join([*bad, *extra][:8])
            raise TransferscopeError(
                f"{label} does not fit the model: missing, extra or reshaped entries {listed}"
            )


def _batches(
    data: Dataset,
    max_examples: int | None,
    batch_size: int,
    device: torch.device,
    transform: BatchTransform | None,
    seed: int = 0,
) -> list[tuple[Tensor, Tensor]]:
    """A fixed random subset of ``data``, loaded once and kept on ``device`` (re-used per probe)."""
    n = len(data)  # type: ignore[arg-type]
    order = None if max_examples is None or max_examples >= n else epoch_order(n, seed, 0)
    if order is not None:
        order = order[:max_examples]
    out = list(iterate(data, batch_size, order=order, device=device, transform=transform))
    if not out:
        raise TransferscopeError("module criticality needs a non-empty data set")
    return out


class _Probe:
    """Loss or metric of the model with a given state on preloaded batches; counts forwards."""

    def __init__(self, model: nn.Module, batches: list[tuple[Tensor, Tensor]], task: Task) -> None:
        self.model = model.eval()
        self.batches = batches
        self.task = task
        self.n = sum(len(y) for _, y in batches)
        self.forwards = 0
        self._replay: PrefixReplay | None = None

    def _call(self, state: Mapping[str, Tensor], rows: Tensor) -> Tensor:
        cast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if rows.device.type == "cuda"
            else nullcontext()
        )
        with cast:
            return functional_call(self.model, state, (rows,))

    def _forward(self, state: Mapping[str, Tensor], index: int) -> Tensor:
        """The model's outputs at ``state`` on batch ``index`` (float32)."""
        self.forwards += 1
        full, replay, chunks = dict(state), self._replay, itertools.count()

        def run(rows: Tensor) -> Tensor:
            if replay is None:
                return self._call(full, rows)
            with replay.replay((index, next(chunks))):
                return self._call(full, rows)

        return forward_in_chunks(run, self.batches[index][0]).float()

    @contextlib.contextmanager
    def varying(self, module: str, reference: Mapping[str, Tensor]) -> Iterator[None]:
        """Inside, probed states differ from ``reference`` only in ``module``'s entries: the
        modules that run before it replay their outputs at ``reference`` (computed here, one
        pass over the batches) instead of computing them again (:class:`PrefixReplay`)."""
        replay, full = PrefixReplay(self.model, module), dict(reference)
        with torch.no_grad():
            for index, (x, _) in enumerate(self.batches):
                self.forwards += 1
                chunks = itertools.count()

                def record(rows: Tensor, index: int = index, chunks: Any = chunks) -> Tensor:
                    return replay.record((index, next(chunks)), lambda: self._call(full, rows))

                forward_in_chunks(record, x)
                if not replay.active:
                    break  # nothing runs before the module, or it cannot be replayed safely
        self._replay = replay if replay.active else None
        try:
            yield
        finally:
            self._replay = None

    @torch.no_grad()
    def loss_sum(self, state: Mapping[str, Tensor], offset: float = 0.0, limit: float = math.inf):
        """Mean loss over the batches; stops once ``offset`` + the running mean exceeds ``limit``.

        The running mean only grows (losses are >= 0), so a stopped evaluation is certainly above
        ``limit``; its (partial) value is returned.
        """
        total = 0.0
        for index, (_, y) in enumerate(self.batches):
            total += loss_fn(self.task, self._forward(state, index), y).item() * len(y)
            if offset + total / self.n > limit:
                break
        return total / self.n

    @torch.no_grad()
    def evaluate(self, state: Mapping[str, Tensor]) -> tuple[float, float]:
        """(loss, metric) over all batches."""
        outs = [self._forward(state, i).cpu() for i in range(len(self.batches))]
        ev = score(self.task, torch.cat(outs), torch.cat([y.cpu() for _, y in self.batches]))
        return ev.loss, ev.metric


class _Module:
    """One module's keys, its θ^0 and θ^F entries, Δ norm and fixed noise draws."""

    def __init__(
        self,
        name: str,
        index: int,
        params: set[str],
        init: Mapping[str, Tensor],
        final: Mapping[str, Tensor],
        samples: int,
        seed: int,
    ) -> None:
        self.name = name
        self.keys = [k for k in final if _within(k, name)]
        if not self.keys:
            raise TransferscopeError(f"module '{name}' has no entries in the model's state")
        self.init = {k: init[k] for k in self.keys}
        self.final = {k: final[k] for k in self.keys}
        self.params = [k for k in self.keys if k in params and final[k].is_floating_point()]
        sq = sum(float((final[k].double() - init[k].double()).pow(2).sum()) for k in self.params)
        self.distance = math.sqrt(sq)
        # Common random numbers: one standard-normal draw per (module, sample), reused for every
        # (α, σ) so that the pruned search and the exhaustive grid see the same noise.
        self.noise: list[dict[str, Tensor]] = []
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + index)
        for _ in range(samples):
            self.noise.append(
                {
                    k: torch.randn(final[k].shape, generator=g, dtype=torch.float32)
                    .to(final[k].device)
                    .to(final[k].dtype)
                    for k in self.params
                }
            )

    def state(
        self, base: Mapping[str, Tensor], alpha: float, sigma: float = 0.0, sample: int = 0
    ) -> dict[str, Tensor]:
        """The full state with this module at θ^α (+ σ × noise draw ``sample``)."""
        out = dict(base)
        for k in self.keys:
            a, f = self.init[k], self.final[k]
            out[k] = torch.lerp(a, f, alpha) if f.is_floating_point() else a
        if sigma > 0:
            for k in self.params:
                out[k] = out[k] + sigma * self.noise[sample][k]
        return out


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


def alpha_grid(num_alphas: int) -> list[float]:
    return [float(a) for a in torch.linspace(0, 1, num_alphas, dtype=torch.float64)]


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
        search: 'pruned' (cells in ascending order of their μ value until the first feasible
            one) or 'grid' (every (α, σ) with every sample: the exhaustive reference). Both give
            the same μ.
        recalibrate_batchnorm: recompute BatchNorm running statistics at each α on the training
            subset; None (default) = exactly when the model has them.
        progress: called as ``progress(done, total, module)`` before each module's search
            (the search is the slow part: one call per module lets a caller show where it is).

    Returns:
        A :class:`CriticalityResult` (μ in units of squared weight distance over squared σ).
    """
    if search not in ("pruned", "grid"):
        raise TransferscopeError(f"search must be 'pruned' or 'grid', got '{search}'")
    if num_alphas < 2 or num_sigmas < 1 or noise_samples < 1 or max_sigma <= 0:
        raise TransferscopeError(
            "module criticality needs num_alphas >= 2, num_sigmas >= 1, noise_samples >= 1 and "
            f"max_sigma > 0; got {num_alphas}, {num_sigmas}, {noise_samples}, {max_sigma}"
        )
    sigmas = sigma_grid(num_sigmas, max_sigma, min_sigma)
    _check_states(model, init_state, final_state)
    device = torch.device(device)
    names = list(modules) if modules is not None else default_modules(model)
    params = {k for k, _ in model.named_parameters()}
    init = {k: v.detach().to(device) for k, v in init_state.items()}
    final = {k: v.detach().to(device) for k, v in final_state.items()}
    work = _copy_structure(model, device)
    probe = _Probe(work, _batches(data, max_examples, batch_size, device, transform, seed), task)
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
        mod = _Module(name, index, params, init, final, noise_samples, seed)
        distance[name] = mod.distance
        statistics: dict[float, dict[str, Tensor]] = {}

        def at_alpha(
            alpha: float, mod: _Module = mod, cache: dict[float, dict[str, Tensor]] = statistics
        ) -> Mapping[str, Tensor]:
            """The final state, with BatchNorm statistics recomputed for module i at θ_i^α."""
            if not recal:
                return final
            if alpha not in cache:
                state = mod.state(final, alpha)
                cache[alpha] = recalibrated_statistics(work, state, probe.batches, bn_keys)
            return {**final, **cache[alpha]}

        def feasible(alpha: float, sigma: float, early: bool, mod: _Module = mod) -> bool:
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

        find = _pruned if search == "pruned" else _exhaustive
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


def _copy_structure(model: nn.Module, device: torch.device) -> nn.Module:
    return copy.deepcopy(model).to(device).eval()


def rewind_modules(
    model: nn.Module,
    init_state: Mapping[str, Tensor],
    final_state: Mapping[str, Tensor],
    data: Dataset,
    modules: Sequence[str] | None = None,
    *,
    task: Task = "multiclass",
    max_examples: int | None = None,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    transform: BatchTransform | None = None,
) -> dict[str, dict[str, float]]:
    """Rewind one module at a time to θ_i^0 (others final) and evaluate (Neyshabur et al. 2020, §3.4).

    Returns ``{"final": {"loss", "metric"}, module: {"loss", "metric"}, ...}`` on ``data`` (the
    test split, at most ``max_examples`` examples: a fixed random subset).
    """
    _check_states(model, init_state, final_state)
    device = torch.device(device)
    names = list(modules) if modules is not None else default_modules(model)
    init = {k: v.detach().to(device) for k, v in init_state.items()}
    final = {k: v.detach().to(device) for k, v in final_state.items()}
    probe = _Probe(
        _copy_structure(model, device),
        _batches(data, max_examples, batch_size, device, transform),
        task,
    )
    loss, metric = probe.evaluate(final)
    out = {"final": {"loss": loss, "metric": metric}}
    params = {k for k, _ in model.named_parameters()}
    for index, name in enumerate(names):
        mod = _Module(name, index, params, init, final, 0, 0)
        loss, metric = probe.evaluate(mod.state(final, 0.0))
        out[name] = {"loss": loss, "metric": metric}
    return out


def criticality_heatmap(
    model: nn.Module,
    init_state: Mapping[str, Tensor],
    final_state: Mapping[str, Tensor],
    data: Dataset,
    modules: Sequence[str] | None = None,
    *,
    task: Task = "multiclass",
    num_alphas: int = 4,
    num_sigmas: int = 4,
    noise_samples: int = 1,
    max_sigma: float = 1.0,
    seed: int = 0,
    max_examples: int | None = 500,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    transform: BatchTransform | None = None,
) -> dict[str, dict[str, Any]]:
    """Metric over an (α, σ) grid per module, as in the paper's heat maps (Neyshabur et al. 2020, §3.4).

    σ runs over ``linspace(0, max_sigma, num_sigmas)`` (σ = 0 included: no noise) and α over
    ``linspace(0, 1, num_alphas)``; each cell is the mean metric over ``noise_samples`` draws
    (one evaluation where σ = 0). Defaults are coarser than the μ search to stay cheap: the cost is
    modules × num_alphas × (1 + (num_sigmas − 1) × noise_samples) passes over ``data``.

    Returns:
        module -> {"alphas": [A], "sigmas": [S], "distance": [A] (α ‖θ_i^F − θ_i^0‖_F),
        "metric": [[S] per α] (rows α, columns σ), "loss": same shape}.
    """
    _check_states(model, init_state, final_state)
    device = torch.device(device)
    names = list(modules) if modules is not None else default_modules(model)
    init = {k: v.detach().to(device) for k, v in init_state.items()}
    final = {k: v.detach().to(device) for k, v in final_state.items()}
    probe = _Probe(
        _copy_structure(model, device),
        _batches(data, max_examples, batch_size, device, transform, seed),
        task,
    )
    params = {k for k, _ in model.named_parameters()}
    alphas = alpha_grid(num_alphas)
    sigmas = [float(s) for s in torch.linspace(0, max_sigma, num_sigmas, dtype=torch.float64)]
    out: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(names):
        mod = _Module(name, index, params, init, final, noise_samples, seed)
        metric_rows, loss_rows = [], []
        with probe.varying(name, final):
            for alpha in alphas:
                metric_row, loss_row = [], []
                for sigma in sigmas:
                    draws = [
                        probe.evaluate(mod.state(final, alpha, sigma, s))
                        for s in range(noise_samples if sigma > 0 else 1)
                    ]
                    loss_row.append(sum(d[0] for d in draws) / len(draws))
                    metric_row.append(sum(d[1] for d in draws) / len(draws))
                metric_rows.append(metric_row)
                loss_rows.append(loss_row)
        out[name] = {
            "alphas": alphas,
            "sigmas": sigmas,
            "distance": [alpha * mod.distance for alpha in alphas],
            "metric": metric_rows,
            "loss": loss_rows,
        }
    return out


__all__ = [
    "CriticalityResult",
    "alpha_grid",
    "criticality_heatmap",
    "default_modules",
    "module_criticality",
    "rewind_modules",
    "sigma_grid",
]
