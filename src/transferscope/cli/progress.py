"""The terminal display of a running study: progress bars (or, ``quiet``, one line per step)
drawn from the :class:`~transferscope.study.events.StudyEvents` every executor sends."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from transferscope.study.events import StudyEvents


def run_label(run: Any) -> str:
    """'P-T digits seed 1 (b4, k=2)': what a run is, in words."""
    extra = []
    if run.shuffle:
        extra.append(run.shuffle)
    if run.checkpoint is not None:
        extra.append(f"k={run.checkpoint:g}")
    if run.same_init_as:
        extra.append("same init")
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"{run.spec.kind} {run.target} seed {run.seed}{tail}"


def runs_description(training: Iterable[str]) -> str:
    """The label of the runs bar: 'runs', or 'runs: <what trains now>' (never 'runs ()')."""
    labels = list(training)
    return f"runs: {', '.join(labels)}" if labels else "runs"


class StudyDisplay:
    """Bars for the runs, the run training now, and the analysis running now."""

    def __init__(
        self, console: Console, err_console: Console, quiet: bool, todo: int, parallel: bool
    ) -> None:
        self.console, self.err_console, self.quiet = console, err_console, quiet
        self.parallel = parallel
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
        )
        self.runs = self.bars.add_task("runs", total=todo, visible=todo > 0)
        self.step = self.bars.add_task("", total=1, visible=False)
        # One bar per analysis running now: analyses may run side by side (``jobs`` > 1).
        self.analysis_bars: dict[str, Any] = {}
        self.current: dict[str, Any] = {}
        self.training: dict[str, str] = {}
        self.todo = todo
        self.started = time.perf_counter()
        self.estimates: dict[str, str] = {}

    @contextmanager
    def shown(self) -> Iterator[StudyEvents]:
        with self.bars:
            yield self.events()

    def events(self) -> StudyEvents:
        return StudyEvents(
            run_start=self.run_start,
            run_step=self.run_step,
            run_end=self.run_end,
            runs_update=self.runs_update,
            runs_done=self.runs_done,
            analysis=self.analysis,
            analysis_tick=self.analysis_tick,
        )

    # ------------------------------------------------------------------ runs
    def run_start(self, run: Any, index: int, total: int) -> None:
        if self.parallel:  # runs train in worker processes: show which, not their steps
            self.training[run.id] = run_label(run)
            self.bars.update(self.runs, description=runs_description(self.training.values()))
            return
        self.current.update(label=run_label(run), epochs=run.spec.train.epochs)
        # reset() restarts the bar's clock: its elapsed time is this run's.
        self.bars.reset(self.step, description=self.current["label"], visible=True)

    def run_step(self, run_id: str, step: int, total: int) -> None:
        epochs = self.current.get("epochs", 0)
        epoch = min(epochs, 1 + step * epochs // max(total, 1))
        label = f"{self.current.get('label', run_id)} · epoch {epoch}/{epochs}"
        self.bars.update(self.step, completed=step, total=total, description=label)

    def run_end(self, run: Any, summary: dict[str, Any] | None, error: str | None) -> None:
        self.bars.advance(self.runs)
        if self.training.pop(run.id, None) is not None:
            self.bars.update(self.runs, description=runs_description(self.training.values()))
        if error:
            self.bars.console.print(f"[red]failed[/] {run_label(run)}: {error}", highlight=False)
        elif self.quiet and summary is not None:
            at_chance = (summary.get("chance") or {}).get("at_chance")
            self.console.print(
                f"done {run_label(run)}: {summary['metric_name']} {summary['final_metric']:.4f} "
                f"({summary['seconds']:.1f}s){' - at chance level' if at_chance else ''}",
                highlight=False,
            )

    def runs_update(self, finished: int, running: list[str]) -> None:
        label = runs_description([f"{len(running)} training"] if running else [])
        self.bars.update(self.runs, description=label)
        if self.quiet:
            self.console.print(f"{finished}/{self.todo} runs finished, {len(running)} running")

    def runs_done(self, outcome: dict[str, str]) -> None:
        elapsed = time.perf_counter() - self.started
        trained = sum(v == "done" for v in outcome.values())
        failed = sum(v.startswith("failed") for v in outcome.values())
        self.bars.update(self.step, visible=False)
        self.bars.console.print(
            f"trained {trained} runs in {elapsed:.0f}s ({elapsed / 60:.1f} min); {failed} failed",
            highlight=False,
        )

    # ------------------------------------------------------------------ analyses
    def analysis(self, name: str, message: str, seconds: float | None) -> None:
        if message == "running":
            self.bars.update(self.step, visible=False)
            guess = self.estimates.get(name)
            label = f"analysis {name}" + (f" (estimated {guess.split(' (')[0]})" if guess else "")
            self.analysis_bars[name] = self.bars.add_task(label, total=1)
            return
        if message.startswith("estimated: "):
            # Said before the analysis starts, on a terminal and with --quiet alike: at paper
            # scale an analysis can take hours, and this is when to decide to wait or not.
            self.estimates[name] = message.removeprefix("estimated: ")
            self.bars.console.print(
                f"analysis {name}: {escape(message)}", highlight=False, soft_wrap=True
            )
            return
        # A reused result took no time worth saying (its clock readings can differ by -1e-5).
        took = f" ({seconds:.1f}s)" if seconds is not None and message != "cached" else ""
        if seconds is not None and name in self.analysis_bars:
            self.bars.remove_task(self.analysis_bars.pop(name))
        if message.startswith("failed"):
            self.err_console.print(
                f"[red]analysis {name}: {escape(message)}[/]{took}",
                highlight=False,
                soft_wrap=True,
            )
            return
        self.bars.console.print(
            f"analysis {name}: {escape(message)}{took}", highlight=False, soft_wrap=True
        )

    def analysis_tick(self, name: str, done: int, total: int, what: str) -> None:
        if name not in self.analysis_bars:
            return
        self.bars.update(
            self.analysis_bars[name],
            completed=done,
            total=max(total, 1),
            description=f"analysis {name}: {what}",
        )


__all__ = ["StudyDisplay", "run_label", "runs_description"]
