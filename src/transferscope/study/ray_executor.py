"""Executing a study's plan on a Ray cluster (``transferscope run --executor ray``).

Every planned run becomes one Ray task that asks for ``resources.cpus_per_run`` CPUs and
``resources.gpus_per_run`` GPUs. A task receives the study directory and its run id and re-reads
``plan.json`` and ``study.yaml`` there, so the directory must be on storage that every node sees.
Inside, the task calls the local executor's :func:`execute_run`: the files, the ``DONE`` /
``FAILED`` markers and the resume behaviour are the local executor's.

Dependencies are Ray's own: a P-T task gets the ``ObjectRef`` of P's task as an argument, so Ray
starts it only once P has finished. Retries are Ray's own too: a task whose worker process or node
dies is retried up to ``resources.max_retries`` times and resumes from the run's last resume point;
a run that fails in transferscope's terms (it diverged: a :class:`TransferscopeError`) is not
retried but marked ``FAILED``, as the local executor does. No scheduler of our own is involved.

Analyses start once every run has finished (or failed), each analysis as its own Ray task with a
run's resources, so they run side by side on the cluster's GPUs rather than one after another on
the driver. They wait for all runs rather than for "their" runs because nearly every analysis reads
every unshuffled P-T and RI-T of a target (curves also the shuffled ones, trajectory the P@k-T),
and which runs an analysis reads is decided inside :mod:`transferscope.study.analyze`; a run that
failed is reported by the analyses as missing, as after a local study.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferscope.config import StudyConfig
from transferscope.errors import TransferscopeError, TransferscopeWarning
from transferscope.study.events import StudyEvents, StudyOutcome
from transferscope.studydir.plan import Plan
from transferscope.studydir.store import StudyStore
from transferscope.unitkit.line_cache import call_folder

INSTALL_HINT = "--executor ray needs Ray; install it with: pip install 'transferscope[ray]'"

# Fault injection for the retry test: "<steps>:<marker file>" makes the first task that reaches
# <steps> training steps SIGKILL its own worker process (as a lost node would), once per marker.
CRASH_ENV = "TRANSFERSCOPE_CRASH_AFTER_STEPS"


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise TransferscopeError(INSTALL_HINT) from None
    return ray


# ------------------------------------------------------------------------ inside a task
_WORKER_CACHE: Any = None  # one DataCache per worker process: Ray reuses workers across tasks


def _crash_hook(run_id: str) -> Callable[[str, int, int], None] | None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return None
    steps_text, _, marker_text = spec.partition(":")
    steps, marker = int(steps_text), Path(marker_text)
    resumed = marker.with_suffix(".resumed")
    first: list[int] = []

    def hook(rid: str, step: int, total: int) -> None:
        if not first:
            first.append(step)
            if marker.exists() and marker.read_text() == rid and not resumed.exists():
                resumed.write_text(str(step - 1))  # the step this attempt started from
        if step == steps:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, rid.encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


class RunBoard:
    """Which runs are training right now, across the cluster (a Ray actor the tasks report to)."""

    def __init__(self) -> None:
        self._running: set[str] = set()

    def started(self, run_id: str) -> None:
        self._running.add(run_id)

    def ended(self, run_id: str) -> None:
        self._running.discard(run_id)

    def running(self) -> list[str]:
        return sorted(self._running)


def train_task(
    study_dir: str, run_id: str, num_threads: int, board: Any, *upstream: Any
) -> tuple[str, dict[str, Any] | None, str | None]:
    """Body of one run's Ray task: train the run (or skip it when done) in this worker.

    Args:
        study_dir: absolute path of the study directory, as every node sees it.
        run_id: the planned run to train.
        num_threads: torch CPU threads in this task.
        board: a :class:`RunBoard` actor handle (or None) told when training starts and ends.
        upstream: the results of the tasks of the runs this one depends on (Ray resolves the
            refs before the task starts; their values say whether they succeeded).

    Returns:
        (run id, DONE summary or None, error message or None).
    """
    import torch

    from transferscope.study.executors import attempt_run
    from transferscope.studydir.inputs import DataCache
    from transferscope.training.trainer import pick_device

    global _WORKER_CACHE
    # The data's warnings were shown once, when the driver planned the study.
    warnings.simplefilter("ignore", TransferscopeWarning)
    for _, _, error in upstream:
        if error is not None:
            return run_id, None, "a run it depends on failed"
    store = StudyStore(Path(study_dir))
    if not (store.root / "plan.json").is_file():
        return (
            run_id,
            None,
            f"study directory '{study_dir}' is not visible on node {socket.gethostname()}; "
            "put it on storage every node mounts at the same path",
        )
    if store.is_done(run_id):
        return run_id, store.summary(run_id), None
    torch.set_num_threads(num_threads)
    cfg = store.read_config()
    run = store.read_plan().by_id()[run_id]
    _WORKER_CACHE = _WORKER_CACHE or DataCache()
    if board is not None:
        board.started.remote(run_id)
    try:
        summary, error = attempt_run(
            store, run, pick_device(cfg.device), cfg, _WORKER_CACHE, _crash_hook(run_id)
        )
    except TransferscopeError as e:  # unreadable images: on a cluster this run fails alone
        store.mark_failed(run_id, str(e))
        return run_id, None, str(e)
    finally:
        if board is not None:
            board.ended.remote(run_id)
    return run_id, summary, error


def analysis_task(
    study_dir: str, name: str, num_threads: int, lines: str | None = None
) -> tuple[str, str, float]:
    """Body of one analysis's Ray task: returns (name, last progress message, seconds).
    ``lines``: the driver's folder of this call's straight lines, shared by the tasks."""
    import time

    import torch

    from transferscope.study.analyze import run_analyses

    torch.set_num_threads(num_threads)
    warnings.simplefilter("ignore", TransferscopeWarning)
    messages: list[str] = ["disabled"]
    started = time.perf_counter()
    try:
        run_analyses(
            StudyStore(Path(study_dir)),
            only=[name],
            progress=lambda _, m: messages.append(m),
            lines=None if lines is None else Path(lines),
        )
    except TransferscopeError as e:
        messages.append(f"failed: {e}")
    return name, messages[-1], time.perf_counter() - started


# ------------------------------------------------------------------------ the driver
@dataclass
class RayExecutor:
    """Runs a plan as Ray tasks on the cluster at ``address`` (None: RAY_ADDRESS or a local one).

    ``events.run_end`` is called as each run finishes (in the order they finish),
    ``events.runs_update`` with (runs finished, ids of runs running now) whenever that changes,
    ``events.analysis`` with (name, last message, seconds) as each analysis task finishes.
    """

    store: StudyStore
    cfg: StudyConfig
    address: str | None = None
    events: StudyEvents = field(default_factory=StudyEvents)
    env_vars: dict[str, str] = field(default_factory=dict)
    poll_s: float = 1.0

    def _connect(self) -> tuple[Any, bool]:
        ray = import_ray()
        if ray.is_initialized():
            return ray, False
        # A new local instance needs no dashboard; joining a cluster takes no such setting.
        local = self.address is None and not os.environ.get("RAY_ADDRESS")
        extra = {"include_dashboard": False} if local else {}
        try:
            ray.init(address=self.address, log_to_driver=False, **extra)
        except ConnectionError as e:
            raise TransferscopeError(
                f"cannot reach the Ray cluster at '{self.address}': {e}; start it with "
                "`ray start --head` or check --address"
            ) from None
        return ray, True

    def _gpus(self, ray: Any) -> float:
        res = self.cfg.resources
        if res.gpus_per_run is None and self.cfg.device == "auto":
            # auto: one GPU per run when the cluster has GPUs, as a local run would pick CUDA.
            return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        return res.gpus(self.cfg.device)

    def run(self, plan: Plan, analyses: bool = False) -> StudyOutcome:
        """Train every run not yet done; with ``analyses``, then run every analysis of the
        study (each as a Ray task)."""
        ray, started_here = self._connect()
        try:
            outcome = StudyOutcome(self._run(ray, plan))
            if self.events.runs_done:
                self.events.runs_done(outcome.runs)
            if analyses:
                outcome.analyses = self._analyze(ray)
            return outcome
        finally:
            if started_here:
                ray.shutdown()

    @property
    def _threads(self) -> int:
        return self.cfg.num_threads or max(1, int(self.cfg.resources.cpus_per_run))

    def _remote(self, ray: Any, fn: Callable[..., Any]) -> Any:
        """``fn`` as a Ray remote function asking for one run's resources."""
        res = self.cfg.resources
        env = {"OMP_NUM_THREADS": str(self._threads), **self.env_vars}
        for name in ("TRANSFERSCOPE_DATA", CRASH_ENV):
            if name in os.environ:
                env.setdefault(name, os.environ[name])
        return ray.remote(fn).options(
            num_cpus=res.cpus_per_run,
            num_gpus=self._gpus(ray),
            max_retries=res.max_retries,
            retry_exceptions=False,  # only a dead worker or node is retried, never a failed run
            runtime_env={"env_vars": env},
        )

    def _analyze(self, ray: Any) -> dict[str, str]:
        from transferscope import registry

        remote = self._remote(ray, analysis_task)
        study_dir = str(self.store.root.resolve())
        # The tasks share the straight lines they measure through a folder of the study.
        folder = call_folder(self.store.analyses_dir)
        try:
            pending = [
                remote.remote(study_dir, name, self._threads, str(folder.resolve()))
                for name in registry.names()
            ]
            out: dict[str, str] = {}
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                name, message, seconds = ray.get(ready[0])
                out[name] = message
                if self.events.analysis:
                    self.events.analysis(name, message, seconds)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return out

    def _run(self, ray: Any, plan: Plan) -> dict[str, str]:
        threads = self._threads
        remote = self._remote(ray, train_task)
        board = (
            ray.remote(RunBoard).options(num_cpus=0).remote() if self.events.runs_update else None
        )
        study_dir = str(self.store.root.resolve())
        outcome: dict[str, str] = {}
        refs: dict[str, Any] = {}
        for run in plan.runs:
            if self.store.is_done(run.id):
                outcome[run.id] = "skipped"
                continue
            upstream = [refs[d] for d in run.depends_on if d in refs]
            refs[run.id] = remote.remote(study_dir, run.id, threads, board, *upstream)
        by_ref = {ref: rid for rid, ref in refs.items()}
        runs = plan.by_id()
        pending = list(refs.values())
        finished = 0
        last: tuple[int, list[str]] | None = None
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=self.poll_s)
            for ref in ready:
                rid = by_ref[ref]
                try:
                    _, summary, error = ray.get(ref)
                except ray.exceptions.RayError as e:  # retries used up, or a bug in the task
                    summary, error = None, f"{type(e).__name__}: {str(e).splitlines()[0]}"
                    self.store.mark_failed(rid, error)
                outcome[rid] = "done" if error is None else f"failed: {error}"
                finished += 1
                if self.events.run_end:
                    self.events.run_end(runs[rid], summary, error)
            if board is None:
                continue
            left = {by_ref[r] for r in pending}
            running = [rid for rid in ray.get(board.running.remote()) if rid in left]
            if self.events.runs_update and (finished, running) != last:
                last = (finished, running)
                self.events.runs_update(finished, running)
        return outcome
