"""Tiny on-disk fixtures in the exact formats of the folder-based data sources.

Every writer produces the real layout (JPEG files written with PIL, DomainNet split files, the
official CheXpert CSV header) at a few pixels per image so tests stay fast.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

CHEXPERT_HEADER: tuple[str, ...] = (
    "Path",
    "Sex",
    "Age",
    "Frontal/Lateral",
    "AP/PA",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)


def write_jpeg(
    path: Path, size: tuple[int, int] = (12, 10), mode: str = "RGB", seed: int = 0
) -> Path:
    """Write a random-noise JPEG of ``size`` (width, height) at ``path`` (parents created)."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, "JPEG")
    return path


def write_huge_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A valid black 1-bit PNG of ``width`` x ``height`` pixels (400 megapixels by default, past
    PIL's decompression-bomb limit) in a file of some 50 kB: rows are compressed as they are
    made, so writing it never holds the image."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte 0, then the row's bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def make_imagefolder(root: Path, counts: Mapping[str, int], seed: int = 0) -> Path:
    """ROOT/<class>/<class>_<i>.jpg with ``counts[class]`` images per class."""
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_jpeg(root / name / f"{name}_{i:03d}.jpg", seed=seed + 100 * c + i)
    return root


def make_domainnet(
    root: Path,
    domain: str = "real",
    classes: Iterable[str] = ("aircraft_carrier", "airplane", "zebra"),
    n_train: int = 4,
    n_test: int = 2,
) -> Path:
    """Official DomainNet layout: ROOT/<domain>/<class>/*.jpg and <domain>_{train,test}.txt.

    Class k gets label k; file names follow the official ``<domain>_<kkk>_<iiiiii>.jpg`` pattern.
    """
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for k, name in enumerate(classes):
        for i in range(n_train + n_test):
            rel = f"{domain}/{name}/{domain}_{k + 1:03d}_{i + 1:06d}.jpg"
            write_jpeg(root / rel, seed=1000 * k + i)
            lines["train" if i < n_train else "test"].append(f"{rel} {k}")
    for split, split_lines in lines.items():
        (root / f"{domain}_{split}.txt").write_text("\n".join(split_lines) + "\n")
    return root


def chexpert_row(
    path: str,
    labels: Mapping[str, str] | None = None,
    view: str = "Frontal",
) -> dict[str, str]:
    """One CSV row with the official columns; unspecified label columns are blank."""
    row = dict.fromkeys(CHEXPERT_HEADER, "")
    row.update({"Path": path, "Sex": "Female", "Age": "68", "Frontal/Lateral": view})
    row["AP/PA"] = "AP" if view == "Frontal" else ""
    row.update(labels or {})
    return row


def write_chexpert_csv(
    csv_path: Path, rows: Iterable[Mapping[str, str]], header: Iterable[str] = CHEXPERT_HEADER
) -> Path:
    header = list(header)
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def make_chexpert(
    parent: Path,
    train_labels: list[Mapping[str, str]],
    valid_labels: list[Mapping[str, str]] | None = None,
    name: str = "CheXpert-v1.0-small",
    views: list[str] | None = None,
) -> Path:
    """ROOT = parent/name with train.csv, valid.csv and one grayscale JPEG per row.

    Row i of train.csv is ``<name>/train/patient<i>/study1/view1_frontal.jpg`` (or lateral), as in
    the official CSVs; ``views[i]`` sets its Frontal/Lateral value.
    """
    root = parent / name
    valid_labels = valid_labels if valid_labels is not None else [{}, {}]
    for split, labels in (("train", train_labels), ("valid", valid_labels)):
        rows = []
        for i, row_labels in enumerate(labels):
            view = views[i] if (views is not None and split == "train") else "Frontal"
            file = f"view1_{view.lower()}.jpg"
            rel = f"{name}/{split}/patient{i + 1:05d}/study1/{file}"
            # Non-square, like real radiographs, so resize-and-pad is exercised.
            write_jpeg(parent / rel, size=(20, 16), mode="L", seed=i)
            rows.append(chexpert_row(rel, row_labels, view))
        write_chexpert_csv(root / f"{split}.csv", rows)
    return root


def write_idx(path: Path, array: np.ndarray) -> Path:
    """A uint8 array in the big-endian IDX format of (Fashion-)MNIST."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())
    return path


def make_torchvision_mnist(root: Path, n_train: int = 20, n_test: int = 10) -> Path:
    """ROOT/MNIST/raw/ with the four uncompressed IDX files torchvision.datasets.MNIST reads."""
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return root
