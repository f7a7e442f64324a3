"""`python -m transferscope.cli.train_run RUN_DIR`, alone and under torchrun (2 gloo processes, CPU).

The two-process run shards each global batch of 64 over the ranks (digits with 29% held out for
test: 1277 training images, so every epoch ends with a batch of 61, split 31/30) and must follow
the one-process loss curve.
Tolerance: 1e-3 relative on every evaluated test loss and train loss. The two differ only by
float rounding (each rank's convolutions see half the batch, gloo adds the two halves'
gradients); the measured differences are about 1e-6.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transferscope import paths
from transferscope.studydir.store import StudyStore
from transferscope.training.distributed import Distributed, shard_order

from conftest import requires_fashion
from study_checks import invoke

RTOL = 1e-3
TORCHRUN = Path(sys.executable).parent / "torchrun"


STUDY = """preset: micro
targets: [{name: digits, options: {test_fraction: 0.29}}]
seeds: [0]
shuffles: {block_sizes: [], pixel: false}
trajectory: {checkpoints: []}
randinit: {epochs: 4, batch_size: 64, lr: 0.2, schedule: cosine}
num_threads: 1
"""


def make_study(out: Path) -> tuple[StudyStore, str]:
    """A one-target study planned into ``out`` by the CLI; returns it and its RI-T run id.

    RI-T trains 4 epochs at lr 0.2 (cosine) so its loss curve moves away from the start; the
    recipe is not chaotic: scaling the initial weights by 1 + 1e-6 moves its losses by about 1e-5
    relative, so rounding differences do not blow up.
    """
    config = out.parent / "study.yaml"
    config.write_text(STUDY)
    result = invoke("run", str(config), "--out", str(out), "--plan-only")
    assert result.returncode == 0, result.stderr
    store = StudyStore(out)
    plan = store.read_plan()
    run_id = plan.select(kind="RI-T")[0].id
    assert f"{run_id}  RI-T digits seed 0  pending" in result.stdout
    assert not store.runs_dir.exists()  # planned, nothing trained
    return store, run_id


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[StudyStore, str]:
    """The study, with its RI-T run trained by one process."""
    one, run_id = make_study(tmp_path_factory.mktemp("ddp") / "one")
    train(one.run_dir(run_id), 1)
    return one, run_id


def fresh_copy(one: StudyStore, run_id: str, out: Path) -> StudyStore:
    """The study at ``out`` without the trained run's directory."""
    shutil.copytree(one.root, out, ignore=shutil.ignore_patterns(run_id))
    return StudyStore(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(run_dir: Path, processes: int) -> subprocess.CompletedProcess:
    module = ["-m", "transferscope.cli.train_run", str(run_dir)]
    if processes == 1:
        cmd = [sys.executable, *module]
    else:
        cmd = [
            str(TORCHRUN),
            "--nproc-per-node",
            str(processes),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
            *module,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_shards_of_a_global_batch_cover_it_in_order():
    import torch

    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    a = shard_order(order, 4, Distributed(0, 2))
    b = shard_order(order, 4, Distributed(1, 2))
    # Local batches of 2: rank 0 and rank 1 together hold global batch i, for every i.
    for i, start in enumerate(range(0, 10, 4)):
        together = torch.cat([a[2 * i : 2 * i + 2], b[2 * i : 2 * i + 2]])
        assert sorted(together.tolist()) == sorted(order[start : start + 4].tolist())


@requires_fashion
@pytest.mark.slow
def test_two_gloo_processes_follow_the_one_process_loss_curve(reference, tmp_path):
    one, run_id = reference
    two = fresh_copy(one, run_id, tmp_path / "two")
    out = train(two.run_dir(run_id), 2)
    assert "2 processes" in out.stdout
    a, b = rows(one.run_dir(run_id)), rows(two.run_dir(run_id))
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) == 5
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=RTOL)
        if ra["train_loss"] is not None:
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=RTOL)
    # Training did something, so agreeing is not trivial.
    assert a[-1]["loss"] < 0.95 * a[0]["loss"]
    # Rank 0 alone wrote, the same files as one process; DONE says how many processes trained.
    files = {p.relative_to(one.run_dir(run_id)) for p in one.run_dir(run_id).rglob("*")}
    assert files == {p.relative_to(two.run_dir(run_id)) for p in two.run_dir(run_id).rglob("*")}
    assert not any(p.name == paths.RESUME for p in two.run_dir(run_id).rglob("*"))
    assert two.summary(run_id)["processes"] == 2
    assert two.summary(run_id)["steps"] == one.summary(run_id)["steps"]
    again = train(two.run_dir(run_id), 1)
    assert "already done" in again.stdout


def test_a_directory_outside_the_plan_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "transferscope.cli.train_run", str(tmp_path / "runs" / "x")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "plan.json" in result.stderr


@requires_fashion
@pytest.mark.slow
def test_torchrun_resumes_a_run_killed_in_one_process(reference, tmp_path):
    """A run SIGKILLed after its first resume point finishes under torchrun on the same curve."""
    one, run_id = reference
    two = fresh_copy(one, run_id, tmp_path / "two")
    run_dir = two.run_dir(run_id)
    proc = subprocess.Popen(
        [sys.executable, "-m", "transferscope.cli.train_run", str(run_dir)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    resume = run_dir / "checkpoints" / paths.RESUME
    deadline = time.monotonic() + 120
    while not resume.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert resume.exists() and not two.is_done(run_id)
    killed_at = len(rows(run_dir))
    train(run_dir, 2)
    a, b = rows(one.run_dir(run_id)), rows(run_dir)
    assert 2 <= killed_at < len(b) == len(a)
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=RTOL)
