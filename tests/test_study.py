"""End-to-end tests of `transferscope run` on the micro preset (real Fashion-MNIST and digits).

The studies run in this process (``invoke``), except the one SIGKILLed at a random point, which
runs in a child process; its rerun here must give the reference's results bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transferscope import registry
from transferscope.studydir.store import StudyStore

from conftest import requires_fashion
from study_checks import assert_same_analyses, assert_same_results, invoke, rows

pytestmark = [requires_fashion, pytest.mark.slow]

# One torch thread in every study here: bit-identical results need the same thread count in each
# process, and the micro model's tiny batches gain nothing from a second thread. With two (and
# two runs at once with --jobs 2, four) this module took 20 minutes on a busy 2-core machine.
THREADS = "1"


def run_micro(out: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    result = invoke("run", "--preset", "micro", "--out", str(out), "--quiet", "--threads", THREADS)
    return result, time.perf_counter() - start


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("micro") / "study"
    result, seconds = run_micro(out)
    assert result.returncode == 0, result.stdout + result.stderr
    (out.parent / "stdout.txt").write_text(result.stdout)
    return out, seconds


def test_micro_study_completes_with_every_run_done(reference):
    out, _ = reference
    store = StudyStore(out)
    plan = store.read_plan()
    assert all(store.is_done(r.id) for r in plan.runs)
    assert (out / "study.yaml").is_file()
    for run in plan.runs:
        d = store.run_dir(run.id)
        assert (d / "run.yaml").is_file() and (d / "predictions" / "test_outputs.npy").is_file()
        assert (d / "checkpoints" / "epoch-0.safetensors").is_file()
    p = plan.select(kind="P")[0]
    for k in ("epoch-0.25", "epoch-2"):
        assert store.weights_path(p.id, k).is_file()
    # Criticality on the multi-label mosaic (its rewind test and heat maps score the mean AUC):
    # the only multi-label criticality of the suite (the chexpert rehearsal turns it off).
    crit = json.loads((out / "analyses" / "criticality.json").read_text())["targets"]
    for kind in ("P-T", "RI-T"):
        entry = crit["fashion-mosaic"][kind]
        assert entry["status"] == "ok" and 0 < entry["final_metric"] < 1, entry.get("reason")
        assert set(entry["heatmap"]) == set(entry["modules"])
    # The relative drop of the metrics rows and that of the saved test outputs (whose bootstrap
    # gives C11 its noise) are the same number: both read the final evaluation.
    curves = json.loads((out / "analyses" / "curves.json").read_text())["targets"]
    for target, entry in curves.items():
        drop = entry["drop_interval"]
        assert drop["estimate"] == pytest.approx(entry["relative_drop"], rel=1e-6), target
        assert drop["low"] <= drop["estimate"] <= drop["high"]


def test_rerun_skips_everything(reference):
    out, _ = reference
    before = {p: p.stat().st_mtime_ns for p in out.rglob("final.safetensors")}
    result, _ = run_micro(out)
    assert result.returncode == 0, result.stderr
    assert "0 to train" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("final.safetensors")} == before
    assert "report (up to date)" in result.stdout


def test_two_runs_at_once_killed_at_a_random_point_then_rerun_give_identical_results(
    reference, tmp_path
):
    """--jobs 2 trains runs side by side in worker processes, P-T only after P is done, then
    computes two analyses at a time in worker processes. SIGKILLed at a random point (in
    training, an analysis or the report) and run again with --jobs 2, with the same threads per
    run and per analysis, every weight, metric and analysis result equals the uninterrupted
    one-at-a-time study's."""
    ref_out, ref_seconds = reference
    seed = int(os.environ.get("KILL_SEED", random.randrange(10**6)))
    delay = random.Random(seed).uniform(2.0, max(3.0, 0.8 * ref_seconds))
    print(f"KILL_SEED={seed}: SIGKILL after {delay:.1f}s of a {ref_seconds:.1f}s study")
    out = tmp_path / "jobs"
    args = ("run", "--preset", "micro", "--out", str(out), "--quiet", "--threads", THREADS)
    args += ("--jobs", "2")
    killed_log = tmp_path / "killed.txt"
    with open(killed_log, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "transferscope", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        )
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    result = invoke(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_same_results(ref_out, out)
    assert_same_analyses(ref_out, out)
    # Every analysis said when it ended, from whichever worker computed it, before the kill or
    # in the rerun (one written just before the kill, unsaid, the rerun finds cached).
    before = killed_log.read_text()
    said = before + result.stdout
    for name in registry.names():
        ended = f"analysis {name}: done" in said or f"analysis {name}: cached" in result.stdout
        assert ended, (name, said)
    # A straight line one worker measured the other read (they share interpolation's lines with
    # alignment's): as few measured as in one process when every analysis ran in the rerun's
    # call; a call's folder of lines is gone, the killed one's included.
    one, two = _lines(ref_out), _lines(out)
    assert one["reused"] > 0, one
    if "analysis " not in before:
        assert two == one, (one, two)
    else:  # lines measured by the killed call are measured again by the rerun's analyses
        assert sum(two.values()) == sum(one.values()), (one, two)
    assert not list((out / "analyses").glob(".lines-*"))


def _lines(root: Path) -> dict[str, int]:
    """Straight lines measured and reused over every analysis of a study (their ``timing``)."""
    totals = {"measured": 0, "reused": 0}
    for path in (root / "analyses" / "timings").glob("*.json"):
        counts = json.loads(path.read_text()).get("lines") or {}
        for key in totals:
            totals[key] += counts.get(key, 0)
    return totals


def test_estimates_count_what_each_analysis_measures_and_hold_its_time(reference):
    """Before it starts, each analysis's estimate counts, from the plan, the pairs and paths it
    then measures (the forwards of every line, CKA pair and curve), and the time it states holds
    within a factor that a loaded machine does not break; `run` lists both at the end."""
    from transferscope.study import estimate
    from transferscope.studydir.inputs import DataCache

    out, _ = reference
    store = StudyStore(out)
    cfg, plan = store.read_config(), store.read_plan()
    cache = DataCache()
    sizes: dict[str, estimate.DataSize | tuple[int, int]] = {}
    for spec in cfg.targets:
        splits = cache.get(spec)
        sizes[spec.label] = estimate.DataSize(len(splits.train), len(splits.test), splits.info, "")
    info = cache.get(cfg.targets[0]).info
    model = estimate.timing_model(
        cfg.model.name, info.image_shape, info.num_outputs, estimate.torch.device("cpu"),
        cfg.model.options,
    )  # fmt: skip
    docs = {p.stem: json.loads(p.read_text()) for p in (out / "analyses").glob("*.json")}
    for target in estimate.target_sizes(cfg, sizes, plan, model, info.image_shape):
        work = {  # each analysis's own lines counted in, as if it ran alone
            name: registry.get(name).work(cfg.analyses.of(name), target).alone()
            for name in ("interpolation", "alignment", "connectivity", "similarity", "trajectory")
        }
        entries = {name: docs[name]["targets"][target.label] for name in work}
        # Fixup has no BatchNorm: a path's points evaluate the test examples alone.
        for name, lines_per_pair in (("interpolation", 1), ("alignment", 2), ("connectivity", 2)):
            e, o = entries[name], cfg.analyses.of(name)
            expected = lines_per_pair * len(e["pairs"]) * o.num_points * e["examples"]
            assert work[name].forwards == expected, (name, target.label)
        o = cfg.analyses.of("connectivity")
        assert work["connectivity"].train == len(entries["connectivity"]["pairs"]) * o.epochs * min(
            o.max_train_examples, target.train
        )
        sim = entries["similarity"]
        assert work["similarity"].forwards == 2 * sim["subset"]["examples"] * len(sim["pairs"])
        assert work["similarity"].multiply_adds > 0
        partners = sum(
            len(p.get("barrier_partners") or []) for p in entries["trajectory"]["points"]
        )
        per_line = cfg.analyses.of("trajectory").num_points * target.test
        assert partners > 0 and work["trajectory"].forwards == partners * per_line
        # A multi-label target (the mosaic) computes one AUC per label at every point of a path.
        multilabel = entries["interpolation"]["metric_name"] == "mean_auc"
        assert (target.labels > 0) == multilabel
        points = (
            len(entries["interpolation"]["pairs"]) * cfg.analyses.of("interpolation").num_points
        )
        assert work["interpolation"].aucs == target.labels * points
    # Estimate against the time taken, as each document records it and `run` listed them.
    said = (out.parent / "stdout.txt").read_text()
    assert "analysis times, estimated before each started and taken:" in said
    timings = {
        n: json.loads((out / "analyses" / "timings" / f"{n}.json").read_text()) for n in docs
    }
    timed = {n: t for n, t in timings.items() if t["estimated_seconds"]}
    assert {"similarity", "interpolation", "criticality", "connectivity"} <= set(timed)
    for name, t in timed.items():
        assert f"  {name} " in said and t["threads"] == int(THREADS)
        # At least a second of work (CPU time: waiting for a busy core is not work); below
        # that, a process's one-off costs (imports, first calls) outweigh the analysis.
        if t["cpu_seconds"] >= 1.0:
            assert 1 / 5 < t["seconds"] / t["estimated_seconds"] < 5, (name, t)
    total = sum(t["seconds"] for t in timed.values())
    assert 1 / 3 < total / sum(t["estimated_seconds"] for t in timed.values()) < 3, timed


def test_a_trajectory_run_at_the_end_of_pretraining_reuses_its_p_t_twin(reference, tmp_path):
    """P@2-T (P's last checkpoint is its final weights) is P-T's training under another name:
    its files are linked from P-T's, and training it on its own gives the same weights."""
    import shutil

    import torch

    from transferscope.study.executors import execute_run
    from transferscope.studydir.inputs import DataCache
    from transferscope.training import checkpoints as ckpt

    ref = StudyStore(reference[0])
    plan = ref.read_plan()
    for run in plan.select(kind="P@k-T"):
        twin = plan.select(kind="P-T", target=run.target, shuffle=None, seed=run.seed)[0]
        copied = ref.summary(run.id).get("copied_from")
        assert copied == (twin.id if run.checkpoint == 2.0 else None), run.id
    run = next(r for r in plan.select(kind="P@k-T", target="digits") if r.checkpoint == 2.0)
    alone = StudyStore(tmp_path / "alone")
    p = plan.select(kind="P")[0]
    shutil.copytree(ref.run_dir(p.id), alone.run_dir(p.id))
    for name in ("study.yaml", "plan.json"):
        shutil.copy(reference[0] / name, alone.root / name)
    threads = torch.get_num_threads()
    torch.set_num_threads(int(THREADS))  # as the reference study
    try:
        cfg = alone.read_config()
        summary = execute_run(run, cfg, alone, DataCache(), torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert "copied_from" not in summary  # its twin is not done in this study: trained
    a, b = (ckpt.load_weights(s.weights_path(run.id)) for s in (ref, alone))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert rows(ref.run_dir(run.id) / "metrics.jsonl") == rows(
        alone.run_dir(run.id) / "metrics.jsonl"
    )


def test_status_lists_every_run(reference):
    out, _ = reference
    result = invoke("status", str(out))
    assert result.returncode == 0, result.stderr
    n = len(StudyStore(out).read_plan().runs)
    assert f"{n} done" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--preset", "mnii"], "unknown preset 'mnii' (did you mean 'mini'?)"),
        (["run", "--preset", "micro", "--data-dir", "/nonexistent/dir"], "is not a directory"),
        (["run", "/nonexistent/study.yaml"], "does not exist"),
    ],
)
def test_run_errors_are_one_line_without_traceback(args, needle, tmp_path):
    result = invoke(*args, "--out", str(tmp_path / "s"))
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_error_in_file(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("preset: micro\nfinetune: {lr: -1}\nmodel: {name: fixup-smal}\n")
    result = invoke("run", str(path), "--out", str(tmp_path / "s"))
    assert result.returncode == 2
    assert "finetune.lr" in result.stderr and "Traceback" not in result.stderr
    path.write_text("preset: micro\nmodel: {name: fixup-smal}\n")
    result = invoke("run", str(path), "--out", str(tmp_path / "s"))
    assert result.returncode == 2
    assert "fixup-small" in result.stderr
