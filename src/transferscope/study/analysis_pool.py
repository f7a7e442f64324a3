"""Analyses side by side in worker processes (``jobs`` > 1).

A small model's forward pass gains little from a second torch thread (the mini preset's model:
1.15x on 2 cores), and two analyses in two threads of one process contend for the interpreter
(measured: 1.2x). Separate processes, one torch thread each by default, do not: the analyses
that need a model run the longest first (by forward passes), each in a worker started fresh
(``spawn``) with its own data cache. A worker's messages and ticks come back through a queue and
are said here as they arrive, in the order the analyses start and finish.

Results are the same as one after another in one process: every analysis reads only the study's
files and seeds its own draws, and a straight line one worker measured is read by the others
from the call's folder, exactly as it would have been kept in memory. A damaged run stops every
worker and is raised here.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_lib
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from transferscope.errors import TransferscopeWarning
from transferscope.processes import end_with_parent
from transferscope.study.analyze import (
    Job,
    ProgressFn,
    TickFn,
    compute_job,
    is_last_message,
    worker_threads,
)
from transferscope.studydir.inputs import DataCache
from transferscope.studydir.store import StudyStore
from transferscope.unitkit.line_cache import LineCache

_QUEUE: Any = None
_CACHE: DataCache | None = None
_LINES: LineCache | None = None


def _init_worker(
    threads: int,
    messages: Any,
    parent: int,
    lines: str | None,
    loader_workers: int | None = None,
) -> None:
    global _QUEUE, _CACHE, _LINES
    import torch

    from transferscope.training.loaders import set_default_workers

    end_with_parent(parent)  # a killed `transferscope run` or `analyze` leaves no orphans
    torch.set_num_threads(threads)
    # Image files of a streamed split: decoded by loader workers from this worker's share of the
    # cores (none with one core: a spawned loader worker imports torch, seconds per pass).
    set_default_workers(loader_workers)
    # The data's warnings were shown once, when the study was planned; not again per worker.
    warnings.simplefilter("ignore", TransferscopeWarning)
    _QUEUE, _CACHE = messages, DataCache()
    _LINES = LineCache(None if lines is None else Path(lines))


def _compute_in_worker(study_dir: str, job: Job) -> str:
    """One analysis in a worker process; returns the path of its document."""
    assert _CACHE is not None

    def notify(name: str, message: str) -> None:
        _QUEUE.put(("progress", name, message))

    def tick(name: str, done: int, total: int, what: str) -> None:
        _QUEUE.put(("tick", name, done, total, what))

    # Lines (interpolations) are shared by the analyses one worker computes, as in one process,
    # and through the call's folder with the other workers.
    store = StudyStore(Path(study_dir))
    cfg, plan = store.read_config(), store.read_plan()
    path = compute_job(store, cfg, plan, job, _CACHE, notify, tick, _LINES)
    return str(path)


def compute_in_pool(
    store: StudyStore,
    jobs: list[Job],
    workers: int,
    notify: ProgressFn,
    tick: TickFn | None = None,
    threads: int | None = None,
    lines: Path | None = None,
) -> dict[str, Path]:
    """Compute ``jobs`` in ``workers`` processes, the longest estimate first; name -> path.

    ``threads``: torch threads per worker (default: the study's ``num_threads``, else the cores
    shared out among the workers). ``lines``: a folder through which the workers share the
    straight lines they measure (:class:`~transferscope.unitkit.line_cache.LineCache`).
    """
    cfg = store.read_config()
    per_worker = threads or worker_threads(cfg, workers) or 1
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    order = sorted(jobs, key=lambda j: -(j.seconds or 0))
    out: dict[str, Path] = {}

    said_last: set[str] = set()  # analyses whose last message ('done', 'failed: ...') is here

    def drain(timeout: float) -> None:
        try:
            item = messages.get(timeout=timeout)
            while True:
                if item[0] == "progress":
                    notify(item[1], item[2])
                    if is_last_message(item[2]):
                        said_last.add(item[1])
                elif tick is not None:
                    tick(*item[1:])
                item = messages.get_nowait()
        except queue_lib.Empty:
            return

    root = str(store.root.resolve())
    with ProcessPoolExecutor(
        min(workers, len(order)),
        mp_context=context,
        initializer=_init_worker,
        initargs=(
            per_worker,
            messages,
            os.getpid(),
            None if lines is None else str(lines),
            max(0, min(8, (os.cpu_count() or 1) // workers - 1)),
        ),
    ) as pool:
        pending: dict[Future, Job] = {pool.submit(_compute_in_worker, root, j): j for j in order}
        try:
            while pending:
                drain(0.1)
                done, _ = wait(pending, timeout=0, return_when=FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    out[job.name] = Path(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    # A worker's last message travels apart from its result: wait for it (briefly).
    deadline = time.monotonic() + 5.0
    while not said_last >= set(out) and time.monotonic() < deadline:
        drain(0.1)
    return out


__all__ = ["compute_in_pool"]
