"""A run's log, ``runs/<id>/train.log``: what happened while it trained, for when it fails.

Each attempt at a run appends to it: a line when it starts (process, device), one per evaluation
(epoch, step, test loss and metric), the traceback of an error, and, for a run trained in a
worker process (``jobs`` > 1), everything that process printed meanwhile (warnings, messages of
its data-loader workers, a crash of native code). A run that fails gets ``FAILED`` with its
error and the last lines of this log, so ``status``, the report and ``FAILED`` itself say what
happened without a terminal scroll-back.

The log is a diagnostic, not a result: it is appended in place (not written atomically), a
failed append is ignored (a full disk must not turn into another error here), and it is left out
of the file list that ``DONE`` checks and of the stamp an analysis is cached on.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transferscope.paths import RUN_LOG

TAIL_LINES = 20
"""Lines of the log that ``FAILED`` keeps."""


def log_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RUN_LOG


def append(path: str | Path, text: str) -> None:
    """Add ``text`` (one or more lines) to the log at ``path``, each line time-stamped."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    lines = "".join(f"{stamp} {line}\n" for line in text.rstrip("\n").splitlines() or [""])
    with contextlib.suppress(OSError):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(lines)


def eval_line(row: dict[str, Any]) -> str:
    """One evaluation row of ``metrics.jsonl`` as a log line."""
    loss, metric = row.get("loss"), row.get("metric")
    parts = [f"epoch {row.get('epoch', 0):g} step {row.get('step')}"]
    if isinstance(loss, int | float):
        parts.append(f"test loss {loss:.4f}")
    if isinstance(metric, int | float):
        parts.append(f"{row.get('metric_name', 'metric')} {metric:.4f}")
    return ": ".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0]


def tail(path: str | Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of the log ([] when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]


@contextlib.contextmanager
def output_to(path: str | Path) -> Iterator[None]:
    """Send this process's standard output and error (file descriptors 1 and 2, so native code
    and forked data-loader workers too) to the log at ``path`` for the ``with`` block."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    log = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log):
            os.close(fd)


__all__ = ["TAIL_LINES", "append", "eval_line", "log_path", "output_to", "tail"]
