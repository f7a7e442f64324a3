"""Linear interpolation between two solutions and the performance barrier (Neyshabur et al. 2020, §3.3).

θ(λ) = (1 − λ) θ_A + λ θ_B over every floating state entry (integer buffers such as BatchNorm's
``num_batches_tracked`` are taken from A), for λ in ``linspace(0, 1, num_points)``. At each λ the
test loss and metric are measured, and the barrier is reported as

    barrier_metric = max_λ [(1 − λ) m(A) + λ m(B) − m(θ(λ))]   (higher-is-better metric m)
    barrier_loss   = max_λ [ℓ(θ(λ)) − (1 − λ) ℓ(A) − λ ℓ(B)]   (the mirrored form for the loss)

both ≥ 0 since the endpoints contribute 0.

Efficiency: every evaluation batch is loaded once and all λ are evaluated on it through
:func:`torch.func.functional_call` with one state dict per λ, so a folder of JPEGs is decoded once
instead of ``num_points`` times. Per-λ state dicts are built once when they fit in
:data:`MAX_CACHED_BYTES`, otherwise re-interpolated (one ``lerp`` per entry) on every batch.

BatchNorm: the running statistics of an interpolated network are meaningless, so for a model with
running statistics they are recomputed at every λ (including λ = 0 and 1, so that all points are
measured the same way and barrier(A, A) = 0) on a training subset: statistics reset, momentum None
(a cumulative average over batches), forward passes in train mode under ``no_grad``. This is also
done all-λ-per-batch: one pass over the training subset updates one buffer dict per λ. Cost: one
extra pass over ``recalibration_examples`` training examples, ``num_points`` forwards per batch.
The recalibration itself is :mod:`transferscope.measures.batchnorm`; its public names are
re-exported here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import Dataset

from transferscope.data.base import Task
from transferscope.errors import TransferscopeError
from transferscope.measures.batchnorm import (
    RECALIBRATION_EXAMPLES,
    CumulativeBatchNorm,
    bn_buffers,
    has_running_stats,
    recalibrate_batchnorm,
    recalibrated_statistics,
    recalibration_plan,
    reset_stats,
    train_subset,
)
from transferscope.training.loaders import (
    BatchTransform,
    channels_last_batches,
    forward_in_chunks,
    iterate,
    seeded,
)
from transferscope.training.metrics import loss_fn, metric_name, score

# Above this many bytes for all per-λ state dicts together, interpolate on the fly per batch.
MAX_CACHED_BYTES = 512 * 1024 * 1024
_LISTED = 8


@dataclass
class InterpolationResult:
    """Loss and metric along θ(λ) and the two barriers.

    Attributes:
        lambdas: the λ values, (num_points,), from 0 (A) to 1 (B).
        loss: mean test loss at each λ (cross-entropy or BCE, nats).
        metric: accuracy or mean AUC at each λ.
        metric_name: 'accuracy' or 'mean_auc'.
        barrier_metric, barrier_loss: see the module docstring (metric units, nats).
        batchnorm_recalibrated: whether running statistics were recomputed at each λ.
    """

    lambdas: list[float]
    loss: list[float]
    metric: list[float]
    metric_name: str
    barrier_metric: float
    barrier_loss: float
    batchnorm_recalibrated: bool

    @classmethod
    def along(
        cls, points: list[float], loss: list[float], metric: list[float], task: Task, recal: bool
    ) -> InterpolationResult:
        """The result of a path measured at ``points``, with its barriers."""
        return cls(
            lambdas=points,
            loss=loss,
            metric=metric,
            metric_name=metric_name(task),
            barrier_metric=barrier(metric, points, higher_is_better=True),
            barrier_loss=barrier(loss, points, higher_is_better=False),
            batchnorm_recalibrated=recal,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def barrier(values: list[float], lambdas: list[float], higher_is_better: bool = True) -> float:
    """max_λ of the gap between the straight line joining the endpoints and the curve.

    ``values`` and ``lambdas`` are parallel lists with λ = 0 first and λ = 1 last. For a
    higher-is-better metric the gap is line − curve, for a loss curve − line. NaN if any value is.

    Example:
        >>> from transferscope.measures.interpolation import barrier
        >>> lambdas = [0.0, 0.5, 1.0]
        >>> round(barrier([0.9, 0.5, 0.8], lambdas), 4)  # accuracy dips 0.35 below the line
        0.35
        >>> round(barrier([0.9, 0.85, 0.8], lambdas), 4)  # on the straight line: no barrier
        0.0
        >>> round(barrier([0.2, 1.0, 0.4], lambdas, higher_is_better=False), 4)  # a loss bump
        0.7
    """
    if any(math.isnan(v) for v in values):
        return float("nan")
    a, b = values[0], values[-1]
    sign = 1.0 if higher_is_better else -1.0
    return max(
        0.0,
        max(sign * ((1 - lam) * a + lam * b - v) for lam, v in zip(lambdas, values, strict=True)),
    )


def check_compatible(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    names: tuple[str, str] = ("A", "B"),
) -> None:
    """Raise a TransferscopeError naming the keys or shapes on which two states disagree.

    Example:
        >>> from torch import nn
        >>> from transferscope.measures.interpolation import check_compatible
        >>> small, wide = nn.Linear(4, 3), nn.Linear(4, 5)
        >>> check_compatible(small.state_dict(), small.state_dict())  # fine: returns None
        >>> check_compatible(small.state_dict(), wide.state_dict())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        transferscope.errors.TransferscopeError: cannot interpolate: ...shapes differ: bias ...
    """
    only_a = sorted(set(state_a) - set(state_b))
    only_b = sorted(set(state_b) - set(state_a))
    shapes = sorted(
        f"{k} {tuple(state_a[k].shape)} vs {tuple(state_b[k].shape)}"
        for k in set(state_a) & set(state_b)
        if state_a[k].shape != state_b[k].shape
    )
    problems = []
    labelled = (
        (f"only in {names[0]}", only_a),
        (f"only in {names[1]}", only_b),
        ("shapes differ", shapes),
    )
    for label, items in labelled:
        if items:
            more = f" (+{len(items) - _LISTED} more)" if len(items) > _LISTED else ""
            problems.append(f"{label}: {', '.join(items[:_LISTED])}{more}")
    if problems:
        raise TransferscopeError(
            f"cannot interpolate: {names[0]} and {names[1]} are different architectures; "
            + "; ".join(problems)
        )


def interpolated_state(
    state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor], lam: float
) -> dict[str, Tensor]:
    """θ(λ) = (1 − λ) θ_A + λ θ_B for floating entries, A's value for the others (no check).

    Example:
        >>> import torch
        >>> from transferscope.measures.interpolation import interpolated_state
        >>> a = {"w": torch.tensor([0.0, 2.0]), "count": torch.tensor(3)}
        >>> b = {"w": torch.tensor([4.0, 6.0]), "count": torch.tensor(7)}
        >>> middle = interpolated_state(a, b, 0.5)
        >>> middle["w"].tolist(), int(middle["count"])  # integers come from A
        ([2.0, 4.0], 3)
        >>> torch.equal(interpolated_state(a, b, 0.0)["w"], a["w"])
        True
        >>> torch.equal(interpolated_state(a, b, 1.0)["w"], b["w"])
        True
    """
    return {
        k: torch.lerp(a, state_b[k], lam) if a.is_floating_point() else a
        for k, a in state_a.items()
    }


class _Accumulator:
    """Per-λ loss sums and correct counts (multiclass) or kept outputs (multilabel, for AUC)."""

    def __init__(self, task: Task, k: int) -> None:
        self.task = task
        self.loss_sum = [0.0] * k
        self.correct = [0] * k
        self.outputs: list[list[Tensor]] = [[] for _ in range(k)]
        self.targets: list[Tensor] = []
        self.n = 0

    def add_targets(self, y: Tensor) -> None:
        self.n += len(y)
        if self.task != "multiclass":
            self.targets.append(y.cpu())

    def add(self, i: int, out: Tensor, y: Tensor) -> None:
        out = out.float()
        if self.task == "multiclass":
            # Sums over examples so that batches of any size average correctly.
            self.loss_sum[i] += loss_fn(self.task, out, y).item() * len(y)
            self.correct[i] += int((out.argmax(1) == y).sum().item())
        else:
            self.outputs[i].append(out.cpu())

    def results(self) -> tuple[list[float], list[float]]:
        if self.n == 0:
            raise TransferscopeError("cannot interpolate on an empty evaluation set")
        if self.task == "multiclass":
            # float32 division, as training.metrics.accuracy, so endpoints match evaluate().
            n = torch.tensor(float(self.n))
            accuracy = [(torch.tensor(float(c)) / n).item() for c in self.correct]
            return [s / self.n for s in self.loss_sum], accuracy
        targets = torch.cat(self.targets)
        scores = [score(self.task, torch.cat(outs), targets) for outs in self.outputs]
        return [s.loss for s in scores], [s.metric for s in scores]


def _autocast(device: torch.device) -> Any:
    # The same mixed precision as training.metrics.predict, so that λ = 0 and 1 match evaluate().
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def interpolate(
    model: nn.Module,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    data: Dataset,
    num_points: int = 21,
    *,
    task: Task = "multiclass",
    train_data: Dataset | None = None,
    recalibrate_batchnorm: bool | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    recalibration_examples: int | None = RECALIBRATION_EXAMPLES,
    transform: BatchTransform | None = None,
    batched: bool = True,
    channels_last: bool = False,
) -> InterpolationResult:
    """Test loss and metric along the straight line from ``state_a`` to ``state_b`` (Neyshabur et al. 2020, §3.3).

    Args:
        model: the architecture of both states (its own weights are not used or changed).
        state_a, state_b: state dicts with the same keys and shapes (else a TransferscopeError
            naming the differences).
        data: the evaluation set (the target's test split), images (N, C, H, W).
        num_points: K, the number of λ values in ``linspace(0, 1, K)``.
        task: 'multiclass' (accuracy, cross-entropy) or 'multilabel' (mean AUC, BCE).
        train_data: training examples for BatchNorm recalibration.
        recalibrate_batchnorm: recompute running statistics at each λ; None = yes exactly when the
            model has BatchNorm running statistics (then ``train_data`` is required).
        device: where to evaluate.
        batch_size: evaluation and recalibration batch size.
        recalibration_examples: at most this many training examples for recalibration.
        transform: per-batch image transform applied to both data sets (e.g. a block shuffle).
        batched: True (default) evaluates all λ on each loaded batch; False makes one pass over
            the data per λ (the reference the tests and benchmark compare against).
        channels_last: run convolutions in channels-last memory format (about 1.8x faster
            forwards for small conv nets on CPU). Off by default: results then differ from
            :func:`transferscope.training.metrics.evaluate` in the last float digits, and models
            that ``.view`` conv outputs fail.

    Returns:
        An :class:`InterpolationResult`; ``loss[0]``/``metric[0]`` are A's and the last are B's.

    Example:
        >>> import torch
        >>> from transferscope.data.base import TensorImageDataset
        >>> from transferscope.measures.interpolation import interpolate
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> data = TensorImageDataset(torch.randn(16, 1, 2, 2), torch.randint(0, 3, (16,)))
        >>> a = net.state_dict()
        >>> same = interpolate(net, a, a, data, num_points=3)  # a state and itself
        >>> same.lambdas, same.barrier_metric, same.barrier_loss
        ([0.0, 0.5, 1.0], 0.0, 0.0)
        >>> result = interpolate(net, a, {k: -v for k, v in a.items()}, data, num_points=5)
        >>> result.metric_name, len(result.loss), result.barrier_loss >= 0
        ('accuracy', 5, True)
        >>> round(result.loss[2], 4)  # λ = 0.5: the zero network, uniform outputs, loss ln 3
        1.0986
    """
    if num_points < 2:
        raise TransferscopeError(f"num_points must be >= 2, got {num_points}")
    check_compatible(state_a, state_b)
    check_compatible(dict(model.state_dict()), state_a, ("the model", "A"))
    device = torch.device(device)
    bn_keys, recal = recalibration_plan(model, recalibrate_batchnorm, train_data, "interpolation")
    lambdas = [float(x) for x in torch.linspace(0, 1, num_points, dtype=torch.float64)]
    a = {k: v.detach().to(device) for k, v in state_a.items()}
    b = {k: v.detach().to(device) for k, v in state_b.items()}
    work = copy.deepcopy(model).to(device).eval()
    if channels_last:
        work = work.to(memory_format=torch.channels_last)
        a, b = _channels_last_state(a), _channels_last_state(b)
        transform = channels_last_batches(transform)
    if batched:
        # All λ per loaded batch: one recalibration pass (if any) and one evaluation pass.
        loss, metric = evaluate_path(
            work, lambda lam: interpolated_state(a, b, lam), lambdas, data, task,
            train_data if recal else None, bn_keys, device, batch_size, recalibration_examples,
            transform,
        )  # fmt: skip
    else:
        loss, metric = _per_point(
            work, a, b, lambdas, data, task, train_data if recal else None, device, batch_size,
            recalibration_examples, transform,
        )  # fmt: skip
    return InterpolationResult.along(lambdas, loss, metric, task, recal)


def _channels_last_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {
        k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
        for k, v in state.items()
    }


def _state_bytes(state: Mapping[str, Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in state.values())


@torch.no_grad()
def evaluate_path(
    model: nn.Module,
    state_at: Callable[[float], dict[str, Tensor]],
    points: list[float],
    data: Dataset,
    task: Task,
    train_data: Dataset | None,
    bn_keys: list[str],
    device: torch.device,
    batch_size: int,
    recalibration_examples: int | None,
    transform: BatchTransform | None = None,
) -> tuple[list[float], list[float]]:
    """Loss and metric at every point of a path in weight space, all points per loaded batch.

    ``state_at(t)`` gives the full state dict at path position ``t`` (on ``device``); with
    ``train_data`` the BatchNorm statistics ``bn_keys`` are recomputed at every point first (one
    pass over the training subset). Shared by linear interpolation and curves
    (:mod:`transferscope.measures.connectivity`), so both are measured the same way.

    Example:
        >>> import torch
        >>> from transferscope.data.base import TensorImageDataset
        >>> from transferscope.measures.interpolation import evaluate_path
        >>> from transferscope.training.metrics import evaluate
        >>> data = TensorImageDataset(torch.randn(12, 3, 1, 1), torch.randint(0, 2, (12,)))
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2))
        >>> def scaled(t):  # from the zero network (t = 0) to the model's own weights (t = 1)
        ...     return {k: t * v for k, v in net.state_dict().items()}
        >>> loss, metric = evaluate_path(
        ...     net, scaled, [0.0, 0.5, 1.0], data, "multiclass", None, [], torch.device("cpu"),
        ...     batch_size=5, recalibration_examples=None,
        ... )
        >>> round(loss[0], 4)  # zero logits for 2 classes: ln 2
        0.6931
        >>> metric[-1] == evaluate(net, data, "multiclass").metric  # t = 1 is the model itself
        True
    """
    k = len(points)
    first = state_at(points[0])
    cached = k * _state_bytes(first) <= MAX_CACHED_BYTES
    fixed = [first, *(state_at(t) for t in points[1:])] if cached else None
    a = first

    def states() -> Iterator[dict[str, Tensor]]:
        for i, t in enumerate(points):
            yield fixed[i] if fixed is not None else state_at(t)

    # Per-point running statistics: small (one vector per BatchNorm channel), always kept.
    stats: list[dict[str, Tensor]] = [{} for _ in points]
    if train_data is not None:
        for s in stats:
            s.update({key: a[key] for key in bn_keys})
            reset_stats(s, bn_keys)
        order = train_subset(train_data, recalibration_examples)
        model.train()
        with CumulativeBatchNorm(model), seeded(0):  # dropout in train mode: fixed draws
            for x, _ in iterate(
                train_data, batch_size, order=order, device=device, transform=transform
            ):
                for i, state in enumerate(states()):
                    # functional_call swaps these tensors in; BatchNorm updates them in place.
                    functional_call(model, {**state, **stats[i]}, (x,))
        model.eval()
    acc = _Accumulator(task, k)
    for x, y in iterate(data, batch_size, device=device, transform=transform):
        acc.add_targets(y)
        for i, state in enumerate(states()):
            with _autocast(device):
                out = forward_in_chunks(_bound(model, {**state, **stats[i]}), x)
            acc.add(i, out, y)
    return acc.results()


def _bound(model: nn.Module, state: dict[str, Tensor]) -> Callable[[Tensor], Tensor]:
    """``model`` as a function of its input with ``state`` swapped in."""
    return lambda x: functional_call(model, state, (x,))


@torch.no_grad()
def _per_point(
    model: nn.Module,
    a: dict[str, Tensor],
    b: dict[str, Tensor],
    lambdas: list[float],
    data: Dataset,
    task: Task,
    train_data: Dataset | None,
    device: torch.device,
    batch_size: int,
    recalibration_examples: int | None,
    transform: BatchTransform | None,
) -> tuple[list[float], list[float]]:
    """One data pass per λ with an ordinary model (load_state_dict, recalibrate, evaluate)."""
    losses, metrics = [], []
    for lam in lambdas:
        model.load_state_dict(interpolated_state(a, b, lam))
        if train_data is not None:
            recalibrate_batchnorm(
                model,
                train_data,
                batch_size=batch_size,
                max_examples=recalibration_examples,
                device=device,
                transform=transform,
            )
        model.eval()
        acc = _Accumulator(task, 1)
        for x, y in iterate(data, batch_size, device=device, transform=transform):
            acc.add_targets(y)
            with _autocast(device):
                acc.add(0, forward_in_chunks(model, x), y)
        (loss,), (metric,) = acc.results()
        losses.append(loss)
        metrics.append(metric)
    return losses, metrics


__all__ = [
    "InterpolationResult",
    "barrier",
    "bn_buffers",
    "check_compatible",
    "evaluate_path",
    "has_running_stats",
    "interpolate",
    "interpolated_state",
    "recalibrate_batchnorm",
    "recalibrated_statistics",
]
