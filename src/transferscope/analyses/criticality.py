"""Module criticality, rewind test and heat maps (§3.4).

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


class CriticalityOptions(AnalysisOptions):
    modules: Granularity = Field(default="auto", description=GRANULARITY_HELP)
    num_alphas: int = Field(default=11, ge=2)
    num_sigmas: int = Field(
        default=13, ge=2, description="noise levels, geometric from min_sigma to max_sigma"
    )
    noise_samples: int = Field(default=5, ge=1)
    tolerance: float = Field(default=1.01, ge=1, description="ε = tolerance × final train loss")
    max_examples: int | None = Field(default=1000, ge=1)
    epsilon: float | None = Field(
        default=None, gt=0, description="absolute loss threshold; overrides margin and tolerance"
    )
    margin: float | None = Field(
        default=None, gt=0, description="ε = final train loss + margin; overrides tolerance"
    )
    max_sigma: float = Field(default=1.0, gt=0, description="largest noise standard deviation")
    min_sigma: float | None = Field(
        default=None,
        gt=0,
        description="smallest noise standard deviation; default max_sigma / 10^4 (vanishing "
        "noise, so μ is finite whenever the final model meets ε)",
    )
    # The heat maps evaluate every cell (no search): a coarse grid keeps them cheap.
    heatmap_alphas: int = Field(default=4, ge=2)
    heatmap_sigmas: int = Field(default=4, ge=2)
    heatmap_noise_samples: int = Field(default=1, ge=1)
    eval_max_examples: int | None = Field(
        default=500, ge=1, description="test examples for the rewind test and heat maps"
    )


@register
class Criticality(LegacyAnalysis):
    name = "criticality"
    title = "module criticality, rewind test and heat maps (§3.4)"
    section = ReportSection("criticality", "Module criticality (§4)")
    version = 1
    Options = CriticalityOptions
    page_method = "criticality"
    claims = (
        Claim(
            "C7",
            "Higher modules are more critical than lower ones.",
            "Spearman ρ between module depth (input → output) and P-T's module criticality μ "
            "is positive with one-sided permutation p < 0.05, over the modules with a finite μ "
            "(the head left out).",
            lambda e, t, d: lc._c7(e, t),
            order=7,
        ),
    )
