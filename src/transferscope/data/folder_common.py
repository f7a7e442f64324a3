"""Streaming image datasets read from files on disk, shared by the folder-based sources.

The large sources (``imagefolder``, ``domainnet``, ``chexpert``) never hold pixels in memory: a
:class:`FileImageDataset` keeps a list of paths and targets and opens each image with PIL when it is
indexed, so it works with a multi-worker ``DataLoader`` (everything here pickles). A file PIL cannot
decode raises :class:`~transferscope.errors.TransferscopeError` naming the file rather than a bare
PIL traceback from inside a worker.

Unreadable images stop a study by default (:class:`BadImageError`, naming the file). With
``skip_bad_images`` (``transferscope run --skip-bad-images``) :func:`drop_bad_images` instead
decodes every file of the streamed splits once, up front, and leaves the unreadable ones out, so
every run, epoch and analysis sees the same images and test indices stay aligned across runs.
The probe costs one decoding pass over the data (threads, PIL releases the GIL while decoding);
it is done once per process and data source (the executor's data cache keeps the result).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from transferscope.data.base import Splits
from transferscope.errors import TransferscopeError

if TYPE_CHECKING:
    from torchvision.transforms import v2

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
    (the paper's training setup, docs/methods.md).
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


class BadImageError(TransferscopeError):
    """An image file is missing, truncated or not an image. Stops the study (the data is wrong)."""


SKIP_HINT = "delete or replace it, or rerun with --skip-bad-images to leave unreadable images out"


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
    except Image.DecompressionBombError as exc:
        # PIL refuses images of more than 2 x Image.MAX_IMAGE_PIXELS pixels before decoding
        # them (a small file can hold a huge image that would exhaust memory).
        raise BadImageError(
            f"image {path} is too large to decode: {str(exc).rstrip('.')}; resize it, {SKIP_HINT} (or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if such images are meant to be read)"
        ) from exc
    except FileNotFoundError as exc:
        raise BadImageError(
            f"image file not found: {path} (was it moved or deleted after the dataset was built?); "
            f"{SKIP_HINT}"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(
            f"cannot read image {path}: {exc}; the file is corrupt or truncated - "
            f"re-extract it, {SKIP_HINT}"
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
    show the examples behind the "uncommon mistakes" of Neyshabur et al. 2020, §3.2).
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

    def without(self, paths: set[str]) -> FileImageDataset:
        """A copy without the samples whose file is in ``paths`` (same order otherwise)."""
        keep = [i for i, p in enumerate(self.paths) if p not in paths]
        return FileImageDataset(
            [self.paths[i] for i in keep], self.targets[keep], self.transform, self.mode
        )


def _probe(path: str, mode: PilMode) -> str | None:
    try:
        load_image(path, mode)
    except BadImageError as e:
        return str(e).split("; ")[0]
    return None


def find_bad_images(dataset: FileImageDataset, threads: int | None = None) -> dict[str, str]:
    """Decode every file of ``dataset`` once; returns {path: reason} for those that fail."""
    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads) as pool:
        reasons = pool.map(_probe, dataset.paths, [dataset.mode] * len(dataset.paths))
        return {p: r for p, r in zip(dataset.paths, reasons, strict=True) if r is not None}


def drop_bad_images(splits: Splits) -> tuple[Splits, list[dict[str, str]]]:
    """``splits`` without unreadable images, and what was left out: [{split, path, error}].

    Only streamed splits (:class:`FileImageDataset`) are probed; in-memory data was decoded when it
    was loaded. A split left with no images is an error naming it.
    """
    skipped: list[dict[str, str]] = []
    parts: dict[str, Any] = {}
    for name in ("train", "test", "dev"):
        data = getattr(splits, name)
        if isinstance(data, FileImageDataset):
            bad = find_bad_images(data)
            skipped += [{"split": name, "path": p, "error": r} for p, r in sorted(bad.items())]
            if bad:
                data = data.without(set(bad))
                if len(data) == 0:
                    raise TransferscopeError(
                        f"{splits.info.name}: every image of the {name} split is unreadable "
                        f"(first: {min(bad)}); check the data root"
                    )
        parts[name] = data
    return dataclasses.replace(splits, **parts), skipped


def classification_transform(
    image_size: int, channels: int, *, train: bool, augment: bool
) -> v2.Compose:
    """The standard ImageNet-style pipeline (the paper's DomainNet setup).

    Training with ``augment``: RandomResizedCrop(image_size) + horizontal flip. Otherwise (eval, or
    training without augmentation): Resize(int(image_size * 256 / 224)) + CenterCrop(image_size),
    i.e. Resize 256 + CenterCrop 224 at the paper's size. Output: float32 (channels, image_size,
    image_size) normalised with :func:`normalization`.
    """
    from torchvision.transforms import v2  # here: importing torchvision takes ~2.5 s

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
