"""The §1-§2 study steps on a tiny hand-made study directory (no training)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from transferscope import TransferscopeError
from transferscope.config import StudyConfig
from transferscope.study.analyze import run_analyses
from transferscope.training import checkpoints as ckpt

from fake_study import FakeData, fake_config, fake_study, fake_weights

N_TEST = 20
# P-T: better and faster than RI-T (reaches the common bar 0.1 + 0.9 (0.8 - 0.1) = 0.73 at epoch 1,
# RI-T at epoch 3).
CURVES = {"P": [0.1, 0.9], "P-T": [0.5, 0.9, 0.92, 0.93], "RI-T": [0.1, 0.3, 0.5, 0.8]}


def _config() -> StudyConfig:
    return fake_config(
        pretrain={"epochs": 1, "checkpoint_points": [1]},
        shuffles={"block_sizes": [4]},
        trajectory={"checkpoints": [1]},
        analyses={"similarity": {"max_examples": 24}},
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    store, plan = fake_study(tmp_path_factory.mktemp("fake") / "study", _config())
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 10, N_TEST)
    p_final: dict[str, torch.Tensor] | None = None
    pending = None
    for i, run in enumerate(plan.runs):
        d = store.prepare_run(run)
        kind = run.spec.kind
        from_p = kind in ("P-T", "P@k-T")
        start = p_final if from_p else fake_weights(100 + i, None, 0.1)
        final = fake_weights(i, start, 0.02 if from_p else 0.3)
        ckpt.save_weights(store.weights_path(run.id, "epoch-0"), start)
        ckpt.save_weights(store.weights_path(run.id, "final"), final)
        if kind == "P":
            p_final = final
            ckpt.save_weights(store.weights_path(run.id, "epoch-1"), final)
        curve = CURVES["P-T" if from_p else kind]
        rows = [
            {"epoch": e, "step": 10 * e, "split": "test", "metric": m, "metric_name": "accuracy"}
            for e, m in enumerate(curve)
        ]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "predictions").mkdir()
        np.save(d / "predictions" / "test_outputs.npy", rng.normal(size=(N_TEST, 10)))
        np.save(d / "predictions" / "test_targets.npy", targets)
        if kind == "RI-T" and run.shuffle == "b4":
            pending = run  # left unfinished: the b4 shuffle point must be skipped
            continue
        store.mark_done(run.id, {"metric_name": "accuracy", "final_metric": curve[-1]})
    return store, plan, pending


# The §1-§2 steps; the loss-landscape steps have tests of their own.
SECTION_2 = ["curves", "mistakes", "similarity", "distance"]


def test_study_steps_write_every_analysis(study):
    store, plan, pending = study
    calls: list[tuple[str, str]] = []
    paths = run_analyses(
        store,
        only=SECTION_2,
        progress=lambda name, msg: calls.append((name, msg)),
        cache=FakeData(),
    )
    assert set(paths) == {"curves", "mistakes", "similarity", "distance"}
    docs = {name: json.loads(path.read_text()) for name, path in paths.items()}
    assert all(doc["status"] == "ok" for doc in docs.values())
    # Before it starts, an analysis that runs models says how long it will take: 2 models x its
    # 24 examples for every pair it then compares (the same pairs, counted from the plan); one
    # that reads files only says nothing. Each records what it took beside the estimate.
    pairs = len(docs["similarity"]["targets"]["digits"]["pairs"])
    said = [m for n, m in calls if n == "similarity"]
    assert pairs == 10
    assert said[0].startswith("estimated: ~") and said[0].endswith(
        f" s ({48 * pairs} forward passes)"
    )
    assert said[1:] == ["running", "done"]
    assert [m for n, m in calls if n == "curves"] == ["running", "done"]
    # The time each took, beside its result (so that a recomputed result is the same bytes).
    assert all("timing" not in doc for doc in docs.values())
    timing = _timing(store, "similarity")
    assert timing["estimated_seconds"] > 0 and timing["seconds"] > 0 and timing["threads"] >= 1
    assert _timing(store, "curves")["estimated_seconds"] is None

    curves = docs["curves"]["targets"]["digits"]
    assert curves["threshold"] == pytest.approx(0.73)
    assert curves["P-T"]["epochs_to_threshold"] == [1.0, 1.0]
    assert curves["RI-T"]["epochs_to_threshold"] == [3.0, 3.0]
    assert curves["speed_gap_epochs"] == 2.0
    # The final metrics compared on the saved test outputs, example by example.
    final = curves["final_test"]
    assert final["status"] == "ok" and "sign test" in final["method"]
    assert 0 <= final["p_value"] <= 1 and final["direction"] in (-1, 0, 1)
    assert curves["relative_drop"] == pytest.approx(100 * (0.93 - 0.8) / 0.93)
    # The drop of the saved outputs (the fake runs' outputs are not their metrics rows'), with
    # its bootstrap interval: C11's noise.
    drop = curves["drop_interval"]
    assert drop["low"] <= drop["estimate"] <= drop["high"] and "bootstrap" in drop["method"]
    # C11's measure, the headroom gain, from the same outputs (an independent computation).
    store, plan, _ = study
    accuracy = {}
    for kind in ("P-T", "RI-T"):
        runs = [
            r for r in plan.select(kind=kind, target="digits", shuffle=None) if not r.same_init_as
        ]
        accuracy[kind] = np.mean(
            [
                (
                    np.load(store.root / "runs" / r.id / "predictions" / "test_outputs.npy").argmax(
                        1
                    )
                    == np.load(store.root / "runs" / r.id / "predictions" / "test_targets.npy")
                ).mean()
                for r in runs
            ]
        )
    gain = (accuracy["P-T"] - accuracy["RI-T"]) / (1 - accuracy["RI-T"])
    assert curves["gain_interval"]["estimate"] == pytest.approx(gain)
    assert curves["gain_interval"]["n"] == N_TEST
    # The chance band on 20 test examples of 10 classes: 0.1 + 2.576 sqrt(0.09 / 20).
    assert curves["chance_band"] == pytest.approx(0.1 + 2.576 * math.sqrt(0.09 / 20), rel=1e-3)
    # The control: P-T against the fine-tunes of P's untrained init (both seeds).
    control = curves["control"]
    assert control["status"] == "ok" and len(control["runs"]["P@0-T"]) == 2
    assert control["P@0-T"]["epochs_to_threshold"] == [1.0, 1.0]
    assert control["final_test"]["status"] == "ok" and control["final_test"]["n"] == N_TEST
    assert [g["shuffle"] for g in curves["shuffles"]] == [None]  # b4's RI-T is not done
    assert pending.id in docs["curves"]["runs_missing"]

    mistakes = docs["mistakes"]["targets"]["digits"]["pairs"]
    # P-T/RI-T across seeds too (4 pairs): their spread is the noise of the pair claims.
    assert sorted(p["pair"] for p in mistakes) == [
        "P-T/P-T",
        *["P-T/RI-T"] * 4,
        "P@0-T/P@0-T",
        "RI-T/RI-T",
        "RI-T/RI-T same init",
    ]
    for p in mistakes:
        cells = p["counts"]
        total = cells["both_correct"] + cells["uncommon"] + cells["both_wrong"]
        assert total == N_TEST and len(p["indices"]["both_wrong"]) <= 64
    # The report's image grids: the test images behind the first P-T/RI-T pair's uncommon cells.
    first = next(p for p in mistakes if p["pair"] == "P-T/RI-T")
    with np.load(store.analyses_dir / "mistakes" / "digits.npz") as z:
        for cell, key in (
            ("pt_wrong_rit_right", "only_a_wrong"),
            ("rit_wrong_pt_right", "only_b_wrong"),
        ):
            expected = first["indices"][key][:32]
            if not expected:
                assert cell not in z.files
                continue
            assert z[f"{cell}_indices"].tolist() == expected
            test = FakeData().get(None).test
            assert np.array_equal(z[cell], test.images[expected].numpy())

    sim = {p["pair"]: p for p in docs["similarity"]["targets"]["digits"]["pairs"]}
    assert set(sim) == {
        "P-T/P-T",
        "RI-T/RI-T",
        "P-T/RI-T",
        "P/P-T",
        "RI-T/RI-T same init",
        "P@0-T/P@0-T",
    }
    assert list(sim["P/P-T"]["cka"]) == ["conv1", "layer1", "layer2", "layer3"]
    assert sim["P/P-T"]["runs"][0] == plan.select(kind="P")[0].id
    assert all(0 <= v <= 1 for p in sim.values() for v in p["cka"].values())
    assert sim["P-T/P-T"]["examples"] == 24
    # The same seeded, class-stratified subset for every pair, and how each layer was measured.
    subset = docs["similarity"]["targets"]["digits"]["subset"]
    assert subset == {"examples": 24, "of": 40, "seed": 0, "stratified": True}
    assert {layer["estimator"] for p in sim.values() for layer in p["layers"].values()} == {"exact"}

    dist: dict[str, list] = {}
    for p in docs["distance"]["targets"]["digits"]["pairs"]:
        dist.setdefault(p["pair"], []).append(p)
    assert {"P-T/P-T", "RI-T/RI-T", "RI-T/RI-T same init", "P-T/P", "RI-T/P"} <= set(dist)
    assert {"P@k/P-T", "P@k-T/P-T", "P@0-T/P@0-T"} <= set(dist)
    # Size-normalised per-module change, for C5's depth trend over the listed modules.
    units = docs["distance"]["targets"]["digits"]["depth_units"]
    assert units[0] == "conv1" and "fc" not in units
    assert set(units) <= set(dist["P-T/P"][0]["per_module_relative"])
    # P-T moved little from P (noise 0.02) and two RI-T runs are far apart (noise 0.3)
    assert dist["P-T/P-T"][0]["total"] < dist["RI-T/RI-T"][0]["total"]
    assert "fc.weight" in dist["P-T/P"][0]["excluded"]
    module_sq = sum(v**2 for v in dist["RI-T/RI-T"][0]["per_module"].values())
    assert math.sqrt(module_sq) == pytest.approx(dist["RI-T/RI-T"][0]["total"])

    # Second call: nothing changed, everything is reused.
    calls.clear()
    run_analyses(
        store,
        only=SECTION_2,
        progress=lambda name, msg: calls.append((name, msg)),
        cache=FakeData(),
    )
    assert {msg for _, msg in calls} == {"cached"}

    # The missing run finishes: curves (which needed it) is recomputed, mistakes is not.
    store.mark_done(pending.id, {"metric_name": "accuracy", "final_metric": 0.8})
    calls.clear()
    run_analyses(
        store,
        only=["curves", "mistakes"],
        progress=lambda n, m: calls.append((n, m)),
        cache=FakeData(),  # the same data as before: only the finished run differs
    )
    assert not any(m == "running" for n, m in calls if n == "mistakes")
    assert dict(calls)["mistakes"] == "cached" and ("curves", "done") in calls
    redone = json.loads(paths["curves"].read_text())["targets"]["digits"]["shuffles"]
    assert [g["shuffle"] for g in redone] == [None, "b4"]


def test_unknown_analysis_name_is_an_error(study):
    store, _, _ = study
    with pytest.raises(TransferscopeError, match="did you mean 'curves'"):
        run_analyses(store, only=["curve"])


def test_a_failing_analysis_is_recorded_and_the_others_still_run(study, monkeypatch):
    """One analysis's crash (a memory error at 224 px, a bug) costs that analysis only."""
    from transferscope import registry
    from transferscope.report import load_study

    store, _, _ = study

    def broken(ctx, options):
        raise MemoryError("out of memory at layer1 <big>")

    monkeypatch.setattr(registry.get("similarity"), "compute", broken)
    calls: list[tuple[str, str]] = []
    paths = run_analyses(
        store,
        only=["similarity", "distance"],
        force=True,
        progress=lambda n, m: calls.append((n, m)),
        cache=FakeData(),
    )
    failed = json.loads(paths["similarity"].read_text())
    assert failed["status"] == "failed" and "MemoryError" in failed["reason"]
    assert json.loads(paths["distance"].read_text())["status"] == "ok"
    assert ("similarity", "failed: MemoryError: out of memory at layer1 <big>") in calls
    # The report's section says why; a failed result is never reused as if it were current.
    assert "MemoryError" in (load_study(store.root).not_run_reason("similarity") or "")
    monkeypatch.undo()
    calls.clear()
    run_analyses(
        store, only=["similarity"], progress=lambda n, m: calls.append((n, m)), cache=FakeData()
    )
    assert ("similarity", "done") in calls


def test_separate_calls_share_straight_lines_through_one_folder(study, one_thread):
    """As the Ray executor's analysis tasks do: two calls given one folder of lines; the second
    analysis reads the straight lines the first measured instead of measuring them again, and
    the numbers are those it would have measured itself."""
    from transferscope.unitkit.line_cache import call_folder

    store, _, _ = study
    folder = call_folder(store.analyses_dir)
    only = ["interpolation", "alignment"]
    run_analyses(store, only=only[:1], force=True, cache=FakeData(), lines=folder)
    second = run_analyses(store, only=only[1:], force=True, cache=FakeData(), lines=folder)
    timing = _timing(store, "alignment")["lines"]
    assert timing["measured"] == 0 and timing["reused"] > 0, timing
    assert _timing(store, "interpolation")["lines"]["measured"] > 0
    shared = json.loads(second["alignment"].read_text())["targets"]["digits"]["pairs"]
    alone = run_analyses(store, only=only[1:], force=True, cache=FakeData())
    own = json.loads(alone["alignment"].read_text())
    assert _timing(store, "alignment")["lines"]["measured"] == timing["reused"]
    assert json.dumps(own["targets"]["digits"]["pairs"]) == json.dumps(shared)
    assert folder.is_dir()  # a folder given is the caller's to remove


def _timing(store, name: str) -> dict:
    """What an analysis's last computation recorded of its time (analyses/timings/)."""
    from transferscope.paths import timing_path

    return json.loads(timing_path(store.root, name).read_text())
