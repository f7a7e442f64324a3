"""Barriers after permutation alignment (weight matching; beyond the paper).

Legacy unit: its step is in :mod:`transferscope.study.legacy_steps` and its report section in
the report's page class, until its result gets a typed model (see :mod:`.legacy`).
"""

from __future__ import annotations

from pydantic import Field

from transferscope.analyses.legacy import LegacyAnalysis
from transferscope.analyses.registry import register
from transferscope.analyses.unit import Claim, ReportSection
from transferscope.options import AnalysisOptions
from transferscope.report import legacy_claims as lc
from transferscope.report.rules import BARRIER_TOLERANCE


class AlignmentOptions(AnalysisOptions):
    """Barriers after permutation alignment (weight matching), next to the plain ones."""

    num_points: int = Field(default=21, ge=2)
    recalibrate_batchnorm: bool = True
    recalibration_examples: int | None = Field(default=2000, ge=1)
    max_sweeps: int = Field(default=100, ge=1, description="coordinate-descent sweeps at most")


@register
class Alignment(LegacyAnalysis):
    name = "alignment"
    title = "barriers after permutation alignment (weight matching; beyond the paper)"
    section = ReportSection("basins", "Basins modulo permutation and non-linear paths")
    version = 1
    Options = AlignmentOptions
    page_method = "basins"
    claims = (
        Claim(
            "C9",
            "Beyond the paper: RI-T barriers shrink after permutation alignment (Git Re-Basin).",
            "the mean RI-T/RI-T barrier (metric) on the straight line after permuting B's units to "
            "match A (weight matching) is below the plain barrier by more than twice the "
            "standard error of the difference and "
            f"{BARRIER_TOLERANCE:g}; not measured when there is no plain barrier to shrink.",
            lambda e, t, d: lc._c9(e, t),
            order=9,
        ),
    )
