"""Batches for training and evaluation.

In-memory datasets (:class:`TensorImageDataset`) are sliced a whole batch at a time, which avoids
per-sample collation. Other datasets stream through a ``DataLoader`` with workers. The order of an
epoch is a pure function of (seed, epoch), so a run resumed in the middle of an epoch sees exactly
the batches an uninterrupted run would have.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from transferscope.data.base import TensorImageDataset
from transferscope.errors import TransferscopeError

BatchTransform = Callable[[torch.Tensor], torch.Tensor]


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``n`` examples for ``epoch`` of a run with ``seed``."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)


def default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def iterate(
    dataset: Dataset,
    batch_size: int,
    *,
    order: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    transform: BatchTransform | None = None,
    num_workers: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, targets)`` batches on ``device`` following ``order`` (default: 0..N-1).

    ``transform`` is applied to each image batch on the device (e.g. a block shuffle).
    """
    device = torch.device(device)
    non_blocking = device.type == "cuda"
    if isinstance(dataset, TensorImageDataset):
        n = len(dataset)
        idx_all = order if order is not None else None
        for start in range(0, len(order) if order is not None else n, batch_size):
            if idx_all is None:
                x = dataset.images[start : start + batch_size]
                y = dataset.targets[start : start + batch_size]
            else:
                idx = idx_all[start : start + batch_size]
                x, y = dataset.images[idx], dataset.targets[idx]
            x, y = x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)
            yield (transform(x) if transform else x), y
        return
    workers = default_workers() if num_workers is None else num_workers
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order.tolist() if order is not None else None,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    try:
        for x, y in loader:
            x, y = x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)
            yield (transform(x) if transform else x), y
    except TransferscopeError as e:
        if workers == 0:
            raise
        # A worker's error comes back with its traceback in the message: keep the one line.
        raise type(e)(_worker_message(str(e))) from None


def _worker_message(text: str) -> str:
    """The original message of an exception re-raised from a DataLoader worker."""
    last = text.rstrip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last
