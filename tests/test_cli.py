"""What a new user reads from the command line: help, listings and `status` at 80 columns."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from transferscope import config
from transferscope import registry as analyses_registry
from transferscope.cli import app
from transferscope.cli.progress import runs_description as _runs_description
from transferscope.data import registry
from transferscope.data.base import DataInfo
from transferscope.studydir.plan import build_plan
from transferscope.studydir.store import StudyStore


@pytest.fixture
def invoke():
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), env={"COLUMNS": "80"})

    return run


@pytest.mark.parametrize(
    "command",
    [["run"], ["status"], ["analyze"], ["report"], ["config", "show"], ["data", "show"]],
)
def test_help_shows_no_type_beside_a_flag(invoke, command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--help" in result.output


def test_only_lists_every_analysis_in_help_and_on_a_bad_name(invoke, tmp_path):
    names = list(analyses_registry.names())
    text = " ".join(invoke("analyze", "--help").output.split())  # help text wraps
    for name in names:
        assert name in text
    cfg = config.load_preset("micro")
    StudyStore(tmp_path).write_study(cfg, build_plan(cfg, _infos(cfg)))
    result = invoke("analyze", str(tmp_path), "--only", "critcality")
    assert result.exit_code == 2
    assert "did you mean 'criticality'?" in result.output
    for name in names:
        assert name in result.output


def test_presets_and_data_sources_each_have_a_one_line_description(invoke):
    for command, names in (
        (["config", "presets"], config.preset_names()),
        (["data", "list"], registry.available()),
    ):
        lines = invoke(*command).output.splitlines()
        assert [line.split()[0] for line in lines] == names
        for line in lines:
            assert len(line) <= 80 and len(line.split(maxsplit=1)) == 2, line
            assert "PAPER.md" not in line


def test_status_fits_80_columns_with_whole_ids_and_the_metric_named(invoke, tmp_path):
    cfg = config.load_preset("mini")
    plan = build_plan(cfg, _infos(cfg))
    store = StudyStore(tmp_path)
    store.write_study(cfg, plan)
    for run in plan.runs:
        (store.run_dir(run.id)).mkdir(parents=True)
    longest = max(plan.runs, key=lambda r: len(r.id))
    mosaic = next(r for r in plan.runs if r.target == "fashion-mosaic")
    for run, name in ((longest, "accuracy"), (mosaic, "mean_auc")):
        store.mark_done(run.id, {"metric_name": name, "final_metric": 0.91234, "seconds": 123.4})
    output = invoke("status", str(tmp_path)).output
    lines = output.splitlines()
    assert max(len(line) for line in lines) <= 80
    for run in plan.runs:
        assert re.search(rf"^{re.escape(run.id)}\s", output, re.M), run.id
    assert "…" not in output
    assert "mean_auc 0.9123" in output
    assert f"2 done, {len(plan.runs) - 2} pending" in output


def test_the_runs_bar_never_reads_runs_with_empty_brackets():
    assert _runs_description([]) == "runs"
    assert _runs_description(["P-T digits seed 0"]) == "runs: P-T digits seed 0"


@pytest.mark.parametrize("quiet", [True, False])
def test_an_analysis_estimate_is_printed_before_it_starts_and_labels_its_bar(quiet):
    import io

    from rich.console import Console

    from transferscope.cli.progress import StudyDisplay

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=not quiet)
    display = StudyDisplay(console, console, quiet=quiet, todo=0, parallel=False)
    with display.bars:
        display.analysis("criticality", "estimated: ~40 s (1.2M forward passes)", None)
        display.analysis("criticality", "running", None)
        # Analyses side by side (jobs > 1): one bar each, ticked and removed by name.
        display.analysis("similarity", "running", None)
        display.analysis_tick("similarity", 2, 5, "pair 2 of 5")
        bars = {t.description.split(":")[0]: t for t in display.bars.tasks if t.visible}
        assert bars["analysis criticality (estimated ~40 s)"].completed == 0
        assert bars["analysis similarity"].completed == 2
        display.analysis("criticality", "done", 38.5)
        assert [t.description for t in display.bars.tasks if t.visible] == [
            "analysis similarity: pair 2 of 5"
        ]
    text = out.getvalue()
    first = text.index("analysis criticality: estimated: ~40 s (1.2M forward passes)")
    assert first < text.index("analysis criticality: done (38.5s)")


def _infos(cfg: config.StudyConfig) -> dict[str, DataInfo]:
    def info(task: str, outputs: int) -> DataInfo:
        return DataInfo("x", task, outputs, (1, 28, 28), tuple(map(str, range(outputs))))

    out = {t.label: info("multiclass", 10) for t in cfg.targets}
    out["fashion-mosaic"] = info("multilabel", 5)
    out[cfg.source.label] = info("multiclass", 10)
    return out
