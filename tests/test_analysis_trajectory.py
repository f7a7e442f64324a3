"""Trajectory summary (PAPER.md §5) and the interpolation / criticality / trajectory study steps
(§3-§5) on a tiny hand-made study directory (no training)."""

from __future__ import annotations

import json

import pytest
import torch

from transferscope import trajectory_summary
from transferscope.config import StudyConfig
from transferscope.study.analyze import run_analyses
from transferscope.study.plan import build_plan
from transferscope.study.store import StudyStore
from transferscope.training import checkpoints as ckpt

from fake_study import INFO, FakeData, fake_weights

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
    out = trajectory_summary(points, fraction=0.95)
    assert [p["k"] for p in out] == [0.5, 2.0]
    assert out[0]["final_metric"] == pytest.approx((0.85 + 0.9) / 2)
    assert out[0]["epochs"] == [3.0, 2.0] and out[0]["epochs_to_fraction"] == 2.5
    assert out[1]["epochs_to_fraction"] == 1.0
    assert trajectory_summary({1.0: [[]]})[0]["final_metric"] is None


def _config() -> StudyConfig:
    digits = {"name": "digits", "options": {"image_size": 8}}
    return StudyConfig.model_validate(
        {
            "name": "fake",
            "source": {**digits, "id": "src"},
            "targets": [digits],
            "model": {"name": "fixup-small", "options": {"widths": [4, 4, 4]}},
            "pretrain": {"epochs": 1, "checkpoint_points": [0.5, 1]},
            "seeds": [0, 1],
            "trajectory": {"checkpoints": [0.5]},
            "analyses": {
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
        }
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    cfg = _config()
    plan = build_plan(cfg, {"src": INFO, "digits": INFO})
    store = StudyStore(tmp_path_factory.mktemp("fake") / "study")
    store.write_study(cfg, plan)
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
            p_points = {"final": final, "epoch-1": final, "epoch-0.5": fake_weights(7, start, 0.2)}
            for name in ("epoch-1", "epoch-0.5"):
                ckpt.save_weights(store.weights_path(run.id, name), p_points[name])
        curve = PK_CURVE if kind == "P@k-T" else CURVES["P-T" if kind == "P-T" else kind]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(curve)))
        store.mark_done(run.id, {"metric_name": "accuracy", "final_metric": curve[-1]})
    return store, plan


def test_interpolation_criticality_trajectory_steps(study) -> None:
    store, plan = study
    names = ["interpolation", "criticality", "trajectory"]
    paths = run_analyses(store, only=names, cache=FakeData())
    docs = {name: json.loads(paths[name].read_text()) for name in names}
    assert all(doc["status"] == "ok" for doc in docs.values()), docs

    interp = docs["interpolation"]["targets"]["digits"]
    assert interp["metric_name"] == "accuracy"
    pairs = {p["pair"]: p for p in interp["pairs"]}
    assert set(pairs) == {
        "P-T/P-T",
        "RI-T/RI-T",
        "P-T/RI-T",
        "RI-T/RI-T same init",
        "P/P-T",
        "P@k/P-T",
    }
    p_id = plan.select(kind="P")[0].id
    assert pairs["P@k/P-T"]["k"] == 0.5 and pairs["P@k/P-T"]["runs"][0] == p_id
    assert pairs["P@k/P-T"]["checkpoints"][0] == "epoch-0.5"
    for p in interp["pairs"]:
        assert p["status"] == "ok" and p["lambdas"] == [0.0, 0.5, 1.0]
        assert len(p["metric"]) == len(p["loss"]) == 3 and p["barrier_loss"] >= 0
        assert p["batchnorm_recalibrated"] is False  # Fixup: no BatchNorm

    crit = docs["criticality"]["targets"]["digits"]
    for kind in ("P-T", "RI-T"):
        entry = crit[kind]
        assert entry["status"] == "ok"
        assert entry["modules"] == ["conv1", "layer1.0", "layer2.0", "layer3.0", "fc"]
        assert set(entry["mu"]) == set(entry["rewind"]) == set(entry["heatmap"])
        finite = [v for v in entry["mu"].values() if v is not None]
        assert entry["network_criticality"] == pytest.approx(sum(finite))
        heat = entry["heatmap"]["fc"]
        assert len(heat["metric"]) == 2 and len(heat["metric"][0]) == 2
        assert len(heat["distance"]) == 2
    run_pt = plan.select(kind="P-T", seed=0, shuffle=None)[0]
    assert crit["P-T"]["run"] == run_pt.id

    traj = docs["trajectory"]["targets"]["digits"]
    assert traj["metric_name"] == "accuracy" and traj["final_k"] == 1.0
    assert [p["k"] for p in traj["points"]] == [0.5, 1.0]
    early, final = traj["points"]
    assert early["final_metric"] == pytest.approx(0.85)
    assert final["final_metric"] == pytest.approx(0.93)
    assert early["epochs_to_fraction"] == 3.0 and final["epochs_to_fraction"] == 1.0
    assert early["barrier_metric"] is not None and early["barrier_loss"] >= 0
    assert len(final["runs"]) == 2
