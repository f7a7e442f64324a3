"""What a study costs before it starts: runs by kind, examples seen, and device-hours.

:func:`study_size` counts, from the plan, the runs of each kind and the examples each trains on
and evaluates (epochs x training examples; one pass over the test split at every evaluation
point). :func:`calibrate` times a few training steps and evaluation batches of each distinct
(model, image shape, batch size) on the device it runs on, with synthetic tensors already on the
device: it measures the model's compute, not the input pipeline (``bench/input_pipeline.py``
measures that ratio). :func:`estimate` puts both together, adds the analyses' share from each
unit's count of its work (:meth:`~transferscope.unitkit.unit.Analysis.work`: forwards, training
steps, CKA's products, model loads, AUCs) at those rates, and :func:`format_estimate` prints it.
:func:`analysis_rates` times that work with the threads the analyses run with: the runner's
estimate shown before each analysis starts.

Data that is not on this machine (a preset's ``/data/...`` roots) is sized from the source's own
options (``subsample``, ``train_size`` / ``test_size``) or from ``examples`` given by the caller
(``transferscope estimate --examples imagenet=1281167/50000``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from transferscope import registry
from transferscope.config import DataSpec, StudyConfig, TrainSpec
from transferscope.data.base import DataInfo, Task
from transferscope.errors import TransferscopeError
from transferscope.studydir.plan import Plan, build_plan
from transferscope.unitkit.unit import TargetSize, Work

KINDS = ("P", "P-T", "RI-T", "P@k-T")


@dataclass(frozen=True)
class DataSize:
    """Train and test examples of one data spec, and where the numbers came from."""

    train: int
    test: int
    info: DataInfo
    origin: str  # 'data' (loaded), 'options' (the source's size options) or 'given'


def parse_examples(pairs: list[str]) -> dict[str, tuple[int, int | None]]:
    """``LABEL=TRAIN[/TEST]`` pairs -> {label: (train, test or None)}; bad input names the pair."""
    out: dict[str, tuple[int, int | None]] = {}
    for pair in pairs:
        label, sep, value = pair.partition("=")
        train, _, test = value.partition("/")
        try:
            counts = (int(train), int(test) if test else None)
        except ValueError:
            counts = (0, None)
        if not sep or not label or counts[0] < 1 or (counts[1] is not None and counts[1] < 1):
            raise TransferscopeError(
                f"--examples '{pair}' must look like LABEL=TRAIN or LABEL=TRAIN/TEST with positive "
                "counts, e.g. imagenet=1281167/50000"
            )
        out[label] = counts
    return out


def _declared(spec: DataSpec) -> tuple[int | None, int | None]:
    """Train and test sizes a source's options promise without reading the data."""
    opts = spec.options
    if spec.name == "domainnet":
        n = opts.get("subsample", 50000)
        return n, n
    if spec.name == "chexpert":
        return opts.get("train_size", 50000), opts.get("test_size", 50000)
    return None, None


def data_size(
    spec: DataSpec, load: Callable[[DataSpec], Any], given: dict[str, tuple[int, int | None]]
) -> DataSize:
    """The sizes of ``spec``: given > loaded data > declared options; else a clear error."""
    label = spec.label
    try:
        splits = load(spec)
    except TransferscopeError as e:
        splits, problem = None, str(e)
    if label in given:
        train, test = given[label]
        info = splits.info if splits is not None else _assumed_info(spec)
        default_test = len(splits.test) if splits is not None else max(1, train // 10)
        return DataSize(train, test or default_test, info, "given")
    if splits is not None:
        return DataSize(len(splits.train), len(splits.test), splits.info, "data")
    declared_train, declared_test = _declared(spec)
    if declared_train is None or declared_test is None:
        raise TransferscopeError(
            f"cannot size '{label}' without its data ({problem}); give its size with "
            f"--examples {label}=TRAIN/TEST"
        )
    return DataSize(declared_train, declared_test, _assumed_info(spec), "options")


def _assumed_info(spec: DataSpec) -> DataInfo:
    """Metadata of data that is not here: the shape from its options, outputs from its kind."""
    size = int(spec.options.get("image_size", 224))
    channels = int(spec.options.get("channels", 3))
    outputs = {"domainnet": 345, "chexpert": 5}.get(spec.name, 1000)
    task: Task = "multilabel" if spec.name == "chexpert" else "multiclass"
    names = tuple(f"class_{i}" for i in range(outputs))
    return DataInfo(spec.label, task, outputs, (channels, size, size), names)


@dataclass
class RunCost:
    """One planned run's work: examples trained on and evaluated."""

    kind: str
    train_examples: int
    eval_examples: int
    key: tuple[Any, ...]  # what its calibration depends on


@dataclass
class Calibration:
    """Measured seconds per training example and per evaluated example."""

    train_s: float
    eval_s: float
    batch: int
    eval_batch: int


@dataclass
class Estimate:
    """A study's size and cost on one device (see the module docstring)."""

    device: str
    runs: dict[str, int]
    runs_to_train: dict[str, int]
    examples: dict[str, dict[str, int]]
    hours: dict[str, float]
    analyses_hours: float
    analyses_forwards: dict[str, int]
    calibration: dict[str, dict[str, float]]
    sizes: dict[str, DataSize] = field(default_factory=dict)
    seconds_calibrating: float = 0.0

    @property
    def total_hours(self) -> float:
        return sum(self.hours.values()) + self.analyses_hours


def _evaluations(spec: TrainSpec) -> int:
    return spec.epochs + 1 + len(spec.eval_points)


def run_costs(plan: Plan, sizes: dict[str, DataSize]) -> list[RunCost]:
    """The work of every planned run (done or not)."""
    out = []
    for run in plan.runs:
        size = sizes[run.spec.data.label]
        t = run.spec.train
        n = min(size.train, t.max_train_examples or size.train)
        key: tuple[Any, ...] = (
            run.spec.model.name,
            size.info.image_shape,
            size.info.num_outputs,
            t.batch_size,
        )
        key += (t.eval_batch_size, json.dumps(run.spec.model.options, sort_keys=True))
        out.append(RunCost(run.spec.kind, t.epochs * n, _evaluations(t) * size.test, key))
    return out


def calibrate(
    model_name: str,
    image_shape: tuple[int, int, int],
    outputs: int,
    batch: int,
    eval_batch: int,
    device: torch.device,
    steps: int = 3,
    bf16: bool | None = None,
    model_options: dict[str, Any] | None = None,
) -> Calibration:
    """Seconds per example of training steps and of evaluation forwards, after one warm-up each.

    Synthetic (batch, *image_shape) float32 inputs on ``device``; SGD with momentum; bf16
    autocast and channels-last on CUDA, as the trainer does. On the CPU the batches are capped
    at 8 examples (a 224-px ResNet-50 step of 256 would take a minute here); the per-example
    time of a CPU barely depends on the batch.
    """
    cuda = device.type == "cuda"
    use_bf16 = cuda if bf16 is None else bf16
    if not cuda:
        batch, eval_batch = min(batch, 8), min(eval_batch, 8)
    model = timing_model(model_name, image_shape, outputs, device, model_options)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = _inputs(batch, image_shape, device)
    y = torch.randint(0, outputs, (batch,), device=device)

    def train_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    train_s = _timed(train_step, steps, device) / batch
    eval_s = _eval_seconds(model, image_shape, eval_batch, device, steps, use_bf16)
    return Calibration(train_s, eval_s, batch, eval_batch)


@dataclass(frozen=True)
class AnalysisRates:
    """Seconds per unit of an analysis's :class:`~transferscope.unitkit.unit.Work` on this
    machine, timed with the torch threads the analyses run with (:func:`analysis_rates`)."""

    forward_s: float
    """Per example of an eval-mode float32 forward pass at the evaluation batch size."""
    train_s: float
    """Per example of a training step (forward, backward, SGD update)."""
    multiply_add_s: float
    """Per float64 multiply-add of a large matrix product (CKA)."""
    model_s: float
    """Building the model and loading a weights file into it."""
    auc_s: float
    """One ROC AUC over a thousand examples (scikit-learn's, as the metric computes it)."""
    call_s: float
    """Building a state dict (one ``lerp`` per entry) and calling the model on it, beside the
    examples' own cost."""
    threads: int
    """The torch threads these were timed with."""
    share: float = 1.0
    """The share of a core each analysis was expected to get (:func:`core_share`); the rates
    include it."""

    def seconds(self, work: Work) -> float:
        """The seconds ``work`` takes at these rates (its lines each counted once)."""
        work = work.alone() if work.lines else work
        return (
            work.forwards * self.forward_s
            + work.train * self.train_s
            + work.multiply_adds * self.multiply_add_s
            + work.models * self.model_s
            + work.aucs * self.auc_s
            + work.calls * self.call_s
        )


def analysis_rates(
    model: torch.nn.Module,
    image_shape: tuple[int, int, int],
    device: torch.device,
    *,
    threads: int | None = None,
    workers: int = 1,
    batch: int = 256,
    train_batch: int = 64,
    repeats: int = 3,
    share: bool = True,
) -> AnalysisRates:
    """Time the work analyses are made of, with ``threads`` torch threads (default: this
    process's; put back afterwards): what the analyses will run with, one thread each in
    ``workers`` worker processes. Each rate is the median of ``repeats`` short timings (fewer
    once they have taken 2 s: a 224-px ResNet-50 on a CPU); about a second for a small model.

    One thread on a CPU: the timings are CPU time, divided by the share of a core each of the
    ``workers`` can expect (:func:`core_share`). A short wall-clock timing on a shared machine
    gets a core more often than a long computation does (the scheduler favours a process that
    has just slept), so wall-clock rates promised analyses 2-3x too fast there. With several
    threads or on a GPU the timings are wall clock. ``share`` False leaves the core share out
    (1.0): the cost on this machine when nothing else runs.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    one_core = device.type != "cuda" and torch.get_num_threads() == 1
    clock = time.process_time if one_core else time.perf_counter
    try:
        times: list[tuple[float, ...]] = []
        started = time.perf_counter()
        for _ in range(repeats):
            times.append(_rates_once(model, image_shape, device, batch, train_batch, clock))
            if time.perf_counter() - started > 2.0:
                break  # a large model: one long timing is steady enough, and repeats cost
        expected = core_share(workers) if one_core and share else 1.0
    finally:
        torch.set_num_threads(before)
    forward_s, train_s, multiply_add_s, model_s, auc_s, call_s = (
        sorted(t[i] for t in times)[len(times) // 2] / expected for i in range(6)
    )
    return AnalysisRates(
        forward_s,
        train_s,
        multiply_add_s,
        model_s,
        auc_s,
        call_s,
        threads=threads or before,
        share=expected,
    )


def core_share(workers: int = 1, seconds: float = 0.3) -> float:
    """The share of a core each of ``workers`` one-thread processes can expect now: as many
    threads as workers multiply matrices for ``seconds`` side by side (torch releases the
    interpreter's lock while it computes, and runs each product on its calling thread at one
    torch thread), and the CPU time they got is divided by the time they ran. 1.0 on an idle
    machine with a core per worker. Measured side by side because a machine shared through
    quotas gives several processes of one user no more than one (on a loaded 2-core machine:
    0.65 of a core for one, 0.33 each for two), which neither the load average nor one spinning
    process shows."""
    import threading

    workers = max(workers, 1)
    stop = time.perf_counter() + seconds

    def spin() -> None:
        a = torch.randn(128, 128)
        while time.perf_counter() < stop:
            a @ a

    threads = [threading.Thread(target=spin) for _ in range(workers)]
    wall, cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = (time.process_time() - cpu) / max(time.perf_counter() - wall, 1e-9) / workers
    return min(1.0, max(got, 1e-3))


# Multiply-adds one timing should hold at most on a CPU (about a tenth of a second there): the
# batch is as large as that allows, up to the analyses' own, since a small model's time per
# example at a small batch is mostly per-call overhead. Chosen by the model's size rather than by
# how long a first small batch took: on a loaded machine that first timing is slow for reasons
# that have nothing to do with the model, and stopping there overstated the cost 10-50x.
CPU_TIMING_MACS = 2e9


def _rates_once(
    model: torch.nn.Module,
    image_shape: tuple[int, int, int],
    device: torch.device,
    batch: int,
    train_batch: int,
    clock: Callable[[], float],
) -> tuple[float, float, float, float, float, float]:
    import copy

    from transferscope.training.loaders import CPU_FORWARD_ROWS
    from transferscope.unitkit.cost import facts

    if device.type == "cuda":
        size, train_size = batch, train_batch
    else:
        macs = max(1, sum(m for _, m in facts(model, image_shape).macs))
        fits = max(1, int(CPU_TIMING_MACS // macs))
        size, train_size = min(batch, CPU_FORWARD_ROWS, fits), min(train_batch, max(1, fits // 3))
    forward = _eval_seconds(model, image_shape, size, device, 1, bf16=False, clock=clock)
    work = copy.deepcopy(model).train()
    opt = torch.optim.SGD(work.parameters(), lr=1e-6, momentum=0.9)
    x = _inputs(train_size, image_shape, device)
    y = torch.zeros(train_size, dtype=torch.long, device=device)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(work(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train = _timed(step, 1, device, clock) / train_size
    return (forward, train, *side_rates(model, image_shape, device, clock))


def _call_seconds(
    model: torch.nn.Module,
    image_shape: tuple[int, int, int],
    device: torch.device,
    clock: Callable[[], float],
) -> float:
    """A model call on a state of its own (one example): lerp every entry, swap them in."""
    from torch.func import functional_call

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = _inputs(1, image_shape, device)
    model.eval()

    def call() -> None:
        with torch.no_grad():
            moved = {
                k: torch.lerp(v, v, 0.5) if v.is_floating_point() else v for k, v in state.items()
            }
            functional_call(model, moved, (x,))

    return _timed(call, 3, device, clock)


def side_rates(
    model: torch.nn.Module,
    image_shape: tuple[int, int, int],
    device: torch.device,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float, float, float]:
    """Seconds per float64 multiply-add (CKA), per model loaded (a copy of ``model`` with a
    state dict loaded into it), per AUC over 1,000 examples and per model call on a state of its
    own: the analyses' work beside the model's forwards and steps (:class:`AnalysisRates`), by
    ``clock``."""
    import copy

    from transferscope.training.metrics import per_task_auc

    a = torch.randn(512, 256, dtype=torch.float64, device=device)
    c = torch.zeros(256, 256, dtype=torch.float64, device=device)
    mad = _timed(lambda: c.addmm_(a.T, a), 2, device, clock) / (512 * 256 * 256)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    started = clock()
    copy.deepcopy(model).load_state_dict(state)
    loaded = clock() - started
    g = torch.Generator().manual_seed(0)
    scores, labels = torch.rand(1000, 4, generator=g), torch.rand(1000, 4, generator=g) < 0.3
    per_task_auc(scores[:, :1], labels[:, :1].float())  # a first call: nothing to load later
    started = clock()
    per_task_auc(scores, labels.float())
    auc = (clock() - started) / 4
    return mad, loaded, auc, _call_seconds(model, image_shape, device, clock)


def timing_model(
    name: str,
    image_shape: tuple[int, int, int],
    outputs: int,
    device: torch.device,
    options: dict[str, Any] | None = None,
) -> torch.nn.Module:
    """The architecture ``name`` for (outputs, image_shape) on ``device``, seeded without
    touching the caller's random state: for timings and module counts, not for training."""
    from transferscope.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(name, outputs, image_shape[0], **(options or {})).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def _inputs(batch: int, image_shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    x = torch.randn(batch, *image_shape, device=device)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def _timed(
    fn: Callable[[], object],
    n: int,
    device: torch.device,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Mean seconds of ``fn`` over ``n`` calls after one warm-up (cuDNN autotuning, allocator),
    by ``clock`` (wall clock; ``time.process_time`` for this process's CPU time)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    start = clock()
    for _ in range(n):
        fn()
    sync()
    return (clock() - start) / n


def _eval_seconds(
    model: torch.nn.Module,
    image_shape: tuple[int, int, int],
    batch: int,
    device: torch.device,
    steps: int,
    bf16: bool,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    x = _inputs(batch, image_shape, device)
    model.eval()

    def step() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(x)

    return _timed(step, steps, device, clock) / batch


def target_sizes(
    cfg: StudyConfig,
    sizes: Mapping[str, DataSize | tuple[int, int]],
    plan: Plan,
    model: torch.nn.Module | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> list[TargetSize]:
    """Each target's sizes, its runs by role (from the plan) and ``model``, the study's
    architecture, taking images of ``image_shape``: what the units' cost estimates read."""
    from transferscope.unitkit.context import StudyContext

    view = StudyContext.of_plan(cfg, plan)
    out = []
    for target in cfg.targets:
        size = sizes[target.label]
        train, test = (size.train, size.test) if isinstance(size, DataSize) else size
        shape = size.info.image_shape if isinstance(size, DataSize) else image_shape
        runs = plan.select(target=target.label)
        ks = sum(r.spec.kind == "P@k-T" for r in runs)
        batch = next((r.spec.train.eval_batch_size for r in runs), 256)
        info = size.info if isinstance(size, DataSize) else None
        labels = info.num_outputs if info is not None and info.task == "multilabel" else 0
        out.append(TargetSize(target.label, train, test, ks, model, shape, view, batch, labels))
    return out


def analyses_work(
    cfg: StudyConfig,
    sizes: dict[str, DataSize],
    plan: Plan,
    model: torch.nn.Module | None = None,
) -> dict[str, Work]:
    """The work of each enabled analysis over all targets, from each unit's own count
    (:meth:`~transferscope.unitkit.unit.Analysis.work`)."""
    targets = target_sizes(cfg, sizes, plan, model)
    out = {}
    for unit in registry.units():
        options = cfg.analyses.of(unit.name)
        if options.enabled:
            out[unit.name] = sum((unit.work(options, t) for t in targets), Work())
    return out


def estimate(
    cfg: StudyConfig,
    load: Callable[[DataSpec], Any],
    device: torch.device,
    *,
    given: dict[str, tuple[int, int | None]] | None = None,
    is_done: Callable[[str], bool] = lambda run_id: False,
    steps: int = 3,
    calibrate_fn: Callable[..., Calibration] = calibrate,
    side_fn: Callable[..., tuple[float, float, float, float]] | None = None,
) -> Estimate:
    """Size and cost of ``cfg`` on ``device`` (see the module docstring).

    Args:
        cfg: the study.
        load: data spec -> Splits (e.g. ``DataCache().get``); a TransferscopeError means the data
            is not here and its size comes from ``given`` or the source's options.
        device: where the calibration runs, and the device the hours are for.
        given: sizes by data label (:func:`parse_examples`).
        is_done: whether a run already finished (its hours are left out of 'to train').
        steps: timed steps per calibration (after one warm-up).
    """
    given = given or {}
    specs = [cfg.source, *cfg.targets]
    sizes = {s.label: data_size(s, load, given) for s in specs}
    plan = build_plan(cfg, {label: s.info for label, s in sizes.items()})
    costs = run_costs(plan, sizes)
    started = time.perf_counter()
    measured: dict[tuple[Any, ...], Calibration] = {}
    for c in costs:
        if c.key not in measured:
            name, shape, outputs, batch, eval_batch, options = c.key
            measured[c.key] = calibrate_fn(
                name,
                shape,
                outputs,
                batch,
                eval_batch,
                device,
                steps,
                cfg.performance.bf16,
                model_options=json.loads(options),
            )
    runs = dict.fromkeys(KINDS, 0)
    todo = dict.fromkeys(KINDS, 0)
    examples = {k: {"train": 0, "eval": 0} for k in KINDS}
    hours = dict.fromkeys(KINDS, 0.0)
    for run, c in zip(plan.runs, costs, strict=True):
        runs[c.kind] += 1
        examples[c.kind]["train"] += c.train_examples
        examples[c.kind]["eval"] += c.eval_examples
        if is_done(run.id):
            continue
        todo[c.kind] += 1
        cal = measured[c.key]
        hours[c.kind] += (c.train_examples * cal.train_s + c.eval_examples * cal.eval_s) / 3600
    first = sizes[cfg.targets[0].label].info
    model = timing_model(
        cfg.model.name, first.image_shape, first.num_outputs, torch.device("cpu"), cfg.model.options
    )
    # A straight line two analyses share is counted at the first (registry order) only.
    lines: set[Any] = set()
    work = {name: w.alone(lines) for name, w in analyses_work(cfg, sizes, plan, model).items()}
    forwards = {name: w.passes for name, w in work.items()}
    target_key = next(c.key for c in costs if c.kind in ("P-T", "RI-T", "P@k-T"))
    cal = measured[target_key]
    # The training and evaluation rates just measured on the device; CKA's float64 products,
    # model loads and AUCs timed here (a fraction of a second).
    side = (side_fn or side_rates)(model, first.image_shape, torch.device("cpu"))
    rates = AnalysisRates(cal.eval_s, cal.train_s, *side, 0)
    analyses_hours = sum(rates.seconds(w) for w in work.values()) / 3600
    calibration = {
        f"{k[0]}, {'x'.join(map(str, k[1]))} images, {k[2]} outputs, batch {k[3]}"
        + (f" timed at {cal.batch}" if cal.batch != k[3] else ""): {
            "train_ms_per_image": round(cal.train_s * 1e3, 3),
            "eval_ms_per_image": round(cal.eval_s * 1e3, 3),
        }
        for k, cal in measured.items()
    }
    return Estimate(
        device=_device_name(device),
        runs={k: v for k, v in runs.items() if v},
        runs_to_train={k: v for k, v in todo.items() if runs[k]},
        examples={k: v for k, v in examples.items() if runs[k]},
        hours={k: v for k, v in hours.items() if runs[k]},
        analyses_hours=analyses_hours,
        analyses_forwards=forwards,
        calibration=calibration,
        sizes=sizes,
        seconds_calibrating=time.perf_counter() - started,
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def human(n: float) -> str:
    """A count with a k/M/G suffix: 1.2M."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def duration(seconds: float) -> str:
    """A time to the precision an estimate has: 40 s, 12 min, 3.5 h."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_estimate(est: Estimate) -> list[str]:
    """The estimate as lines of plain text."""
    unit = "GPU-hours" if est.device.startswith("cuda") else "device-hours"
    lines = ["data:"]
    for label, s in est.sizes.items():
        lines.append(
            f"  {label}: {s.train:,} train / {s.test:,} test images "
            f"{'x'.join(map(str, s.info.image_shape))} (sizes from {s.origin})"
        )
    lines.append(f"runs by kind ({sum(est.runs.values())} in all):")
    for kind, n in est.runs.items():
        ex = est.examples[kind]
        lines.append(
            f"  {kind:<6} {n:>4} runs ({est.runs_to_train[kind]} to train)  "
            f"{human(ex['train'])} training examples, {human(ex['eval'])} evaluated  "
            f"{est.hours[kind]:,.1f} {unit}"
        )
    total = est.total_hours
    share = est.analyses_hours / total if total > 0 else 0.0
    lines.append(
        f"analyses: ~{human(sum(est.analyses_forwards.values()))} forward passes, "
        f"~{est.analyses_hours:,.1f} {unit} ({share:.0%} of the total; "
        + ", ".join(f"{k} {human(v)}" for k, v in est.analyses_forwards.items() if v)
        + ")"
    )
    lines.append(f"total: ~{total:,.1f} {unit} on {est.device}")
    for what, c in est.calibration.items():
        lines.append(
            f"calibration ({what}): {c['train_ms_per_image']:.2f} ms per training image, "
            f"{c['eval_ms_per_image']:.2f} ms per evaluated image"
        )
    lines.append(
        f"calibrated in {est.seconds_calibrating:.0f}s on synthetic inputs already on the device: "
        "model compute only, the input pipeline not counted (see bench/input_pipeline.py)"
    )
    return lines
