"""Analyses side by side: a study's analyses in 2 worker processes against one after another.

Times ``run_analyses(force=True)`` on one study twice: ``workers=1`` (every analysis in this
process, with all of torch's threads) and ``workers=2`` (two worker processes, one torch thread
each, the longest analyses first; :mod:`transferscope.study.analysis_pool`). Both write the same
results (the test suite checks that on the micro preset). ``ratio`` is sequential seconds over
parallel seconds: above 1 the pool is faster.

The study: ``TRANSFERSCOPE_BENCH_STUDY`` (a finished study directory, e.g. the one ``make demo``
writes; it is copied, not changed), else the micro preset trained into a temporary folder (a
minute; its analyses take seconds, so the workers' start-up weighs more than on a real study).
One timing each: an analysis pass of a real study takes minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transferscope.study.analyze import run_analyses
from transferscope.studydir.store import StudyStore


def _study(tmp: Path) -> Path:
    given = os.environ.get("TRANSFERSCOPE_BENCH_STUDY")
    out = tmp / "study"
    if given:
        shutil.copytree(given, out, ignore=shutil.ignore_patterns("report"))
        return out
    cmd = [sys.executable, "-m", "transferscope", "run", "--preset", "micro", "--out", str(out)]
    subprocess.run([*cmd, "--quiet", "--no-analyses"], check=True, capture_output=True)
    return out


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = StudyStore(_study(Path(tmp)))
        seconds = {}
        for workers in (1, 2):
            start = time.perf_counter()
            run_analyses(store, force=True, workers=workers)
            seconds[workers] = time.perf_counter() - start
        name = store.read_config().name
    return {
        "study": name,
        "sequential_s": round(seconds[1], 1),
        "parallel_s": round(seconds[2], 1),
        "ratio": seconds[1] / seconds[2],
        "cpus": os.cpu_count(),
        "goal": "> 1 on a real study (2 cores)",
    }


if __name__ == "__main__":
    print(main())
