"""Fashion-MNIST from its four IDX files (the mini preset's source domain, Neyshabur et al. 2020).

Where the files are looked for, in order: the ``root`` given, ``$TRANSFERSCOPE_DATA`` (or
``$TRANSFERSCOPE_DATA/fashion-mnist``), Debian's ``dataset-fashion-mnist`` package
(/usr/share/datasets/fashion-mnist), torchvision's layout under the cache, then torchvision's
downloader when the machine is online. Plain and gzipped IDX files are both read.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from transferscope.data.base import DataInfo, Splits, TensorImageDataset, normalize
from transferscope.data.registry import register
from transferscope.data.subsets import random_subset
from transferscope.errors import TransferscopeError
from transferscope.options import PositiveInt

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MEAN, STD = (0.2860,), (0.3530,)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "transferscope"
_HOW_TO_GET = (
    "install Debian's package (apt-get install dataset-fashion-mnist), or put the four IDX files "
    f"({', '.join(FILES.values())}, optionally .gz) in a directory and pass --data-dir DIR "
    "or set TRANSFERSCOPE_DATA=DIR"
)

# IDX magic numbers: two zero bytes, the type code (0x08 = unsigned byte), the number of dims.
_MAGIC = {3: 0x00000803, 1: 0x00000801}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes with ``ndim`` dimensions; names the file on any error.

    Returns a uint8 array of shape (N,) for labels or (N, H, W) for images.
    """
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise TransferscopeError(f"cannot read IDX file '{path}': {e}; {_HOW_TO_GET}") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise TransferscopeError(
            f"IDX file '{path}' is truncated ({len(raw)} bytes); {_HOW_TO_GET}"
        )
    magic = int.from_bytes(raw[:4], "big")
    if magic != _MAGIC[ndim]:
        raise TransferscopeError(
            f"IDX file '{path}' has magic number {magic:#010x}, expected {_MAGIC[ndim]:#010x} "
            f"(a {ndim}-d unsigned-byte array); is it the right file?"
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise TransferscopeError(
            f"IDX file '{path}' holds {len(raw) - header} data bytes but its header "
            f"promises {expected} ({'x'.join(map(str, dims))}): the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        for folder in (directory, directory / "FashionMNIST" / "raw", directory / "fashion-mnist"):
            if (folder / name).is_file():
                return folder / name
    return None


def candidate_dirs(root: Path | None) -> list[Path]:
    """Directories searched for the IDX files, in order."""
    if root is not None:
        return [root]
    dirs = []
    if os.environ.get("TRANSFERSCOPE_DATA"):
        dirs.append(Path(os.environ["TRANSFERSCOPE_DATA"]))
    return [*dirs, DEBIAN_DIR, CACHE_DIR]


def locate(root: Path | None = None, download: bool = True) -> dict[str, Path]:
    """Paths of the four IDX files; downloads with torchvision only when nothing local exists."""
    for directory in candidate_dirs(root):
        found = {k: _find_file(directory, stem) for k, stem in FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
        if root is not None:
            missing = [FILES[k] for k, v in found.items() if v is None]
            raise TransferscopeError(
                f"Fashion-MNIST not found in '{root}': missing {', '.join(missing)}; {_HOW_TO_GET}"
            )
    if download and _try_download():
        return locate(CACHE_DIR, download=False)
    searched = ", ".join(str(d) for d in candidate_dirs(root))
    raise TransferscopeError(f"Fashion-MNIST not found (looked in {searched}); {_HOW_TO_GET}")


def _try_download() -> bool:
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(CACHE_DIR), train=True, download=True)
        FashionMNIST(str(CACHE_DIR), train=False, download=True)
    except Exception:
        # Offline or blocked: the caller explains how to provide the files.
        return False
    return True


def load_arrays(root: Path | None = None) -> dict[str, np.ndarray]:
    """The raw uint8 arrays: train/test images (N, 28, 28) and labels (N,)."""
    paths = locate(root)
    arrays = {k: read_idx(p, 3 if k.endswith("images") else 1) for k, p in paths.items()}
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise TransferscopeError(
                f"Fashion-MNIST {split}: {n_img} images in '{paths[f'{split}_images']}' but "
                f"{n_lab} labels in '{paths[f'{split}_labels']}'"
            )
    return arrays


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> normalised float32 (N, 1, H, W)."""
    x = torch.from_numpy(images.copy()).float().div_(255).unsqueeze(1)
    return normalize(x, MEAN, STD)


@register(
    "fashion-mnist",
    description="Fashion-MNIST: 70k 28x28 clothing images, 10 classes",
)
def build(
    root: Path | None,
    seed: int,
    train_size: PositiveInt | None = None,
    test_size: PositiveInt | None = None,
) -> Splits:
    """Fashion-MNIST: 60,000 train and 10,000 test 28x28 grayscale images, 10 classes.

    ``train_size`` / ``test_size`` keep a seeded random subset (for quick studies and tests).
    """
    arrays = load_arrays(root)
    train = TensorImageDataset(
        to_tensor(arrays["train_images"]), torch.from_numpy(arrays["train_labels"].astype(np.int64))
    )
    test = TensorImageDataset(
        to_tensor(arrays["test_images"]), torch.from_numpy(arrays["test_labels"].astype(np.int64))
    )
    info = DataInfo(
        name="fashion-mnist",
        task="multiclass",
        num_outputs=10,
        image_shape=(1, 28, 28),
        class_names=CLASS_NAMES,
        mean=MEAN,
        std=STD,
    )
    return Splits(
        info=info,
        train=random_subset(train, train_size, seed),
        test=random_subset(test, test_size, seed + 1),
    )
