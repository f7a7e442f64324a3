"""The study report: an HTML page with figures, a markdown summary, and claim-by-claim findings.

Everything here reads only the study directory (docs/study-directory.md): a report can be rebuilt at any time
without retraining or re-running an analysis.

- :func:`build_report` writes ``STUDY/report/index.html`` and its figures (PNG + PDF).
- :func:`markdown_summary` returns the run counts, analyses and findings table as markdown.
- :func:`evaluate_findings` turns the analyses into verdicts on the paper's claims C1-C8 and
  the follow-up claims C9-C10.
"""

from __future__ import annotations

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
