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

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def killed(point: str, n: int, *args: str) -> None:
    """Run the CLI with ``args`` and SIGKILL it the ``n``-th time it reaches ``point``."""
    result = subprocess.run(
        [sys.executable, str(FAULTS), point, str(n), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == -9, f"not killed at {point} #{n}:\n{result.stdout}{result.stderr}"


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
