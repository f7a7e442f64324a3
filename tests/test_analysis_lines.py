"""Straight lines shared by the analyses of one call, across processes (analyses/lines.py)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time

from transferscope.measures.interpolation import InterpolationResult
from transferscope.unitkit.line_cache import PREFIX, LineCache, call_folder


def _line(seed: float) -> InterpolationResult:
    # Values whose decimal forms are long: 0.1 + 0.2, thirds, a NaN metric.
    return InterpolationResult(
        lambdas=[0.0, 1 / 3, 2 / 3, 1.0],
        loss=[0.1 + 0.2, seed / 3, math.pi, 1e-300],
        metric=[0.9, float("nan"), 0.7 + seed, 0.8],
        metric_name="accuracy",
        barrier_metric=seed / 7,
        barrier_loss=math.e,
        batchnorm_recalibrated=False,
    )


def _same(a: InterpolationResult, b: InterpolationResult) -> bool:
    """Equal to the bit (NaN equal to NaN)."""
    da, db = a.to_dict(), b.to_dict()
    return repr(da) == repr(db)


def test_two_processes_measure_a_line_once_and_read_the_same_numbers(tmp_path):
    """Two caches on one folder (each with its own lock file handle, as two worker processes
    have): the line both ask for at once is measured by one while the other waits, and both get
    the same numbers, which are the measured ones to the bit."""
    calls: list[str] = []
    out: dict[str, InterpolationResult] = {}
    key = ("RIT-a", ("RIT-a", "final"), ("RIT-b", "final"), 11, True, False, None, 2000, "cpu")

    def measure(who: str) -> InterpolationResult:
        calls.append(who)
        time.sleep(0.2)  # long enough for the other to arrive and wait
        return _line(1.0)

    def worker(who: str) -> None:
        cache = LineCache(tmp_path)
        out[who] = cache.get(key, lambda: measure(who))
        assert cache.get(key, lambda: measure(who + " again")) is out[who]  # kept in memory

    threads = [threading.Thread(target=worker, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert _same(out["a"], out["b"]) and _same(out["a"], _line(1.0))
    # Another line is another file, measured on its own.
    other = LineCache(tmp_path)
    assert _same(other.get((*key[:-1], "cuda"), lambda: _line(2.0)), _line(2.0))
    assert other.measured == 1 and other.reused == 0
    assert other.get(key, lambda: _line(3.0)) is not None and other.reused == 1
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_a_line_in_memory_alone_reads_as_from_a_file(tmp_path):
    cache = LineCache()
    first = cache.get(("k",), lambda: _line(0.5))
    assert _same(first, _line(0.5)) and cache.get(("k",), lambda: _line(9.0)) is first
    assert (cache.measured, cache.reused) == (1, 1)
    # A damaged or foreign file is measured again, not trusted.
    shared = LineCache(tmp_path)
    shared.get(("k",), lambda: _line(0.5))
    (path,) = tmp_path.glob("*.json")
    path.write_text("{not json")
    assert _same(LineCache(tmp_path).get(("k",), lambda: _line(4.0)), _line(4.0))


def test_call_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    left = tmp_path / f"{PREFIX}{dead.stdout.strip()}-0000"
    left.mkdir()
    (left / "x.json").write_text("{}")
    alive = tmp_path / f"{PREFIX}{os.getppid()}-0000"  # a live process's call
    alive.mkdir()
    folder = call_folder(tmp_path)
    assert folder.is_dir() and folder.name.startswith(f"{PREFIX}{os.getpid()}-")
    assert not left.exists() and alive.exists()
