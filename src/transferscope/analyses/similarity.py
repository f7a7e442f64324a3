"""Feature similarity: linear CKA per layer (§3.2).

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
from transferscope.report.rules import CKA_FLOOR
from transferscope.report.rules import SAME_INIT_RULE as SAME


class SimilarityOptions(AnalysisOptions):
    layers: list[str] | None = None
    pooled: bool = False
    max_examples: int | None = Field(
        default=2000, ge=1, description="a seeded random (class-stratified) test subset"
    )
    subset_seed: int = Field(default=0, description="seed of the test subset, shared by every pair")
    max_exact_bytes: int = Field(
        default=1 << 30,
        ge=1,
        description="a layer whose exact CKA state would exceed this switches to minibatch CKA",
    )
    batch_size: int = Field(
        default=256, ge=4, description="examples per forward pass (and per minibatch-CKA batch)"
    )


@register
class Similarity(LegacyAnalysis):
    name = "similarity"
    title = "feature similarity: linear CKA per layer (§3.2)"
    section = ReportSection("similarity", "Feature similarity (§2)")
    version = 1
    Options = SimilarityOptions
    page_method = "similarity"
    claims = (
        Claim(
            "C4",
            "P-T models are more similar to each other in feature space than RI-T models.",
            "linear CKA of P-T/P-T pairs exceeds that of RI-T/RI-T pairs "
            f"{SAME} at every layer, each by more than the pair spread and {CKA_FLOOR:g}, "
            "ranges not overlapping.",
            lambda e, t, d: lc._c4(e, t),
            order=4,
        ),
    )
