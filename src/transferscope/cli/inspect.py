"""The ``transferscope`` commands that only look: ``config show|presets``, ``data show|list`` and
``status``.

They read configs, presets, data sources and study directories and print what they find; none
writes anything. They are registered on :data:`transferscope.cli.app.app` when the package
:mod:`transferscope.cli` imports this module, so ``transferscope --help`` lists them with the commands that run studies.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from transferscope import config as config_mod
from transferscope.cli.app import app, console, friendly_errors, resolve_config, set_data_dir
from transferscope.errors import TransferscopeError

config_app = typer.Typer(
    help="Inspect study configs and presets.", no_args_is_help=True, rich_markup_mode=None
)
data_app = typer.Typer(help="Inspect data sources.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")


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


@app.command("status")
@friendly_errors
def status_cmd(
    directory: Path = typer.Argument(..., help="a study directory"),
    verify: bool = typer.Option(
        False, "--verify", help="also compare every file's SHA-256 with its run's DONE (reads them)"
    ),
) -> None:
    """List every run of a study: done / damaged / partial / failed / pending, final metric, wall
    time, and whether the final metric is at chance level; then runs on disk the plan no longer
    uses."""
    from transferscope import paths
    from transferscope.studydir import integrity
    from transferscope.studydir.store import StudyStore

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
    details: list[str] = []  # in full below the table, which may be narrower than they are
    for run in plan.runs:
        state = store.state(run.id, checksums=verify)
        counts[state] = counts.get(state, 0) + 1
        summary = store.summary(run.id) if state == "done" else None
        summary = summary or {}
        variant = run.shuffle or (f"k={run.checkpoint:g}" if run.checkpoint is not None else "")
        if run.same_init_as:
            variant = "same init"
        metric = (
            f"{summary.get('metric_name', '')} {summary['final_metric']:.4f}".strip()
            if "final_metric" in summary
            else ""
        )
        seconds = f"{summary['seconds']:.0f}s" if "seconds" in summary else ""
        shown: str = state
        if state == "damaged":
            details.append(f"damaged {run.id}: {store.damage(run.id, checksums=verify)}")
        elif state == "failed":
            why = integrity.run_status(store.run_dir(run.id)).problem
            log = store.run_dir(run.id) / paths.RUN_LOG
            details.append(f"failed {run.id}: {why} (its log: {log})")
        elif summary:
            chance = integrity.chance_of(store.run_dir(run.id), summary)
            if chance is not None and chance["at_chance"]:
                shown = "at chance"
                details.append(
                    f"at chance {run.id}: {metric} is within noise of chance "
                    f"({chance['chance']:.3g} ± {chance['band']:.2g})"
                )
        table.add_row(run.id, str(run.seed), variant, shown, metric, seconds)
    console.print(table)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for line in details:
        console.print(line, highlight=False, soft_wrap=True)
    if counts.get("damaged") or counts.get("failed"):
        console.print(
            f"damaged and failed runs are trained again by `transferscope run --out {directory}`",
            highlight=False,
        )
    planned = {r.id for r in plan.runs}
    unused = [rid for rid in store.runs_on_disk() if rid not in planned]
    if unused:
        console.print(
            f"{len(unused)} runs on disk are not in the current plan (left by an earlier config; "
            "analyses and the report do not use them):",
            highlight=False,
        )
        for rid in unused:
            console.print(f"  {rid}  {store.state(rid)}", highlight=False)
