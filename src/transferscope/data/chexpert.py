"""Source ``chexpert``: CheXpert chest X-rays (Irvin et al. 2019), 5-task multi-label, from disk.

Layout of CheXpert-v1.0 and CheXpert-v1.0-small as distributed::

    ROOT/train.csv   ROOT/valid.csv   ROOT/train/patient*/study*/view*.jpg   ROOT/valid/...

with the official header ``Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,...,Support Devices``.
A ``Path`` value such as ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`` starts
with the dataset folder's own name: it is resolved against ROOT's parent when its first component
equals ROOT's name, and against ROOT otherwise (so a renamed ROOT works with re-rooted CSVs).

Paper setup (docs/methods.md): tasks Atelectasis, Cardiomegaly, Consolidation,
Edema, Pleural Effusion; uncertain (-1) -> 1 for Edema and Atelectasis (U-Ones), -> 0 for the others
(U-Zeros); blank -> 0. The official train CSV is permuted with seed 1234: the first 50k rows are
train, the next 50k test; the official valid CSV is the dev split. Preprocessing: grayscale,
histogram equalisation, small random affine, resize the long side to 224 and pad to square,
replicate to 3 channels.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageOps

from transferscope.data.base import DataInfo, Splits
from transferscope.data.folder_common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FileImageDataset,
    require_root,
)
from transferscope.data.registry import register
from transferscope.errors import TransferscopeError, did_you_mean
from transferscope.options import PositiveInt, Seed

if TYPE_CHECKING:
    from torchvision.transforms import v2

TASKS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)
U_ONES: frozenset[str] = frozenset({"Edema", "Atelectasis"})
"""Tasks whose uncertain label (-1) counts as positive; every other task maps -1 to 0."""

LAYOUT = "ROOT/train.csv and ROOT/valid.csv (official CheXpert-v1.0 or CheXpert-v1.0-small folder)"


def label_value(raw: str, task: str) -> float | None:
    """The 0/1 target for one CSV cell under the paper's policy, or None for an invalid cell.

    Blank -> 0; 1 -> 1; 0 -> 0; -1 -> 1 for :data:`U_ONES` tasks, 0 otherwise.
    """
    text = raw.strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        return None
    if value == 1.0:
        return 1.0
    if value == 0.0:
        return 0.0
    if value == -1.0:
        return 1.0 if task in U_ONES else 0.0
    return None


def resolve_path(root: Path, value: str) -> Path:
    """Image path for a CSV ``Path`` cell (see the module docstring)."""
    rel = Path(value.strip())
    if rel.parts and rel.parts[0] == root.name:
        return root.parent / rel
    return root / rel


def read_csv(root: Path, csv_path: Path, frontal_only: bool) -> tuple[list[Path], np.ndarray]:
    """Image paths and (N, 5) float32 targets of one CheXpert CSV, in file order.

    Raises:
        TransferscopeError: missing file or column, or a label cell that is not blank/1/0/-1
            (names the CSV, row number, column and value).
    """
    if not csv_path.is_file():
        raise TransferscopeError(f"chexpert: {csv_path} not found; expected {LAYOUT}")
    paths: list[Path] = []
    rows: list[list[float]] = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        required = ["Path", *TASKS] + (["Frontal/Lateral"] if frontal_only else [])
        for column in required:
            if column not in header:
                raise TransferscopeError(
                    f"chexpert: {csv_path} has no column '{column}'{did_you_mean(column, header)}; "
                    "the official header starts 'Path,Sex,Age,Frontal/Lateral,AP/PA,...'"
                )
        for row_no, row in enumerate(reader, start=1):
            if frontal_only and (row["Frontal/Lateral"] or "").strip() != "Frontal":
                continue
            targets = []
            for task in TASKS:
                raw = row[task] or ""
                value = label_value(raw, task)
                if value is None:
                    raise TransferscopeError(
                        f"chexpert: {csv_path}, row {row_no} (line {reader.line_num}), column "
                        f"'{task}': invalid value {raw!r}; expected blank, 1.0, 0.0 or -1.0"
                    )
                targets.append(value)
            paths.append(resolve_path(root, row["Path"] or ""))
            rows.append(targets)
    return paths, np.asarray(rows, dtype=np.float32).reshape(-1, len(TASKS))


def split_sizes(n: int, train_size: int, test_size: int) -> tuple[int, int]:
    """(train, test) row counts drawn from ``n`` permuted rows.

    The requested sizes when they fit; otherwise the rows are shared in proportion
    train_size : test_size (half and half with the defaults), every row used.
    """
    if train_size + test_size <= n:
        return train_size, test_size
    n_train = round(n * train_size / (train_size + test_size))
    return n_train, n - n_train


class Equalize:
    """Histogram equalisation of a PIL image (``PIL.ImageOps.equalize``), or of a uint8
    (C, H, W) tensor (torchvision's ``equalize``, the same algorithm) when images are decoded on
    the device."""

    def __call__(self, image: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        if isinstance(image, torch.Tensor):
            from torchvision.transforms.v2 import functional as F

            return F.equalize(image)
        return ImageOps.equalize(image)


class ResizeLongSideAndPad:
    """Scale so the long side is ``size`` pixels (aspect ratio kept), then zero-pad to square.

    The padding is split evenly between both sides, so the image stays centred.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        if isinstance(image, torch.Tensor):
            return self._tensor(image)
        w, h = image.size
        scale = self.size / max(w, h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        canvas = Image.new(image.mode, (self.size, self.size), 0)
        canvas.paste(image, ((self.size - new_w) // 2, (self.size - new_h) // 2))
        return canvas

    def _tensor(self, image: torch.Tensor) -> torch.Tensor:
        """The same on a uint8 (C, H, W) tensor (antialiased bilinear, as PIL's resize)."""
        from torchvision.transforms.v2 import functional as F

        h, w = image.shape[-2:]
        scale = self.size / max(w, h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        image = F.resize(image, [new_h, new_w], antialias=True)
        left, top = (self.size - new_w) // 2, (self.size - new_h) // 2
        return F.pad(image, [left, top, self.size - new_w - left, self.size - new_h - top])


def chexpert_transform(image_size: int, *, train: bool, augment: bool) -> v2.Compose:
    """Grayscale PIL image -> float32 (3, image_size, image_size), ImageNet-normalised.

    Equalisation runs before padding so the zero border does not skew the histogram; the random
    affine (training with ``augment`` only: +-10 degrees, 5% shift, 95-105% scale) runs on the
    padded square so nothing of the image is cropped by the resize.
    """
    from torchvision.transforms import v2  # here: importing torchvision takes ~2.5 s

    if image_size < 1:
        raise TransferscopeError(f"image_size must be a positive pixel count, got {image_size}")
    steps: list = [Equalize(), ResizeLongSideAndPad(image_size)]
    if train and augment:
        steps.append(v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05)))
    steps += [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        # Replicated to 3 channels so ImageNet-pretrained models take the X-rays unchanged.
        v2.Grayscale(num_output_channels=3),
        v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)),
    ]
    return v2.Compose(steps)


def _check_first_image(paths: list[Path], csv_path: Path, root: Path) -> None:
    # One stat per split instead of 200k: enough to catch a wrongly chosen ROOT up front.
    if paths and not paths[0].is_file():
        raise TransferscopeError(
            f"chexpert: the first image listed in {csv_path} resolves to {paths[0]}, which does "
            f"not exist; Path values starting with '{root.name}/' are resolved against "
            f"{root.parent}, others against {root} - point root at the CheXpert-v1.0(-small) "
            "folder itself"
        )


@register(
    "chexpert",
    description="CheXpert chest X-rays from disk: 5 tasks, mean AUC",
)
def build(
    root: Path | None,
    seed: int,
    frontal_only: bool = False,
    image_size: PositiveInt = 224,
    augment: bool = True,
    train_size: PositiveInt = 50000,
    test_size: PositiveInt = 50000,
    split_seed: Seed = 1234,
) -> Splits:
    """Build the paper's CheXpert train/test/dev splits.

    Args:
        root: the CheXpert-v1.0 or CheXpert-v1.0-small folder (holding train.csv and valid.csv).
        seed: unused - the split has its own seed so every run of a study sees the same rows.
        frontal_only: keep only rows whose Frontal/Lateral is 'Frontal' (applied before the
            permutation, so train_size / test_size count frontal images; also filters dev).
        image_size: output side in pixels; images are float32 (3, image_size, image_size).
        augment: small random affine on train; False uses the eval transform for train too.
        train_size: rows of the permuted official train CSV used for train (paper: 50,000).
        test_size: the following rows, used for test (paper: 50,000). When the CSV has fewer than
            train_size + test_size rows, all rows are shared in proportion train_size : test_size.
        split_seed: seed of the numpy Generator (``np.random.default_rng``) that permutes the rows
            (paper: 1234).

    Returns:
        Splits with float32 (5,) 0/1 targets in the order of :data:`TASKS`; dev = valid.csv.
    """
    root = require_root(root, "chexpert", LAYOUT)
    if train_size < 1 or test_size < 1:
        raise TransferscopeError(
            f"chexpert: train_size and test_size must be positive, got {train_size} and {test_size}"
        )
    train_csv, valid_csv = root / "train.csv", root / "valid.csv"
    paths, targets = read_csv(root, train_csv, frontal_only)
    dev_paths, dev_targets = read_csv(root, valid_csv, frontal_only)
    if len(paths) < 2:
        raise TransferscopeError(
            f"chexpert: {train_csv} has {len(paths)} usable rows; at least 2 are needed for a "
            "train and a test split"
        )
    _check_first_image(paths, train_csv, root)
    _check_first_image(dev_paths, valid_csv, root)

    perm = np.random.default_rng(split_seed).permutation(len(paths))
    n_train, n_test = split_sizes(len(paths), train_size, test_size)
    tr_idx, te_idx = perm[:n_train], perm[n_train : n_train + n_test]

    train_tf = chexpert_transform(image_size, train=True, augment=augment)
    eval_tf = chexpert_transform(image_size, train=False, augment=augment)
    train = FileImageDataset(
        [paths[i] for i in tr_idx], torch.from_numpy(targets[tr_idx]), train_tf, "L"
    )
    test = FileImageDataset(
        [paths[i] for i in te_idx], torch.from_numpy(targets[te_idx]), eval_tf, "L"
    )
    dev = FileImageDataset(dev_paths, torch.from_numpy(dev_targets), eval_tf, "L")
    info = DataInfo(
        name="chexpert",
        task="multilabel",
        num_outputs=len(TASKS),
        image_shape=(3, image_size, image_size),
        class_names=TASKS,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    return Splits(info=info, train=train, test=test, dev=dev)
