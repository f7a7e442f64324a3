"""Figures written by worker processes while the page is still being built.

Drawing a figure into its files (PNG, and PDF or SVG for papers) is most of a report's time: the
mini preset's 82 figure files took 26 s of a 43 s build, and they are independent of each other. A
:class:`FigureSaver` sends each finished figure (serialising it takes a fraction of its drawing
time) to a small pool of worker processes and returns its file name at once, so the page goes on to
the next section while figures are written side by side. Every file is written atomically by
:func:`transferscope.unitkit.figures.save`, under the report's style, as in one process; leaving the
``with`` block waits for every figure and raises the first error.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from transferscope import limits
from transferscope.processes import end_with_parent
from transferscope.unitkit import figures as F

MAX_WORKERS = 4
"""Worker processes at most: beyond a few, starting them costs more than they save."""


def _save_in_worker(fig: Any, folder: str, stem: str, formats: tuple[str, ...]) -> str:
    with F.style():  # savefig reads dpi and font embedding from the style at save time
        return F.save(fig, Path(folder), stem, formats)


class FigureSaver:
    """Writes figures in ``workers`` processes (default: the cores, at most
    :data:`MAX_WORKERS`; 1 or fewer: in this process, as :func:`~transferscope.unitkit.figures.save`
    does)."""

    def __init__(self, workers: int | None = None) -> None:
        limits.check_count("report.workers", workers, minimum=0)
        self.workers = min(MAX_WORKERS, os.cpu_count() or 1) if workers is None else workers
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[Future] = []

    def __enter__(self) -> FigureSaver:
        if self.workers > 1:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=end_with_parent,  # no orphans when the command is killed
                initargs=(os.getpid(),),
            )
        return self

    def save(self, fig: Any, folder: Path, stem: str, formats: Sequence[str]) -> str:
        """Write ``fig`` as ``folder/stem.<ext>`` (see :func:`~transferscope.unitkit.figures.save`)
        now or in a worker; returns the PNG's file name."""
        if self._pool is None:
            return F.save(fig, folder, stem, formats)
        folder.mkdir(parents=True, exist_ok=True)
        # The figure travels to the worker as the pool sends any argument: this process's own
        # object, drawn from the study's results, never a file a user handed us.
        self._pending.append(
            self._pool.submit(_save_in_worker, fig, str(folder), stem, tuple(formats))
        )
        return f"{stem}.png"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pool is None:
            return
        try:
            if exc is None:
                for future in self._pending:
                    future.result()  # the first figure that could not be written is raised
        finally:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None


__all__ = ["MAX_WORKERS", "FigureSaver"]
