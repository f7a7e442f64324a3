"""The report section the basin units share: barriers on the straight line, after permutation
alignment, and along a trained curve (beyond the paper).

Each unit of the section (:class:`BasinUnit`: alignment, connectivity) measures the straight line
between the two models of a pair and one path of its own; the section shows one row per pair
with every path side by side. A unit contributes its path (key, legend, style), one column of
its own and its skip notes; the section joins the units' pairs on (pair name, runs) and is drawn
once, by the first basin unit of the registry (the others add nothing of their own, since their
part is in the joined table and figures).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from transferscope.unitkit import sections
from transferscope.unitkit.model_paths import Line, PairRef, any_pair_measured
from transferscope.unitkit.results import AnalysisResult
from transferscope.unitkit.rules import finite, fmt
from transferscope.unitkit.tables import Table, barrier_rows
from transferscope.unitkit.unit import Analysis

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from transferscope.unitkit.page import Page


@dataclass(frozen=True)
class PathStyle:
    """How one kind of path is drawn: its key in the table, legend label, colour, line style."""

    key: str
    label: str
    color: str
    linestyle: str


class BasinPair(PairRef):
    """A measured pair of a basin unit: the straight line between A and B, beside which the
    unit stores its own path (field ``path.key``) and its own measurements."""

    status: Literal["ok"] = "ok"
    linear: Line


STRAIGHT = PathStyle("linear", "straight line", "#555555", "-")

INTRO = (
    '<p class="small">Beyond the paper. <em>Aligned</em>: the straight line after '
    "permuting B's hidden units to match A (weight matching, Ainsworth et al. 2022, "
    '"Git Re-Basin"); a barrier that vanishes there was a permutation of one basin. '
    "<em>Curve</em>: a quadratic Bezier curve between the two models whose middle control "
    "point was trained (Garipov et al. 2018). All three are measured the same way as the "
    "straight line above (BatchNorm statistics recomputed at each point).</p>"
)


class BasinUnit(Analysis, section=sections.BASINS):
    """A unit of the basins section: its pairs hold ``linear`` and the path ``path.key``."""

    path: ClassVar[PathStyle]
    column: ClassVar[str]
    """Header of the unit's own column of the section's table."""

    def cell(self, pair: Any) -> str:
        """The unit's own cell for one measured pair."""
        raise NotImplementedError

    def has_results(self, result: AnalysisResult) -> bool:
        return any_pair_measured(result)

    def tables(self, result: Any) -> dict[str, Table]:
        """``barriers``: per measured pair, the straight line's barrier and the unit's path's."""
        paths = [("linear", "linear"), (self.path.key, self.path.key)]
        return {"barriers": barrier_rows(self.name, result, paths)}

    def render_section(self, page: Page, result: AnalysisResult | None) -> str:
        from transferscope import registry

        units = [u for u in registry.units() if isinstance(u, BasinUnit)]
        return render_basins(page, units) if units and units[0] is self else ""


@dataclass
class Row:
    """One pair of the section: every unit's paths for it, and each unit's cell."""

    pair: str
    runs: list[str]
    label: str
    seeds: list[int] = field(default_factory=list)
    paths: dict[str, Line] = field(default_factory=dict)
    cells: dict[str, str] = field(default_factory=dict)


def _rows(
    page: Page, units: list[BasinUnit], target: str
) -> tuple[list[Row], list[str], str | None]:
    """One row per pair (the units joined on pair name and runs), skip notes, metric name."""
    rows: dict[tuple[str, tuple[str, ...]], Row] = {}
    skipped: list[str] = []
    metric = None
    for unit in units:
        result = page.data.result(unit.name)
        entry = None if result is None else result.targets.get(target)
        if entry is None or entry.status != "ok":
            continue
        metric = metric or entry.metric_name
        for p in entry.pairs:
            runs = tuple(p.runs)
            if p.status != "ok":
                skipped.append(f"{unit.name} {p.pair} ({', '.join(runs)}) skipped: {p.reason}")
                continue
            row = rows.setdefault((p.pair, runs), Row(p.pair, list(runs), p.pair))
            # The straight line is the same measurement in every unit: the first one's is shown.
            row.paths.setdefault(STRAIGHT.key, p.linear)
            row.paths[unit.path.key] = getattr(p, unit.path.key)
            row.cells[unit.name] = unit.cell(p)
            row.seeds = list(p.seeds)
    # Several pairs of one kind get their seeds in the label.
    out = list(rows.values())
    for r in out:
        if sum(o.pair == r.pair for o in out) > 1 and r.seeds:
            r.label = f"{r.pair} (seeds {', '.join(str(x) for x in r.seeds)})"
    return out, skipped, metric


def render_basins(page: Page, units: list[BasinUnit]) -> str:
    """The section: the intro, why a unit did not run, then per target the joined table, the
    skip notes and two figures."""
    from transferscope.unitkit.page import esc, not_run, table

    reasons = {u.name: page.data.not_run_reason(u.name) for u in units}
    notes = "".join(
        not_run(f"{name}: {reason}") for name, reason in reasons.items() if reason is not None
    )
    if all(r is not None for r in reasons.values()):
        return INTRO + notes
    styles = [STRAIGHT, *(u.path for u in units)]
    targets: list[str] = list(page.data.targets)
    for u in units:
        result = page.data.result(u.name)
        targets += [t for t in (result.targets if result else {}) if t not in targets]
    parts = [INTRO, notes]
    for target in targets:
        parts.append(f"<h3>Target {esc(target)}</h3>")
        rows, skipped, metric = _rows(page, units, target)
        if not rows:
            parts.append(not_run(skipped[0] if skipped else f"no entry for target {target}"))
            continue

        def barrier(r: Row, key: str, which: str) -> str:
            line = r.paths.get(key)
            return fmt(None if line is None else getattr(line, which))

        cells = [
            (
                r.pair,
                ", ".join(r.runs),
                *[barrier(r, s.key, "barrier_metric") for s in styles],
                *[barrier(r, s.key, "barrier_loss") for s in styles],
                *[r.cells.get(u.name, "-") for u in units],
            )
            for r in rows
        ]
        names = [f"barrier {s.key}" if s is STRAIGHT else s.key for s in styles]
        header = (
            "pair",
            "runs",
            *[f"{n} (metric)" for n in names],
            *[f"{n} (loss)" for n in names],
            *[u.column for u in units],
        )
        parts.append(table(header, cells, numeric=tuple(range(2, len(header)))))
        parts += [f'<p class="small">{esc(reason)}</p>' for reason in skipped]
        parts.append(
            page.figure(
                basin_barriers(rows, styles, f"Barriers per path, target {target}"),
                f"basins-barriers-{target}",
                f"Barrier (metric) of each pair on the straight line, after alignment and "
                f"along the trained curve, on {target}.",
            )
        )
        parts.append(
            page.figure(
                basin_paths(rows, styles, metric, f"Paths between two models, target {target}"),
                f"basins-paths-{target}",
                f"Test metric along the three paths for each pair on {target}.",
            )
        )
    return "".join(parts)


def basin_barriers(rows: list[Row], styles: list[PathStyle], title: str) -> Figure | None:
    """Barrier (metric) of each pair on each path: grouped bars, one group per pair."""
    from transferscope.unitkit import figures as F

    def height(r: Row, key: str) -> float:
        line = r.paths.get(key)
        return float(line.barrier_metric) if line and finite(line.barrier_metric) else np.nan

    if not any(np.isfinite(height(r, s.key)) for r in rows for s in styles):
        return None
    fig, ax = F.subplots(figsize=(max(4.5, 1.3 * len(rows) + 2.0), 3.2))
    width = 0.8 / len(styles)
    x = np.arange(len(rows))
    for i, s in enumerate(styles):
        heights = [height(r, s.key) for r in rows]
        ax.bar(x + (i - 1) * width, heights, width, color=s.color, label=s.label)
    ax.set_xticks(x, [r.label for r in rows], rotation=20, ha="right")
    ax.set_ylabel("barrier height (metric units)")
    ax.axhline(0, color="black", linewidth=0.8)
    F.legend_once(ax, outside=True)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def basin_paths(
    rows: list[Row], styles: list[PathStyle], metric_name: str | None, title: str
) -> Figure | None:
    """Test metric along each path (straight, aligned, curve): one panel per pair."""
    from transferscope.unitkit import figures as F

    rows = [r for r in rows if any(line.lambdas for line in r.paths.values())]
    if not rows:
        return None
    fig, axes = F.subplots(1, len(rows), figsize=(3.2 * len(rows) + 0.8, 3.0), squeeze=False)
    for ax, r in zip(axes[0], rows, strict=True):
        for s in styles:
            line = r.paths.get(s.key)
            if line is not None and line.lambdas and len(line.metric) == len(line.lambdas):
                y = [v if finite(v) else np.nan for v in line.metric]
                ax.plot(line.lambdas, y, color=s.color, linestyle=s.linestyle, marker=".",
                        label=s.label)  # fmt: skip
        ax.set_title(r.label, fontsize=8)
        ax.set_xlabel("position along the path (λ or t)")
    axes[0][0].set_ylabel(F.metric_label(metric_name))
    F.legend_once(axes[0][-1], outside=True)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ = ["BasinPair", "BasinUnit", "PathStyle", "render_basins"]
