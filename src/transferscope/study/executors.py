"""Executing a study's plan: build each run's model and data, train it, mark it done.

The local executor runs the plan in order in this process; finished runs (``DONE``) are skipped,
partial ones resume from their last resume point. A run that fails - it diverges, raises, a
data-loader worker of it dies, or the worker process training it is killed - gets a ``FAILED``
marker with its error and the last lines of its log (``train.log``, :mod:`.runlog`), and the study
goes on with the runs that do not depend on it; a rerun tries it again. Only what would fail
every run alike stops the study: an unreadable image (the data is wrong) and a full disk.
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from transferscope import atomic
from transferscope.config import StudyConfig
from transferscope.data.base import DataInfo
from transferscope.data.folder_common import BadImageError
from transferscope.errors import DiskFullError, TransferscopeError, TransferscopeWarning
from transferscope.paths import BAD_IMAGES
from transferscope.processes import TaskRaised, WorkerDied, WorkerPool
from transferscope.study.events import StudyEvents, StudyOutcome, analyse
from transferscope.studydir import runlog
from transferscope.studydir.inputs import DataCache, build_start_model
from transferscope.studydir.plan import Plan, PlannedRun
from transferscope.studydir.store import StudyStore
from transferscope.studydir.twins import find_twin, reuse_twin
from transferscope.training.distributed import Distributed
from transferscope.training.loaders import set_default_workers
from transferscope.training.metrics import ChanceCheck, Evaluation, chance_level
from transferscope.training.trainer import Trainer, pick_device

ProgressFn = Callable[[str, int, int], None]


def execute_run(
    run: PlannedRun,
    cfg: StudyConfig,
    store: StudyStore,
    cache: DataCache,
    device: torch.device,
    progress: ProgressFn | None = None,
    distributed: Distributed | None = None,
) -> dict[str, Any]:
    """Train one planned run into its directory and mark it done; returns its DONE summary.

    With ``distributed`` (one process of a ``torchrun`` group), every rank trains its share and
    only rank 0 writes files; the caller has run ``prepare_run`` on rank 0 before.
    """
    spec = run.spec
    writer = distributed is None or distributed.is_writer
    run_dir = store.prepare_run(run) if distributed is None else store.run_dir(run.id)
    for dep in run.depends_on:
        if not store.is_done(dep):
            raise TransferscopeError(f"run {run.id} needs run {dep}, which has not finished")
    if distributed is None:
        twin = find_twin(run, store)
        if twin is not None:  # the same training under another name: reuse its files
            return reuse_twin(run, twin, store)
    splits, transform = (
        cache.shuffled(spec.data, spec.shuffle) if spec.shuffle else (cache.get(spec.data), None)
    )
    data_read = cache.digest(spec.data)  # before training: the data this run reads
    bad = cache.bad_images(spec.data)
    if bad and writer:
        atomic.write_json(run_dir / BAD_IMAGES, {"count": len(bad), "skipped": bad})
    source_info = cache.get(cfg.source).info if spec.parent else None
    model = build_start_model(spec, splits.info, source_info, store)
    log = runlog.log_path(run_dir)
    trainer = Trainer(
        spec=spec.train,
        task=splits.info.task,
        seed=spec.seed,
        device=device,
        run_dir=run_dir,
        transform=transform,
        on_step=(lambda s, t: progress(run.id, s, t)) if progress else None,
        on_eval=(lambda row: runlog.append(log, runlog.eval_line(row))) if writer else None,
        keep_resume=True,
        channels_last=cfg.performance.channels_last,
        bf16=cfg.performance.bf16,
        compile=cfg.performance.compile,
        decode=cfg.performance.decode,
        distributed=distributed,
    )
    started = time.time()
    result = trainer.fit(model, splits.train, splits.test)
    summary = {
        "id": run.id,
        "kind": spec.kind,
        "target": run.target,
        "metric_name": result.final.metric_name,
        "final_metric": result.final.metric,
        "final_loss": result.final.loss,
        "steps": result.steps,
        "seconds": result.seconds,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()),
        "wall_seconds_this_session": time.time() - started,
        "device": str(device),
        "threads": result.threads,
        "versions": _versions(),
        "chance": _chance(splits.info, result.final).to_dict(),
        "data": {"label": spec.data.label, **data_read},
    }
    if distributed is not None:
        summary["processes"] = distributed.world
    if writer:
        store.mark_done(run.id, summary)
        trainer.discard_resume()
    return summary


FATAL = (BadImageError, DiskFullError)
"""Errors that stop the study instead of failing one run: every run would fail alike."""


def attempt_run(
    store: StudyStore,
    run: PlannedRun,
    device: torch.device,
    cfg: StudyConfig,
    cache: DataCache,
    progress: ProgressFn | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """:func:`execute_run`, with a run that fails marked FAILED: returns (DONE summary, None) or
    (None, the error, one line). ``cfg``, ``cache`` and ``progress`` go to :func:`execute_run`.

    Any error of the run fails it alone - one of transferscope's (it diverged), or anything
    else it raises (a data-loader worker that died, memory that ran out); its traceback goes to
    the run's log and FAILED keeps the log's last lines. A :class:`BadImageError` or
    :class:`DiskFullError` propagates: the study stops rather than fail every run.
    """
    log = runlog.log_path(store.run_dir(run.id))
    runlog.append(log, f"run {run.id} starts: process {os.getpid()}, device {device}")
    try:
        return execute_run(run, cfg, store, cache, device, progress), None
    except FATAL as e:
        runlog.append(log, f"stopped: {e}")
        raise
    except TransferscopeError as e:
        error = str(e)
    except Exception as e:
        runlog.append(log, traceback.format_exc())
        error = " ".join(f"{type(e).__name__}: {e}".split())
    fail_run(store, run.id, error)
    return None, error


def fail_run(store: StudyStore, run_id: str, error: str) -> None:
    """Mark ``run_id`` FAILED with ``error`` and the last lines of its log (the error is the
    log's last line)."""
    log = runlog.log_path(store.run_dir(run_id))
    runlog.append(log, f"failed: {error}")
    store.mark_failed(run_id, error, runlog.tail(log))


def _chance(info: DataInfo, final: Evaluation) -> ChanceCheck:
    """Whether the run's final metric is within noise of chance (flagged in status and report)."""
    targets = final.targets
    positives = None
    if info.task == "multilabel" and targets is not None:
        positives = [int(p) for p in targets.float().sum(0).tolist()]
    n = len(targets) if targets is not None else 1
    return chance_level(info.task, info.num_outputs, n, final.metric, positives=positives)


def _versions() -> dict[str, str]:
    import platform

    from transferscope import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transferscope": __version__,
    }


@dataclass
class LocalExecutor:
    """Runs a plan on this machine, skipping finished runs.

    With ``jobs`` = 1 the runs train in this process, one after another. With ``jobs`` > 1 up to
    that many train at once, each in a worker process with ``num_threads`` (default: the cores
    divided by ``jobs``) torch threads; a run starts once the runs it depends on are done. Small
    models on a few cores train faster side by side than one at a time with every core: their
    batches are too small to keep several threads busy. Worker processes are started with
    ``spawn``, so no OpenMP state is inherited across a fork. Each run is deterministic for a
    given thread count; results do not depend on which runs share the machine.
    """

    store: StudyStore
    cfg: StudyConfig
    cache: DataCache = field(default_factory=DataCache)
    events: StudyEvents = field(default_factory=StudyEvents)
    jobs: int = 1

    def run(self, plan: Plan, analyses: bool = False) -> StudyOutcome:
        """Train every run not yet done, then (``analyses``) run every analysis here."""
        outcome = StudyOutcome(self._train(plan))
        if self.events.runs_done:
            self.events.runs_done(outcome.runs)
        if analyses:
            # As many analyses side by side as runs trained side by side.
            outcome.analyses = analyse(self.store, self.events, self.cache, workers=self.jobs)
        return outcome

    def _train(self, plan: Plan) -> dict[str, str]:
        """Run id -> 'done' / 'skipped' / 'failed: ...'."""
        if self.jobs > 1:
            return self._run_parallel(plan)
        device = pick_device(self.cfg.device)
        outcome: dict[str, str] = {}
        failed: set[str] = set()
        todo = [r for r in plan.runs if not self.store.is_done(r.id)]
        for r in plan.runs:
            if self.store.is_done(r.id):
                outcome[r.id] = "skipped"
        for i, run in enumerate(todo):
            if any(d in failed for d in run.depends_on):
                outcome[run.id] = "failed: a run it depends on failed"
                failed.add(run.id)
                continue
            if self.events.run_start:
                self.events.run_start(run, i, len(todo))
            summary, error = attempt_run(
                self.store, run, device, self.cfg, self.cache, self.events.run_step
            )
            outcome[run.id] = "done" if error is None else f"failed: {error}"
            if error is not None:
                failed.add(run.id)
            if self.events.run_end:
                self.events.run_end(run, summary, error)
        return outcome

    def _threads_per_job(self) -> int:
        return self.cfg.num_threads or max(1, (os.cpu_count() or 1) // self.jobs)

    def _loader_workers_per_job(self) -> int:
        """Loader workers of each run side by side: its share of the cores but one (none with
        one core each: the run's process decodes its images itself, which on a 2-core machine
        beats two runs each feeding a loader worker)."""
        return max(0, min(8, (os.cpu_count() or 1) // self.jobs - 1))

    def _run_parallel(self, plan: Plan) -> dict[str, str]:
        outcome = {r.id: "skipped" for r in plan.runs if self.store.is_done(r.id)}
        waiting = [r for r in plan.runs if r.id not in outcome]
        total, started = len(waiting), 0
        failed: set[str] = set()
        running: dict[str, PlannedRun] = {}
        fatal: BaseException | None = None
        root = str(self.store.root.resolve())
        # A pool that knows which worker trains which run: a worker that dies fails its run alone.
        with WorkerPool(
            self.jobs,
            initializer=_init_worker,
            initargs=(self._threads_per_job(), self._loader_workers_per_job()),
        ) as pool:
            while waiting or running:
                for run in list(waiting):
                    if any(d in failed for d in run.depends_on):
                        waiting.remove(run)
                        outcome[run.id] = "failed: a run it depends on failed"
                        failed.add(run.id)
                        continue
                    if len(running) < self.jobs and all(
                        self.store.is_done(d) for d in run.depends_on
                    ):
                        waiting.remove(run)
                        if self.events.run_start:
                            self.events.run_start(run, started, total)
                        started += 1
                        pool.submit(run.id, _train_in_worker, root, run.id)
                        running[run.id] = run
                if not running:
                    break
                for run_id, result in pool.wait():
                    run = running.pop(str(run_id))
                    summary, error, stop = self._worker_outcome(run, result)
                    if stop is not None:
                        # Stop: start nothing more, let the runs in training finish, then raise.
                        fatal = fatal or stop
                        waiting.clear()
                        continue
                    outcome[run.id] = "done" if error is None else f"failed: {error}"
                    if error is not None:
                        failed.add(run.id)
                    if self.events.run_end:
                        self.events.run_end(run, summary, error)
        if fatal is not None:
            raise fatal
        for run in waiting:  # dependencies that can never finish (not in this plan)
            outcome[run.id] = "failed: a run it depends on is not done"
        return outcome

    def _worker_outcome(
        self, run: PlannedRun, result: Any
    ) -> tuple[dict[str, Any] | None, str | None, BaseException | None]:
        """(DONE summary, error, error that stops the study) from what a worker gave back."""
        if isinstance(result, WorkerDied | TaskRaised):
            if isinstance(result, WorkerDied):
                error = result.describe()
            else:  # raised outside the run's own handling (e.g. reading the study's files)
                runlog.append(runlog.log_path(self.store.run_dir(run.id)), result.traceback)
                error = " ".join(result.error.split())
            fail_run(self.store, run.id, error)
            return None, error, None
        summary, error, stop = result
        return summary, error, stop


_WORKER_CACHE: DataCache | None = None


def _init_worker(threads: int, loader_workers: int | None = None) -> None:
    global _WORKER_CACHE
    torch.set_num_threads(threads)
    set_default_workers(loader_workers)
    # The data's warnings were shown once, when the study was planned; not again per worker.
    warnings.simplefilter("ignore", TransferscopeWarning)
    _WORKER_CACHE = DataCache()


def _train_in_worker(
    study_dir: str, run_id: str
) -> tuple[dict[str, Any] | None, str | None, TransferscopeError | None]:
    """One run in a worker process: (DONE summary, error, error that stops the study). What the
    process prints meanwhile goes to the run's log."""
    assert _WORKER_CACHE is not None
    store = StudyStore(Path(study_dir))
    cfg = store.read_config()
    run = store.read_plan().by_id()[run_id]
    with runlog.output_to(runlog.log_path(store.run_dir(run_id))):
        try:
            summary, error = attempt_run(store, run, pick_device(cfg.device), cfg, _WORKER_CACHE)
        except FATAL as e:
            return None, str(e), e
    return summary, error, None
