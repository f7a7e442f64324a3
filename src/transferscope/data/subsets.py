"""Seeded subsets and stratified splits of in-memory datasets."""

from __future__ import annotations

import numpy as np
import torch

from transferscope.data.base import TensorImageDataset


def random_subset(dataset: TensorImageDataset, size: int | None, seed: int) -> TensorImageDataset:
    """A seeded random subset of ``size`` examples (the whole dataset when size is None or larger)."""
    if size is None or size >= len(dataset):
        return dataset
    index = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:size])
    index_t = torch.from_numpy(index)
    return TensorImageDataset(dataset.images[index_t], dataset.targets[index_t])


def stratified_split(
    labels: list[int] | np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class random split of ``labels`` (N,): (train indices, test indices), each sorted.

    Each class with n >= 2 examples sends round(n * test_fraction) of them, clamped to [1, n - 1],
    to test, so every class appears in both splits; a class with one example stays in train. The
    choice depends only on ``labels`` and ``seed``.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = len(members)
        n_test = 0 if n < 2 else min(max(round(n * test_fraction), 1), n - 1)
        perm = rng.permutation(members)
        test.append(perm[:n_test])
        train.append(perm[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
