"""Matplotlib figures of the report, one function per plot, one style for all of them.

Every figure is written twice by :func:`save`: a PNG the HTML page shows and a PDF for papers.
P-T is always blue and RI-T always vermillion (Okabe-Ito colours, readable by colour-blind
readers); pairs take the colour of the kind they compare, so a reader learns the code once.
Functions take the JSON entries of ``analyses/<name>.json`` and return a figure, or None when the
entry holds nothing to draw.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

# Figures are built with the object API (Figure, not pyplot): no GUI backend is needed on servers
# and in CI (saving uses Agg), pyplot's global figure list is untouched, and importing this module
# never switches the backend of a user's notebook.
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure

from transferscope import atomic
from transferscope.report.findings import finite

COLORS = {
    "P-T": "#0072B2",
    "RI-T": "#D55E00",
    "P": "#009E73",
    "P@k": "#CC79A7",
    "mixed": "#555555",
}

# Pair name -> (colour, line style): pairs inside one kind take its colour.
PAIR_STYLES: dict[str, tuple[str, str]] = {
    "P-T/P-T": (COLORS["P-T"], "-"),
    "RI-T/RI-T": (COLORS["RI-T"], "-"),
    "RI-T/RI-T same init": (COLORS["RI-T"], "--"),
    "P@0-T/P@0-T": (COLORS["P@k"], "--"),
    "P-T/RI-T": (COLORS["mixed"], "-."),
    "P/P-T": (COLORS["P"], "-"),
    "P-T/P": (COLORS["P"], "-"),
    "RI-T/P": ("#E69F00", "-"),
    "P@k/P-T": (COLORS["P@k"], ":"),
    "P@k-T/P-T": ("#56B4E9", "--"),
}

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 130,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.6,
    "pdf.fonttype": 42,  # embed TrueType so the PDF text stays editable
    "svg.fonttype": "none",
}


@contextmanager
def style() -> Iterator[None]:
    """The report's matplotlib style, without touching the caller's global rcParams."""
    with matplotlib.rc_context(STYLE):
        yield


def pair_style(name: str) -> tuple[str, str]:
    """(colour, line style) of a pair name; unknown pairs are grey."""
    return PAIR_STYLES.get(name, (COLORS["mixed"], "-"))


def slug(text: str) -> str:
    """A file-name-safe version of a target or pair label (labels may hold any character)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned[:60] or "x"


def save(fig: Figure, folder: Path, stem: str, formats: Sequence[str] = ("png", "pdf")) -> str:
    """Write ``fig`` as ``folder/stem.<ext>`` for PNG and each of ``formats``, close it.

    Returns the PNG's file name (the page shows PNGs; PDF/SVG are for papers).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for ext in dict.fromkeys(("png", *formats)):
        # Atomic like every file of a study: a killed build never leaves half a figure.
        with atomic.atomic_path(folder / f"{stem}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight")
    return f"{stem}.png"


def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """Like ``pyplot.subplots`` but without pyplot (see the module's imports)."""
    fig_kwargs = {k: kwargs.pop(k) for k in ("figsize", "layout") if k in kwargs}
    fig = Figure(**fig_kwargs)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def metric_label(metric_name: str | None) -> str:
    name = metric_name or "metric"
    return f"test {name.replace('_', ' ')} (fraction, higher is better)"


def _legend_once(ax: Any, outside: bool = False) -> None:
    """A legend with each label once (several pairs of one kind share a label).

    ``outside``: to the right of the axes, for plots with many crossing lines.
    """
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, label in zip(handles, labels, strict=True):
        seen.setdefault(label, h)
    if not seen:
        return
    if outside:
        ax.legend(seen.values(), seen.keys(), loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        ax.legend(seen.values(), seen.keys())


def _checkpoint_styles(pairs: Sequence[dict[str, Any]], key: str) -> dict[float, float]:
    """Per checkpoint k, how much of its pair's colour to use: pale for early k, full for last."""
    ks = sorted({float(p[key]) for p in pairs if finite(p.get(key))})
    return {k: 0.35 + 0.65 * (i + 1) / len(ks) for i, k in enumerate(ks)}


def _pair_line(p: dict[str, Any], key: str, shades: dict[float, float]) -> tuple[str, str, str]:
    """(colour, line style, label) of one pair; P@k pairs get their k in label and shade."""
    color, ls = pair_style(p["pair"])
    k = p.get(key)
    if finite(k):
        t = shades.get(float(k), 1.0)  # the rest is white
        shade = to_hex(np.asarray(to_rgb(color)) * t + (1 - t))
        return shade, ls, f"{p['pair']} (k = {float(k):g})"
    return color, ls, p["pair"]


# ----------------------------------------------------------------------------------------------
# §1 feature reuse


def learning_curves(entry: dict[str, Any], title: str) -> Figure | None:
    """Test metric per epoch, P-T against RI-T: mean over seeds, band from min to max."""
    fig, ax = subplots(figsize=(5.0, 3.2))
    drawn = False
    for kind in ("P-T", "RI-T"):
        curve = (entry.get(kind) or {}).get("curve") or {}
        epochs, mean_ = curve.get("epoch") or [], curve.get("mean") or []
        if not epochs or len(epochs) != len(mean_):
            continue
        x = np.asarray(epochs, dtype=float)
        y = np.asarray([v if finite(v) else np.nan for v in mean_], dtype=float)
        n = (entry.get(kind) or {}).get("runs")
        label = f"{kind} (mean of {n} seeds)" if isinstance(n, int) else kind
        ax.plot(x, y, color=COLORS[kind], marker="o", markersize=3, label=label)
        lo, hi = curve.get("min"), curve.get("max")
        if lo and hi and len(lo) == len(x) == len(hi):
            lo_a = np.asarray([v if finite(v) else np.nan for v in lo], dtype=float)
            hi_a = np.asarray([v if finite(v) else np.nan for v in hi], dtype=float)
            ax.fill_between(x, lo_a, hi_a, color=COLORS[kind], alpha=0.18, linewidth=0)
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel("training epoch")
    ax.set_ylabel(metric_label(entry.get("metric_name")))
    ax.set_title(title)
    ax.legend(title="band: min–max over seeds")
    return fig


def shuffle_label(s: dict[str, Any]) -> str:
    if s.get("shuffle") is None:
        return "none"
    if s.get("pixel"):
        return "pixel *"
    return f"block {s.get('block_size')}"


def shuffle_bars(entry: dict[str, Any], title: str) -> Figure | None:
    """Relative drop (%) and speed gap (epochs) per block size / pixel shuffle."""
    shuffles = entry.get("shuffles") or []
    if len(shuffles) < 2:  # only the unshuffled point: nothing to compare
        return None
    labels = [shuffle_label(s) for s in shuffles]
    drops = [s.get("relative_drop") if finite(s.get("relative_drop")) else 0.0 for s in shuffles]
    gaps = [
        s.get("speed_gap_epochs") if finite(s.get("speed_gap_epochs")) else 0.0 for s in shuffles
    ]
    fig, axes = subplots(1, 2, figsize=(8.0, 3.0))
    x = np.arange(len(labels))
    for ax, values, ylabel in (
        (axes[0], drops, "relative drop 100·(P-T − RI-T)/P-T (%)"),
        (axes[1], gaps, "speed gap (epochs, RI-T − P-T)"),
    ):
        colors = [COLORS["P-T"] if v >= 0 else COLORS["RI-T"] for v in values]
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
# §2 opening up the model


def _ok(pairs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pairs if p.get("status", "ok") == "ok"]


# ----------------------------------------------------------------------------------------------
# §3 barriers


def interpolation_curves(entry: dict[str, Any], title: str) -> Figure | None:
    """Test metric and loss along the linear path between the two models of every pair."""
    pairs = [p for p in _ok(entry.get("pairs") or []) if p.get("lambdas")]
    if not pairs:
        return None
    fig, axes = subplots(1, 2, figsize=(9.0, 3.3))
    shades = _checkpoint_styles(pairs, "k")
    for p in pairs:
        color, ls, label = _pair_line(p, "k", shades)
        lam = np.asarray(p["lambdas"], dtype=float)
        for ax, key in ((axes[0], "metric"), (axes[1], "loss")):
            values = p.get(key) or []
            if len(values) != len(lam):
                continue
            y = [v if finite(v) else np.nan for v in values]
            ax.plot(lam, y, color=color, linestyle=ls, label=label)
    axes[0].set_ylabel(metric_label(entry.get("metric_name")))
    axes[1].set_ylabel("test loss (lower is better)")
    for ax in axes:
        ax.set_xlabel("λ: θ(λ) = (1 − λ)·θ_A + λ·θ_B")
    axes[0].set_title("metric along the path")
    axes[1].set_title("loss along the path")
    _legend_once(axes[1], outside=True)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# §4 module criticality


def computed_kinds(entry: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The P-T and RI-T results of a criticality entry that were computed (not skipped)."""
    return [
        (k, entry[k])
        for k in ("P-T", "RI-T")
        if isinstance(entry.get(k), dict) and entry[k].get("status", "ok") == "ok"
    ]


def criticality_bars(entry: dict[str, Any], title: str) -> Figure | None:
    """Module criticality μ per module, P-T and RI-T side by side (log scale)."""
    kinds = computed_kinds(entry)
    modules: list[str] = []
    for _, e in kinds:
        modules += [m for m in e.get("modules") or [] if m not in modules]
    if not modules:
        return None
    fig, ax = subplots(figsize=(6.0, 3.3))
    x = np.arange(len(modules))
    width = 0.8 / max(len(kinds), 1)
    values_all: list[float] = []
    for i, (kind, e) in enumerate(kinds):
        mu = e.get("mu") or {}
        bounds = e.get("mu_bound") or {}
        values = [float(mu[m]) if finite(mu.get(m)) else np.nan for m in modules]
        # No feasible (α, σ): μ exceeds a bound, drawn hatched up to it (never as 0).
        lower = [float(bounds[m]) if finite(bounds.get(m)) else np.nan for m in modules]
        values_all += [v for v in values + lower if not math.isnan(v)]
        offset = x + (i - (len(kinds) - 1) / 2) * width
        ax.bar(offset, values, width, color=COLORS[kind], label=kind)
        if any(not math.isnan(v) for v in lower):
            ax.bar(offset, lower, width, color="none", edgecolor=COLORS[kind], hatch="//")
        for j, m in enumerate(modules):
            label = ">" if m in mu and not finite(mu.get(m)) else "0" if mu.get(m) == 0 else None
            if label:
                # A lower bound, or μ = 0: a mark where no solid bar would be visible.
                ax.annotate(
                    label,
                    (x[j] + (i - (len(kinds) - 1) / 2) * width, 0),
                    color=COLORS[kind],
                    fontsize=12,
                    fontweight="bold",
                    ha="center",
                    va="bottom",
                    xycoords=("data", "axes fraction"),
                )
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


def rewind_bars(entry: dict[str, Any], title: str) -> Figure | None:
    """Test metric after rewinding one module to its initial value, P-T against RI-T."""
    kinds = [(k, e) for k, e in computed_kinds(entry) if e.get("rewind")]
    if not kinds:
        return None
    modules: list[str] = []
    for _, e in kinds:
        modules += [m for m in e.get("modules") or list(e["rewind"]) if m not in modules]
    fig, ax = subplots(figsize=(6.0, 3.3))
    x = np.arange(len(modules))
    width = 0.8 / len(kinds)
    for i, (kind, e) in enumerate(kinds):
        values = [e["rewind"].get(m) if finite(e["rewind"].get(m)) else np.nan for m in modules]
        ax.bar(
            x + (i - (len(kinds) - 1) / 2) * width,
            values,
            width,
            color=COLORS[kind],
            label=f"{kind} rewound",
        )
        if finite(e.get("final_metric")):
            ax.axhline(
                e["final_metric"],
                color=COLORS[kind],
                linestyle="--",
                linewidth=1,
                label=f"{kind} final",
            )
    ax.set_xticks(x, modules, rotation=30, ha="right")
    ax.set_xlabel("module rewound to its initial value (input → output)")
    ax.set_ylabel("test metric after rewinding")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def criticality_heatmaps(entry: dict[str, Any], title: str) -> Figure | None:
    """Per module: test metric over (α = distance along θ^0 → θ^F, σ = noise level)."""
    kinds = [(k, e) for k, e in computed_kinds(entry) if e.get("heatmap")]
    if not kinds:
        return None
    modules: list[str] = []
    for _, e in kinds:
        modules += [m for m in e.get("modules") or list(e["heatmap"]) if m not in modules]
    modules = [m for m in modules if any(m in e["heatmap"] for _, e in kinds)]
    if not modules:
        return None
    # Shared axes and a constrained layout: neighbouring panels' tick labels would collide.
    fig, axes = subplots(
        len(kinds),
        len(modules),
        figsize=(1.9 * len(modules) + 1.0, 1.8 * len(kinds) + 0.8),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    image = None
    for r, (kind, e) in enumerate(kinds):
        for c, m in enumerate(modules):
            ax = axes[r][c]
            ax.grid(False)
            h = e["heatmap"].get(m)
            grid = np.asarray(
                [
                    [v if finite(v) else np.nan for v in row]
                    for row in (h or {}).get("metric") or []
                ],
                dtype=float,
            )
            if h is None or grid.ndim != 2 or grid.size == 0:
                ax.axis("off")
                continue
            alphas, sigmas = h.get("alphas") or [0, 1], h.get("sigmas") or [0, 1]
            # Rows are α, columns σ: σ on x, α on y, so "further from θ^0" goes up.
            image = ax.imshow(
                grid,
                origin="lower",
                aspect="auto",
                cmap="viridis",
                vmin=0,
                vmax=1,
                extent=(min(sigmas), max(sigmas), min(alphas), max(alphas)),
            )
            dist = [v for v in h.get("distance") or [] if finite(v)]
            # The full α = 1 distance ‖θ^F − θ^0‖ gives the α axis a scale in parameter units.
            suffix = f"\n‖θF − θ0‖ = {max(dist):.3g}" if dist else ""
            ax.set_title(f"{kind}: {m}{suffix}", fontsize=8)
            ax.set_xticks([min(sigmas), max(sigmas)])
            ax.set_yticks([min(alphas), max(alphas)])
            if r == len(kinds) - 1:
                ax.set_xlabel("noise σ")
            if c == 0:
                ax.set_ylabel("α (0 = init, 1 = final)")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.9, label="test metric")
    fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------
# §5 trajectory


def trajectory_plot(
    entry: dict[str, Any], title: str, final_pt: float | None = None
) -> Figure | None:
    """Final P@k-T metric against the pre-training checkpoint k, and the P@k-T↔P-T barrier."""
    # P-T's own point (fine-tuned from the final P) is the horizontal reference line instead.
    points = sorted(
        (
            p
            for p in entry.get("points") or []
            if finite(p.get("k")) and p.get("reference") != "P-T"
        ),
        key=lambda p: p["k"],
    )
    if not points:
        return None
    ks = [p["k"] for p in points]
    fig, axes = subplots(1, 2, figsize=(9.0, 3.2))
    y = [p.get("final_metric") if finite(p.get("final_metric")) else np.nan for p in points]
    axes[0].plot(ks, y, color=COLORS["P@k"], marker="o", label="P@k-T")
    if final_pt is not None and finite(final_pt):
        axes[0].axhline(final_pt, color=COLORS["P-T"], linestyle="--", label="P-T (final P)")
    axes[0].set_ylabel(metric_label(entry.get("metric_name")))
    axes[0].set_title("final target metric")
    b = [p.get("barrier_metric") if finite(p.get("barrier_metric")) else np.nan for p in points]
    axes[1].plot(ks, b, color=COLORS["P@k"], marker="o", label="barrier P@k-T ↔ P-T (metric)")
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


# ----------------------------------------------------------------------------------------------
# beyond the paper: basins modulo permutation, non-linear paths

# The three paths between two models: the straight line, the line after permutation alignment,
# and the trained Bezier curve.
PATHS = (
    ("linear", "straight line", "#555555", "-"),
    ("aligned", "line after alignment", "#009E73", "--"),
    ("curve", "trained Bezier curve", "#CC79A7", "-."),
)


def basin_barriers(rows: Sequence[dict[str, Any]], title: str) -> Figure | None:
    """Barrier (metric) of each pair on each path: grouped bars, one group per pair.

    ``rows``: dicts with 'label' and, for the paths measured, 'linear' / 'aligned' / 'curve'
    path entries holding 'barrier_metric'.
    """
    if not any(finite((r.get(key) or {}).get("barrier_metric")) for r in rows for key, *_ in PATHS):
        return None
    fig, ax = subplots(figsize=(max(4.5, 1.3 * len(rows) + 2.0), 3.2))
    width = 0.8 / len(PATHS)
    x = np.arange(len(rows))
    for i, (key, label, color, _) in enumerate(PATHS):
        values = [(r.get(key) or {}).get("barrier_metric") for r in rows]
        heights = [float(v) if finite(v) else np.nan for v in values]
        ax.bar(x + (i - 1) * width, heights, width, color=color, label=label)
    ax.set_xticks(x, [r["label"] for r in rows], rotation=20, ha="right")
    ax.set_ylabel("barrier height (metric units)")
    ax.axhline(0, color="black", linewidth=0.8)
    _legend_once(ax, outside=True)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def basin_paths(
    rows: Sequence[dict[str, Any]], metric_name: str | None, title: str
) -> Figure | None:
    """Test metric along the straight line, the aligned line and the curve: one panel per pair."""
    rows = [r for r in rows if any((r.get(key) or {}).get("lambdas") for key, *_ in PATHS)]
    if not rows:
        return None
    fig, axes = subplots(1, len(rows), figsize=(3.2 * len(rows) + 0.8, 3.0), squeeze=False)
    for ax, r in zip(axes[0], rows, strict=True):
        for key, label, color, ls in PATHS:
            path = r.get(key) or {}
            t, values = path.get("lambdas") or [], path.get("metric") or []
            if t and len(values) == len(t):
                y = [v if finite(v) else np.nan for v in values]
                ax.plot(t, y, color=color, linestyle=ls, marker=".", label=label)
        ax.set_title(r["label"], fontsize=8)
        ax.set_xlabel("position along the path (λ or t)")
    axes[0][0].set_ylabel(metric_label(metric_name))
    _legend_once(axes[0][-1], outside=True)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ = [
    "COLORS",
    "PAIR_STYLES",
    "PATHS",
    "basin_barriers",
    "basin_paths",
    "computed_kinds",
    "criticality_bars",
    "criticality_heatmaps",
    "interpolation_curves",
    "learning_curves",
    "pair_style",
    "rewind_bars",
    "save",
    "shuffle_bars",
    "shuffle_label",
    "slug",
    "style",
    "trajectory_plot",
]
