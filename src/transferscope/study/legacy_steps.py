"""Study steps not yet converted to analysis units (:mod:`transferscope.analyses`).

Each function reads a study through a :class:`~transferscope.analyses.context.StudyContext` and
returns the plain result document of one analysis; the units in ``transferscope.analyses`` that
wrap them validate it into their result model. Converting a step moves its code into its unit.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from transferscope.analyses.context import StudyContext as _Context
from transferscope.analysis import curves as curves_lib
from transferscope.analysis import statistics as stats
from transferscope.analysis.alignment import align
from transferscope.analysis.connectivity import curve_summary, evaluate_curve, fit_curve
from transferscope.analysis.criticality import (
    criticality_heatmap,
    module_criticality,
    rewind_modules,
)
from transferscope.analysis.interpolation import InterpolationResult, interpolate
from transferscope.analysis.trajectory import trajectory_point
from transferscope.data.base import TensorImageDataset
from transferscope.errors import DamagedRunError, TransferscopeError
from transferscope.models.layout import depth_units
from transferscope.models.layout import layout as model_layout
from transferscope.study.executors import build_start_model
from transferscope.study.plan import PlannedRun
from transferscope.training import checkpoints as ckpt
from transferscope.training.loaders import epoch_order
from transferscope.training.metrics import metric_name
from transferscope.training.trainer import PREDICTIONS, pick_device, read_metrics

# The config's analyses section declares every analysis, in the paper's order.
ProgressFn = Callable[[str, str], None]
# Two fine-tunes from P's untrained init: shared start and recipe, no pre-training.
CONTROL_PAIR = "P@0-T/P@0-T"


def _skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason}


def _unfinished(ctx: _Context, runs: list[PlannedRun]) -> str | None:
    """A reason naming the runs that have not finished, or None when all have."""
    waiting = [r.id for r in runs if not ctx.done(r)]
    return f"runs not finished: {', '.join(waiting)}" if waiting else None


def _pairs(
    ctx: _Context, target: str, same_init: bool = False, every_p_t_ri_t: bool = False
) -> list[tuple[str, PlannedRun, PlannedRun]]:
    """P-T/P-T and RI-T/RI-T over seeds, P-T/RI-T at matching seeds (unshuffled runs); with
    ``same_init`` also the two baselines that tell pre-training from a merely shared starting
    point: the RI-T pair that shares one random init ("RI-T/RI-T same init") and the control
    pair, two fine-tunes from P's untrained init (:data:`CONTROL_PAIR`). ``every_p_t_ri_t``
    pairs P-T and RI-T across seeds too: cheap measures use the extra pairs to estimate how much
    one pair differs from another (the noise of the claims that compare pairs)."""
    pts, rits = ctx.independent("P-T", target), ctx.independent("RI-T", target)
    out = [("P-T/P-T", a, b) for a, b in itertools.combinations(pts, 2)]
    out += [("RI-T/RI-T", a, b) for a, b in itertools.combinations(rits, 2)]
    out += [("P-T/RI-T", a, b) for a in pts for b in rits if every_p_t_ri_t or a.seed == b.seed]
    if same_init:
        by_id = ctx.plan.by_id()
        for r in ctx.runs(kind="RI-T", target=target, shuffle=None):
            if r.same_init_as and r.same_init_as in by_id:
                out.append(("RI-T/RI-T same init", by_id[r.same_init_as], r))
        controls = ctx.control_pair(target)
        if controls:
            out.append((CONTROL_PAIR, *controls))
    return out


def _pair_entry(name: str, a: PlannedRun, b: PlannedRun, **extra: Any) -> dict[str, Any]:
    return {"pair": name, "runs": [a.id, b.id], "seeds": [a.seed, b.seed], **extra}


# --------------------------------------------------------------------------------------------
# curves


def _guarded(compute: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``compute(*args)``, or a 'skipped' entry saying why it could not be computed."""
    try:
        return compute(*args)
    except DamagedRunError:
        raise
    except TransferscopeError as e:
        return _skipped(str(e))


def _outputs(ctx: _Context, runs: list[PlannedRun]) -> tuple[list[np.ndarray], np.ndarray]:
    """The saved final test outputs of ``runs`` and their common test targets."""
    outs, targets = [], None
    for run in runs:
        out, y = _predictions(ctx, run)
        if targets is not None and (y.shape != targets.shape or not np.array_equal(y, targets)):
            raise TransferscopeError(f"run {run.id} was tested on other examples than {runs[0].id}")
        outs.append(out)
        targets = y
    assert targets is not None
    return outs, targets


def _final_test(
    ctx: _Context, task: str, pts: list[PlannedRun], rits: list[PlannedRun]
) -> dict[str, Any]:
    """P-T against RI-T final test metric on the same test examples (sign test or bootstrap)."""
    out_pt, y = _outputs(ctx, pts)
    out_rit, y_rit = _outputs(ctx, rits)
    if not np.array_equal(y, y_rit):
        raise TransferscopeError("P-T and RI-T were tested on other examples")
    result = stats.compare_final_metrics(task, out_pt, out_rit, y, seed=0)
    return {"status": "ok", **asdict(result)}


def _drop_test(
    ctx: _Context,
    task: str,
    plain: tuple[list[PlannedRun], list[PlannedRun]],
    shuffled: tuple[list[PlannedRun], list[PlannedRun]],
) -> dict[str, Any]:
    """How much the relative drop shrinks under a shuffle, with a paired bootstrap interval.

    The shuffled test images are the same examples in the same order (a fixed re-arrangement of
    each image's pixels), so the four groups of runs are resampled together. The estimate is
    drop(unshuffled) - drop(shuffled) in percent: positive when shuffling shrinks P-T's edge.
    """
    groups = [_outputs(ctx, runs) for runs in (*plain, *shuffled)]
    y = groups[0][1]
    if any(not np.array_equal(g[1], y) for g in groups):
        raise TransferscopeError("the shuffled runs were tested on other examples")
    metrics = [[stats.metric_under_weights(task, o, y) for o in g[0]] for g in groups]

    def side(i: int, w: np.ndarray) -> np.ndarray:
        return np.mean([f(w) for f in metrics[i]], axis=0)

    def drop(pt: np.ndarray, rit: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return 100.0 * (pt - rit) / pt

    def change(w: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):  # a resample where P-T scores 0: NaN, left out
            return drop(side(0, w), side(1, w)) - drop(side(2, w), side(3, w))

    result = stats.bootstrap_interval(
        change, len(y), seed=0, method="relative drop unshuffled − shuffled (points of %)"
    )
    return {"status": "ok", **asdict(result)}


def _rows(ctx: _Context, runs: list[PlannedRun]) -> list[list[dict[str, Any]]]:
    return [read_metrics(ctx.store.run_dir(r.id)) for r in runs]


def _metric_name(ctx: _Context, run: PlannedRun) -> str | None:
    summary = ctx.store.summary(run.id) or {}
    if summary.get("metric_name"):
        return str(summary["metric_name"])
    rows = read_metrics(ctx.store.run_dir(run.id))
    return rows[-1].get("metric_name") if rows else None


# --------------------------------------------------------------------------------------------
# mistakes


def _predictions(ctx: _Context, run: PlannedRun) -> tuple[np.ndarray, np.ndarray]:
    folder = ctx.store.run_dir(run.id) / PREDICTIONS
    paths = folder / "test_outputs.npy", folder / "test_targets.npy"
    for path in paths:
        if not path.is_file():
            raise TransferscopeError(f"run {run.id} has no '{path}'")
    return np.load(paths[0], allow_pickle=False), np.load(paths[1], allow_pickle=False)


# --------------------------------------------------------------------------------------------
# similarity


def _start_model(ctx: _Context, run: PlannedRun) -> nn.Module:
    spec = run.spec
    info = ctx.cache.get(spec.data).info
    source = ctx.cache.get(ctx.cfg.source).info if spec.parent else None
    # build_start_model seeds the global RNG for random inits; keep the caller's RNG untouched.
    with torch.random.fork_rng(devices=[]):
        return build_start_model(spec, info, source, ctx.store)


# --------------------------------------------------------------------------------------------
# distance


def _weights(ctx: _Context, run_id: str, checkpoint: str = "final") -> dict[str, torch.Tensor]:
    return ckpt.load_weights(ctx.store.weights_path(run_id, checkpoint))


def _p_weights(ctx: _Context, child: PlannedRun, k: float | None) -> tuple[str, str] | None:
    """(run id, checkpoint) holding P (``k`` None) or P@k: the P run's, or ``child``'s start."""
    p = ctx.p_run()
    if p is not None:
        if not ctx.done(p):
            return None
        return p.id, "final" if k is None else ckpt.point_name(k)
    # An external P: the child fine-tuned from it kept its starting weights as epoch-0.
    if not ctx.done(child):
        return None
    return child.id, ckpt.point_name(0)


# --------------------------------------------------------------------------------------------
# interpolation, criticality, trajectory (PAPER.md §3-§5)


def _subset(data: Any, max_examples: int | None, seed: int = 0) -> Any:
    """A fixed random subset of at most ``max_examples`` examples (the data itself if smaller)."""
    n = len(data)
    if max_examples is None or max_examples >= n:
        return data
    idx = epoch_order(n, seed, 0)[:max_examples]
    if isinstance(data, TensorImageDataset):
        return TensorImageDataset(data.images[idx], data.targets[idx])
    return torch.utils.data.Subset(data, idx.tolist())


def _with_head(
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


@dataclass
class _Path:
    """One interpolation pair: weights A and B, the run whose architecture (and head) is used."""

    pair: str
    needs: list[PlannedRun]
    a: tuple[str, str]
    b: tuple[str, str]
    model_run: PlannedRun
    body_only: bool = False
    k: float | None = None


def _interpolation_paths(ctx: _Context, target: str) -> tuple[list[_Path], list[dict[str, Any]]]:
    paths: list[_Path] = []
    waiting: list[dict[str, Any]] = []

    def finals(pair: str, a: PlannedRun, b: PlannedRun) -> None:
        paths.append(_Path(pair, [a, b], (a.id, "final"), (b.id, "final"), b))

    for pair, a, b in _pairs(ctx, target, same_init=True):
        finals(pair, a, b)
    pts = ctx.independent("P-T", target)
    for pt in pts:
        p = _p_weights(ctx, pt, None)
        if p is None:
            waiting.append(
                {"pair": "P/P-T", "k": None, "runs": [pt.id]}
                | _skipped("P's weights or this P-T run are not available yet")
            )
            continue
        paths.append(_Path("P/P-T", [pt], p, (pt.id, "final"), pt, body_only=True))
    reference = pts[0] if pts else None
    for r in ctx.trajectory_runs(target):
        if reference is None or r.checkpoint is None:
            continue
        pk = _p_weights(ctx, r, r.checkpoint)
        if pk is None:
            waiting.append(
                {"pair": "P@k/P-T", "k": r.checkpoint, "runs": [r.id, reference.id]}
                | _skipped("P@k's weights are not available yet")
            )
            continue
        paths.append(
            _Path(
                "P@k/P-T", [reference], pk, (reference.id, "final"), reference, True, r.checkpoint
            )
        )
    return paths, waiting


def _interpolate_runs(
    ctx: _Context,
    model_run: PlannedRun,
    a: tuple[str, str],
    b: tuple[str, str],
    num_points: int,
    recalibrate: bool,
    body_only: bool = False,
    max_examples: int | None = None,
    recalibration_examples: int | None = 2000,
) -> InterpolationResult:
    """Interpolate two weight files with ``model_run``'s architecture on its target test split.

    A line already measured with the same files and options is returned from ``ctx.lines``.
    """
    files = [ctx.store.weights_path(*w) for w in (a, b)]
    stamps = [(f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else None for f in files]
    key = (model_run.id, a, b, *stamps, num_points, recalibrate, body_only, max_examples,
           recalibration_examples)  # fmt: skip
    if key in ctx.lines:
        return ctx.lines[key]
    model = _start_model(ctx, model_run)
    state_a, state_b = _weights(ctx, *a), _weights(ctx, *b)
    if body_only:
        state_a = _with_head(state_a, state_b, model)
    splits = ctx.cache.get(model_run.spec.data)
    ctx.lines[key] = interpolate(
        model,
        state_a,
        state_b,
        _subset(splits.test, max_examples),
        num_points,
        task=splits.info.task,
        train_data=splits.train,
        # None: recalibrate exactly when the model has BatchNorm statistics.
        recalibrate_batchnorm=None if recalibrate else False,
        device=pick_device(ctx.cfg.device),
        batch_size=model_run.spec.train.eval_batch_size,
        recalibration_examples=recalibration_examples,
    )
    return ctx.lines[key]


def _interpolation(ctx: _Context) -> dict[str, Any]:
    opts = ctx.cfg.analyses.interpolation
    targets: dict[str, Any] = {}
    for target in ctx.cfg.targets:
        paths, entries = _interpolation_paths(ctx, target.label)
        for path in paths:
            entry: dict[str, Any] = {
                "pair": path.pair,
                "k": path.k,
                "runs": [path.a[0], path.b[0]],
                "checkpoints": [path.a[1], path.b[1]],
            }
            if path.body_only:
                entry["head"] = f"both ends use {path.b[0]}'s final head (body interpolated)"
            reason = _unfinished(ctx, path.needs)
            if reason:
                entries.append({**entry, **_skipped(reason)})
                continue
            try:
                result = _interpolate_runs(
                    ctx,
                    path.model_run,
                    path.a,
                    path.b,
                    opts.num_points,
                    opts.recalibrate_batchnorm,
                    path.body_only,
                    opts.max_examples,
                    opts.recalibration_examples,
                )
            except TransferscopeError as e:
                entries.append({**entry, **_skipped(str(e))})
                continue
            entries.append({**entry, "status": "ok", **result.to_dict()})
        splits = ctx.cache.get(target)
        targets[target.label] = {
            "metric_name": metric_name(splits.info.task),
            "pairs": entries,
            "examples": len(_subset(splits.test, opts.max_examples)),
        }
    return {"targets": targets, "split": "test"}


def _criticality(ctx: _Context) -> dict[str, Any]:
    device = pick_device(ctx.cfg.device)
    first = ctx.cfg.seeds[0]
    targets: dict[str, Any] = {}
    for target in (t.label for t in ctx.cfg.targets):
        out: dict[str, Any] = {}
        for kind in ("P-T", "RI-T"):
            runs = [r for r in ctx.independent(kind, target) if r.seed == first]
            if not runs:
                out[kind] = _skipped(f"the plan has no unshuffled {kind} run with seed {first}")
                continue
            run = runs[0]
            reason = _unfinished(ctx, [run])
            if reason:
                out[kind] = {"run": run.id, **_skipped(reason)}
                continue
            try:
                model = _start_model(ctx, run)
                # θ⁰: P-T's start (P with the fresh head) or RI-T's random init.
                init, final = _weights(ctx, run.id, ckpt.point_name(0)), _weights(ctx, run.id)
            except TransferscopeError as e:
                out[kind] = {"run": run.id, **_skipped(str(e))}
                continue
            common = {
                "task": ctx.cache.get(run.spec.data).info.task,
                "device": device,
                "batch_size": run.spec.train.eval_batch_size,
            }
            try:
                out[kind] = _criticality_entry(ctx, run, model, init, final, common)
            except TransferscopeError as e:
                out[kind] = {"run": run.id, **_skipped(str(e))}
        targets[target] = out
    return {
        "targets": targets,
        "loss_split": "train",
        "rewind_split": "test",
        "heatmap_split": "test",
    }


def _criticality_entry(
    ctx: _Context,
    run: PlannedRun,
    model: nn.Module,
    init: dict[str, torch.Tensor],
    final: dict[str, torch.Tensor],
    common: dict[str, Any],
) -> dict[str, Any]:
    """μ per module on the training subset, rewind test and heat maps on the test split."""
    opts = ctx.cfg.analyses.criticality
    splits = ctx.cache.get(run.spec.data)
    modules = [*depth_units(model, opts.modules), model_layout(model).head]
    result = module_criticality(
        model, init, final, splits.train, modules,
        num_alphas=opts.num_alphas, num_sigmas=opts.num_sigmas,
        noise_samples=opts.noise_samples, tolerance=opts.tolerance,
        epsilon=opts.epsilon, margin=opts.margin, max_sigma=opts.max_sigma,
        min_sigma=opts.min_sigma, seed=run.seed, max_examples=opts.max_examples, **common,
    )  # fmt: skip
    rewind = rewind_modules(
        model, init, final, splits.test, result.modules,
        max_examples=opts.eval_max_examples, **common,
    )  # fmt: skip
    heatmap = criticality_heatmap(
        model, init, final, splits.test, result.modules,
        num_alphas=opts.heatmap_alphas, num_sigmas=opts.heatmap_sigmas,
        noise_samples=opts.heatmap_noise_samples, max_sigma=opts.max_sigma,
        seed=run.seed, max_examples=opts.eval_max_examples, **common,
    )  # fmt: skip
    return {
        "status": "ok",
        "run": run.id,
        **result.to_dict(),
        "final_metric": rewind["final"]["metric"],
        "final_test_loss": rewind["final"]["loss"],
        "rewind": {m: rewind[m]["metric"] for m in result.modules},
        "rewind_loss": {m: rewind[m]["loss"] for m in result.modules},
        "heatmap": heatmap,
    }


def _final_k(ctx: _Context) -> float | None:
    """The epoch of the final P: P's pre-training length, or the last external checkpoint."""
    if ctx.p_run() is not None:
        return float(ctx.cfg.pretrain.epochs)
    if ctx.cfg.pretrained is not None and ctx.cfg.pretrained.checkpoints:
        return float(max(float(k) for k in ctx.cfg.pretrained.checkpoints))
    return None


def _trajectory(ctx: _Context) -> dict[str, Any]:
    opts = ctx.cfg.analyses.trajectory
    targets: dict[str, Any] = {}
    for spec in ctx.cfg.targets:
        target = spec.label
        by_k: dict[float, list[PlannedRun]] = {}
        for r in ctx.runs(kind="P@k-T", target=target, shuffle=None):
            if r.checkpoint is not None:
                by_k.setdefault(float(r.checkpoint), []).append(r)
        if not by_k:
            targets[target] = _skipped("the plan has no P@k-T runs (trajectory.checkpoints)")
            continue
        info = ctx.cache.get(spec).info
        chance = curves_lib.chance_metric(info.task, info.num_outputs)
        pts = ctx.independent("P-T", target)
        done_pts = [r for r in pts if ctx.done(r)]
        final_k = _final_k(ctx)
        # One bar for every point: most of the way from chance to the final P-T's metric, so a
        # checkpoint whose fine-tunes never get there reads "not reached".
        reference = trajectory_point(_rows(ctx, done_pts), None) if done_pts else None
        threshold = (
            curves_lib.common_threshold(
                chance, [reference["final_metric"]], opts.threshold_fraction
            )
            if reference
            else None
        )
        points = []
        for k in sorted(by_k):
            done = [r for r in by_k[k] if ctx.done(r)]
            if done:
                points.append(_trajectory_point(ctx, k, done, pts, threshold, info.task, opts))
        if done_pts and final_k is not None:
            ref = trajectory_point(_rows(ctx, done_pts), threshold)
            points.append(
                {
                    "k": final_k,
                    "runs": [r.id for r in done_pts],
                    "final_metric": ref["final_metric"],
                    "epochs_to_threshold": ref["epochs_to_threshold"],
                    "reached": ref["reached"],
                    # P-T against itself: no barrier by definition.
                    "barrier_metric": 0.0 if opts.barrier else None,
                    "barrier_loss": 0.0 if opts.barrier else None,
                    "reference": "P-T",
                }
            )
        if not points:
            targets[target] = _skipped("no finished P@k-T or P-T run")
            continue
        for point in points:
            point["early"] = final_k is not None and point["k"] <= opts.early_fraction * final_k
        targets[target] = {
            "status": "ok",
            "metric_name": metric_name(info.task),
            "points": points,
            "final_k": final_k,
            "threshold": threshold,
            "chance": chance,
        }
    return {
        "targets": targets,
        "threshold_fraction": opts.threshold_fraction,
        "early_fraction": opts.early_fraction,
    }


def _trajectory_point(
    ctx: _Context,
    k: float,
    runs: list[PlannedRun],
    pts: list[PlannedRun],
    threshold: float | None,
    task: str,
    opts: Any,
) -> dict[str, Any]:
    """Mean final metric and speed of the P@k-T runs; against the P-T run of the same seed, the
    difference of final metrics on the same test examples (paired bootstrap) and the barrier."""
    summary = trajectory_point(_rows(ctx, runs), threshold)
    point: dict[str, Any] = {
        "k": k,
        "runs": [r.id for r in runs],
        "final_metric": summary["final_metric"],
        "epochs_to_threshold": summary["epochs_to_threshold"],
        "reached": summary["reached"],
        "barrier_metric": None,
        "barrier_loss": None,
    }
    matched = [(r, p) for r in runs for p in pts if p.seed == r.seed and ctx.done(p)]
    if matched:
        point["vs_final"] = _guarded(_versus_final, ctx, task, matched)
    if not opts.barrier:
        return point
    barriers: list[tuple[float, float]] = []
    partners = []
    for r, same in matched:
        try:
            res = _interpolate_runs(
                ctx, same, (r.id, "final"), (same.id, "final"), opts.num_points,
                opts.recalibrate_batchnorm, max_examples=opts.max_examples,
            )  # fmt: skip
        except TransferscopeError:
            continue
        barriers.append((res.barrier_metric, res.barrier_loss))
        partners.append(same.id)
    if barriers:
        point["barrier_metric"] = float(np.mean([b[0] for b in barriers]))
        point["barrier_loss"] = float(np.mean([b[1] for b in barriers]))
        point["barrier_partners"] = partners
    return point


def _versus_final(
    ctx: _Context, task: str, matched: list[tuple[PlannedRun, PlannedRun]]
) -> dict[str, Any]:
    """Final metric of P@k-T minus that of P-T (same seeds), with a paired bootstrap interval
    over the test examples; the estimate is the mean over the matched seeds."""
    early, y_early = _outputs(ctx, [r for r, _ in matched])
    final, y = _outputs(ctx, [p for _, p in matched])
    if not np.array_equal(y_early, y):
        raise TransferscopeError("P@k-T and P-T were tested on other examples")
    fa = [stats.metric_under_weights(task, o, y) for o in early]
    fb = [stats.metric_under_weights(task, o, y) for o in final]

    def difference(w: np.ndarray) -> np.ndarray:
        return np.mean([f(w) for f in fa], axis=0) - np.mean([f(w) for f in fb], axis=0)

    result = stats.bootstrap_interval(
        difference, len(y), seed=0, method=f"P@k-T − P-T, {len(matched)} seed(s) matched"
    )
    return {"status": "ok", **asdict(result)}


# --------------------------------------------------------------------------------------------
# beyond the paper: basins modulo permutation, non-linear paths


def _path_dict(result: InterpolationResult) -> dict[str, Any]:
    out = result.to_dict()
    out.pop("metric_name", None)
    return out


def _path_options(opts: Any, splits: Any, device: torch.device, batch_size: int) -> dict[str, Any]:
    """Keyword arguments shared by the path evaluations of the alignment and curve steps."""
    return {
        "task": splits.info.task,
        "train_data": splits.train,
        "recalibrate_batchnorm": None if opts.recalibrate_batchnorm else False,
        "device": device,
        "batch_size": batch_size,
        "recalibration_examples": opts.recalibration_examples,
    }


def _line(ctx: _Context, a: PlannedRun, b: PlannedRun, opts: Any) -> InterpolationResult:
    """The straight line between two runs' final weights, as the interpolation step measures it
    (so a line both steps measure with the same options is measured once)."""
    return _interpolate_runs(
        ctx, b, (a.id, "final"), (b.id, "final"), opts.num_points, opts.recalibrate_batchnorm,
        max_examples=opts.max_examples, recalibration_examples=opts.recalibration_examples,
    )  # fmt: skip


def _alignment(ctx: _Context) -> dict[str, Any]:
    opts = ctx.cfg.analyses.alignment
    device = pick_device(ctx.cfg.device)
    targets: dict[str, Any] = {}
    for target in ctx.cfg.targets:
        entries = []
        for name, a, b in _pairs(ctx, target.label):
            entry = _pair_entry(name, a, b)
            reason = _unfinished(ctx, [a, b])
            if reason:
                entries.append({**entry, **_skipped(reason)})
                continue
            splits = ctx.cache.get(b.spec.data)
            common = _path_options(opts, splits, device, b.spec.train.eval_batch_size)
            test = _subset(splits.test, opts.max_examples)
            try:
                model = _start_model(ctx, b)
                state_a, state_b = _weights(ctx, a.id), _weights(ctx, b.id)
                aligned = align(model, state_a, state_b, seed=b.seed, max_sweeps=opts.max_sweeps)
                linear = _line(ctx, a, b, opts)
                permuted = interpolate(
                    model, state_a, aligned.state, test, opts.num_points, **common
                )
            except TransferscopeError as e:
                entries.append({**entry, **_skipped(str(e))})
                continue
            entries.append(
                {
                    **entry,
                    "status": "ok",
                    "linear": _path_dict(linear),
                    "aligned": _path_dict(permuted),
                    "alignment": aligned.to_dict(),
                }
            )
        splits = ctx.cache.get(target)
        targets[target.label] = {
            "metric_name": metric_name(splits.info.task),
            "pairs": entries,
            "examples": len(_subset(splits.test, opts.max_examples)),
        }
    return {"targets": targets, "split": "test", "method": "weight matching (Git Re-Basin)"}


def _connectivity(ctx: _Context) -> dict[str, Any]:
    opts = ctx.cfg.analyses.connectivity
    device = pick_device(ctx.cfg.device)
    targets: dict[str, Any] = {}
    for target in ctx.cfg.targets:
        entries = []
        for name, a, b in _pairs(ctx, target.label):
            if name not in opts.pairs:
                continue
            entry = _pair_entry(name, a, b)
            reason = _unfinished(ctx, [a, b])
            if reason:
                entries.append({**entry, **_skipped(reason)})
                continue
            splits = ctx.cache.get(b.spec.data)
            common = _path_options(opts, splits, device, b.spec.train.eval_batch_size)
            test = _subset(splits.test, opts.max_examples)
            start = time.perf_counter()
            try:
                model = _start_model(ctx, b)
                state_a, state_b = _weights(ctx, a.id), _weights(ctx, b.id)
                linear = _line(ctx, a, b, opts)
                curve = fit_curve(
                    model, state_a, state_b, splits.train,
                    task=splits.info.task, epochs=opts.epochs, batch_size=opts.batch_size,
                    lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay,
                    max_examples=opts.max_train_examples, seed=b.seed, device=device,
                )  # fmt: skip
                along = evaluate_curve(model, curve, test, opts.num_points, **common)
            except TransferscopeError as e:
                entries.append({**entry, **_skipped(str(e))})
                continue
            entries.append(
                {
                    **entry,
                    "status": "ok",
                    "linear": _path_dict(linear),
                    "curve": _path_dict(along),
                    **curve_summary(curve),
                    "seconds": time.perf_counter() - start,
                }
            )
        splits = ctx.cache.get(target)
        targets[target.label] = {
            "metric_name": metric_name(splits.info.task),
            "pairs": entries,
            "examples": len(_subset(splits.test, opts.max_examples)),
        }
    return {"targets": targets, "split": "test", "curve": "quadratic Bezier (Garipov et al. 2018)"}


# --------------------------------------------------------------------------------------------
# entry point

STEPS: dict[str, Callable[[_Context], dict[str, Any]]] = {
    "interpolation": _interpolation,
    "criticality": _criticality,
    "trajectory": _trajectory,
    "alignment": _alignment,
    "connectivity": _connectivity,
}
