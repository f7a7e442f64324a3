"""Source ``domainnet``: one DomainNet domain (Peng et al. 2019), streamed from disk.

Official layout (as extracted from the DomainNet archives)::

    ROOT/<domain>/<class>/<file>.jpg
    ROOT/<domain>_train.txt    lines "<domain>/<class>/<file>.jpg <label>", paths relative to ROOT
    ROOT/<domain>_test.txt

The paper (training setup in docs/methods.md) uses the real, clipart and quickdraw domains, 345
classes, and subsamples train and test to 50,000 images each with seed 2020; images get
RandomResizedCrop(224) + flip for training and Resize 256 + CenterCrop 224 for evaluation, with
ImageNet normalisation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from transferscope.data.base import DataInfo, Splits
from transferscope.data.folder_common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FileImageDataset,
    classification_transform,
    require_root,
)
from transferscope.data.registry import register
from transferscope.errors import TransferscopeError, did_you_mean
from transferscope.options import PositiveInt, Seed

LAYOUT = (
    "ROOT/<domain>/<class>/<file>.jpg plus ROOT/<domain>_train.txt and ROOT/<domain>_test.txt "
    "with lines '<domain>/<class>/<file>.jpg <label>'"
)


def _domains_in(root: Path) -> list[str]:
    return sorted(p.name[: -len("_train.txt")] for p in root.glob("*_train.txt"))


def read_split_file(root: Path, split_file: Path) -> tuple[list[Path], list[int], list[str]]:
    """Parse a DomainNet split file and check that every image it lists exists.

    Returns:
        (absolute image paths, integer labels, class folder name of each line).

    Raises:
        TransferscopeError: malformed line, negative label, or missing image - naming the split
            file, the line number and (for a missing image) the path.
    """
    paths: list[Path] = []
    labels: list[int] = []
    folders: list[str] = []
    with open(split_file, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                continue
            # rsplit: the label is the last field; a path could contain spaces.
            parts = text.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise TransferscopeError(
                    f"{split_file}, line {line_no}: expected '<path> <label>', got {text!r}"
                )
            rel, label = parts[0], int(parts[1])
            if label < 0:
                raise TransferscopeError(
                    f"{split_file}, line {line_no}: label must be >= 0, got {label}"
                )
            path = root / rel
            # Checked here (cheap stat calls) so a partial extraction fails at once, not hours
            # into training when a worker first opens the file.
            if not path.is_file():
                raise TransferscopeError(
                    f"{split_file}, line {line_no}: image {path} does not exist; is the archive "
                    f"for this domain fully extracted under {root}? expected {LAYOUT}"
                )
            paths.append(path)
            labels.append(label)
            folders.append(Path(rel).parent.name)
    if not paths:
        raise TransferscopeError(f"{split_file} lists no images; expected {LAYOUT}")
    return paths, labels, folders


def subsample_indices(n: int, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a uniform random ``size``-subset of range(n) (all if None or >= n)."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(rng.permutation(n)[:size])


def _class_names(
    labels: list[int], folders: list[str], num_outputs: int, split_files: list[Path]
) -> tuple[str, ...]:
    names: dict[int, str] = {}
    for label, folder in zip(labels, folders, strict=True):
        known = names.setdefault(label, folder)
        if known != folder:
            raise TransferscopeError(
                f"label {label} names two class folders, '{known}' and '{folder}', in "
                f"{' / '.join(map(str, split_files))}; each label must map to one class folder"
            )
    return tuple(names.get(i, f"class_{i}") for i in range(num_outputs))


@register("domainnet", description="one DomainNet domain (345 classes) from disk")
def build(
    root: Path | None,
    seed: int,
    domain: str = "real",
    image_size: PositiveInt = 224,
    subsample: PositiveInt | None = 50000,
    subsample_seed: Seed = 2020,
    augment: bool = True,
) -> Splits:
    """Build the official train/test splits of one DomainNet domain.

    Args:
        root: the DomainNet directory (see the module docstring).
        seed: unused - the splits are official and the subsample has its own seed, so every run of
            a study sees the same images (as in the paper).
        domain: e.g. 'real', 'clipart', 'quickdraw', 'sketch', 'painting', 'infograph'.
        image_size: output side in pixels; images are float32 (3, image_size, image_size).
        subsample: train and test are each reduced to this many images (paper: 50,000); None keeps
            every image.
        subsample_seed: seed of the numpy Generator that draws both subsets (paper: 2020); the
            train subset is drawn first, then the test subset, from the same Generator.
        augment: RandomResizedCrop + flip on train; False uses the eval transform for train too.

    Returns:
        Splits with int64 scalar targets, no dev split. ``info.num_outputs`` is max label + 1 over
        both split files (345 for the real data); ``info.name`` is ``domainnet-<domain>``.
    """
    root = require_root(root, "domainnet", LAYOUT)
    if subsample is not None and subsample < 1:
        raise TransferscopeError(
            f"domainnet: subsample must be a positive count or None, got {subsample}"
        )
    split_files = [root / f"{domain}_train.txt", root / f"{domain}_test.txt"]
    for split_file in split_files:
        if not split_file.is_file():
            domains = _domains_in(root)
            found = (
                f"; split files found for: {', '.join(domains)}{did_you_mean(domain, domains)}"
                if domains
                else ""
            )
            raise TransferscopeError(
                f"domainnet: split file {split_file} not found; expected {LAYOUT}{found}"
            )

    tr_paths, tr_labels, tr_folders = read_split_file(root, split_files[0])
    te_paths, te_labels, te_folders = read_split_file(root, split_files[1])
    all_labels = tr_labels + te_labels
    num_outputs = max(max(all_labels) + 1, len(set(all_labels)))
    class_names = _class_names(all_labels, tr_folders + te_folders, num_outputs, split_files)

    rng = np.random.default_rng(subsample_seed)
    tr_idx = subsample_indices(len(tr_paths), subsample, rng)
    te_idx = subsample_indices(len(te_paths), subsample, rng)
    tr_targets = torch.as_tensor(np.asarray(tr_labels, dtype=np.int64)[tr_idx])
    te_targets = torch.as_tensor(np.asarray(te_labels, dtype=np.int64)[te_idx])

    train = FileImageDataset(
        [tr_paths[i] for i in tr_idx],
        tr_targets,
        classification_transform(image_size, 3, train=True, augment=augment),
    )
    test = FileImageDataset(
        [te_paths[i] for i in te_idx],
        te_targets,
        classification_transform(image_size, 3, train=False, augment=augment),
    )
    info = DataInfo(
        name=f"domainnet-{domain}",
        task="multiclass",
        num_outputs=num_outputs,
        image_shape=(3, image_size, image_size),
        class_names=class_names,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    return Splits(info=info, train=train, test=test)
