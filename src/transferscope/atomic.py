"""Atomic file writes: write to a temporary name in the same folder, fsync, rename into place.

A crash (even SIGKILL) leaves either the old file or the new one, never half of one. Every file in a
study directory is written this way. The file gets the permissions an ordinary ``open()`` would give
it under the process's umask (0644 under the usual 022), not the 0600 of the temporary file, so
colleagues on a shared file system can read a study.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transferscope.errors import DiskFullError, TransferscopeError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux), else set and
    restored under a lock (``os.umask`` is the only portable reader, and it writes)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


# Less free space than this after a failed write: the disk is full, whatever the writer said
# (numpy reports a short write as "N requested and M written", without an errno).
_NEARLY_FULL = 1 << 20
_FULL_MESSAGES = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")


def format_bytes(n: float) -> str:
    """``n`` bytes as '512 B', '3.2 MB', '1.5 GB' (powers of 1000, as ``df -H``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - unreachable


def free_space(folder: Path) -> int | None:
    """Bytes free for this user on the file system of ``folder`` (or its nearest existing
    parent); None when it cannot be told."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _disk_full(error: BaseException, folder: Path) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if any(text in str(error) for text in _FULL_MESSAGES):  # e.g. safetensors' SafetensorError
        return True
    free = free_space(folder) if isinstance(error, OSError) else None
    return free is not None and free < _NEARLY_FULL


def disk_full_error(path: Path, needs: int | None = None) -> DiskFullError:
    """The one-line error for a write of ``path`` that ran out of space (``needs``: the bytes
    the file takes, when known)."""
    free = free_space(path.parent)
    where = f"{format_bytes(free)} free there" if free is not None else "free space unknown"
    size = f"; the file alone takes {format_bytes(needs)}" if needs else ""
    return DiskFullError(
        f"no space left on the device to write {path} ({where}{size}); nothing finished is "
        "lost (the file's previous version, if any, is kept) - free disk space or move the study "
        "(--out), then rerun the same command to resume"
    )


@contextlib.contextmanager
def atomic_path(path: str | Path, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was. A full disk is
    a :class:`DiskFullError` naming ``path``, the space free there and ``size`` (the bytes the
    file needs, when the caller knows them); another failed write (read-only folder) is a
    :class:`TransferscopeError` naming ``path``.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            # mkstemp creates 0600 whatever the umask (and some writers replace the file with a
            # 0600 one of their own); rename keeps the mode, so set it here.
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except TransferscopeError:
        raise
    except Exception as e:
        # Judged before the temporary file is removed, which frees what it took.
        if _disk_full(e, path.parent):
            if tmp_path is not None:
                tmp_path.unlink(missing_ok=True)
            raise disk_full_error(path, size) from e
        if not isinstance(e, OSError):
            raise
        raise TransferscopeError(
            f"cannot write {path}: {e.strerror or e}; its previous version (if any) is kept - "
            "make the folder writable or choose another (--out), then rerun to resume"
        ) from e
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path, size=len(data)) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def write_npy(path: str | Path, array: Any) -> None:
    import numpy as np

    array = np.asarray(array)
    with atomic_path(path, size=array.nbytes) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
