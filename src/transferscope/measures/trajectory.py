"""Which pre-trained checkpoint to transfer from (Neyshabur et al. 2020, §3.5).

For each point k of P's pre-training trajectory, the runs P@k-T fine-tuned from P@k give a final
target metric and an optimisation speed (epochs to reach a threshold, see
:func:`transferscope.measures.curves.time_to_threshold`); both are averaged over seeds. The study
step adds, per point, the barrier between P@k-T and P-T
(:func:`transferscope.measures.interpolation.interpolate`) and the final P-T as the last point;
the threshold is common to every point (between chance and the final P-T's metric), so that a
checkpoint whose runs never get there reads "not reached". The paper's finding: the final metric
plateaus early, often around a learning-rate drop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from transferscope.measures.curves import Run, final_metric, time_to_threshold


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(sum(finite) / len(finite)) if finite else None


def trajectory_point(runs: Sequence[Run], threshold: float | None) -> dict[str, Any]:
    """Final test metric and epochs to ``threshold``, each a mean over ``runs`` (seeds).

    Returns ``{"final_metric": float | None, "epochs_to_threshold": float | None,
    "final_metrics": [per run], "epochs": [per run, None when never reached],
    "reached": [per run]}``; the mean epochs is over the runs that reached the threshold and
    None when none did (or when ``threshold`` is None).

    Example:
        >>> from transferscope.measures.trajectory import trajectory_point
        >>> def run(*metrics):
        ...     return [{"epoch": float(e), "step": 10 * e, "split": "test", "metric": m}
        ...             for e, m in enumerate(metrics, start=1)]
        >>> point = trajectory_point([run(0.5, 0.8), run(0.4, 0.6)], threshold=0.7)
        >>> round(point["final_metric"], 4), point["epochs"], point["reached"]
        (0.7, [2.0, None], [True, False])
        >>> point["epochs_to_threshold"]  # over the runs that reached it
        2.0
    """
    finals = [final_metric(run) for run in runs]
    if threshold is None:
        times = [{"epoch": None, "reached": False} for _ in runs]
    else:
        times = [time_to_threshold(run, threshold) for run in runs]
    epochs = [t["epoch"] for t in times]
    return {
        "final_metric": _mean(finals),
        "epochs_to_threshold": _mean(epochs),
        "final_metrics": [None if math.isnan(v) else v for v in finals],
        "epochs": epochs,
        "reached": [t["reached"] for t in times],
    }


def trajectory_summary(
    points: Mapping[float, Sequence[Run]], threshold: float | None
) -> list[dict[str, Any]]:
    """:func:`trajectory_point` for every trajectory point, as ``[{"k": k, ...}]`` sorted by k.

    Args:
        points: k (pre-training epoch, fractional) -> the metrics rows of the runs fine-tuned
            from P@k (one per seed).
        threshold: the metric every point's speed is measured to (e.g.
            :func:`transferscope.measures.curves.common_threshold` of chance and the final
            P-T metric).

    Example:
        >>> from transferscope.measures.trajectory import trajectory_summary
        >>> def run(*metrics):
        ...     return [{"epoch": float(e), "step": 10 * e, "split": "test", "metric": m}
        ...             for e, m in enumerate(metrics, start=1)]
        >>> points = {4.0: [run(0.7, 0.9)], 0.0: [run(0.3, 0.6)], 1.0: [run(0.6, 0.8)]}
        >>> summary = trajectory_summary(points, threshold=0.75)
        >>> [(p["k"], p["final_metric"], p["epochs_to_threshold"]) for p in summary]
        [(0.0, 0.6, None), (1.0, 0.8, 2.0), (4.0, 0.9, 2.0)]
    """
    return [{"k": float(k), **trajectory_point(points[k], threshold)} for k in sorted(points)]


__all__ = ["trajectory_point", "trajectory_summary"]
