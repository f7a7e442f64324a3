"""The negative control: a micro study whose P is an untrained network.

Nothing was pre-trained, so nothing can have been transferred: a controlled verdict (is
pre-training the cause?) that says "holds" here is measuring something other than pre-training
(a shared start, a smaller learning rate), and so is any claim about what P's training
transferred. The paper's comparisons may hold: on a small study they cannot tell pre-training
from a shared start, and the report must say so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from transferscope.report import evaluate_findings, load_study
from transferscope.report.findings import HOLDS, INCONCLUSIVE
from transferscope.studydir.store import StudyStore

from conftest import requires_fashion
from study_checks import invoke

pytestmark = [requires_fashion, pytest.mark.slow]


@pytest.fixture(scope="module")
def control(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("control")
    config = folder / "control.yaml"
    # The analyses behind the claims checked here; the others (and shuffled runs, which only C2
    # reads) would add minutes without deciding anything this test asserts.
    off = {"enabled": False}
    study = {
        "preset": "micro",
        "negative_control": True,
        "shuffles": {"block_sizes": [], "pixel": False},
        "analyses": {
            name: off
            for name in ("interpolation", "criticality", "trajectory", "alignment", "connectivity")
        },
    }
    config.write_text(yaml.safe_dump(study))
    out = folder / "study"
    args = ("run", str(config), "--out", str(out), "--quiet", "--threads", "1", "--jobs", "1")
    result = invoke(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_the_control_p_is_untrained(control: Path) -> None:
    store = StudyStore(control)
    plan = store.read_plan()
    p = plan.select(kind="P")[0]
    assert p.spec.train.epochs == 0
    # P's final weights are its initial ones: it never took a step.
    from transferscope.training import checkpoints as ckpt

    start = ckpt.load_weights(store.weights_path(p.id, "epoch-0"))
    final = ckpt.load_weights(store.weights_path(p.id))
    assert all((start[k] == final[k]).all() for k in start)
    assert {r.checkpoint for r in plan.select(kind="P@k-T")} == {0.0}  # the control pair only


def test_no_controlled_verdict_holds_on_the_control(control: Path) -> None:
    data = load_study(control)
    p = next(r for r in data.runs if r.kind == "P")
    assert p.chance_level  # the guard's cue: P learned nothing on its source
    findings = {f.id: f for f in evaluate_findings(data)}
    with_control = [f for f in findings.values() if f.controlled_rule is not None]
    assert {f.id for f in with_control} >= {"C1", "C3", "C4", "C5", "C6", "C8"}
    for f in with_control:
        assert f.controlled != HOLDS, (f.id, f.per_target[0].controlled)
        for t in f.per_target:
            if t.controlled is not None and t.controlled.verdict == INCONCLUSIVE:
                assert p.id in t.controlled.voided_by  # named, with why
    # Claims about what P's training transferred, without a control, never hold either.
    for claim in ("C2", "C7", "C8", "C11"):
        assert findings[claim].paper != HOLDS, (claim, findings[claim].measured)
    text = (control / "report" / "index.html").read_text()
    assert "Negative control" in text and "None holds, as it should" in text
