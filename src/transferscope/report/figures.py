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
from transferscope.report.findings import depth_order, finite

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
# §2 opening up the model


def _ok(pairs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pairs if p.get("status", "ok") == "ok"]


def cka_lines(entry: dict[str, Any], title: str) -> Figure | None:
    """Linear CKA per layer, one line per pair of models."""
    pairs = [p for p in _ok(entry.get("pairs") or []) if p.get("cka")]
    if not pairs:
        return None
    layers: list[str] = []
    for p in pairs:
        layers += [n for n in p["cka"] if n not in layers]
    layers = depth_order(layers) or layers
    fig, ax = subplots(figsize=(5.0, 3.2))
    x = np.arange(len(layers))
    for p in pairs:
        color, ls = pair_style(p["pair"])
        y = [p["cka"].get(n) if finite(p["cka"].get(n)) else np.nan for n in layers]
        ax.plot(x, y, color=color, linestyle=ls, marker="o", markersize=3, label=p["pair"])
    ax.set_xticks(x, layers, rotation=30, ha="right")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel("linear CKA (0 = unrelated, 1 = identical)")
    ax.set_title(title)
    _legend_once(ax, outside=True)
    return fig


def distance_modules(
    entry: dict[str, Any], title: str, reference: Sequence[str] | None = None
) -> Figure | None:
    """Per-module L2 parameter distance, one line per pair (log scale: RI-T is far away)."""
    pairs = [p for p in _ok(entry.get("pairs") or []) if p.get("per_module")]
    if not pairs:
        return None
    names: list[str] = []
    for p in pairs:
        names += [n for n in p["per_module"] if n not in names]
    modules = depth_order(names, reference)
    if not modules:
        return None
    fig, ax = subplots(figsize=(6.0, 3.4))
    x = np.arange(len(modules))
    positive = False
    shades = _checkpoint_styles(pairs, "checkpoint")
    for p in pairs:
        color, ls, label = _pair_line(p, "checkpoint", shades)
        y = [p["per_module"].get(m) for m in modules]
        y = [v if finite(v) and v > 0 else np.nan for v in y]
        positive = positive or any(not math.isnan(v) for v in y)
        ax.plot(x, y, color=color, linestyle=ls, marker="o", markersize=3, label=label)
    if positive:
        ax.set_yscale("log")
    ax.set_xticks(x, modules, rotation=30, ha="right")
    ax.set_xlabel("module (input → output)")
    ax.set_ylabel("L2 distance of the module's parameters")
    ax.set_title(title)
    _legend_once(ax, outside=True)
    return fig


def image_grid(
    images: np.ndarray, title: str, captions: Sequence[str] | None = None, columns: int = 8
) -> Figure | None:
    """Test images (N, C, H, W) or (N, H, W), each min-max scaled to [0, 1] on its own.

    The mistakes step stores normalised tensors; per-image min-max scaling makes them viewable
    without knowing the dataset's normalisation.
    """
    arr = np.asarray(images, dtype=float)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[0] == 0:
        return None
    arr = arr[:32]
    n, _, h, w = arr.shape
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    rgb = arr.shape[1] >= 3
    # One montage in one axes: drawing 32 small axes took most of the report's time.
    gap, band = max(1, h // 14), (max(4, h // 3) if captions is not None else 0)
    cell_h, cell_w = band + h + gap, w + gap
    canvas = np.ones((rows * cell_h, cols * cell_w, 3))
    for i in range(n):
        img = arr[i, :3] if rgb else arr[i, :1]
        lo, hi = np.nanmin(img), np.nanmax(img)
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        tile = np.transpose(img, (1, 2, 0)) if rgb else np.repeat(img[0][:, :, None], 3, axis=2)
        r, c = divmod(i, cols)
        canvas[r * cell_h + band : r * cell_h + band + h, c * cell_w : c * cell_w + w] = tile
    fig, ax = subplots(figsize=(1.1 * cols, 1.25 * rows))
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    if captions is not None:
        for i, caption in enumerate(captions[:n]):
            r, c = divmod(i, cols)
            ax.text(
                c * cell_w + w / 2, r * cell_h + band - 1, caption,
                ha="center", va="bottom", fontsize=7,
            )  # fmt: skip
    fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ = [
    "COLORS",
    "PAIR_STYLES",
    "cka_lines",
    "distance_modules",
    "image_grid",
    "pair_style",
    "save",
    "slug",
    "style",
]
