"""Straight lines measured once per call of the analyses, and shared by every analysis that needs
the same one: in one process, and across the worker processes of one call.

Interpolation, alignment, connectivity and trajectory all measure straight lines between two
weight files (Neyshabur et al. 2020, §3.3); several of them measure the same line (the RI-T/RI-T
pair's, for instance). A :class:`LineCache` keeps every line measured in memory, keyed by
everything the line depends on (see :meth:`~transferscope.unitkit.context.StudyContext.line`).
Given a folder, it also writes each line there, one JSON file per key, and reads the lines other
processes wrote: analyses running side by side in worker processes
(:mod:`transferscope.study.analysis_pool`) then measure each line once. While one process
measures a line it holds an exclusive ``flock`` on that line's lock file, so another process that
needs the same line waits for it rather than measuring it again; a process holds no other lock
while it measures, so two processes never wait on each other, and the kernel releases the lock of
a process that dies.

The folder belongs to one call (``run_analyses`` makes it and removes it): a line is reused only
within the call that measured it, while the study's files cannot change. Every line is returned
as it reads back from its JSON (floats round-trip exactly), so an analysis sees the same numbers
whichever process measured the line, as with one process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path

from transferscope import atomic
from transferscope.measures.interpolation import InterpolationResult

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process waiting, lines still shared
    fcntl = None  # type: ignore[assignment]

PREFIX = ".lines-"
"""Folders of a call's lines are ``<prefix><pid>-<token>`` in the study's analyses folder."""


class LineCache:
    """The straight lines of one call, by key; ``folder`` shares them with other processes."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self.memory: dict[str, InterpolationResult] = {}
        self.measured = 0
        """Lines measured by this process."""
        self.reused = 0
        """Lines asked for again: kept in memory, or measured by another process."""

    def get(self, key: Hashable, measure: Callable[[], InterpolationResult]) -> InterpolationResult:
        """The line ``key``: from memory, else from the folder, else ``measure()`` (and kept)."""
        name = _digest(key)
        if name in self.memory:
            self.reused += 1
            return self.memory[name]
        if self.folder is None:
            self.memory[name] = _round_trip(measure())
            self.measured += 1
            return self.memory[name]
        path = self.folder / f"{name}.json"
        with _exclusive(self.folder / f"{name}.lock"):
            line = _read(path, key)
            if line is None:
                line = _round_trip(measure())
                self.measured += 1
                atomic.write_json(path, {"key": _jsonable(key), "line": line.to_dict()})
            else:
                self.reused += 1
        self.memory[name] = line
        return line


def call_folder(analyses_dir: Path) -> Path:
    """A new folder for one call's lines in ``analyses_dir``; folders left by calls whose process
    is gone (killed before it could remove its own) are removed first."""
    analyses_dir.mkdir(parents=True, exist_ok=True)
    for old in analyses_dir.glob(f"{PREFIX}*"):
        pid = old.name.removeprefix(PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    folder = analyses_dir / f"{PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
    folder.mkdir()
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, someone else's
        return True
    return True


def _jsonable(key: Hashable) -> object:
    return json.loads(json.dumps(key, default=str))


def _digest(key: Hashable) -> str:
    text = json.dumps(key, default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _round_trip(line: InterpolationResult) -> InterpolationResult:
    """``line`` as it reads back from its JSON: the numbers every process sees."""
    return InterpolationResult(**json.loads(json.dumps(line.to_dict(), allow_nan=True)))


def _read(path: Path, key: Hashable) -> InterpolationResult | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # not written yet (or unreadable: measured again)
    if not isinstance(doc, dict) or doc.get("key") != _jsonable(key):
        return None
    try:
        return InterpolationResult(**doc["line"])
    except (TypeError, KeyError):
        return None


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


__all__ = ["PREFIX", "LineCache", "call_folder"]
