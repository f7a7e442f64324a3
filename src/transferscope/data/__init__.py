"""Data sources by name, and the shuffles of Neyshabur et al. 2020, §3.1."""

from transferscope.data.base import DataInfo, Splits, TensorImageDataset
from transferscope.data.registry import available, load
from transferscope.data.shuffle import block_shuffle, pixel_shuffle

# The sources register themselves with the registry when imported.
from transferscope.data import (  # noqa: F401  isort: skip
    chexpert,
    digits,
    domainnet,
    fashion_mnist,
    imagefolder,
    mosaic,
    rotated,
    torchvision_source,
)

__all__ = [
    "DataInfo",
    "Splits",
    "TensorImageDataset",
    "available",
    "block_shuffle",
    "load",
    "pixel_shuffle",
]
