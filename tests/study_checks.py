"""Helpers for tests that run `transferscope` as a subprocess and compare study directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from transferscope import paths
from transferscope.studydir.store import StudyStore
from transferscope.training import checkpoints as ckpt

PNG_END = b"IEND\xaeB`\x82"


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """`transferscope ARGS` in a fresh interpreter, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "transferscope", *args],
        capture_output=True,
        text=True,
        timeout=900,
        **kwargs,
    )


def invoke(*args: str) -> subprocess.CompletedProcess:
    """`transferscope ARGS` in this process (typer's CliRunner), with the result `cli` gives.

    For the commands whose outcome does not depend on their process (errors, status, plans,
    reports, studies compared only with themselves): a fresh interpreter spends 3-8 s importing
    torch, torch._dynamo and scikit-learn before any of them starts. An exception the CLI did not
    turn into an exit status is shown in stderr with its traceback, as a subprocess would show
    it. What a command sets for its whole process (torch threads, environment variables, the
    warning display) is put back afterwards, so later tests see this process as it was.
    """
    import traceback
    import warnings

    from typer.testing import CliRunner

    from transferscope.cli import app

    threads, environ, showwarning = torch.get_num_threads(), dict(os.environ), warnings.showwarning
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(environ)
        warnings.showwarning = showwarning
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(
        ["transferscope", *args], result.exit_code, result.stdout, stderr
    )


def rows(path: Path) -> list[dict]:
    """Metrics rows without their wall-clock field."""
    return [
        {k: v for k, v in json.loads(line).items() if k != "seconds"}
        for line in path.read_text().splitlines()
    ]


def assert_same_results(a: Path, b: Path) -> None:
    """Every run of ``a`` is done in ``b`` with equal weights and metrics; nothing temporary left."""
    store_a, store_b = StudyStore(a), StudyStore(b)
    plan = store_a.read_plan()
    assert [r.id for r in plan.runs] == [r.id for r in store_b.read_plan().runs]
    for run in plan.runs:
        assert store_b.is_done(run.id), run.id
        wa = ckpt.load_weights(store_a.weights_path(run.id))
        wb = ckpt.load_weights(store_b.weights_path(run.id))
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{run.id}: {k} differs"
        assert rows(store_a.run_dir(run.id) / "metrics.jsonl") == rows(
            store_b.run_dir(run.id) / "metrics.jsonl"
        )
    leftovers = [p for p in b.rglob("*") if p.name.endswith(".tmp") or p.name == paths.RESUME]
    assert not leftovers


# What differs between two studies that computed the same results: wall-clock times and the
# provenance of each analysis (its inputs' DONE hashes and file mtimes, and why it was computed).
_NOT_RESULTS = ("seconds", "inputs", "computed_because")


def _without_timings(doc):
    if isinstance(doc, dict):
        return {k: _without_timings(v) for k, v in doc.items() if k not in _NOT_RESULTS}
    if isinstance(doc, list):
        return [_without_timings(v) for v in doc]
    return doc


def assert_same_analyses(a: Path, b: Path) -> None:
    """Identical analysis results (JSON compared without wall-clock ``seconds``, other files
    byte for byte) and the same figure files; the analyses' timings (how long each took, how
    many straight lines it measured or read) are not results."""

    def results(root: Path) -> list[Path]:
        files = (root / "analyses").rglob("*")
        return sorted(
            p.relative_to(root) for p in files if p.is_file() and "timings" not in p.parts
        )

    files_a, files_b = results(a), results(b)
    assert files_a == files_b
    for rel in files_a:
        if rel.suffix == ".json":
            da, db = (json.loads((root / rel).read_text()) for root in (a, b))
            assert _without_timings(da) == _without_timings(db), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    figures_a = sorted(p.name for p in (a / "report").rglob("*") if p.is_file())
    assert figures_a == sorted(p.name for p in (b / "report").rglob("*") if p.is_file())


def assert_intact(root: Path, temporaries: bool = True) -> int:
    """Every file of a study directory is whole (parses, loads, ends where its format ends).

    Temporary files of the atomic writers (``.*.tmp``) are the only ones allowed to be torn, and
    only while ``temporaries`` is true (before a rerun has cleaned them). Returns the files checked.
    """
    checked = 0
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.name.endswith(".tmp"):
            assert temporaries, f"temporary file left behind: {path}"
            continue
        suffix = path.suffix
        if suffix == ".safetensors":
            ckpt.load_weights(path)
        elif suffix == ".json" or path.name in ("DONE", "FAILED", "LOCK"):
            json.loads(path.read_text())
        elif suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif suffix == ".npy":
            np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                [z[k] for k in z.files]
        elif suffix == ".png":
            data = path.read_bytes()
            assert data.startswith(b"\x89PNG") and data.endswith(PNG_END), path
        elif suffix == ".log":  # a run's log, appended to in place: text, whatever its end
            path.read_text(encoding="utf-8")
        elif suffix == ".pdf":
            assert path.read_bytes().rstrip().endswith(b"%%EOF"), path
        elif suffix == ".html":
            assert path.read_text().rstrip().endswith("</html>"), path
        else:
            raise AssertionError(f"unexpected file in a study directory: {path}")
        checked += 1
    return checked
