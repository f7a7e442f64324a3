"""Learning curves, convergence speed and the shuffle gap on synthetic metrics rows (§1)."""

from __future__ import annotations

import math

import pytest

from transferscope import (
    TransferscopeError,
    aggregate_curves,
    compare_curves,
    convergence_speed,
    relative_drop,
    shuffle_gaps,
)


def run(metrics: list[float], steps_per_epoch: int = 10) -> list[dict]:
    return [
        {"epoch": e, "step": e * steps_per_epoch, "split": "test", "metric": m, "loss": 1.0}
        for e, m in enumerate(metrics)
    ]


def test_convergence_speed_is_first_epoch_at_fraction_of_final():
    rows = run([0.1, 0.5, 0.8, 0.96, 1.0])
    speed = convergence_speed(rows, fraction=0.95)
    assert speed == {"epoch": 3.0, "step": 30, "threshold": 0.95, "final_metric": 1.0}
    assert convergence_speed(rows, fraction=0.5)["epoch"] == 1.0
    # rows out of order, a NaN metric and other splits are handled
    messy = [*reversed(rows), {"epoch": 5, "step": 50, "split": "dev", "metric": 9.0}]
    messy.append({"epoch": 2.5, "step": 25, "split": "test", "metric": float("nan")})
    assert convergence_speed(messy)["epoch"] == 3.0
    with pytest.raises(TransferscopeError):
        convergence_speed(rows, fraction=0.0)


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
    out = compare_curves(pt, rit, fraction=0.95)
    # P-T: run 1 reaches 0.95 at epoch 2, run 2 reaches 0.931 at epoch 1 -> mean 1.5
    assert out["P-T"]["epochs_to_fraction"] == [2.0, 1.0]
    # RI-T: threshold 0.76, both reach it at epoch 3 -> gap 3 - 1.5
    assert out["RI-T"]["epochs_to_fraction"] == [3.0, 3.0]
    assert out["speed_gap_epochs"] == pytest.approx(1.5)
    assert out["speed_gap_steps"] == pytest.approx(15.0)
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
    gaps = shuffle_gaps(by_shuffle)
    assert [g["shuffle"] for g in gaps] == [None, "b7", "b1", "pixel"]
    assert [g["block_size"] for g in gaps] == [None, 7, 1, None]
    assert gaps[0]["relative_drop"] == pytest.approx(20.0)
    assert gaps[1]["relative_drop"] == pytest.approx(25.0)
    assert gaps[3]["relative_drop"] == pytest.approx(0.0)
    assert "curve" not in gaps[0]["P-T"]
