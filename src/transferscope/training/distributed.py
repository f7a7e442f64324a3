"""One run trained by several processes with DistributedDataParallel (``torchrun``).

Each process (rank) takes every ``world``-th example of each global batch of the single-process
run's seeded order, so the global batches and their order are those of ``Trainer`` in one process
with the same ``batch_size``; DDP averages the gradients. The loss of a rank is weighted by its
share of the global batch, which makes the averaged gradient the gradient of the global batch's
mean loss also for an epoch's last, smaller batch. Rank 0 alone writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from transferscope.errors import TransferscopeError


@dataclass(frozen=True)
class Distributed:
    """This process's place in a process group: ``rank`` of ``world`` processes."""

    rank: int
    world: int

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True in a process started by ``torchrun`` (it sets RANK, WORLD_SIZE, MASTER_ADDR...)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_process_group(device_name: str) -> tuple[Distributed, torch.device]:
    """Join torchrun's process group: nccl and one GPU per process on CUDA, gloo on the CPU.

    Args:
        device_name: the study's device ('auto', 'cpu', 'cuda', ...).

    Returns:
        this process's rank and world size, and the device it trains on.
    """
    wants_cuda = device_name.startswith("cuda") or (
        device_name == "auto" and torch.cuda.is_available()
    )
    if wants_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), dist.get_world_size()), device


def check_batch(batch_size: int, n_examples: int, world: int) -> None:
    """The global batch must split evenly, and an epoch's last batch must reach every rank."""
    if batch_size % world:
        raise TransferscopeError(
            f"batch_size {batch_size} does not split over {world} processes; "
            f"use a multiple of {world} or another --nproc-per-node"
        )
    last = n_examples % batch_size
    if 0 < last < world:
        raise TransferscopeError(
            f"the last batch of each epoch has {last} examples, fewer than the {world} processes; "
            "change batch_size or max_train_examples"
        )


def shard_order(order: torch.Tensor, batch_size: int, d: Distributed) -> torch.Tensor:
    """This rank's examples, batch after batch: every ``world``-th of each global batch.

    Args:
        order: (N,) example indices in the single-process run's order, starting at a batch edge.
        batch_size: the global batch size (a multiple of ``world``).

    Returns:
        (about N / world,) indices; consecutive chunks of ``batch_size // world`` are this rank's
        part of consecutive global batches (the last chunk may be shorter).
    """
    return torch.cat([b[d.rank :: d.world] for b in order.split(batch_size)])


def global_mean(value: float, n_local: int, n_global: int, device: torch.device) -> float:
    """The mean over the global batch of a per-rank mean ``value`` over ``n_local`` examples."""
    # nccl reduces tensors on the GPU only; float64 keeps the sum exact enough to compare runs.
    t = torch.tensor([value * n_local / n_global], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())
