"""Run the registered analyses of a study and write ``analyses/<name>.json`` for each.

Every analysis is a unit of :mod:`transferscope.analyses` (its options, result model, computation,
report section and claims). This module is the one loop around them: it decides whether a
result on disk can be reused, computes the others, isolates a failing analysis from the rest,
and writes each result with the envelope every document shares:

``status`` ('ok', 'skipped' with a ``reason``, or 'failed' with the error), ``version`` (of the
unit's result), ``options``, the run ids it used (``runs_used``), the planned runs it needed but
found unfinished (``runs_missing``), and what it was computed from (``inputs``: a digest of the
plan, a digest of each data source's splits, and for every run it read the SHA-256 of its DONE
and the size and mtime of each of its files). A result is reused only while all of that is
unchanged; otherwise it is computed again and ``computed_because`` (shown by the CLI and the
report) says why. A run whose files do not
match its DONE is an error naming the file, never silently left out.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferscope import atomic, paths, registry
from transferscope.config import StudyConfig, changed_keys
from transferscope.data.digest import DIGEST_VERSION
from transferscope.errors import DamagedRunError, TransferscopeError
from transferscope.measures import statistics
from transferscope.study import estimate
from transferscope.studydir import integrity
from transferscope.studydir.inputs import DataCache
from transferscope.studydir.plan import Plan
from transferscope.studydir.store import StudyStore
from transferscope.training.loaders import CPU_FORWARD_ROWS, seeded
from transferscope.training.trainer import pick_device
from transferscope.unitkit.context import StudyContext
from transferscope.unitkit.line_cache import LineCache, call_folder
from transferscope.unitkit.results import (
    AnalysisResult,
    ResultMismatch,
    skipped_parts,
    validate_result,
)
from transferscope.unitkit.unit import Analysis, TargetSize, Work

ProgressFn = Callable[[str, str], None]
"""``progress(name, message)``: 'running', 'done', 'cached', 'disabled', 'skipped: <reason>',
'failed: <error>', or, before 'running', 'recomputing: <reason>' and 'estimated: <time>'."""


def is_last_message(message: str) -> bool:
    """Whether ``message`` is an analysis's last (its outcome), not one said before it ends."""
    return message != "running" and not message.startswith(("recomputing", "estimated"))


TickFn = Callable[[str, int, int, str], None]
"""``tick(name, done, total, what)`` while an analysis works through its targets, pairs or
modules."""


def __getattr__(name: str) -> Any:
    if name == "ANALYSES":  # every registered analysis, in order (units may register late)
        return registry.names()
    raise AttributeError(name)


def _options(cfg: StudyConfig, name: str) -> dict[str, Any]:
    return cfg.analyses.of(name).model_dump(mode="json")


def analysis_seed(cfg: StudyConfig, name: str) -> int:
    """The seed of torch's global generator while the analysis ``name`` computes: a function of
    the study's first seed and the name, the same in every process and call."""
    return int(np.random.default_rng([cfg.seeds[0], zlib.crc32(name.encode())]).integers(2**62))


def _plan_digest(plan: Plan) -> str:
    """Which runs the study has and their roles: an analysis is redone when this changes."""
    # Without the stamp of study.yaml: a change of how the study runs (--jobs) rewrites study.yaml
    # and is no reason to redo an analysis.
    text = plan.model_dump_json(exclude={"study_yaml_sha256"})
    return hashlib.sha256(text.encode()).hexdigest()


def _run_inputs(store: StudyStore, run_ids: set[str]) -> dict[str, Any]:
    """For each run: SHA-256 of its DONE, and size and mtime of each of its files."""
    out = {}
    for rid in sorted(run_ids):
        done = store.run_dir(rid) / paths.DONE
        out[rid] = {
            "done": hashlib.sha256(done.read_bytes()).hexdigest() if done.is_file() else None,
            "files": integrity.fingerprint(store.run_dir(rid)),
        }
    return out


def _data_inputs(cfg: StudyConfig, cache: DataCache) -> dict[str, str]:
    """Per data label of the study, a digest of its training and test splits (sizes, targets, and
    each image file's path, size and time: :meth:`DataCache.digest`, the digest a run's DONE
    records). A run's id does not cover its data, and an analysis reads the data too (the domain
    analysis reads nothing else of a target): a split that changed redoes it."""
    out = {}
    for spec in [cfg.source, *cfg.targets]:
        try:
            splits = cache.digest(spec)
        except TransferscopeError:  # not on this machine (e.g. an external P's source)
            out[spec.label] = "unavailable"
            continue
        text = json.dumps(splits, sort_keys=True)
        out[spec.label] = f"v{DIGEST_VERSION}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    return out


def _changed_data(recorded: Any, now: dict[str, str]) -> str | None:
    if not isinstance(recorded, dict):
        return "it was computed before analyses recorded their data"
    if any(
        d != "unavailable" and not str(d).startswith(f"v{DIGEST_VERSION}:")
        for d in recorded.values()
    ):
        return "it was computed before analyses recorded the sizes and times of image files"
    changed = [label for label, d in now.items() if recorded.get(label) != d]
    if changed:
        return f"the data of {', '.join(repr(c) for c in changed)} changed (its splits differ)"
    return None


def _changed_runs(store: StudyStore, recorded: dict[str, Any]) -> str | None:
    """Why the runs an analysis read are no longer what it read (None: unchanged)."""
    now = _run_inputs(store, set(recorded))
    for rid, then in recorded.items():
        if now[rid]["done"] is None:
            return f"run {rid} is no longer finished"
        if now[rid]["done"] != then.get("done"):
            return f"run {rid} was trained again (its DONE changed)"
        files_now, files_then = now[rid]["files"], then.get("files", {})
        changed = sorted(set(files_now) ^ set(files_then)) or sorted(
            f for f in files_now if files_now[f] != files_then[f]
        )
        if changed:
            return f"files of run {rid} changed ({', '.join(changed[:3])})"
    return None


def _stale_reason(
    store: StudyStore,
    plan: Plan,
    path: Path,
    options: dict[str, Any],
    unit: Analysis,
    data: dict[str, str],
) -> tuple[bool, str | None]:
    """(whether the result at ``path`` can be reused, why it cannot when a result exists).

    A result is reused only when it is 'ok', was computed by this version of the analysis with
    ``options``, from the same plan and the same data (``data``: :func:`_data_inputs` now), and
    every run it read is finished with the same DONE and files; a run it missed must still be
    unfinished.
    """
    if not path.is_file():
        return False, None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False, f"{path.name} could not be read"
    if not isinstance(doc, dict) or doc.get("status") != "ok":
        return False, None
    version = unit.version
    if doc.get("version") != version:
        return False, (
            f"it was written by version {doc.get('version', 'unknown')} of the analysis "
            f"(now {version})"
        )
    if doc.get("options") != options:
        changed = changed_keys(doc.get("options") or {}, options)
        return False, f"its options changed ({', '.join(changed) or 'all'})"
    inputs = doc.get("inputs")
    if not isinstance(inputs, dict):
        return False, "it was computed before analyses recorded their inputs"
    if inputs.get("plan") != _plan_digest(plan):
        planned = {r.id for r in plan.runs}
        before = set(inputs.get("plan_runs") or [])
        added, removed = len(planned - before), len(before - planned)
        return False, f"the study's plan changed ({added} runs added, {removed} no longer planned)"
    reason = _changed_data(inputs.get("data"), data) or _changed_runs(
        store, inputs.get("runs") or {}
    )
    if reason is not None:
        return False, reason
    finished = [rid for rid in doc.get("runs_missing", []) if store.is_done(rid)]
    if finished:
        return False, f"run {finished[0]} has finished since"
    try:
        validate_result(unit.Result, doc, path, version)
    except ResultMismatch as e:
        return False, str(e)
    return True, None


def _envelope(
    result: AnalysisResult, name: str, version: int, options: dict[str, Any]
) -> dict[str, Any]:
    """The document of a result: its fields (JSON names) with the runner's envelope."""
    return {
        **result.model_dump(mode="json", by_alias=True),
        "analysis": name,
        "version": version,
        "options": options,
    }


def worker_threads(cfg: StudyConfig, workers: int) -> int | None:
    """Torch threads of each analysis worker process when ``workers`` > 1 (the study's
    ``num_threads``, else the cores shared out among the workers); None for one worker: the
    analyses then run in this process, with its threads."""
    if workers <= 1:
        return None
    return cfg.num_threads or max(1, (os.cpu_count() or 1) // workers)


class AnalysisClock:
    """How long an analysis will take, said before it starts: its unit's work for the study's
    targets (:meth:`~transferscope.unitkit.unit.Analysis.work`: forwards, training steps,
    CKA's float64 products, model loads) times the seconds of each on this machine
    (:func:`~transferscope.study.estimate.analysis_rates`), timed once, with the threads the
    analyses will run with, when the first analysis that needs a model is planned (about a
    second; at 224 px on a CPU a few)."""

    def __init__(
        self,
        cfg: StudyConfig,
        plan: Plan,
        cache: DataCache,
        threads: int | None = None,
        workers: int = 1,
    ) -> None:
        self.cfg, self.plan, self.cache = cfg, plan, cache
        self.threads, self.workers = threads, workers
        self._targets: list[TargetSize] = []
        self.rates: estimate.AnalysisRates | None = None

    def work(self, unit: Analysis, options: Any) -> Work | None:
        """The unit's work over the study's targets, or None when it reads files only or the
        count cannot be made (the data does not load: the analysis itself says why)."""
        if not unit.estimates_work():
            return None  # reads files only: no data to load, no model to build or time
        try:
            if not self._targets:
                self._measure()
            work = sum((unit.work(options, t) for t in self._targets), Work())
        except (TransferscopeError, OSError, RuntimeError, ValueError):
            return None
        return work if work.passes > 0 or work.multiply_adds > 0 else None

    def seconds(self, work: Work) -> float:
        """How long ``work`` takes on this machine (each of its lines counted once)."""
        assert self.rates is not None
        return self.rates.seconds(work.alone() if work.lines else work)

    def describe(self, work: Work) -> str:
        """'~40 s (1.2M forward passes)' for ``work`` on this machine."""
        passes = estimate.human(work.passes)
        return f"~{estimate.duration(self.seconds(work))} ({passes} forward passes)"

    def _measure(self) -> None:
        """The targets' sizes, and the work's rates timed on the study's device."""
        sizes: dict[str, estimate.DataSize | tuple[int, int]] = {}
        for spec in self.cfg.targets:
            splits = self.cache.get(spec)
            n = splits.sizes()
            sizes[spec.label] = estimate.DataSize(n["train"], n["test"], splits.info, "data")
        info = self.cache.get(self.cfg.targets[0]).info
        device = pick_device(self.cfg.device)
        model = estimate.timing_model(
            self.cfg.model.name, info.image_shape, info.num_outputs, device, self.cfg.model.options
        )
        self._targets = estimate.target_sizes(self.cfg, sizes, self.plan, model, info.image_shape)
        batch = self._targets[0].eval_batch if self._targets else CPU_FORWARD_ROWS
        self.rates = estimate.analysis_rates(
            model, info.image_shape, device, threads=self.threads, workers=self.workers, batch=batch
        )


@dataclass
class Job:
    """One analysis to compute: its unit's name, why it is computed, and its estimate."""

    name: str
    because: str
    passes: int | None
    """Forward passes over the study's targets (None: the unit reads files only)."""
    estimate: str | None
    """'~40 s (1.2M forward passes)' on this machine, said before it starts."""
    data: dict[str, str]
    """The digest of each data source's splits the decision to compute was made on
    (:func:`_data_inputs`), recorded in the result's ``inputs``."""
    seconds: float | None = None
    """The estimate in seconds (None: the unit reads files only)."""


def plan_analyses(
    store: StudyStore,
    cfg: StudyConfig,
    plan: Plan,
    only: list[str] | None,
    notify: ProgressFn,
    force: bool,
    cache: DataCache,
    threads: int | None = None,
    workers: int = 1,
) -> tuple[list[Job], dict[str, Path]]:
    """(the analyses to compute, in registry order; name -> path of every result reused).

    Says 'disabled', 'cached' and 'recomputing: <why>' as it goes. Each job's work is counted
    here, and its rates timed once, before any analysis runs, with ``threads`` torch threads
    (the analysis workers'; None: this process's) for ``workers`` analyses side by side.
    """
    units = registry.units() if only is None else [registry.get(n) for n in only]
    clock = AnalysisClock(cfg, plan, cache, threads, workers)
    jobs: list[Job] = []
    works: dict[str, Work] = {}
    reused: dict[str, Path] = {}
    data = _data_inputs(cfg, cache)
    for unit in units:
        name = unit.name
        path = paths.analysis_path(store.root, name)
        options = _options(cfg, name)
        if not options.get("enabled", True):
            notify(name, "disabled")
            continue
        current, stale = _stale_reason(store, plan, path, options, unit, data)
        if current and not force:
            notify(name, "cached")
            reused[name] = path
            continue
        if stale is not None and not force:
            notify(name, f"recomputing: {stale}")
        because = "--force" if force else (stale or "no earlier result")
        jobs.append(Job(name, because, None, None, data))
        work = clock.work(unit, cfg.analyses.of(name))
        if work is not None:
            works[name] = work
    _estimate(jobs, works, clock, workers)
    return jobs, reused


def _estimate(jobs: list[Job], works: dict[str, Work], clock: AnalysisClock, workers: int) -> None:
    """Each job's estimate, in the order the jobs will start (with workers the longest first,
    else registry order), counting a straight line two analyses share at the first one only."""
    if not works:
        return
    order = [j for j in jobs if j.name in works]
    if workers > 1:
        order.sort(key=lambda j: -clock.seconds(works[j.name].alone()))
    measured: set[Any] = set()
    for job in order:
        work = works[job.name].alone(measured)
        job.passes, job.estimate = work.passes, clock.describe(work)
        job.seconds = clock.seconds(work)


def compute_job(
    store: StudyStore,
    cfg: StudyConfig,
    plan: Plan,
    job: Job,
    cache: DataCache,
    notify: ProgressFn,
    tick: TickFn | None = None,
    lines: LineCache | None = None,
) -> Path:
    """Compute one planned analysis and write its document; returns its path. A failure is
    written and said, not raised, unless a run is damaged (:class:`DamagedRunError`)."""
    unit = registry.get(job.name)
    if job.estimate is not None:
        notify(job.name, f"estimated: {job.estimate}")
    notify(job.name, "running")
    ctx = StudyContext(store, cfg, plan, cache, lines=LineCache() if lines is None else lines)
    if tick is not None:
        ctx.progress = functools.partial(tick, job.name)
    return _compute(unit, job, ctx, cfg, plan, store, notify)


def run_analyses(
    store: StudyStore,
    only: list[str] | None = None,
    progress: ProgressFn | None = None,
    force: bool = False,
    cache: DataCache | None = None,
    tick: TickFn | None = None,
    workers: int = 1,
    lines: Path | None = None,
) -> dict[str, Path]:
    """Run the registered analyses of a study and write ``analyses/<name>.json`` for each.

    Args:
        store: the study directory (its plan.json, study.yaml and runs/).
        only: names of registered analyses to run (default: all); an unknown name is an error.
        progress: called as ``progress(name, message)`` (see :data:`ProgressFn`).
        force: recompute even when an up-to-date result exists.
        cache: data already loaded by the caller (e.g. the executor's).
        tick: called as an analysis works through its parts (see :data:`TickFn`).
        workers: analyses computed side by side in that many worker processes
            (:mod:`transferscope.study.analysis_pool`), the longest first; 1: one after another
            in this process. The results are the same either way.
        lines: a folder of straight lines shared with other calls running side by side (the
            Ray executor's tasks; :class:`~transferscope.unitkit.line_cache.LineCache`); by
            default this call's own, in memory or, with workers, a folder it removes at the end.

    Returns:
        name -> path of its JSON, for every analysis that has one (computed, reused, skipped or
        failed). An analysis disabled in ``analyses.<name>.enabled`` writes nothing.
    """
    cache = cache or DataCache()
    notify = progress or (lambda name, message: None)
    cfg, plan = store.read_config(), store.read_plan()
    threads = worker_threads(cfg, workers)
    jobs, out = plan_analyses(store, cfg, plan, only, notify, force, cache, threads, workers)
    if workers > 1 and len(jobs) > 1:
        from transferscope.study.analysis_pool import compute_in_pool

        # The workers share the straight lines they measure through a folder of this call.
        folder = lines or call_folder(store.analyses_dir)
        try:
            out.update(compute_in_pool(store, jobs, workers, notify, tick, lines=folder))
        finally:
            if lines is None:
                shutil.rmtree(folder, ignore_errors=True)
    else:
        shared = LineCache(lines)
        for job in jobs:
            out[job.name] = compute_job(store, cfg, plan, job, cache, notify, tick, shared)
    order = registry.names()
    return dict(sorted(out.items(), key=lambda kv: order.index(kv[0])))


def _load_data(ctx: StudyContext, cfg: StudyConfig) -> None:
    """Load the source's and every target's data into the context's cache (once per process).
    Data that fails to load (not on this machine, as an external P's source, or unreadable) is
    left to the analyses that need it: each meets the error again inside its own failure
    isolation and records it."""
    for spec in [cfg.source, *cfg.targets]:
        try:
            ctx.cache.get(spec)
        except Exception:  # recorded by the analysis that needs the data
            continue


def _compute(
    unit: Analysis,
    job: Job,
    ctx: StudyContext,
    cfg: StudyConfig,
    plan: Plan,
    store: StudyStore,
    notify: ProgressFn,
) -> Path:
    name = unit.name
    path = paths.analysis_path(store.root, name)
    options = _options(cfg, name)
    # What every analysis of a process shares is done before the clock starts, so that none is
    # charged for it (its time is its own work, which its estimate counts): loading the study's
    # data (its first analysis in a worker process would load it all) and importing scipy.stats
    # (about a second of CPU; several analyses import it on first use).
    if unit.estimates_work():  # it runs models on the data; one that reads files only does not
        _load_data(ctx, cfg)
    statistics.scipy_stats()
    started, cpu = time.perf_counter(), time.process_time()
    lines = ctx.lines.measured, ctx.lines.reused
    try:
        # Whatever an analysis draws from torch's global generator derives from the study's
        # first seed and the analysis's name: `analyze --force` twice writes the same file.
        with seeded(analysis_seed(cfg, name)):
            result = unit.compute(ctx, cfg.analyses.of(name))
    except DamagedRunError:
        raise  # every analysis reading that run would be wrong: stop, say which file
    except Exception as e:  # one analysis's failure must not stop the others
        failure = f"{type(e).__name__}: {e}"
        doc = {
            "analysis": name,
            "version": unit.version,
            "status": "failed",
            "reason": failure,
            "traceback": traceback.format_exc(limit=8),
            "options": options,
        }
        atomic.write_json(path, doc)
        notify(name, f"failed: {failure}")
        return path
    status = "ok" if unit.has_results(result) else "skipped"
    # What it took against what was said before it started (the CLI lists both at the end).
    # CPU seconds beside them: on a loaded machine (or with several threads) the two part.
    timing: dict[str, Any] = {
        "seconds": round(time.perf_counter() - started, 3),
        "cpu_seconds": round(time.process_time() - cpu, 3),
        "estimated_seconds": None if job.seconds is None else round(job.seconds, 3),
        "threads": torch.get_num_threads(),
    }
    measured, reused = ctx.lines.measured - lines[0], ctx.lines.reused - lines[1]
    if measured or reused:  # straight lines: measured here, or taken as another measured them
        timing["lines"] = {"measured": measured, "reused": reused}
    doc = {
        **_envelope(result, name, unit.version, options),
        "status": status,
        "runs_used": sorted(ctx.used),
        "runs_missing": sorted(ctx.missing - ctx.used),
        "computed_because": job.because,
        "inputs": {
            "plan": _plan_digest(plan),
            "plan_runs": sorted(r.id for r in plan.runs),
            "data": job.data,
            "runs": _run_inputs(store, ctx.used),
        },
    }
    if status == "skipped":
        doc["reason"] = _why_nothing(result, ctx.missing)
    unit.Result.model_validate(doc)  # what is written must read back
    atomic.write_json(paths.timing_path(store.root, name), timing)
    atomic.write_json(path, doc)
    notify(name, "done" if status == "ok" else f"skipped: {doc['reason']}")
    return path


def timing_lines(timing_files: dict[str, Path], computed: list[str]) -> list[str]:
    """Estimated against actual time of each analysis in ``computed`` that had an estimate
    (from its timing file, ``timing_files``: :func:`~transferscope.paths.timing_path`), so that
    an estimate that drifts shows."""
    rows = []
    for name in computed:
        try:
            timing = json.loads(timing_files[name].read_text())
        except (KeyError, OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(timing, dict):
            continue
        guess, took = timing.get("estimated_seconds"), timing.get("seconds")
        if isinstance(guess, int | float) and isinstance(took, int | float):
            rows.append((name, guess, took))
    if not rows:
        return []
    width = max(len(name) for name, _, _ in rows)
    lines = ["analysis times, estimated before each started and taken:"]
    for name, guess, took in rows:
        # Under a second, a process's one-off costs (imports, first calls) outweigh the work.
        ratio = f"{took / guess:.2f}x the estimate" if guess > 0 else "no estimate"
        ratio = ratio if took >= 1.0 else "under a second"
        lines.append(
            f"  {name:<{width}}  estimated {_seconds(guess):>6}  took {_seconds(took):>6}  "
            f"({ratio})"
        )
    return lines


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 90 else f"{value / 60:.1f} min"


def _why_nothing(result: AnalysisResult, missing: set[str]) -> str:
    """Why an analysis measured nothing: unfinished runs, else the reasons its targets and
    pairs were skipped (e.g. an architecture it does not support), else an empty plan."""
    if missing:
        return f"runs not finished: {', '.join(sorted(missing))}"
    reasons = dict.fromkeys(reason for _, _, reason in skipped_parts(result.targets) if reason)
    if reasons:
        return "; ".join(reasons)
    return "the plan has no runs this analysis compares"


__all__ = [
    "Job",
    "ProgressFn",
    "TickFn",
    "compute_job",
    "is_last_message",
    "plan_analyses",
    "run_analyses",
    "timing_lines",
    "worker_threads",
]
