"""The ``transferscope`` command: the app, its error handling, and the commands that run studies
(``run``, ``estimate``, ``analyze``, ``report``).

The commands that only look (``config``, ``data``, ``status``) are in :mod:`transferscope.cli.inspect`,
registered on the same app.

Every error a user can cause is a :class:`TransferscopeError`; the CLI prints its one-line message
without a traceback and exits with status 2.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand

from transferscope import config as config_mod
from transferscope import limits
from transferscope.errors import TransferscopeError, TransferscopeWarning

# Plain (click-style) help: the rich layout prints a '<bool>' type beside every flag, --help
# included, which reads as if the flag took a value.
app = typer.Typer(
    help="What did my pre-trained model actually transfer? Run transfer-learning studies.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)

# Messages name paths: a line is never broken mid-message (logs and tests read them whole).
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def _show_warning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """transferscope's own warnings as one line each; others the usual way."""
    if issubclass(category, TransferscopeWarning):
        err_console.print(
            f"[bold yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True
        )
    else:
        _python_showwarning(message, category, *args, **kwargs)


_python_showwarning = warnings.showwarning


def friendly_errors(fn: F) -> F:
    """Print a user error as one line (no traceback) and exit 2; warnings as one line each."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.showwarning = _show_warning
        try:
            return fn(*args, **kwargs)
        except TransferscopeError as e:
            # Escaped: messages hold brackets (e.g. 'transferscope[ray]') that are not markup.
            err_console.print(
                f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def set_data_dir(data_dir: Path | None) -> None:
    """``--data-dir`` is the same as ``TRANSFERSCOPE_DATA``: where sources look first."""
    if data_dir is not None:
        if not data_dir.is_dir():
            raise TransferscopeError(f"--data-dir '{data_dir}' is not a directory")
        os.environ["TRANSFERSCOPE_DATA"] = str(data_dir)


def check_count(option: str, value: int | None) -> None:
    """A count given on the command line (``--steps``) must be 1 or more; thread and process
    counts are also bounded by the machine (:mod:`transferscope.limits`)."""
    if value is not None and value < 1:
        raise TransferscopeError(f"{option} must be 1 or more, got {value}")


def check_machine(cfg: config_mod.StudyConfig, threads_given: bool, jobs_given: bool) -> None:
    """The config's thread and process counts within what this machine has (:mod:`.limits`):
    each alone, and runs side by side times threads per run."""
    in_config = " (in the study's config)"
    threads = "--threads" if threads_given else "num_threads"
    jobs = "--jobs" if jobs_given else "jobs"
    limits.check_count(threads, cfg.num_threads, where="" if threads_given else in_config)
    limits.check_count(jobs, cfg.jobs, where="" if jobs_given else in_config)
    limits.check_count("report.workers", cfg.report.workers, where=in_config)
    if cfg.num_threads and cfg.jobs > 1:
        limits.check_product(
            f"{threads} {cfg.num_threads} per run × {jobs} {cfg.jobs} runs at once",
            cfg.num_threads,
            cfg.jobs,
        )


def resolve_config(target: str | None, preset: str | None) -> config_mod.StudyConfig:
    """A config from a YAML file, a preset name, or the default preset (mini); a file's data
    source and model options are checked here (:func:`transferscope.config.load`)."""
    if target and preset:
        raise TransferscopeError("give either a config file or --preset, not both")
    if target:
        path = Path(target)
        if not path.exists() and not target.endswith((".yaml", ".yml")):
            # A bare word is most likely a preset name: say so rather than 'file not found'.
            return config_mod.load_preset(target)
        return config_mod.load(path)
    return config_mod.load_preset(preset or "mini")


@app.command("run")
@friendly_errors
def run_cmd(
    config: str = typer.Argument(None, help="study YAML file or preset name (default: mini)"),
    preset: str = typer.Option(None, "--preset", "-p", help="a shipped preset name"),
    out: Path = typer.Option(None, "--out", "-o", help="study directory (default: the config's)"),
    data_dir: Path = typer.Option(None, "--data-dir", help="where data sources look first"),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N, mps"),
    threads: int = typer.Option(None, "--threads", help="CPU threads for torch (per run)"),
    jobs: int = typer.Option(
        None, "--jobs", "-j", help="runs trained at once on this machine (local executor)"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars (CI logs)"),
    analyses: bool = typer.Option(True, "--analyses/--no-analyses", help="analyse after training"),
    skip_bad_images: bool = typer.Option(
        False,
        "--skip-bad-images",
        help="leave unreadable image files out (listed in each run's bad_images.json and the "
        "report) instead of stopping at the first",
    ),
    executor: str = typer.Option("local", "--executor", help="local, or ray (a Ray cluster)"),
    address: str = typer.Option(
        None, "--address", help="Ray cluster address (with --executor ray)"
    ),
    plan_only: bool = typer.Option(
        False,
        "--plan-only",
        help="write the plan, list runs, print the study's size and estimated device-hours, stop",
    ),
    force: bool = typer.Option(
        False, "--force", help="run a config that differs from the study already in --out"
    ),
    seeds: str = typer.Option(
        None,
        "--seeds",
        help="the seeds, comma-separated (e.g. 0,1,2): on an existing study, more seeds grow it "
        "(only the new runs train)",
    ),
) -> None:
    """Run (or resume) a study: plan, train every run not yet done, analyse, say where it is.

    On a directory that already holds a study, no config resumes it with its own (study.yaml); a
    config that only adds seeds, targets or shuffle seeds grows it (only the new runs train); a
    config that differs otherwise is refused unless --force.
    """
    from transferscope.studydir.lock import StudyLock
    from transferscope.studydir.store import StudyStore

    set_data_dir(data_dir)
    limits.check_count("--threads", threads)
    limits.check_count("--jobs", jobs)
    if executor not in ("local", "ray"):
        raise TransferscopeError(f"unknown executor '{executor}'; use local or ray")
    if executor == "ray":
        from transferscope.study.ray_executor import import_ray

        import_ray()  # fail at once, before planning, when Ray is not installed
    given = resolve_config(config, preset) if (config or preset) else None
    root = Path(out) if out is not None else (given or config_mod.load_preset("mini")).output
    store = StudyStore(root)
    store.create()
    with StudyLock(root):
        cfg = _study_config(store, given, force, _parse_seeds(seeds))
        updates: dict[str, Any] = {"output": root}
        if device is not None:
            updates["device"] = device
        if threads is not None:
            updates["num_threads"] = threads
        if jobs is not None:
            updates["jobs"] = jobs
        cfg = cfg.model_copy(update=updates)
        if executor == "local":  # on a cluster, threads are the nodes' business
            check_machine(cfg, threads is not None, jobs is not None)
        if skip_bad_images:
            cfg = config_mod.with_skip_bad_images(cfg)
        _run_study(
            store,
            cfg,
            quiet=quiet,
            analyses=analyses,
            executor=executor,
            address=address,
            plan_only=plan_only,
        )


def _parse_seeds(text: str | None) -> list[int] | None:
    """``--seeds 0,1,2`` as a list (None when not given)."""
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise TransferscopeError(
            f"--seeds {text!r}: give comma-separated integers, e.g. --seeds 0,1,2"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise TransferscopeError(
            f"--seeds {text!r}: give one or more distinct integers, e.g. --seeds 0,1,2"
        )
    return seeds


def _with_seeds(cfg: config_mod.StudyConfig, seeds: list[int]) -> config_mod.StudyConfig:
    """``cfg`` with ``seeds``, validated as the config's own seeds are."""
    return config_mod.StudyConfig.model_validate({**cfg.model_dump(mode="json"), "seeds": seeds})


def _study_config(
    store: Any,
    given: config_mod.StudyConfig | None,
    force: bool,
    seeds: list[int] | None = None,
) -> config_mod.StudyConfig:
    """The config to run: the given one, or the study's own when none is given, with ``seeds``
    (``--seeds``) in place of its seeds.

    A config that only grows the study (more seeds, targets, shuffle seeds) is run there; one
    that differs otherwise is refused (naming the keys) unless ``force``.
    A directory that holds runs but no readable study.yaml matching its plan is never given a new
    default study: without a config and ``force`` it is an error naming the file and the fix.
    """
    if given is not None and seeds is not None:
        given = _with_seeds(given, seeds)
    if not store.is_study():
        if store.holds_runs() and not (given is not None and force):
            raise store.missing_config_error()
        cfg = given or config_mod.load_preset("mini")
        return _with_seeds(cfg, seeds) if seeds is not None else cfg
    if given is None:
        cfg = store.read_config()
        if seeds is None:
            console.print(
                f"resuming the study in {store.root} with its own config (study.yaml)",
                highlight=False,
                soft_wrap=True,
            )
            return cfg
        given = _with_seeds(cfg, seeds)
    try:
        old = store.read_config()
    except TransferscopeError as damaged:
        # study.yaml does not match its plan (or does not read). The config given is taken when
        # it is what study.yaml says (a run killed between writing study.yaml and plan.json), or
        # with --force; anything else stops before a file is written.
        try:
            same = not config_mod.study_changes(store.read_config(verify=False), given)
        except TransferscopeError:
            same = False
        if same or force:
            return given
        raise damaged from None
    changes = config_mod.study_changes(old, given)
    if not changes:
        return given
    growth = config_mod.study_growth(old, given)
    if growth:
        console.print(
            f"growing the study in {store.root}: {escape('; '.join(growth))}; finished runs are "
            "kept, the new ones train, and the analyses that read them are computed again",
            highlight=False,
            soft_wrap=True,
        )
        return given
    shown = ", ".join(changes[:6]) + (f" and {len(changes) - 6} more" if len(changes) > 6 else "")
    if not force:
        raise TransferscopeError(
            f"{store.root} holds a study with another config (differs in {shown}); rerun "
            "without a config to resume that study, give --force to run the new config there "
            "(finished runs stay on disk; `transferscope status` lists those no longer used), "
            "or choose another --out"
        )
    console.print(
        f"[yellow]the config differs from the study's in {escape(shown)}; going on (--force)[/]",
        highlight=False,
        soft_wrap=True,
    )
    return given


def _run_study(
    store: Any,
    cfg: config_mod.StudyConfig,
    *,
    quiet: bool,
    analyses: bool,
    executor: str,
    address: str | None,
    plan_only: bool,
) -> None:
    """Plan, train, analyse and report ``cfg`` in ``store`` (the caller holds its lock)."""

    import torch

    from transferscope.cli.progress import StudyDisplay, run_label
    from transferscope.study.executors import LocalExecutor
    from transferscope.studydir.data_changes import retrain_changed
    from transferscope.studydir.inputs import DataCache, plan_study

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    cache = DataCache()
    plan = plan_study(cfg, cache)
    for spec in [cfg.source, *cfg.targets]:
        if spec.skip_bad_images and cache.bad_images(spec):
            console.print(
                f"{spec.label}: left out {len(cache.bad_images(spec))} unreadable images "
                "(listed in each of its runs' bad_images.json)",
                highlight=False,
            )
    store.clean_temporaries()
    store.write_study(cfg, plan)
    for run_id, problem in store.retrain_damaged(plan):
        console.print(
            f"[red]damaged[/] run {run_id}: {escape(problem)}; it is trained again",
            highlight=False,
            soft_wrap=True,
        )
    for run_id, problem in retrain_changed(store, plan, cache.get, cache.digest):
        console.print(
            f"[yellow]data changed[/] for run {run_id}: {escape(problem)}; it is trained again",
            highlight=False,
            soft_wrap=True,
        )
    todo = sum(not store.is_done(r.id) for r in plan.runs)
    console.print(
        f"study [bold]{cfg.name}[/] in {store.root}: {len(plan.runs)} runs, {todo} to train"
    )
    if plan_only:
        for run in plan.runs:
            console.print(f"{run.id}  {run_label(run)}  {store.state(run.id)}", highlight=False)
        _print_estimate(cfg, cache.get, is_done=store.is_done, steps=1)
        return
    display = StudyDisplay(console, err_console, quiet, todo, parallel=cfg.jobs > 1)
    with display.shown() as events:
        if executor == "ray":
            from transferscope.study.ray_executor import RayExecutor

            engine: Any = RayExecutor(store, cfg, address, events=events)
        else:
            engine = LocalExecutor(store, cfg, cache, events=events, jobs=cfg.jobs)
        outcome = engine.run(plan, analyses=analyses)
    if analyses:
        console.print(f"analyses in {store.analyses_dir.resolve()}")
        _say_timings(store.root, outcome.analyses)
        _report(store.root, force=False)
    console.print(f"study directory: {store.root.resolve()}")
    failed_runs = {k: outcome.runs[k] for k in outcome.failed_runs}
    _say_failures(store, failed_runs, outcome.failed_analyses, analysed=analyses)
    if failed_runs or outcome.failed_analyses:
        raise typer.Exit(1)


def _say_timings(root: Path, last: dict[str, str]) -> None:
    """Each analysis computed now: its estimate against the time it took."""
    from transferscope.paths import timing_path
    from transferscope.study.analyze import timing_lines

    computed = [n for n, m in last.items() if m == "done" or m.startswith("skipped")]
    for line in timing_lines({n: timing_path(root, n) for n in computed}, computed):
        console.print(line, highlight=False)


def _listed(names: list[str], most: int = 4) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _say_failures(
    store: Any, runs: dict[str, str], analyses: list[str], analysed: bool = True
) -> None:
    """One line, last, for whatever failed: runs (id -> 'failed: why') and analyses
    (``analysed``: the analyses were run)."""
    from transferscope.paths import RUN_LOG

    if not runs and not analyses:
        return
    parts = []
    blocked = [k for k, v in runs.items() if v.startswith("failed: a run it depends on")]
    own = [k for k in runs if k not in blocked]
    if len(own) == 1:
        log = store.run_dir(own[0]) / RUN_LOG
        why = runs[own[0]].removeprefix("failed: ")
        parts.append(f"run {own[0]} failed: {why} (its log: {log})")
    elif own:
        parts.append(
            f"{len(own)} runs failed ({_listed(own)}; each run's FAILED and {RUN_LOG} say why)"
        )
    if blocked:
        parts.append(f"{len(blocked)} runs that need them were not trained ({_listed(blocked)})")
    if analyses:
        parts.append(
            f"{len(analyses)} analyses failed ({', '.join(analyses)}; the report shows each "
            "failure in its section)"
        )
    if not runs:
        done = "the other analyses ran"
    elif analysed:
        done = "the other runs and the analyses that do not need them are done"
    else:
        done = "the other runs are done"
    retry = (
        f"; rerun `transferscope run --out {store.root}` to retry the failed runs" if runs else ""
    )
    err_console.print(
        f"[red]{escape('; '.join(parts))}[/]; {done}{escape(retry)}",
        highlight=False,
        soft_wrap=True,
    )


def _report(directory: Path, force: bool = True) -> Path:
    import time

    from transferscope.report import build_report
    from transferscope.report.html import report_is_current

    if not force and report_is_current(directory):
        path = Path(directory) / "report" / "index.html"
        console.print(f"report (up to date): {path.resolve()}", highlight=False)
        return path
    started = time.perf_counter()
    path = build_report(directory)
    console.print(
        f"report ({time.perf_counter() - started:.0f}s): {path.resolve()}", highlight=False
    )
    return path


def _print_estimate(
    cfg: config_mod.StudyConfig,
    load: Callable[[Any], Any],
    given: dict[str, tuple[int, int | None]] | None = None,
    is_done: Callable[[str], bool] = lambda run_id: False,
    steps: int = 3,
) -> None:
    """Calibrate on the study's device and print the estimate (study/estimate.py)."""
    from transferscope.study.estimate import estimate, format_estimate
    from transferscope.training.trainer import pick_device

    device = pick_device(cfg.device)
    console.print(f"estimating the study's cost on {device} ({steps} timed steps per model)...")
    est = estimate(cfg, load, device, given=given, is_done=is_done, steps=steps)
    for line in format_estimate(est):
        console.print(escape(line), highlight=False, soft_wrap=True)


@app.command("estimate")
@friendly_errors
def estimate_cmd(
    config: str = typer.Argument(None, help="study YAML file or preset name (default: mini)"),
    preset: str = typer.Option(None, "--preset", "-p", help="a shipped preset name"),
    device: str = typer.Option(None, "--device", help="where to calibrate: auto, cpu, cuda, ..."),
    data_dir: Path = typer.Option(None, "--data-dir", help="where data sources look first"),
    examples: list[str] = typer.Option(
        [],
        "--examples",
        "-e",
        metavar="LABEL=TRAIN[/TEST]",
        help="size of a data set that is not on this machine, e.g. imagenet=1281167/50000",
    ),
    steps: int = typer.Option(3, "--steps", help="timed steps per model calibration"),
) -> None:
    """Print a study's size and cost before running it: runs by kind, examples seen, and
    device-hours from a short calibration of each model on this machine's device, with the
    analyses' share. Data not on this machine is sized from its options or --examples."""
    from transferscope.study.estimate import parse_examples
    from transferscope.studydir.inputs import DataCache

    set_data_dir(data_dir)
    check_count("--steps", steps)
    cfg = resolve_config(config, preset)
    if device is not None:
        cfg = cfg.model_copy(update={"device": device})
    config_mod.check_references(cfg)
    _print_estimate(cfg, DataCache().get, given=parse_examples(examples), steps=steps)


@app.command("report")
@friendly_errors
def report_cmd(
    directory: Path = typer.Argument(..., help="a study directory"),
    fmt: str = typer.Option("html", "--format", help="html (DIR/report/index.html) or md (stdout)"),
) -> None:
    """Write the study's HTML report, or print its markdown summary with the findings table."""
    from transferscope.report import markdown_summary

    if fmt == "md":
        sys.stdout.write(markdown_summary(directory))
    elif fmt == "html":
        _report(directory)
    else:
        raise TransferscopeError(f"unknown report format '{fmt}'; use html or md")


ONLY_HELP = "run only this analysis (repeatable); one of: "


class ListsAnalyses(TyperCommand):
    """A command whose ``--only`` help lists the registered analyses, plug-ins included: read
    from the registry when the help is shown, so that ``transferscope --help`` and every other
    command start without importing the units."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from transferscope import registry

        for param in self.params:
            if param.name == "only":
                param.help = ONLY_HELP + ", ".join(registry.names())  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


@app.command("analyze", cls=ListsAnalyses)
@friendly_errors
def analyze_cmd(
    directory: Path = typer.Argument(..., help="a study directory"),
    only: list[str] = typer.Option(
        None,
        "--only",
        metavar="NAME",
        help=ONLY_HELP + "(the registered analyses)",
    ),
    force: bool = typer.Option(False, "--force", help="recompute results that exist"),
    data_dir: Path = typer.Option(None, "--data-dir", help="where data sources look first"),
    jobs: int = typer.Option(
        None, "--jobs", help="analyses side by side (default: the study's jobs)"
    ),
) -> None:
    """Run the analyses of a study on its finished runs; writes DIR/analyses/<name>.json."""
    from transferscope.cli.progress import StudyDisplay
    from transferscope.study.events import analyse
    from transferscope.studydir.lock import StudyLock
    from transferscope.studydir.store import StudyStore

    limits.check_count("--jobs", jobs)
    set_data_dir(data_dir)
    store = StudyStore(directory)
    store.read_plan()  # a clear error when DIR is not a study
    display = StudyDisplay(console, err_console, quiet=False, todo=0, parallel=False)
    cfg = store.read_config()
    if jobs is None:
        limits.check_count("jobs", cfg.jobs, where=f" (in {directory / 'study.yaml'})")
    limits.check_count("num_threads", cfg.num_threads, where=f" (in {directory / 'study.yaml'})")
    workers = jobs or cfg.jobs
    with StudyLock(directory), display.shown() as events:
        last = analyse(store, events, only=only or None, force=force, workers=workers)
    console.print(f"analyses in {store.analyses_dir.resolve()}")
    _say_timings(store.root, last)
    failed = [name for name, message in last.items() if message.startswith("failed")]
    _say_failures(store, {}, failed)
    if failed:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry point
    app()
