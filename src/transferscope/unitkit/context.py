"""What an analysis unit reads from a study: runs by role, their files, models and data.

A :class:`StudyContext` is made per analysis by the runner (:mod:`transferscope.study.analyze`).
It records which runs the analysis used and which planned runs it needed but found unfinished
(``runs_used`` / ``runs_missing`` of the result), checks a finished run's files against its DONE
before the first read (a damaged run is an error, never silently left out), and shares the
straight lines already measured between the analyses of one call (:mod:`.lines`).
"""

from __future__ import annotations

import copy
import itertools
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferscope.config import StudyConfig
from transferscope.data.base import TensorImageDataset
from transferscope.errors import DamagedRunError, TransferscopeError
from transferscope.measures.interpolation import InterpolationResult, interpolate
from transferscope.models import load_state
from transferscope.models.layout import layout as model_layout
from transferscope.studydir.inputs import DataCache, build_start_model
from transferscope.studydir.plan import Plan, PlannedRun
from transferscope.studydir.store import StudyStore
from transferscope.training import checkpoints as ckpt
from transferscope.training.loaders import epoch_order, seeded
from transferscope.training.trainer import PREDICTIONS, pick_device, read_metrics
from transferscope.unitkit.line_cache import LineCache

Weights = tuple[str, str]
"""(run id, checkpoint name) of one weights file."""


def skipped(reason: str) -> dict[str, Any]:
    """An entry that could not be measured, and why."""
    return {"status": "skipped", "reason": reason}


def failed(error: BaseException) -> dict[str, Any]:
    """An entry whose computation failed: the error, said where the entry stands."""
    if isinstance(error, TransferscopeError):
        return skipped(str(error))
    return {"status": "failed", "reason": f"{type(error).__name__}: {error}"}


def guarded(compute: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``compute(*args)``, or a skipped entry saying why it could not be computed."""
    try:
        return compute(*args)
    except DamagedRunError:
        raise
    except TransferscopeError as e:
        return skipped(str(e))


START_MODEL_BYTES = 512 << 20
"""What the start models kept to copy from may hold together (parameters and buffers); a model
larger than this is built each time."""
_start_models: OrderedDict[tuple[Any, ...], nn.Module] = OrderedDict()


def _stamp(path: Path | None) -> tuple[int, int] | None:
    """(mtime in ns, size) of a file a start model is read from; None without one."""
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _bytes(model: nn.Module) -> int:
    tensors = itertools.chain(model.parameters(), model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def cached_start_model(key: tuple[Any, ...], build: Callable[[], nn.Module]) -> nn.Module:
    """A copy of the model ``build()`` gives, built once per ``key`` in this process while the
    start models kept stay within :data:`START_MODEL_BYTES` (least recently used dropped)."""
    built = _start_models.get(key)
    if built is None:
        built = build()
        size = _bytes(built)
        if size > START_MODEL_BYTES:
            return built
        _start_models[key] = built
        while sum(_bytes(m) for m in _start_models.values()) > START_MODEL_BYTES:
            _start_models.popitem(last=False)
    _start_models.move_to_end(key)
    return copy.deepcopy(built)


@dataclass
class StudyContext:
    """One analysis's view of a study: the plan, the config, the runs' files and the data."""

    store: StudyStore
    cfg: StudyConfig
    plan: Plan
    cache: DataCache
    used: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    lines: LineCache = field(default_factory=LineCache)
    """Straight lines measured so far in this call, shared by the analyses that measure the same
    line with the same options (interpolation, alignment, connectivity, trajectory), and with the
    call's other worker processes when it has a folder."""
    progress: Callable[[int, int, str], None] = lambda done, total, what: None
    """Called as ``progress(done, total, what)`` while the analysis works through its parts."""

    @classmethod
    def of_plan(cls, cfg: StudyConfig, plan: Plan) -> StudyContext:
        """A context that answers from the plan alone (runs by role, pairs, trajectory
        points) and reads no file: what a unit's estimate counts its work with before the
        study has run (:meth:`~transferscope.unitkit.unit.Analysis.work`)."""
        return cls(store=None, cfg=cfg, plan=plan, cache=None)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- runs by role
    def done(self, run: PlannedRun) -> bool:
        """Whether ``run`` finished; records it as used or missing.

        Raises:
            DamagedRunError: the run finished but its files no longer match its DONE.
        """
        if self.store.is_done(run.id):
            if run.id not in self.used:
                problem = self.store.damage(run.id, checksums=True)
                if problem is not None:
                    raise self.store.damaged_error(run.id, problem)
            self.used.add(run.id)
            return True
        self.missing.add(run.id)
        return False

    def unfinished(self, runs: list[PlannedRun]) -> str | None:
        """A reason naming the runs that have not finished, or None when all have."""
        waiting = [r.id for r in runs if not self.done(r)]
        return f"runs not finished: {', '.join(waiting)}" if waiting else None

    def runs(self, **roles: Any) -> list[PlannedRun]:
        """Planned runs with these roles, by seed, shuffle seed, then trajectory point."""
        return sorted(
            self.plan.select(**roles),
            key=lambda r: (
                r.seed,
                r.shuffle_seed or 0,
                -1.0 if r.checkpoint is None else r.checkpoint,
            ),
        )

    def independent(self, kind: str, target: str) -> list[PlannedRun]:
        """Unshuffled runs of ``kind`` on ``target`` with their own init (one per seed)."""
        return [r for r in self.runs(kind=kind, target=target, shuffle=None) if not r.same_init_as]

    def trajectory_runs(self, target: str) -> list[PlannedRun]:
        """The P@k-T runs of the first seed, one per trajectory point k (the control pair's
        second seed is not a trajectory point of its own)."""
        first = self.cfg.seeds[0]
        return [r for r in self.runs(kind="P@k-T", target=target, shuffle=None) if r.seed == first]

    def control_pairs(self, target: str) -> list[tuple[PlannedRun, PlannedRun]]:
        """Every two P@0-T runs of the study's seeds (fine-tunes from P's untrained init)."""
        runs = [
            r for r in self.runs(kind="P@k-T", target=target, shuffle=None) if r.checkpoint == 0
        ]
        by_seed = {r.seed: r for r in runs if r.seed in self.cfg.seeds}
        ordered = [by_seed[s] for s in self.cfg.seeds if s in by_seed]
        return list(itertools.combinations(ordered, 2))

    def p_run(self) -> PlannedRun | None:
        """The pre-training run (None when P came from a file or torchvision)."""
        runs = self.plan.select(kind="P")
        return runs[0] if runs else None

    @property
    def device(self) -> torch.device:
        return pick_device(self.cfg.device)

    # ----------------------------------------------------------------- run files
    def metrics_rows(self, runs: list[PlannedRun]) -> list[list[dict[str, Any]]]:
        """Each run's ``metrics.jsonl`` rows."""
        return [read_metrics(self.store.run_dir(r.id)) for r in runs]

    def metric_name(self, run: PlannedRun) -> str | None:
        """The name of the run's test metric (accuracy, mean AUC)."""
        summary = self.store.summary(run.id) or {}
        if summary.get("metric_name"):
            return str(summary["metric_name"])
        rows = read_metrics(self.store.run_dir(run.id))
        return rows[-1].get("metric_name") if rows else None

    def predictions(self, run: PlannedRun) -> tuple[np.ndarray, np.ndarray]:
        """The run's saved final test outputs (N, C) and targets (N,) or (N, C)."""
        folder = self.store.run_dir(run.id) / PREDICTIONS
        paths = folder / "test_outputs.npy", folder / "test_targets.npy"
        for path in paths:
            if not path.is_file():
                raise TransferscopeError(f"run {run.id} has no '{path}'")
        return np.load(paths[0], allow_pickle=False), np.load(paths[1], allow_pickle=False)

    def outputs(self, runs: list[PlannedRun]) -> tuple[list[np.ndarray], np.ndarray]:
        """The saved final test outputs of ``runs`` and their common test targets."""
        outs, targets = [], None
        for run in runs:
            out, y = self.predictions(run)
            if targets is not None and (y.shape != targets.shape or not np.array_equal(y, targets)):
                raise TransferscopeError(
                    f"run {run.id} was tested on other examples than {runs[0].id}"
                )
            outs.append(out)
            targets = y
        assert targets is not None
        return outs, targets

    def weights(self, run_id: str, checkpoint: str = "final") -> dict[str, torch.Tensor]:
        """A run's weights at ``checkpoint`` ('final', or a trajectory point's name)."""
        return ckpt.load_weights(self.store.weights_path(run_id, checkpoint))

    def p_weights(self, child: PlannedRun, k: float | None) -> Weights | None:
        """(run id, checkpoint) holding P (``k`` None) or P@k: the P run's, or ``child``'s start."""
        p = self.p_run()
        if p is not None:
            if not self.done(p):
                return None
            return p.id, "final" if k is None else ckpt.point_name(k)
        # An external P: the child fine-tuned from it kept its starting weights as epoch-0.
        if not self.done(child):
            return None
        return child.id, ckpt.point_name(0)

    # ----------------------------------------------------------------- models
    def start_model(self, run: PlannedRun) -> nn.Module:
        """A run's architecture as it was built before training."""
        spec = run.spec
        info = self.cache.get(spec.data).info
        source = self.cache.get(self.cfg.source).info if spec.parent else None

        def build() -> nn.Module:
            # build_start_model seeds the global RNG for random inits; keep the caller's
            # untouched.
            with torch.random.fork_rng(devices=[]):
                return build_start_model(spec, info, source, self.store)

        # The analyses of a study ask for the same runs' models again and again (a line per
        # pair, a probe per module, one analysis after another): a copy costs a tenth of building
        # one (ResNet-18: 0.18 s to initialise, 0.02 s to copy) and is the same module,
        # parameters and buffers. The run id names the spec; the files it starts from are
        # stamped, so a retrained P is read again.
        parent = (
            self.store.weights_path(spec.parent, spec.parent_checkpoint or "final")
            if spec.parent is not None
            else None
        )
        key = (str(self.store.root), run.id, _stamp(parent), _stamp(spec.init_file))
        return cached_start_model(key, build)

    def final_model(self, run: PlannedRun) -> nn.Module:
        """A run's architecture (as it was trained) with its final weights."""
        model = self.start_model(run)
        path = self.store.weights_path(run.id, "final")
        load_state(model, ckpt.load_weights(path), what=str(path))
        return model

    def p_model(self, pt: PlannedRun) -> tuple[nn.Module, str]:
        """P for the P/P-T pair: the P run's final weights, or (external P) P-T's start model."""
        p = self.p_run()
        if p is not None:
            return self.final_model(p), p.id
        # P came from a file or torchvision: P-T's starting point is P with a fresh head, and
        # the head is not among the compared layers.
        return self.start_model(pt), f"{pt.id}@start"

    # ----------------------------------------------------------------- straight lines
    def line(
        self,
        model_run: PlannedRun,
        a: Weights,
        b: Weights,
        num_points: int,
        recalibrate: bool,
        body_only: bool = False,
        max_examples: int | None = None,
        recalibration_examples: int | None = 2000,
    ) -> InterpolationResult:
        """Interpolate two weight files with ``model_run``'s architecture on its target's test
        split (§3); a line already measured in this call with the same files and options, by
        this analysis, another, or another worker process, is reused (:class:`LineCache`)."""
        files = [self.store.weights_path(*w) for w in (a, b)]
        stamps = [(f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else None for f in files]
        splits = self.cache.get(model_run.spec.data)
        # A cap at or above the test split's size evaluates the whole split: the same line.
        if max_examples is not None and max_examples >= len(splits.test):  # type: ignore[arg-type]  # torch's Dataset declares no __len__
            max_examples = None
        key = (model_run.id, a, b, *stamps, num_points, recalibrate, body_only, max_examples,
               recalibration_examples, str(self.device))  # fmt: skip

        def measure() -> InterpolationResult:
            model = self.start_model(model_run)
            state_a, state_b = self.weights(*a), self.weights(*b)
            if body_only:
                state_a = with_head(state_a, state_b, model)
            # A line is shared by the analyses that measure it (and computed by whichever
            # comes first, here or in a pool worker): what it draws depends on the line alone.
            seed = zlib.crc32(repr((model_run.id, a, b, *key[5:10])).encode())
            with seeded(seed):
                return interpolate(
                    model,
                    state_a,
                    state_b,
                    subset(splits.test, max_examples),
                    num_points,
                    task=splits.info.task,
                    train_data=splits.train,
                    # None: recalibrate exactly when the model has BatchNorm statistics.
                    recalibrate_batchnorm=None if recalibrate else False,
                    device=self.device,
                    batch_size=model_run.spec.train.eval_batch_size,
                    recalibration_examples=recalibration_examples,
                )

        return self.lines.get(key, measure)

    def final_line(self, a: PlannedRun, b: PlannedRun, opts: Any) -> InterpolationResult:
        """The straight line between two runs' final weights with the path options ``opts``
        (num_points, recalibrate_batchnorm, max_examples, recalibration_examples)."""
        return self.line(
            b, (a.id, "final"), (b.id, "final"), opts.num_points, opts.recalibrate_batchnorm,
            max_examples=opts.max_examples, recalibration_examples=opts.recalibration_examples,
        )  # fmt: skip


def subset(data: Any, max_examples: int | None, seed: int = 0) -> Any:
    """A fixed random subset of at most ``max_examples`` examples (the data itself if smaller)."""
    n = len(data)
    if max_examples is None or max_examples >= n:
        return data
    return take(data, epoch_order(n, seed, 0)[:max_examples].tolist())


def take(data: Any, indices: list[int]) -> Any:
    """The examples ``indices`` of ``data`` (a tensor dataset stays one)."""
    if isinstance(data, TensorImageDataset):
        idx = torch.as_tensor(indices)
        return TensorImageDataset(data.images[idx], data.targets[idx])
    return torch.utils.data.Subset(data, indices)


def with_head(
    body: dict[str, torch.Tensor], donor: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """``body`` with its classifier entries replaced by ``donor``'s (P's head answers the
    source's question and may have another shape: P/P-T paths interpolate the body only)."""
    head = model_layout(model).head

    def within(key: str) -> bool:
        return key == head or key.startswith(head + ".")

    out = {k: v for k, v in body.items() if not within(k)}
    out.update({k: v for k, v in donor.items() if within(k)})
    return out


__all__ = [
    "StudyContext",
    "Weights",
    "failed",
    "guarded",
    "skipped",
    "subset",
    "take",
    "with_head",
]
