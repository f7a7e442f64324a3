"""An analysis unit: everything about one analysis of a study, declared in one place.

A unit says

- its **options** (a pydantic model, the config's ``analyses.<name>`` section),
- its **result** (a pydantic model of ``analyses/<name>.json``, see :mod:`.results`) and a
  ``version`` that changes whenever the result's meaning or layout changes,
- how the result is **computed** from a study (:meth:`Analysis.compute`, reading runs through a
  :class:`~transferscope.analyses.context.StudyContext`; the math lives in
  :mod:`transferscope.analysis` as functions on tensors and modules),
- how its report **section** is drawn from the result (:meth:`Analysis.render`),
- the **claims** it decides (:class:`Claim`: rule in words, and a judge per target).

Registered once (:func:`transferscope.analyses.registry.register`), a unit appears in the
config, ``transferscope analyze --only``, the Ray tasks, the report and the findings table with
no other file touched. ``docs/extending.md`` walks through writing one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from transferscope.analyses.results import AnalysisResult, TargetEntry
from transferscope.options import AnalysisOptions

if TYPE_CHECKING:  # pragma: no cover
    from transferscope.analyses.context import StudyContext
    from transferscope.report.findings import StudyData, TargetResult
    from transferscope.report.page import Page


@dataclass(frozen=True)
class ReportSection:
    """A section of the report: several units may share one (e.g. two basin analyses)."""

    id: str
    title: str


@dataclass(frozen=True)
class Claim:
    """One claim a unit decides.

    ``judge(entry, target, data)`` turns the unit's result for one target (an ``ok`` entry of
    its result model) into a :class:`~transferscope.report.findings.TargetResult`; the findings
    table applies it to every target, marks targets without a result "not measured", and makes a
    verdict that leans on a run at chance level inconclusive.
    """

    id: str
    claim: str
    rule: str
    judge: Callable[[Any, str, StudyData], TargetResult]
    order: float = 0.0
    """Position in the findings table (claims sort by it, then by id)."""


class Analysis:
    """Base class of an analysis unit; subclass it and register an instance.

    Class attributes to set: ``name`` (the JSON's and config key's name), ``title`` (one line for
    ``--help`` and docs), ``section``, ``version``, ``Options``, ``Result``, ``claims``.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    section: ClassVar[ReportSection]
    version: ClassVar[int] = 1
    Options: ClassVar[type[AnalysisOptions]] = AnalysisOptions
    Result: ClassVar[type[AnalysisResult]] = AnalysisResult
    claims: ClassVar[tuple[Claim, ...]] = ()

    def compute(self, ctx: StudyContext, options: Any) -> AnalysisResult:
        """The result for the study ``ctx`` reads, with ``options`` (an instance of Options).

        Targets or pairs that cannot be measured get a skipped entry with the reason; runs the
        analysis needed but found unfinished are recorded through ``ctx.done``.
        """
        raise NotImplementedError

    def has_results(self, result: AnalysisResult) -> bool:
        """Whether ``result`` measured anything (else the JSON's status is 'skipped')."""
        return any(_entry_ok(entry) for entry in result.targets.values())

    def render(self, page: Page, target: str, entry: Any) -> str:
        """HTML of one target's ``ok`` entry (figures through ``page.figure``)."""
        raise NotImplementedError

    def render_section(self, page: Page, result: AnalysisResult | None) -> str:
        """The unit's part of its report section: by default one sub-section per target."""
        return page.per_target(self.name, result, self.render)


def _entry_ok(entry: TargetEntry) -> bool:
    # Entries made of pairs count when any pair was measured: an 'ok' entry whose pairs were all
    # skipped measured nothing.
    pairs = getattr(entry, "pairs", None)
    if entry.status == "ok" and pairs is None:
        return True
    return any(getattr(p, "status", None) == "ok" for p in pairs or [])


__all__ = ["Analysis", "Claim", "ReportSection"]
