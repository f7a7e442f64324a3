"""How the report draws the criticality analysis (Neyshabur et al. 2020, §3.4): per target, the μ
and rewind tables, μ bars (P-T against RI-T, log scale), rewind bars and the (α, σ) heat maps.

Read from the unit's result models (:mod:`transferscope.analyses.criticality`), imported only
when a report is drawn.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from transferscope.analyses.criticality import CriticalityEntry, KindCriticality, KindSkipped
from transferscope.unitkit.rules import finite, fmt

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from transferscope.unitkit.page import Page


def _modules(kinds: list[tuple[str, KindCriticality]], key: str = "") -> list[str]:
    """The modules of every kind, in order, each once (``key``: a per-module field to fall back
    on when a kind has no module list)."""
    out: list[str] = []
    for _, e in kinds:
        out += [m for m in e.modules or list(getattr(e, key, None) or []) if m not in out]
    return out


def criticality_bars(e: CriticalityEntry, title: str) -> Figure | None:
    """Module criticality μ per module, P-T and RI-T side by side (log scale)."""
    from transferscope.unitkit import figures as F

    kinds = e.computed()
    modules = _modules(kinds)
    if not modules:
        return None
    fig, ax = F.subplots(figsize=(6.0, 3.3))
    x = np.arange(len(modules))
    width = 0.8 / max(len(kinds), 1)
    values_all: list[float] = []
    for i, (kind, k) in enumerate(kinds):
        mu, bounds = k.mu, k.mu_bound
        values = [float(mu[m]) if finite(mu.get(m)) else np.nan for m in modules]  # type: ignore[arg-type]
        # No feasible (α, σ): μ exceeds a bound, drawn hatched up to it (never as 0).
        lower = [float(bounds[m]) if finite(bounds.get(m)) else np.nan for m in modules]
        values_all += [v for v in values + lower if not math.isnan(v)]
        offset = x + (i - (len(kinds) - 1) / 2) * width
        ax.bar(offset, values, width, color=F.COLORS[kind], label=kind)
        if any(not math.isnan(v) for v in lower):
            ax.bar(offset, lower, width, color="none", edgecolor=F.COLORS[kind], hatch="//")
        for j, m in enumerate(modules):
            label = ">" if m in mu and not finite(mu.get(m)) else "0" if mu.get(m) == 0 else None
            if label:
                # A lower bound, or μ = 0: a mark where no solid bar would be visible.
                ax.annotate(
                    label, (offset[j], 0), color=F.COLORS[kind], fontsize=12, fontweight="bold",
                    ha="center", va="bottom", xycoords=("data", "axes fraction"),
                )  # fmt: skip
    if values_all and min(values_all) > 0:
        ax.set_yscale("log")
    else:  # μ = 0 (α = 0 feasible) cannot go on a log scale
        ax.set_ylim(bottom=0, top=max([*values_all, 0.0]) * 1.1 or 1.0)
    # Modules with only "∞" have no bar: keep every slot inside the axes anyway.
    ax.set_xlim(-0.6, len(modules) - 0.4)
    ax.set_xticks(x, modules, rotation=30, ha="right")
    ax.set_xlabel("module (input → output)")
    ax.set_ylabel("module criticality μ (α²‖θ^F − θ^0‖² / σ²)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), title="∞: no feasible (α, σ)")
    return fig


def rewind_bars(e: CriticalityEntry, title: str) -> Figure | None:
    """Test metric after rewinding one module to its initial value, P-T against RI-T."""
    from transferscope.unitkit import figures as F

    kinds = [(k, c) for k, c in e.computed() if c.rewind]
    if not kinds:
        return None
    modules = _modules(kinds, "rewind")
    fig, ax = F.subplots(figsize=(6.0, 3.3))
    x = np.arange(len(modules))
    width = 0.8 / len(kinds)
    for i, (kind, c) in enumerate(kinds):
        values = [c.rewind[m] if finite(c.rewind.get(m)) else np.nan for m in modules]
        offset = x + (i - (len(kinds) - 1) / 2) * width
        ax.bar(offset, values, width, color=F.COLORS[kind], label=f"{kind} rewound")
        if finite(c.final_metric):
            ax.axhline(
                c.final_metric, color=F.COLORS[kind], linestyle="--", linewidth=1,
                label=f"{kind} final",
            )  # fmt: skip
    ax.set_xticks(x, modules, rotation=30, ha="right")
    ax.set_xlabel("module rewound to its initial value (input → output)")
    ax.set_ylabel("test metric after rewinding")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def criticality_heatmaps(e: CriticalityEntry, title: str) -> Figure | None:
    """Per module: test metric over (α = distance along θ^0 → θ^F, σ = noise level)."""
    from transferscope.unitkit import figures as F

    kinds = [(k, c) for k, c in e.computed() if c.heatmap]
    if not kinds:
        return None
    modules = [m for m in _modules(kinds, "heatmap") if any(m in c.heatmap for _, c in kinds)]
    if not modules:
        return None
    # Shared axes and a constrained layout: neighbouring panels' tick labels would collide.
    fig, axes = F.subplots(
        len(kinds), len(modules), figsize=(1.9 * len(modules) + 1.0, 1.8 * len(kinds) + 0.8),
        squeeze=False, sharex=True, sharey=True, layout="constrained",
    )  # fmt: skip
    image = None
    for r, (kind, c) in enumerate(kinds):
        for col, m in enumerate(modules):
            ax = axes[r][col]
            ax.grid(False)
            h = c.heatmap.get(m)
            rows = h.metric if h is not None else []
            grid = np.asarray([[v if finite(v) else np.nan for v in row] for row in rows], float)
            if h is None or grid.ndim != 2 or grid.size == 0:
                ax.axis("off")
                continue
            alphas, sigmas = h.alphas or [0, 1], h.sigmas or [0, 1]
            # Rows are α, columns σ: σ on x, α on y, so "further from θ^0" goes up.
            image = ax.imshow(
                grid, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1,
                extent=(min(sigmas), max(sigmas), min(alphas), max(alphas)),
            )  # fmt: skip
            dist = [v for v in h.distance if finite(v)]
            # The full α = 1 distance ‖θ^F − θ^0‖ gives the α axis a scale in parameter units.
            suffix = f"\n‖θF − θ0‖ = {max(dist):.3g}" if dist else ""
            ax.set_title(f"{kind}: {m}{suffix}", fontsize=8)
            ax.set_xticks([min(sigmas), max(sigmas)])
            ax.set_yticks([min(alphas), max(alphas)])
            if r == len(kinds) - 1:
                ax.set_xlabel("noise σ")
            if col == 0:
                ax.set_ylabel("α (0 = init, 1 = final)")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.9, label="test metric")
    fig.suptitle(title)
    return fig


def _network(c: KindCriticality) -> str:
    if finite(c.network_criticality):
        return fmt(c.network_criticality)
    bound = c.network_criticality_bound
    return f"> {fmt(bound)}" if finite(bound) else "-"


def render_entry(page: Page, target: str, e: CriticalityEntry) -> str:
    """The criticality section of one target: the μ and rewind tables, then the figures."""
    from transferscope.unitkit.page import esc, not_run, table

    computed = e.computed()
    kinds = [k for k, _ in computed]
    by_kind = dict(computed)
    skipped_parts = "".join(
        f'<p class="small">{esc(k)} skipped: {esc(c.reason)}</p>'
        for k, c in e.kinds()
        if isinstance(c, KindSkipped)
    )
    if not kinds:
        return skipped_parts or not_run("no P-T or RI-T result")
    rows = []
    for m in _modules(computed):
        row: list[Any] = [m]
        for k in kinds:
            mu = by_kind[k].mu.get(m, "-")
            bound = by_kind[k].mu_bound.get(m)
            row.append(f"> {fmt(bound)}" if mu is None else fmt(mu))
        for k in kinds:
            row.append(fmt(by_kind[k].rewind.get(m)))
        rows.append(row)
    header = ["module", *[f"μ {k}" for k in kinds], *[f"rewound metric {k}" for k in kinds]]
    summary = table(
        ("kind", "run", "network criticality", "final loss", "ε", "final metric"),
        [
            (k, c.run, _network(c), fmt(c.final_loss), fmt(c.epsilon), fmt(c.final_metric))
            for k, c in computed
        ],
        numeric=(2, 3, 4, 5),
    )
    for k, c in computed:
        if not c.final_meets_epsilon:
            summary += (
                f'<p class="notrun">{esc(k)}: the final model\'s training loss '
                f"{esc(fmt(c.final_loss))} is above ε = "
                f"{esc(fmt(c.epsilon))}: no module can be feasible.</p>"
            )
    sigmas = next((c.sigmas for _, c in computed if c.sigmas), None)
    if sigmas:
        summary += (
            f'<p class="small">σ grid: {len(sigmas)} geometric levels from '
            f"{esc(fmt(sigmas[0]))} to {esc(fmt(sigmas[-1]))}. A module with no "
            "feasible (α, σ) shows its lower bound ‖θ<sup>F</sup> − θ<sup>0</sup>‖² / "
            "min σ², and the network criticality is then a lower bound too."
            + _search_note({c.search for _, c in computed})
            + "</p>"
        )
    out = skipped_parts + summary + table(header, rows, numeric=tuple(range(1, len(header))))
    # (draw, title, file stem, caption), each about this target.
    figures = (
        (criticality_bars, "Module criticality", "criticality",
         "Module criticality μ per module, P-T and RI-T,"),
        (rewind_bars, "Rewinding one module", "rewind",
         "Test metric after rewinding one module to its initial value"),
        (criticality_heatmaps, "Performance over distance and noise", "heatmaps",
         "Test metric per module over α (init → final) and noise σ"),
    )  # fmt: skip
    for draw, title, stem, caption in figures:
        fig = draw(e, f"{title}, target {target}")
        out += page.figure(fig, f"{stem}-{target}", f"{caption} on {target}.")
    return out


def _search_note(searches: set[str]) -> str:
    """How μ was found, said where the reader can judge it (bisection assumes monotonicity)."""
    if searches <= {"pruned", "grid"}:
        return " μ is the exhaustive grid's minimum."
    note = (
        " μ is found by bisection over σ at each α (search: bisection), which assumes that a σ "
        "too large for ε makes every larger σ too large; where a noise draw breaks that, μ is "
        "higher than the exhaustive grid's (search: pruned finds the grid's μ exactly)."
    )
    return note if searches == {"bisection"} else note.replace(" μ is", " For some runs μ is", 1)


__all__ = ["criticality_bars", "criticality_heatmaps", "render_entry", "rewind_bars"]
