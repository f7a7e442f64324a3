"""Source family ``torchvision:<Name>``: a classification dataset of ``torchvision.datasets``.

``torchvision:CIFAR10`` builds ``torchvision.datasets.CIFAR10(root, train=True/False,
download=False)``; datasets that take ``split`` instead get ``split="train"`` (or
``"trainval"``) and ``split="test"`` (or ``"val"``). The data must already be under ``root`` in
torchvision's own layout: transferscope never downloads at run time (fetch it once beforehand,
e.g. with torchvision's ``download=True``, on a machine with network access).

Small data (at most 200k training images of at most 64 px a side, and at most 2 GiB as float32) is
converted once into :class:`~transferscope.data.base.TensorImageDataset`, normalised with the
training split's own per-channel mean and std; anything larger streams through the torchvision
dataset with ImageNet normalisation (0.5 / 0.5 for one channel) and Resize + CenterCrop.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from transferscope.data.base import DataInfo, Splits, TensorImageDataset, normalize
from transferscope.data.folder_common import normalization
from transferscope.data.registry import register
from transferscope.errors import TransferscopeError, unknown_name
from transferscope.options import PositiveInt

MAX_IN_MEMORY_IMAGES = 200_000
MAX_IN_MEMORY_SIDE = 64
MAX_IN_MEMORY_BYTES = 2 * 1024**3
_NOT_CLASSIFICATION = frozenset({"VisionDataset", "DatasetFolder", "ImageFolder", "FakeData"})
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights PIL's convert("L") uses


class _Base(Protocol):
    """A ``torchvision.datasets`` dataset as this module reads it: sized and indexed (torch's
    ``Dataset`` declares no ``__len__``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


def _torchvision() -> tuple[Any, Any]:
    """``(torchvision.datasets, torchvision.transforms.v2)``, imported on first use: importing
    torchvision also imports torch._dynamo (~2.5 s), and every run of every study would pay it
    (this module is loaded with the registry) while only this source needs it."""
    import torchvision.datasets as tvd
    from torchvision.transforms import v2

    return tvd, v2


def dataset_names() -> list[str]:
    """Names of the dataset classes in ``torchvision.datasets`` (classification or not)."""
    tvd, _ = _torchvision()
    return sorted(
        name
        for name in dir(tvd)
        if not name.startswith("_")
        and name not in _NOT_CLASSIFICATION
        and isinstance(getattr(tvd, name), type)
        and issubclass(getattr(tvd, name), Dataset)
    )


def _instantiate(cls: type[Any], root: Path, train: bool) -> _Base:
    params = inspect.signature(cls.__init__).parameters
    extra: dict[str, Any] = {"download": False} if "download" in params else {}
    if "train" in params:
        return cls(str(root), train=train, **extra)
    if "split" in params:
        candidates = ("train", "trainval") if train else ("test", "val")
        last: ValueError | None = None
        for split in candidates:
            try:
                return cls(str(root), split=split, **extra)
            except ValueError as exc:
                # verify_str_arg rejects an unknown split name before touching the disk.
                if "split" not in str(exc):
                    raise
                last = exc
        raise TransferscopeError(
            f"torchvision:{cls.__name__} has no '{candidates[0]}' or '{candidates[1]}' split "
            f"({last}); use the imagefolder source with your own split instead"
        )
    raise TransferscopeError(
        f"torchvision:{cls.__name__} takes neither 'train' nor 'split', so transferscope cannot "
        "find its train and test splits; use the imagefolder source instead"
    )


def _open(name: str, root: Path, train: bool) -> _Base:
    cls = getattr(_torchvision()[0], name)
    try:
        return _instantiate(cls, root, train)
    except TransferscopeError:
        raise
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        raise TransferscopeError(
            f"torchvision:{name}: data not found under {root} ({exc}). transferscope never "
            f"downloads at run time: fetch it once beforehand, e.g. "
            f"torchvision.datasets.{name}('{root}', download=True), so that root holds "
            "torchvision's layout for this dataset"
        ) from exc
    except TypeError as exc:
        raise TransferscopeError(
            f"torchvision:{name} needs arguments transferscope does not pass ({exc}); "
            "it is not a plain classification dataset - use the imagefolder source instead"
        ) from exc


def _target_array(ds: _Base) -> np.ndarray | None:
    for attr in ("targets", "labels", "_labels"):
        value = getattr(ds, attr, None)
        if value is not None:
            arr = np.asarray(value)
            if arr.ndim == 1 and len(arr) == len(ds) and np.issubdtype(arr.dtype, np.integer):
                return arr.astype(np.int64)
    samples = getattr(ds, "samples", None) or getattr(ds, "_samples", None)
    if samples is not None and len(samples) == len(ds):
        try:
            return np.asarray([int(s[1]) for s in samples], dtype=np.int64)
        except (TypeError, ValueError, IndexError):
            return None
    return None


def _image_tensor(image: Any, mode: str) -> torch.Tensor:
    """A PIL image (or array) as uint8 (C, H, W) in ``mode`` ('L' or 'RGB')."""
    _, v2 = _torchvision()
    if not isinstance(image, Image.Image):
        image = v2.functional.to_pil_image(image)
    return v2.functional.pil_to_tensor(image.convert(mode))


def _as_int(target: Any, name: str) -> int:
    try:
        return int(target)
    except (TypeError, ValueError) as exc:
        raise TransferscopeError(
            f"torchvision:{name} targets are not class indices (got {type(target).__name__}); "
            "only classification datasets are supported"
        ) from exc


def _fast_arrays(ds: _Base) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(uint8 (N, C, H, W), int64 (N,)) straight from ``ds.data`` when its layout is unambiguous."""
    data = getattr(ds, "data", None)
    targets = _target_array(ds)
    if data is None or targets is None:
        return None
    arr = torch.as_tensor(np.asarray(data))
    if arr.dtype != torch.uint8 or len(arr) != len(ds):
        return None
    if arr.ndim == 3:
        arr = arr.unsqueeze(1)
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        arr = arr.permute(0, 3, 1, 2)
    elif not (arr.ndim == 4 and arr.shape[1] in (1, 3)):
        return None
    return arr.contiguous(), torch.from_numpy(targets)


def _to_tensors(ds: _Base, name: str, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, channels, H, W) images and int64 (N,) targets of a small dataset."""
    fast = _fast_arrays(ds)
    if fast is not None:
        images, targets = fast
    else:
        mode = "L" if channels == 1 else "RGB"
        first = _image_tensor(ds[0][0], mode)
        images = torch.empty((len(ds), *first.shape), dtype=torch.uint8)
        target_list = []
        for i in range(len(ds)):
            image, target = ds[i]
            tensor = _image_tensor(image, mode)
            if tensor.shape != first.shape:
                resize = _torchvision()[1].functional.resize
                tensor = resize(tensor, list(first.shape[1:]), antialias=True)
            images[i] = tensor
            target_list.append(_as_int(target, name))
        targets = torch.tensor(target_list, dtype=torch.int64)
    if images.shape[1] != channels:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1).contiguous()
        else:
            luma = torch.tensor(_LUMA).view(1, 3, 1, 1)
            images = (images.float() * luma).sum(1, keepdim=True).round().clamp(0, 255)
            images = images.to(torch.uint8)
    return images, targets


def _float_images(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1], resized to ``size`` (H, W) when given."""
    out = images.float().div_(255.0)
    if size is not None and tuple(out.shape[2:]) != tuple(size):
        # Chunked so the antialiasing buffers of a 200k-image resize stay small.
        chunks = [
            F.interpolate(c, size=size, mode="bilinear", antialias=True) for c in out.split(4096)
        ]
        out = torch.cat(chunks).clamp_(0.0, 1.0)
    return out


def _native(ds: _Base, name: str) -> tuple[int, int, int]:
    """(channels, height, width) of the first training image, as torchvision returns it."""
    fast = _fast_arrays(ds)
    if fast is not None:
        c, h, w = fast[0].shape[1:]
        return int(c), int(h), int(w)
    image = ds[0][0]
    if not isinstance(image, Image.Image):
        raise TransferscopeError(
            f"torchvision:{name} does not return images (got {type(image).__name__}); "
            "only image classification datasets are supported"
        )
    return (1 if image.mode in ("L", "1", "I", "F", "I;16") else 3), image.height, image.width


class TorchvisionStream(Dataset):
    """A torchvision dataset mapped to ``(float32 (C, S, S) normalised, int64 target)``."""

    def __init__(self, base: _Base, name: str, channels: int, image_size: int) -> None:
        self.base = base
        self.name = name
        self.mode = "L" if channels == 1 else "RGB"
        mean, std = normalization(channels)
        _, v2 = _torchvision()
        self.transform = v2.Compose(
            [
                v2.Resize(image_size, antialias=True),
                v2.CenterCrop(image_size),
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(mean), list(std)),
            ]
        )

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.base[index]
        if not isinstance(image, Image.Image):
            image = _torchvision()[1].functional.to_pil_image(image)
        image = self.transform(image.convert(self.mode))
        return image, torch.tensor(_as_int(target, self.name), dtype=torch.int64)


def _class_names(ds: _Base, targets: np.ndarray | None, name: str) -> tuple[str, ...]:
    classes = getattr(ds, "classes", None)
    if (
        classes
        and all(isinstance(c, str) for c in classes)
        and (targets is None or int(targets.max()) < len(classes))
    ):
        return tuple(classes)
    if targets is None:
        raise TransferscopeError(
            f"torchvision:{name}: cannot tell how many classes it has (no 'classes' or "
            "'targets' attribute); use the imagefolder source instead"
        )
    return tuple(str(i) for i in range(int(targets.max()) + 1))


@register(
    "torchvision",
    prefix=True,
    description="a torchvision.datasets classification set already on disk",
)
def build(
    root: Path | None,
    seed: int,
    name: str,
    image_size: PositiveInt | None = None,
    channels: int | None = None,
) -> Splits:
    """Build train/test splits of ``torchvision.datasets.<name>`` from data already on disk.

    Args:
        root: the directory torchvision would download into (e.g. holding ``MNIST/raw/`` or
            ``cifar-10-batches-py/``).
        seed: unused (the splits are the dataset's own).
        name: the class name in ``torchvision.datasets`` (case-sensitive, e.g. 'CIFAR10').
        image_size: output side in pixels; None keeps the native size (in-memory data) or the
            first training image's shorter side (streamed data - set it explicitly when image
            sizes vary).
        channels: 1 or 3; None keeps the native channel count of the first training image.

    Returns:
        Splits with int64 scalar targets and no dev split; ``info.name`` is ``torchvision:<name>``.
    """
    names = dataset_names()
    if name not in names:
        raise unknown_name("torchvision dataset", name, names)
    if root is None:
        raise TransferscopeError(
            f"torchvision:{name} needs root: the directory that already holds the data in "
            "torchvision's layout (transferscope never downloads at run time)"
        )
    root = Path(root).expanduser()
    if channels is not None:
        normalization(channels)  # validates 1 or 3
    if image_size is not None and image_size < 1:
        raise TransferscopeError(f"image_size must be a positive pixel count, got {image_size}")

    train_base = _open(name, root, train=True)
    test_base = _open(name, root, train=False)
    if len(train_base) == 0 or len(test_base) == 0:
        raise TransferscopeError(f"torchvision:{name} under {root}: empty train or test split")
    native_c, native_h, native_w = _native(train_base, name)
    channels = channels or native_c
    out_side = image_size or max(native_h, native_w)
    in_memory = (
        len(train_base) <= MAX_IN_MEMORY_IMAGES
        and out_side <= MAX_IN_MEMORY_SIDE
        and (len(train_base) + len(test_base)) * channels * out_side**2 * 4 <= MAX_IN_MEMORY_BYTES
    )

    if in_memory:
        tr_u8, tr_targets = _to_tensors(train_base, name, channels)
        te_u8, te_targets = _to_tensors(test_base, name, channels)
        tr_images = _float_images(tr_u8, (image_size, image_size) if image_size else None)
        h, w = int(tr_images.shape[2]), int(tr_images.shape[3])
        te_images = _float_images(te_u8, (h, w))
        mean = tuple(float(m) for m in tr_images.mean(dim=(0, 2, 3)))
        # A constant channel would divide by zero; 1.0 leaves it merely centred.
        std = tuple(float(s) if s > 1e-6 else 1.0 for s in tr_images.std(dim=(0, 2, 3)))
        train: Dataset = TensorImageDataset(normalize(tr_images, mean, std), tr_targets)
        test: Dataset = TensorImageDataset(normalize(te_images, mean, std), te_targets)
        image_shape = (channels, h, w)
        all_targets = torch.cat([tr_targets, te_targets]).numpy()
        class_names = _class_names(train_base, all_targets, name)
    else:
        side = image_size or min(native_h, native_w)
        mean, std = normalization(channels)
        train = TorchvisionStream(train_base, name, channels, side)
        test = TorchvisionStream(test_base, name, channels, side)
        image_shape = (channels, side, side)
        class_names = _class_names(train_base, _target_array(train_base), name)

    info = DataInfo(
        name=f"torchvision:{name}",
        task="multiclass",
        num_outputs=len(class_names),
        image_shape=image_shape,
        class_names=class_names,
        mean=mean,
        std=std,
    )
    return Splits(info=info, train=train, test=test)
