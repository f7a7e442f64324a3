"""Barriers after permutation alignment (weight matching; beyond the paper): claim C9.

Per target and pair (P-T/P-T, RI-T/RI-T, P-T/RI-T), B's hidden units are permuted to match A's
(weight matching, Ainsworth et al. 2022, "Git Re-Basin"; :mod:`transferscope.measures.alignment`)
and the straight line from A to the permuted B is measured like the plain one (§3 of Neyshabur
et al. 2020), which is stored beside it: a barrier that vanishes after alignment separated two
permutations of one basin.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from transferscope.measures.alignment import align
from transferscope.measures.interpolation import interpolate
from transferscope.registry import register
from transferscope.unitkit.basins import BasinPair, BasinUnit, PathStyle
from transferscope.unitkit.context import StudyContext
from transferscope.unitkit.model_paths import (
    Line,
    PathOptions,
    PathsEntry,
    PathsResult,
    SkippedPair,
    line_work,
    measure_pairs,
    pair_ends,
    pair_paths,
    path_barriers,
    path_work,
)
from transferscope.unitkit.pairs import study_pairs
from transferscope.unitkit.results import Entry, Model
from transferscope.unitkit.rules import (
    BARRIER_TOLERANCE,
    UNMEASURED,
    Decide,
    TargetResult,
    barrier_state,
    combine,
    decide_text,
    fmt,
    learned_barriers,
    mean,
    without_learned_pairs,
)
from transferscope.unitkit.unit import TargetSize, Work, claim

if TYPE_CHECKING:  # pragma: no cover
    from transferscope.studydir.plan import PlannedRun
    from transferscope.unitkit.study_data import StudyData


class AlignmentOptions(PathOptions):
    """Barriers after permutation alignment (weight matching), next to the plain ones."""

    max_sweeps: int = Field(default=100, ge=1, description="coordinate-descent sweeps at most")


class AlignmentStats(Model):
    """How far alignment moved B (:meth:`~transferscope.measures.alignment.AlignmentResult.to_dict`)."""

    distance_before: float
    """L2 distance ‖θ_A − θ_B‖ over every weight before alignment (weight units; BatchNorm's
    running statistics, which follow their units but are not matched, left out)."""
    distance_after: float
    """The same after permuting B (never larger)."""
    sweeps: int
    units_moved: dict[str, int]
    """Permutation name -> how many of its units left their place."""


class AlignedPair(BasinPair):
    """One pair: the plain straight line, the line to the permuted B, and the alignment."""

    aligned: Line
    alignment: AlignmentStats


AlignmentPairEntry = Annotated[AlignedPair | SkippedPair, Field(discriminator="status")]


class AlignmentEntry(PathsEntry):
    pairs: list[AlignmentPairEntry]


class AlignmentResult(PathsResult):
    targets: dict[str, Entry[AlignmentEntry]] = Field(default_factory=dict)
    method: str = "weight matching (Git Re-Basin)"


def _measure(ctx: StudyContext, opts: AlignmentOptions, a: PlannedRun, b: PlannedRun) -> dict:
    p = pair_paths(ctx, opts, a, b)
    aligned = align(p.model, p.state_a, p.state_b, seed=b.seed, max_sweeps=opts.max_sweeps)
    permuted = interpolate(p.model, p.state_a, aligned.state, p.test, opts.num_points, **p.options)
    return {
        "linear": p.linear,
        "aligned": Line.of(permuted),
        "alignment": aligned.to_dict(),
    }


@claim(
    "C9",
    "Beyond the paper: RI-T barriers shrink after permutation alignment (Git Re-Basin).",
    "the mean RI-T/RI-T barrier (metric) on the straight line after permuting B's units to "
    "match A (weight matching) is below the plain barrier by more than twice the "
    "standard error of the difference and "
    f"{BARRIER_TOLERANCE:g}; not measured when there is no plain barrier to shrink; pairs "
    "holding a run at chance level are left out.",
    guards_chance=True,
    short="RI-T barriers shrink after alignment",
)
def C9(e: AlignmentEntry, target: str, data: StudyData) -> TargetResult:
    linear, dead = learned_barriers(e.pairs, "RI-T/RI-T", e.examples, data, lambda p: p.linear)
    aligned, _ = learned_barriers(e.pairs, "RI-T/RI-T", e.examples, data, lambda p: p.aligned)
    if not linear or not aligned:
        return without_learned_pairs(target, "aligned RI-T/RI-T", dead)
    lin, ali = mean(v for v, _ in linear), mean(v for v, _ in aligned)
    assert lin is not None and ali is not None
    noise = math.hypot(max(n for _, n in linear), max(n for _, n in aligned))
    text = f"RI-T/RI-T {fmt(lin)} → {fmt(ali)} aligned"
    for other in ("P-T/RI-T", "P-T/P-T"):
        a = mean(path_barriers(e.pairs, other, lambda p: p.linear))
        b = mean(path_barriers(e.pairs, other, lambda p: p.aligned))
        if a is not None and b is not None:
            text += f"; {other} {fmt(a)} → {fmt(b)}"
    stat = f"shrinks by more than 2 s.e. of the difference ({fmt(noise, 2)})"
    if barrier_state(lin, max(n for _, n in linear)) <= 0:
        return TargetResult(target, UNMEASURED, text + " (no linear barrier to shrink)", stat)
    change = lin - ali
    direction = 1 if change > max(noise, BARRIER_TOLERANCE) else (-1 if change < -noise else 0)
    decide = ""
    if direction == 0:
        from transferscope.measures.statistics import examples_to_decide

        # noise = 2 s.e. of the difference: the per-example spread is noise / 2 × sqrt(n).
        sd = noise / 2 * math.sqrt(e.examples) if e.examples else 0.0
        n = examples_to_decide(change, sd) if sd > 0 else None
        where = f"shrinks by {fmt(change)} ± {fmt(noise / 2, 2)}"
        decide = decide_text(
            [
                Decide(where, examples=n)
                if n is not None
                else Decide(where, never="more test examples would not decide it")
            ]
        )
    return TargetResult(target, combine(direction), text, stat, decide=decide)


@register
class Alignment(BasinUnit, name="alignment", version=3):
    """Barriers after permutation alignment (weight matching; beyond the paper)."""

    path = PathStyle("aligned", "line after alignment", "#009E73", "--")
    column = "distance to A before → after alignment"
    claims = (C9,)

    def work(self, options: AlignmentOptions, target: TargetSize) -> Work:
        # Every pair measure_pairs measures (three for one seed pair without a plan): the
        # straight line, shared, and the line to the permuted B.
        view = target.study
        if view is None:
            return path_work(options, target, 2 * 3)
        pairs = study_pairs(view, target.label)
        return line_work(options, target, pair_ends(pairs)) + path_work(options, target, len(pairs))

    def compute(self, ctx: StudyContext, options: AlignmentOptions) -> AlignmentResult:
        targets = measure_pairs(ctx, options, lambda a, b: _measure(ctx, options, a, b))
        return AlignmentResult.model_validate({"targets": targets})

    def cell(self, pair: AlignedPair) -> str:
        s = pair.alignment
        return f"{fmt(s.distance_before)} → {fmt(s.distance_after)}"


__all__ = ["AlignedPair", "Alignment", "AlignmentEntry", "AlignmentOptions", "AlignmentResult"]
