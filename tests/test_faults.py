"""Fault injection: `transferscope run` SIGKILLed at chosen points, then rerun.

Each test kills the CLI (see tests/faults.py) at specific points of a small study: during a training
step, while a checkpoint is written, during an analysis, while the report is written. After every
kill each file of the study directory must be whole (only the atomic writers' temporaries may be
torn), and the final rerun must give results identical to an uninterrupted run with nothing
temporary left over. The study is the micro preset cut to one target, one seed and five analyses so
that the tests stay short; the uninterrupted reference runs once per module. The killed commands
run in child processes; the reference and the final reruns in this one (``invoke``), which also
checks that a study's results do not depend on the process that computed them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from transferscope.studydir.store import StudyStore

from conftest import requires_fashion
from study_checks import assert_intact, assert_same_analyses, assert_same_results, invoke

pytestmark = [requires_fashion, pytest.mark.slow]

FAULTS = Path(__file__).with_name("faults.py")
CONFIG = """\
preset: micro
targets:
  - name: digits
seeds: [0]
same_init_pair: false
shuffles: {block_sizes: [], pixel: false}
trajectory: {checkpoints: []}
analyses:
  criticality: {enabled: false}
  trajectory: {enabled: false}
# Figures written in this process: the kill hook of faults.py is installed here, not in workers.
report: {workers: 1}
"""
# One thread: bit-identical results need the same thread count in every process.
ARGS = ("--quiet", "--threads", "1")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "study.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def reference(config: Path) -> Path:
    out = config.parent / "reference"
    result = invoke("run", str(config), "--out", str(out), *ARGS)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def faulty(point: str, n: int, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run the CLI with ``args`` and the fault ``point`` (tests/faults.py) at its ``n``-th time."""
    return subprocess.run(
        [sys.executable, str(FAULTS), point, str(n), *args],
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def killed(point: str, n: int, *args: str, **kwargs: Any) -> None:
    """Run the CLI with ``args`` and SIGKILL it the ``n``-th time it reaches ``point``."""
    result = faulty(point, n, *args, **kwargs)
    assert result.returncode == -9, f"not killed at {point} #{n}:\n{result.stdout}{result.stderr}"


def running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_kill_during_a_step_and_while_writing_a_checkpoint(config, reference, tmp_path):
    out = tmp_path / "study"
    run = ("run", str(config), "--out", str(out), *ARGS, "--no-analyses")
    # P trains 32 steps an epoch: step 40 is in its second epoch, past its first resume point.
    killed("step", 40, *run)
    assert_intact(out)
    # The rerun resumes P and writes epoch-2, resume and final; the 5th write is P-T's first
    # resume point, torn on disk.
    killed("write:*.safetensors", 5, *run)
    assert list(out.rglob(".resume.safetensors.*.tmp")), "the kill missed the checkpoint write"
    assert_intact(out)
    result = invoke(*run)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_same_results(reference, out)
    assert_intact(out, temporaries=False)


def test_kill_during_an_analysis_and_while_writing_the_report(config, reference, tmp_path):
    out = tmp_path / "study"
    # The finished runs of the reference: the reruns below only analyse and report.
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("analyses", "report"))
    run = ("run", str(config), "--out", str(out), *ARGS)
    killed("analysis", 4, *run)  # curves, domain and mistakes are written, similarity not
    assert (out / "analyses" / "mistakes.json").is_file()
    assert not (out / "analyses" / "similarity.json").exists()
    assert_intact(out)
    killed("write:*.png", 3, *run)
    assert list(out.rglob(".*.png.*.tmp")), "the kill missed the figure write"
    assert not (out / "report" / "index.html").exists()
    assert_intact(out)
    result = invoke(*run)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 to train" in " ".join(result.stdout.split())
    assert_same_results(reference, out)
    assert_same_analyses(reference, out)
    assert_intact(out, temporaries=False)


# RI-T trains 20 steps an epoch: step 30 is in its second epoch, past its first resume point.
RIT_STEP = 30


def test_a_killed_worker_fails_its_run_alone_and_a_rerun_retries_it(config, reference, tmp_path):
    """Two runs at once (jobs: 2); the worker process training RI-T is SIGKILLed mid-run. RI-T is
    FAILED with what happened and the last lines of its log, P and P-T train on in the pool, the
    analyses that do not need RI-T run, the report names it, and the command ends with one line
    and status 1. A rerun retries RI-T from its last resume point, to the reference's weights."""
    out = tmp_path / "study"
    # The analyses that need RI-T are skipped, not computed: domain (P alone) is the one that runs.
    analyses = ("alignment", "connectivity", "interpolation", "similarity", "distance")
    small = tmp_path / "study.yaml"
    off = "".join(f"  {name}: {{enabled: false}}\n" for name in analyses)
    small.write_text(CONFIG.replace("analyses:\n", "analyses:\n" + off))
    run = ("run", str(small), "--out", str(out), *ARGS)
    result = faulty("worker-dies:RIT", RIT_STEP, *run, "--jobs", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    store = StudyStore(out)
    plan = store.read_plan()
    rit = plan.select(kind="RI-T")[0]
    failed = json.loads((store.run_dir(rit.id) / "FAILED").read_text())
    assert re.fullmatch(
        r"its worker process \(pid \d+\) was killed by SIGKILL \(.*memory ran out\)",
        failed["error"],
    ), failed
    # The log says where the run was: its first epoch's evaluation, then how it ended.
    assert any("epoch 1 step 20: test loss" in line for line in failed["log"]), failed["log"]
    assert failed["log"][-1].endswith(f"failed: {failed['error']}")
    assert failed["log_file"] == "train.log" and (store.run_dir(rit.id) / "train.log").is_file()
    assert all(store.is_done(r.id) for r in plan.runs if r.id != rit.id)
    said = " ".join(result.stdout.split())
    assert "analysis domain: done" in said  # reads P only
    assert f"analysis curves: skipped: runs not finished: {rit.id}" in said
    html = (out / "report" / "index.html").read_text()
    assert rit.id in html and 'class="state-failed"' in html and "killed by SIGKILL" in html
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"run {rit.id} failed: its worker process"), result.stderr
    assert f"rerun `transferscope run --out {out}` to retry the failed runs" in last
    status = " ".join(invoke("status", str(out)).stdout.split())
    assert (
        f"failed {rit.id}: {failed['error']} (its log: {store.run_dir(rit.id)}/train.log)" in status
    )
    assert_intact(out)

    result = invoke("run", "--out", str(out), *ARGS, "--no-analyses")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 to train" in " ".join(result.stdout.split())
    assert store.state(rit.id) == "done" and not (store.run_dir(rit.id) / "FAILED").exists()
    assert_same_results(reference, out)
    assert_intact(out, temporaries=False)


def test_sigkill_of_a_two_job_run_leaves_no_worker_and_an_immediate_rerun_resumes(
    config, reference, tmp_path
):
    """`transferscope run` with jobs: 2 is SIGKILLed (here by its worker training RI-T, mid-run,
    as SLURM or Kubernetes would kill it): its workers die with it instead of training on, the
    rerun started at once takes over the dead command's lock, says so, and resumes to the
    weights of an uninterrupted study."""
    out = tmp_path / "study"
    pids = tmp_path / "worker-pids"
    run = ("run", str(config), "--out", str(out), *ARGS, "--no-analyses")
    env = {**os.environ, "FAULT_PIDS": str(pids)}
    killed("worker-kills-command:RIT", RIT_STEP, *run, "--jobs", "2", env=env)
    workers = [int(line) for line in pids.read_text().split()]
    assert len(workers) == 2, workers
    deadline = time.monotonic() + 10
    while any(running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(running(pid) for pid in workers), "a worker outlived the killed command"
    store = StudyStore(out)
    rit = store.read_plan().select(kind="RI-T")[0]
    assert not store.is_done(rit.id)  # its worker did not train on
    holder = json.loads((out / "LOCK").read_text())["pid"]
    assert not running(holder)

    result = invoke(*run)
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert f"warning: took over the lock of {out} from pid {holder}" in said
    assert "which is no longer running" in said
    assert_same_results(reference, out)
    assert_intact(out, temporaries=False)
