"""scikit-learn's handwritten digits as a target far from Fashion-MNIST (mini preset).

1,797 real 8x8 digit scans (values 0..16), split deterministically and stratified by class,
upsampled bilinearly to ``image_size`` so they fit a model pre-trained on 28x28 images.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from transferscope.data.base import DataInfo, Splits, TensorImageDataset
from transferscope.data.registry import register
from transferscope.data.subsets import stratified_split
from transferscope.errors import TransferscopeError
from transferscope.options import PositiveInt


@register("digits", description="scikit-learn's bundled handwritten digits (1,797 images)")
def build(
    root: Path | None, seed: int, test_fraction: float = 0.3, image_size: PositiveInt = 28
) -> Splits:
    """Digits: about 1,258 train / 539 test images (1, image_size, image_size), 10 classes.

    Normalised with the train split's mean and std.
    """
    if not 0 < test_fraction < 1:
        raise TransferscopeError(f"digits: test_fraction must be in (0, 1), got {test_fraction}")
    scans, labels = load_arrays()
    images = torch.from_numpy(scans.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(
        images, size=(image_size, image_size), mode="bilinear", align_corners=False
    )
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    mean, std = images[train_idx].mean().item(), images[train_idx].std().item()
    images = (images - mean) / std
    targets = torch.from_numpy(labels)
    info = DataInfo(
        name="digits",
        task="multiclass",
        num_outputs=10,
        image_shape=(1, image_size, image_size),
        class_names=tuple(str(d) for d in range(10)),
        mean=(mean,),
        std=(std,),
    )
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return Splits(
        info=info,
        train=TensorImageDataset(images[tr], targets[tr]),
        test=TensorImageDataset(images[te], targets[te]),
    )


def load_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 scans (N, 8, 8) as float64 in 0..16 and their labels (N,) int64.

    Read from the CSV that scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``, 64 pixel
    columns then the label, as ``sklearn.datasets.load_digits`` reads it) without importing
    scikit-learn: its import takes ~1.8 s, paid by every process that trains on digits. Should a
    scikit-learn release move the file, ``load_digits`` itself is used.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise TransferscopeError(
            "digits: scikit-learn is not installed; it ships the data (pip install scikit-learn)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/digits.csv.gz"
    if not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target.astype(np.int64)
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
