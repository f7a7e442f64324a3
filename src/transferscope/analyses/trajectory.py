"""Fine-tuning from checkpoints of the pre-training trajectory (Neyshabur et al. 2020, §3.5):
claim C8.

Per target and per pre-training checkpoint k: the P@k-T runs' mean final test metric and epochs
to one threshold common to every point (``threshold_fraction`` of the way from chance to the
final P-T's metric), the difference to P-T of the same seeds on the same test examples (paired
bootstrap), and the barrier (metric and loss) on the straight line from P@k-T to P-T; the final
P-T is the last point. The math is in :mod:`transferscope.measures.trajectory` and
:mod:`transferscope.measures.interpolation`; k is in pre-training epochs (fractional), metrics
are fractions, losses nats.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from transferscope.analyses.curves import CurvesEntry
from transferscope.errors import TransferscopeError
from transferscope.measures import curves as curves_lib
from transferscope.measures import statistics as stats
from transferscope.measures.trajectory import trajectory_point
from transferscope.options import SpeedOptions
from transferscope.registry import register
from transferscope.training.metrics import metric_name
from transferscope.unitkit import rules, sections
from transferscope.unitkit.context import StudyContext, guarded, skipped
from transferscope.unitkit.model_paths import line_work, path_work
from transferscope.unitkit.results import AnalysisResult, Comparison, Entry, Model, TargetEntry
from transferscope.unitkit.rules import (
    CHECKPOINT_TOLERANCE,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    UNMEASURED,
    TargetResult,
    at_chance,
    finite,
    fmt,
    mean,
    p_guard,
    voided,
)
from transferscope.unitkit.unit import Analysis, TargetSize, Work, claim

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from transferscope.studydir.plan import PlannedRun
    from transferscope.unitkit.page import Page
    from transferscope.unitkit.study_data import StudyData


EARLY_HELP = "a checkpoint k is early when k <= this × the final pre-training epoch"


class TrajectoryOptions(SpeedOptions):
    early_fraction: float = Field(default=0.5, gt=0, lt=1, description=EARLY_HELP)
    barrier: bool = Field(default=True, description="interpolate P@k-T to P-T (§3-§5)")
    num_points: int = Field(default=11, ge=2)
    recalibrate_batchnorm: bool = True
    recalibration_examples: int | None = Field(
        default=2000, ge=1, description="training examples for BatchNorm statistics at each point"
    )


class Point(Model):
    """One checkpoint k: its fine-tunes P@k-T (or, marked ``reference``, the final P-T)."""

    k: float
    """Pre-training epoch of the checkpoint (fractional)."""
    runs: list[str]
    final_metric: float | None
    """Mean over the runs (seeds) of the final test metric."""
    epochs_to_threshold: float | None
    """Mean over the runs that reached the common threshold; None when none did."""
    reached: list[bool]
    barrier_metric: float | None
    """Mean over seeds of the barrier to P-T of the same seed; None when not measured."""
    barrier_loss: float | None
    early: bool
    """0 < k ≤ early_fraction × the final pre-training epoch (k = 0 is P's untrained init: the
    control, not a checkpoint of pre-training)."""
    vs_final: Entry[Comparison] | None = None
    """P@k-T − P-T final metric on the same test examples (paired bootstrap over examples)."""
    vs_start: Entry[Comparison] | None = None
    """P@k-T − P@0-T (the fine-tune of P's untrained init) on the same test examples, same
    seeds (paired bootstrap): what pre-training up to k adds; early points only."""
    barrier_partners: list[str] | None = None
    """The P-T runs the barriers were measured to."""
    reference: Literal["P-T"] | None = None
    """Set to "P-T" on the point that is P-T itself (fine-tuned from the final P)."""


class TrajectoryEntry(TargetEntry):
    """One target's trajectory: every checkpoint, the final P-T last."""

    metric_name: str
    points: list[Point]
    final_k: float | None
    """The epoch of the final P; None when not known (an external P without checkpoints)."""
    threshold: float | None
    chance: float


class TrajectoryResult(AnalysisResult):
    targets: dict[str, Entry[TrajectoryEntry]] = Field(default_factory=dict)
    threshold_fraction: float | None = None
    early_fraction: float | None = None


# ----------------------------------------------------------------------------------------------
# computing


def _final_k(ctx: StudyContext) -> float | None:
    """The epoch of the final P: P's pre-training length, or the last external checkpoint."""
    if ctx.p_run() is not None:
        return float(ctx.cfg.pretrain.epochs)
    if ctx.cfg.pretrained is not None and ctx.cfg.pretrained.checkpoints:
        return float(max(float(k) for k in ctx.cfg.pretrained.checkpoints))
    return None


def _versus_final(
    ctx: StudyContext,
    task: str,
    matched: list[tuple[PlannedRun, PlannedRun]],
    other: str = "P-T",
) -> dict[str, Any]:
    """Final metric of P@k-T minus that of its partner (``other``: P-T, or P@0-T) of the same
    seed, with a paired bootstrap interval over the test examples; the estimate is the mean over
    the matched seeds."""
    early, y_early = ctx.outputs([r for r, _ in matched])
    final, y = ctx.outputs([p for _, p in matched])
    if not np.array_equal(y_early, y):
        raise TransferscopeError("P@k-T and P-T were tested on other examples")
    fa = [stats.metric_under_weights(task, o, y) for o in early]
    fb = [stats.metric_under_weights(task, o, y) for o in final]

    def difference(w: np.ndarray) -> np.ndarray:
        return np.mean([f(w) for f in fa], axis=0) - np.mean([f(w) for f in fb], axis=0)

    result = stats.bootstrap_interval(
        difference, len(y), seed=0, method=f"P@k-T − {other}, {len(matched)} seed(s) matched"
    )
    return {"status": "ok", **asdict(result)}


def _point(
    ctx: StudyContext,
    k: float,
    runs: list[PlannedRun],
    pts: list[PlannedRun],
    threshold: float | None,
    task: str,
    opts: TrajectoryOptions,
    starts: list[PlannedRun] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """Mean final metric and speed of the P@k-T runs; against the P-T run of the same seed, the
    difference of final metrics on the same test examples (paired bootstrap) and the barrier;
    against the P@0-T run of the same seed (``starts``, finished), the difference of final
    metrics."""
    summary = trajectory_point(ctx.metrics_rows(runs), threshold)
    point: dict[str, Any] = {
        "k": k,
        "runs": [r.id for r in runs],
        "final_metric": summary["final_metric"],
        "epochs_to_threshold": summary["epochs_to_threshold"],
        "reached": summary["reached"],
        "barrier_metric": None,
        "barrier_loss": None,
    }
    matched = [(r, p) for r in runs for p in pts if p.seed == r.seed and ctx.done(p)]
    if matched:
        point["vs_final"] = guarded(_versus_final, ctx, task, matched)
    at_start = [(r, c) for r in runs for c in starts if c.seed == r.seed] if k > 0 else []
    if at_start:
        point["vs_start"] = guarded(_versus_final, ctx, task, at_start, "P@0-T")
    if not opts.barrier:
        return point
    barriers: list[tuple[float, float]] = []
    partners = []
    for r, same in matched:
        try:
            # The straight line as the interpolation analysis measures it (shared memo).
            res = ctx.line(
                same, (r.id, "final"), (same.id, "final"), opts.num_points,
                opts.recalibrate_batchnorm, max_examples=opts.max_examples,
                recalibration_examples=opts.recalibration_examples,
            )  # fmt: skip
        except TransferscopeError:
            continue
        barriers.append((res.barrier_metric, res.barrier_loss))
        partners.append(same.id)
    if barriers:
        point["barrier_metric"] = float(np.mean([b[0] for b in barriers]))
        point["barrier_loss"] = float(np.mean([b[1] for b in barriers]))
        point["barrier_partners"] = partners
    return point


def _target(ctx: StudyContext, spec: Any, opts: TrajectoryOptions, tick: Any) -> dict[str, Any]:
    target = spec.label
    by_k: dict[float, list[PlannedRun]] = {}
    for r in ctx.runs(kind="P@k-T", target=target, shuffle=None):
        if r.checkpoint is not None:
            by_k.setdefault(float(r.checkpoint), []).append(r)
    if not by_k:
        return skipped("the plan has no P@k-T runs (trajectory.checkpoints)")
    info = ctx.cache.get(spec).info
    chance = curves_lib.chance_metric(info.task, info.num_outputs)
    pts = ctx.independent("P-T", target)
    done_pts = [r for r in pts if ctx.done(r)]
    final_k = _final_k(ctx)
    # One bar for every point: most of the way from chance to the final P-T's metric, so a
    # checkpoint whose fine-tunes never get there reads "not reached".
    reference = trajectory_point(ctx.metrics_rows(done_pts), None) if done_pts else None
    threshold = (
        curves_lib.common_threshold(chance, [reference["final_metric"]], opts.threshold_fraction)
        if reference
        else None
    )
    points = []
    starts = [r for r in by_k.get(0.0, []) if ctx.done(r)]
    for i, k in enumerate(sorted(by_k)):
        tick(i, len(by_k), f"checkpoint k = {k:g}")
        done = [r for r in by_k[k] if ctx.done(r)]
        if done:
            points.append(_point(ctx, k, done, pts, threshold, info.task, opts, starts))
    if done_pts and final_k is not None:
        ref = trajectory_point(ctx.metrics_rows(done_pts), threshold)
        points.append(
            {
                "k": final_k,
                "runs": [r.id for r in done_pts],
                "final_metric": ref["final_metric"],
                "epochs_to_threshold": ref["epochs_to_threshold"],
                "reached": ref["reached"],
                # P-T against itself: no barrier by definition.
                "barrier_metric": 0.0 if opts.barrier else None,
                "barrier_loss": 0.0 if opts.barrier else None,
                "reference": "P-T",
            }
        )
    if not points:
        return skipped("no finished P@k-T or P-T run")
    for point in points:
        point["early"] = final_k is not None and 0 < point["k"] <= opts.early_fraction * final_k
    return {
        "status": "ok",
        "metric_name": metric_name(info.task),
        "points": points,
        "final_k": final_k,
        "threshold": threshold,
        "chance": chance,
    }


# ----------------------------------------------------------------------------------------------
# claims


def final_pt_metric(e: TrajectoryEntry) -> float | None:
    """The final P-T metric of a trajectory entry.

    The point marked ``reference`` "P-T" (P-T's runs, fine-tuned from the final P) when there
    is one, else the mean of the points at ``final_k``.
    """
    points = [p for p in e.points if finite(p.final_metric)]
    ref = [p.final_metric for p in points if p.reference == "P-T"]
    if ref:
        return mean(ref)
    return mean(p.final_metric for p in points if p.k == e.final_k)


def _worse_than(t: Comparison, tol: float) -> bool:
    return finite(t.high) and t.high < -tol  # type: ignore[operator]


def _as_good(t: Comparison, tol: float) -> bool:
    return finite(t.low) and t.low >= -tol  # type: ignore[operator]


@claim(
    "C8",
    "An early pre-training checkpoint transfers as well as the final one.",
    "some early checkpoint (0 < k ≤ half of pre-training, trajectory.early_fraction; k = 0 "
    "is the untrained init) gives a P@k-T final metric no worse than P-T's of the same seed by "
    f"more than {CHECKPOINT_TOLERANCE:g} (lower bound of the paired bootstrap 95% interval ≥ "
    f"−{CHECKPOINT_TOLERANCE:g}); does not hold when every early k is worse beyond it. P and "
    "the final P-T must have learned (a P that learned nothing has no trajectory to compare).",
    controlled="and that checkpoint's P@k-T beats P@0-T (a fine-tune of P's untrained init "
    "with the same recipe and seed) beyond test-set noise (paired bootstrap): the early "
    "checkpoint transfers something pre-training learned, not only the start and recipe.",
    meaning="an early checkpoint matches the final P, but the untrained init does as well: the "
    "trajectory here does not show when pre-training starts to help.",
    guards_chance=True,
    short="an early checkpoint transfers as well",
)
def C8(e: TrajectoryEntry, target: str, data: StudyData) -> TargetResult:
    points = [p for p in e.points if finite(p.k)]
    early = sorted((p for p in points if p.early), key=lambda p: p.k)
    tested = [(p, p.vs_final) for p in early if isinstance(p.vs_final, Comparison)]
    if not tested:
        return TargetResult(
            target,
            UNMEASURED,
            "no early checkpoint (0 < k ≤ half of pre-training) with a P-T to compare",
            decide="trajectory.checkpoints: add one between a quarter and half of pre-training",
        )
    tol = CHECKPOINT_TOLERANCE
    good = [p for p, t in tested if _as_good(t, tol)]
    worse = [p for p, t in tested if _worse_than(t, tol)]
    final = final_pt_metric(e)
    if good:
        best, verdict = good[0], HOLDS
    elif len(worse) == len(tested):
        best, verdict = max(early, key=lambda p: p.final_metric or -1), FAILS
    else:
        undecided = [p for p, t in tested if not _worse_than(t, tol)]
        best, verdict = undecided[0], INCONCLUSIVE
    t = best.vs_final if isinstance(best.vs_final, Comparison) else None
    estimate, low, high = (t.estimate, t.low, t.high) if t is not None else (None, None, None)
    which = "earliest early k" if verdict != FAILS else "best early k"
    text = (
        f"final P-T {fmt(final)}; {which} = {fmt(best.k)} gives "
        f"{fmt(best.final_metric)} (Δ {fmt(estimate)} [{fmt(low)}, {fmt(high)}])"
    )
    parts = [rules.comparison_decide(t, f"k = {fmt(best.k)} vs P-T", offset=tol)]
    decide = (
        rules.decide_text([d for d in parts if d is not None]) if verdict == INCONCLUSIVE else ""
    )
    paper = TargetResult(
        target,
        verdict,
        text,
        f"paired bootstrap of P@k-T − P-T (same seeds); within {tol:g}: lower bound ≥ −{tol:g}",
        decide=decide,
    )
    reference = [p for p in points if p.reference == "P-T"]
    dead = at_chance(data, [r for p in reference for r in p.runs])
    if dead:
        paper = voided(paper, dead, "the final P-T learned nothing: there is no transfer to match")
    paper = p_guard(data, paper)
    return replace(paper, controlled=_c8_controlled(target, paper, good, data))


def _c8_controlled(
    target: str, paper: TargetResult, good: list[Point], data: StudyData
) -> TargetResult:
    """C8's controlled verdict: an early checkpoint as good as the final P that also beats the
    fine-tune of P's untrained init."""
    compared = [(p, p.vs_start) for p in good if isinstance(p.vs_start, Comparison)]
    if paper.verdict != HOLDS:
        result = replace(paper, statistic=f"as the paper's part: {paper.statistic}")
        return p_guard(data, result) if result.verdict != UNMEASURED else result
    if not compared:
        return TargetResult(target, UNMEASURED, "no P@0-T run of the same seed to compare with")
    beats = [p for p, t in compared if t.direction > 0]
    below = [p for p, t in compared if t.direction < 0]
    p, t = (
        next((pt for pt in compared if pt[0] in beats), None)
        or next((pt for pt in compared if pt[0] in below), None)
        or compared[0]
    )
    verdict = HOLDS if beats else (FAILS if len(below) == len(compared) else INCONCLUSIVE)
    _, test = rules.comparison(t)
    result = TargetResult(
        target,
        verdict,
        f"k = {fmt(p.k)} (as good as the final P-T) vs P@0-T: {test}",
        "paired bootstrap of P@k-T − P@0-T (same seeds)",
        decide=rules.decide_text(
            [d for d in [rules.comparison_decide(t, f"k = {fmt(p.k)} vs P@0-T")] if d is not None]
        )
        if verdict == INCONCLUSIVE
        else "",
    )
    return p_guard(data, result)


# ----------------------------------------------------------------------------------------------
# report


def trajectory_plot(e: TrajectoryEntry, title: str, final_pt: float | None = None) -> Figure | None:
    """Final P@k-T metric against the pre-training checkpoint k, and the P@k-T↔P-T barrier."""
    from transferscope.unitkit import figures as F

    # P-T's own point (fine-tuned from the final P) is the horizontal reference line instead.
    points = sorted(
        (p for p in e.points if finite(p.k) and p.reference != "P-T"), key=lambda p: p.k
    )
    if not points:
        return None
    ks = [p.k for p in points]
    fig, axes = F.subplots(1, 2, figsize=(9.0, 3.2))
    y = [p.final_metric if finite(p.final_metric) else np.nan for p in points]
    axes[0].plot(ks, y, color=F.COLORS["P@k"], marker="o", label="P@k-T")
    if final_pt is not None and finite(final_pt):
        axes[0].axhline(final_pt, color=F.COLORS["P-T"], linestyle="--", label="P-T (final P)")
    axes[0].set_ylabel(F.metric_label(e.metric_name))
    axes[0].set_title("final target metric")
    b = [p.barrier_metric if finite(p.barrier_metric) else np.nan for p in points]
    axes[1].plot(ks, b, color=F.COLORS["P@k"], marker="o", label="barrier P@k-T ↔ P-T (metric)")
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[1].set_ylabel("barrier height (metric units)")
    axes[1].set_title("barrier to P-T")
    for ax in axes:
        ax.set_xlabel("pre-training checkpoint k (epochs)")
        if min(ks) > 0 and max(ks) / min(ks) > 20:
            ax.set_xscale("log")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _versus(p: Point) -> str:
    t = p.vs_final
    if not isinstance(t, Comparison):
        return "-"
    return f"{fmt(t.estimate)} [{fmt(t.low)}, {fmt(t.high)}]"


def _render(page: Page, target: str, e: TrajectoryEntry) -> str:
    from transferscope.unitkit.page import esc, table

    points = sorted((p for p in e.points if finite(p.k)), key=lambda p: p.k)
    rows = [
        (
            fmt(p.k) + (" (early)" if p.early else ""),
            ", ".join(p.runs),
            fmt(p.final_metric, 4),
            _versus(p),
            "not reached" if p.reached and not any(p.reached) else fmt(p.epochs_to_threshold),
            fmt(p.barrier_metric),
            fmt(p.barrier_loss),
            "P-T (reference)" if p.reference == "P-T" else "P@k-T",
        )
        for p in points
    ]
    final_pt = final_pt_metric(e)
    if final_pt is None:
        curves = page.data.target_entry("curves", target)
        if isinstance(curves, CurvesEntry):
            final_pt = curves.pt.final_metric_mean
    return (
        f"<p>Final pre-training checkpoint: k = {esc(fmt(e.final_k))}.</p>"
        + table(
            (
                "k",
                "runs",
                "final metric",
                "− P-T, same seeds [95% interval]",
                f"epochs to {fmt(e.threshold)}",
                "barrier to P-T (metric)",
                "barrier to P-T (loss)",
                "runs are",
            ),
            rows,
            numeric=(2, 4, 5, 6),
        )
        + page.figure(
            trajectory_plot(e, f"Pre-training trajectory, target {target}", final_pt),
            f"trajectory-{target}",
            f"Final P@k-T metric and barrier to P-T against checkpoint k on {target}.",
        )
    )


# ----------------------------------------------------------------------------------------------
# the unit


@register
class Trajectory(Analysis, name="trajectory", version=3, section=sections.TRAJECTORY):
    """Fine-tuning from checkpoints of the pre-training trajectory (§3.5)."""

    claims = (C8,)

    def work(self, options: TrajectoryOptions, target: TargetSize) -> Work:
        # One path per P@k-T run to the P-T run of its seed (_point's matched pairs).
        if not options.barrier:
            return Work()
        view, label = target.study, target.label
        if view is None:
            return path_work(options, target, target.trajectory_runs)
        pts = {r.seed: r for r in view.independent("P-T", label)}
        runs = view.runs(kind="P@k-T", target=label, shuffle=None)
        ends = [
            ((r.id, "final"), (pts[r.seed].id, "final"), False)
            for r in runs
            if r.checkpoint is not None and r.seed in pts
        ]
        return line_work(options, target, ends)

    def compute(self, ctx: StudyContext, options: TrajectoryOptions) -> TrajectoryResult:
        specs = ctx.cfg.targets
        targets = {}
        for i, spec in enumerate(specs):

            def tick(done: int, total: int, what: str, i: int = i, label: str = spec.label) -> None:
                # Percent of every target together, in steps of one checkpoint (targets may
                # have different checkpoints).
                ctx.progress(100 * i + 100 * done // total, 100 * len(specs), f"{label}: {what}")

            tick(0, 1, "start")
            targets[spec.label] = _target(ctx, spec, options, tick)
        return TrajectoryResult.model_validate(
            {
                "targets": targets,
                "threshold_fraction": options.threshold_fraction,
                "early_fraction": options.early_fraction,
            }
        )

    def render(self, page: Page, target: str, entry: TrajectoryEntry) -> str:
        return _render(page, target, entry)


__all__ = [
    "Point",
    "Trajectory",
    "TrajectoryEntry",
    "TrajectoryOptions",
    "TrajectoryResult",
    "final_pt_metric",
]
