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
    a cosine from the base rate down to 0 at the last epoch.
    """
    base = spec.effective_lr
    if spec.schedule == "constant":
        return base
    if spec.schedule == "multistep":
        return base * spec.gamma ** sum(1 for m in spec.milestones if epoch >= m)
    if spec.schedule == "cosine":
        if spec.epochs == 0:
            return base
        return base * 0.5 * (1 + math.cos(math.pi * min(epoch / spec.epochs, 1.0)))
    raise ValueError(f"unknown schedule {spec.schedule!r}")
