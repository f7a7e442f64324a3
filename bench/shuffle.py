"""Block shuffle of a 256x3x224x224 batch: one batched gather against a per-image Unfold/Fold loop
(the straightforward approach). Goal: ratio >= 10. Both produce the same tensor (checked here).

A block shuffle of float32 images is memory-bound: it cannot beat one copy of the batch
(``clone``), so ``ceiling`` = loop time / copy time is the most any implementation can reach on
the machine; the result reports both."""

from __future__ import annotations

import os
import statistics
import time

import torch
import torch.nn.functional as F

from transferscope.data.shuffle import block_shuffle, permutation

BATCH, SIDE, BLOCK, SEED, REPEATS = 256, 224, 16, 0, 5


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


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> dict:
    torch.set_num_threads(os.cpu_count() or 1)
    images = torch.randn(BATCH, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    expected = unfold_fold_loop(images, BLOCK, SEED)
    if not torch.equal(block_shuffle(images, BLOCK, SEED), expected):
        raise AssertionError("batched block shuffle differs from the Unfold/Fold reference")
    loop = _median_seconds(lambda: unfold_fold_loop(images, BLOCK, SEED), REPEATS)
    batched = _median_seconds(lambda: block_shuffle(images, BLOCK, SEED), REPEATS)
    copy = _median_seconds(images.clone, REPEATS)
    return {
        "name": "shuffle",
        "compared": "block_shuffle (one batched gather) vs per-image F.unfold/F.fold loop",
        "sizes": {
            "batch": [BATCH, 3, SIDE, SIDE],
            "block": BLOCK,
            "repeats": REPEATS,
            "threads": torch.get_num_threads(),
        },
        "loop_ms": round(loop * 1e3, 1),
        "batched_ms": round(batched * 1e3, 1),
        "copy_ms": round(copy * 1e3, 1),
        "ceiling": round(loop / copy, 2),
        "ratio": round(loop / batched, 2),
        "goal": ">= 10",
    }
