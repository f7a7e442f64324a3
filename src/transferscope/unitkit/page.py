"""Building blocks of the report page that analysis units draw their sections with.

Everything that comes from the config or the data (target labels, run ids, pair names,
reasons) goes through :func:`esc`, so a label such as ``<script>`` shows as text; markup built
here from escaped parts is wrapped in :class:`Raw` to be inserted as is.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from transferscope import paths
from transferscope.unitkit import figures as F
from transferscope.unitkit.figure_saver import FigureSaver
from transferscope.unitkit.results import AnalysisResult, Skipped
from transferscope.unitkit.study_data import StudyData


def esc(value: Any) -> str:
    """HTML-escape anything (quotes too, since values also land in attributes)."""
    return html.escape(str(value), quote=True)


class Raw:
    """Markup built here from escaped parts, inserted into a table as is."""

    def __init__(self, markup: str) -> None:
        self.html = markup


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    numeric: Sequence[int] = (),
    table_id: str | None = None,
) -> str:
    """A table; cells are escaped, except those already wrapped as :class:`Raw`."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in numeric else ""
            text = cell.html if isinstance(cell, Raw) else esc(cell)
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def not_run(reason: str) -> str:
    return f'<p class="notrun"><strong>not run</strong>: {esc(reason)}</p>'


class Page:
    """The page being built: the study's data, and figures written as sections draw them."""

    def __init__(
        self,
        data: StudyData,
        out: Path,
        formats: Sequence[str] = ("png", "pdf"),
        saver: FigureSaver | None = None,
    ) -> None:
        self.data = data
        self.figures = out / paths.FIGURES
        self.formats = tuple(formats)
        self.used: set[str] = set()
        self.saver = saver or FigureSaver(workers=1)
        """Writes figures: in worker processes while the page goes on, or here, at once."""

    def figure(self, fig: Any, stem: str, caption: str) -> str:
        """Save ``fig`` (None: nothing to draw) and return its <figure> markup."""
        if fig is None:
            return ""
        # Unique file names even when two target labels slug to the same text.
        name, i = F.slug(stem), 1
        while name in self.used:
            i += 1
            name = f"{F.slug(stem)}-{i}"
        self.used.add(name)
        png = self.saver.save(fig, self.figures, name, self.formats)
        links = "".join(
            f' (<a href="{paths.FIGURES}/{esc(name)}.{esc(ext)}">{esc(ext.upper())}</a>)'
            for ext in self.formats
            if ext != "png"
        )
        return (
            f'<figure><img src="{paths.FIGURES}/{esc(png)}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}{links}</figcaption></figure>"
        )

    def per_target(
        self,
        name: str,
        result: AnalysisResult | None,
        render: Callable[[Page, str, Any], str],
    ) -> str:
        """A unit's section body: 'not run' and why, or one sub-section per target drawn by
        ``render(page, target, entry)`` from each target's ``ok`` entry."""
        reason = self.data.not_run_reason(name)
        if reason is not None or result is None:
            return not_run(reason or "no result")
        parts = []
        for target in [
            *self.data.targets,
            *(t for t in result.targets if t not in self.data.targets),
        ]:
            entry = result.targets.get(target)
            parts.append(f"<h3>Target {esc(target)}</h3>")
            if entry is None:
                parts.append(not_run(f"no entry for target {target} in {name}.json"))
            elif isinstance(entry, Skipped):
                parts.append(not_run(entry.reason or entry.status))
            elif isinstance(entry, dict) and entry.get("status", "ok") != "ok":
                parts.append(not_run(str(entry.get("reason", "skipped"))))
            else:
                parts.append(render(self, target, entry))
        if result.runs_missing:
            parts.append(
                f'<p class="small">Runs this analysis needed that had not finished: '
                f"{esc(', '.join(result.runs_missing))}</p>"
            )
        return "".join(parts)


__all__ = ["Page", "Raw", "esc", "not_run", "table"]
