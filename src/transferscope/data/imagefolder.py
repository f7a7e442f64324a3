"""Source ``imagefolder``: any folder-per-class image tree, streamed from disk.

Two layouts::

    ROOT/<class>/<image>                      one pool, split train/test here (stratified, by seed)
    ROOT/train/<class>/<image>                the user's own split; classes come from train/
    ROOT/test/<class>/<image>
    ROOT/val/<class>/<image>  (optional)      becomes the dev split (``valid/`` also accepted)

Images may sit in nested sub-folders of a class folder. This is the way to bring one's own target
(or source) data to a study; the transforms follow the paper's DomainNet
training setup.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from transferscope.data.base import DataInfo, Splits
from transferscope.data.folder_common import (
    IMAGE_EXTENSIONS,
    FileImageDataset,
    classification_transform,
    is_image_file,
    normalization,
    pil_mode,
    require_root,
)
from transferscope.data.registry import register
from transferscope.data.subsets import stratified_split
from transferscope.errors import TransferscopeError, TransferscopeWarning
from transferscope.options import PositiveInt

LAYOUT = "ROOT/<class>/<image>, or ROOT/train/<class>/<image> and ROOT/test/<class>/<image>"
_DEV_DIRS = ("val", "valid")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path, others: list[Path]) -> list[Path]:
    """The image files under ``folder``; other visible files are appended to ``others``.

    Sorted so the file order, and hence the seeded split, is the same on every filesystem.
    Hidden files (``.DS_Store``, editors' swap files) are passed over silently.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    others += [p for p in files if not is_image_file(p)]
    return [p for p in files if is_image_file(p)]


def _warn_not_images(others: list[Path]) -> None:
    """Say which files of the class folders are left out because they are not images."""
    if not others:
        return
    shown = ", ".join(str(p) for p in others[:5]) + (
        f" and {len(others) - 5} more" if len(others) > 5 else ""
    )
    warnings.warn(
        f"imagefolder: {len(others)} file(s) in class folders are not images and are left out: "
        f"{shown} (images end in {', '.join(sorted(IMAGE_EXTENSIONS))})",
        TransferscopeWarning,
        stacklevel=3,
    )


def scan_split(
    folder: Path, classes: list[str] | None = None
) -> tuple[list[Path], list[int], list[str]]:
    """Files and class indices under ``folder``/<class>/.

    Args:
        folder: directory with one sub-folder per class.
        classes: the class list to index against (a test/dev folder uses train's); None: the sorted
            sub-folder names of ``folder``, each of which must hold at least one image.

    Every class folder must hold at least one image: an empty one in a test folder would be a
    class the model is never scored on, silently. Files that are not images are left out with a
    :class:`~transferscope.errors.TransferscopeWarning` naming them.

    Returns:
        (paths, labels, classes).
    """
    dirs = _class_dirs(folder)
    if classes is None:
        if not dirs:
            raise TransferscopeError(
                f"imagefolder: {folder} has no class sub-folders; expected {LAYOUT}"
            )
        classes = [d.name for d in dirs]
    index = {name: i for i, name in enumerate(classes)}
    paths: list[Path] = []
    labels: list[int] = []
    others: list[Path] = []
    for d in dirs:
        if d.name not in index:
            raise TransferscopeError(
                f"imagefolder: class folder {d} does not exist in the training split; "
                f"every test/dev class must also be a training class ({', '.join(classes)})"
            )
        files = _images_in(d, others)
        if not files:
            raise TransferscopeError(
                f"imagefolder: class folder {d} holds no images "
                f"(extensions: .jpg, .jpeg, .png, ...); remove the folder or add images"
            )
        paths += files
        labels += [index[d.name]] * len(files)
    _warn_not_images(others)
    return paths, labels, classes


def _labels_tensor(labels: list[int] | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(labels, dtype=np.int64))


@register("imagefolder", description="your own images, one folder per class (or train/ and test/)")
def build(
    root: Path | None,
    seed: int,
    image_size: PositiveInt = 224,
    channels: int = 3,
    test_fraction: float = 0.2,
    augment: bool = True,
) -> Splits:
    """Build train/test (and dev) splits from a folder-per-class tree.

    Args:
        root: the tree (see the module docstring for both layouts).
        seed: fixes the stratified train/test split when ``root`` has no train/ and test/.
        image_size: output side in pixels; images are (channels, image_size, image_size).
        channels: 3 (RGB, ImageNet normalisation) or 1 (grayscale, mean 0.5 / std 0.5).
        test_fraction: share of each class held out for test when the split is made here; ignored
            when ``root`` has train/ and test/.
        augment: RandomResizedCrop + horizontal flip on train; False uses the eval transform
            (Resize(image_size * 256 / 224) + CenterCrop) for train too.

    Returns:
        Splits of :class:`FileImageDataset` with int64 scalar targets; dev only for ROOT/val/.
    """
    root = require_root(root, "imagefolder", LAYOUT)
    mode = pil_mode(channels)
    mean, std = normalization(channels)
    train_tf = classification_transform(image_size, channels, train=True, augment=augment)
    eval_tf = classification_transform(image_size, channels, train=False, augment=augment)

    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    dev = None
    if has_train and has_test:
        tr_paths, tr_labels, classes = scan_split(root / "train")
        te_paths, te_labels, _ = scan_split(root / "test", classes)
        train = FileImageDataset(tr_paths, _labels_tensor(tr_labels), train_tf, mode)
        test = FileImageDataset(te_paths, _labels_tensor(te_labels), eval_tf, mode)
        for name in _DEV_DIRS:
            if (root / name).is_dir():
                dv_paths, dv_labels, _ = scan_split(root / name, classes)
                dev = FileImageDataset(dv_paths, _labels_tensor(dv_labels), eval_tf, mode)
                break
    else:
        if has_train != has_test:
            present, absent = ("train", "test") if has_train else ("test", "train")
            raise TransferscopeError(
                f"imagefolder: {root} has a {present}/ folder but no {absent}/ folder; give both "
                f"(the split is then taken as is) or neither (every sub-folder is a class)"
            )
        if not 0.0 < test_fraction < 1.0:
            raise TransferscopeError(
                f"imagefolder: test_fraction must lie strictly between 0 and 1, got {test_fraction}"
            )
        paths, labels, classes = scan_split(root)
        tr_idx, te_idx = stratified_split(labels, test_fraction, seed)
        all_labels = np.asarray(labels, dtype=np.int64)
        train = FileImageDataset(
            [paths[i] for i in tr_idx], _labels_tensor(all_labels[tr_idx]), train_tf, mode
        )
        test = FileImageDataset(
            [paths[i] for i in te_idx], _labels_tensor(all_labels[te_idx]), eval_tf, mode
        )
        if len(test) == 0:
            raise TransferscopeError(
                f"imagefolder: {root} has too few images per class to hold any out for test "
                "(each class needs at least 2)"
            )

    info = DataInfo(
        name="imagefolder",
        task="multiclass",
        num_outputs=len(classes),
        image_shape=(channels, image_size, image_size),
        class_names=tuple(classes),
        mean=mean,
        std=std,
    )
    return Splits(info=info, train=train, test=test, dev=dev)
