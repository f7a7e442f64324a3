"""Domain similarity: how far each target is from the source, seen by P (beyond the paper): C11.

Neyshabur et al. (2020, §3.1) observe that the target furthest from the source (quickdraw)
gains least from pre-training and loses least to block shuffling. This unit measures "far": per
target, the distance between P's penultimate-layer features on source test images and on target
test images (fed to P as P-T sees them), on seeded subsets of one common size so that every
target's distance has the same sample-size bias. The Fréchet distance of fitted Gaussians (as
FID) decides the claim; the RBF-kernel MMD² (one bandwidth for all targets: the median distance
between the source's features) is recorded alongside. Claim C11 then relates these distances to
the curves analysis's benefit and shuffle loss, across targets. The math is in
:mod:`transferscope.measures.domain`; method notes in ``docs/methods.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
from pydantic import Field

from transferscope.measures import domain as domain_lib
from transferscope.measures.curves import headroom_gain
from transferscope.options import AnalysisOptions, Seed
from transferscope.registry import register
from transferscope.unitkit.context import StudyContext, skipped, subset
from transferscope.unitkit.results import AnalysisResult, Entry, TargetEntry
from transferscope.unitkit.rules import (
    INCONCLUSIVE,
    UNMEASURED,
    TargetResult,
    combine,
    finite,
    fmt,
    p_guard,
)
from transferscope.unitkit.unit import Analysis, ReportSection, TargetSize, claim

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sized

    from matplotlib.figure import Figure

    from transferscope.analyses.curves import ShuffleGap
    from transferscope.unitkit.page import Page
    from transferscope.unitkit.study_data import StudyData

Measure = Literal["frechet", "mmd"]
MEASURE_NAMES = {"frechet": "Fréchet distance", "mmd": "MMD² (RBF)"}


SECTION = ReportSection("domain", "Domain similarity (beyond the paper)")


class DomainOptions(AnalysisOptions):
    max_examples: int | None = Field(
        default=2000,
        ge=2,
        description="examples per domain: seeded test subsets of one size, the smallest test "
        "split's if smaller",
    )
    measure: Measure = Field(default="frechet", description="the distance claim C11 ranks by")
    subset_seed: Seed = Field(default=0, description="seed of the test subsets")
    batch_size: int = Field(default=256, ge=1, description="examples per forward pass")


class DomainEntry(TargetEntry):
    """One target's distance from the source."""

    frechet: float
    """Fréchet distance of Gaussians fitted to P's penultimate features (squared units)."""
    mmd: float
    """Unbiased MMD² with the RBF kernel of the result's ``mmd_bandwidth``."""
    examples: int
    """Examples per domain the distances were computed on."""
    run: str
    """The run whose weights were P (the P run, or a P-T run's start for an external P)."""


class DomainResult(AnalysisResult):
    targets: dict[str, Entry[DomainEntry]] = Field(default_factory=dict)
    measure: Measure = "frechet"
    """The distance C11 ranks targets by."""
    source: str | None = None
    layer: str | None = None
    """The module whose input is the features (P's classifier head)."""
    features: int | None = None
    mmd_bandwidth: float | None = None
    source_floor: float | None = None
    """Fréchet distance between two disjoint source subsets of the same size: what sampling
    alone gives (None when the source's test split has fewer than twice the examples)."""


# ----------------------------------------------------------------------------------------------
# computing


def _p_model(ctx: StudyContext) -> tuple[Any, str] | str:
    """(P, its run label), or why P cannot be read."""
    p = ctx.p_run()
    if p is not None:
        if not ctx.done(p):
            return f"P ({p.id}) has not finished"
        return ctx.final_model(p), p.id
    # An external P: every P-T run starts from it (with a fresh head, not used here).
    for spec in ctx.cfg.targets:
        pts = ctx.independent("P-T", spec.label)
        if pts:
            return ctx.p_model(pts[0])
    return "the plan has no P run and no P-T run to read P from"


def _compute(ctx: StudyContext, options: DomainOptions) -> dict[str, Any]:
    labels = [spec.label for spec in ctx.cfg.targets]
    got = _p_model(ctx)
    if isinstance(got, str):
        return {"targets": {t: skipped(got) for t in labels}}
    model, p_id = got
    # Map-style datasets, all sized (torch's Dataset does not declare __len__).
    source = cast("Sized", ctx.cache.get(ctx.cfg.source).test)
    tests = {spec.label: cast("Sized", ctx.cache.get(spec).test) for spec in ctx.cfg.targets}
    # One size for every domain: the distances' sample-size bias is then the same for all.
    n = min(len(source), *(len(t) for t in tests.values()))
    if options.max_examples is not None:
        n = min(n, options.max_examples)
    if n < 2:
        return {"targets": {t: skipped(f"{n} test examples: 2 needed") for t in labels}}

    def features(data: Any) -> np.ndarray:
        data = subset(data, n, options.subset_seed)
        return domain_lib.penultimate_features(
            model, data, batch_size=options.batch_size, device=ctx.device
        )

    ctx.progress(0, len(labels) + 1, "source features")
    floor = None
    if len(source) >= 2 * n:
        # The subset of 2n starts with the subset of n; its second half, disjoint from the
        # first, measures the noise floor: the distance sampling alone gives.
        both = domain_lib.penultimate_features(
            model,
            subset(source, 2 * n, options.subset_seed),
            batch_size=options.batch_size,
            device=ctx.device,
        )
        src = both[:n]
        floor = domain_lib.frechet_distance(src, both[n:])
    else:
        src = features(source)
    # One kernel for every target (a per-pair median would change the yardstick per target).
    bandwidth = domain_lib.median_bandwidth(src)
    targets: dict[str, Any] = {}
    for i, label in enumerate(labels):
        ctx.progress(i + 1, len(labels) + 1, f"target {label}")
        tgt = features(tests[label])
        mmd, _ = domain_lib.mmd_rbf(src, tgt, bandwidth)
        targets[label] = {
            "frechet": domain_lib.frechet_distance(src, tgt),
            "mmd": mmd,
            "examples": n,
            "run": p_id,
        }
    from transferscope.models.layout import layout

    return {
        "targets": targets,
        "source": ctx.cfg.source.label,
        "layer": layout(model).head,
        "features": int(src.shape[1]),
        "mmd_bandwidth": bandwidth,
        "source_floor": floor,
    }


# ----------------------------------------------------------------------------------------------
# claim C11: the benefit against the distance, across targets


@dataclass(frozen=True)
class Point:
    """One target: its distance and what the curves analysis measured there."""

    target: str
    distance: float
    benefit: float
    """Headroom gain (A(P-T) − A(RI-T)) / (1 − A(RI-T)), unshuffled: the share of RI-T's
    distance to a perfect score that P-T closes, the same for accuracy and mean AUC
    (:func:`~transferscope.measures.curves.headroom_gain`)."""
    benefit_se: float | None
    """Its standard error from the paired bootstrap over the target's test examples."""
    lost: float | None
    """Headroom gain unshuffled minus at the smallest block (pixel shuffle if no block)."""
    lost_se: float | None
    lost_at: str | None
    speed_gap: float | None
    beats_rit: int | None
    """+1 when P-T's final metric beats RI-T's beyond test-set noise (C1's test)."""
    runs: tuple[str, ...]


def _se(comparison: Any) -> float | None:
    """Standard error read off a stored 95% bootstrap interval (None without one)."""
    low, high = getattr(comparison, "low", None), getattr(comparison, "high", None)
    if getattr(comparison, "status", "ok") != "ok" or not (finite(low) and finite(high)):
        return None
    return float(high - low) / (2 * 1.959964)  # type: ignore[operator]


def points(result: DomainResult, data: StudyData) -> tuple[list[Point], list[str]]:
    """Targets with a distance and a curves result, nearest first; and the targets left out,
    each with why."""
    from transferscope.analyses.curves import CurvesEntry, shuffle_label, smallest_shuffle

    curves = data.result("curves")
    out, left_out = [], []
    for target in [*data.targets, *(t for t in result.targets if t not in data.targets)]:
        e = result.targets.get(target)
        c = None if curves is None else curves.targets.get(target)
        distance = getattr(e, result.measure, None) if isinstance(e, DomainEntry) else None
        if not finite(distance):
            left_out.append(f"{target} (no distance)")
            continue
        if not isinstance(c, CurvesEntry):
            left_out.append(f"{target} (no curves result)")
            continue
        gain = headroom_gain(c.pt.final_metric_mean, c.rit.final_metric_mean)  # type: ignore[arg-type]
        if not finite(gain):
            left_out.append(f"{target} (no headroom gain: a final metric missing or RI-T perfect)")
            continue
        small = smallest_shuffle(c)
        lost, lost_se = None, None
        if small is not None:
            test = small.gain_test
            if getattr(test, "status", None) == "ok" and finite(getattr(test, "estimate", None)):
                lost, lost_se = float(test.estimate), _se(test)  # type: ignore[union-attr]
            else:
                shuffled = headroom_gain(small.pt.final_metric_mean, small.rit.final_metric_mean)  # type: ignore[arg-type]
                lost = float(gain - shuffled) if finite(shuffled) else None
        runs = [*c.runs["P-T"], *c.runs["RI-T"]]
        if small is not None:
            runs += [*small.runs.get("P-T", []), *small.runs.get("RI-T", [])]
        direction = getattr(c.final_test, "direction", None)
        out.append(
            Point(
                target,
                float(distance),  # type: ignore[arg-type]
                float(gain),
                _se(c.gain_interval),
                lost,
                lost_se,
                None if small is None else shuffle_label(small),
                c.speed_gap_epochs if finite(c.speed_gap_epochs) else None,
                direction,
                tuple(runs),
            )
        )
    return sorted(out, key=lambda p: p.distance), left_out


def _trend(
    pts: list[Point], values: list[float], errors: list[float | None], tie_within: float
) -> tuple[int, str, str]:
    """(direction the claim's way, ρ text, statistic) of ``values`` (one per point, nearest
    first) against the distance: the claim wants them to fall as the distance grows (ρ < 0),
    beyond each value's test-set noise."""
    from transferscope.measures.statistics import noisy_spearman

    missing = [p.target for p, e in zip(pts, errors, strict=True) if e is None]
    trend = noisy_spearman(
        [p.distance for p in pts], values, [e or 0.0 for e in errors], tie_within=tie_within
    )
    rho = f"ρ = {trend.estimate:+.2f}" if finite(trend.estimate) else "all tied"
    if missing:
        return 0, rho, f"no noise estimate for {', '.join(missing)}: not decided"
    return -trend.direction, rho, f"{trend.method}: other sign in {fmt(trend.p_value, 2)}"


@claim(
    "C11",
    "Beyond the paper: the closer a target is to the source, the more P-T gains over "
    "RI-T and the more of that gain block shuffling removes.",
    "across at least 3 targets ordered by the Fréchet distance between P's penultimate features "
    "on source and target test images (equal-size seeded subsets; targets closer than the "
    "source's own sampling floor share a rank), both the headroom gain (A(P-T) − A(RI-T)) / "
    "(1 − A(RI-T)), the share of RI-T's distance to a perfect score P-T closes (one measure "
    "for accuracy and mean AUC alike), and its loss at the smallest block (pixel shuffle if "
    "no block) fall as the "
    "distance grows: Spearman ρ < 0 in at least 95% of 2,000 redraws of every target's value "
    "within its test-set noise (paired bootstrap), and P-T beats RI-T beyond test-set noise on "
    "at least one target. ρ > 0 as surely: does not hold. P must have learned (the distances "
    "are in its features).",
    across=True,
    guards_chance=True,
    short="closer targets gain more from P",
)
def C11(result: DomainResult, target: str, data: StudyData) -> TargetResult:
    pts, left_out = points(result, data)
    measure = MEASURE_NAMES[result.measure]
    missing = f"; left out: {', '.join(left_out)}" if left_out else ""
    if len(pts) < 3:
        return TargetResult(
            target,
            UNMEASURED,
            f"{len(pts)} target(s) with a distance and a curves result{missing}",
            "a rank correlation needs at least 3 targets",
        )
    tie = result.source_floor if result.measure == "frechet" and finite(result.source_floor) else 0
    order = " < ".join(f"{p.target} {fmt(p.distance)}" for p in pts)
    benefit_dir, benefit_rho, benefit_stat = _trend(
        pts,
        [p.benefit for p in pts],
        [p.benefit_se for p in pts],
        float(tie),  # type: ignore[arg-type]
    )
    text = (
        f"{measure}: {order}; headroom gain "
        f"{', '.join(_with_se(p.benefit, p.benefit_se) for p in pts)} ({benefit_rho})"
    )
    stats = [f"gain: {benefit_stat}"]
    lost_dir: int | None = None
    if all(p.lost is not None for p in pts):
        lost = [float(p.lost) for p in pts]  # type: ignore[arg-type]
        lost_dir, lost_rho, lost_stat = _trend(pts, lost, [p.lost_se for p in pts], float(tie))  # type: ignore[arg-type]
        text += (
            f"; lost to shuffling {', '.join(_with_se(p.lost, p.lost_se) for p in pts)} "
            f"({lost_rho})"
        )
        stats.append(f"shuffle loss: {lost_stat}")
    else:
        text += "; lost to shuffling: not measured on every target (no shuffled runs)"
    gaps = [p.speed_gap for p in pts]
    if all(g is not None for g in gaps):
        gap_rho = _trend(pts, [float(g) for g in gaps], [0.0] * len(pts), float(tie))[1]  # type: ignore[arg-type]
        text += f"; speed gap {', '.join(fmt(g) for g in gaps)} epochs ({gap_rho}, not decisive)"
    verdict = combine(benefit_dir, lost_dir)
    # Noise correlated with distance is no finding: some target must gain from P beyond noise.
    if verdict != UNMEASURED and not any(p.beats_rit == 1 for p in pts):
        verdict = INCONCLUSIVE
        text += "; P-T beats RI-T beyond test-set noise on no target: no benefit to rank"
    decide = ""
    if verdict == INCONCLUSIVE:
        decide = (
            f"the order of {len(pts)} targets is within their test-set noise: more test "
            "examples per target narrow each value's noise, and more targets give more ranks; "
            "more seeds would not decide it"
        )
    result_ = TargetResult(target, verdict, text + missing, "; ".join(stats), decide=decide)
    return p_guard(data, result_)


def _with_se(value: float | None, se: float | None) -> str:
    return fmt(value) + (f" ± {fmt(se, 2)}" if finite(se) else "")


# ----------------------------------------------------------------------------------------------
# report


def benefit_figure(pts: list[Point], measure: str) -> Figure | None:
    """Headroom gain and the part lost to shuffling against the distance, one point a target."""
    from transferscope.unitkit import figures as F

    if not pts:
        return None
    fig, axes = F.subplots(1, 2, figsize=(8.0, 3.0))
    x = [p.distance for p in pts]
    panels = (
        (axes[0], [p.benefit for p in pts], "headroom gain (P-T − RI-T)/(1 − RI-T)", "benefit"),
        (axes[1], [p.lost for p in pts], "gain lost to shuffling", "feature reuse"),
    )
    for ax, ys, ylabel, title in panels:
        for p, xi, yi in zip(pts, x, ys, strict=True):
            if yi is None:
                continue
            ax.scatter([xi], [yi], color=F.COLORS["P-T"], zorder=3)
            ax.annotate(p.target, (xi, yi), textcoords="offset points", xytext=(4, 4))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel(f"{measure} from the source (P's penultimate features)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    fig.tight_layout()
    return fig


def shuffle_figure(result: DomainResult, data: StudyData, pts: list[Point]) -> Figure | None:
    """Relative drop per shuffle (unshuffled, blocks large to small, pixel), one line a target,
    coloured by its distance from the source."""
    from matplotlib import cm, colormaps
    from matplotlib.colors import Normalize

    from transferscope.analyses.curves import CurvesEntry, shuffle_label
    from transferscope.unitkit import figures as F

    curves = data.result("curves")
    lines: list[tuple[Point, list[ShuffleGap]]] = []
    for p in pts:
        c = None if curves is None else curves.targets.get(p.target)
        if isinstance(c, CurvesEntry) and len(c.shuffles) > 1:
            lines.append((p, c.shuffles))
    if not lines:
        return None
    labels = list(dict.fromkeys(shuffle_label(s) for _, gaps in lines for s in gaps))
    norm = Normalize(min(p.distance for p, _ in lines), max(p.distance for p, _ in lines))
    cmap = colormaps["viridis"]
    fig, ax = F.subplots(figsize=(5.5, 3.2))
    for p, gaps in lines:
        xs = [labels.index(shuffle_label(s)) for s in gaps if finite(s.relative_drop)]
        ys = [s.relative_drop for s in gaps if finite(s.relative_drop)]
        ax.plot(xs, ys, marker="o", color=cmap(norm(p.distance)), label=p.target)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_xlabel("shuffle of the target images")
    ax.set_ylabel("relative drop (%)")
    ax.set_title("P-T's benefit under block shuffling, by distance")
    fig.colorbar(
        cm.ScalarMappable(norm=norm, cmap=cmap),
        ax=ax,
        label=f"{MEASURE_NAMES[result.measure]} from the source",
    )
    ax.legend()
    return fig


# ----------------------------------------------------------------------------------------------
# the unit (its declaration in one block)


@register
class Domain(Analysis, name="domain", version=2, section=SECTION):
    """Source-target distance in P's penultimate features, and C11 across targets."""

    claims = (C11,)

    def forward_passes(self, options: DomainOptions, target: TargetSize) -> int:
        # P over the target's subset and (once per target, as an upper bound) the source's
        return 2 * target.cap(options.max_examples, target.test)

    def compute(self, ctx: StudyContext, options: DomainOptions) -> DomainResult:
        doc = _compute(ctx, options)
        return DomainResult.model_validate({**doc, "measure": options.measure})

    def render_section(self, page: Page, result: AnalysisResult | None) -> str:
        from transferscope.unitkit.page import esc, not_run, table

        reason = page.data.not_run_reason(self.name)
        if reason is not None or not isinstance(result, DomainResult):
            return not_run(reason or "no result")
        measure = MEASURE_NAMES[result.measure]
        pts, _ = points(result, page.data)
        by_target = {p.target: p for p in pts}
        rows: list[tuple[object, ...]] = []
        for target, e in result.targets.items():
            if not isinstance(e, DomainEntry):
                rows.append((target, "-", "-", "-", "-", "-", f"skipped: {e.reason}"))
                continue
            p = by_target.get(target)
            rows.append(
                (
                    target,
                    fmt(e.frechet),
                    fmt(e.mmd),
                    e.examples,
                    "-" if p is None else fmt(p.benefit),
                    "-" if p is None or p.lost is None else fmt(p.lost),
                    "",
                )
            )
        rows.sort(key=lambda r: by_target[r[0]].distance if r[0] in by_target else float("inf"))
        out = (
            f'<p class="small">Distance of each target from the source {esc(result.source)} in '
            f"P's features at the input of {esc(result.layer)} ({esc(result.features)} features), "
            "on test subsets of one size; the claim ranks targets by the "
            f"{esc(measure)}. MMD² uses one RBF bandwidth for every target, the median distance "
            f"between source features ({esc(fmt(result.mmd_bandwidth))}). Two disjoint source "
            f"subsets of that size are {esc(fmt(result.source_floor))} apart (Fréchet): what "
            "sampling alone gives.</p>"
        )
        out += table(
            (
                "target",
                "Fréchet distance",
                "MMD² (RBF)",
                "examples per domain",
                "headroom gain",
                "gain lost to shuffling",
                "note",
            ),
            rows,
            numeric=(1, 2, 3, 4, 5),
        )
        out += page.figure(
            benefit_figure(pts, measure),
            "domain-benefit",
            f"P-T's benefit over RI-T and the part of it lost to shuffling, against the {measure}"
            " from the source (one point per target).",
        )
        out += page.figure(
            shuffle_figure(result, page.data, pts),
            "domain-shuffles",
            "Relative drop per shuffle of the target images, one line per target, coloured by "
            f"its {measure} from the source.",
        )
        return out


__all__ = ["Domain", "DomainEntry", "DomainOptions", "DomainResult", "points"]
