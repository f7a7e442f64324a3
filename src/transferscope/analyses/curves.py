"""Learning curves and block shuffling (Neyshabur et al. 2020, §3.1): claims C1 and C2.

Per target: P-T against RI-T test metric per epoch (mean and spread over seeds), the training
time each run needs to reach one threshold common to the runs compared (``threshold_fraction`` of
the way from chance to the lower final metric), the final metric compared on the same test
examples (sign test / paired bootstrap), and per block size or pixel shuffle the relative drop
100·(A(P-T) − A(RI-T))/A(P-T), the speed gap, and how much the drop shrinks against the
unshuffled runs (paired bootstrap). The math is in :mod:`transferscope.measures.curves`; method
notes in ``docs/methods.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from transferscope.errors import TransferscopeError
from transferscope.measures import curves as curves_lib
from transferscope.measures import statistics as stats
from transferscope.options import SpeedOptions
from transferscope.registry import register
from transferscope.unitkit import rules, sections
from transferscope.unitkit.context import StudyContext, guarded, skipped
from transferscope.unitkit.results import (
    AnalysisResult,
    Comparison,
    Entry,
    Model,
    TargetEntry,
)
from transferscope.unitkit.rules import INCONCLUSIVE, UNMEASURED, TargetResult, combine, finite, fmt
from transferscope.unitkit.unit import Analysis, claim

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from transferscope.data.base import Task
    from transferscope.studydir.plan import PlannedRun
    from transferscope.unitkit.page import Page
    from transferscope.unitkit.study_data import StudyData


class CurvesOptions(SpeedOptions):
    """Options of the curves analysis (see :class:`~transferscope.options.SpeedOptions`)."""


class Curve(Model):
    """Test metric per evaluated epoch over seeds (:func:`~transferscope.measures.curves.aggregate_curves`)."""

    epoch: list[float]
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    count: list[int]


class Side(Model):
    """One kind's runs (P-T or RI-T): final metrics and training time to the threshold."""

    runs: int
    final_metric: list[float | None]
    final_metric_mean: float | None
    epochs_to_threshold: list[float | None]
    steps_to_threshold: list[int | None]
    reached: list[bool]
    epochs_to_threshold_mean: float | None
    steps_to_threshold_mean: float | None
    curve: Curve | None = None


class Gap(Model):
    """P-T against RI-T on one version of the target data."""

    pt: Side = Field(alias="P-T")
    rit: Side = Field(alias="RI-T")
    chance: float
    fraction: float
    threshold: float | None
    relative_drop: float
    """100·(A(P-T) − A(RI-T))/A(P-T) of the mean final metrics (percent; NaN when undefined)."""
    speed_gap_epochs: float | None
    """RI-T's mean epochs to the threshold minus P-T's (positive: P-T faster)."""
    speed_gap_steps: float | None
    area_between: float | None
    runs: dict[Literal["P-T", "RI-T"], list[str]]


class ShuffleGap(Gap):
    """The gap on block-shuffled (or pixel-shuffled) target images; ``shuffle`` None: unshuffled."""

    shuffle: str | None
    block_size: int | None
    pixel: bool
    drop_test: Entry[Comparison] | None = None
    """drop(unshuffled) − drop(shuffled), points of percent, paired bootstrap."""
    gain_test: Entry[Comparison] | None = None
    """gain(unshuffled) − gain(shuffled) of the headroom gain
    (:func:`~transferscope.measures.curves.headroom_gain`), paired bootstrap."""


class ControlGap(Model):
    """P-T against the control P@0-T (fine-tunes of P's untrained init with P-T's recipe): what
    pre-training adds beyond a start and a recipe (the controlled comparison of C1)."""

    status: Literal["ok"] = "ok"
    pt: Side = Field(alias="P-T")
    control: Side = Field(alias="P@0-T")
    threshold: float | None
    final_test: Entry[Comparison]
    """P-T − P@0-T final test metric on the same examples."""
    runs: dict[Literal["P-T", "P@0-T"], list[str]]


class CurvesEntry(Gap, TargetEntry):
    """One target's curves result (unshuffled runs), with every shuffle."""

    metric_name: str | None
    final_test: Entry[Comparison]
    """P-T − RI-T final test metric on the same examples."""
    drop_interval: Entry[Comparison] | None = None
    """The relative drop (percent) with a paired bootstrap interval over test examples."""
    gain_interval: Entry[Comparison] | None = None
    """The headroom gain (A(P-T) − A(RI-T)) / (1 − A(RI-T)) with a paired bootstrap interval:
    the measure C11 ranks targets by, the same for accuracy and mean AUC."""
    chance_band: float | None = None
    """The top of the chance band on the target's test set (chance plus 2.576 standard errors):
    a side that ends below it does not set the speed bar."""
    control: Entry[ControlGap] | None = None
    """P-T against P@0-T; None when the plan has no P@0-T run."""
    shuffles: list[ShuffleGap]


class CurvesResult(AnalysisResult):
    targets: dict[str, Entry[CurvesEntry]] = Field(default_factory=dict)
    threshold_fraction: float | None = None


# ----------------------------------------------------------------------------------------------
# computing


def _final_test(
    ctx: StudyContext, task: str, pts: list[PlannedRun], rits: list[PlannedRun]
) -> dict[str, Any]:
    """P-T against RI-T final test metric on the same test examples (sign test or bootstrap)."""
    out_pt, y = ctx.outputs(pts)
    out_rit, y_rit = ctx.outputs(rits)
    if not np.array_equal(y, y_rit):
        raise TransferscopeError("P-T and RI-T were tested on other examples")
    result = stats.compare_final_metrics(task, out_pt, out_rit, y, seed=0)
    return {"status": "ok", **asdict(result)}


def _relative_drop(pt: np.ndarray, rit: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample where P-T scores 0: NaN
        return 100.0 * (pt - rit) / pt


def _headroom_gain(pt: np.ndarray, rit: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample where RI-T is perfect: NaN
        return (pt - rit) / (1.0 - rit)


MEASURES = {"drop": _relative_drop, "gain": _headroom_gain}


def _drop_bootstrap(
    ctx: StudyContext,
    task: str,
    groups: list[list[PlannedRun]],
    method: str,
    measure: str = "drop",
) -> dict[str, Any]:
    """A paired bootstrap over test examples of the relative drop (or ``measure`` "gain", the
    headroom gain) of (P-T, RI-T) run groups: of one pair of groups, or the first pair's minus
    the second's.

    Shuffled test images are the same examples in the same order (a fixed re-arrangement of each
    image's pixels), so every group is resampled with the same weights.
    """
    outputs = [ctx.outputs(runs) for runs in groups]
    y = outputs[0][1]
    if any(not np.array_equal(o[1], y) for o in outputs):
        raise TransferscopeError("the shuffled runs were tested on other examples")
    metrics = [[stats.metric_under_weights(task, o, y) for o in g[0]] for g in outputs]

    def side(i: int, w: np.ndarray) -> np.ndarray:
        return np.mean([f(w) for f in metrics[i]], axis=0)

    of = MEASURES[measure]

    def statistic(w: np.ndarray) -> np.ndarray:
        value = of(side(0, w), side(1, w))
        if len(groups) == 4:
            with np.errstate(invalid="ignore"):
                value = value - of(side(2, w), side(3, w))
        return value

    result = stats.bootstrap_interval(statistic, len(y), seed=0, method=method)
    return {"status": "ok", **asdict(result)}


def _drop_test(
    ctx: StudyContext,
    task: str,
    plain: tuple[list[PlannedRun], list[PlannedRun]],
    shuffled: tuple[list[PlannedRun], list[PlannedRun]],
) -> dict[str, Any]:
    """How much the relative drop shrinks under a shuffle, with a paired bootstrap interval:
    drop(unshuffled) - drop(shuffled) in percent, positive when shuffling shrinks P-T's edge."""
    return _drop_bootstrap(
        ctx,
        task,
        [*plain, *shuffled],
        "relative drop unshuffled − shuffled (points of %)",
    )


def _drop_interval(
    ctx: StudyContext, task: str, pts: list[PlannedRun], rits: list[PlannedRun]
) -> dict[str, Any]:
    """The unshuffled relative drop 100·(A(P-T) − A(RI-T))/A(P-T) with its bootstrap interval."""
    return _drop_bootstrap(ctx, task, [pts, rits], "relative drop (%)")


def _gain_interval(
    ctx: StudyContext, task: str, pts: list[PlannedRun], rits: list[PlannedRun]
) -> dict[str, Any]:
    """The headroom gain (A(P-T) − A(RI-T))/(1 − A(RI-T)) with its bootstrap interval: the
    test-set noise claim C11 ranks targets against."""
    return _drop_bootstrap(ctx, task, [pts, rits], "headroom gain", measure="gain")


def _chance_floor(ctx: StudyContext, task: Task, outputs: int, pts: list[PlannedRun]) -> float:
    """The top of the chance band on the target's test set (as a run's chance-level flag)."""
    from transferscope.training.metrics import chance_level

    _, y = ctx.outputs(pts[:1])
    positives = [int(p) for p in np.asarray(y).sum(0)] if task == "multilabel" else None
    chance = curves_lib.chance_metric(task, outputs)
    check = chance_level(task, outputs, len(y), chance, positives=positives)
    return check.chance + check.band


def _control(
    ctx: StudyContext,
    task: str,
    pts: list[PlannedRun],
    controls: list[PlannedRun],
    chance: float,
    fraction: float,
    floor: float | None,
) -> dict[str, Any]:
    """P-T against the P@0-T runs: speed to a common bar and the final metric on the same
    test examples."""
    gap = curves_lib.compare_curves(
        ctx.metrics_rows(pts), ctx.metrics_rows(controls), chance, fraction,
        with_curves=False, floor=floor,
    )  # fmt: skip
    return {
        "status": "ok",
        "P-T": gap["P-T"],
        "P@0-T": gap["RI-T"],
        "threshold": gap["threshold"],
        "final_test": guarded(_final_test, ctx, task, pts, controls),
        "runs": {"P-T": [r.id for r in pts], "P@0-T": [r.id for r in controls]},
    }


def _target(ctx: StudyContext, spec: Any, fraction: float) -> dict[str, Any]:
    target = spec.label
    pts, rits = ctx.independent("P-T", target), ctx.independent("RI-T", target)
    if not pts or not rits:
        return skipped("the plan has no unshuffled P-T and RI-T runs")
    pts = [r for r in pts if ctx.done(r)]
    rits = [r for r in rits if ctx.done(r)]
    if not pts or not rits:
        return skipped("no finished P-T or no finished RI-T run")
    info = ctx.cache.get(spec).info
    chance = curves_lib.chance_metric(info.task, info.num_outputs)
    try:
        floor: float | None = _chance_floor(ctx, info.task, info.num_outputs, pts)
    except TransferscopeError:
        floor = None
    out = curves_lib.compare_curves(
        ctx.metrics_rows(pts), ctx.metrics_rows(rits), chance, fraction, floor=floor
    )
    out["chance_band"] = floor
    out["runs"] = {"P-T": [r.id for r in pts], "RI-T": [r.id for r in rits]}
    out["metric_name"] = ctx.metric_name(pts[0])
    out["final_test"] = guarded(_final_test, ctx, info.task, pts, rits)
    out["drop_interval"] = guarded(_drop_interval, ctx, info.task, pts, rits)
    out["gain_interval"] = guarded(_gain_interval, ctx, info.task, pts, rits)
    controls = [
        r
        for r in ctx.runs(kind="P@k-T", target=target, shuffle=None)
        if r.checkpoint == 0 and ctx.done(r)
    ]
    if controls:
        out["control"] = guarded(_control, ctx, info.task, pts, controls, chance, fraction, floor)
    by_shuffle: dict[str | None, tuple[list, list]] = {}
    shuffle_runs: dict[str | None, tuple[list[PlannedRun], list[PlannedRun]]] = {}
    labels = sorted({r.shuffle for r in ctx.plan.select(target=target) if r.shuffle})
    for label in [None, *labels]:
        s_pt = [r for r in ctx.runs(kind="P-T", target=target, shuffle=label) if ctx.done(r)]
        s_rit = [
            r
            for r in ctx.runs(kind="RI-T", target=target, shuffle=label)
            if not r.same_init_as and ctx.done(r)
        ]
        if label is not None and not (s_pt and s_rit):
            continue
        by_shuffle[label] = (ctx.metrics_rows(s_pt), ctx.metrics_rows(s_rit))
        shuffle_runs[label] = (s_pt, s_rit)
    gaps = curves_lib.shuffle_gaps(by_shuffle, chance, fraction, floor=floor)
    for gap in gaps:
        s_pt, s_rit = shuffle_runs[gap["shuffle"]]
        gap["runs"] = {"P-T": [r.id for r in s_pt], "RI-T": [r.id for r in s_rit]}
        if gap["shuffle"] is not None:
            gap["drop_test"] = guarded(_drop_test, ctx, info.task, (pts, rits), (s_pt, s_rit))
            gap["gain_test"] = guarded(
                _drop_bootstrap, ctx, info.task, [pts, rits, s_pt, s_rit],
                "headroom gain unshuffled − shuffled", "gain",
            )  # fmt: skip
    out["shuffles"] = gaps
    return {"status": "ok", **out}


# ----------------------------------------------------------------------------------------------
# claims


def _speed_direction(pt: Side, rit: Side, margin: float = 0.0) -> tuple[int, str]:
    """P-T faster (+1), slower (-1) or within the spread (0), from each run's epochs to the
    common threshold (a run that never reached it counts as never): the ranges over seeds must
    not overlap, and be more than ``margin`` epochs apart."""
    a = [math.inf if e is None else float(e) for e in pt.epochs_to_threshold]
    b = [math.inf if e is None else float(e) for e in rit.epochs_to_threshold]
    if not a or not b:
        return 0, "no speeds"
    text = f"epochs {_list(a)} vs {_list(b)}"
    if max(a) + margin < min(b):
        return 1, text
    if min(a) > max(b) + margin:
        return -1, text
    return 0, text


def _speed_decide(pt: Side, other: Side, name: str) -> rules.Decide:
    """What would separate two sides' epochs to the bar: the seeds per side at which a t-test
    on them detects the observed gap against their spread across seeds."""
    from transferscope.measures.statistics import pooled_sd, seeds_to_decide

    a = [float(e) for e in pt.epochs_to_threshold if e is not None]
    b = [float(e) for e in other.epochs_to_threshold if e is not None]
    if not a or not b:
        return rules.Decide(f"speed vs {name}", never="a side never reaches the bar")
    gap = float(np.mean(b) - np.mean(a))
    sd, _ = pooled_sd([a, b])
    where = f"speed vs {name}: {fmt(gap, 2)} epochs apart"
    if not sd:
        return rules.Decide(f"{where}, no spread across seeds yet", seeds=max(len(a), len(b)) + 1)
    where += f" ± {fmt(sd, 2)} across seeds"
    seeds = seeds_to_decide(gap, sd, lambda s: (s, s), min_seeds=max(len(a), 2))
    if seeds is None:
        return rules.Decide(where, never="more seeds would not decide it")
    return rules.Decide(where, seeds=seeds)


def _evaluation_step(e: CurvesEntry) -> float:
    """Epochs between two evaluations of the unshuffled runs (1 when unknown)."""
    epochs = sorted(
        set((e.pt.curve.epoch if e.pt.curve else []) + (e.rit.curve.epoch if e.rit.curve else []))
    )
    gaps = np.diff(epochs)
    return float(np.median(gaps)) if len(gaps) else 1.0


def _list(xs: Sequence[float]) -> str:
    return ", ".join("not reached" if math.isinf(x) else fmt(x, 2) for x in xs)


def _better_and_faster(
    target: str,
    final_test: Any,
    pt: Side,
    other: Side,
    threshold: float | None,
    name: str,
) -> TargetResult:
    """P-T against ``other`` (RI-T, or the control P@0-T): the final metric on the same test
    examples beyond noise, and every seed at the common bar sooner. A side at chance is data:
    the bar comes from the side that learned, and a side that never reaches it is slower."""
    m_pt, m_other = pt.final_metric_mean, other.final_metric_mean
    if not (finite(m_pt) and finite(m_other)):
        return TargetResult(target, UNMEASURED, f"final metrics of P-T or {name} missing")
    better, test = rules.comparison(final_test)
    if better is None:
        return TargetResult(target, UNMEASURED, f"final test vs {name} {test}")
    if not finite(threshold):
        faster, speeds = 0, "no side learned: no speed bar above chance"
    else:
        faster, speeds = _speed_direction(pt, other)
    text = f"final {fmt(m_pt)} vs {name} {fmt(m_other)}; to {fmt(threshold)}: {speeds}"
    verdict = combine(better, faster)
    decide: list[Any] = []
    if verdict == INCONCLUSIVE:
        if better == 0:
            decide.append(rules.comparison_decide(final_test, f"final vs {name}"))
        if faster == 0 and finite(threshold):
            decide.append(_speed_decide(pt, other, name))
    return TargetResult(
        target,
        verdict,
        text,
        f"final: {test}; speed: ranges over seeds",
        decide=rules.decide_text(decide),
    )


@claim(
    "C1",
    "P-T reaches a better final metric than RI-T and gets there faster.",
    "P-T's final test metric beats RI-T's beyond test-set noise (sign test on the "
    "examples the two disagree on, McNemar's test; paired bootstrap for mean AUC), and "
    "every P-T seed reaches the common threshold (chance + 0.9 × (lower final − chance), "
    "from the sides above the chance band) at an earlier evaluation than every RI-T seed; a "
    "run that never reaches it is slower. A run at chance level is data, not noise.",
    controlled="the same test against P@0-T (fine-tunes of P's untrained init with P-T's "
    "recipe) instead of RI-T: what pre-training adds beyond a start and a recipe; P must have "
    "learned.",
    meaning="P-T beats RI-T, but a fine-tune of P's untrained init with P-T's recipe does as "
    "well: the gain comes from the fine-tuning recipe or the start, not from what "
    "pre-training learned.",
    guards_chance=True,
    short="P-T better and faster than RI-T",
)
def C1(e: CurvesEntry, target: str, data: StudyData) -> TargetResult:
    paper = _better_and_faster(target, e.final_test, e.pt, e.rit, e.threshold, "RI-T")
    c = e.control
    if isinstance(c, ControlGap):
        controlled = rules.p_guard(
            data, _better_and_faster(target, c.final_test, c.pt, c.control, c.threshold, "P@0-T")
        )
    else:
        why = getattr(c, "reason", None) or "the plan has no P@0-T run (control_pair)"
        controlled = TargetResult(target, UNMEASURED, f"no control: {why}")
    return replace(paper, controlled=controlled)


def smallest_shuffle(e: CurvesEntry) -> ShuffleGap | None:
    """The shuffle C2 and C11 compare with unshuffled: the smallest block, else the pixel one."""
    blocks = [s for s in e.shuffles if s.shuffle and s.block_size is not None]
    if blocks:
        return min(blocks, key=lambda s: s.block_size or 0)
    return next((s for s in e.shuffles if s.pixel), None)


@claim(
    "C2",
    "Block shuffling shrinks P-T's advantage, but P-T still trains faster at the smallest block.",
    "the relative drop 100·(A(P-T) − A(RI-T))/A(P-T) at the smallest block (pixel "
    "shuffle if no block) is smaller than unshuffled, beyond a paired bootstrap 95% "
    "interval, and at that block P-T reaches the common threshold at an earlier "
    "evaluation than RI-T at every shuffle seed (more than one evaluation earlier when each "
    "side is a single run: one evaluation is within seed noise); P must have learned.",
    guards_chance=True,
    short="shuffling shrinks P-T's edge, not its speed",
)
def C2(e: CurvesEntry, target: str, data: StudyData) -> TargetResult:
    base: Gap = next((s for s in e.shuffles if s.shuffle is None), e)
    small = smallest_shuffle(e)
    if small is None:
        return TargetResult(target, UNMEASURED, "no shuffled runs")
    d0, d1 = base.relative_drop, small.relative_drop
    if not (finite(d0) and finite(d1)):
        return TargetResult(target, UNMEASURED, "relative drop missing")
    label = small.shuffle
    shrinks, test = rules.comparison(small.drop_test)
    # One run per side (one shuffle seed) shows no seed spread: a single evaluation's gap is
    # within it (the unshuffled seeds of one study differ by that much), so it takes more.
    single = min(small.pt.runs, small.rit.runs) < 2
    margin = _evaluation_step(e) if single else 0.0
    if not finite(small.threshold):
        faster, speeds = 0, "no side learned: no speed bar"
    else:
        faster, speeds = _speed_direction(small.pt, small.rit, margin)
    text = f"drop {fmt(d0)}% unshuffled vs {fmt(d1)}% at {label}; speed at {label}: {speeds}"
    resolution = "more than one evaluation apart (one run per side)" if single else "ranges apart"
    verdict = combine(shrinks, faster)
    decide: list[Any] = []
    if verdict == INCONCLUSIVE:
        if shrinks == 0:
            decide.append(rules.comparison_decide(small.drop_test, "drop shrinking"))
        if faster == 0 and finite(small.threshold):
            decide.append(_speed_decide(small.pt, small.rit, f"RI-T at {label}"))
    result = TargetResult(
        target,
        verdict,
        text,
        f"drop: {test}; speed: {resolution}",
        decide=rules.decide_text(decide),
    )
    return rules.p_guard(data, result)


# ----------------------------------------------------------------------------------------------
# report


def shuffle_label(s: ShuffleGap) -> str:
    if s.shuffle is None:
        return "none"
    return "pixel *" if s.pixel else f"block {s.block_size}"


def learning_curves(e: CurvesEntry, title: str) -> Figure | None:
    """Test metric per epoch, P-T against RI-T: mean over seeds, band from min to max."""
    from transferscope.unitkit import figures as F

    fig, ax = F.subplots(figsize=(5.0, 3.2))
    drawn = False
    for kind, side in (("P-T", e.pt), ("RI-T", e.rit)):
        curve = side.curve
        if curve is None or not curve.epoch or len(curve.epoch) != len(curve.mean):
            continue
        x = np.asarray(curve.epoch, dtype=float)
        ax.plot(
            x,
            np.asarray(curve.mean, dtype=float),
            color=F.COLORS[kind],
            marker="o",
            markersize=3,
            label=f"{kind} (mean of {side.runs} seeds)",
        )
        if len(curve.min) == len(x) == len(curve.max):
            ax.fill_between(x, curve.min, curve.max, color=F.COLORS[kind], alpha=0.18, linewidth=0)
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel("training epoch")
    ax.set_ylabel(F.metric_label(e.metric_name))
    ax.set_title(title)
    ax.legend(title="band: min–max over seeds")
    return fig


def shuffle_bars(e: CurvesEntry, title: str) -> Figure | None:
    """Relative drop (%) and speed gap (epochs) per block size / pixel shuffle."""
    from transferscope.unitkit import figures as F

    if len(e.shuffles) < 2:  # only the unshuffled point: nothing to compare
        return None
    labels = [shuffle_label(s) for s in e.shuffles]
    drops = [s.relative_drop if finite(s.relative_drop) else 0.0 for s in e.shuffles]
    gaps = [
        s.speed_gap_epochs if s.speed_gap_epochs is not None and finite(s.speed_gap_epochs) else 0.0
        for s in e.shuffles
    ]
    fig, axes = F.subplots(1, 2, figsize=(8.0, 3.0))
    x = np.arange(len(labels))
    for ax, values, ylabel in (
        (axes[0], drops, "relative drop 100·(P-T − RI-T)/P-T (%)"),
        (axes[1], gaps, "speed gap (epochs, RI-T − P-T)"),
    ):
        colors = [F.COLORS["P-T"] if v >= 0 else F.COLORS["RI-T"] for v in values]
        ax.bar(x, values, color=colors, width=0.65)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.set_xlabel("shuffle of the target images")
        ax.set_ylabel(ylabel)
    axes[0].set_title("accuracy benefit of P-T")
    axes[1].set_title("optimisation speed benefit of P-T")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# the unit


@register
class Curves(Analysis, name="curves", version=4, section=sections.FEATURE_REUSE):
    """Learning curves, speed to a common threshold, block and pixel shuffling (§3.1)."""

    claims = (C1, C2)

    def compute(self, ctx: StudyContext, options: CurvesOptions) -> CurvesResult:
        fraction = options.threshold_fraction
        targets = {}
        for i, spec in enumerate(ctx.cfg.targets):
            ctx.progress(i, len(ctx.cfg.targets), f"target {spec.label}")
            targets[spec.label] = _target(ctx, spec, fraction)
        return CurvesResult.model_validate({"targets": targets, "threshold_fraction": fraction})

    def render(self, page: Page, target: str, e: CurvesEntry) -> str:
        from transferscope.unitkit.page import Raw, esc, table

        out = page.figure(
            learning_curves(e, f"Learning curves, target {target}"),
            f"curves-{target}",
            f"Test metric per epoch of P-T and RI-T on {target} (mean over seeds, band min–max).",
        )
        out += page.figure(
            shuffle_bars(e, f"Block shuffling, target {target}"),
            f"shuffle-{target}",
            f"Relative drop and speed gap per shuffle on {target}.",
        )
        rows = [
            (
                shuffle_label(s),
                fmt(s.pt.final_metric_mean, 4),
                fmt(s.rit.final_metric_mean, 4),
                fmt(s.relative_drop),
                fmt(s.speed_gap_epochs),
            )
            for s in e.shuffles
        ]
        if rows:
            out += table(
                ("shuffle", "P-T final", "RI-T final", "relative drop (%)", "speed gap (epochs)"),
                rows,
                numeric=(1, 2, 3, 4),
            )
        if finite(e.threshold):
            out += (
                '<p class="small">Speed: epochs until a run first reaches '
                f"{esc(fmt(e.threshold))}, one bar for both kinds, {esc(fmt(e.fraction))} of the "
                f"way from chance ({esc(fmt(e.chance))}) to the lower of the two final metrics "
                "(each shuffle has its own bar). Speed gap: RI-T's mean minus P-T's "
                "(positive: P-T is faster); '-' when a run never reached it.</p>"
            )
        test = e.final_test
        if isinstance(test, Comparison):
            shown = (
                f", p = {test.p_value:.2g}"
                if finite(test.p_value)
                else f" [{esc(fmt(test.low))}, {esc(fmt(test.high))}]"
            )
            out += Raw(
                f'<p class="small">Final metric, P-T − RI-T: {esc(fmt(test.estimate))}{shown} '
                f"({esc(test.method)}).</p>"
            ).html
        return out


__all__ = ["Curves", "CurvesEntry", "CurvesOptions", "CurvesResult", "smallest_shuffle"]
