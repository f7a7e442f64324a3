"""Learning curves, convergence speed and the shuffle gap on synthetic metrics rows (§3.1)."""

from __future__ import annotations

import math

import pytest

from transferscope import (
    TransferscopeError,
    aggregate_curves,
    compare_curves,
    relative_drop,
    shuffle_gaps,
    time_to_threshold,
)
from transferscope.measures.curves import area_between, chance_metric, common_threshold


def run(metrics: list[float], steps_per_epoch: int = 10) -> list[dict]:
    return [
        {"epoch": e, "step": e * steps_per_epoch, "split": "test", "metric": m, "loss": 1.0}
        for e, m in enumerate(metrics)
    ]


def test_time_to_threshold_is_the_first_evaluation_at_or_above_it():
    rows = run([0.1, 0.5, 0.8, 0.96, 1.0])
    assert time_to_threshold(rows, 0.95) == {"epoch": 3.0, "step": 30, "reached": True}
    assert time_to_threshold(rows, 0.5)["epoch"] == 1.0
    assert time_to_threshold(rows, 1.01) == {"epoch": None, "step": None, "reached": False}
    # rows out of order, a NaN metric and other splits are handled
    messy = [*reversed(rows), {"epoch": 5, "step": 50, "split": "dev", "metric": 9.0}]
    messy.append({"epoch": 2.5, "step": 25, "split": "test", "metric": float("nan")})
    assert time_to_threshold(messy, 0.95)["epoch"] == 3.0


def test_common_threshold_sits_between_chance_and_the_lower_final():
    assert chance_metric("multiclass", 10) == pytest.approx(0.1)
    assert chance_metric("multilabel", 5) == 0.5
    assert common_threshold(0.1, [0.9, 0.5], 0.9) == pytest.approx(0.1 + 0.9 * 0.4)
    # A side that ends at chance has no bar above chance to reach: no speed comparison.
    assert common_threshold(0.1, [0.9, 0.1], 0.9) is None
    with pytest.raises(TransferscopeError):
        common_threshold(0.1, [0.9], 0.0)


def test_a_side_at_chance_does_not_set_the_bar():
    """A side within the chance band learned nothing: the bar comes from the side that did, and
    the side at chance is "not reached" (slower), never compared on a bar at chance."""
    # Without the band, RI-T's 0.12 would put the bar at 0.118, which both cross at once.
    assert common_threshold(0.1, [0.75, 0.12], 0.9) == pytest.approx(0.118)
    assert common_threshold(0.1, [0.75, 0.12], 0.9, floor=0.135) == pytest.approx(0.685)
    assert common_threshold(0.1, [0.13, 0.12], 0.9, floor=0.135) is None  # no side learned
    pt = [[{"epoch": e, "step": e, "metric": m} for e, m in enumerate([0.1, 0.7, 0.75])]]
    rit = [[{"epoch": e, "step": e, "metric": m} for e, m in enumerate([0.1, 0.13, 0.12])]]
    from transferscope.measures.curves import compare_curves

    out = compare_curves(pt, rit, 0.1, 0.9, floor=0.135)
    assert out["P-T"]["epochs_to_threshold"] == [1.0]
    assert out["RI-T"]["reached"] == [False]


def test_a_run_that_barely_learns_is_not_fast():
    """Against its own final metric a run that stays near chance 'converges' at once; against a
    common bar it never gets there (or gets there last)."""
    learner = run([0.1, 0.5, 0.8, 0.9, 0.95])
    flat = run([0.12, 0.13, 0.13, 0.13, 0.14])
    out = compare_curves([learner], [flat], chance=0.1, fraction=0.9)
    # bar: 0.1 + 0.9 * (0.14 - 0.1) = 0.136: the flat run reaches it only at its last epoch.
    assert out["threshold"] == pytest.approx(0.136)
    assert out["P-T"]["epochs_to_threshold"] == [1.0]
    assert out["RI-T"]["epochs_to_threshold"] == [4.0]
    assert out["speed_gap_epochs"] == pytest.approx(3.0)
    # A second flat seed that never reaches the (mean-based) bar is "not reached", not fast.
    out = compare_curves([learner], [flat, run([0.1, 0.11, 0.12, 0.13, 0.13])], 0.1, 0.9)
    assert out["RI-T"]["reached"] == [True, False]
    assert out["speed_gap_epochs"] is None


def test_step_schedule_does_not_hide_the_speed_gap():
    """With a learning-rate drop both runs jump just after it: a fraction of each run's own final
    metric puts them at the same epoch; the common bar does not."""
    fast = run([0.2, 0.85, 0.88, 0.97, 0.98])  # P-T: good before the drop at epoch 3
    slow = run([0.1, 0.40, 0.60, 0.95, 0.96])  # RI-T: only after the drop
    out = compare_curves([fast], [slow], chance=0.1, fraction=0.8)
    # bar: 0.1 + 0.8 * (0.96 - 0.1) = 0.788
    assert out["P-T"]["epochs_to_threshold"] == [1.0]
    assert out["RI-T"]["epochs_to_threshold"] == [3.0]
    assert out["speed_gap_epochs"] == pytest.approx(2.0)
    assert out["area_between"] > 0


def test_area_between_curves_is_the_mean_gap():
    a = run([0.0, 1.0, 1.0])
    b = run([0.0, 0.0, 1.0])
    # gap 0, 1, 0 on epochs 0..2: trapezoid area 1 over length 2
    assert area_between([a], [b]) == pytest.approx(0.5)
    assert area_between([b], [a]) == pytest.approx(-0.5)
    assert area_between([a], [a]) == pytest.approx(0.0)


def test_aggregate_aligns_epochs_and_reports_spread():
    a = run([0.2, 0.6, 0.8])
    b = run([0.4, 0.8])
    agg = aggregate_curves([a, b])
    assert agg["epoch"] == [0.0, 1.0, 2.0]
    assert agg["mean"] == pytest.approx([0.3, 0.7, 0.8])
    assert agg["std"] == pytest.approx([math.sqrt(0.02), math.sqrt(0.02), 0.0])
    assert agg["min"] == pytest.approx([0.2, 0.6, 0.8])
    assert agg["max"] == pytest.approx([0.4, 0.8, 0.8])
    assert agg["count"] == [2, 2, 1]


def test_relative_drop_and_speed_gap_hand_computed():
    pt = [run([0.5, 0.9, 0.95, 1.0]), run([0.6, 0.96, 0.97, 0.98])]
    rit = [run([0.1, 0.3, 0.6, 0.8]), run([0.1, 0.4, 0.7, 0.8])]
    out = compare_curves(pt, rit, chance=0.0, fraction=0.95)
    # bar: 0.95 * min(0.99, 0.8) = 0.76; P-T reaches it at epoch 1 (both), RI-T at epoch 3
    assert out["threshold"] == pytest.approx(0.76)
    assert out["P-T"]["epochs_to_threshold"] == [1.0, 1.0]
    assert out["RI-T"]["epochs_to_threshold"] == [3.0, 3.0]
    assert out["speed_gap_epochs"] == pytest.approx(2.0)
    assert out["speed_gap_steps"] == pytest.approx(20.0)
    # relative drop: 100 * (0.99 - 0.8) / 0.99
    assert out["relative_drop"] == pytest.approx(100 * 0.19 / 0.99)
    assert out["P-T"]["curve"]["mean"][0] == pytest.approx(0.55)
    assert relative_drop(0.8, 0.6) == pytest.approx(25.0)
    assert math.isnan(relative_drop(0.0, 0.5))


def test_shuffle_gaps_in_paper_order():
    by_shuffle = {
        "pixel": ([run([0.3, 0.5])], [run([0.2, 0.5])]),
        "b1": ([run([0.3, 0.6])], [run([0.2, 0.5])]),
        None: ([run([0.5, 1.0])], [run([0.2, 0.8])]),
        "b7": ([run([0.4, 0.8])], [run([0.2, 0.6])]),
    }
    gaps = shuffle_gaps(by_shuffle, chance=0.1)
    assert [g["shuffle"] for g in gaps] == [None, "b7", "b1", "pixel"]
    assert [g["block_size"] for g in gaps] == [None, 7, 1, None]
    assert gaps[0]["relative_drop"] == pytest.approx(20.0)
    assert gaps[1]["relative_drop"] == pytest.approx(25.0)
    assert gaps[3]["relative_drop"] == pytest.approx(0.0)
    assert "curve" not in gaps[0]["P-T"]
