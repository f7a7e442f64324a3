"""Block shuffle of a 256x3x224x224 float32 batch, against two baselines measured here.

- ``vs_copy`` (the goal, >= 0.7): a block shuffle is one read and one write of every value, so
  one plain copy of the batch is the speed limit. Both write into a buffer allocated once (a
  fresh 150 MB tensor per call would time the kernel's page faults as much as the copy).
- ``vs_loop``: the straightforward approach, a per-image ``F.unfold`` / ``F.fold`` loop.

All three produce the same tensor (checked here). ``alloc_ms`` and ``clone_ms`` are the same
shuffle and copy returning a new tensor, for reference."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from transferscope.data.shuffle import block_shuffle, permutation

BATCH, SIDE, BLOCK, SEED, REPEATS = 256, 224, 16, 0, 7


def unfold_fold_loop(images: torch.Tensor, block: int, seed: int) -> torch.Tensor:
    """Each image cut into blocks with ``F.unfold``, the block columns permuted, put back with
    ``F.fold``: one image at a time."""
    _, _, h, w = images.shape
    perm = permutation((h // block) * (w // block), seed)
    out = torch.empty_like(images)
    for i, image in enumerate(images):
        cols = F.unfold(image[None], kernel_size=block, stride=block)  # (1, C*b*b, L)
        out[i] = F.fold(cols[:, :, perm], (h, w), kernel_size=block, stride=block)[0]
    return out


def _medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, measured in turns (round after round), so that a change
    in the machine's load affects every function alike."""
    for fn in fns.values():
        fn()  # warm-up: caches, the shuffle's index
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> dict:
    torch.set_num_threads(os.cpu_count() or 1)
    images = torch.randn(BATCH, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    buffer = torch.empty_like(images)
    expected = unfold_fold_loop(images, BLOCK, SEED)
    if not (
        torch.equal(block_shuffle(images, BLOCK, SEED), expected)
        and torch.equal(block_shuffle(images, BLOCK, SEED, out=buffer), expected)
    ):
        raise AssertionError("batched block shuffle differs from the Unfold/Fold reference")
    medians = _medians(
        {
            "loop": lambda: unfold_fold_loop(images, BLOCK, SEED),
            "shuffle": lambda: block_shuffle(images, BLOCK, SEED, out=buffer),
            "copy": lambda: buffer.copy_(images),
            "alloc": lambda: block_shuffle(images, BLOCK, SEED),
            "clone": images.clone,
        },
        REPEATS,
    )
    loop, shuffle, copy = medians["loop"], medians["shuffle"], medians["copy"]
    alloc, clone = medians["alloc"], medians["clone"]
    return {
        "name": "shuffle",
        "compared": "block_shuffle into a buffer vs one copy of the batch into a buffer "
        "(and vs a per-image F.unfold/F.fold loop)",
        "sizes": {
            "batch": [BATCH, 3, SIDE, SIDE],
            "block": BLOCK,
            "repeats": REPEATS,
            "timing": "median, the functions measured in turns",
            "threads": torch.get_num_threads(),
        },
        "shuffle_ms": round(shuffle * 1e3, 1),
        "copy_ms": round(copy * 1e3, 1),
        "loop_ms": round(loop * 1e3, 1),
        "alloc_ms": round(alloc * 1e3, 1),
        "clone_ms": round(clone * 1e3, 1),
        "vs_loop": round(loop / shuffle, 2),
        "ratio": round(copy / shuffle, 3),
        "goal": ">= 0.7 of a copy's speed",
    }
