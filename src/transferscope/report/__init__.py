"""The study report: an HTML page with figures, a markdown summary, and claim-by-claim findings.

Everything here reads only the study directory (docs/study-directory.md): a report can be rebuilt at any time
without retraining or re-running an analysis.

- :func:`build_report` writes ``STUDY/report/index.html`` and its figures (PNG + PDF).
- :func:`markdown_summary` returns the run counts, analyses and findings table as markdown.
- :func:`evaluate_findings` turns the analyses into verdicts on the paper's claims C1-C8 and
  the follow-up claims C9-C10.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives. They are imported on first use: the analyses import
# ``transferscope.unitkit.rules`` for their verdicts, and importing the page builder (matplotlib,
# ~0.7 s) with it would slow every command that plans a study.
_HOMES = {
    "BARRIER_TOLERANCE": "findings",
    "CHECKPOINT_TOLERANCE": "findings",
    "Finding": "findings",
    "StudyData": "findings",
    "evaluate_findings": "findings",
    "load_study": "findings",
    "build_report": "html",
    "markdown_summary": "markdown",
}

if TYPE_CHECKING:  # pragma: no cover
    from transferscope.report.findings import (
        BARRIER_TOLERANCE,
        CHECKPOINT_TOLERANCE,
        Finding,
        StudyData,
        evaluate_findings,
        load_study,
    )
    from transferscope.report.html import build_report
    from transferscope.report.markdown import markdown_summary


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BARRIER_TOLERANCE",
    "CHECKPOINT_TOLERANCE",
    "Finding",
    "StudyData",
    "build_report",
    "evaluate_findings",
    "load_study",
    "markdown_summary",
]
