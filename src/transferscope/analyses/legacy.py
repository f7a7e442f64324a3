"""Units whose results are not typed yet: their step still lives in
:mod:`transferscope.study.legacy_steps` and their section in the report's page class.

A legacy unit's result keeps every key of its JSON (``extra='allow'``), and its claims read the
plain dicts. Converting a unit means: a result model, the step's code in the unit's module, the
section's code in ``render``, the claims' rules reading the model (see ``docs/extending.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ConfigDict

from transferscope.analyses.results import AnalysisResult
from transferscope.analyses.unit import Analysis

if TYPE_CHECKING:  # pragma: no cover
    from transferscope.analyses.context import StudyContext
    from transferscope.report.page import Page


class LegacyResult(AnalysisResult):
    model_config = ConfigDict(extra="allow")


class LegacyAnalysis(Analysis):
    """A unit computed by a legacy step and drawn by a legacy page method."""

    Result = LegacyResult
    page_method: ClassVar[str | None] = None

    def compute(self, ctx: StudyContext, options: Any) -> AnalysisResult:
        from transferscope.study.legacy_steps import STEPS

        return self.Result.model_validate(STEPS[self.name](ctx))

    def has_results(self, result: AnalysisResult) -> bool:
        for entry in result.targets.values():
            if not isinstance(entry, dict):
                continue
            if entry.get("status") == "ok":
                return True
            if any(p.get("status") == "ok" for p in entry.get("pairs", [])):
                return True
            # criticality: one result per kind ('P-T', 'RI-T') under the target
            if any(isinstance(v, dict) and v.get("status") == "ok" for v in entry.values()):
                return True
        return False

    def render_section(self, page: Page, result: AnalysisResult | None) -> str:
        return getattr(page, self.page_method)() if self.page_method else ""


__all__ = ["LegacyAnalysis", "LegacyResult"]
