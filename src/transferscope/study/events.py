"""What an executor tells its caller while a study runs, and what it returns.

Both executors (:class:`~transferscope.study.executors.LocalExecutor` and
:class:`~transferscope.study.ray_executor.RayExecutor`) take a :class:`StudyEvents` and have the
same ``run(plan, analyses) -> StudyOutcome``: the CLI draws one progress display from the same
events whichever runs the study.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from transferscope.studydir.inputs import DataCache
    from transferscope.studydir.plan import Plan, PlannedRun
    from transferscope.studydir.store import StudyStore


@dataclass
class StudyEvents:
    """Callbacks, each optional."""

    run_start: Callable[[PlannedRun, int, int], None] | None = None
    """(run, index among the runs to train, how many there are to train)."""
    run_step: Callable[[str, int, int], None] | None = None
    """(run id, optimiser step, total steps): only for runs trained in this process."""
    run_end: Callable[[PlannedRun, dict[str, Any] | None, str | None], None] | None = None
    """(run, its DONE summary or None, the error or None)."""
    runs_update: Callable[[int, list[str]], None] | None = None
    """(runs finished, ids of the runs training now), whenever that changes (cluster runs)."""
    runs_done: Callable[[dict[str, str]], None] | None = None
    """(run id -> 'done' / 'skipped' / 'failed: ...') once training is over, before analyses."""
    analysis: Callable[[str, str, float | None], None] | None = None
    """(name, message, seconds): 'recomputing: why', 'estimated: ~time' and 'running' (seconds
    None), then 'done', 'cached', 'disabled', 'skipped: why' or 'failed: error' with the seconds
    it took."""
    analysis_tick: Callable[[str, int, int, str], None] | None = None
    """(name, parts done, parts in all, what): an analysis working through its parts."""


@dataclass
class StudyOutcome:
    """Run id -> 'done' / 'skipped' / 'failed: ...'; analysis name -> its last message."""

    runs: dict[str, str]
    analyses: dict[str, str] = field(default_factory=dict)

    @property
    def failed_runs(self) -> list[str]:
        return [k for k, v in self.runs.items() if v.startswith("failed")]

    @property
    def trained(self) -> int:
        return sum(v == "done" for v in self.runs.values())

    @property
    def failed_analyses(self) -> list[str]:
        return [k for k, v in self.analyses.items() if v.startswith("failed")]


class Executor(Protocol):
    """Trains a plan's runs not yet done and, with ``analyses``, runs the study's analyses."""

    def run(self, plan: Plan, analyses: bool = False) -> StudyOutcome: ...


def analyse(
    store: StudyStore,
    events: StudyEvents,
    cache: DataCache | None = None,
    only: list[str] | None = None,
    force: bool = False,
    workers: int = 1,
) -> dict[str, str]:
    """Run the study's analyses in this process, telling ``events``; name -> last message.
    ``workers``: analyses side by side (see :func:`~transferscope.study.analyze.run_analyses`)."""
    from transferscope.study.analyze import is_last_message, run_analyses

    started: dict[str, float] = {}
    last: dict[str, str] = {}

    def progress(name: str, message: str) -> None:
        if message == "running":
            started[name] = time.perf_counter()
        finished = is_last_message(message)
        # An analysis that never started (disabled, cached, skipped up front) took no time.
        began = started.get(name)
        seconds = time.perf_counter() - began if finished and began is not None else None
        last[name] = message
        if events.analysis:
            events.analysis(name, message, seconds)

    run_analyses(
        store,
        only=only,
        progress=progress,
        force=force,
        cache=cache,
        tick=events.analysis_tick,
        workers=workers,
    )
    return last


__all__ = ["Executor", "StudyEvents", "StudyOutcome", "analyse"]
