"""One command at a time per study directory.

``transferscope run`` and ``transferscope analyze`` hold ``STUDY/LOCK`` while they work: two of them
on one directory would train every run twice and race on its files. The lock is an exclusive
``flock`` on that file, which the kernel releases when the holding process dies however it dies,
so a lock left by a killed command is simply taken over; the file's contents (pid, host, command,
start time) only serve to tell a second command who is in the way.

The lock belongs to the top-level command: the local executor's worker processes and Ray's tasks
neither take it nor inherit it (Python opens files non-inheritable, and workers are spawned), and
they end with the command (:func:`transferscope.processes.end_with_parent`). A command that finds
the lock left by one that died (killed, crashed) takes it over at once and says so. Should
processes that a dead holder started still hold it, the command waits a few seconds for them to
end, then names the dead holder and how to find them. Where the file system refuses ``flock``, a
lock whose pid is no longer alive on this host is taken over and any other is respected.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from transferscope.errors import TransferscopeError, TransferscopeWarning
from transferscope.paths import LOCK

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: pid-based locking only
    fcntl = None  # type: ignore[assignment]

ORPHAN_WAIT_S = 5.0
"""How long a command waits for the processes of a dead holder to let go of the lock (workers
without ``PR_SET_PDEATHSIG`` notice their parent's death within a second)."""


def command_line() -> str:
    """This process's command as a user typed it (``transferscope run ...``)."""
    return shlex.join(["transferscope", *sys.argv[1:]])


def _holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (its LOCK file does not say which)"
    command = holder.get("command", "?")
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"(`{command}`, since {holder.get('since', '?')})"
    )


def _alive_here(holder: dict[str, Any]) -> bool:
    """Whether the holder may still run: on another host we cannot tell, so assume it does."""
    if holder.get("host") != socket.gethostname():
        return bool(holder)
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


class StudyLock:
    """Exclusive lock on a study directory (a context manager); see the module docstring.

    Args:
        root: the study directory (created if missing).
        command: what to show a second command (default: this process's command line).
    """

    def __init__(self, root: str | Path, command: str | None = None) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK
        self.command = command or command_line()
        self._fd: int | None = None

    def _record(self) -> bytes:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()),
        }
        return (json.dumps(holder) + "\n").encode()

    def _busy(self) -> TransferscopeError:
        holder = _holder(self.path)
        if holder and not _alive_here(holder):
            return TransferscopeError(
                f"study directory {self.root} is locked by processes that "
                f"{_describe(holder)} started: that command is no longer running, but they "
                f"still are; stop them (`fuser -v {self.path}` lists them), then rerun"
            )
        return TransferscopeError(
            f"study directory {self.root} is in use by {_describe(holder)}; wait "
            "for that command to finish (or stop it), then rerun"
        )

    def _say_taken_over(self, holder: dict[str, Any]) -> None:
        """A record left in the file means its writer never released the lock: it died."""
        if holder and holder.get("pid") != os.getpid():
            warnings.warn(
                f"took over the lock of {self.root} from {_describe(holder)}, which is no longer "
                "running (it was killed or crashed); finished work is kept and partial runs "
                "resume",
                TransferscopeWarning,
                stacklevel=3,
            )

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise TransferscopeError(
                f"cannot write in the study directory {self.root}: {e.strerror or e}; choose a "
                "writable directory (--out) or fix its permissions"
            ) from None

    def acquire(self) -> None:
        """Take the lock, or raise a :class:`TransferscopeError` naming the holder."""
        deadline = time.monotonic() + ORPHAN_WAIT_S
        while True:
            fd = self._open()
            try:
                if fcntl is None:
                    raise OSError(errno.ENOLCK, "no flock")
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = _holder(self.path)
                if holder and not _alive_here(holder) and time.monotonic() < deadline:
                    # Held, but not by the process that took it: by processes it started, which
                    # end soon after it.
                    time.sleep(0.2)
                    continue
                raise self._busy() from None
            except OSError:
                # No flock here (some network or FUSE file systems): trust the recorded pid.
                if _alive_here(_holder(self.path)) and _holder(self.path).get("pid") != os.getpid():
                    os.close(fd)
                    raise self._busy() from None
            # The holder before us may have removed the file after we opened it: then we hold
            # a lock on a file nobody else will open, and must start again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._say_taken_over(_holder(self.path))
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._record(), 0)
        except OSError as e:
            self.release()
            raise TransferscopeError(
                f"cannot write the lock file {self.path}: {e.strerror or e}; free disk space "
                "or make the study directory writable, then rerun"
            ) from None

    def release(self) -> None:
        """Remove the lock file and let go (removing first: see the inode check in acquire)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["LOCK", "StudyLock", "command_line"]
