"""Which pre-trained checkpoint to transfer from (PAPER.md §5).

For each point k of P's pre-training trajectory, the runs P@k-T fine-tuned from P@k give a final
target metric and an optimisation speed (epochs to reach a fraction of the final metric, see
:func:`transferscope.analysis.curves.convergence_speed`); both are averaged over seeds. The study
step (``transferscope.study.analyze``) adds, per point, the barrier between P@k-T and P-T
(:func:`transferscope.analysis.interpolation.interpolate`) and the final P-T as the last point.
The paper's finding: the final metric plateaus early, often around a learning-rate drop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from transferscope.analysis.curves import Run, convergence_speed, final_metric


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(sum(finite) / len(finite)) if finite else None


def trajectory_point(runs: Sequence[Run], fraction: float = 0.95) -> dict[str, Any]:
    """Final test metric and epochs to ``fraction`` of it, each a mean over ``runs`` (seeds).

    Returns ``{"final_metric": float | None, "epochs_to_fraction": float | None,
    "final_metrics": [per run], "epochs": [per run, None when never reached]}``; a mean leaves
    out runs without a value and is None when no run has one.
    """
    finals = [final_metric(run) for run in runs]
    epochs = [convergence_speed(run, fraction)["epoch"] for run in runs]
    return {
        "final_metric": _mean(finals),
        "epochs_to_fraction": _mean([e for e in epochs if e is not None]),
        "final_metrics": [None if math.isnan(v) else v for v in finals],
        "epochs": epochs,
    }


def trajectory_summary(
    points: Mapping[float, Sequence[Run]], fraction: float = 0.95
) -> list[dict[str, Any]]:
    """:func:`trajectory_point` for every trajectory point, as ``[{"k": k, ...}]`` sorted by k.

    Args:
        points: k (pre-training epoch, fractional) -> the metrics rows of the runs fine-tuned
            from P@k (one per seed).
        fraction: in (0, 1], for the optimisation speed.
    """
    return [{"k": float(k), **trajectory_point(points[k], fraction)} for k in sorted(points)]


__all__ = ["trajectory_point", "trajectory_summary"]
