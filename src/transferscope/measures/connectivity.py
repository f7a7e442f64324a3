"""Non-linear low-loss paths between two solutions: a trained quadratic Bezier curve.

Beyond the paper (Neyshabur et al. 2020, §3.3): the paper finds a barrier on the straight line between two RI-T
models and cites that any two minimisers can be joined by a non-linear low-loss path (Garipov,
Izmailov, Podoprikhin, Vetrov, Wilson 2018, "Loss Surfaces, Mode Connectivity, and Fast
Ensembling of DNNs"). This module fits such a path between the user's own models:

    θ(t) = (1 − t)² θ_A + 2 t (1 − t) θ_M + t² θ_B,   t ∈ [0, 1]

with the end points fixed and the control point θ_M trainable. θ_M starts at (θ_A + θ_B) / 2,
where the curve *is* the straight line; training draws one t ~ U(0, 1) per batch and takes an SGD
step on the training loss at θ(t) with respect to θ_M (Garipov et al., §3.2). The curve is then
evaluated like the line (:func:`transferscope.measures.interpolation.evaluate_path`): at K points
t, with BatchNorm statistics recomputed at each, and the same barrier definition.

What is curved: every floating *parameter*. BatchNorm running statistics are not parameters;
during training the batch's own statistics are used, at evaluation they are recomputed. Integer
buffers come from A.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import Dataset

from transferscope.data.base import Task
from transferscope.errors import TransferscopeError
from transferscope.measures.batchnorm import recalibration_plan, train_subset
from transferscope.measures.interpolation import (
    InterpolationResult,
    check_compatible,
    evaluate_path,
)
from transferscope.training.loaders import epoch_order, iterate, sample_seeds, step_seed
from transferscope.training.metrics import loss_fn


def bezier_state(
    state_a: Mapping[str, Tensor],
    control: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    t: float,
) -> dict[str, Tensor]:
    """θ(t) = (1−t)² θ_A + 2t(1−t) θ_M + t² θ_B for the keys of ``control``; A's other entries.

    Exactly θ_A at t = 0 and θ_B at t = 1 (the other coefficients are then exactly 0).

    Example:
        >>> import torch
        >>> from transferscope.measures.connectivity import bezier_state
        >>> a, b = {"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([4.0, 6.0])}
        >>> middle = {"w": (a["w"] + b["w"]) / 2}  # control point on the line: a straight path
        >>> [bezier_state(a, middle, b, t)["w"].tolist() for t in (0.0, 0.25, 1.0)]
        [[0.0, 2.0], [1.0, 3.0], [4.0, 6.0]]
        >>> bezier_state(a, {"w": torch.tensor([2.0, 8.0])}, b, 0.5)["w"].tolist()  # bent
        [2.0, 6.0]
    """
    wa, wm, wb = (1 - t) ** 2, 2 * t * (1 - t), t**2
    out = dict(state_a)
    for k, m in control.items():
        if t == 0.0:
            out[k] = state_a[k]
        elif t == 1.0:
            out[k] = state_b[k]
        else:
            out[k] = wa * state_a[k] + wm * m + wb * state_b[k]
    return out


@dataclass
class BezierCurve:
    """A quadratic Bezier curve in weight space between A and B.

    Attributes:
        state_a, state_b: the fixed end points (full state dicts).
        control: θ_M for every curved (floating parameter) entry.
        train_loss: mean training loss per epoch (nats), at the t drawn for each batch.

    Example:
        >>> import torch
        >>> from transferscope.measures.connectivity import BezierCurve
        >>> a, b = {"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([4.0, 6.0])}
        >>> curve = BezierCurve(a, {"w": torch.tensor([2.0, 4.0])}, b)
        >>> curve.state(0.0)["w"].tolist(), curve.state(1.0)["w"].tolist()  # the end points
        ([0.0, 2.0], [4.0, 6.0])
        >>> curve.state(0.5)["w"].tolist()
        [2.0, 4.0]
    """

    state_a: dict[str, Tensor]
    control: dict[str, Tensor]
    state_b: dict[str, Tensor]
    train_loss: list[float] = field(default_factory=list)

    def state(self, t: float) -> dict[str, Tensor]:
        """The full state dict at position ``t`` ∈ [0, 1]."""
        if not 0.0 <= t <= 1.0:
            raise TransferscopeError(f"a curve position t must be in [0, 1], got {t}")
        return bezier_state(self.state_a, self.control, self.state_b, t)


def _curved_keys(model: nn.Module, state: Mapping[str, Tensor]) -> list[str]:
    names = {name for name, _ in model.named_parameters()}
    return [k for k in state if k in names and state[k].is_floating_point()]


def fit_curve(
    model: nn.Module,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    data: Dataset,
    *,
    task: Task = "multiclass",
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    max_examples: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> BezierCurve:
    """Train the control point of a quadratic Bezier curve from A to B on ``data`` (Garipov 2018).

    Args:
        model: the architecture of both states (its own weights are not used or changed).
        state_a, state_b: the end points, state dicts of ``model``'s keys and shapes.
        data: training examples (image (C, H, W), target) for the curve.
        task: 'multiclass' (cross-entropy) or 'multilabel' (BCE).
        epochs: passes over the (subset of the) training data; 0 leaves the straight line.
        batch_size, lr, momentum, weight_decay: SGD on θ_M; a cosine schedule over all steps.
        max_examples: train on a fixed random subset of this many examples.
        seed: every random draw of the fit: the batch order, each streamed image's augmentation,
            the t drawn for each batch and torch's global generator at each step (dropout,
            stochastic depth), so the same inputs give the same curve (the caller's generator
            state is restored).
        device: where to train.

    Returns:
        A :class:`BezierCurve` (tensors on ``device``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from transferscope.data.base import TensorImageDataset
        >>> from transferscope.measures.connectivity import curve_summary, fit_curve
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> a = net.state_dict()
        >>> b = {k: torch.randn_like(v) for k, v in a.items()}
        >>> data = TensorImageDataset(torch.randn(16, 1, 2, 2), torch.randint(0, 3, (16,)))
        >>> line = fit_curve(net, a, b, data, epochs=0)  # no training: the straight line
        >>> round(curve_summary(line)["control_offset"], 4)
        0.0
        >>> curve = fit_curve(net, a, b, data, epochs=2, batch_size=8)
        >>> parameters = [name for name, _ in net.named_parameters()]
        >>> len(curve.train_loss), sorted(curve.control) == sorted(parameters)  # loss per epoch
        (2, True)
    """
    if epochs < 0:
        raise TransferscopeError(f"fit_curve: epochs must be >= 0, got {epochs}")
    check_compatible(state_a, state_b)
    check_compatible(dict(model.state_dict()), state_a, ("the model", "A"))
    device = torch.device(device)
    a = {k: v.detach().to(device) for k, v in state_a.items()}
    b = {k: v.detach().to(device) for k, v in state_b.items()}
    keys = _curved_keys(model, a)
    control = {k: ((a[k] + b[k]) / 2).clone().requires_grad_(True) for k in keys}
    # Running statistics move with every train-mode forward: give them a scratch copy.
    scratch = {k: v.clone() for k, v in a.items() if k not in control}
    work = copy.deepcopy(model).to(device).train()
    optimiser = torch.optim.SGD(
        list(control.values()), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    subset = train_subset(data, max_examples, seed)
    n = len(subset) if subset is not None else len(data)  # type: ignore[arg-type]
    steps = max(1, epochs * math.ceil(n / batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    g = torch.Generator().manual_seed(seed)
    losses = []
    step = 0
    with torch.random.fork_rng(devices=[]):
        for epoch in range(epochs):
            order = epoch_order(n, seed, epoch)
            if subset is not None:
                order = subset[order]
            draws = sample_seeds(len(order), seed, epoch)
            total, count = 0.0, 0
            for x, y in iterate(data, batch_size, order=order, device=device, seeds=draws):
                torch.manual_seed(step_seed(seed, step))
                step += 1
                t = float(torch.rand((), generator=g))
                state = bezier_state(a, control, b, t)
                out = functional_call(work, {**state, **scratch}, (x,))
                loss = loss_fn(task, out, y)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item() * len(y)
                count += len(y)
            losses.append(total / max(count, 1))
    return BezierCurve(a, {k: v.detach() for k, v in control.items()}, b, losses)


def evaluate_curve(
    model: nn.Module,
    curve: BezierCurve,
    data: Dataset,
    num_points: int = 11,
    *,
    task: Task = "multiclass",
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    train_data: Dataset | None = None,
    recalibrate_batchnorm: bool | None = None,
    recalibration_examples: int | None = 2000,
) -> InterpolationResult:
    """Test loss and metric at ``num_points`` positions t = linspace(0, 1) along ``curve``.

    Measured exactly as :func:`transferscope.measures.interpolation.interpolate` measures the
    straight line (BatchNorm statistics recomputed at every t on ``train_data``); the result's
    ``lambdas`` are the positions t and its barriers compare the curve with the straight line
    between the end points' values (Neyshabur et al. 2020, §3.3's definition).

    Example:
        >>> import torch
        >>> from transferscope.data.base import TensorImageDataset
        >>> from transferscope.measures.connectivity import BezierCurve, evaluate_curve
        >>> from transferscope.measures.interpolation import interpolate
        >>> data = TensorImageDataset(torch.randn(10, 2, 3, 1), torch.randint(0, 2, (10,)))
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2))
        >>> a, b = model.state_dict(), {k: -v for k, v in model.state_dict().items()}
        >>> bent = BezierCurve(a, {k: 4 * v for k, v in a.items()}, b)
        >>> result = evaluate_curve(model, bent, data, num_points=3)
        >>> result.lambdas, result.barrier_metric >= 0
        ([0.0, 0.5, 1.0], True)
        >>> line = interpolate(model, a, b, data, num_points=3)
        >>> result.loss[0] == line.loss[0], result.loss[-1] == line.loss[-1]  # same end points
        (True, True)
        >>> round(line.loss[1], 4), result.loss[1] == line.loss[1]  # only the middle differs
        (0.6931, False)
    """
    if num_points < 2:
        raise TransferscopeError(f"num_points must be >= 2, got {num_points}")
    device = torch.device(device)
    bn_keys, recal = recalibration_plan(model, recalibrate_batchnorm, train_data, "curve")
    moved = BezierCurve(
        {k: v.to(device) for k, v in curve.state_a.items()},
        {k: v.to(device) for k, v in curve.control.items()},
        {k: v.to(device) for k, v in curve.state_b.items()},
    )
    points = [float(x) for x in torch.linspace(0, 1, num_points, dtype=torch.float64)]
    work = copy.deepcopy(model).to(device).eval()
    loss, metric = evaluate_path(
        work, moved.state, points, data, task, train_data if recal else None, bn_keys, device,
        batch_size, recalibration_examples,
    )  # fmt: skip
    return InterpolationResult.along(points, loss, metric, task, recal)


def curve_summary(curve: BezierCurve) -> dict[str, Any]:
    """How far the trained control point moved off the straight line (L2, weight units).

    Example:
        >>> import torch
        >>> from transferscope.measures.connectivity import BezierCurve, curve_summary
        >>> a, b = {"w": torch.tensor([0.0, 0.0])}, {"w": torch.tensor([2.0, 2.0])}
        >>> curve_summary(BezierCurve(a, {"w": torch.tensor([1.0, 1.0])}, b))  # on the line
        {'train_loss': [], 'control_offset': 0.0}
        >>> curve_summary(BezierCurve(a, {"w": torch.tensor([4.0, 5.0])}, b))["control_offset"]
        5.0
    """
    moved = sum(
        float(
            (m.double() - (curve.state_a[k].double() + curve.state_b[k].double()) / 2).pow(2).sum()
        )
        for k, m in curve.control.items()
    )
    return {"train_loss": curve.train_loss, "control_offset": moved**0.5}


__all__ = ["BezierCurve", "bezier_state", "curve_summary", "evaluate_curve", "fit_curve"]
