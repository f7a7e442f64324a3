"""The contract of analysis units: registered once, an analysis is everywhere it should be.

- A unit registered here (in a test module, no other file touched) is accepted by the config,
  run by ``transferscope analyze --only``, drawn in the report and judged in the findings table.
- Every built-in unit, run on a small fake study, writes a result that validates against its
  model and gives its claims the fields they need: no claim is "not measured" for lack of one.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from pydantic import Field, ValidationError
from typer.testing import CliRunner

from transferscope import config, registry
from transferscope.cli import app
from transferscope.errors import TransferscopeError
from transferscope.options import AnalysisOptions
from transferscope.report import build_report, evaluate_findings, load_study
from transferscope.study.analyze import run_analyses
from transferscope.studydir.store import StudyStore
from transferscope.unitkit.context import StudyContext, skipped
from transferscope.unitkit.results import (
    AnalysisResult,
    Entry,
    ResultMismatch,
    TargetEntry,
    load_result,
)
from transferscope.unitkit.rules import HOLDS, UNMEASURED, TargetResult
from transferscope.unitkit.unit import Analysis, Claim, ReportSection, claim

from fake_study import FakeData, fake_config, fake_study, write_runs


class CountOptions(AnalysisOptions):
    at_least: int = Field(default=1, ge=0)


class CountEntry(TargetEntry):
    finished: int
    runs: list[str]


class CountResult(AnalysisResult):
    targets: dict[str, Entry[CountEntry]] = Field(default_factory=dict)


@claim("X1", "Some P-T run finished.", "at least one finished P-T run", order=99)
def X1(e: CountEntry, target: str, data: object) -> TargetResult:
    verdict = HOLDS if e.finished >= 1 else UNMEASURED
    return TargetResult(target, verdict, f"{e.finished} finished P-T runs", "a count")


class FinishedRuns(
    Analysis,
    name="finished_runs",
    version=3,
    section=ReportSection("finished-runs", "Finished runs (a plug-in)"),
):
    """Finished P-T runs per target (a plug-in analysis)."""

    claims = (X1,)

    def compute(self, ctx: StudyContext, options: CountOptions) -> CountResult:
        targets = {}
        for spec in ctx.cfg.targets:
            runs = [r for r in ctx.independent("P-T", spec.label) if ctx.done(r)]
            targets[spec.label] = (
                {"finished": len(runs), "runs": [r.id for r in runs]}
                if len(runs) >= options.at_least
                else skipped("too few finished runs")
            )
        return CountResult.model_validate({"targets": targets})

    def render(self, page: object, target: str, e: CountEntry) -> str:
        return f"<p>plug-in count: {e.finished} finished</p>"


def _config(**analyses: object) -> config.StudyConfig:
    fields = {
        "pretrain": {"epochs": 1, "checkpoint_points": [0, 0.5, 1]},
        "finetune": {"epochs": 2},
        "randinit": {"epochs": 2},
        "seeds": [0, 1, 2],
        "shuffles": {"block_sizes": [4], "pixel": True},
        "trajectory": {"checkpoints": [0, 0.5, 1]},
        "analyses": {
            "similarity": {"max_examples": 24, "batch_size": 8},
            "interpolation": {"num_points": 5},
            "criticality": {
                "num_alphas": 3,
                "num_sigmas": 3,
                "noise_samples": 1,
                "max_examples": 16,
                "eval_max_examples": 16,
            },
            "trajectory": {"num_points": 3},
            "alignment": {"num_points": 3, "max_sweeps": 3},
            "connectivity": {"epochs": 1, "num_points": 3, "batch_size": 16},
            **analyses,
        },
    }
    try:
        return fake_config(**fields)
    except ValidationError as e:  # as a study.yaml would say it
        raise config.explain(e, "test config") from None
    except config.AnalysisOptionsError as e:
        raise TransferscopeError(f"test config: {e}") from None


def _study(tmp_path, cfg: config.StudyConfig) -> StudyStore:
    store, plan = fake_study(tmp_path / "study", cfg)
    write_runs(store, plan)
    return store


def test_a_registered_unit_is_in_the_config_the_cli_the_report_and_the_findings(tmp_path):
    with registry.registered(FinishedRuns):
        assert "finished_runs" in registry.names()
        # The config: its options validated by the unit's model, a typo named.
        cfg = _config(finished_runs={"at_least": 2})
        assert cfg.analyses.finished_runs.at_least == 2
        with pytest.raises(TransferscopeError, match=r"analyses\.finished_runs\.at_least"):
            _config(finished_runs={"at_least": -1})
        with pytest.raises(TransferscopeError, match="did you mean 'finished_runs'"):
            _config(finished_run={})
        store = _study(tmp_path, cfg)
        # The CLI: --only accepts it and writes its JSON.
        result = CliRunner().invoke(app, ["analyze", str(store.root), "--only", "finished_runs"])
        assert result.exit_code == 0, result.output
        doc = json.loads((store.root / "analyses" / "finished_runs.json").read_text())
        assert doc["status"] == "ok" and doc["version"] == 3
        assert doc["targets"]["digits"]["finished"] == 3
        # The findings table and the report.
        findings = {f.id: f for f in evaluate_findings(load_study(store.root))}
        assert findings["X1"].verdict == HOLDS
        assert findings["X1"].section == "finished-runs"
        page = build_report(store.root, formats=("png",)).read_text()
        assert "Finished runs (a plug-in)" in page
        assert "plug-in count: 3 finished" in page
        assert 'href="#finished-runs"' in page
    # Unregistered: gone from the config and the CLI again.
    assert "finished_runs" not in registry.names()
    with pytest.raises(TransferscopeError, match="unknown analysis 'finished_runs'"):
        _config(finished_runs={})


def test_a_unit_is_declared_by_its_class_statement_docstring_and_compute_signature():
    assert (FinishedRuns.name, FinishedRuns.version) == ("finished_runs", 3)
    assert FinishedRuns.section == ReportSection("finished-runs", "Finished runs (a plug-in)")
    assert FinishedRuns.title == "Finished P-T runs per target (a plug-in analysis)."
    assert (FinishedRuns.Options, FinishedRuns.Result) == (CountOptions, CountResult)
    # A compute() that does not name its options' model is an error at the class statement.
    with pytest.raises(TransferscopeError, match=r"Untyped: compute\(\) must annotate its options"):

        class Untyped(Analysis, name="untyped"):
            """Untyped."""

            def compute(self, ctx: StudyContext, options: object) -> CountResult:
                raise NotImplementedError

    class Nameless(Analysis):
        """No name."""

    with pytest.raises(TransferscopeError, match=r"Nameless needs a name.*name=\"\.\.\.\""):
        registry.register(Nameless)

    class Untitled(Analysis, name="untitled", section=FinishedRuns.section):
        pass

    with pytest.raises(TransferscopeError, match="Untitled needs a docstring"):
        registry.register(Untitled)


def test_claim_makes_the_judge_below_it_a_claim_ordered_by_its_number():
    assert isinstance(X1, Claim)
    assert (X1.id, X1.claim, X1.rule, X1.order) == (
        "X1",
        "Some P-T run finished.",
        "at least one finished P-T run",
        99,
    )
    entry = CountEntry(finished=2, runs=["a", "b"])
    assert X1.judge(entry, "digits", None) == TargetResult(
        "digits", HOLDS, "2 finished P-T runs", "a count"
    )

    def judge(e: object, target: str, data: object) -> TargetResult:
        return TargetResult(target, UNMEASURED, "")

    # Without an order, the number in the id: C2 before C10 (not the strings' order).
    c2, c10, other = (claim(i, "claim", "rule")(judge) for i in ("C2", "C10", "Z"))
    assert (c2.order, c10.order, other.order) == (2.0, 10.0, 0.0)
    assert c2.judge is judge


def test_a_result_that_does_not_match_its_model_is_named_on_load(tmp_path):
    path = tmp_path / "analyses" / "finished_runs.json"
    path.parent.mkdir()
    good = {"analysis": "finished_runs", "version": 3, "status": "ok"}
    path.write_text(json.dumps({**good, "targets": {"t": {"status": "ok", "finished": 1}}}))
    with pytest.raises(ResultMismatch, match=r"finished_runs\.json.*targets\.t\.ok\.runs"):
        load_result(CountResult, path, 3)
    path.write_text(json.dumps({**good, "version": 2, "targets": {}}))
    with pytest.raises(ResultMismatch, match="version 2 of the finished_runs analysis"):
        load_result(CountResult, path, 3)
    path.write_text("{not json")
    with pytest.raises(ResultMismatch, match="could not be read"):
        load_result(CountResult, path, 3)


@pytest.mark.slow
def test_every_registered_analysis_gives_its_claims_the_fields_they_need(tmp_path):
    """A fake study with every kind of run: each analysis's result validates against its model,
    and no claim is 'not measured' (a renamed or missing field would make it so)."""
    store = _study(tmp_path, _config())
    paths = run_analyses(store, cache=FakeData())
    assert set(paths) == set(registry.names())
    for unit in registry.units():
        result = load_result(unit.Result, paths[unit.name], unit.version)
        assert result.status == "ok", (unit.name, result.reason)
    # Rules that need an effect in the data before they can be measured (fake weights have no
    # RI-T barrier for alignment to shrink), or more targets than the fake study's one (C11's
    # rank correlation across targets); anything else not measured lacks a field.
    needs_an_effect = ("no linear barrier to shrink", "1 target(s) with a distance")
    for finding in evaluate_findings(load_study(store.root)):
        for t in finding.per_target:
            if t.verdict == UNMEASURED:
                assert any(n in t.measured for n in needs_an_effect), (finding.id, t.measured)


def test_a_start_model_asked_again_is_a_copy_of_the_one_built(tmp_path, monkeypatch):
    """A run's start model asked for again, by the same analysis or another, is a copy of the one
    built (no second initialisation), equal in every parameter and buffer to a fresh build, and
    its own: changing it changes no later copy. Retraining P (its file changes) builds P-T's
    again; what is kept stays within START_MODEL_BYTES."""
    from transferscope.unitkit import context as context_mod

    store = _study(tmp_path, _config())
    plan = store.read_plan()
    cfg = store.read_config()
    pt, rit = plan.select(kind="P-T")[0], plan.select(kind="RI-T")[0]
    monkeypatch.setattr(context_mod, "_start_models", context_mod.OrderedDict())
    fresh = StudyContext(store, cfg, plan, FakeData()).start_model(pt)
    builds: list[str] = []
    real_build = context_mod.build_start_model

    def counting(spec, *args):
        builds.append(spec.kind)
        return real_build(spec, *args)

    monkeypatch.setattr(context_mod, "build_start_model", counting)
    first = StudyContext(store, cfg, plan, FakeData()).start_model(pt)
    with torch.no_grad():
        for p in first.parameters():
            p.add_(1.0)
    again = StudyContext(store, cfg, plan, FakeData()).start_model(pt)
    assert again is not first and builds == []
    assert again.state_dict().keys() == fresh.state_dict().keys()
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in again.state_dict().items())
    ctx = StudyContext(store, cfg, plan, FakeData())
    state = torch.random.get_rng_state()
    ctx.start_model(rit)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG untouched
    assert builds == ["RI-T"]
    parent = store.weights_path(pt.spec.parent, pt.spec.parent_checkpoint or "final")
    parent.touch()  # P retrained: a new file
    os.utime(parent, ns=(parent.stat().st_atime_ns, parent.stat().st_mtime_ns + 10**9))
    ctx.start_model(pt)
    assert builds == ["RI-T", "P-T"]
    monkeypatch.setattr(context_mod, "START_MODEL_BYTES", 1)  # nothing fits: built each time
    monkeypatch.setattr(context_mod, "_start_models", context_mod.OrderedDict())
    ctx.start_model(rit)
    ctx.start_model(rit)
    assert builds == ["RI-T", "P-T", "RI-T", "RI-T"] and not context_mod._start_models
