"""fashion-rotated: Fashion-MNIST items P never saw, turned by quarter turns (mini preset).

A target between the source and the far targets: the same ten kinds of clothing, but every item
lies on its side (or upside down), so P's features fit it partly. It is built from the
Fashion-MNIST *test* split only, so P (trained on the train split) never saw these items; train
and test images come from disjoint halves of it. Quarter turns are exact (no interpolation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from transferscope.data import fashion_mnist
from transferscope.data.base import DataInfo, Splits, TensorImageDataset
from transferscope.data.registry import register
from transferscope.errors import TransferscopeError
from transferscope.options import PositiveInt


@register(
    "fashion-rotated",
    description="Fashion-MNIST items unseen by P, on their side: 10 classes",
)
def build(
    root: Path | None,
    seed: int,
    train_size: PositiveInt = 2000,
    test_size: PositiveInt = 1000,
    quarter_turns: int = 1,
) -> Splits:
    """Rotated items (1, 28, 28), 10 classes; ``root`` is where Fashion-MNIST is."""
    if quarter_turns % 4 == 0:
        raise TransferscopeError(
            f"fashion-rotated: quarter_turns={quarter_turns} leaves the items unturned; use 1, 2 or 3"
        )
    arrays = fashion_mnist.load_arrays(root)
    items, labels = arrays["test_images"], arrays["test_labels"].astype(np.int64)
    half = len(items) // 2
    for split, size in (("train", train_size), ("test", test_size)):
        if not 1 <= size <= half:
            raise TransferscopeError(
                f"fashion-rotated: {split}_size must be between 1 and {half} (half of the "
                f"Fashion-MNIST test split), got {size}"
            )
    # Disjoint halves of the test split for train and test: a test item is never trained on.
    order = np.random.default_rng(seed).permutation(len(items))
    pools = {"train": order[:half][:train_size], "test": order[half:][:test_size]}
    splits = {}
    for split, idx in pools.items():
        images = torch.rot90(fashion_mnist.to_tensor(items[idx]), quarter_turns, dims=(2, 3))
        splits[split] = TensorImageDataset(images.contiguous(), torch.from_numpy(labels[idx]))
    info = DataInfo(
        name="fashion-rotated",
        task="multiclass",
        num_outputs=10,
        image_shape=(1, 28, 28),
        class_names=fashion_mnist.CLASS_NAMES,
        mean=fashion_mnist.MEAN,
        std=fashion_mnist.STD,
    )
    return Splits(info=info, train=splits["train"], test=splits["test"])
