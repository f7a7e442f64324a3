"""Trainer overhead: images/s of :class:`Trainer` against a bare PyTorch loop (goal: ratio >= 0.95).

Same model (the mini preset's fixup-small), same in-memory tensors, same optimiser settings, same
number of steps, measured alternately in one process; medians over repeats.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from transferscope.config import TrainSpec
from transferscope.data.base import TensorImageDataset
from transferscope.models import build_model
from transferscope.training.trainer import Trainer

N, BATCH, REPEATS = 4096, 128, 5


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("fixup-small", num_outputs=10, in_channels=1)


def bare_loop(x: torch.Tensor, y: torch.Tensor) -> float:
    model = _model()  # built before the clock starts, as in trainer()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    start = time.perf_counter()
    perm = torch.randperm(len(x))
    for i in range(0, len(x), BATCH):
        idx = perm[i : i + BATCH]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    return len(x) / (time.perf_counter() - start)


def trainer(train: TensorImageDataset, test: TensorImageDataset) -> float:
    spec = TrainSpec(epochs=1, batch_size=BATCH, lr=0.05, schedule="cosine")
    model = _model()
    start = time.perf_counter()
    Trainer(spec, "multiclass", seed=0).fit(model, train, test)
    return len(train) / (time.perf_counter() - start)


def main() -> dict:
    # Other benchmarks in the same process may have pinned one thread; use every core here.
    torch.set_num_threads(os.cpu_count() or 1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    train = TensorImageDataset(x, y)
    # A tiny test set: the trainer evaluates at epoch 0 and 1; that is part of its cost.
    test = TensorImageDataset(x[:64], y[:64])
    bare, ours = [], []
    bare_loop(x[:512], y[:512])  # warm-up
    for _ in range(REPEATS):
        bare.append(bare_loop(x, y))
        ours.append(trainer(train, test))
    b, o = statistics.median(bare), statistics.median(ours)
    return {
        "name": "trainer_overhead",
        "compared": "Trainer.fit vs bare SGD loop, fixup-small, in-memory 28x28",
        "sizes": {
            "examples": N,
            "batch": BATCH,
            "repeats": REPEATS,
            "threads": torch.get_num_threads(),
        },
        "bare_images_per_s": round(b, 1),
        "trainer_images_per_s": round(o, 1),
        "ratio": round(o / b, 3),
        "goal": ">= 0.95",
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main()))
