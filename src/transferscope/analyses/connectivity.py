"""Non-linear low-loss paths: quadratic Bezier curves (beyond the paper): claim C10.

Per target and chosen pair (``pairs``: RI-T/RI-T and P-T/RI-T by default), the middle control
point of a quadratic Bezier curve between the two final models is trained on the target's
training split (Garipov et al. 2018; :mod:`transferscope.measures.connectivity`), then the test
metric and loss are measured along the curve exactly like the straight line (§3 of Neyshabur et
al. 2020), which is stored beside it: a curve without a barrier joins models that the straight
line separates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from transferscope.measures.connectivity import curve_summary, evaluate_curve, fit_curve
from transferscope.registry import register
from transferscope.unitkit import model_paths
from transferscope.unitkit.basins import BasinPair, BasinUnit, PathStyle
from transferscope.unitkit.context import StudyContext
from transferscope.unitkit.model_paths import (
    Line,
    PathOptions,
    PathsEntry,
    PathsResult,
    SkippedPair,
)
from transferscope.unitkit.pairs import study_pairs
from transferscope.unitkit.results import Entry
from transferscope.unitkit.rules import (
    BARRIER_TOLERANCE,
    TargetResult,
    barrier_result,
    fmt,
    learned_barriers,
    mean,
    without_learned_pairs,
)
from transferscope.unitkit.unit import TargetSize, Work, claim

if TYPE_CHECKING:  # pragma: no cover
    from transferscope.studydir.plan import PlannedRun
    from transferscope.unitkit.study_data import StudyData

CurvePair = Literal["RI-T/RI-T", "P-T/RI-T", "P-T/P-T"]


def _default_pairs() -> list[CurvePair]:
    return ["RI-T/RI-T", "P-T/RI-T"]


class ConnectivityOptions(PathOptions):
    """Quadratic Bezier curves trained between two models (non-linear low-loss paths)."""

    pairs: list[CurvePair] = Field(default_factory=_default_pairs)
    epochs: int = Field(default=10, ge=0, description="curve training epochs")
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_train_examples: int | None = Field(
        default=None, ge=1, description="train the curve on a fixed random subset of this size"
    )
    num_points: int = Field(default=11, ge=2, description="points along the curve evaluated")


class CurvedPair(BasinPair):
    """One pair: the straight line, the trained curve measured at t = linspace(0, 1), and how
    the curve trained. (No wall time: a result holds only what the same study computes again
    byte for byte.)"""

    curve: Line
    train_loss: list[float]
    """Mean training loss per curve epoch (nats)."""
    control_offset: float
    """L2 distance of the trained control point from the straight line's midpoint."""


class ConnectivityEntry(PathsEntry):
    pairs: list[Annotated[CurvedPair | SkippedPair, Field(discriminator="status")]]


class ConnectivityResult(PathsResult):
    targets: dict[str, Entry[ConnectivityEntry]] = Field(default_factory=dict)
    curve: str = "quadratic Bezier (Garipov et al. 2018)"


def _measure(
    ctx: StudyContext, opts: ConnectivityOptions, a: PlannedRun, b: PlannedRun
) -> dict[str, Any]:
    p = model_paths.pair_paths(ctx, opts, a, b)
    curve = fit_curve(
        p.model, p.state_a, p.state_b, p.splits.train,
        task=p.splits.info.task, epochs=opts.epochs, batch_size=opts.batch_size,
        lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay,
        max_examples=opts.max_train_examples, seed=b.seed, device=ctx.device,
    )  # fmt: skip
    along = evaluate_curve(p.model, curve, p.test, opts.num_points, **p.options)
    return {
        "linear": p.linear,
        "curve": Line.of(along),
        **curve_summary(curve),
    }


@claim(
    "C10",
    "Beyond the paper: a non-linear low-loss path joins two RI-T models (Garipov et al. 2018).",
    f"every RI-T/RI-T trained quadratic Bezier curve has a barrier (metric) ≤ {BARRIER_TOLERANCE:g}; "
    f"does not hold when one exceeds {BARRIER_TOLERANCE:g} by more than twice its standard error; "
    "pairs holding a run at chance level are left out.",
    guards_chance=True,
    short="a trained curve joins two RI-T models",
)
def C10(e: ConnectivityEntry, target: str, data: StudyData) -> TargetResult:
    linear = model_paths.path_barriers(e.pairs, "RI-T/RI-T", lambda p: p.linear)
    curves, dead = learned_barriers(e.pairs, "RI-T/RI-T", e.examples, data, lambda p: p.curve)
    if not curves:
        return without_learned_pairs(target, "RI-T/RI-T curve", dead)
    worst = max(v for v, _ in curves)
    text = f"RI-T/RI-T curve barrier max {fmt(worst)} (linear {fmt(mean(linear))})"
    pt_rit = model_paths.path_barriers(e.pairs, "P-T/RI-T", lambda p: p.curve)
    if pt_rit:
        text += f"; P-T/RI-T curve max {fmt(max(pt_rit))}"
    stat = f"flat: ≤ {BARRIER_TOLERANCE:g}; a barrier: > {BARRIER_TOLERANCE:g} + 2 s.e."
    return barrier_result(target, curves, [], text, stat, e.examples)


@register
class Connectivity(BasinUnit, name="connectivity", version=3):
    """Non-linear low-loss paths: quadratic Bezier curves (beyond the paper)."""

    claims = (C10,)
    path = PathStyle("curve", "trained Bezier curve", "#CC79A7", "-.")
    column = "curve's control point off the line (L2)"

    def work(self, options: ConnectivityOptions, target: TargetSize) -> Work:
        # Per pair of options.pairs the plan has (one each without a plan): the straight line,
        # shared, the curve's training steps and its points.
        o = options
        n = target.cap(o.max_train_examples, target.train)
        # Each step builds the curve's state at its t and swaps it in.
        fit = Work(train=o.epochs * n, calls=o.epochs * -(-n // o.batch_size))
        if target.study is None:
            return (model_paths.path_work(o, target, 2) + fit) * len(o.pairs)
        pairs = [p for p in study_pairs(target.study, target.label) if p[0] in o.pairs]
        curves = (model_paths.path_work(o, target, 1) + fit) * len(pairs)
        return model_paths.line_work(o, target, model_paths.pair_ends(pairs)) + curves

    def compute(self, ctx: StudyContext, options: ConnectivityOptions) -> ConnectivityResult:
        targets = model_paths.measure_pairs(
            ctx,
            options,
            lambda a, b: _measure(ctx, options, a, b),
            keep=lambda name: name in options.pairs,
        )
        return ConnectivityResult.model_validate({"targets": targets})

    def cell(self, pair: CurvedPair) -> str:
        return fmt(pair.control_offset)


__all__ = [
    "Connectivity",
    "ConnectivityEntry",
    "ConnectivityOptions",
    "ConnectivityResult",
    "CurvePair",
    "CurvedPair",
]
