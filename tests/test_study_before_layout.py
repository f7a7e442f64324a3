"""A study written by the code before the package's layout changed reads the same today.

``tests/data/study-before-layout`` is a small study (digits, a tiny Fixup ResNet, every
analysis) that the code of commit 65ee30e trained and analysed, with its findings and the
names of its report's figures in ``study-before-layout.expected.json``. Moving modules must
leave what a user's existing study means unchanged: the run ids the plan gives, the analyses'
cache keys (an existing result is reused, not recomputed), the results themselves when they are
recomputed, and the report's findings and figures.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from transferscope import config
from transferscope.cli import app
from transferscope.report import build_report, evaluate_findings, load_study
from transferscope.studydir.inputs import DataCache, plan_study

FIXTURE = Path(__file__).parent / "data" / "study-before-layout"
EXPECTED = json.loads((FIXTURE.parent / "study-before-layout.expected.json").read_text())
ANALYSES = sorted(p.stem for p in (FIXTURE / "analyses").glob("*.json"))

# Written by the runner about this computation, not part of the result.
PROVENANCE = {"computed_because", "inputs"}


def _as_written(root: Path) -> None:
    """Give every run file the time its analyses recorded: a checkout or copy stamps files with
    the time it wrote them, which the analyses' cache keys (size and time per file) would read as
    a change; the study as it was written had the recorded times."""
    for name in ANALYSES:
        inputs = json.loads((root / "analyses" / f"{name}.json").read_text())["inputs"]
        for run_id, run in inputs.get("runs", {}).items():
            for rel, (_size, mtime_ns) in run["files"].items():
                os.utime(root / "runs" / run_id / rel, ns=(mtime_ns, mtime_ns))


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    root = tmp_path / "study"
    shutil.copytree(FIXTURE, root)
    _as_written(root)
    return root


def _close(a: Any, b: Any, where: str = "") -> list[str]:
    """Where ``a`` and ``b`` (parsed JSON) differ beyond a relative 1e-4 on numbers, or an
    absolute 1e-6: a barrier is a difference of float32 losses near 1, so a sum taken in another
    order (another thread count) moves a barrier near 0 by about 1e-7 whatever its size."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _close(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: lengths {len(a)} != {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _close(x, y, f"{where}[{i}]")
        ]
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        if math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b)):
            return []
        return [f"{where}: {a} != {b}"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def test_the_plan_built_today_gives_the_run_ids_it_wrote(study: Path) -> None:
    cfg = config.from_dict(config.read_yaml((study / "study.yaml").read_text(), "study.yaml"))
    plan = plan_study(cfg, DataCache())
    written = json.loads((study / "plan.json").read_text())
    assert [r.id for r in plan.runs] == [r["id"] for r in written["runs"]]
    assert [r.model_dump(mode="json") for r in plan.runs] == written["runs"]


@pytest.mark.slow
def test_analyze_reuses_every_result_and_recomputes_the_same_numbers(study: Path) -> None:
    before = {n: (study / "analyses" / f"{n}.json").read_bytes() for n in ANALYSES}
    result = CliRunner().invoke(app, ["analyze", str(study), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    # Nothing changed, so nothing is recomputed: the files are the bytes the old code wrote.
    after = {n: (study / "analyses" / f"{n}.json").read_bytes() for n in ANALYSES}
    assert [n for n in ANALYSES if after[n] != before[n]] == []

    result = CliRunner().invoke(app, ["analyze", str(study), "--force", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    for name in ANALYSES:
        old = {k: v for k, v in json.loads(before[name]).items() if k not in PROVENANCE}
        doc = json.loads((study / "analyses" / f"{name}.json").read_text())
        new = {k: v for k, v in doc.items() if k not in PROVENANCE}
        assert _close(new, old, name) == []


def test_the_report_has_the_findings_and_figures_it_had(study: Path) -> None:
    page = build_report(study, formats=("png",))
    assert page.is_file()
    figures = sorted(p.name for p in (page.parent / "figures").iterdir())
    assert figures == EXPECTED["figures"]
    findings: dict[str, dict[str, list[str | None]]] = {}
    for f in evaluate_findings(load_study(study)):
        for t in f.per_target:
            c = t.controlled
            controlled = None if f.controlled_rule is None else (c.verdict if c else "not measured")
            findings.setdefault(f.id, {})[t.target] = [t.verdict, controlled]
    assert findings == EXPECTED["findings"]
