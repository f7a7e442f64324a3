"""Parameter distance, whole network and per module (Neyshabur et al. 2020, §3.2): claim C5.

Per target: the L2 distance ‖θ_A − θ_B‖ between two weight files (same units as the weights),
over the whole network and per module, for the pairs of final models (P-T/P-T, RI-T/RI-T, the
same-init RI-T pair, the control pair, P-T/RI-T across seeds), each final model against P
(P-T/P, RI-T/P; heads left out: P's answers the source's question), and along the pre-training
trajectory (P@k/P-T, P@k-T/P-T, with the checkpoint ``k`` in epochs of pre-training). Per module
also the size-free change ‖θ_A − θ_B‖/‖θ_B‖ and the root-mean-square entry difference. The math
is in :mod:`transferscope.measures.distance`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from transferscope.errors import TransferscopeError
from transferscope.measures.distance import parameter_distance
from transferscope.models.layout import depth_units
from transferscope.models.layout import layout as model_layout
from transferscope.options import GRANULARITY_HELP, AnalysisOptions, Granularity
from transferscope.registry import register
from transferscope.unitkit import rules, sections
from transferscope.unitkit.context import StudyContext, Weights, skipped
from transferscope.unitkit.pairs import Pair, PairName, Pairs, SkippedPair, study_pairs
from transferscope.unitkit.results import AnalysisResult, Entry, TargetEntry
from transferscope.unitkit.rules import TargetResult, fmt
from transferscope.unitkit.tables import Table, pair_table
from transferscope.unitkit.unit import Analysis, claim

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from transferscope.studydir.plan import PlannedRun
    from transferscope.unitkit.page import Page
    from transferscope.unitkit.study_data import StudyData


class DistanceOptions(AnalysisOptions):
    modules: Granularity = Field(default="auto", description=GRANULARITY_HELP)


# ----------------------------------------------------------------------------------------------
# result


class DistancePair(Pair):
    """One measured pair (:meth:`~transferscope.measures.distance.ParameterDistance.to_dict`)."""

    status: Literal["ok"] = "ok"
    checkpoints: list[str]
    """The weight file of each side: 'final' or a trajectory point's name (e.g. 'epoch-0.5')."""
    k: float | None = None
    """P@k pairs: the pre-training checkpoint k (epochs of pre-training)."""
    total: float
    """‖θ_A − θ_B‖ over every compared entry."""
    per_module: dict[str, float]
    per_module_relative: dict[str, float]
    """‖θ_A − θ_B‖/‖θ_B‖ per module (modules of B with a non-zero norm)."""
    per_module_rms: dict[str, float]
    """‖θ_A − θ_B‖/√entries per module."""
    module_elements: dict[str, int]
    excluded: dict[str, str]
    """State-dict key -> why it was not compared (head, BatchNorm statistic, integer)."""
    tensors: int
    elements: int


class SkippedDistancePair(SkippedPair):
    """A pair not measured; the checkpoints and k of the pair when known."""

    checkpoints: list[str] = Field(default_factory=list)
    k: float | None = None


class DistanceEntry(TargetEntry):
    pairs: Pairs[DistancePair, SkippedDistancePair] = Field(default_factory=list)
    depth_units: list[str] | None = None
    """The modules of C5's depth trend, input to output (head left out); None when the plan has
    no run to read the architecture from."""


class DistanceResult(AnalysisResult):
    targets: dict[str, Entry[DistanceEntry]] = Field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# computing


@dataclass
class _Job:
    """One pair: two (run id, checkpoint) weight files and the runs that must be done."""

    pair: PairName
    needs: list[PlannedRun]
    a: Weights
    b: Weights
    exclude_head: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _jobs(ctx: StudyContext, target: str) -> tuple[list[_Job], list[dict[str, Any]]]:
    """The pairs to measure on ``target``, and entries for pairs that cannot be measured yet."""
    jobs: list[_Job] = []
    waiting: list[dict[str, Any]] = []

    def finals(pair: PairName, a: PlannedRun, b: PlannedRun, **extra: Any) -> None:
        jobs.append(_Job(pair, [a, b], (a.id, "final"), (b.id, "final"), extra=extra))

    for pair, a, b in study_pairs(ctx, target, same_init=True, every_p_t_ri_t=True):
        finals(pair, a, b)
    pts = ctx.independent("P-T", target)
    against_p: tuple[tuple[PairName, list[PlannedRun]], ...] = (
        ("P-T/P", pts),
        ("RI-T/P", ctx.independent("RI-T", target)),
    )
    for name, runs in against_p:
        for r in runs:
            # P is located through a P-T run: RI-T did not start from it. P's head answers the
            # source's question, so it is always left out.
            via = r if name == "P-T/P" else (pts[0] if pts else None)
            p = ctx.p_weights(via, None) if via is not None else None
            if p is None or not ctx.done(r):
                waiting.append(
                    {"pair": name, "runs": [r.id], "seeds": [r.seed]}
                    | skipped("P's weights or this run are not available yet")
                )
                continue
            jobs.append(_Job(name, [r], (r.id, "final"), p, exclude_head=True))
    reference = pts[0] if pts else None
    for r in ctx.trajectory_runs(target):
        if reference is None or r.checkpoint is None:
            continue
        k = {"k": r.checkpoint}
        pk = ctx.p_weights(r, r.checkpoint)
        if pk is None or not ctx.done(reference):
            waiting.append(
                {"pair": "P@k/P-T", "runs": [r.id, reference.id], **k}
                | skipped("P@k's weights or P-T are not available yet")
            )
        else:
            jobs.append(_Job("P@k/P-T", [reference], pk, (reference.id, "final"), True, extra=k))
        finals("P@k-T/P-T", r, reference, **k)
    return jobs, waiting


def _depth_units(ctx: StudyContext, target: str, granularity: Granularity) -> list[str] | None:
    """The modules of the depth trend of ``target``'s models (head last), from the architecture
    of one of its runs; None when the plan has no run to read it from."""
    runs = ctx.independent("P-T", target) or ctx.independent("RI-T", target)
    if not runs:
        return None
    model = ctx.start_model(runs[0])
    return [*depth_units(model, granularity), model_layout(model).head]


def _measure(ctx: StudyContext, job: _Job, units: list[str] | None) -> dict[str, Any]:
    start: dict[str, Any] = {
        "pair": job.pair,
        "runs": [job.a[0], job.b[0]],
        "checkpoints": [job.a[1], job.b[1]],
        "seeds": [r.seed for r in job.needs],
        **job.extra,
    }
    reason = ctx.unfinished(job.needs)
    if reason:
        return {**start, **skipped(reason)}
    try:
        result = parameter_distance(
            ctx.weights(*job.a), ctx.weights(*job.b), modules=units, exclude_head=job.exclude_head
        )
    except TransferscopeError as e:
        return {**start, **skipped(str(e))}
    return {**start, "status": "ok", **result.to_dict()}


# ----------------------------------------------------------------------------------------------
# claim


def _ok(e: DistanceEntry, name: str | None = None) -> list[DistancePair]:
    return [p for p in e.pairs if isinstance(p, DistancePair) and (name is None or p.pair == name)]


def _mean_per_module(pairs: list[DistancePair]) -> dict[str, float]:
    """Per module, the mean size-free change over ``pairs`` (finite values only)."""
    names: list[str] = []
    for p in pairs:
        names += [n for n in p.per_module_relative if n not in names]
    out = {}
    for n in names:
        m = rules.mean(p.per_module_relative.get(n) for p in pairs)
        if m is not None:
            out[n] = m
    return out


def criticality_modules(data: StudyData, target: str) -> list[str] | None:
    """The modules of the criticality result's P-T on ``target``, input to output (the model's
    layout): the depth order when the distance result has none."""
    # plain(): the criticality entry is a model or, while its result is untyped, a dict.
    crit = rules.plain(data.target_entry("criticality", target))
    pt = crit.get("P-T") if isinstance(crit, dict) else None
    modules = pt.get("modules") if isinstance(pt, dict) else None
    return list(modules) if isinstance(modules, list) else None


def trend_decide(trend: Any, modules: int) -> rules.Decide:
    """What would decide a depth trend left undecided: not seeds, since the modules ranked are
    the model's."""
    rho = f"ρ {trend.estimate:+.2f}" if rules.finite(trend.estimate) else "no order"
    return rules.Decide(
        f"depth trend {rho} over the model's {modules} modules (one-sided p "
        f"{fmt(trend.p_value, 2)}; finer modules, `modules: layers`, give more to rank)",
        never="more seeds would not decide it",
    )


@claim(
    "C5",
    "P-T models are closer to each other in parameter space, and their distance to P grows "
    "with depth.",
    "whole-network distance of P-T/P-T pairs is below that of RI-T/RI-T pairs from "
    f"independent inits (beyond the pair spread and {rules.DISTANCE_FLOOR:.0%}), and the "
    "size-normalised change ‖θ_P-T − θ_P‖/‖θ_P‖ per module rises with depth (Spearman ρ, "
    "one-sided permutation p < 0.05; head and Fixup scalars left out).",
    controlled="the distance part against the same-init RI-T/RI-T pair and the control pair "
    "P@0-T/P@0-T (two fine-tunes from P's untrained init), both beaten by the same margin, and "
    "the same depth trend; P must have learned.",
    meaning=rules.PAIRS_MEANING,
    guards_chance=True,
    short="P-T pairs closer in weights, more so deeper",
)
def C5(e: DistanceEntry, target: str, data: StudyData) -> TargetResult:
    from transferscope.measures.statistics import spearman_trend

    per = _mean_per_module(_ok(e, "P-T/P"))
    units = e.depth_units or criticality_modules(data, target)
    order = [m for m in rules.depth_order(per, units) if not units or m in units]
    trend = spearman_trend([per[m] for m in order]) if len(order) >= 3 else None

    def judged(baselines: Sequence[str]) -> TargetResult:
        closer = rules.group_rule(
            e, lambda p: p["total"], -1, "pairs", baselines, data,
            seeds=data.seeds, relative_floor=rules.DISTANCE_FLOOR,
        )  # fmt: skip
        if closer.direction is None:
            return TargetResult(target, rules.UNMEASURED, "missing: " + closer.text)
        if trend is None:
            return TargetResult(
                target, rules.UNMEASURED, "P-T/P size-normalised distances for 3+ modules missing"
            )
        rho = f"ρ = {trend.estimate:+.2f}" if rules.finite(trend.estimate) else "no change"
        verdict = rules.combine(closer.direction, trend.direction)
        decide = list(closer.decide) if closer.direction == 0 else []
        if trend.direction == 0:
            decide.append(trend_decide(trend, len(order)))
        return TargetResult(
            target,
            verdict,
            f"whole network {closer.text}; P-T/P relative change ‖Δ‖/‖θ_P‖ vs depth "
            f"{rho} over {len(order)} modules",
            f"{closer.statistic}; depth: {trend.method}, p = {fmt(trend.p_value, 2)}",
            decide=rules.decide_text(decide) if verdict == rules.INCONCLUSIVE else "",
        )

    paper = judged(rules.PAPER_BASELINES)
    return replace(paper, controlled=rules.p_guard(data, judged(rules.CONTROL_BASELINES)))


# ----------------------------------------------------------------------------------------------
# report


def distance_modules(
    e: DistanceEntry, title: str, reference: Sequence[str] | None = None
) -> Figure | None:
    """Per-module L2 parameter distance, one line per pair (log scale: RI-T is far away)."""
    from transferscope.unitkit import figures as F

    pairs = [p for p in _ok(e) if p.per_module]
    if not pairs:
        return None
    names: list[str] = []
    for p in pairs:
        names += [n for n in p.per_module if n not in names]
    modules = rules.depth_order(names, reference)
    if not modules:
        return None
    fig, ax = F.subplots(figsize=(6.0, 3.4))
    x = np.arange(len(modules))
    positive = False
    # The shared pair styles read plain pair entries; P@k pairs are shaded by their k.
    plain = [{"pair": p.pair, "k": p.k} for p in pairs]
    shades = F.checkpoint_styles(plain, "k")
    for p, q in zip(pairs, plain, strict=True):
        color, ls, label = F.pair_line(q, "k", shades)
        values = [p.per_module.get(m) for m in modules]
        y = [v if v is not None and rules.finite(v) and v > 0 else np.nan for v in values]
        positive = positive or any(not math.isnan(v) for v in y)
        ax.plot(x, y, color=color, linestyle=ls, marker="o", markersize=3, label=label)
    if positive:
        ax.set_yscale("log")
    ax.set_xticks(x, modules, rotation=30, ha="right")
    ax.set_xlabel("module (input → output)")
    ax.set_ylabel("L2 distance of the module's parameters")
    ax.set_title(title)
    F.legend_once(ax, outside=True)
    return fig


def _module_rows(p: DistancePair) -> list[tuple[Any, ...]]:
    """The ``distances`` table's values of pair ``p``: one row per module."""
    return [
        (p.k, m, v, p.per_module_relative.get(m), p.per_module_rms.get(m),
         p.module_elements.get(m), p.total)
        for m, v in p.per_module.items()
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# the unit


@register
class Distance(Analysis, name="distance", version=2, section=sections.DISTANCE):
    """Parameter distance, whole network and per module (§3.2)."""

    claims = (C5,)

    def tables(self, result: DistanceResult | None) -> dict[str, Table]:
        """``distances``: parameter distance per pair and module (§3.3); ``total`` repeats
        the pair's whole L2 distance on each of its rows."""
        columns = ("k", "module", "distance", "relative", "rms", "elements", "total")
        return {"distances": pair_table(result, columns, _module_rows)}

    def compute(self, ctx: StudyContext, options: DistanceOptions) -> DistanceResult:
        labels = [t.label for t in ctx.cfg.targets]
        plan = {t: _jobs(ctx, t) for t in labels}
        total, done = sum(len(jobs) for jobs, _ in plan.values()), 0
        targets: dict[str, Any] = {}
        for target, (jobs, entries) in plan.items():
            units = _depth_units(ctx, target, options.modules)
            for job in jobs:
                ctx.progress(done, total, f"{target}: {job.pair} {job.a[0]} / {job.b[0]}")
                done += 1
                entries.append(_measure(ctx, job, units))
            # Input to output, head left out: the modules C5's depth trend reads.
            depth = units[:-1] if units else None
            targets[target] = {"status": "ok", "pairs": entries, "depth_units": depth}
        ctx.progress(total, total, "done")
        return DistanceResult.model_validate({"targets": targets})

    def render(self, page: Page, target: str, e: DistanceEntry) -> str:
        from transferscope.unitkit.page import Raw, esc, table

        rows = [
            (
                p.pair,
                ", ".join(p.runs),
                fmt(p.k) if p.k is not None else "-",
                fmt(p.total, 4)
                if isinstance(p, DistancePair)
                else Raw(f"<em>skipped: {esc(p.reason)}</em>"),
            )
            for p in e.pairs
        ]
        reference = criticality_modules(page.data, target)
        return table(
            ("pair", "runs", "k", "whole-network L2 distance"), rows, numeric=(2, 3)
        ) + page.figure(
            distance_modules(e, f"Parameter distance, target {target}", reference),
            f"distance-{target}",
            f"L2 distance per module for every pair on {target} (log scale).",
        )


__all__ = ["Distance", "DistanceEntry", "DistanceOptions", "DistanceResult", "distance_modules"]
