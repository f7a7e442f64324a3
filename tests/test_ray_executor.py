"""`transferscope run --executor ray`: the micro study on a Ray instance this module starts.

One Ray instance (1 CPU, loopback, no dashboard) serves every test here; each study is run by the
CLI in a subprocess that joins it with ``--address``, as a user's driver joins a cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transferscope import config as config_mod
from transferscope import paths
from transferscope.errors import TransferscopeError
from transferscope.study.analyze import ANALYSES
from transferscope.study.ray_executor import CRASH_ENV
from transferscope.studydir.store import StudyStore
from transferscope.training import checkpoints as ckpt

from conftest import requires_fashion
from study_checks import invoke, rows

SMALL = """preset: micro
targets: [{name: digits}]
seeds: [0]
shuffles: {block_sizes: [], pixel: false}
"""
# The reference both Ray studies are compared with: SMALL plus one shuffled pair, so that every
# kind of run (P, P-T, RI-T, shuffled P-T and RI-T, P@k-T) goes through a Ray task. A run's id
# depends on its own spec only, so SMALL's runs are found in it with the same ids.
REFERENCE = SMALL.replace("block_sizes: []", "block_sizes: [7]")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "transferscope", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})},
    )


def run_study(out: Path, *extra: str, config: str = "--preset=micro", **kw) -> None:
    result = cli("run", config, "--out", str(out), "--quiet", "--threads", "1", *extra, **kw)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def ray_address():
    ray = pytest.importorskip("ray")
    # One task at a time: `make test`'s other test process holds the second core.
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def local_micro(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("local")
    (folder / "reference.yaml").write_text(REFERENCE)
    out = folder / "study"
    # The local executor, in this process: the Ray studies' runs must equal its bit for bit.
    args = (str(folder / "reference.yaml"), "--out", str(out), "--quiet", "--threads", "1")
    result = invoke("run", *args, "--no-analyses")
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def assert_runs_match(ref: Path, out: Path) -> None:
    """Every run of ``out`` is in ``ref`` with the same weights, metrics and final metric."""
    a, b = StudyStore(ref), StudyStore(out)
    ref_ids = {r.id for r in a.read_plan().runs}
    for run in b.read_plan().runs:
        assert run.id in ref_ids, run.id
        assert b.is_done(run.id) and not (b.run_dir(run.id) / "FAILED").exists(), run.id
        wa, wb = (
            ckpt.load_weights(a.weights_path(run.id)),
            ckpt.load_weights(b.weights_path(run.id)),
        )
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f"{run.id}: weights differ"
        assert rows(a.run_dir(run.id) / "metrics.jsonl") == rows(
            b.run_dir(run.id) / "metrics.jsonl"
        ), run.id
        sa, sb = a.summary(run.id), b.summary(run.id)
        for key in ("final_metric", "final_loss", "steps", "metric_name"):
            assert sa[key] == sb[key], (run.id, key)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name == paths.RESUME]


@requires_fashion
@pytest.mark.slow
def test_micro_study_on_ray_with_a_task_killed_mid_run_equals_the_local_executor(
    ray_address, local_micro, tmp_path
):
    """Every kind of run as a Ray task, one of them SIGKILLed mid-run: Ray retries it from its
    resume point, every run's weights equal the local executor's, the analyses run as Ray tasks
    and the report is built from them; a rerun trains nothing."""
    config = str(local_micro.parent / "reference.yaml")
    marker = tmp_path / "killed"
    out = tmp_path / "study"
    # The first task to reach step 40 (in its second epoch: P has 32 steps per epoch, digits 23)
    # SIGKILLs its worker; Ray retries the task and it resumes from its epoch-1 resume point.
    run_study(
        out,
        "--executor",
        "ray",
        "--address",
        ray_address,
        config=config,
        env={CRASH_ENV: f"40:{marker}"},
    )
    a, b = StudyStore(local_micro), StudyStore(out)
    assert [r.id for r in a.read_plan().runs] == [r.id for r in b.read_plan().runs]
    assert {r.spec.kind for r in b.read_plan().runs} >= {"P", "P-T", "RI-T", "P@k-T"}
    assert any(r.shuffle for r in b.read_plan().runs)
    killed = marker.read_text()
    resumed_from = int(marker.with_suffix(".resumed").read_text())
    assert killed in {r.id for r in b.read_plan().runs}
    assert 0 < resumed_from < 40
    assert_runs_match(local_micro, out)
    # The analyses ran as Ray tasks once the runs were done, and the report was built from them.
    for name in ANALYSES:
        doc = json.loads((out / "analyses" / f"{name}.json").read_text())
        assert doc["status"] in ("ok", "skipped") and not doc["runs_missing"], name
    assert json.loads((out / "analyses" / "curves.json").read_text())["status"] == "ok"
    assert (out / "report" / "index.html").is_file()
    # Rerunning skips every finished run, as locally.
    result = cli(
        "run", config, "--out", str(out), "--quiet", "--no-analyses",
        "--executor", "ray", "--address", ray_address,
    )  # fmt: skip
    assert result.returncode == 0 and "0 to train" in result.stdout, result.stderr


@requires_fashion
@pytest.mark.slow
def test_a_diverged_run_is_failed_not_retried_and_the_rest_finishes(ray_address, tmp_path):
    config = tmp_path / "diverge.yaml"
    config.write_text(SMALL + "trajectory: {checkpoints: []}\nrandinit: {lr: 1.0e+9}\n")
    out = tmp_path / "study"
    result = cli(
        "run", str(config), "--out", str(out), "--quiet", "--threads", "1", "--no-analyses",
        "--executor", "ray", "--address", ray_address,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    store = StudyStore(out)
    states = {r.spec.kind: store.state(r.id) for r in store.read_plan().runs}
    assert states == {"P": "done", "P-T": "done", "RI-T": "failed"}
    rit = store.read_plan().select(kind="RI-T")[0]
    error = json.loads((store.run_dir(rit.id) / "FAILED").read_text())["error"]
    assert error.startswith("training diverged")
    assert "1 failed" in result.stdout


def test_without_ray_the_error_says_how_to_install_it(tmp_path):
    code = (
        "import sys; sys.modules['ray'] = None; from transferscope.cli import app; "
        f"app(['run', '--preset', 'micro', '--executor', 'ray', '--out', '{tmp_path / 's'}'])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --executor ray needs Ray; install it with: pip install 'transferscope[ray]'"
    ]
    assert not (tmp_path / "s").exists()


@requires_fashion
def test_resources_are_checked_and_leave_run_ids_alone():
    with pytest.raises(TransferscopeError, match="did you mean 'gpus_per_run'"):
        config_mod.load_preset("micro", resources={"gpu_per_run": 1})
    plain = config_mod.load_preset("micro")
    asked = config_mod.load_preset("micro", resources={"gpus_per_run": 2, "cpus_per_run": 8})
    assert asked.resources.gpus("cpu") == 2 and plain.resources.gpus("cuda") == 1
    assert plain.resources.gpus("cpu") == 0
    from transferscope.studydir.inputs import DataCache, plan_study

    cache = DataCache()
    assert [r.id for r in plan_study(plain, cache).runs] == [
        r.id for r in plan_study(asked, cache).runs
    ]
