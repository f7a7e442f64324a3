"""Common and uncommon mistakes of two models (§3.2).

Legacy unit: its step is in :mod:`transferscope.study.legacy_steps` and its report section in
the report's page class, until its result gets a typed model (see :mod:`.legacy`).
"""

from __future__ import annotations

from transferscope.analyses.legacy import LegacyAnalysis
from transferscope.analyses.registry import register
from transferscope.analyses.unit import Claim, ReportSection
from transferscope.options import AnalysisOptions
from transferscope.report import legacy_claims as lc
from transferscope.report.rules import SAME_INIT_RULE as SAME


class MistakesOptions(AnalysisOptions):
    pass


@register
class Mistakes(LegacyAnalysis):
    name = "mistakes"
    title = "common and uncommon mistakes of two models (§3.2)"
    section = ReportSection("mistakes", "Mistakes (§2)")
    version = 1
    Options = MistakesOptions
    page_method = "mistakes"
    claims = (
        Claim(
            "C3",
            "Two P-T models make fewer uncommon mistakes than two RI-T models.",
            "the fraction of uncommon mistakes (exactly one model wrong) of P-T/P-T pairs is "
            f"below that of RI-T/RI-T pairs {SAME}, each by more than the pair spread and twice "
            "the binomial error, ranges not overlapping.",
            lambda e, t, d: lc._c3(e, t),
            order=3,
        ),
    )
