"""A study directory never gives a silent wrong answer: its files follow the umask, damaged runs
are found, analyses are redone when what they read changed, a rerun keeps the study's own config,
and two commands never work on one directory at once."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from transferscope import atomic
from transferscope.config import StudyConfig
from transferscope.data.base import Splits, TensorImageDataset
from transferscope.errors import TransferscopeError
from transferscope.report.findings import load_study
from transferscope.report.html import render_html
from transferscope.study.analyze import run_analyses
from transferscope.studydir.data_changes import changed_runs
from transferscope.studydir.inputs import DataCache
from transferscope.studydir.lock import LOCK, StudyLock
from transferscope.studydir.plan import Plan, build_plan
from transferscope.studydir.store import StudyStore
from transferscope.training import checkpoints as ckpt
from transferscope.training.metrics import chance_level
from transferscope.training.trainer import read_metrics

from fake_study import INFO, FakeData, fake_config, fake_study, write_runs
from fixtures_data import make_imagefolder
from study_checks import invoke


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path: Path, umask, mask: int, mode: int) -> None:
    umask(mask)
    assert atomic.current_umask() == mask
    atomic.write_text(tmp_path / "study.yaml", "name: x\n")
    atomic.write_json(tmp_path / "analyses" / "curves.json", {"status": "ok"})
    atomic.write_npy(tmp_path / "predictions" / "test_outputs.npy", np.zeros(3))
    ckpt.save_weights(tmp_path / "checkpoints" / "final.safetensors", {"w": torch.ones(2)})
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 4
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


# --------------------------------------------------------------------------------------------
# a hand-made study (no training): digits-shaped runs with random weights

DIGITS = {"name": "digits", "options": {"image_size": 8}}


def config(**overrides: Any) -> StudyConfig:
    data: dict[str, Any] = {
        "name": "tiny",
        "source": {**DIGITS, "id": "src"},
        "targets": [DIGITS],
        "model": {"name": "fixup-small", "options": {"widths": [4, 4, 4]}},
        "pretrain": {"epochs": 1},
        "finetune": {"epochs": 1, "lr": 0.02},
        "randinit": {"epochs": 1},
        "seeds": [0, 1],
        "same_init_pair": False,
    }
    return StudyConfig.model_validate({**data, **overrides})


def make_study(root: Path, cfg: StudyConfig, **kwargs: Any) -> tuple[StudyStore, Plan]:
    store, plan = fake_study(root, cfg)
    write_runs(store, plan, **kwargs)
    return store, plan


def analyse(store: StudyStore, names: list[str]) -> dict[str, str]:
    """Run ``names``; returns each one's progress messages joined by ' | '."""
    calls: dict[str, list[str]] = {}
    run_analyses(
        store, only=names, progress=lambda n, m: calls.setdefault(n, []).append(m), cache=FakeData()
    )
    return {n: " | ".join(m) for n, m in calls.items()}


def test_an_analysis_is_redone_when_a_run_it_read_is_trained_again(tmp_path: Path) -> None:
    store, plan = make_study(tmp_path / "study", config())
    assert analyse(store, ["curves", "mistakes"]) == {
        "curves": "running | done",
        "mistakes": "running | done",
    }
    assert analyse(store, ["curves", "mistakes"]) == {"curves": "cached", "mistakes": "cached"}
    doc = json.loads((store.analyses_dir / "curves.json").read_text())
    assert doc["computed_because"] == "no earlier result"
    pt = plan.select(kind="P-T")[0]
    assert pt.id in doc["inputs"]["runs"]
    # The same run trained again: same files, a new DONE.
    time.sleep(0.01)
    store.mark_done(pt.id, {"metric_name": "accuracy", "final_metric": 0.5, "seconds": 2.0})
    calls = analyse(store, ["curves", "mistakes"])
    for name in ("curves", "mistakes"):
        assert calls[name].startswith(f"recomputing: run {pt.id} was trained again"), calls
        assert calls[name].endswith("done")
    doc = json.loads((store.analyses_dir / "curves.json").read_text())
    assert doc["computed_because"] == f"run {pt.id} was trained again (its DONE changed)"
    # A file of a run changed after its DONE: the analysis is redone, and refuses the run.
    rit = plan.select(kind="RI-T")[0]
    (store.run_dir(rit.id) / "metrics.jsonl").write_text('{"step": 0, "metric": 0.99}\n' * 3)
    with pytest.raises(TransferscopeError, match=f"run {rit.id} is damaged: .*metrics.jsonl"):
        analyse(store, ["curves"])


class OtherTestSplit(FakeData):
    """FakeData with one example fewer in the target's test split."""

    def get(self, spec):
        splits = super().get(spec)
        if spec.label != "digits":
            return splits
        test = TensorImageDataset(splits.test.images[:-1], splits.test.targets[:-1])
        return Splits(info=splits.info, train=splits.train, test=test)


def test_an_analysis_is_redone_when_the_data_it_read_changed(tmp_path: Path) -> None:
    """A run's id does not cover its data, and the domain analysis reads a target's data and P
    only: a changed split must redo it (and every other analysis) even when no run changed."""
    store, _ = make_study(tmp_path / "study", config())
    names = ["curves", "domain"]
    calls: dict[str, list[str]] = {}

    def run(cache: DataCache) -> dict[str, str]:
        calls.clear()
        progress = lambda n, m: calls.setdefault(n, []).append(m)  # noqa: E731
        run_analyses(store, only=names, progress=progress, cache=cache)
        return {n: " | ".join(m) for n, m in calls.items()}

    run(FakeData())
    assert run(FakeData()) == {"curves": "cached", "domain": "cached"}
    again = run(OtherTestSplit())
    for name in names:
        assert again[name].startswith("recomputing: the data of 'digits' changed"), again
    doc = json.loads((store.analyses_dir / "domain.json").read_text())
    assert set(doc["inputs"]["data"]) == {"src", "digits"}
    # A result written before analyses recorded their data is not trusted either.
    del doc["inputs"]["data"]
    (store.analyses_dir / "domain.json").write_text(json.dumps(doc))
    assert run(OtherTestSplit())["domain"].startswith(
        "recomputing: it was computed before analyses recorded their data"
    )


def test_a_config_change_redoes_the_analyses_and_status_lists_the_old_runs(tmp_path: Path) -> None:
    """The issue's case: finetune.lr edited, the study rerun: new P-T runs train, and every
    analysis must use them, not the old ones."""
    store, plan = make_study(tmp_path / "study", config())
    analyse(store, ["curves", "mistakes", "distance"])
    old_pts = {r.id for r in plan.select(kind="P-T")}
    # What `transferscope run` does with the edited config: new plan, the new runs trained.
    new_cfg = config(finetune={"epochs": 1, "lr": 0.05})
    new_plan = build_plan(new_cfg, {"src": INFO, "digits": INFO})
    store.write_study(new_cfg, new_plan)
    new_pts = {r.id for r in new_plan.select(kind="P-T")}
    assert len(new_pts) == 2 and not new_pts & old_pts
    write_runs(store, new_plan, runs=new_plan.select(kind="P-T"), final_metric=0.7)
    calls = analyse(store, ["curves", "mistakes", "distance"])
    # 2 P-T runs and the control pair's 2 P@0-T runs (fine-tuned with the same recipe).
    for name, messages in calls.items():
        assert (
            "recomputing: the study's plan changed (4 runs added, 4 no longer planned)" in messages
        ), name
        used = set(json.loads((store.analyses_dir / f"{name}.json").read_text())["runs_used"])
        assert new_pts <= used and not used & old_pts, name
    result = invoke("status", str(store.root))
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "4 runs on disk are not in the current plan" in out
    for rid in old_pts:
        assert f"{rid} done" in out


# --------------------------------------------------------------------------------------------
# damaged runs


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_a_truncated_checkpoint_makes_the_run_damaged_everywhere(tmp_path: Path) -> None:
    store, plan = make_study(tmp_path / "study", config())
    pt = plan.select(kind="P-T")[0]
    truncate(store.weights_path(pt.id))
    assert store.state(pt.id) == "damaged"
    assert "checkpoints/final.safetensors has" in (store.damage(pt.id, checksums=False) or "")
    # status: the state and the file, one line each, rc 0 (it is a report, not an error)
    result = invoke("status", str(store.root))
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "damaged" in out and "checkpoints/final.safetensors" in out
    assert "trained again by `transferscope run" in out
    # analyze: one line naming the file and the fix, not a silent skip of the pair
    result = invoke("analyze", str(store.root), "--only", "mistakes")
    assert result.returncode == 2, result.stdout + result.stderr
    error = " ".join(result.stderr.split())
    assert f"run {pt.id} is damaged" in error and "final.safetensors" in error
    assert "Traceback" not in result.stderr and "to retrain it" in error
    # the report's run table says so too
    row = next(r for r in load_study(store.root).runs if r.id == pt.id)
    assert row.state == "damaged" and "final.safetensors" in (row.error or "")
    # a rerun removes it, so it trains again from scratch
    assert [rid for rid, _ in store.retrain_damaged(plan)] == [pt.id]
    assert store.state(pt.id) == "pending"


def test_a_changed_file_of_the_same_size_is_found_by_its_checksum(tmp_path: Path) -> None:
    store, plan = make_study(tmp_path / "study", config())
    rit = plan.select(kind="RI-T")[0]
    path = store.run_dir(rit.id) / "predictions" / "test_outputs.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert store.state(rit.id) == "done"  # sizes agree: the cheap check cannot see it
    assert store.state(rit.id, checksums=True) == "damaged"
    result = invoke("status", str(store.root), "--verify")
    assert "damaged" in result.stdout and "SHA-256" in " ".join(result.stdout.split())


def test_a_corrupt_metrics_line_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "run" / "metrics.jsonl"
    path.parent.mkdir()
    rows = [{"epoch": e, "step": e, "metric": 0.5} for e in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_metrics(path.parent) == rows
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:-3] + "#"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TransferscopeError) as err:
        read_metrics(path.parent)
    assert f"{path}, line 2: not valid JSON" in str(err.value) and "\n" not in str(err.value)
    path.write_text(json.dumps(rows[0]) + "\n[1, 2]\n")
    with pytest.raises(TransferscopeError, match="line 2: not a metrics row"):
        read_metrics(path.parent)


def test_a_corrupt_done_is_a_damaged_run_not_a_traceback(tmp_path: Path) -> None:
    store, plan = make_study(tmp_path / "study", config())
    rit = plan.select(kind="RI-T")[0]
    (store.run_dir(rit.id) / "DONE").write_text('{"final_metric": 0.')
    assert store.state(rit.id) == "damaged"
    result = invoke("status", str(store.root))
    assert result.returncode == 0 and "DONE is not valid JSON" in " ".join(result.stdout.split())
    result = invoke("analyze", str(store.root), "--only", "curves")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"run {rit.id} is damaged" in " ".join(result.stderr.split())
    assert next(r for r in load_study(store.root).runs if r.id == rit.id).state == "damaged"


# --------------------------------------------------------------------------------------------
# chance level


def test_chance_level_bands() -> None:
    # 10 classes, 400 test images: 2.576 * sqrt(0.1 * 0.9 / 400) = 0.0386
    at = chance_level("multiclass", 10, 400, 0.12)
    assert at.chance == pytest.approx(0.1) and at.band == pytest.approx(0.0386, abs=1e-4)
    assert at.at_chance
    assert not chance_level("multiclass", 10, 400, 0.15).at_chance
    assert chance_level("multiclass", 10, 400, 0.02).at_chance  # worse than chance: flagged too
    assert chance_level("multiclass", 3, 30, 1 / 3).at_chance  # the 3-class RI-T runs
    assert chance_level("multiclass", 3, 30, float("nan")).at_chance
    # multilabel: AUC null band; rare labels make it wider than balanced ones
    balanced = chance_level("multilabel", 5, 200, 0.55)
    rare = chance_level("multilabel", 5, 200, 0.55, positives=[5] * 5)
    assert balanced.chance == 0.5 and rare.band > balanced.band
    assert balanced.band == pytest.approx(2.576 * (201 / (12 * 100 * 100)) ** 0.5)
    assert not chance_level("multilabel", 5, 200, 0.65).at_chance


def test_runs_at_chance_are_flagged_in_status_and_the_report(tmp_path: Path) -> None:
    store, plan = make_study(tmp_path / "study", config(), final_metric=0.1, n_test=40)
    good = plan.select(kind="P-T")[0]
    summary = store.summary(good.id)
    assert summary is not None
    summary.pop("files")
    store.mark_done(good.id, {**summary, "final_metric": 0.8})
    result = invoke("status", str(store.root))
    lines = [line for line in result.stdout.splitlines() if line.startswith("at chance ")]
    assert len(lines) == len(plan.runs) - 1 and not any(good.id in line for line in lines)
    assert "accuracy 0.1000 is within noise of chance (0.1 ± 0.12)" in lines[0]
    data = load_study(store.root)
    flags = {r.id: r.chance_level for r in data.runs}
    assert flags[good.id] is False and sum(flags.values()) == len(plan.runs) - 1
    row = next(r for r in data.runs if r.id != good.id)
    assert row.chance is not None and row.chance["chance"] == pytest.approx(0.1)
    html = render_html(data, tmp_path / "report", formats=("png",))
    assert "at chance (0.1 ±" in html and "runs ended within noise of chance" in html


# --------------------------------------------------------------------------------------------
# rerunning a study: its own config, or a different one only with --force

STUDY_YAML = """\
name: tiny
source: {name: digits, id: src, options: {image_size: 8}}
targets: [{name: digits, options: {image_size: 8}}]
model: {name: fixup-small, options: {widths: [4, 4, 4]}}
pretrain: {epochs: 1, batch_size: 64}
finetune: {epochs: 1, batch_size: 64, lr: 0.02}
randinit: {epochs: 1, batch_size: 64}
seeds: [0]
same_init_pair: false
"""


@pytest.mark.slow
def test_run_without_a_config_resumes_the_studys_own(tmp_path: Path) -> None:
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(STUDY_YAML)
    out = tmp_path / "study"
    result = invoke("run", str(config_file), "--out", str(out), "--plan-only")
    assert result.returncode == 0, result.stderr
    study_yaml, plan_json = (out / "study.yaml").read_text(), (out / "plan.json").read_text()
    # No config: the study's own, not the mini preset.
    result = invoke("run", "--out", str(out), "--plan-only")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert "with its own config" in said and "3 runs" in said
    assert (out / "study.yaml").read_text() == study_yaml
    assert (out / "plan.json").read_text() == plan_json
    # The same config again, with other execution settings: no change, no question.
    result = invoke("run", str(config_file), "--out", str(out), "--plan-only", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    # study.yaml now says jobs: 2, and plan.json the SHA-256 of that study.yaml; the runs are
    # the same.
    assert "jobs: 2" in (out / "study.yaml").read_text()
    assert json.loads((out / "plan.json").read_text())["runs"] == json.loads(plan_json)["runs"]
    plan_json = (out / "plan.json").read_text()
    # Another config: refused, naming the keys; nothing rewritten.
    config_file.write_text(STUDY_YAML.replace("lr: 0.02", "lr: 0.05").replace("[0]", "[0, 1]"))
    result = invoke("run", str(config_file), "--out", str(out), "--plan-only")
    assert result.returncode == 2, result.stdout + result.stderr
    error = " ".join(result.stderr.split())
    assert "another config (differs in finetune.lr, seeds)" in error and "--force" in error
    assert "Traceback" not in result.stderr
    assert (out / "plan.json").read_text() == plan_json
    result = invoke("run", "--preset", "micro", "--out", str(out), "--plan-only")
    assert result.returncode == 2 and "differs in name, source" in " ".join(result.stderr.split())
    # --force: the new config replaces it.
    result = invoke("run", str(config_file), "--out", str(out), "--plan-only", "--force")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    # P, two P-T, two RI-T and the control pair's two P@0-T.
    assert "going on (--force)" in said and "7 runs" in said
    assert "lr: 0.05" in (out / "study.yaml").read_text()


@pytest.mark.slow
def test_a_study_grows_by_seeds_and_targets_without_force(tmp_path: Path) -> None:
    """More seeds (``--seeds`` or the config) or another target grow a study: the finished runs
    are kept by id, only the new ones train. Anything else still needs --force."""
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(STUDY_YAML)
    out = tmp_path / "study"
    result = invoke("run", str(config_file), "--out", str(out), "--threads", "1", "--no-analyses")
    assert result.returncode == 0, result.stdout + result.stderr
    done = {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/DONE")}
    assert len(done) == 3
    result = invoke("run", "--out", str(out), "--seeds", "0,1", "--threads", "1", "--no-analyses")
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    # The second seed's P-T and RI-T and the two control fine-tunes of P's untrained init.
    assert "growing the study" in said and "seeds 0 → 0,1" in said
    assert "7 runs, 4 to train" in said
    after = {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/DONE")}
    assert len(after) == 7 and all(after[run] == t for run, t in done.items())
    assert "seeds:\n- 0\n- 1" in (out / "study.yaml").read_text()
    # Another target in the config file: grows too (planned here, not trained).
    grown = STUDY_YAML.replace("[0]", "[0, 1]").replace(
        "targets: [{name: digits, options: {image_size: 8}}]",
        "targets: [{name: digits, options: {image_size: 8}}, "
        "{name: digits, id: second, options: {image_size: 8}}]",
    )
    config_file.write_text(grown)
    result = invoke("run", str(config_file), "--out", str(out), "--plan-only")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "targets + second" in " ".join(result.stdout.split())
    # Seeds in another order change the roles of finished runs: another study, --force needed.
    result = invoke("run", "--out", str(out), "--seeds", "1,0", "--plan-only")
    assert result.returncode == 2 and "differs in seeds" in " ".join(result.stderr.split())
    result = invoke("run", "--out", str(out), "--seeds", "0,x")
    assert result.returncode == 2 and "--seeds '0,x'" in result.stderr


def test_a_damaged_or_missing_study_yaml_is_never_trusted(tmp_path: Path) -> None:
    """study.yaml cut short (still valid YAML, defaults where its end was), or deleted: `run`,
    `analyze`, `report` and `--plan-only` stop with one line naming the file and the fix, and
    write nothing; the study's own config file with --force is the way on."""
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(STUDY_YAML)
    out = tmp_path / "study"
    assert invoke("run", str(config_file), "--out", str(out), "--plan-only").returncode == 0
    study_yaml, plan_json = out / "study.yaml", out / "plan.json"
    whole, plan = study_yaml.read_bytes(), plan_json.read_bytes()
    assert json.loads(plan)["study_yaml_sha256"] == hashlib.sha256(whole).hexdigest()
    mismatch = f"{study_yaml} does not match plan.json: it was edited, cut short or replaced"
    fix = f"`transferscope run CONFIG --out {out} --force`"
    lines = whole.decode().splitlines(keepends=True)
    for damaged in (whole[:200], "".join(lines[: len(lines) // 2]).encode()):
        study_yaml.write_bytes(damaged)
        for args in (
            ("run", "--out", str(out)),
            ("run", "--out", str(out), "--plan-only"),
            ("run", str(config_file).replace("tiny", "other"), "--out", str(out)),
            ("analyze", str(out), "--only", "curves"),
            ("report", str(out)),
        ):
            if "other" in args[1]:
                (tmp_path / "other.yaml").write_text(STUDY_YAML.replace("lr: 0.02", "lr: 0.05"))
            result = invoke(*args)
            error = " ".join(result.stderr.split())
            assert result.returncode == 2, (args, result.stdout, result.stderr)
            assert mismatch in error and fix in error and "Traceback" not in result.stderr, error
        assert plan_json.read_bytes() == plan and study_yaml.read_bytes() == damaged
        assert not (out / "analyses").exists() and not (out / "report").exists()
    # Missing: never a new default study over the old one's plan and runs.
    study_yaml.unlink()
    for args in (("run", "--out", str(out)), ("run", "--out", str(out), "--plan-only")):
        result = invoke(*args)
        error = " ".join(result.stderr.split())
        assert result.returncode == 2 and f"{study_yaml} is missing" in error and fix in error
        assert plan_json.read_bytes() == plan and not study_yaml.exists()
    # The fix: the study's config with --force writes both again, and they match.
    result = invoke("run", str(config_file), "--out", str(out), "--plan-only", "--force")
    assert result.returncode == 0, result.stderr
    assert study_yaml.read_bytes() == whole and plan_json.read_bytes() == plan
    # Killed between the two writes: study.yaml is new, plan.json not yet. The same config given
    # again is what study.yaml says, and goes on without --force.
    study_yaml.write_text(whole.decode().replace("jobs: 1", "jobs: 2"))
    result = invoke("run", str(config_file), "--out", str(out), "--plan-only")
    assert result.returncode == 0, result.stderr
    assert study_yaml.read_bytes() == whole and plan_json.read_bytes() == plan


# --------------------------------------------------------------------------------------------
# one command per study directory

HOLD = """
import sys, time
from transferscope.studydir.lock import StudyLock
with StudyLock(sys.argv[1], "transferscope run tiny.yaml --out study"):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.mark.slow
def test_a_second_command_on_a_locked_study_names_the_holder(tmp_path: Path) -> None:
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(STUDY_YAML)
    out = tmp_path / "study"
    assert invoke("run", str(config_file), "--out", str(out), "--plan-only").returncode == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for args in (("run", "--out", str(out)), ("analyze", str(out))):
            result = invoke(*args)
            assert result.returncode == 2, result.stdout + result.stderr
            error = " ".join(result.stderr.split())
            assert f"is in use by pid {holder.pid} on host {socket.gethostname()}" in error
            assert "`transferscope run tiny.yaml --out study`" in error
            assert "Traceback" not in result.stderr
        # status reads while another command works
        assert invoke("status", str(out)).returncode == 0
    finally:
        holder.kill()
        holder.wait()
    # The holder died without letting go: its lock is stale, taken over at once, and said so.
    lock = out / LOCK
    lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
    started = time.monotonic()
    result = invoke("run", "--out", str(out), "--plan-only")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 4  # not the wait for a dead holder's orphans (5 s)
    said = " ".join(result.stderr.split())
    assert f"warning: took over the lock of {out} from pid {holder.pid} on host" in said
    assert "which is no longer running (it was killed or crashed)" in said
    assert not lock.exists()


def test_the_lock_is_the_top_level_commands(tmp_path: Path) -> None:
    """Within one process a second lock is refused (so code run under a command must never take
    it), and child processes (the local executor's workers, Ray) do not inherit it: a command
    that dies releases it even while a child it started lives on."""
    with StudyLock(tmp_path, "first") as lock:
        with pytest.raises(TransferscopeError, match=f"in use by pid {os.getpid()}"):
            StudyLock(tmp_path, "second").acquire()
        assert lock._fd is not None and not os.get_inheritable(lock._fd)
        holder = json.loads((tmp_path / LOCK).read_text())
        assert holder["command"] == "first" and holder["host"] == socket.gethostname()
    assert not (tmp_path / LOCK).exists()
    with StudyLock(tmp_path, "again"):  # released: free again
        pass


def test_a_lock_held_by_the_orphans_of_a_dead_command_names_them(tmp_path: Path) -> None:
    """The processes of a command that died still hold its lock (workers that did not end with
    it): the next command waits for them briefly, then says what holds the lock, not that the
    dead command does."""
    from transferscope.studydir import lock as lock_mod

    with StudyLock(tmp_path, "first"):
        # The record names a process that is gone; this process plays its orphan.
        (tmp_path / LOCK).write_text(json.dumps({"pid": 2**22 + 1, "host": socket.gethostname()}))
        waits = lock_mod.ORPHAN_WAIT_S
        lock_mod.ORPHAN_WAIT_S = 0.3
        try:
            with pytest.raises(TransferscopeError) as err:
                StudyLock(tmp_path, "second").acquire()
        finally:
            lock_mod.ORPHAN_WAIT_S = waits
    message = str(err.value)
    assert f"is locked by processes that pid {2**22 + 1} on host" in message
    assert "that command is no longer running, but they still are" in message
    assert f"fuser -v {tmp_path / LOCK}" in message


# --------------------------------------------------------------------------------------------
# a run that fails fails alone


class _LoaderWorkerDies(torch.utils.data.Dataset):
    """``base`` streamed through a DataLoader. The first data-loader worker process to read item
    3 is SIGKILLed, as the kernel ends one that runs out of memory or threads; ``marker`` records
    that it happened (workers are separate processes), so later runs read their data."""

    def __init__(self, base: Any, marker: Path) -> None:
        self.base, self.marker = base, marker

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        worker = torch.utils.data.get_worker_info()
        if i == 3 and worker is not None and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), 9)
        return self.base[i]


class _StreamedFakeData(FakeData):
    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = marker

    def get(self, spec: Any) -> Splits:
        splits = super().get(spec)
        if spec.label == "src":  # P trains on its own data; the target's runs stream theirs
            return splits
        return Splits(splits.info, _LoaderWorkerDies(splits.train, self.marker), splits.test)


def test_a_run_whose_data_loader_worker_dies_fails_alone(
    tmp_path: Path, monkeypatch, one_thread
) -> None:
    """A data-loader worker of one run is killed: that run is FAILED (the error, its traceback in
    train.log and FAILED's last log lines), the others train, and a rerun trains it."""
    from transferscope.study.executors import LocalExecutor
    from transferscope.training import loaders

    monkeypatch.setattr(loaders, "default_workers", lambda: 1)  # 0 on a 1-core machine
    cfg = fake_config(
        seeds=[0],
        same_init_pair=False,
        control_pair=False,
        shuffles={"block_sizes": [], "pixel": False},
    )
    store, plan = fake_study(tmp_path / "study", cfg)
    assert len(plan.runs) == 3  # P, P-T, RI-T
    marker = tmp_path / "killed-loader-worker"
    outcome = LocalExecutor(store, cfg, _StreamedFakeData(marker)).run(plan)
    failed = [k for k, v in outcome.runs.items() if v.startswith("failed")]
    assert len(failed) == 1, outcome.runs
    victim = failed[0]
    assert marker.is_file()
    error = outcome.runs[victim].removeprefix("failed: ")
    assert error.startswith(f"RuntimeError: DataLoader worker (pid(s) {marker.read_text()})")
    assert "\n" not in error
    doc = json.loads((store.run_dir(victim) / "FAILED").read_text())
    assert doc["error"] == error and doc["log"][-1].endswith(f"failed: {error}")
    log = (store.run_dir(victim) / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and f"run {victim} starts" in log
    assert all(store.is_done(r.id) for r in plan.runs if r.id != victim)
    # A rerun tries it again (and the worker lives this time).
    outcome = LocalExecutor(store, cfg, _StreamedFakeData(marker)).run(plan)
    assert outcome.runs[victim] == "done" and store.state(victim) == "done"
    assert not (store.run_dir(victim) / "FAILED").exists()


# --------------------------------------------------------------------------------------------
# end to end: tiny studies that train


@pytest.mark.slow
def test_a_damaged_run_is_trained_again_to_the_same_weights(tmp_path: Path) -> None:
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(STUDY_YAML)
    out = tmp_path / "study"
    args = ("run", str(config_file), "--out", str(out), "--quiet", "--threads", "1")
    result = invoke(*args, "--no-analyses")
    assert result.returncode == 0, result.stdout + result.stderr
    store = StudyStore(out)
    pt = store.read_plan().select(kind="P-T")[0]
    weights = store.weights_path(pt.id).read_bytes()
    truncate(store.weights_path(pt.id))
    result = invoke(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    assert f"damaged run {pt.id}: checkpoints/final.safetensors has" in said
    assert "1 to train" in said
    assert store.state(pt.id, checksums=True) == "done"
    assert store.weights_path(pt.id).read_bytes() == weights


def test_a_changed_source_takes_p_and_every_run_that_starts_from_it(tmp_path: Path) -> None:
    store, plan = make_study(tmp_path / "study", config())
    saved = np.load(store.run_dir(plan.runs[0].id) / "predictions" / "test_targets.npy")

    def loader(source_targets: np.ndarray) -> Any:
        def load(spec: Any) -> Any:
            targets = source_targets if spec.label == "src" else saved
            return SimpleNamespace(test=SimpleNamespace(targets=torch.as_tensor(targets)))

        return load

    assert changed_runs(store, plan, loader(saved)) == []
    found = dict(changed_runs(store, plan, loader(saved[:-1])))
    p = plan.select(kind="P")[0]
    assert (
        f"its {len(saved)} test examples are not the {len(saved) - 1} in the test split of 'src'"
        in found[p.id]
    )
    children = [r.id for r in plan.runs if p.id in r.depends_on]
    assert children, "the tiny study has P-T runs"
    for child in children:
        assert found[child] == f"it started from run {p.id}, which changed"
    assert set(found) == {p.id, *children}  # RI-T runs start from their own init: kept
    # Same length, another label: found too.
    flipped = saved.copy()
    flipped[0] = (flipped[0] + 1) % 10
    assert p.id in dict(changed_runs(store, plan, loader(flipped)))


def image_folder_study(tmp_path: Path, finetune: str | None = None) -> tuple[Path, Path]:
    """STUDY_YAML with a generated 3-class image folder (6 images a class, a quarter held out
    for test, augmented for training) as its target: (the folder, the config file).
    ``finetune`` replaces the start of the finetune line."""
    root = make_imagefolder(tmp_path / "tree", {"a": 6, "b": 6, "c": 6})
    target = (
        f"{{name: imagefolder, root: {root}, "
        "options: {image_size: 8, channels: 1, augment: true, test_fraction: 0.25}}"
    )
    text = STUDY_YAML.replace("[{name: digits, options: {image_size: 8}}]", f"[{target}]")
    if finetune is not None:
        text = text.replace("finetune: {epochs: 1, batch_size: 64", finetune)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(text)
    return root, config_file


@pytest.mark.slow
def test_runs_whose_data_changed_are_trained_again(tmp_path: Path) -> None:
    """A run's id does not hash its data: an image folder that lost files, gained (mislabelled)
    training images, or had a test image replaced in place under its name plans the same ids.
    Each time the runs that read the changed split are trained again and `run` says which split
    changed; the runs whose data did not change (P, on digits) are kept."""
    root, config_file = image_folder_study(tmp_path)
    out = tmp_path / "study"
    args = ("run", str(config_file), "--out", str(out), "--quiet", "--no-analyses")
    assert invoke(*args, "--threads", "1").returncode == 0
    store = StudyStore(out)
    plan = store.read_plan()
    p = plan.select(kind="P")[0]
    targets = [r.id for r in plan.runs if r.spec.kind != "P"]
    p_done = (store.run_dir(p.id) / "DONE").read_bytes()
    assert store.summary(targets[0])["threads"] == 1  # type: ignore[index]
    data = store.summary(targets[0])["data"]  # type: ignore[index]
    assert data["label"] == "imagefolder" and data["train"]["files"] is True
    assert (data["train"]["examples"], data["test"]["examples"]) == (12, 6)
    result = invoke(*args, "--plan-only")  # the same data: nothing changed, nothing to train
    assert "data changed" not in result.stdout and "0 to train" in result.stdout

    def rerun(why: str) -> None:
        result = invoke(*args, "--threads", "1")
        assert result.returncode == 0, result.stdout + result.stderr
        said = " ".join(result.stdout.split())
        for run_id in targets:
            assert f"data changed for run {run_id}: {why}; it is trained again" in said, said
        assert f"{len(targets)} to train" in said and p.id not in said
        assert (store.run_dir(p.id) / "DONE").read_bytes() == p_done

    # Two of class c's six images removed: its test share drops from 2 images to 1.
    for name in ("c_004.jpg", "c_005.jpg"):
        (root / "c" / name).unlink()
    rerun(
        "the training split of 'imagefolder' changed since it was read (12 examples then, 11 now)"
    )
    for run_id in targets:
        saved = np.load(store.run_dir(run_id) / "predictions" / "test_targets.npy")
        assert saved.tolist() == [0, 0, 1, 1, 2]
    # A test image replaced in place, same name, same class: the split's size and labels hold.
    test_paths = DataCache().get(plan.select(kind="P-T")[0].spec.data).test.paths
    image = Path(test_paths[0])
    image.write_bytes((root / "b" / "b_000.jpg").read_bytes())
    rerun(
        "the test split of 'imagefolder' changed since it was read (the same 5 examples, but "
        "other files, file sizes, times or labels)"
    )


@pytest.mark.slow
def test_pt_on_an_augmented_image_folder_is_reproducible(tmp_path: Path) -> None:
    """The issue's case: P-T on an image-folder target with augmentation gave another
    final.safetensors each time: its crops and flips (drawn in the loader's worker processes)
    came from whatever state the global generator of the process that trained it was in, which
    depends on the runs that process trained before. The same P-T trained right after P in one
    `transferscope run`, and alone in a fresh process (`python -m transferscope.cli.train_run`), must
    give the same weights."""
    _, config_file = image_folder_study(tmp_path, "finetune: {epochs: 2, batch_size: 4")
    whole, alone = tmp_path / "whole", tmp_path / "alone"
    args = ("--quiet", "--no-analyses", "--threads", "1")
    result = invoke("run", str(config_file), "--out", str(whole), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    # One thread in both (train_run takes it from study.yaml): sums in another order differ.
    result = invoke("run", str(config_file), "--out", str(alone), "--plan-only", "--threads", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    plan = StudyStore(alone).read_plan()
    p, pt = plan.select(kind="P")[0], plan.select(kind="P-T")[0]
    for run in (p, pt):
        trained = subprocess.run(
            [sys.executable, "-m", "transferscope.cli.train_run", str(alone / "runs" / run.id)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert trained.returncode == 0, trained.stdout + trained.stderr
    weights = [StudyStore(d).weights_path(pt.id).read_bytes() for d in (whole, alone)]
    assert weights[0] == weights[1]


@pytest.mark.slow
def test_analyses_of_an_augmented_image_folder_recompute_byte_identical(
    tmp_path: Path, one_thread: None
) -> None:
    """The issue's case: criticality's μ and the curve's control offset came out different on
    every `analyze --force` of one study: the analyses read the augmented training split, and
    its crops and flips were drawn from whatever state torch's generator was in. Two recomputes
    write the same bytes, with the files' provenance (`inputs`) included."""
    _, config_file = image_folder_study(tmp_path)
    with config_file.open("a") as f:  # the two analyses that read the training split, small
        f.write(
            "analyses:\n"
            "  criticality: {num_alphas: 3, num_sigmas: 3, noise_samples: 1, heatmap_alphas: 2,"
            " heatmap_sigmas: 2, heatmap_noise_samples: 1}\n"
            "  connectivity: {epochs: 2, num_points: 3}\n"
        )
    out = tmp_path / "study"
    args = ("--quiet", "--no-analyses", "--threads", "1")
    result = invoke("run", str(config_file), "--out", str(out), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "augment: true" in (out / "study.yaml").read_text()
    written = []
    for _ in range(2):
        only = ("--only", "criticality", "--only", "connectivity")
        result = invoke("analyze", str(out), "--force", *only)
        assert result.returncode == 0, result.stdout + result.stderr
        written.append({p.name: p.read_bytes() for p in (out / "analyses").glob("*.json")})
    assert set(written[0]) == {"criticality.json", "connectivity.json"}
    for name, data in written[0].items():
        doc = json.loads(data)
        assert doc["status"] == "ok" and doc["computed_because"] == "--force", name
        assert written[1][name] == data, name
