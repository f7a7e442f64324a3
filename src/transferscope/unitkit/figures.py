"""Matplotlib figures of the report, one function per plot, one style for all of them.

Every figure is written twice by :func:`save`: a PNG the HTML page shows and a PDF for papers.
P-T is always blue and RI-T always vermillion (Okabe-Ito colours, readable by colour-blind
readers); pairs take the colour of the kind they compare, so a reader learns the code once.
Functions take the JSON entries of ``analyses/<name>.json`` and return a figure, or None when the
entry holds nothing to draw.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

# Figures are built with the object API (Figure, not pyplot): no GUI backend is needed on servers
# and in CI (saving uses Agg), pyplot's global figure list is untouched, and importing this module
# never switches the backend of a user's notebook.
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure

from transferscope import atomic
from transferscope.unitkit.rules import finite

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

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

STYLE: dict[RcKeyType, Any] = {
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


def legend_once(ax: Any, outside: bool = False) -> None:
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


def checkpoint_styles(pairs: Sequence[dict[str, Any]], key: str) -> dict[float, float]:
    """Per checkpoint k, how much of its pair's colour to use: pale for early k, full for last."""
    ks = sorted({float(p[key]) for p in pairs if finite(p.get(key))})
    return {k: 0.35 + 0.65 * (i + 1) / len(ks) for i, k in enumerate(ks)}


def pair_line(p: dict[str, Any], key: str, shades: dict[float, float]) -> tuple[str, str, str]:
    """(colour, line style, label) of one pair; P@k pairs get their k in label and shade."""
    color, ls = pair_style(p["pair"])
    k: Any = p.get(key)  # a JSON value: finite() checks it before any use
    if finite(k):
        t = shades.get(float(k), 1.0)  # the rest is white
        r, g, b = (c * t + (1 - t) for c in to_rgb(color))
        shade = to_hex((r, g, b))
        return shade, ls, f"{p['pair']} (k = {float(k):g})"
    return color, ls, p["pair"]


__all__ = [
    "COLORS",
    "PAIR_STYLES",
    "checkpoint_styles",
    "legend_once",
    "metric_label",
    "pair_line",
    "pair_style",
    "save",
    "slug",
    "style",
    "subplots",
]
