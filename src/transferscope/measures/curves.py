"""Learning curves, convergence speed and the shuffle gap (Neyshabur et al. 2020, §3.1).

Every function works on lists of metrics rows as the trainer writes them to ``metrics.jsonl``
(``{"epoch": float, "step": int, "split": "test", "metric": float, ...}``); a *run* is one such
list. Metrics are higher-is-better (accuracy, mean AUC) and assumed positive: the relative drop
divides by them.

Convergence speed is measured against one threshold common to the runs compared: ``chance +
fraction × (lower mean final metric − chance)`` (chance = 1/classes, or AUC 0.5). Each run's
speed is the training time (epochs and steps) at which it first reaches that threshold; a run
that never does is "not reached", never fast. A fraction of each run's *own* final metric would
call a run that barely learns fast, and with a step schedule every run crosses just after the
drop: comparable numbers need one absolute bar.

- :func:`aggregate_curves`: mean and spread (std, min, max) of several runs' test metric per epoch.
- :func:`common_threshold` and :func:`time_to_threshold`: the bar and when a run first clears it.
- :func:`area_between`: the mean gap between two learning curves over their common epochs.
- :func:`compare_curves`: P-T against RI-T on one target (curves, speeds, relative drop, gaps).
- :func:`shuffle_gaps`: :func:`compare_curves` per block size / pixel shuffle, in paper order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from transferscope.errors import TransferscopeError
from transferscope.training.metrics import chance_metric

Row = Mapping[str, Any]
Run = Sequence[Row]

# Epochs are fractional (e.g. 0.125); runs evaluated at "the same" epoch may differ in the last
# floating-point digits (step / steps_per_epoch), so they are aligned after rounding.
_EPOCH_DIGITS = 9
DEFAULT_FRACTION = 0.9


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def metric_rows(run: Run, split: str = "test") -> list[Row]:
    """The rows of ``split`` with a finite metric, ordered by step (then epoch).

    Example:
        >>> from transferscope.measures.curves import metric_rows
        >>> run = [
        ...     {"epoch": 2.0, "step": 20, "split": "test", "metric": 0.8},
        ...     {"epoch": 1.0, "step": 10, "split": "test", "metric": 0.5},
        ...     {"epoch": 1.0, "step": 10, "split": "train", "metric": 0.6},
        ...     {"epoch": 3.0, "step": 30, "split": "test", "metric": float("nan")},
        ... ]
        >>> [(r["step"], r["metric"]) for r in metric_rows(run)]
        [(10, 0.5), (20, 0.8)]
        >>> [r["metric"] for r in metric_rows(run, "train")]
        [0.6]
    """
    rows = [r for r in run if r.get("split", "test") == split and _finite(r.get("metric"))]
    return sorted(rows, key=lambda r: (r.get("step", 0), r["epoch"]))


def final_metric(run: Run, split: str = "test") -> float:
    """The metric of the run's last evaluation on ``split`` (NaN if it has none).

    Example:
        >>> from transferscope.measures.curves import final_metric
        >>> run = [
        ...     {"epoch": 1.0, "step": 10, "split": "test", "metric": 0.5},
        ...     {"epoch": 2.0, "step": 20, "split": "test", "metric": 0.8},
        ... ]
        >>> final_metric(run)
        0.8
        >>> final_metric(run, split="train")
        nan
    """
    rows = metric_rows(run, split)
    return float(rows[-1]["metric"]) if rows else float("nan")


def common_threshold(
    chance: float, finals: Sequence[float], fraction: float, floor: float | None = None
) -> float | None:
    """``chance + fraction × (min(finals) − chance)``: a bar every compared side can clear.

    Args:
        chance: the metric of a model that learned nothing (:func:`chance_metric`).
        finals: the final metric of each side compared (e.g. the mean over P-T's seeds and over
            RI-T's).
        fraction: in (0, 1]; 0.9 puts the bar 90% of the way from chance to the lower final.
        floor: the top of the chance band (chance plus the test set's noise): a side that ends
            at or below it learned nothing measurable, so the bar comes from the sides that did,
            and such a side is "not reached" unless it clears that bar (Neyshabur et al. 2020
            compare speed among models that learn; a model that never does is slower).

    Returns:
        The threshold, or None when no side ends above chance (and the floor): there is no bar
        above chance that a side reaches, so speed cannot be compared.

    Example:
        >>> from transferscope.measures.curves import common_threshold
        >>> round(common_threshold(0.1, [0.9, 0.7], fraction=0.5), 4)  # halfway to 0.7
        0.4
        >>> common_threshold(0.5, [0.5, 0.9], fraction=0.9) is None  # a side at chance
        True
        >>> round(common_threshold(0.5, [0.52, 0.9], fraction=0.5, floor=0.55), 4)
        0.7
    """
    if not 0 < fraction <= 1:
        raise TransferscopeError(f"fraction must be in (0, 1], got {fraction}")
    values = [float(f) for f in finals if _finite(f)]
    if floor is not None:
        values = [v for v in values if v > floor]
    if not values or min(values) <= chance:
        return None
    return chance + fraction * (min(values) - chance)


def time_to_threshold(run: Run, threshold: float, split: str = "test") -> dict[str, Any]:
    """When a run's metric first reaches ``threshold`` (Neyshabur et al. 2020, §3.1, speed).

    Returns:
        ``{"epoch": float | None, "step": int | None, "reached": bool}``: the first evaluation
        (in steps) whose metric is >= ``threshold``; None and ``reached`` False when none is.

    Example:
        >>> from transferscope.measures.curves import time_to_threshold
        >>> run = [
        ...     {"epoch": 1.0, "step": 10, "split": "test", "metric": 0.5},
        ...     {"epoch": 2.0, "step": 20, "split": "test", "metric": 0.8},
        ... ]
        >>> time_to_threshold(run, 0.7)
        {'epoch': 2.0, 'step': 20, 'reached': True}
        >>> time_to_threshold(run, 0.9)
        {'epoch': None, 'step': None, 'reached': False}
    """
    for r in metric_rows(run, split):
        if r["metric"] >= threshold:
            step = int(r["step"]) if r.get("step") is not None else None
            return {"epoch": float(r["epoch"]), "step": step, "reached": True}
    return {"epoch": None, "step": None, "reached": False}


def aggregate_curves(runs: Sequence[Run], split: str = "test") -> dict[str, list[Any]]:
    """Mean and spread over runs (seeds) of the metric at each evaluated epoch.

    Runs are aligned on their epoch values (rounded to 1e-9). An epoch evaluated by only some runs
    is kept; ``count`` says how many runs contributed to it.

    Returns:
        ``{"epoch", "mean", "std", "min", "max", "count"}``, lists of equal length ordered by epoch.
        ``std`` is the sample standard deviation (ddof 1; 0 for a single run).

    Example:
        >>> from transferscope.measures.curves import aggregate_curves
        >>> def run(*metrics):
        ...     return [{"epoch": float(e), "step": 10 * e, "split": "test", "metric": m}
        ...             for e, m in enumerate(metrics, start=1)]
        >>> curve = aggregate_curves([run(0.6, 0.8), run(0.5, 0.8, 0.9)])
        >>> curve["epoch"], curve["count"]
        ([1.0, 2.0, 3.0], [2, 2, 1])
        >>> [round(m, 4) for m in curve["mean"]], [round(s, 4) for s in curve["std"]]
        ([0.55, 0.8, 0.9], [0.0707, 0.0, 0.0])
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

    Example:
        >>> from transferscope.measures.curves import relative_drop
        >>> round(relative_drop(0.8, 0.6), 4)  # RI-T 25% below P-T
        25.0
        >>> relative_drop(0.8, 0.8)
        0.0
        >>> relative_drop(0.0, 0.5)
        nan
    """
    if not (_finite(metric_pt) and _finite(metric_rit)) or metric_pt == 0:
        return float("nan")
    return 100.0 * (metric_pt - metric_rit) / metric_pt


def headroom_gain(metric_pt: float, metric_rit: float) -> float:
    """The share of RI-T's distance to a perfect score that P-T closes:
    (A(P-T) − A(RI-T)) / (1 − A(RI-T)), for metrics in [0, 1] with 1 perfect.

    Unlike the relative drop it means the same for accuracy and mean AUC: rescaling a metric so
    that chance is 0 and perfect is 1, (A − c) / (1 − c), leaves it unchanged whatever c is, so
    targets scored by accuracy over 10 classes and by mean AUC (chance 0.5) can be ranked on
    it. 1: P-T perfect; 0: no gain; negative: P-T worse. NaN when RI-T is perfect.

    Example:
        >>> from transferscope.measures.curves import headroom_gain
        >>> round(headroom_gain(0.95, 0.9), 6)
        0.5
        >>> c = 0.5  # the same models on a scale where chance is 0
        >>> round(headroom_gain((0.95 - c) / (1 - c), (0.9 - c) / (1 - c)), 6)
        0.5
    """
    if not (_finite(metric_pt) and _finite(metric_rit)) or metric_rit >= 1:
        return float("nan")
    return (metric_pt - metric_rit) / (1.0 - metric_rit)


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def area_between(runs_a: Sequence[Run], runs_b: Sequence[Run], split: str = "test") -> float | None:
    """Mean gap between the mean learning curves of A and B over their common epochs.

    Both mean curves are linearly interpolated on the union of their evaluation epochs within
    [0, the earlier last epoch], and the trapezoid area between them is divided by that length:
    metric units, positive when A is above B on average. None when the curves share no interval.

    Example:
        >>> from transferscope.measures.curves import area_between
        >>> def run(*metrics):
        ...     return [{"epoch": float(e), "step": 10 * e, "split": "test", "metric": m}
        ...             for e, m in enumerate(metrics, start=1)]
        >>> a, b = [run(0.6, 0.8, 0.9)], [run(0.3, 0.6, 0.8)]
        >>> round(area_between(a, b), 4)  # A is 0.2 above B on average
        0.2
        >>> round(area_between(b, a), 4), area_between(a, a)
        (-0.2, 0.0)
    """
    ca, cb = aggregate_curves(runs_a, split), aggregate_curves(runs_b, split)
    if len(ca["epoch"]) < 1 or len(cb["epoch"]) < 1:
        return None
    start = max(ca["epoch"][0], cb["epoch"][0])
    end = min(ca["epoch"][-1], cb["epoch"][-1])
    if end <= start:
        return None
    grid = np.array(sorted({e for e in ca["epoch"] + cb["epoch"] if start <= e <= end}))
    gap = np.interp(grid, ca["epoch"], ca["mean"]) - np.interp(grid, cb["epoch"], cb["mean"])
    area = float(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(grid)))
    return area / (end - start)


def _side(
    runs: Sequence[Run], threshold: float | None, split: str, with_curve: bool
) -> dict[str, Any]:
    finals = [final_metric(run, split) for run in runs]
    if threshold is None:
        times = [{"epoch": None, "step": None, "reached": False} for _ in runs]
    else:
        times = [time_to_threshold(run, threshold, split) for run in runs]
    side: dict[str, Any] = {
        "runs": len(runs),
        "final_metric": [None if math.isnan(f) else f for f in finals],
        "final_metric_mean": _mean(finals),
        "epochs_to_threshold": [t["epoch"] for t in times],
        "steps_to_threshold": [t["step"] for t in times],
        "reached": [t["reached"] for t in times],
        "epochs_to_threshold_mean": _mean([t["epoch"] for t in times]),
        "steps_to_threshold_mean": _mean([t["step"] for t in times]),
    }
    if with_curve:
        side["curve"] = aggregate_curves(runs, split)
    return side


def compare_curves(
    pt_runs: Sequence[Run],
    rit_runs: Sequence[Run],
    chance: float,
    fraction: float = DEFAULT_FRACTION,
    split: str = "test",
    with_curves: bool = True,
    floor: float | None = None,
) -> dict[str, Any]:
    """P-T against RI-T on one target (Neyshabur et al. 2020, §3.1: P-T is better and faster).

    Args:
        pt_runs: metrics rows of each P-T run (one per seed).
        rit_runs: metrics rows of each RI-T run (one per seed).
        chance: the metric of a model that learned nothing (:func:`chance_metric`).
        fraction: where the common threshold sits between chance and the lower of the two mean
            final metrics (:func:`common_threshold`).
        split: which rows to read.
        with_curves: include the per-epoch mean / spread curves.
        floor: the top of the chance band (:func:`common_threshold`): a side at chance level
            does not set the bar.

    Returns:
        ``{"P-T": side, "RI-T": side, "threshold": float | None, "chance": float,
        "fraction": float, "relative_drop": float, "speed_gap_epochs": float | None,
        "speed_gap_steps": float | None, "area_between": float | None}``. Each side holds
        per-run final metrics, epochs / steps to the threshold (None: not reached), whether each
        run reached it, their means, and (``with_curves``) the curve of :func:`aggregate_curves`.
        ``relative_drop`` compares the mean final metrics (percent); ``speed_gap_epochs`` is
        RI-T's mean epochs to the threshold minus P-T's (positive: P-T is faster; None when a
        run did not reach it); ``area_between`` is :func:`area_between` (P-T minus RI-T).

    Example:
        >>> from transferscope.measures.curves import compare_curves
        >>> def run(*metrics):
        ...     return [{"epoch": float(e), "step": 10 * e, "split": "test", "metric": m}
        ...             for e, m in enumerate(metrics, start=1)]
        >>> pt = [run(0.6, 0.8, 0.9), run(0.5, 0.8, 0.88)]  # two seeds each
        >>> rit = [run(0.3, 0.6, 0.8), run(0.2, 0.5, 0.82)]
        >>> result = compare_curves(pt, rit, chance=0.1)
        >>> round(result["threshold"], 4)  # 90% of the way from chance to RI-T's 0.81
        0.739
        >>> result["P-T"]["epochs_to_threshold"], result["RI-T"]["epochs_to_threshold"]
        ([2.0, 2.0], [3.0, 3.0])
        >>> result["speed_gap_epochs"], round(result["relative_drop"], 2)  # P-T faster, better
        (1.0, 8.99)
        >>> compare_curves(pt, pt, chance=0.1)["relative_drop"]
        0.0
    """
    pt_finals = [final_metric(r, split) for r in pt_runs]
    rit_finals = [final_metric(r, split) for r in rit_runs]
    means = [m for m in (_mean(pt_finals), _mean(rit_finals)) if m is not None]
    threshold = common_threshold(chance, means, fraction, floor)
    pt = _side(pt_runs, threshold, split, with_curves)
    rit = _side(rit_runs, threshold, split, with_curves)

    def gap(key: str) -> float | None:
        if not (all(pt["reached"]) and all(rit["reached"])):
            return None
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
        "chance": chance,
        "fraction": fraction,
        "threshold": threshold,
        "relative_drop": drop,
        "speed_gap_epochs": gap("epochs_to_threshold_mean"),
        "speed_gap_steps": gap("steps_to_threshold_mean"),
        "area_between": area_between(pt_runs, rit_runs, split),
    }


_BLOCK = re.compile(r"b(\d+)")


def shuffle_block_size(label: str | None) -> int | None:
    """Block size of a shuffle label: 'b7' -> 7; 'pixel' and None (no shuffle) -> None.

    Example:
        >>> from transferscope.measures.curves import shuffle_block_size
        >>> shuffle_block_size("b7"), shuffle_block_size("pixel"), shuffle_block_size(None)
        (7, None, None)
    """
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
    chance: float,
    fraction: float = DEFAULT_FRACTION,
    split: str = "test",
    floor: float | None = None,
) -> list[dict[str, Any]]:
    """Relative drop and speed gap per block size / pixel shuffle (Neyshabur et al. 2020, §3.1).

    Args:
        by_shuffle: shuffle label ('b7', 'pixel', or None for the unshuffled data) ->
            (P-T runs, RI-T runs), each a list of metrics-row lists.
        chance, fraction, floor: the common threshold of each comparison (see
            :func:`compare_curves`).

    Returns:
        One entry per shuffle, unshuffled first, then block sizes from large to small, pixel last:
        ``{"shuffle": label | None, "block_size": int | None, "pixel": bool}`` plus the fields of
        :func:`compare_curves` without curves.

    Example:
        >>> from transferscope.measures.curves import shuffle_gaps
        >>> def run(*metrics):
        ...     return [{"epoch": float(e), "step": 10 * e, "split": "test", "metric": m}
        ...             for e, m in enumerate(metrics, start=1)]
        >>> by_shuffle = {
        ...     "pixel": ([run(0.5, 0.6)], [run(0.5, 0.6)]),  # nothing left to reuse
        ...     None: ([run(0.7, 0.9)], [run(0.4, 0.6)]),
        ...     "b4": ([run(0.6, 0.8)], [run(0.4, 0.6)]),
        ...     "b16": ([run(0.7, 0.9)], [run(0.4, 0.6)]),
        ... }
        >>> gaps = shuffle_gaps(by_shuffle, chance=0.1)
        >>> [(g["shuffle"], g["block_size"], round(g["relative_drop"], 1)) for g in gaps]
        [(None, None, 33.3), ('b16', 16, 33.3), ('b4', 4, 25.0), ('pixel', None, 0.0)]
    """
    out = []
    for label in sorted(by_shuffle, key=_paper_order):
        pt_runs, rit_runs = by_shuffle[label]
        entry: dict[str, Any] = {
            "shuffle": label,
            "block_size": shuffle_block_size(label),
            "pixel": label == "pixel",
        }
        entry.update(
            compare_curves(
                pt_runs, rit_runs, chance, fraction, split, with_curves=False, floor=floor
            )
        )
        out.append(entry)
    return out


__all__ = [
    "aggregate_curves",
    "area_between",
    "chance_metric",
    "common_threshold",
    "compare_curves",
    "final_metric",
    "headroom_gain",
    "metric_rows",
    "relative_drop",
    "shuffle_block_size",
    "shuffle_gaps",
    "time_to_threshold",
]
