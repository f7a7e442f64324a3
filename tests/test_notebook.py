"""transferscope.open_study: a study directory's typed results and tables, checked against its
JSON files read independently."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

import transferscope
from test_report import EVIL, make_study
from transferscope.analyses.similarity import SimilarityResult
from transferscope.errors import TransferscopeError
from transferscope.report import evaluate_findings, load_study

pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_study(tmp_path_factory.mktemp("nb") / "study")
    rows = [
        {"epoch": 0.0, "step": 0, "split": "test", "metric": 0.1, "metric_name": "accuracy"},
        {"epoch": 1.0, "step": 10, "split": "test", "metric": 0.8, "loss": 0.5, "lr": 0.1},
    ]
    (root / "runs" / "PT-1" / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    return root


def _doc(root: Path, name: str) -> dict:
    return json.loads((root / "analyses" / f"{name}.json").read_text())


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _same(a, b) -> bool:
    """Equal, or both missing (pandas holds a missing float as NaN)."""
    return (_missing(a) and _missing(b)) or a == b


def test_runs_table_has_every_planned_run_with_its_state(root: Path) -> None:
    study = transferscope.open_study(root)
    runs = study.runs.set_index("run")
    plan = json.loads((root / "plan.json").read_text())["runs"]
    assert list(runs.index) == [r["id"] for r in plan]
    assert runs.loc["RIT-failed", "state"] == "failed"
    assert "out of memory" in runs.loc["RIT-failed", "error"]
    assert runs.loc["PT-pending", "state"] == "pending"
    assert runs.loc["PT-1", "final_metric"] == 0.9 and runs.loc["PkT-x", "checkpoint"] == 0.5
    assert [r.id for r in study.plan] == list(runs.index)


def test_result_is_the_typed_model_and_says_why_when_missing(root: Path, tmp_path: Path) -> None:
    """An analysis not run raises with the reason; a skipped one is returned, reason inside."""
    study = transferscope.open_study(root)
    assert isinstance(study.result("similarity"), SimilarityResult)
    partial = transferscope.open_study(make_study(tmp_path / "partial", complete=False))
    with pytest.raises(TransferscopeError, match=r"interpolation\.json does not exist"):
        partial.result("interpolation")
    assert partial.result("similarity").reason == "runs not finished: PT-<b>1</b>"
    with pytest.raises(TransferscopeError, match="similarity"):
        study.result("similarityy")
    with pytest.raises(TransferscopeError, match="not a study directory"):
        transferscope.open_study(tmp_path / "partial" / "runs")


def test_cka_table_matches_the_json(root: Path) -> None:
    table = transferscope.open_study(root).cka
    expected = [
        (target, p["pair"], tuple(p["runs"]), layer, value["cka"])
        for target, entry in _doc(root, "similarity")["targets"].items()
        for p in entry["pairs"]
        if p["status"] == "ok"
        for layer, value in p["layers"].items()
    ]
    got = list(table[["target", "pair", "runs", "layer", "cka"]].itertuples(index=False, name=None))
    assert got == expected and len(got) == 2 * 5 * 4
    # Pivoting gives the figure's series: P-T/P-T falls by 0.1 a layer from 0.9.
    pivot = table[table.target == "digits"].pivot_table(
        index="layer", columns="pair", values="cka", sort=False
    )
    assert list(pivot["P-T/P-T"]) == pytest.approx([0.9, 0.8, 0.7, 0.6])


def test_distance_table_matches_the_json(root: Path) -> None:
    table = transferscope.open_study(root).distances
    doc = _doc(root, "distance")["targets"]["digits"]
    for p in doc["pairs"]:
        rows = table[(table.target == "digits") & (table.pair == p["pair"])]
        if p["status"] != "ok":
            assert rows.empty
            continue
        assert dict(zip(rows.module, rows.distance, strict=True)) == p["per_module"]
        assert set(rows.total) <= {p["total"]}
        assert all(_same(k, p.get("k")) for k in rows.k)


def test_barrier_table_holds_every_measured_path(root: Path) -> None:
    table = transferscope.open_study(root).barriers
    interp = [p for p in _doc(root, "interpolation")["targets"]["digits"]["pairs"]]
    linear = table[table.analysis == "interpolation"]
    ok = [p for p in interp if p["status"] == "ok"]
    assert list(linear.pair) == [p["pair"] for p in ok]
    assert list(linear.barrier_metric) == [p["barrier_metric"] for p in ok]
    assert set(linear.path) == {"linear"}
    aligned = [
        p for p in _doc(root, "alignment")["targets"]["digits"]["pairs"] if p["status"] == "ok"
    ]
    rows = table[(table.analysis == "alignment") & (table.path == "aligned")]
    assert list(rows.barrier_metric) == [p["aligned"]["barrier_metric"] for p in aligned]


def test_criticality_table_matches_the_json(root: Path) -> None:
    table = transferscope.open_study(root).criticality
    doc = _doc(root, "criticality")["targets"]
    assert set(table.target) == {"digits"}  # the other target's kinds were skipped
    for kind in ("P-T", "RI-T"):
        rows = table[table.kind == kind]
        assert list(rows.module) == doc["digits"][kind]["modules"]
        mu = doc["digits"][kind]["mu"]
        assert all(_same(rows.mu.iloc[i], mu[m]) for i, m in enumerate(rows.module))
    infeasible = table[(table.kind == "P-T") & table.mu.isna()]
    assert list(infeasible.module) == ["l2.conv2"] and (infeasible.mu_bound == 1e6).all()


def test_findings_table_matches_the_report(root: Path) -> None:
    table = transferscope.open_study(root).findings
    findings = evaluate_findings(load_study(root))
    assert len(table) == sum(len(f.per_target) for f in findings)
    for f in findings:
        rows = table[table.claim == f.id]
        assert set(rows.paper_overall) == {f.paper}
        assert dict(zip(rows.target, rows.paper, strict=True)) == f.targets
        if f.controlled_rule is None:
            assert rows.controlled.isna().all() and rows.controlled_overall.isna().all()
        else:
            assert set(rows.controlled_overall) == {f.controlled}
            expected = {t.target: t.controlled.verdict for t in f.per_target if t.controlled}
            assert {
                k: v for k, v in zip(rows.target, rows.controlled, strict=True) if k in expected
            } == expected


def test_not_measured_names_every_skip_with_its_reason(root: Path, tmp_path: Path) -> None:
    table = transferscope.open_study(root).not_measured
    got = {(r.analysis, r.target, r.part): r.reason for r in table.itertuples()}
    assert got[("distance", "digits", "RI-T/P")] == "P's weights <missing>"
    assert got[("criticality", EVIL, "P-T")] == "P-T <not finished>"
    assert ("similarity", "digits", "P-T/P-T") not in got
    partial = transferscope.open_study(make_study(tmp_path / "partial", complete=False))
    # A whole analysis has no target (missing: NaN in pandas' string columns).
    gaps = {
        (r.analysis, None if _missing(r.target) else r.target): r.reason
        for r in partial.not_measured.itertuples()
    }
    assert gaps[("interpolation", None)].endswith("(the analysis has not been run)")
    assert gaps[("similarity", None)] == "runs not finished: PT-<b>1</b>"


def test_learning_curves_read_each_runs_metrics(root: Path) -> None:
    table = transferscope.open_study(root).learning_curves
    assert list(table.run) == ["PT-1", "PT-1"]
    assert list(table.metric) == [0.1, 0.8] and list(table.kind) == ["P-T", "P-T"]
    assert table.lr.iloc[1] == 0.1 and math.isnan(table.loss.iloc[0])


def test_tables_without_pandas_name_the_extra(root: Path, monkeypatch) -> None:
    study = transferscope.open_study(root)
    assert study.result("curves").targets["digits"].status == "ok"  # typed: no pandas needed
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(TransferscopeError, match=r"pip install transferscope\[notebook\]"):
        _ = study.runs
