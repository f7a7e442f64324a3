"""Performance barriers along straight lines between models (§3.3).

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


class InterpolationOptions(AnalysisOptions):
    num_points: int = Field(default=21, ge=2)
    recalibrate_batchnorm: bool = True
    recalibration_examples: int | None = Field(
        default=2000, ge=1, description="training examples for BatchNorm statistics at each λ"
    )


@register
class Interpolation(LegacyAnalysis):
    name = "interpolation"
    title = "performance barriers along straight lines between models (§3.3)"
    section = ReportSection("barriers", "Performance barriers (§3)")
    version = 1
    Options = InterpolationOptions
    page_method = "barriers"
    claims = (
        Claim(
            "C6",
            "No performance barrier between P-T models; a barrier between RI-T models, even from the "
            "same random init.",
            f"every P-T/P-T barrier (metric) ≤ {BARRIER_TOLERANCE:g}, and every RI-T/RI-T barrier, the "
            f"same-init pair's included, > {BARRIER_TOLERANCE:g} plus twice its binomial standard error "
            f"({BARRIER_TOLERANCE:g} = one point of accuracy/AUC).",
            lambda e, t, d: lc._c6(e, t),
            order=6,
        ),
    )
