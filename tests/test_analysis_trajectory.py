"""Trajectory summary (PAPER.md §5) and the interpolation / criticality / trajectory study steps
(§3-§5) on a tiny hand-made study directory (no training)."""

from __future__ import annotations

import json

import pytest
import torch

from transferscope import trajectory_summary
from transferscope.config import StudyConfig
from transferscope.study.analyze import run_analyses
from transferscope.training import checkpoints as ckpt

from fake_study import FakeData, fake_config, fake_study, fake_weights

CURVES = {"P": [0.1, 0.9], "P-T": [0.5, 0.9, 0.92, 0.93], "RI-T": [0.1, 0.3, 0.5, 0.8]}
PK_CURVE = [0.2, 0.6, 0.8, 0.85]  # fine-tuned from an early checkpoint: slower and worse


# Tiny models on a shared machine: extra OpenMP threads only wait for busy cores.
pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(curve: list[float]) -> list[dict]:
    return [
        {"epoch": e, "step": 10 * e, "split": "test", "metric": m, "metric_name": "accuracy"}
        for e, m in enumerate(curve)
    ]


def test_trajectory_summary_means_over_seeds() -> None:
    points = {2.0: [_rows(CURVES["P-T"])], 0.5: [_rows(PK_CURVE), _rows([0.1, 0.2, 0.9, 0.9])]}
    out = trajectory_summary(points, threshold=0.8)
    assert [p["k"] for p in out] == [0.5, 2.0]
    assert out[0]["final_metric"] == pytest.approx((0.85 + 0.9) / 2)
    assert out[0]["epochs"] == [2.0, 2.0] and out[0]["epochs_to_threshold"] == 2.0
    assert out[1]["epochs_to_threshold"] == 1.0
    # A bar a point's runs never reach: "not reached", no mean speed.
    far = trajectory_summary(points, threshold=0.95)
    assert far[0]["reached"] == [False, False] and far[0]["epochs_to_threshold"] is None
    assert trajectory_summary({1.0: [[]]}, threshold=0.5)[0]["final_metric"] is None


def _config() -> StudyConfig:
    return fake_config(
        pretrain={"epochs": 1, "checkpoint_points": [0.5, 1]},
        trajectory={"checkpoints": [0.5]},
        analyses={
            "interpolation": {"num_points": 3},
            "criticality": {
                "num_alphas": 3,
                "num_sigmas": 3,
                "noise_samples": 1,
                "max_sigma": 0.05,
                "tolerance": 1.5,
                "heatmap_alphas": 2,
                "heatmap_sigmas": 2,
            },
            "trajectory": {"num_points": 3},
        },
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    store, plan = fake_study(tmp_path_factory.mktemp("fake") / "study", _config())
    p_points: dict[str, dict[str, torch.Tensor]] = {}
    for i, run in enumerate(plan.runs):
        d = store.prepare_run(run)
        kind = run.spec.kind
        if kind in ("P-T", "P@k-T"):
            start = p_points[run.spec.parent_checkpoint or "final"]
        else:
            start = fake_weights(100 + i, None, 0.1)
        final = fake_weights(i, start, 0.02 if kind in ("P-T", "P@k-T") else 0.3)
        ckpt.save_weights(store.weights_path(run.id, "epoch-0"), start)
        ckpt.save_weights(store.weights_path(run.id, "final"), final)
        if kind == "P":
            p_points = {
                "final": final,
                "epoch-1": final,
                "epoch-0.5": fake_weights(7, start, 0.2),
                "epoch-0": start,
            }
            for name in ("epoch-1", "epoch-0.5"):
                ckpt.save_weights(store.weights_path(run.id, name), p_points[name])
        curve = PK_CURVE if kind == "P@k-T" else CURVES["P-T" if kind == "P-T" else kind]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(curve)))
        store.mark_done(run.id, {"metric_name": "accuracy", "final_metric": curve[-1]})
    return store, plan


def test_interpolation_criticality_trajectory_steps(study) -> None:
    store, plan = study
    names = ["interpolation", "criticality", "trajectory"]
    ticks: list[tuple[str, int, int, str]] = []
    paths = run_analyses(store, only=names, cache=FakeData(), tick=lambda *t: ticks.append(t))
    docs = {name: json.loads(paths[name].read_text()) for name in names}
    assert all(doc["status"] == "ok" for doc in docs.values()), docs
    # Criticality, the slowest analysis, says which module it is at.
    crit_ticks = [t for t in ticks if t[0] == "criticality"]
    assert any("P-T: μ of conv1" in what for _, _, _, what in crit_ticks)
    assert all(0 <= done < total for _, done, total, _ in crit_ticks)
    assert [d for _, d, _, _ in crit_ticks] == sorted(d for _, d, _, _ in crit_ticks)

    interp = docs["interpolation"]["targets"]["digits"]
    assert interp["metric_name"] == "accuracy"
    pairs = {p["pair"]: p for p in interp["pairs"]}
    assert set(pairs) == {
        "P-T/P-T",
        "RI-T/RI-T",
        "P-T/RI-T",
        "RI-T/RI-T same init",
        "P@0-T/P@0-T",
        "P/P-T",
        "P@k/P-T",
    }
    p_id = plan.select(kind="P")[0].id
    # One path per trajectory point (k = 0 is the control pair's, 0.5 the trajectory's).
    pk = sorted((p for p in interp["pairs"] if p["pair"] == "P@k/P-T"), key=lambda p: p["k"])
    assert [p["k"] for p in pk] == [0.0, 0.5] and {p["runs"][0] for p in pk} == {p_id}
    assert [p["checkpoints"][0] for p in pk] == ["epoch-0", "epoch-0.5"]
    for p in interp["pairs"]:
        assert p["status"] == "ok" and p["lambdas"] == [0.0, 0.5, 1.0]
        assert len(p["metric"]) == len(p["loss"]) == 3 and p["barrier_loss"] >= 0
        assert p["batchnorm_recalibrated"] is False  # Fixup: no BatchNorm

    crit = docs["criticality"]["targets"]["digits"]
    for kind in ("P-T", "RI-T"):
        entry = crit[kind]
        assert entry["status"] == "ok"
        # Three blocks and a stem are too few for a depth trend: one module per weight layer.
        assert entry["modules"][:4] == [
            "conv1",
            "layer1.0.conv1",
            "layer1.0.conv2",
            "layer2.0.conv1",
        ]
        assert entry["modules"][-1] == "fc" and len(entry["modules"]) == 10
        assert set(entry["mu"]) == set(entry["rewind"]) == set(entry["heatmap"])
        finite = [v for v in entry["mu"].values() if v is not None]
        if len(finite) == len(entry["mu"]):
            assert entry["network_criticality"] == pytest.approx(sum(finite))
        else:
            assert entry["network_criticality"] is None
            assert entry["network_criticality_bound"] > sum(finite)
        assert entry["sigmas"][0] == pytest.approx(0.05e-4)  # the grid reaches vanishing noise
        heat = entry["heatmap"]["fc"]
        assert len(heat["metric"]) == 2 and len(heat["metric"][0]) == 2
        assert len(heat["distance"]) == 2
    run_pt = plan.select(kind="P-T", seed=0, shuffle=None)[0]
    assert crit["P-T"]["run"] == run_pt.id

    traj = docs["trajectory"]["targets"]["digits"]
    assert traj["metric_name"] == "accuracy" and traj["final_k"] == 1.0
    assert [p["k"] for p in traj["points"]] == [0.0, 0.5, 1.0]
    control, early, final = traj["points"]
    assert len(control["runs"]) == 2  # the control pair: both seeds, means over them
    assert early["final_metric"] == pytest.approx(0.85)
    assert final["final_metric"] == pytest.approx(0.93)
    # One bar for every point: 0.1 + 0.9 (0.93 - 0.1) = 0.847 (chance 1/10).
    assert traj["threshold"] == pytest.approx(0.847)
    assert early["epochs_to_threshold"] == 3.0 and final["epochs_to_threshold"] == 1.0
    # k = 0 is the untrained init (the control), not an early checkpoint of pre-training.
    assert [p["early"] for p in traj["points"]] == [False, True, False]
    assert early["barrier_metric"] is not None and early["barrier_loss"] >= 0
    assert len(final["runs"]) == 2
    # No saved predictions in this fake study: the paired tests say why they are missing.
    assert early["vs_final"]["status"] == "skipped"
    assert early["vs_start"]["status"] == "skipped" and control.get("vs_start") is None
