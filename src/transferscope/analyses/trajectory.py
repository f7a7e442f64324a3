"""Fine-tuning from checkpoints of the pre-training trajectory (§3.5).

Legacy unit: its step is in :mod:`transferscope.study.legacy_steps` and its report section in
the report's page class, until its result gets a typed model (see :mod:`.legacy`).
"""

from __future__ import annotations

from pydantic import Field

from transferscope.analyses.legacy import LegacyAnalysis
from transferscope.analyses.registry import register
from transferscope.analyses.unit import Claim, ReportSection
from transferscope.options import SpeedOptions
from transferscope.report import legacy_claims as lc
from transferscope.report.rules import CHECKPOINT_TOLERANCE


class TrajectoryOptions(SpeedOptions):
    early_fraction: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="a checkpoint k is early when k <= this × the final pre-training epoch",
    )
    barrier: bool = Field(default=True, description="interpolate P@k-T to P-T (§3-§5)")
    num_points: int = Field(default=11, ge=2)
    recalibrate_batchnorm: bool = True


@register
class Trajectory(LegacyAnalysis):
    name = "trajectory"
    title = "fine-tuning from checkpoints of the pre-training trajectory (§3.5)"
    section = ReportSection("trajectory", "Pre-training trajectory (§5)")
    version = 1
    Options = TrajectoryOptions
    page_method = "trajectory"
    claims = (
        Claim(
            "C8",
            "An early pre-training checkpoint transfers as well as the final one.",
            "some early checkpoint (k at most half of pre-training, trajectory.early_fraction) "
            f"gives a P@k-T final metric no worse than P-T's of the same seed by more than {CHECKPOINT_TOLERANCE:g} "
            "(lower bound of the paired bootstrap 95% interval ≥ −"
            f"{CHECKPOINT_TOLERANCE:g}); does not hold when every early k is worse beyond it.",
            lambda e, t, d: lc._c8(d)(e, t),
            order=8,
        ),
    )
