"""The study directory: every file name a study has, and the state of a run, in one place.

```
STUDY/study.yaml                         the resolved config
STUDY/plan.json                          every planned run and its roles; study.yaml's SHA-256
STUDY/LOCK                               who is running a command on the study
STUDY/runs/<id>/run.yaml                 the run's resolved config (its id hashes it)
STUDY/runs/<id>/metrics.jsonl            one row per evaluation
STUDY/runs/<id>/checkpoints/             final.safetensors, epoch-<k>.safetensors, resume
STUDY/runs/<id>/predictions/             test_outputs.npy, test_targets.npy (final model)
STUDY/runs/<id>/bad_images.json          unreadable images left out (--skip-bad-images)
STUDY/runs/<id>/DONE                     written last: summary, data digest, torch threads,
                                         every file's size and SHA-256
STUDY/runs/<id>/FAILED                   why the run stopped, and the last lines of its log
STUDY/runs/<id>/train.log                what each attempt at the run did and printed
STUDY/analyses/<name>.json               one result per analysis (transferscope.analyses)
STUDY/analyses/mistakes/<target>.npz     example images of the mistakes cells
STUDY/analyses/timings/<name>.json       its last computation's time, estimated and taken
STUDY/report/index.html, figures/        the report; .inputs.json stamps what it was built from
```

``docs/study-directory.md`` describes each file's contents. Code that reads or writes a study
takes the names from here; :func:`run_status` is the one definition of a run's state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

STUDY_CONFIG = "study.yaml"
PLAN = "plan.json"
LOCK = "LOCK"
RUNS = "runs"
RUN_CONFIG = "run.yaml"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
PREDICTIONS = "predictions"
TEST_OUTPUTS = "test_outputs.npy"
TEST_TARGETS = "test_targets.npy"
BAD_IMAGES = "bad_images.json"
DONE = "DONE"
FAILED = "FAILED"
RUN_LOG = "train.log"
ANALYSES = "analyses"
MISTAKE_EXAMPLES = "mistakes"
TIMINGS = "timings"
REPORT = "report"
REPORT_PAGE = "index.html"
FIGURES = "figures"
REPORT_INPUTS = ".inputs.json"

RunState = Literal["done", "partial", "failed", "pending", "damaged"]


def child(folder: Path, name: str, what: str) -> Path:
    """``folder / name`` for a ``name`` that is one file name: no separator, not '.' or '..',
    at most 255 bytes. Names reach here from plan.json and configs (run ids, target ids); the
    config refuses any other id up front (:mod:`transferscope.names`), and this keeps every read
    and write inside the study directory even when plan.json was edited by hand."""
    from transferscope.errors import TransferscopeError

    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or len(name.encode("utf-8", "surrogateescape")) > 255
    ):
        raise TransferscopeError(
            f"{what} {name!r} is not a file name inside {folder}: ids are names (letters, "
            "digits, '-', '_', '.'), never paths; check the config's ids and plan.json"
        )
    return Path(folder) / name


def run_dir(root: Path, run_id: str) -> Path:
    return child(Path(root) / RUNS, run_id, "run id")


def analysis_path(root: Path, name: str) -> Path:
    return child(Path(root) / ANALYSES, f"{name}.json", "analysis")


def timing_path(root: Path, name: str) -> Path:
    """Where an analysis's last computation records its time, estimated and taken: beside its
    result, not in it, so that a recomputed result is the same bytes."""
    return child(Path(root) / ANALYSES / TIMINGS, f"{name}.json", "analysis")


def mistake_examples_path(root: Path, target: str) -> Path:
    """``analyses/mistakes/<target>.npz``: the example images of one target's mistakes cells."""
    return child(Path(root) / ANALYSES / MISTAKE_EXAMPLES, f"{target}.npz", "target id")


def report_dir(root: Path) -> Path:
    return Path(root) / REPORT


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_mismatch(root: Path, config_bytes: bytes) -> str | None:
    """How study.yaml (``config_bytes``) fails to match the SHA-256 plan.json recorded for it
    when both were written, or None: it matches, or plan.json records none (written before
    plans did, or unreadable: reading the plan says so)."""
    try:
        recorded = json.loads((Path(root) / PLAN).read_bytes()).get("study_yaml_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(recorded, str) or recorded == sha256(config_bytes):
        return None
    return (
        f"does not match {PLAN}: it was edited, cut short or replaced after the study was "
        f"planned ({len(config_bytes)} bytes whose SHA-256 is not the one {PLAN} recorded)"
    )


@dataclass(frozen=True)
class RunStatus:
    """A run's state on disk, with its DONE summary (done) or what went wrong (failed, damaged)."""

    state: RunState
    summary: dict[str, Any] | None = None
    problem: str | None = None


def run_status(folder: Path, checksums: bool = False) -> RunStatus:
    """The state of the run in ``folder``.

    done: DONE is readable and the files match it (sizes, and SHA-256 with ``checksums``);
    damaged: DONE is unreadable or a file differs; failed: FAILED exists (its message in
    ``problem``); partial: training started (metrics or a resume checkpoint exist); pending:
    nothing yet.
    """
    from transferscope import runfiles  # runfiles takes its file names from here

    folder = Path(folder)
    if (folder / DONE).is_file():
        summary, problem = runfiles.read_done(folder)
        if summary is not None:
            problem = runfiles.check(folder, summary.get("files"), checksums)
        if problem is not None:
            return RunStatus("damaged", None, problem)
        return RunStatus("done", summary)
    if (folder / FAILED).is_file():
        try:
            message = str(json.loads((folder / FAILED).read_text()).get("error", ""))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            message = (folder / FAILED).read_text(errors="replace")
        return RunStatus("failed", None, message)
    from transferscope.training.checkpoints import RESUME

    if (folder / METRICS).is_file() or (folder / CHECKPOINTS / RESUME).is_file():
        return RunStatus("partial")
    return RunStatus("pending")


__all__ = [name for name in dir() if name.isupper()] + [
    "RunState",
    "RunStatus",
    "analysis_path",
    "child",
    "config_mismatch",
    "mistake_examples_path",
    "report_dir",
    "run_dir",
    "run_status",
    "sha256",
]
