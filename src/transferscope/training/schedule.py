"""Learning-rate schedules as pure functions of the (fractional) epoch.

The learning rate is recomputed from the step at every step, so resuming a run needs no scheduler
state: the same step always gets the same rate.
"""

from __future__ import annotations

import math

from transferscope.config import TrainSpec


def lr_at(spec: TrainSpec, epoch: float) -> float:
    """Learning rate at fractional ``epoch`` (0 = start, ``spec.epochs`` = end) of ``spec``.

    constant: the base rate; multistep: times ``gamma`` for every milestone <= epoch; cosine: half
    a cosine from the base rate down to 0 at the last epoch. With ``warmup_epochs`` w > 0 the rate
    first rises linearly from 0 (epoch 0) to the schedule's (epoch w), and the cosine runs over
    the epochs after the warmup, as in MAE's and BEiT's fine-tuning (He et al. 2022, Bao et al.
    2022); multistep milestones stay where they are.
    """
    base = spec.effective_lr
    warmup = spec.warmup_epochs
    factor = min(epoch / warmup, 1.0) if warmup > 0 else 1.0
    if spec.schedule == "constant":
        return base * factor
    if spec.schedule == "multistep":
        return base * spec.gamma ** sum(1 for m in spec.milestones if epoch >= m) * factor
    if spec.schedule == "cosine":
        if spec.epochs == 0:
            return base
        if warmup > 0:
            rest = spec.epochs - warmup
            progress = min(max((epoch - warmup) / rest, 0.0), 1.0) if rest > 0 else 0.0
            return base * 0.5 * (1 + math.cos(math.pi * progress)) * factor
        return base * 0.5 * (1 + math.cos(math.pi * min(epoch / spec.epochs, 1.0)))
    raise ValueError(f"unknown schedule {spec.schedule!r}")
