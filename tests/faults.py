"""Run the transferscope CLI and SIGKILL it at a chosen point (fault-injection tests).

    python tests/faults.py POINT N CLI-ARGS...

POINT is where the process dies, at the N-th time it gets there (counted from 1):

- ``step``: right after a training step (weights changed in memory, nothing saved yet);
- ``write:GLOB``: while writing a file whose name matches GLOB (e.g. ``*.safetensors``,
  ``index.html``, ``*.png``): half of the new file is on disk, the rename has not happened;
- ``analysis``: after an analysis is computed, before its JSON is written;
- ``worker-dies:PREFIX``: in a worker process of ``--jobs`` > 1, right after a training step of a
  run whose id starts with PREFIX (e.g. ``RIT``): the worker is SIGKILLed, the command lives on;
- ``worker-kills-command:PREFIX``: there, the worker SIGKILLs the command that started it, then
  trains on (unless it dies with its parent, as it should).

The hooks are monkeypatches installed here, so transferscope itself carries no test code. The
local executor's workers are spawned: they import this file as ``__mp_main__`` with the command's
``sys.argv``, and install the worker hooks then. With ``FAULT_PIDS`` set, each worker appends its
pid to that file, so a test can check that none outlives the command.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def countdown(n: int) -> Callable[[], bool]:
    left = [n]

    def tick() -> bool:
        left[0] -= 1
        return left[0] == 0

    return tick


def install(point: str, n: int) -> None:
    tick = countdown(n)
    if point == "step":
        from transferscope.training.trainer import Trainer

        train_step = Trainer._train_step

        def step(self: Any, *args: Any, **kwargs: Any) -> float:
            loss = train_step(self, *args, **kwargs)
            if tick():
                die()
            return loss

        Trainer._train_step = step  # type: ignore[method-assign]
    elif point.startswith("write:"):
        from transferscope import atomic

        pattern = point[len("write:") :]
        atomic_path = atomic.atomic_path

        @contextlib.contextmanager
        def torn(path: str | Path, size: int | None = None) -> Iterator[Path]:
            with atomic_path(path, size) as tmp:
                yield tmp
                if fnmatch.fnmatch(Path(path).name, pattern) and tick():
                    os.truncate(tmp, tmp.stat().st_size // 2)
                    die()

        atomic.atomic_path = torn
    elif point == "analysis":
        from transferscope import registry

        def killing(fn: Callable[..., Any]) -> Callable[..., Any]:
            def compute(ctx: Any, options: Any) -> Any:
                result = fn(ctx, options)
                if tick():
                    die()
                return result

            return compute

        for unit in registry.units():
            unit.compute = killing(unit.compute)  # type: ignore[method-assign]
    elif point.startswith("worker-"):
        pass  # installed in the worker processes (install_in_worker)
    else:
        raise SystemExit(f"unknown fault point {point!r}")


def install_in_worker(point: str, n: int) -> None:
    """The ``worker-...`` points, in a worker process of the local executor."""
    if os.environ.get("FAULT_PIDS"):
        with open(os.environ["FAULT_PIDS"], "a") as f:
            f.write(f"{os.getpid()}\n")
    action, _, prefix = point.partition(":")
    if action not in ("worker-dies", "worker-kills-command"):
        return
    tick = countdown(n)
    from transferscope.training.trainer import Trainer

    train_step = Trainer._train_step

    def step(self: Any, *args: Any, **kwargs: Any) -> float:
        loss = train_step(self, *args, **kwargs)
        run_dir = self.run_dir
        if run_dir is not None and Path(run_dir).name.startswith(prefix) and tick():
            if action == "worker-dies":
                die()
            os.kill(os.getppid(), signal.SIGKILL)
        return loss

    Trainer._train_step = step  # type: ignore[method-assign]


if __name__ == "__main__":
    install(sys.argv[1], int(sys.argv[2]))
    from transferscope.cli import app

    app(sys.argv[3:], prog_name="transferscope")
elif __name__ == "__mp_main__" and len(sys.argv) > 2 and sys.argv[1].startswith("worker-"):
    install_in_worker(sys.argv[1], int(sys.argv[2]))
