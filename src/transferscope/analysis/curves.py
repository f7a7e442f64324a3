"""Learning curves, convergence speed and the shuffle gap (PAPER.md §1).

Every function works on lists of metrics rows as the trainer writes them to ``metrics.jsonl``
(``{"epoch": float, "step": int, "split": "test", "metric": float, ...}``); a *run* is one such
list. Metrics are higher-is-better (accuracy, mean AUC) and assumed positive: "reaching a fraction
of the final metric" and the relative drop divide by them.

- :func:`aggregate_curves`: mean and spread (std, min, max) of several runs' test metric per epoch.
- :func:`convergence_speed`: the first epoch (and step) at which a run's metric reaches ``fraction``
  of its own final metric: the paper's "P-T converges faster" measured per run.
- :func:`compare_curves`: P-T against RI-T on one target (curves, speeds, relative drop, speed gap).
- :func:`shuffle_gaps`: :func:`compare_curves` per block size / pixel shuffle, in paper order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from transferscope.errors import TransferscopeError

Row = Mapping[str, Any]
Run = Sequence[Row]

# Epochs are fractional (e.g. 0.125); runs evaluated at "the same" epoch may differ in the last
# floating-point digits (step / steps_per_epoch), so they are aligned after rounding.
_EPOCH_DIGITS = 9


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def metric_rows(run: Run, split: str = "test") -> list[Row]:
    """The rows of ``split`` with a finite metric, ordered by step (then epoch)."""
    rows = [r for r in run if r.get("split", "test") == split and _finite(r.get("metric"))]
    return sorted(rows, key=lambda r: (r.get("step", 0), r["epoch"]))


def final_metric(run: Run, split: str = "test") -> float:
    """The metric of the run's last evaluation on ``split`` (NaN if it has none)."""
    rows = metric_rows(run, split)
    return float(rows[-1]["metric"]) if rows else float("nan")


def convergence_speed(run: Run, fraction: float = 0.95, split: str = "test") -> dict[str, Any]:
    """When a run first reaches ``fraction`` of its final metric (PAPER.md §1, optimisation speed).

    Args:
        run: the run's metrics rows.
        fraction: in (0, 1]; 0.95 means "95% of the final test metric".
        split: which rows to read.

    Returns:
        ``{"epoch": float | None, "step": int | None, "threshold": float, "final_metric": float}``:
        the first evaluation (in steps) whose metric is >= ``fraction`` x final metric; epoch and
        step are None when the run has no finite metric.
    """
    if not 0 < fraction <= 1:
        raise TransferscopeError(f"fraction must be in (0, 1], got {fraction}")
    rows = metric_rows(run, split)
    final = float(rows[-1]["metric"]) if rows else float("nan")
    threshold = fraction * final
    for r in rows:
        if r["metric"] >= threshold:
            return {
                "epoch": float(r["epoch"]),
                "step": int(r["step"]) if r.get("step") is not None else None,
                "threshold": threshold,
                "final_metric": final,
            }
    return {"epoch": None, "step": None, "threshold": threshold, "final_metric": final}


def aggregate_curves(runs: Sequence[Run], split: str = "test") -> dict[str, list[Any]]:
    """Mean and spread over runs (seeds) of the metric at each evaluated epoch.

    Runs are aligned on their epoch values (rounded to 1e-9). An epoch evaluated by only some runs
    is kept; ``count`` says how many runs contributed to it.

    Returns:
        ``{"epoch", "mean", "std", "min", "max", "count"}``, lists of equal length ordered by epoch.
        ``std`` is the sample standard deviation (ddof 1; 0 for a single run).
    """
    by_epoch: dict[float, list[float]] = {}
    for run in runs:
        seen: dict[float, float] = {}
        for r in metric_rows(run, split):
            # A run evaluated twice at one epoch (e.g. a resume) counts once: the later row.
            seen[round(float(r["epoch"]), _EPOCH_DIGITS)] = float(r["metric"])
        for epoch, value in seen.items():
            by_epoch.setdefault(epoch, []).append(value)
    out: dict[str, list[Any]] = {k: [] for k in ("epoch", "mean", "std", "min", "max", "count")}
    for epoch in sorted(by_epoch):
        values = np.asarray(by_epoch[epoch], dtype=np.float64)
        out["epoch"].append(epoch)
        out["mean"].append(float(values.mean()))
        out["std"].append(float(values.std(ddof=1)) if len(values) > 1 else 0.0)
        out["min"].append(float(values.min()))
        out["max"].append(float(values.max()))
        out["count"].append(len(values))
    return out


def relative_drop(metric_pt: float, metric_rit: float) -> float:
    """The paper's headline shuffle number: 100 (A(P-T) - A(RI-T)) / A(P-T), in percent.

    Positive when P-T is better. NaN when A(P-T) is zero or not finite.
    """
    if not (_finite(metric_pt) and _finite(metric_rit)) or metric_pt == 0:
        return float("nan")
    return 100.0 * (metric_pt - metric_rit) / metric_pt


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _side(runs: Sequence[Run], fraction: float, split: str, with_curve: bool) -> dict[str, Any]:
    speeds = [convergence_speed(run, fraction, split) for run in runs]
    finals = [s["final_metric"] for s in speeds]
    side: dict[str, Any] = {
        "runs": len(runs),
        "final_metric": finals,
        "final_metric_mean": _mean(finals),
        "epochs_to_fraction": [s["epoch"] for s in speeds],
        "steps_to_fraction": [s["step"] for s in speeds],
        "epochs_to_fraction_mean": _mean([s["epoch"] for s in speeds]),
        "steps_to_fraction_mean": _mean([s["step"] for s in speeds]),
    }
    if with_curve:
        side["curve"] = aggregate_curves(runs, split)
    return side


def compare_curves(
    pt_runs: Sequence[Run],
    rit_runs: Sequence[Run],
    fraction: float = 0.95,
    split: str = "test",
    with_curves: bool = True,
) -> dict[str, Any]:
    """P-T against RI-T on one target (PAPER.md §1: "P-T is better and converges faster").

    Args:
        pt_runs: metrics rows of each P-T run (one per seed).
        rit_runs: metrics rows of each RI-T run (one per seed).
        fraction: convergence threshold as a fraction of each run's own final metric.
        split: which rows to read.
        with_curves: include the per-epoch mean / spread curves.

    Returns:
        ``{"P-T": side, "RI-T": side, "relative_drop": float, "speed_gap_epochs": float | None,
        "speed_gap_steps": float | None, "fraction": float}``. Each side holds per-run final
        metrics and epochs / steps to ``fraction``, their means, and (``with_curves``) the curve of
        :func:`aggregate_curves`. ``relative_drop`` compares the mean final metrics (percent);
        ``speed_gap_epochs`` is RI-T's mean epochs-to-fraction minus P-T's (positive: P-T is
        faster). Steps depend on the batch size, which may differ between P-T and RI-T.
    """
    pt = _side(pt_runs, fraction, split, with_curves)
    rit = _side(rit_runs, fraction, split, with_curves)

    def gap(key: str) -> float | None:
        a, b = rit[key], pt[key]
        return None if a is None or b is None else a - b

    drop = (
        relative_drop(pt["final_metric_mean"], rit["final_metric_mean"])
        if pt["final_metric_mean"] is not None and rit["final_metric_mean"] is not None
        else float("nan")
    )
    return {
        "P-T": pt,
        "RI-T": rit,
        "fraction": fraction,
        "relative_drop": drop,
        "speed_gap_epochs": gap("epochs_to_fraction_mean"),
        "speed_gap_steps": gap("steps_to_fraction_mean"),
    }


_BLOCK = re.compile(r"b(\d+)")


def shuffle_block_size(label: str | None) -> int | None:
    """Block size of a shuffle label: 'b7' -> 7; 'pixel' and None (no shuffle) -> None."""
    if label is None or label == "pixel":
        return None
    match = _BLOCK.fullmatch(label)
    if match is None:
        raise TransferscopeError(f"unknown shuffle label '{label}'; expected 'b<size>' or 'pixel'")
    return int(match.group(1))


def _paper_order(label: str | None) -> tuple[int, float]:
    # Unshuffled first, then blocks from large to small, pixel shuffle last (as the paper plots).
    if label is None:
        return (0, 0.0)
    if label == "pixel":
        return (2, 0.0)
    size = shuffle_block_size(label)
    assert size is not None
    return (1, -float(size))


def shuffle_gaps(
    by_shuffle: Mapping[str | None, tuple[Sequence[Run], Sequence[Run]]],
    fraction: float = 0.95,
    split: str = "test",
) -> list[dict[str, Any]]:
    """Relative drop and speed gap per block size / pixel shuffle (PAPER.md §1, block shuffling).

    Args:
        by_shuffle: shuffle label ('b7', 'pixel', or None for the unshuffled data) ->
            (P-T runs, RI-T runs), each a list of metrics-row lists.
        fraction: convergence threshold (see :func:`convergence_speed`).

    Returns:
        One entry per shuffle, unshuffled first, then block sizes from large to small, pixel last:
        ``{"shuffle": label | None, "block_size": int | None, "pixel": bool}`` plus the fields of
        :func:`compare_curves` without curves.
    """
    out = []
    for label in sorted(by_shuffle, key=_paper_order):
        pt_runs, rit_runs = by_shuffle[label]
        entry: dict[str, Any] = {
            "shuffle": label,
            "block_size": shuffle_block_size(label),
            "pixel": label == "pixel",
        }
        entry.update(compare_curves(pt_runs, rit_runs, fraction, split, with_curves=False))
        out.append(entry)
    return out


__all__ = [
    "aggregate_curves",
    "compare_curves",
    "convergence_speed",
    "final_metric",
    "metric_rows",
    "relative_drop",
    "shuffle_block_size",
    "shuffle_gaps",
]
