"""Worker processes that never outlive their parent, and a pool that survives losing one.

:func:`end_with_parent` makes a worker process end when the process that started it dies, however
it dies: a ``kill -9`` of ``transferscope run`` by a user, SLURM or Kubernetes must not leave
workers training on, writing into the study directory that a rerun is about to use. On Linux the
kernel sends the worker SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``, through
ctypes); elsewhere a daemon thread in the worker polls the parent's pid once a second.

:class:`WorkerPool` keeps up to ``size`` spawned worker processes, each running one task at a
time, and knows which process runs which task. A worker that dies (killed, out of memory, a crash
in native code) costs only its own task, reported as :class:`WorkerDied`; the pool starts a new
worker for the next task while the others go on. (``concurrent.futures.ProcessPoolExecutor``
marks the whole pool broken when one worker dies, failing every task in it.)
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_any
from typing import Any

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def end_with_parent(parent_pid: int) -> None:
    """Make this process end when ``parent_pid`` (the process that started it) ends.

    Call it first thing in a worker process. Returns at once; exits at once when the parent is
    already gone.
    """
    if sys.platform.startswith("linux") and _set_parent_death_signal():
        # The parent may have died before the signal was armed: then nothing will send it.
        if os.getppid() != parent_pid:
            os._exit(1)
        return

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:  # re-parented: the parent is gone
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _set_parent_death_signal() -> bool:
    """prctl(PR_SET_PDEATHSIG, SIGKILL); False where it is not available."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True)
class WorkerDied:
    """A task's worker process ended before it returned (pid, and its exit code: -N for signal N)."""

    pid: int
    exitcode: int | None

    def describe(self) -> str:
        """'was killed by SIGKILL (...)', 'exited with status 3', ...: what happened to it."""
        code = self.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            why = {
                "SIGKILL": " (by a user or a job scheduler, or by the kernel when memory ran out)",
                "SIGSEGV": " (a crash in native code)",
                "SIGBUS": " (a crash in native code, or a file it mapped was truncated)",
                "SIGABRT": " (a crash in native code)",
            }.get(name, "")
            return f"its worker process (pid {self.pid}) was killed by {name}{why}"
        if code is None:
            return f"its worker process (pid {self.pid}) stopped answering"
        return f"its worker process (pid {self.pid}) exited with status {code}"


@dataclass(frozen=True)
class TaskRaised:
    """A task raised in its worker: the exception's type and message, and the traceback."""

    error: str
    traceback: str


class _Worker:
    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()


def _serve(
    conn: Connection, parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple
) -> None:
    """A worker's life: end with the parent, initialise, then run tasks until told to stop."""
    end_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent closed the pipe or is gone
            return
        if task is None:
            return
        fn, args = task
        try:
            result: Any = fn(*args)
        except Exception as e:
            result = TaskRaised(f"{type(e).__name__}: {e}", traceback.format_exc())
        try:
            conn.send(result)
        except (OSError, EOFError):  # the parent is gone
            return
        except Exception as e:  # e.g. a result that does not pickle
            conn.send(TaskRaised(f"cannot return the result: {e}", traceback.format_exc()))


class WorkerPool:
    """Up to ``size`` worker processes (``spawn``), each running one task at a time.

    ``submit(key, fn, *args)`` runs ``fn(*args)`` in an idle worker (starting one when none is
    idle); :meth:`wait` blocks until tasks end and returns ``(key, outcome)`` for each: the
    task's return value, :class:`TaskRaised`, or :class:`WorkerDied`. ``fn`` and
    ``initializer`` must be importable module-level functions. Every worker runs
    :func:`end_with_parent`. Leaving the ``with`` block stops the workers and kills tasks still
    running (after an exception: a study's runs resume from their last resume point).
    """

    def __init__(
        self,
        size: int,
        initializer: Callable[..., None] | None = None,
        initargs: tuple = (),
    ) -> None:
        self.size = size
        self._initializer = initializer
        self._initargs = initargs
        self._context = multiprocessing.get_context("spawn")
        self._idle: list[_Worker] = []
        self._busy: dict[Hashable, _Worker] = {}

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> int:
        return len(self._busy)

    def _start(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve,
            args=(child, os.getpid(), self._initializer, self._initargs),
            daemon=True,
        )
        process.start()
        child.close()
        return _Worker(process, parent)

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in a worker; ``key`` names the task in :meth:`wait`'s answer."""
        if key in self._busy:
            raise ValueError(f"task {key!r} is already running")
        if len(self._busy) >= self.size:
            raise RuntimeError(f"all {self.size} workers are busy")
        worker = self._idle.pop() if self._idle else self._start()
        try:
            worker.conn.send((fn, args))
        except (OSError, EOFError):  # the idle worker died meanwhile: start a fresh one
            self._discard(worker)
            worker = self._start()
            worker.conn.send((fn, args))
        self._busy[key] = worker

    def wait(self, timeout: float | None = None) -> list[tuple[Hashable, Any]]:
        """Block until at least one task ends (or ``timeout`` seconds pass); their outcomes."""
        if not self._busy:
            return []
        handles: list[Any] = []
        for worker in self._busy.values():
            handles += [worker.conn, worker.process.sentinel]
        ready = set(wait_any(handles, timeout))
        out: list[tuple[Hashable, Any]] = []
        for key, worker in list(self._busy.items()):
            if worker.conn not in ready and worker.process.sentinel not in ready:
                continue
            del self._busy[key]
            try:
                # A worker may send its result and then die: the result counts.
                if not worker.conn.poll():
                    raise EOFError
                outcome = worker.conn.recv()
            except (EOFError, OSError):
                worker.process.join(5.0)
                out.append((key, WorkerDied(worker.process.pid, worker.process.exitcode)))
                self._discard(worker)
                continue
            out.append((key, outcome))
            self._idle.append(worker)
        return out

    def _discard(self, worker: _Worker) -> None:
        worker.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5.0)

    def close(self) -> None:
        """Stop every worker: idle ones are told to stop, running ones are killed."""
        for worker in self._idle:
            with contextlib.suppress(OSError, EOFError):
                worker.conn.send(None)
        for worker in self._busy.values():
            worker.process.kill()
        for worker in [*self._idle, *self._busy.values()]:
            worker.process.join(10.0)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5.0)
            worker.close()
        self._idle, self._busy = [], {}


__all__ = ["TaskRaised", "WorkerDied", "WorkerPool", "end_with_parent"]
