"""What a split of a data source holds, as a short digest: has the data changed since it was read?

A run's id hashes its config, not its data: an image folder that gained, lost or replaced files,
or a data source whose split changed between releases, plans the same ids as before. A finished
run records the digest of the training and test splits it read (``data`` in its ``DONE``), and an
analysis the digest of every data source of the study; either is trusted only while the digests
are the same today.

A split's digest covers its number of examples and their targets, and for images streamed from
files (:class:`~transferscope.data.folder_common.FileImageDataset`) each file's path, size and
modification time: a file replaced in place under the same name changes it too. For in-memory
data (the built-in sources) it covers the sizes and targets, which a source whose split changed
between releases changes (its pixels are a function of the source's code and options, which the
run id covers).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from transferscope.data.base import Splits, dataset_targets

DIGEST_VERSION = 2
"""Bumped when what a digest covers changes (2: file sizes and modification times)."""


def _files(data: Dataset) -> list[str] | None:
    """The file of every example of ``data`` in order, or None when it is not read from files."""
    if isinstance(data, Subset):
        inner = _files(data.dataset)
        return None if inner is None else [inner[i] for i in data.indices]
    paths = getattr(data, "paths", None)
    return None if paths is None else [os.fspath(p) for p in paths]


def split_digest(data: Dataset) -> dict[str, Any]:
    """``{"examples": N, "files": bool, "sha256": hex}`` of one split (see the module docstring).

    Stats every file of a split read from files (no file is read); a file that is gone counts as
    size and time -1, so the digest differs from the one taken while it was there.
    """
    digest = hashlib.sha256(f"v{DIGEST_VERSION};{len(data)};".encode())  # type: ignore[arg-type]
    targets = dataset_targets(data)
    if targets is not None:
        targets = np.ascontiguousarray(targets)
        digest.update(f"{targets.dtype.str};{targets.shape};".encode())
        digest.update(targets.tobytes())
    files = _files(data)
    if files is not None:
        for path in files:
            try:
                st = os.stat(path)
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                size, mtime = -1, -1
            digest.update(f"{path}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return {"examples": len(data), "files": files is not None, "sha256": digest.hexdigest()}  # type: ignore[arg-type]


def splits_digest(splits: Splits) -> dict[str, dict[str, Any]]:
    """The digest of a source's training and test splits: ``{"train": ..., "test": ...}``."""
    return {"train": split_digest(splits.train), "test": split_digest(splits.test)}


def what_changed(label: str, then: Any, now: dict[str, dict[str, Any]]) -> str | None:
    """Why the splits of ``label`` are not the ones recorded as ``then`` (None: the same).

    ``then`` is a recorded :func:`splits_digest` (a DONE's ``data``); a split missing from it
    (an older record) is not compared.
    """
    if not isinstance(then, dict):
        return None
    for split, word in (("train", "training"), ("test", "test")):
        old, new = then.get(split), now[split]
        if not isinstance(old, dict) or old.get("sha256") == new["sha256"]:
            continue
        count = old.get("examples")
        if count != new["examples"]:
            detail = f"{count} examples then, {new['examples']} now"
        elif new["files"]:
            detail = f"the same {count} examples, but other files, file sizes, times or labels"
        else:
            detail = f"the same {count} examples, but other labels"
        return f"the {word} split of '{label}' changed since it was read ({detail})"
    return None


__all__ = ["DIGEST_VERSION", "split_digest", "splits_digest", "what_changed"]
