"""Whether a finished run's files are still the ones it wrote, and what its DONE says.

When a run finishes, its ``DONE`` file lists every file of the run directory with its size and
SHA-256 (:func:`manifest`). :func:`check` compares the directory with that list: a file that is
missing, truncated or changed since makes the run *damaged*, and whoever reads the run says so
(``status`` shows it, an analysis refuses it, ``transferscope run`` retrains it) instead of
computing on it. The study runner and the report both use this module, so both agree on what
"damaged" means.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from transferscope.paths import (
    CHECKPOINTS,
    DONE,
    FAILED,
    METRICS,
    PLAN,
    PREDICTIONS,
    RESUME,
    RUN_LOG,
    TEST_OUTPUTS,
    TEST_TARGETS,
)

# Not results of the run: the markers themselves, the resume state, which is deleted right after
# DONE is written, and the log, which a later attempt may append to.
_NOT_LISTED = frozenset({DONE, FAILED, RUN_LOG, RESUME})

# Left out of an analysis's stamp of a run: the resume state and the log change while a run
# trains, not its results.
_NOT_STAMPED = frozenset({RUN_LOG, RESUME})

Manifest = dict[str, dict[str, Any]]

# Hashes already computed in this process, keyed by what would change with the contents.
_HASHES: dict[tuple[str, int, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (cached per process while its size and mtime stay put)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def _files(run_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in run_dir.rglob("*")
        if p.is_file() and p.name not in _NOT_LISTED and not p.name.endswith(".tmp")
    )


def manifest(run_dir: str | Path) -> Manifest:
    """Every file of ``run_dir`` (path relative to it, '/'-separated) -> {bytes, sha256}."""
    run_dir = Path(run_dir)
    return {
        p.relative_to(run_dir).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
        for p in _files(run_dir)
    }


def check(run_dir: str | Path, listed: Any, checksums: bool = True) -> str | None:
    """The first way ``run_dir`` differs from the file list its DONE recorded, or None.

    Args:
        run_dir: the run directory.
        listed: DONE's ``files`` entry (None for a DONE written before runs listed their files:
            such a run cannot be checked and passes).
        checksums: also compare contents (reads every file; sizes alone catch truncation).
    """
    run_dir = Path(run_dir)
    if listed is None:
        return None
    if not isinstance(listed, dict):
        return f"{DONE} has a malformed file list"
    for rel, info in listed.items():
        path = run_dir / rel
        if not path.is_file():
            return f"{rel} is missing"
        if not isinstance(info, dict) or "bytes" not in info:
            continue
        size = path.stat().st_size
        if size != info["bytes"]:
            return f"{rel} has {size} bytes where {DONE} recorded {info['bytes']}"
        if checksums and info.get("sha256") and sha256_of(path) != info["sha256"]:
            return f"{rel} has changed since the run finished (its SHA-256 differs from {DONE}'s)"
    return None


def read_done(run_dir: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """(DONE's summary, None), (None, why it cannot be read), or (None, None) without DONE."""
    path = Path(run_dir) / DONE
    if not path.is_file():
        return None, None
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{DONE} is not valid JSON ({e})"
    if not isinstance(summary, dict):
        return None, f"{DONE} holds {type(summary).__name__}, not a run summary"
    return summary, None


def fingerprint(run_dir: str | Path) -> dict[str, list[int]]:
    """Cheap stamp of a run's files (relative path -> [bytes, mtime in ns]), DONE included: an
    analysis that read the run is reused only while this stays the same."""
    run_dir = Path(run_dir)
    out = {}
    for p in sorted(run_dir.rglob("*")):
        if p.is_file() and not p.name.endswith(".tmp") and p.name not in _NOT_STAMPED:
            st = p.stat()
            out[p.relative_to(run_dir).as_posix()] = [st.st_size, st.st_mtime_ns]
    return out


def chance_of(run_dir: str | Path, summary: dict[str, Any]) -> dict[str, Any] | None:
    """The run's chance-level check (:func:`transferscope.training.metrics.chance_level` as a
    dict): the one DONE recorded, or, for a DONE written before runs recorded it, computed from the
    run's saved test predictions. None when neither is there."""
    recorded = summary.get("chance")
    if isinstance(recorded, dict) and "at_chance" in recorded:
        return recorded
    metric, name = summary.get("final_metric"), summary.get("metric_name")
    if not isinstance(metric, int | float) or name not in ("accuracy", "mean_auc"):
        return None
    folder = Path(run_dir) / PREDICTIONS
    try:
        outputs = np.load(folder / TEST_OUTPUTS, mmap_mode="r", allow_pickle=False)
        targets = np.load(folder / TEST_TARGETS, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if outputs.ndim != 2 or len(targets) == 0:
        return None
    from transferscope.data.base import Task
    from transferscope.training.metrics import chance_level

    task: Task = "multiclass" if name == "accuracy" else "multilabel"
    positives = None
    if task == "multilabel" and targets.ndim == 2:
        positives = [int(p) for p in targets.sum(0)]
    check = chance_level(task, outputs.shape[1], len(targets), float(metric), positives=positives)
    return check.to_dict()


__all__ = [
    "DONE",
    "FAILED",
    "RunState",
    "RunStatus",
    "chance_of",
    "check",
    "config_mismatch",
    "fingerprint",
    "manifest",
    "read_done",
    "run_status",
    "sha256",
    "sha256_of",
]


RunState = Literal["done", "partial", "failed", "pending", "damaged"]


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
    folder = Path(folder)
    if (folder / DONE).is_file():
        summary, problem = read_done(folder)
        if summary is not None:
            problem = check(folder, summary.get("files"), checksums)
        if problem is not None:
            return RunStatus("damaged", None, problem)
        return RunStatus("done", summary)
    if (folder / FAILED).is_file():
        try:
            message = str(json.loads((folder / FAILED).read_text()).get("error", ""))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            message = (folder / FAILED).read_text(errors="replace")
        return RunStatus("failed", None, message)
    if (folder / METRICS).is_file() or (folder / CHECKPOINTS / RESUME).is_file():
        return RunStatus("partial")
    return RunStatus("pending")
