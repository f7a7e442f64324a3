"""The whole study on four architectures: Fixup, a BatchNorm ResNet, a ConvNeXt and a ViT.

Each test runs a nano study (the micro preset cut down: one target, one epoch, small models)
end to end in this process: every run kind, every analysis and the report. No analysis may fail
on any architecture; where one cannot apply, its result and the report say so and why.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import transferscope
from transferscope import registry
from transferscope.config import StudyConfig
from transferscope.report import build_report
from transferscope.study.executors import LocalExecutor
from transferscope.studydir.inputs import DataCache, plan_study
from transferscope.studydir.store import StudyStore

from conftest import requires_fashion

pytestmark = [requires_fashion, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def _bench_model(arch: str) -> dict[str, Any]:
    """``arch``'s model in the architectures benchmark (``bench/architectures.py``), sized for
    28x28 images: the same ConvNeXt and ViT run here at nano scale."""
    sys.path.insert(0, str(ROOT))
    try:
        from bench.architectures import ARCHITECTURES as BENCH
    finally:
        sys.path.remove(str(ROOT))
    return BENCH[arch]["model"]


# Small enough for 28x28 images and a few seconds a run on one core; resnet18 (11M parameters,
# 0.6 s a step of 32 on one core) trains on fewer examples.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "fixup-small": {"name": "fixup-small", "options": {"widths": [8, 16, 16], "stem_stride": 2}},
    "resnet18": {"name": "resnet18"},
    "convnext": _bench_model("convnext"),
    "vit": _bench_model("vit"),
}
# Source examples, pre-training epochs, target training examples, target epochs, learning rate
# (fine-tuning uses half), examples each analysis reads. What the tests check (layers, BatchNorm,
# which analyses apply, that none fails) does not depend on these sizes; resnet18 (11M
# parameters, 0.6 s a step of 32 on one core) trains the least.
RECIPES: dict[str, tuple[int, int, int, int, float, int]] = {
    "fixup-small": (512, 4, 320, 3, 0.1, 100),
    "resnet18": (64, 2, 64, 1, 0.05, 24),
    "convnext": (256, 3, 160, 2, 0.05, 50),
    "vit": (256, 3, 160, 2, 0.05, 50),
}


def nano_config(arch: str, out: Path) -> StudyConfig:
    """The micro preset cut to one small target, a few dozen steps a run and the fewest grid
    points, with ``arch``'s model."""
    micro = yaml.safe_load(
        resources.files("transferscope.config").joinpath("presets", "micro.yaml").read_text()
    )
    a = micro["analyses"]
    source, epochs, examples, target_epochs, lr, read = RECIPES[arch]
    few = {"num_points": 3, "recalibration_examples": read, "max_examples": read}
    target = {"epochs": target_epochs, "batch_size": 32, "max_train_examples": examples}
    doc = {
        **micro,
        "name": f"nano {arch}",
        "source": {"name": "fashion-mnist", "options": {"train_size": source, "test_size": 100}},
        "targets": [{"name": "digits", "options": {"test_fraction": 0.1}}],
        "model": ARCHITECTURES[arch],
        "pretrain": {"epochs": epochs, "batch_size": 32, "lr": lr, "checkpoint_points": [1]},
        "finetune": {**target, "lr": lr / 2},
        "randinit": {**target, "lr": lr},
        "shuffles": {"block_sizes": [7], "pixel": False, "seeds": [0]},
        "trajectory": {"checkpoints": [1]},
        "analyses": {
            **a,
            "similarity": {"max_examples": read},
            "criticality": {
                **a["criticality"],
                "max_examples": read,
                "eval_max_examples": read,
                "num_alphas": 2,
                "num_sigmas": 2,
                "noise_samples": 1,
            },
            "interpolation": few,
            "trajectory": few,
            "alignment": {**few, "max_sweeps": 3},
            "connectivity": {**few, "epochs": 1, "max_train_examples": read},
        },
        "output": str(out),
        "num_threads": 1,
    }
    return StudyConfig.model_validate(doc)


def run_nano(arch: str, out: Path) -> Path:
    cfg = nano_config(arch, out)
    cache = DataCache()
    plan = plan_study(cfg, cache)
    store = StudyStore(out)
    store.write_study(cfg, plan)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outcome = LocalExecutor(store, cfg, cache).run(plan, analyses=True)
    finally:
        torch.set_num_threads(threads)
    assert not outcome.failed_runs, outcome.runs
    assert not outcome.failed_analyses, outcome.failed_analyses
    build_report(out, formats=("png",))
    return out


def _not_applicable(doc: dict[str, Any]) -> list[str]:
    """Every reason a result gives for what it did not measure (whole, per target or part)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("status") in ("skipped", "failed") and value.get("reason"):
                found.append(str(value["reason"]))
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(doc)
    return found


def check_study(root: Path) -> transferscope.Study:
    """Every run done, every analysis written and none failed, each skip named in the report
    with its reason, and the findings table complete."""
    study = transferscope.open_study(root)
    assert set(study.runs.state) == {"done"}
    html = (root / "report" / "index.html").read_text()
    for unit in registry.units():
        doc = json.loads((root / "analyses" / f"{unit.name}.json").read_text())
        assert doc["status"] in ("ok", "skipped"), (unit.name, doc.get("reason"))
        for reason in _not_applicable(doc):
            assert "Traceback" not in reason
            # The report escapes it; a reason without markup appears verbatim.
            if "<" not in reason and "&" not in reason and "'" not in reason:
                assert reason in html, (unit.name, reason)
    findings = study.findings
    assert set(findings.claim) == {c.id for u in registry.units() for c in u.claims}
    return study


def verdicts(study: transferscope.Study) -> dict[str, str]:
    """Claim -> its overall verdicts, paper / controlled (what a matrix run reports)."""
    table = study.findings.drop_duplicates("claim")
    return {
        claim: f"{paper} / {controlled if isinstance(controlled, str) else '—'}"
        for claim, paper, controlled in zip(
            table.claim, table.paper_overall, table.controlled_overall, strict=True
        )
    }


# Per architecture: the CKA layers (from its layout), whether it has BatchNorm statistics to
# recompute, and the permutations alignment matches (a subset of their names).
EXPECTED: dict[str, tuple[list[str], bool, set[str]]] = {
    "fixup-small": (["conv1", "layer1", "layer2", "layer3"], False, {"stream0", "layer1.0.conv1"}),
    "resnet18": (
        ["conv1", "layer1", "layer2", "layer3", "layer4"],
        True,
        {"stream0", "stream3", "layer4.1.conv1"},
    ),
    "convnext": (
        ["stem", "stages.0", "stages.1", "stages.2", "stages.3"],
        False,
        {"stream0", "stream3", "stages.3.blocks.0.mlp"},
    ),
    "vit": (
        ["patch_embed", "blocks.0", "blocks.1", "blocks.2"],
        False,
        {"stream", "blocks.2.heads", "blocks.2.mlp"},
    ),
}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_nano_study(arch: str, tmp_path: Path) -> None:
    study = check_study(run_nano(arch, tmp_path / arch))
    print(f"\n{arch} verdicts: {json.dumps(verdicts(study))}")
    print(study.not_measured.to_string())
    check_architecture(arch, study)


def check_architecture(arch: str, study: transferscope.Study) -> None:
    """What the architecture changes: layers, BatchNorm, the units alignment permutes."""
    layers, batchnorm, permutations = EXPECTED[arch]
    assert list(dict.fromkeys(study.cka.layer)) == layers
    # BatchNorm statistics are recomputed on every path and for criticality, where they exist.
    assert (study.barriers.batchnorm_recalibrated == batchnorm).all()
    assert (study.criticality.recalibrated_batchnorm == batchnorm).all()
    alignment = study.result("alignment")
    assert alignment.status == "ok"
    for entry in alignment.targets.values():
        for pair in entry.pairs:
            assert pair.status == "ok"
            assert permutations <= set(pair.alignment.units_moved), arch
            assert pair.alignment.distance_after <= pair.alignment.distance_before
    c9 = study.findings.set_index("claim").loc["C9"]
    assert "RI-T/RI-T" in c9.measured
