"""The ``transferscope`` command.

Every error a user can cause is a :class:`TransferscopeError`; the CLI prints its one-line message
without a traceback and exits with status 2.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferscope import config as config_mod
from transferscope.errors import TransferscopeError

# Plain (click-style) help: the rich layout prints a '<bool>' type beside every flag, --help
# included, which reads as if the flag took a value.
app = typer.Typer(
    help="What did my pre-trained model actually transfer? Run transfer-learning studies.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
config_app = typer.Typer(
    help="Inspect study configs and presets.", no_args_is_help=True, rich_markup_mode=None
)
data_app = typer.Typer(help="Inspect data sources.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Print a user error as one line (no traceback) and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
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


def resolve_config(target: str | None, preset: str | None) -> config_mod.StudyConfig:
    """A config from a YAML file, a preset name, or the default preset (mini)."""
    if target and preset:
        raise TransferscopeError("give either a config file or --preset, not both")
    if target:
        path = Path(target)
        if not path.exists() and not target.endswith((".yaml", ".yml")):
            # A bare word is most likely a preset name: say so rather than 'file not found'.
            return config_mod.load_preset(target)
        return config_mod.load(path)
    return config_mod.load_preset(preset or "mini")


@config_app.command("show")
@friendly_errors
def config_show(
    file: str = typer.Argument(None, help="a study YAML file (default: the mini preset)"),
    preset: str = typer.Option(None, "--preset", "-p", help="a shipped preset name"),
) -> None:
    """Print the fully resolved config (every default written out) as YAML."""
    cfg = resolve_config(file, preset)
    sys.stdout.write(config_mod.to_yaml(cfg))


@config_app.command("presets")
def config_presets() -> None:
    """List the shipped presets, each with what it is for."""
    _print_described(
        (name, config_mod.preset_description(name)) for name in config_mod.preset_names()
    )


def _print_described(items: Any) -> None:
    """One ``name  description`` line per item, the descriptions aligned."""
    rows = list(items)
    width = max((len(name) for name, _ in rows), default=0)
    for name, description in rows:
        console.print(
            f"{escape(name):<{width}}  {escape(description)}".rstrip(),
            highlight=False,
            soft_wrap=True,
        )


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise TransferscopeError(f"option '{pair}' must look like KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


@data_app.command("show")
@friendly_errors
def data_show(
    name: str = typer.Argument(..., help="data source, e.g. digits, fashion-mnist"),
    root: Path = typer.Option(None, "--root", help="directory holding the data"),
    data_dir: Path = typer.Option(None, "--data-dir", help="same as TRANSFERSCOPE_DATA"),
    option: list[str] = typer.Option([], "--option", "-o", help="source option KEY=VALUE"),
    seed: int = typer.Option(0, help="seed of the source's splits"),
) -> None:
    """Print split sizes, task type, image shape and class counts of a data source."""
    import torch

    from transferscope.data import registry

    set_data_dir(data_dir)
    splits = registry.load(name, root=root, seed=seed, **_parse_options(option))
    info = splits.info
    console.print(
        f"[bold]{name}[/]: {info.task}, {info.num_outputs} outputs, image {info.image_shape}"
    )
    table = Table("class", *splits.sizes().keys())
    counts: dict[str, torch.Tensor] = {}
    for split, ds in (("train", splits.train), ("test", splits.test), ("dev", splits.dev)):
        if ds is None:
            continue
        targets = _targets_of(ds)
        if info.task == "multiclass":
            counts[split] = torch.bincount(targets.long(), minlength=info.num_outputs)
        else:
            counts[split] = targets.float().sum(0).long()
    for i, cname in enumerate(info.class_names):
        table.add_row(cname, *(str(int(c[i])) for c in counts.values()))
    table.add_row("[bold]images[/]", *(str(n) for n in splits.sizes().values()))
    console.print(table)


def _targets_of(dataset: Any) -> Any:
    import torch

    if hasattr(dataset, "targets"):
        return torch.as_tensor(dataset.targets)
    return torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(dataset))])


@data_app.command("list")
def data_list() -> None:
    """List the data sources, each with a one-line description."""
    from transferscope.data import registry

    _print_described((name, registry.describe(name)) for name in registry.available())


def _run_label(run: Any) -> str:
    extra = []
    if run.shuffle:
        extra.append(run.shuffle)
    if run.checkpoint is not None:
        extra.append(f"k={run.checkpoint:g}")
    if run.same_init_as:
        extra.append("same init")
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"{run.spec.kind} {run.target} seed {run.seed}{tail}"


def _runs_description(training: Any) -> str:
    """The label of the runs bar: 'runs', or 'runs: <what trains now>' (never 'runs ()')."""
    labels = list(training)
    return f"runs: {', '.join(labels)}" if labels else "runs"


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
    plan_only: bool = typer.Option(False, "--plan-only", help="write the plan, list runs, stop"),
) -> None:
    """Run (or resume) a study: plan, train every run not yet done, analyse, say where it is."""
    import time

    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from transferscope.study.executors import DataCache, LocalExecutor, plan_study
    from transferscope.study.store import StudyStore

    set_data_dir(data_dir)
    if executor not in ("local", "ray"):
        raise TransferscopeError(f"unknown executor '{executor}'; use local or ray")
    if executor == "ray":
        from transferscope.study.ray_executor import import_ray

        import_ray()  # fail at once, before planning, when Ray is not installed
    cfg = resolve_config(config, preset)
    updates: dict[str, Any] = {}
    if out is not None:
        updates["output"] = out
    if device is not None:
        updates["device"] = device
    if threads is not None:
        updates["num_threads"] = threads
    if jobs is not None:
        updates["jobs"] = jobs
    cfg = cfg.model_copy(update=updates)
    if skip_bad_images:
        cfg = config_mod.with_skip_bad_images(cfg)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    store = StudyStore(Path(cfg.output))
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
    started = time.perf_counter()
    todo = sum(not store.is_done(r.id) for r in plan.runs)
    console.print(
        f"study [bold]{cfg.name}[/] in {store.root}: {len(plan.runs)} runs, {todo} to train"
    )
    if plan_only:
        for run in plan.runs:
            console.print(f"{run.id}  {_run_label(run)}  {store.state(run.id)}", highlight=False)
        return

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    )
    runs_task = progress.add_task("runs", total=todo)
    step_task = progress.add_task("", total=1, visible=False)

    current: dict[str, Any] = {}

    running: dict[str, str] = {}

    def on_start(run: Any, i: int, n: int) -> None:
        if cfg.jobs > 1:  # runs train in worker processes: show which, not their steps
            running[run.id] = _run_label(run)
            progress.update(runs_task, description=_runs_description(running.values()))
            return
        current.update(label=_run_label(run), epochs=run.spec.train.epochs)
        # reset() restarts the bar's clock: its elapsed time is this run's.
        progress.reset(step_task, description=current["label"], visible=True)

    def on_step(run_id: str, step: int, total: int) -> None:
        epochs = current["epochs"]
        epoch = min(epochs, 1 + step * epochs // max(total, 1))
        label = f"{current['label']} · epoch {epoch}/{epochs}"
        progress.update(step_task, completed=step, total=total, description=label)

    def on_end(run: Any, summary: dict[str, Any] | None, error: str | None) -> None:
        progress.advance(runs_task)
        if running.pop(run.id, None) is not None:
            progress.update(runs_task, description=_runs_description(running.values()))
        if error:
            progress.console.print(f"[red]failed[/] {_run_label(run)}: {error}", highlight=False)
        elif quiet:
            console.print(
                f"done {_run_label(run)}: {summary['metric_name']} {summary['final_metric']:.4f} "
                f"({summary['seconds']:.1f}s)",
                highlight=False,
            )

    if executor == "ray":
        from transferscope.study.ray_executor import RayExecutor

        def on_update(finished: int, running: list[str]) -> None:
            progress.update(
                runs_task,
                description=_runs_description([f"{len(running)} training"] if running else []),
            )
            if quiet:
                console.print(f"{finished}/{todo} runs finished, {len(running)} running")

        def on_analysis(name: str, message: str, seconds: float) -> None:
            console.print(f"analysis {name}: {message} ({seconds:.1f}s)", highlight=False)

        engine: Any = RayExecutor(
            store, cfg, address, on_run_end=on_end, on_update=on_update, on_analysis=on_analysis
        )
    else:
        engine = LocalExecutor(
            store,
            cfg,
            cache,
            on_run_start=on_start,
            on_run_end=on_end,
            progress=on_step,
            jobs=cfg.jobs,
        )
    with progress:
        outcome = engine.run(plan) if executor == "local" else engine.run(plan, analyses)
    failed = [k for k, v in outcome.items() if v.startswith("failed")]
    elapsed = time.perf_counter() - started
    console.print(
        f"trained {sum(v == 'done' for v in outcome.values())} runs in {elapsed:.0f}s "
        f"({elapsed / 60:.1f} min); {len(failed)} failed"
    )
    if analyses:
        if executor == "local":  # the Ray executor ran them as tasks
            _analyze(store, None, force=False, cache=cache)
        _report(store.root, force=False)
    console.print(f"study directory: {store.root.resolve()}")
    if failed:
        raise typer.Exit(1)


def _analyze(store: Any, only: list[str] | None, force: bool, cache: Any = None) -> None:
    import time

    from transferscope.study.analyze import run_analyses

    started: dict[str, float] = {}

    def progress(name: str, message: str) -> None:
        if message == "running":
            started[name] = time.perf_counter()
            return
        took = f" ({time.perf_counter() - started[name]:.1f}s)" if name in started else ""
        console.print(f"analysis {name}: {message}{took}", highlight=False)

    written = run_analyses(store, only=only, progress=progress, force=force, cache=cache)
    if written:
        console.print(f"analyses in {store.analyses_dir.resolve()}")


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


@app.command("analyze")
@friendly_errors
def analyze_cmd(
    directory: Path = typer.Argument(..., help="a study directory"),
    only: list[str] = typer.Option(
        None,
        "--only",
        metavar="NAME",
        help="run only this analysis (repeatable); one of: "
        + ", ".join(config_mod.AnalysesSpec.model_fields),
    ),
    force: bool = typer.Option(False, "--force", help="recompute results that exist"),
    data_dir: Path = typer.Option(None, "--data-dir", help="where data sources look first"),
) -> None:
    """Run the analyses of a study on its finished runs; writes DIR/analyses/<name>.json."""
    from transferscope.study.store import StudyStore

    set_data_dir(data_dir)
    store = StudyStore(directory)
    store.read_plan()  # a clear error when DIR is not a study
    _analyze(store, only or None, force)


@app.command("status")
@friendly_errors
def status_cmd(directory: Path = typer.Argument(..., help="a study directory")) -> None:
    """List every run of a study: done / partial / failed / pending, final metric, wall time."""
    from transferscope.study.store import StudyStore

    store = StudyStore(directory)
    plan = store.read_plan()
    # Fits 80 columns: the id already names the kind and the target, so the id is shown whole
    # instead of three truncated columns, and the metric says what it measures.
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("run", no_wrap=True, min_width=max((len(r.id) for r in plan.runs), default=3))
    table.add_column("seed", justify="right")
    for name in ("variant", "state", "final metric"):
        table.add_column(name, no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    counts: dict[str, int] = {}
    for run in plan.runs:
        state = store.state(run.id)
        counts[state] = counts.get(state, 0) + 1
        summary = store.summary(run.id) or {}
        variant = run.shuffle or (f"k={run.checkpoint:g}" if run.checkpoint is not None else "")
        if run.same_init_as:
            variant = "same init"
        metric = (
            f"{summary.get('metric_name', '')} {summary['final_metric']:.4f}".strip()
            if "final_metric" in summary
            else ""
        )
        seconds = f"{summary['seconds']:.0f}s" if "seconds" in summary else ""
        table.add_row(run.id, str(run.seed), variant, state, metric, seconds)
    console.print(table)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


def main() -> None:  # pragma: no cover - console entry point
    app()
