"""fashion-mosaic: a CheXpert-like multi-label target built from Fashion-MNIST *test* images.

Each image is a 2x2 mosaic of four items, each downscaled to half the side; its labels say which of
5 chosen item classes appear (several may). It is scored by mean AUC, like CheXpert in the
paper's training setup. Only the Fashion-MNIST test split is used, so P never saw these items;
train mosaics and test mosaics draw from disjoint halves of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from transferscope.data import fashion_mnist
from transferscope.data.base import DataInfo, Splits, TensorImageDataset
from transferscope.data.registry import register
from transferscope.errors import TransferscopeError
from transferscope.options import PositiveInt

DEFAULT_CLASSES = (0, 1, 7, 8, 9)  # T-shirt/top, Trouser, Sneaker, Bag, Ankle boot


def make_mosaics(
    items: torch.Tensor, labels: np.ndarray, count: int, classes: tuple[int, ...], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build ``count`` mosaics from ``items`` (N, 1, H, W) with class ``labels`` (N,).

    Returns images (count, 1, H, W) and multi-hot targets (count, len(classes)) float32.
    Item i of mosaic j is ``items[choice[j, i]]``; the choice is deterministic by ``seed``.
    """
    rng = np.random.default_rng(seed)
    choice = rng.integers(0, len(items), size=(count, 4))
    small = F.avg_pool2d(items, 2)  # (N, 1, H/2, W/2)
    tiles = small[torch.from_numpy(choice)]  # (count, 4, 1, h, w)
    top = torch.cat([tiles[:, 0], tiles[:, 1]], dim=-1)
    bottom = torch.cat([tiles[:, 2], tiles[:, 3]], dim=-1)
    images = torch.cat([top, bottom], dim=-2)
    chosen = labels[choice]  # (count, 4)
    targets = np.stack([(chosen == c).any(axis=1) for c in classes], axis=1).astype(np.float32)
    return images, torch.from_numpy(targets)


@register(
    "fashion-mosaic",
    description="2x2 mosaics of Fashion-MNIST items: multi-label, mean AUC",
)
def build(
    root: Path | None,
    seed: int,
    train_size: PositiveInt = 4000,
    test_size: PositiveInt = 2000,
    classes: tuple[int, ...] | list[int] = DEFAULT_CLASSES,
) -> Splits:
    """Multi-label mosaics (1, 28, 28); ``root`` is where Fashion-MNIST is (see fashion_mnist)."""
    classes = tuple(int(c) for c in classes)
    if not classes or any(not 0 <= c < 10 for c in classes) or len(set(classes)) != len(classes):
        raise TransferscopeError(
            f"fashion-mosaic: classes must be distinct Fashion-MNIST class indices 0..9, got {classes}"
        )
    arrays = fashion_mnist.load_arrays(root)
    items = fashion_mnist.to_tensor(arrays["test_images"])
    labels = arrays["test_labels"].astype(np.int64)
    # Disjoint item pools for train and test mosaics: a test mosaic never reuses a train item.
    order = np.random.default_rng(seed).permutation(len(items))
    half = len(items) // 2
    pools = {"train": order[:half], "test": order[half:]}
    splits = {}
    for i, (split, size) in enumerate((("train", train_size), ("test", test_size))):
        idx = torch.from_numpy(pools[split])
        images, targets = make_mosaics(
            items[idx], labels[pools[split]], size, classes, seed + 1 + i
        )
        splits[split] = TensorImageDataset(images, targets)
    info = DataInfo(
        name="fashion-mosaic",
        task="multilabel",
        num_outputs=len(classes),
        image_shape=(1, 28, 28),
        class_names=tuple(fashion_mnist.CLASS_NAMES[c] for c in classes),
        mean=fashion_mnist.MEAN,
        std=fashion_mnist.STD,
    )
    return Splits(info=info, train=splits["train"], test=splits["test"])
