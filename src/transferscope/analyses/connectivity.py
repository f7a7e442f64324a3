"""Non-linear low-loss paths: quadratic Bezier curves (beyond the paper).

Legacy unit: its step is in :mod:`transferscope.study.legacy_steps` and its report section in
the report's page class, until its result gets a typed model (see :mod:`.legacy`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from transferscope.analyses.legacy import LegacyAnalysis
from transferscope.analyses.registry import register
from transferscope.analyses.unit import Claim, ReportSection
from transferscope.options import AnalysisOptions
from transferscope.report import legacy_claims as lc
from transferscope.report.rules import BARRIER_TOLERANCE

CurvePair = Literal["RI-T/RI-T", "P-T/RI-T", "P-T/P-T"]


class ConnectivityOptions(AnalysisOptions):
    """Quadratic Bezier curves trained between two models (non-linear low-loss paths)."""

    pairs: list[CurvePair] = Field(default_factory=lambda: ["RI-T/RI-T", "P-T/RI-T"])
    epochs: int = Field(default=10, ge=0, description="curve training epochs")
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_train_examples: int | None = Field(
        default=None, ge=1, description="train the curve on a fixed random subset of this size"
    )
    num_points: int = Field(default=11, ge=2, description="points along the curve evaluated")
    recalibrate_batchnorm: bool = True
    recalibration_examples: int | None = Field(default=2000, ge=1)


@register
class Connectivity(LegacyAnalysis):
    name = "connectivity"
    title = "non-linear low-loss paths: quadratic Bezier curves (beyond the paper)"
    section = ReportSection("basins", "Basins modulo permutation and non-linear paths")
    version = 1
    Options = ConnectivityOptions
    page_method = None
    claims = (
        Claim(
            "C10",
            "Beyond the paper: a non-linear low-loss path joins two RI-T models (Garipov et al. "
            "2018).",
            f"every RI-T/RI-T trained quadratic Bezier curve has a barrier (metric) ≤ {BARRIER_TOLERANCE:g}; "
            f"does not hold when one exceeds {BARRIER_TOLERANCE:g} by more than twice its standard error.",
            lambda e, t, d: lc._c10(e, t),
            order=10,
        ),
    )
