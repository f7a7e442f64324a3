"""Paths between two models, as the interpolation, alignment and connectivity units store them.

A path is measured at points λ (or t) from 0 (model A) to 1 (model B): the test metric and loss
at each point and the two barriers (§3 of Neyshabur et al. 2020; the formulas are in
:mod:`transferscope.measures.interpolation`). :class:`Line` is that measurement as it appears in
the result documents; the claims read barriers through :func:`barriers`, which pairs each one
with twice its binomial standard error on the target's test examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from transferscope.errors import TransferscopeError
from transferscope.measures.interpolation import InterpolationResult
from transferscope.options import AnalysisOptions
from transferscope.training.metrics import metric_name
from transferscope.unitkit.context import subset
from transferscope.unitkit.cost import facts
from transferscope.unitkit.pairs import PairName, pair_entry, study_pairs
from transferscope.unitkit.results import AnalysisResult, Model, Skipped, TargetEntry
from transferscope.unitkit.rules import barrier_noise, finite
from transferscope.unitkit.tables import measured_pairs
from transferscope.unitkit.unit import TargetSize, Work

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from transferscope.studydir.plan import PlannedRun
    from transferscope.unitkit.context import StudyContext


class PathOptions(AnalysisOptions):
    """Options of every analysis that evaluates models along a path between two solutions."""

    num_points: int = Field(default=21, ge=2, description="points along the path evaluated")
    recalibrate_batchnorm: bool = True
    recalibration_examples: int | None = Field(
        default=2000, ge=1, description="training examples for BatchNorm statistics at each point"
    )


def path_examples(options: Any, target: TargetSize) -> int:
    """Examples evaluated at each point of a path: the test examples (``max_examples`` when the
    options have it) plus the BatchNorm recalibration examples when the study's model has
    running statistics (when the model is unknown, always: an upper bound). ``options``: a
    :class:`PathOptions`, or any options with its ``recalibrate_batchnorm`` and
    ``recalibration_examples`` (the trajectory's)."""
    test = target.cap(getattr(options, "max_examples", None), target.test)
    recal = target.cap(options.recalibration_examples, target.train)
    model, image_shape = target.model, target.image_shape
    if model is not None and image_shape is not None and not facts(model, image_shape).batchnorm:
        recal = 0
    return test + (recal if options.recalibrate_batchnorm else 0)


def path_work(options: Any, target: TargetSize, paths: int) -> Work:
    """The work of measuring ``paths`` paths of ``options.num_points`` points on ``target``:
    every point's examples (:func:`path_examples`) and metric, and per path a model built with
    the two end points' weights loaded."""
    points = paths * options.num_points
    examples = path_examples(options, target)
    work = Work(forwards=points * examples, models=2 * paths)
    return work + target.evaluations(points) + Work(calls=points * target.batches(examples))


def line_work(options: Any, target: TargetSize, ends: Sequence[tuple[Any, Any, bool]]) -> Work:
    """The straight lines between ``ends`` ((A's weights, B's weights, body only) each, weights
    as (run id, checkpoint)) with the path ``options``, as lines that any analysis of the call
    asking for the same one shares (:attr:`Work.lines`, keyed as
    :meth:`~transferscope.unitkit.context.StudyContext.line` keys them)."""
    cap = getattr(options, "max_examples", None)
    cap = None if cap is None or cap >= target.test else cap
    one = path_work(options, target, 1)
    keys = [
        (a, b, options.num_points, options.recalibrate_batchnorm, body, cap,
         options.recalibration_examples)
        for a, b, body in ends
    ]  # fmt: skip
    return Work(lines=tuple((key, one) for key in keys))


def pair_ends(pairs: Sequence[tuple[str, Any, Any]]) -> list[tuple[Any, Any, bool]]:
    """The ends of the straight lines between the final weights of each (name, A, B)."""
    return [((a.id, "final"), (b.id, "final"), False) for _, a, b in pairs]


class Line(Model):
    """Test metric and loss along one path (:class:`InterpolationResult` without its metric
    name, which the target entry holds once)."""

    lambdas: list[float]
    """Positions along the path, (num_points,), 0 (A) to 1 (B)."""
    metric: list[float]
    """Accuracy or mean AUC at each position (fraction; NaN where it could not be computed)."""
    loss: list[float]
    """Mean test loss at each position (nats)."""
    barrier_metric: float
    """max over the path of the end points' straight line minus the metric (≥ 0; NaN if a
    metric is)."""
    barrier_loss: float
    """The mirrored barrier of the loss (nats, ≥ 0)."""
    batchnorm_recalibrated: bool
    """Whether BatchNorm statistics were recomputed at every position."""

    @classmethod
    def of(cls, result: InterpolationResult) -> Line:
        out = result.to_dict()
        out.pop("metric_name", None)
        return cls.model_validate(out)

    def noise(self, examples: int | None) -> float:
        """Twice the standard error of :attr:`barrier_metric` on ``examples`` test examples
        (binomial, at the path's worst point; 0 when unknown)."""
        return barrier_noise({"metric": self.metric}, examples)


class PairRef(Model):
    """Which two models a pair entry compares: its catalogue name, run ids and seeds."""

    pair: PairName
    runs: list[str]
    seeds: list[int]


class SkippedPair(PairRef, Skipped):
    """A pair that could not be measured, and why."""


class PathsEntry(TargetEntry):
    """One target's paths: the pairs (each unit narrows ``pairs`` to its own pair models), the
    metric's name and how many test examples."""

    metric_name: str
    pairs: list[Any]
    examples: int
    """Test examples every path was measured on."""


class PathsResult(AnalysisResult):
    """A document of paths measured on the targets' test splits (each unit narrows
    ``targets`` to its own entry model)."""

    split: Literal["test"] = "test"


def ok_pairs(pairs: Sequence[Any], name: str) -> list[Any]:
    """The measured pairs called ``name``."""
    return [p for p in pairs if p.status == "ok" and p.pair == name]


def barriers(
    pairs: Sequence[Any],
    name: str,
    examples: int | None,
    path: Callable[[Any], Line | None] = lambda p: p,
) -> list[tuple[float, float]]:
    """(barrier (metric), twice its standard error) of every measured pair ``name`` whose
    ``path(pair)`` has a finite barrier."""
    out = []
    for p in ok_pairs(pairs, name):
        line = path(p)
        if line is not None and finite(line.barrier_metric):
            out.append((float(line.barrier_metric), line.noise(examples)))
    return out


def path_barriers(
    pairs: Sequence[Any], name: str, path: Callable[[Any], Line | None]
) -> list[float]:
    """The finite barriers (metric) of ``path(pair)`` over the measured pairs ``name``."""
    return [v for v, _ in barriers(pairs, name, None, path)]


@dataclass
class PairPaths:
    """What every path between the final models of a pair (A, B) starts from, so that each is
    measured like the straight line (BatchNorm recomputed at each point)."""

    splits: Any
    """The target's splits (its training split trains a curve and recalibrates BatchNorm)."""
    test: Any
    """The fixed test subset every path of the target is measured on."""
    options: dict[str, Any]
    """Keyword arguments of :func:`~transferscope.measures.interpolation.interpolate` and
    :func:`~transferscope.measures.connectivity.evaluate_curve`."""
    model: nn.Module
    """B's architecture, the module the paths' weights are loaded into."""
    state_a: dict[str, torch.Tensor]
    state_b: dict[str, torch.Tensor]
    linear: Line
    """The straight line from A to B, which every other path is stored beside."""


def pair_paths(ctx: StudyContext, opts: Any, a: PlannedRun, b: PlannedRun) -> PairPaths:
    """The :class:`PairPaths` of runs ``a`` and ``b`` with the path options ``opts`` (the straight
    line measured, or reused from the interpolation unit)."""
    splits = ctx.cache.get(b.spec.data)
    options = {
        "task": splits.info.task,
        "train_data": splits.train,
        "recalibrate_batchnorm": None if opts.recalibrate_batchnorm else False,
        "device": ctx.device,
        "batch_size": b.spec.train.eval_batch_size,
        "recalibration_examples": opts.recalibration_examples,
    }
    test = subset(splits.test, opts.max_examples)
    model = ctx.start_model(b)
    linear = Line.of(ctx.final_line(a, b, opts))
    return PairPaths(splits, test, options, model, ctx.weights(a.id), ctx.weights(b.id), linear)


def measure_pairs(
    ctx: StudyContext,
    opts: Any,
    measure: Callable[[PlannedRun, PlannedRun], dict[str, Any]],
    keep: Callable[[str], bool] = lambda name: True,
) -> dict[str, dict[str, Any]]:
    """Per target, ``measure(a, b)`` for every pair of :func:`~.pairs.study_pairs` that ``keep``
    accepts: {metric_name, pairs, examples}. A pair whose runs have not finished, or whose
    measurement raises a :class:`TransferscopeError`, is skipped with the reason."""
    jobs = [
        (spec, name, a, b)
        for spec in ctx.cfg.targets
        for name, a, b in study_pairs(ctx, spec.label)
        if keep(name)
    ]
    pairs: dict[str, list[dict[str, Any]]] = {spec.label: [] for spec in ctx.cfg.targets}
    for i, (spec, name, a, b) in enumerate(jobs):
        ctx.progress(i, len(jobs), f"{spec.label}: {name}")
        ref = pair_entry(name, a, b)
        reason = ctx.unfinished([a, b])
        if reason is None:
            try:
                ref.update(status="ok", **measure(a, b))
            except TransferscopeError as e:
                reason = str(e)
        if reason is not None:
            ref.update(status="skipped", reason=reason)
        pairs[spec.label].append(ref)
    return {spec.label: paths_entry(ctx, spec, opts, pairs[spec.label]) for spec in ctx.cfg.targets}


def paths_entry(ctx: StudyContext, spec: Any, opts: Any, pairs: list[Any]) -> dict[str, Any]:
    """The :class:`PathsEntry` of target ``spec`` holding ``pairs``."""
    splits = ctx.cache.get(spec)
    return {
        "status": "ok",
        "metric_name": metric_name(splits.info.task),
        "pairs": pairs,
        "examples": len(subset(splits.test, opts.max_examples)),
    }


def any_pair_measured(result: AnalysisResult) -> bool:
    """Whether a result whose target entries hold pairs measured one (a target entry is
    written even when every pair was skipped)."""
    return bool(measured_pairs(result))


__all__ = [
    "Line",
    "PairPaths",
    "PairRef",
    "PathsEntry",
    "PathsResult",
    "SkippedPair",
    "any_pair_measured",
    "barriers",
    "line_work",
    "measure_pairs",
    "ok_pairs",
    "pair_ends",
    "pair_paths",
    "path_barriers",
    "path_examples",
    "path_work",
    "paths_entry",
]
