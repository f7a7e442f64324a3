"""Types shared by every data source: split metadata and the in-memory dataset.

A data source returns a :class:`Splits`: train / test (and dev where the data has one) datasets plus
:class:`DataInfo`. Every dataset yields ``(image, target)`` with ``image`` a normalised float tensor of
shape (C, H, W) and ``target`` an int64 class index (multiclass) or a float32 0/1 vector of length
``num_outputs`` (multilabel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

Task = Literal["multiclass", "multilabel"]


@dataclass(frozen=True)
class DataInfo:
    """What a model trained on this data must output and what its inputs look like."""

    name: str
    task: Task
    num_outputs: int
    image_shape: tuple[int, int, int]
    """(channels, height, width) of every image after the source's transforms."""
    class_names: tuple[str, ...]
    mean: tuple[float, ...] = field(default=())
    """Per-channel normalisation mean applied by the source (informational)."""
    std: tuple[float, ...] = field(default=())


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` are the same device when 0 is the current one."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (
        b.index if b.index is not None else current
    )


class TensorImageDataset(Dataset):
    """A dataset held as tensors: ``images`` (N, C, H, W) float32, ``targets`` (N,) or (N, K).

    Small data lives like this so the training loop indexes whole batches at once and does no
    per-sample PIL work; :func:`transferscope.training.loaders.batches` uses ``images`` directly.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.targets[index]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.images, self.targets))

    def to(self, device: torch.device | str) -> TensorImageDataset:
        """The same data on ``device`` (itself when already there)."""
        device = torch.device(device)
        if same_device(self.images.device, device):
            return self
        return TensorImageDataset(self.images.to(device), self.targets.to(device))


@dataclass
class Splits:
    """The splits of one data source plus its metadata."""

    info: DataInfo
    train: Dataset
    test: Dataset
    dev: Dataset | None = None

    def sizes(self) -> dict[str, int]:
        # torch's Dataset declares no __len__; every dataset of a Splits has one.
        out = {"train": len(self.train), "test": len(self.test)}  # type: ignore[arg-type]
        if self.dev is not None:
            out["dev"] = len(self.dev)  # type: ignore[arg-type]
        return out


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Channel-wise (x - mean) / std for a (N, C, H, W) float tensor."""
    m = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - m) / s


def dataset_targets(data: Any) -> np.ndarray | None:
    """The targets of a dataset without loading its images: ``data.targets`` (tensor, array or
    list) when it has one, through ``torch.utils.data.Subset`` too; None otherwise."""
    if isinstance(data, torch.utils.data.Subset):
        inner = dataset_targets(data.dataset)
        return None if inner is None else inner[np.asarray(data.indices)]
    targets = getattr(data, "targets", None)
    if targets is None:
        return None
    if isinstance(targets, torch.Tensor):
        return targets.detach().cpu().numpy()
    return np.asarray(targets)
