"""Performance barriers along straight lines between models (Neyshabur et al. 2020, §3.3): C6.

Per target, the straight line θ(λ) = (1 − λ)·θ_A + λ·θ_B between the final weights of every
pair of the catalogue (P-T/P-T, RI-T/RI-T, P-T/RI-T, the same-init RI-T pair and the control
pair), between P and each P-T (body only: P's head answers the source's question) and between
each trajectory checkpoint P@k and the first P-T, measured on the target's test split
(BatchNorm statistics recomputed at every λ when the model has them). The math is in
:mod:`transferscope.measures.interpolation`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from transferscope.errors import TransferscopeError
from transferscope.registry import register
from transferscope.training import checkpoints as ckpt
from transferscope.unitkit import sections
from transferscope.unitkit.context import StudyContext, Weights
from transferscope.unitkit.model_paths import (
    Line,
    PathOptions,
    PathsEntry,
    PathsResult,
    line_work,
    pair_ends,
    path_work,
    paths_entry,
)
from transferscope.unitkit.pairs import CONTROL_PAIR, PairName, study_pairs
from transferscope.unitkit.results import AnalysisResult, Entry, Model, Skipped
from transferscope.unitkit.rules import (
    BARRIER_TOLERANCE,
    TargetResult,
    barrier_result,
    finite,
    fmt,
    learned_barriers,
    p_guard,
)
from transferscope.unitkit.tables import Table, barrier_rows
from transferscope.unitkit.unit import Analysis, TargetSize, Work, claim

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from transferscope.studydir.plan import PlannedRun
    from transferscope.unitkit.page import Page
    from transferscope.unitkit.study_data import StudyData


class InterpolationOptions(PathOptions):
    """The straight line between two solutions (§3.3)."""


class PathRef(Model):
    """Which line a pair entry measures: the pair, the checkpoint k of P@k pairs (None for
    the others), and the two weight files' runs."""

    pair: PairName
    k: float | None
    runs: list[str]


class InterpolationPair(PathRef, Line):
    """One measured line."""

    status: Literal["ok"] = "ok"
    checkpoints: list[str]
    """The checkpoint names of A and B ('final', 'epoch-<k>')."""
    head: str | None = None
    """For P/P-T and P@k/P-T (body interpolated): whose head both ends use."""
    metric_name: str


class SkippedPath(PathRef, Skipped):
    """A line that could not be measured; ``checkpoints`` is None when the weights of A were
    not available to name."""

    checkpoints: list[str] | None = None
    head: str | None = None


PathEntry = Annotated[InterpolationPair | SkippedPath, Field(discriminator="status")]


class InterpolationEntry(PathsEntry):
    """One target's lines: the pairs, the metric's name and how many test examples."""

    pairs: list[PathEntry]


class InterpolationDocument(PathsResult):
    targets: dict[str, Entry[InterpolationEntry]] = Field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# computing


@dataclass
class _Path:
    """One line to measure: weights A and B, the run whose architecture (and head) is used."""

    pair: PairName
    needs: list[PlannedRun]
    a: Weights
    b: Weights
    model_run: PlannedRun
    body_only: bool = False
    k: float | None = None


def _paths(ctx: StudyContext, target: str) -> tuple[list[_Path], list[SkippedPath]]:
    """The lines to measure on ``target``, and entries for lines whose weights are missing."""
    paths: list[_Path] = []
    waiting: list[SkippedPath] = []
    for pair, a, b in study_pairs(ctx, target, same_init=True):
        paths.append(_Path(pair, [a, b], (a.id, "final"), (b.id, "final"), b))
    pts = ctx.independent("P-T", target)
    for pt in pts:
        p = ctx.p_weights(pt, None)
        if p is None:
            why = "P's weights or this P-T run are not available yet"
            waiting.append(
                SkippedPath(pair="P/P-T", k=None, runs=[pt.id], status="skipped", reason=why)
            )
            continue
        paths.append(_Path("P/P-T", [pt], p, (pt.id, "final"), pt, body_only=True))
    reference = pts[0] if pts else None
    for r in ctx.trajectory_runs(target):
        if reference is None or r.checkpoint is None:
            continue
        pk = ctx.p_weights(r, r.checkpoint)
        if pk is None:
            waiting.append(
                SkippedPath(
                    pair="P@k/P-T",
                    k=r.checkpoint,
                    runs=[r.id, reference.id],
                    status="skipped",
                    reason="P@k's weights are not available yet",
                )
            )
            continue
        paths.append(
            _Path(
                "P@k/P-T", [reference], pk, (reference.id, "final"), reference, True, r.checkpoint
            )
        )
    return paths, waiting


def _measure(ctx: StudyContext, path: _Path, opts: InterpolationOptions) -> PathEntry:
    ref: dict[str, Any] = {
        "pair": path.pair,
        "k": path.k,
        "runs": [path.a[0], path.b[0]],
        "checkpoints": [path.a[1], path.b[1]],
    }
    if path.body_only:
        ref["head"] = f"both ends use {path.b[0]}'s final head (body interpolated)"
    reason = ctx.unfinished(path.needs)
    if reason:
        return SkippedPath(**ref, status="skipped", reason=reason)
    try:
        result = ctx.line(
            path.model_run, path.a, path.b, opts.num_points, opts.recalibrate_batchnorm,
            path.body_only, opts.max_examples, opts.recalibration_examples,
        )  # fmt: skip
    except TransferscopeError as e:
        return SkippedPath(**ref, status="skipped", reason=str(e))
    return InterpolationPair(**ref, **result.to_dict())


# ----------------------------------------------------------------------------------------------
# claims


@claim(
    "C6",
    "No performance barrier between P-T models; a barrier between RI-T models, even from the "
    "same random init.",
    f"every P-T/P-T barrier (metric) ≤ {BARRIER_TOLERANCE:g}, and every RI-T/RI-T barrier, the "
    f"same-init pair's included, > {BARRIER_TOLERANCE:g} plus twice its binomial standard error "
    f"({BARRIER_TOLERANCE:g} = one point of accuracy/AUC); pairs holding a run at chance level "
    "are left out.",
    controlled=f"every P-T/P-T barrier ≤ {BARRIER_TOLERANCE:g} while the control pair "
    f"P@0-T/P@0-T (two fine-tunes of P's untrained init with P-T's recipe) has a barrier > "
    f"{BARRIER_TOLERANCE:g} plus twice its standard error: the shared basin needs "
    "pre-training, not just a shared start; P must have learned.",
    meaning="two fine-tunes of P's untrained init share a basin as well, so a shared start and "
    "recipe alone put P-T models in one basin here: their flat path cannot be credited to "
    "pre-training.",
    guards_chance=True,
    short="no barrier between P-T, barriers between RI-T",
)
def C6(e: InterpolationEntry, target: str, data: StudyData) -> TargetResult:
    pt, dead_pt = learned_barriers(e.pairs, "P-T/P-T", e.examples, data)
    rit, dead_rit = learned_barriers(e.pairs, "RI-T/RI-T", e.examples, data)
    same, dead_same = learned_barriers(e.pairs, "RI-T/RI-T same init", e.examples, data)
    control, dead_control = learned_barriers(e.pairs, CONTROL_PAIR, e.examples, data)
    statistic = f"flat: ≤ {BARRIER_TOLERANCE:g}; barrier: > {BARRIER_TOLERANCE:g} + 2 s.e."

    def worst(values: list[tuple[float, float]], of: Any = max) -> str:
        return fmt(of(v for v, _ in values)) if values else "not measured"

    noise = max((n for _, n in pt + rit + same + control), default=0.0)
    noise_text = f"{statistic} (binomial at the worst point, up to {fmt(noise, 2)})"
    paper_text = (
        f"P-T/P-T max {worst(pt)}, RI-T/RI-T min {worst(rit, min)}, same init {worst(same, min)}"
    )
    missing = ", ".join(n for n, v in (("P-T/P-T", pt), ("RI-T/RI-T", rit)) if not v)
    paper = barrier_result(
        target, pt, rit + same, paper_text, noise_text, e.examples,
        dead_pt + dead_rit + dead_same, missing,
    )  # fmt: skip
    control_text = f"P-T/P-T max {worst(pt)}, control pair {CONTROL_PAIR} min {worst(control, min)}"
    missing = ", ".join(n for n, v in (("P-T/P-T", pt), (CONTROL_PAIR, control)) if not v)
    controlled = barrier_result(
        target, pt, control, control_text, noise_text, e.examples, dead_pt + dead_control, missing
    )
    return replace(paper, controlled=p_guard(data, controlled))


# ----------------------------------------------------------------------------------------------
# report


def interpolation_curves(e: InterpolationEntry, title: str) -> Figure | None:
    """Test metric and loss along the linear path between the two models of every pair."""
    import numpy as np

    from transferscope.unitkit import figures as F

    pairs = [p for p in e.pairs if isinstance(p, InterpolationPair) and p.lambdas]
    if not pairs:
        return None
    fig, axes = F.subplots(1, 2, figsize=(9.0, 3.3))
    shades = F.checkpoint_styles([{"k": p.k} for p in pairs], "k")
    for p in pairs:
        color, ls, label = F.pair_line({"pair": p.pair, "k": p.k}, "k", shades)
        lam = np.asarray(p.lambdas, dtype=float)
        for ax, values in ((axes[0], p.metric), (axes[1], p.loss)):
            if len(values) != len(lam):
                continue
            y = [v if finite(v) else np.nan for v in values]
            ax.plot(lam, y, color=color, linestyle=ls, label=label)
    axes[0].set_ylabel(F.metric_label(e.metric_name))
    axes[1].set_ylabel("test loss (lower is better)")
    for ax in axes:
        ax.set_xlabel("λ: θ(λ) = (1 − λ)·θ_A + λ·θ_B")
    axes[0].set_title("metric along the path")
    axes[1].set_title("loss along the path")
    F.legend_once(axes[1], outside=True)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# the unit


@register
class Interpolation(Analysis, name="interpolation", version=2, section=sections.BARRIERS):
    """Performance barriers along straight lines between models (§3.3)."""

    claims = (C6,)

    def tables(self, result: InterpolationDocument | None) -> dict[str, Table]:
        """``barriers``: each straight line's barrier (§3.3)."""
        return {"barriers": barrier_rows(self.name, result, [("linear", None)])}

    def work(self, options: InterpolationOptions, target: TargetSize) -> Work:
        # Every line of _paths: the pairs (with the same-init and control pairs), P/P-T per P-T
        # run and P@k/P-T per trajectory point; without a plan, the five pairs of one seed pair.
        view, label = target.study, target.label
        if view is None:
            return path_work(options, target, 5)
        ends = pair_ends(study_pairs(view, label, same_init=True))
        pts, p = view.independent("P-T", label), view.p_run()
        for pt in pts:
            ends.append(
                ((p.id, "final") if p else (pt.id, ckpt.point_name(0)), (pt.id, "final"), True)
            )
        for r in view.trajectory_runs(label) if pts else []:
            if r.checkpoint is not None:
                pk = (p.id, ckpt.point_name(r.checkpoint)) if p else (r.id, ckpt.point_name(0))
                ends.append((pk, (pts[0].id, "final"), True))
        return line_work(options, target, ends)

    def compute(self, ctx: StudyContext, options: InterpolationOptions) -> InterpolationDocument:
        planned = [(spec, *_paths(ctx, spec.label)) for spec in ctx.cfg.targets]
        total, done = sum(len(paths) for _, paths, _ in planned), 0
        targets: dict[str, dict] = {}
        for spec, paths, entries in planned:
            pairs: list[PathEntry] = list(entries)
            for path in paths:
                ctx.progress(done, total, f"{spec.label}: {path.pair}")
                pairs.append(_measure(ctx, path, options))
                done += 1
            targets[spec.label] = paths_entry(ctx, spec, options, pairs)
        return InterpolationDocument.model_validate({"targets": targets})

    def has_results(self, result: AnalysisResult) -> bool:
        # A target entry is always written; the result counts when one line was measured.
        return any(
            isinstance(p, InterpolationPair)
            for e in result.targets.values()
            if isinstance(e, InterpolationEntry)
            for p in e.pairs
        )

    def render_section(self, page: Page, result: AnalysisResult | None) -> str:
        return (
            '<p class="small">Barrier: max over λ of the linear interpolation of the end points\' '
            "metric minus the metric at θ(λ) (mirrored for the loss).</p>"
            + page.per_target(self.name, result, self.render)
        )

    def render(self, page: Page, target: str, e: InterpolationEntry) -> str:
        from transferscope.unitkit.page import Raw, esc, table

        def k(p: PathEntry) -> str:
            return "-" if p.k is None else fmt(p.k)

        rows = [
            (
                p.pair,
                ", ".join(p.runs),
                k(p),
                fmt(p.barrier_metric),
                fmt(p.barrier_loss),
                "yes" if p.batchnorm_recalibrated else "no",
            )
            if isinstance(p, InterpolationPair)
            else (
                p.pair,
                ", ".join(p.runs),
                k(p),
                Raw(f"<em>skipped: {esc(p.reason)}</em>"),
                "-",
                "-",
            )
            for p in e.pairs
        ]
        header = (
            "pair",
            "runs",
            "k",
            "barrier (metric)",
            "barrier (loss)",
            "BatchNorm recalibrated",
        )
        return table(header, rows, numeric=(2, 3, 4)) + page.figure(
            interpolation_curves(e, f"Linear interpolation, target {target}"),
            f"interpolation-{target}",
            f"Test metric and loss along the linear path between the models of every pair on {target}.",
        )


__all__ = [
    "Interpolation",
    "InterpolationDocument",
    "InterpolationEntry",
    "InterpolationOptions",
    "InterpolationPair",
]
