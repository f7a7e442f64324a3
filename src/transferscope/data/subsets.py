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
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with each class split in the same proportion, deterministic by seed."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    train, test = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return np.sort(train), np.sort(test)
