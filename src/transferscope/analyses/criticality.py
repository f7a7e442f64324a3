"""Module criticality, the rewind test and heat maps (Neyshabur et al. 2020, §3.4): claim C7.

Per target, for the first seed's P-T run (θ⁰ = P with P-T's fresh head) and RI-T run (θ⁰ = the
random init): the criticality μ_i(ε) of each module (one per weight layer, or per block, then the
head) on a fixed subset of the training split, the test metric after rewinding one module to θ⁰,
and per module the test metric over a grid of (α along θ⁰ → θ^F, noise σ). The math is in
:mod:`transferscope.measures.criticality`; μ is in units of squared weight distance over squared
σ, losses in nats, metrics fractions. Its report section is drawn by
:mod:`transferscope.analyses.criticality_report`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from transferscope.errors import TransferscopeError
from transferscope.measures.criticality import (
    ProbeInputs,
    criticality_heatmap,
    module_criticality,
    rewind_modules,
    search_evaluations,
)
from transferscope.models.layout import depth_units
from transferscope.models.layout import layout as model_layout
from transferscope.options import GRANULARITY_HELP, AnalysisOptions, Granularity
from transferscope.registry import register
from transferscope.training import checkpoints as ckpt
from transferscope.unitkit import sections
from transferscope.unitkit.context import StudyContext, skipped
from transferscope.unitkit.cost import facts
from transferscope.unitkit.results import AnalysisResult, Model, Skipped, TargetEntry
from transferscope.unitkit.rules import (
    INCONCLUSIVE,
    UNMEASURED,
    TargetResult,
    at_chance,
    combine,
    decide_text,
    finite,
    fmt,
    p_guard,
    voided,
)
from transferscope.unitkit.tables import Table, measured
from transferscope.unitkit.unit import Analysis, TargetSize, Work, claim

if TYPE_CHECKING:  # pragma: no cover
    from transferscope.studydir.plan import PlannedRun
    from transferscope.unitkit.page import Page
    from transferscope.unitkit.study_data import StudyData


class CriticalityOptions(AnalysisOptions):
    modules: Granularity = Field(default="auto", description=GRANULARITY_HELP)
    num_alphas: int = Field(default=11, ge=2)
    num_sigmas: int = Field(
        default=13, ge=2, description="noise levels, geometric from min_sigma to max_sigma"
    )
    noise_samples: int = Field(default=5, ge=1)
    tolerance: float = Field(default=1.01, ge=1, description="ε = tolerance × final train loss")
    max_examples: int | None = Field(default=1000, ge=1)
    epsilon: float | None = Field(
        default=None, gt=0, description="absolute loss threshold; overrides margin and tolerance"
    )
    margin: float | None = Field(
        default=None, gt=0, description="ε = final train loss + margin; overrides tolerance"
    )
    max_sigma: float = Field(default=1.0, gt=0, description="largest noise standard deviation")
    min_sigma: float | None = Field(
        default=None,
        gt=0,
        description="smallest noise standard deviation; default max_sigma / 10^4 (vanishing "
        "noise, so μ is finite whenever the final model meets ε)",
    )
    search: Literal["pruned", "bisection", "grid"] = Field(
        default="pruned",
        description="how μ is found: 'pruned' (exact: the grid's μ), 'bisection' over σ per α "
        "(fewer forward passes when μ is large; assumes feasibility monotone in σ, else its μ "
        "is larger than the grid's), 'grid' (every cell)",
    )
    # The heat maps evaluate every cell (no search): a coarse grid keeps them cheap.
    heatmap_alphas: int = Field(default=4, ge=2)
    heatmap_sigmas: int = Field(default=4, ge=2)
    heatmap_noise_samples: int = Field(default=1, ge=1)
    eval_max_examples: int | None = Field(
        default=500, ge=1, description="test examples for the rewind test and heat maps"
    )


class Heatmap(Model):
    """One module's test metric over the (α, σ) grid (:func:`~transferscope.measures.criticality.criticality_heatmap`)."""

    alphas: list[float]
    """[A] positions along θ⁰ → θ^F (0 = init, 1 = final)."""
    sigmas: list[float]
    """[S] noise standard deviations, linear from 0."""
    distance: list[float]
    """[A] α‖θ^F − θ⁰‖_F."""
    metric: list[list[float]]
    """[A][S] test metric (rows α, columns σ)."""
    loss: list[list[float]]
    """[A][S] test loss (nats)."""


class KindCriticality(Model):
    """One run's (P-T's or RI-T's) criticality result (:class:`~transferscope.measures.criticality.CriticalityResult`)."""

    status: Literal["ok"] = "ok"
    run: str
    modules: list[str]
    """Module paths, input to output, the head last."""
    mu: dict[str, float | None]
    """μ_i per module; None when no (α, σ) on the grid is feasible (see ``mu_bound``)."""
    mu_bound: dict[str, float]
    """For each infeasible module, the lower bound ‖θ^F − θ⁰‖² / min σ²."""
    network_criticality: float | None
    network_criticality_bound: float | None
    infeasible_modules: list[str]
    distance: dict[str, float]
    """‖θ_i^F − θ_i⁰‖_F per module."""
    argmin: dict[str, tuple[float, float] | None]
    """The (α, σ) attaining μ_i, or None."""
    final_loss: float
    """L_S(θ^F), mean training loss on the subset (nats)."""
    epsilon: float
    final_meets_epsilon: bool
    alphas: list[float]
    sigmas: list[float]
    sigma_grid: str
    forward_passes: int
    examples: int
    search: Literal["pruned", "bisection", "grid"]
    recalibrated_batchnorm: bool
    final_metric: float
    """Test metric of θ^F on the rewind subset."""
    final_test_loss: float
    rewind: dict[str, float]
    """Test metric with one module rewound to θ⁰."""
    rewind_loss: dict[str, float]
    heatmap: dict[str, Heatmap]


class KindSkipped(Skipped):
    """A kind that could not be measured; ``run`` is the run it would have used, if planned."""

    run: str | None = None


KindEntry = Annotated[KindCriticality | KindSkipped, Field(discriminator="status")]


class CriticalityEntry(TargetEntry):
    """One target's criticality: one result per kind (a kind may be skipped on its own)."""

    pt: KindEntry = Field(alias="P-T")
    rit: KindEntry = Field(alias="RI-T")

    def kinds(self) -> list[tuple[str, KindCriticality | KindSkipped]]:
        return [("P-T", self.pt), ("RI-T", self.rit)]

    def computed(self) -> list[tuple[str, KindCriticality]]:
        """The kinds that were computed (not skipped), P-T first."""
        return [(k, e) for k, e in self.kinds() if isinstance(e, KindCriticality)]


class CriticalityResult(AnalysisResult):
    targets: dict[str, CriticalityEntry] = Field(default_factory=dict)
    loss_split: str = "train"
    rewind_split: str = "test"
    heatmap_split: str = "test"


# ----------------------------------------------------------------------------------------------
# computing


def _kind(
    ctx: StudyContext, opts: CriticalityOptions, run: PlannedRun, tick: Any
) -> dict[str, Any]:
    """μ per module on the training subset, rewind test and heat maps on the test split."""
    model = ctx.start_model(run)
    # θ⁰: P-T's start (P with the fresh head) or RI-T's random init.
    init, final = ctx.weights(run.id, ckpt.point_name(0)), ctx.weights(run.id)
    splits = ctx.cache.get(run.spec.data)
    modules = [*depth_units(model, opts.modules), model_layout(model).head]
    # μ on the training split; the rewind test and the heat maps on the test split.
    test = ProbeInputs(
        model, init, final, splits.test, modules, task=splits.info.task,
        batch_size=run.spec.train.eval_batch_size, device=ctx.device,
    )  # fmt: skip
    result = module_criticality(
        model, init, final, splits.train, modules,
        task=test.task, batch_size=test.batch_size, device=test.device,
        num_alphas=opts.num_alphas, num_sigmas=opts.num_sigmas,
        noise_samples=opts.noise_samples, tolerance=opts.tolerance,
        epsilon=opts.epsilon, margin=opts.margin, max_sigma=opts.max_sigma,
        min_sigma=opts.min_sigma, seed=run.seed, max_examples=opts.max_examples,
        search=opts.search, progress=lambda i, n, m: tick(i, n + 2, f"μ of {m}"),
    )  # fmt: skip
    tick(len(modules), len(modules) + 2, "rewind test")
    rewind = rewind_modules(test, max_examples=opts.eval_max_examples)
    tick(len(modules) + 1, len(modules) + 2, "heat maps")
    heatmap = criticality_heatmap(
        test, num_alphas=opts.heatmap_alphas, num_sigmas=opts.heatmap_sigmas,
        noise_samples=opts.heatmap_noise_samples, max_sigma=opts.max_sigma,
        seed=run.seed, max_examples=opts.eval_max_examples,
    )  # fmt: skip
    return {
        "status": "ok",
        "run": run.id,
        **result.to_dict(),
        "final_metric": rewind["final"]["metric"],
        "final_test_loss": rewind["final"]["loss"],
        "rewind": {m: rewind[m]["metric"] for m in result.modules},
        "rewind_loss": {m: rewind[m]["loss"] for m in result.modules},
        "heatmap": heatmap,
    }


def _compute(ctx: StudyContext, opts: CriticalityOptions) -> CriticalityResult:
    first = ctx.cfg.seeds[0]
    labels = [t.label for t in ctx.cfg.targets]
    parts = [(t, k) for t in labels for k in ("P-T", "RI-T")]
    targets: dict[str, dict[str, Any]] = {t: {} for t in labels}
    for index, (target, kind) in enumerate(parts):

        def tick(
            i: int, n: int, what: str, index: int = index, where: str = f"{target} {kind}"
        ) -> None:
            # Percent of every (target, kind) together: the module count is known only once a
            # run's model is built, and the message names the module.
            ctx.progress(100 * index + 100 * i // n, 100 * len(parts), f"{where}: {what}")

        tick(0, 1, "start")
        runs = [r for r in ctx.independent(kind, target) if r.seed == first]
        if not runs:
            targets[target][kind] = skipped(
                f"the plan has no unshuffled {kind} run with seed {first}"
            )
            continue
        run = runs[0]
        reason = ctx.unfinished([run])
        if reason:
            targets[target][kind] = {"run": run.id, **skipped(reason)}
            continue
        try:
            targets[target][kind] = _kind(ctx, opts, run, tick)
        except TransferscopeError as e:
            targets[target][kind] = {"run": run.id, **skipped(str(e))}
    return CriticalityResult.model_validate({"targets": targets})


# ----------------------------------------------------------------------------------------------
# claims


@claim(
    "C7",
    "Higher modules are more critical than lower ones.",
    "Spearman ρ between module depth (input → output) and P-T's module criticality μ "
    "is positive with one-sided permutation p < 0.05, over the modules with a finite μ "
    "(the head left out); P and the P-T run must have learned (the valleys of a model that "
    "learned nothing say nothing about what was transferred).",
    guards_chance=True,
    short="higher modules more critical",
)
def C7(e: CriticalityEntry, target: str, data: StudyData) -> TargetResult:
    from transferscope.analyses.distance import trend_decide
    from transferscope.measures.statistics import spearman_trend

    pt = e.pt
    if not isinstance(pt, KindCriticality):
        return TargetResult(target, UNMEASURED, f"P-T skipped ({pt.reason})")
    body = pt.modules[:-1]  # the head is the last module: a fresh layer, not a depth of P
    finite_modules = [m for m in body if finite(pt.mu.get(m))]
    left_out = [m for m in body if m not in finite_modules]
    if len(finite_modules) < 3:
        return TargetResult(target, UNMEASURED, "fewer than 3 modules with a finite μ")
    trend = spearman_trend([float(pt.mu[m]) for m in finite_modules])  # type: ignore[arg-type]
    rho = f"ρ = {trend.estimate:+.2f}" if finite(trend.estimate) else "every μ equal"
    text = f"{rho} over {len(finite_modules)} modules (head left out)"
    if left_out:
        text += f"; {len(left_out)} without a finite μ left out: {', '.join(left_out)}"
    verdict = combine(trend.direction)
    result = TargetResult(
        target,
        verdict,
        text,
        f"{trend.method}, p = {fmt(trend.p_value, 2)}",
        decide=decide_text([trend_decide(trend, len(finite_modules))])
        if verdict == INCONCLUSIVE
        else "",
    )
    dead = at_chance(data, [pt.run])
    if dead and verdict != UNMEASURED:
        result = voided(result, dead, "the valleys of a model that learned nothing mean nothing")
    return p_guard(data, result)


# ----------------------------------------------------------------------------------------------
# the unit


@register
class Criticality(Analysis, name="criticality", version=2, section=sections.CRITICALITY):
    """Module criticality, rewind test and heat maps (§3.4)."""

    claims = (C7,)

    def tables(self, result: CriticalityResult | None) -> dict[str, Table]:
        """``criticality``: module criticality per kind (P-T, RI-T) and module (§3.4): μ (None
        when no grid point was feasible, then ``mu_bound`` bounds it), distance and the
        rewound metric."""
        rows = []
        for target, entry in (result.targets if result is not None else {}).items():
            if not measured(entry):
                continue
            for kind, side in (("P-T", entry.pt), ("RI-T", entry.rit)):
                if not isinstance(side, KindCriticality):
                    continue
                for module in side.modules:
                    rows.append(
                        {
                            "target": target,
                            "kind": kind,
                            "run": side.run,
                            "module": module,
                            "mu": side.mu.get(module),
                            "mu_bound": side.mu_bound.get(module),
                            "distance": side.distance.get(module),
                            "rewind_metric": side.rewind.get(module),
                            "rewind_loss": side.rewind_loss.get(module),
                            "network_criticality": side.network_criticality,
                            "recalibrated_batchnorm": side.recalibrated_batchnorm,
                        }
                    )
        columns = (
            "target", "kind", "run", "module", "mu", "mu_bound", "distance", "rewind_metric",
            "rewind_loss", "network_criticality", "recalibrated_batchnorm",
        )  # fmt: skip
        return {"criticality": Table(columns, rows)}

    def work(self, options: CriticalityOptions, target: TargetSize) -> Work:
        # Per kind planned (P-T and RI-T; both without a plan) and module: the μ search's
        # evaluations of the training subset, the rewind test and the heat map on the test
        # subset, each probe paying only for the modules from the probed one on (the ones
        # before it are replayed, after one recording pass).
        o = options
        kinds = 2
        if target.study is not None:
            first = target.study.cfg.seeds[0]
            kinds = sum(
                any(r.seed == first for r in target.study.independent(kind, target.label))
                for kind in ("P-T", "RI-T")
            )
        train = target.cap(o.max_examples, target.train)
        test = target.cap(o.eval_max_examples, target.test)
        if target.model is None or target.image_shape is None:
            fractions, batchnorm = [1.0] * 18, False  # a ResNet-50's blocks and head
        else:
            seen = facts(target.model, target.image_shape)
            modules = [*depth_units(target.model, o.modules), model_layout(target.model).head]
            fractions, batchnorm = [seen.suffix_fraction(m) for m in modules], seen.batchnorm
        probes = search_evaluations(o.search, o.num_alphas, o.num_sigmas, o.noise_samples)
        heat = o.heatmap_alphas * o.heatmap_sigmas * o.heatmap_noise_samples
        forwards = sum(f * (probes * train + heat * test) for f in fractions)
        forwards += len(fractions) * (train + test)  # each module's recording passes
        forwards += (len(fractions) + 1) * test + train  # the rewind test; L_S(θ^F)
        if batchnorm:  # statistics recomputed at each α searched
            forwards += len(fractions) * o.num_alphas * train
        scored = target.evaluations(len(fractions) * (heat + 1) + 1)
        calls = probes * target.batches(train) + (heat + 1) * target.batches(test)
        calls = len(fractions) * calls + target.batches(test) + target.batches(train)
        return (Work(forwards=forwards, models=2, calls=calls) + scored) * kinds

    def compute(self, ctx: StudyContext, options: CriticalityOptions) -> CriticalityResult:
        return _compute(ctx, options)

    def render(self, page: Page, target: str, entry: CriticalityEntry) -> str:
        from transferscope.analyses.criticality_report import render_entry

        return render_entry(page, target, entry)

    def has_results(self, result: AnalysisResult) -> bool:
        return any(e.computed() for e in result.targets.values())


__all__ = [
    "Criticality",
    "CriticalityEntry",
    "CriticalityOptions",
    "CriticalityResult",
    "KindCriticality",
    "KindSkipped",
]
