"""Streaming image datasets read from files on disk, shared by the folder-based sources.

The large sources (``imagefolder``, ``domainnet``, ``chexpert``) never hold pixels in memory: a
:class:`FileImageDataset` keeps a list of paths and targets and opens each image with PIL when it is
indexed, so it works with a multi-worker ``DataLoader`` (everything here pickles). A file PIL cannot
decode raises :class:`~transferscope.errors.TransferscopeError` naming the file rather than a bare
PIL traceback from inside a worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

from transferscope.errors import TransferscopeError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
GRAY_MEAN: tuple[float] = (0.5,)
GRAY_STD: tuple[float] = (0.5,)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

PilMode = Literal["RGB", "L"]


def normalization(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for ``channels``: ImageNet statistics for 3 channels, 0.5 / 0.5 for 1.

    ImageNet statistics because every full-scale setup fine-tunes an ImageNet-pretrained P
    (PAPER.md, "Paper training setup").
    """
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    if channels == 1:
        return GRAY_MEAN, GRAY_STD
    raise TransferscopeError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")


def pil_mode(channels: int) -> PilMode:
    """The PIL mode images are converted to before the transforms: 'L' for 1 channel, else 'RGB'."""
    normalization(channels)  # validates
    return "L" if channels == 1 else "RGB"


def load_image(path: str | os.PathLike[str], mode: PilMode) -> Image.Image:
    """Open ``path`` and decode it fully in ``mode``.

    Raises:
        TransferscopeError: the file is missing, truncated or not an image; names the file.
    """
    try:
        with Image.open(path) as img:
            # convert() forces the decode, so a truncated file fails here and not later in a
            # transform with a message that no longer names the file.
            return img.convert(mode)
    except FileNotFoundError as exc:
        raise TransferscopeError(
            f"image file not found: {path} (was it moved or deleted after the dataset was built?)"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise TransferscopeError(
            f"cannot read image {path}: {exc}; the file is corrupt or truncated - "
            "re-extract or delete it (and its line in any split file)"
        ) from exc


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has an image extension (case-insensitive) and is not a hidden file."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


class FileImageDataset(Dataset):
    """Images streamed from disk: item ``i`` is ``(transform(PIL image), targets[i])``.

    Args:
        paths: one image file per sample.
        targets: (N,) int64 class indices (multiclass) or (N, K) float32 0/1 labels (multilabel).
        transform: PIL image -> float32 tensor (C, H, W), already normalised.
        mode: PIL mode images are converted to before ``transform`` ('RGB' or 'L').

    ``paths`` and ``targets`` are public so analyses can map test indices back to files (e.g. to
    show the examples behind the "uncommon mistakes" of PAPER.md section 2).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        targets: torch.Tensor,
        transform: Callable[[Image.Image], torch.Tensor],
        mode: PilMode = "RGB",
    ) -> None:
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} paths but {len(targets)} targets")
        # Plain strings pickle small and fast when a DataLoader ships the dataset to workers.
        self.paths: list[str] = [os.fspath(p) for p in paths]
        self.targets = targets
        self.transform = transform
        self.mode: PilMode = mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.transform(load_image(self.paths[index], self.mode))
        return image, self.targets[index]


def classification_transform(
    image_size: int, channels: int, *, train: bool, augment: bool
) -> v2.Compose:
    """The standard ImageNet-style pipeline (PAPER.md, "Paper training setup", DomainNet).

    Training with ``augment``: RandomResizedCrop(image_size) + horizontal flip. Otherwise (eval, or
    training without augmentation): Resize(int(image_size * 256 / 224)) + CenterCrop(image_size),
    i.e. Resize 256 + CenterCrop 224 at the paper's size. Output: float32 (channels, image_size,
    image_size) normalised with :func:`normalization`.
    """
    if image_size < 1:
        raise TransferscopeError(f"image_size must be a positive pixel count, got {image_size}")
    mean, std = normalization(channels)
    if train and augment:
        geometry: list[Callable] = [
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:
        geometry = [
            v2.Resize(int(image_size * 256 / 224), antialias=True),
            v2.CenterCrop(image_size),
        ]
    return v2.Compose(
        [
            *geometry,
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def require_root(root: Path | None, source: str, layout: str) -> Path:
    """``root`` as an existing directory, or an error that shows the layout ``source`` expects."""
    if root is None:
        raise TransferscopeError(
            f"data source '{source}' needs root: the directory holding the data ({layout})"
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TransferscopeError(
            f"data source '{source}': root {root} is not a directory; expected {layout}"
        )
    return root
