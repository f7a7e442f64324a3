"""Paths between two models, as the interpolation, alignment and connectivity units store them.

A path is measured at points λ (or t) from 0 (model A) to 1 (model B): the test metric and loss
at each point and the two barriers (§3 of Neyshabur et al. 2020; the formulas are in
:mod:`transferscope.analysis.interpolation`). :class:`Line` is that measurement as it appears in
the result documents; the claims read barriers through :func:`barriers`, which pairs each one
with twice its binomial standard error on the target's test examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from transferscope.analyses.pairs import PairName
from transferscope.analyses.results import Model, Skipped
from transferscope.analysis.interpolation import InterpolationResult
from transferscope.report.rules import barrier_noise, finite


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


PathKey = Literal["linear", "aligned", "curve"]


__all__ = [
    "Line",
    "PairRef",
    "PathKey",
    "SkippedPair",
    "barriers",
    "ok_pairs",
    "path_barriers",
]
