"""Parameter distance, whole network and per module (§3.2).

Legacy unit: its step is in :mod:`transferscope.study.legacy_steps` and its report section in
the report's page class, until its result gets a typed model (see :mod:`.legacy`).
"""

from __future__ import annotations

from pydantic import Field

from transferscope.analyses.legacy import LegacyAnalysis
from transferscope.analyses.registry import register
from transferscope.analyses.unit import Claim, ReportSection
from transferscope.options import GRANULARITY_HELP, AnalysisOptions, Granularity
from transferscope.report import legacy_claims as lc
from transferscope.report.rules import DISTANCE_FLOOR
from transferscope.report.rules import SAME_INIT_RULE as SAME


class DistanceOptions(AnalysisOptions):
    modules: Granularity = Field(default="auto", description=GRANULARITY_HELP)


@register
class Distance(LegacyAnalysis):
    name = "distance"
    title = "parameter distance, whole network and per module (§3.2)"
    section = ReportSection("distance", "Parameter distance (§2)")
    version = 1
    Options = DistanceOptions
    page_method = "distance"
    claims = (
        Claim(
            "C5",
            "P-T models are closer to each other in parameter space, and their distance to P grows "
            "with depth.",
            f"whole-network distance of P-T/P-T pairs is below that of RI-T/RI-T pairs {SAME} "
            f"(beyond the pair spread and {DISTANCE_FLOOR:.0%}), and the size-normalised change "
            "‖θ_P-T − θ_P‖/‖θ_P‖ per module rises with depth (Spearman ρ, one-sided "
            "permutation p < 0.05; head and Fixup scalars left out).",
            lambda e, t, d: lc._c5(d)(e, t),
            order=5,
        ),
    )
