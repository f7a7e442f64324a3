"""The domainnet preset end to end at 224 px: full Fixup ResNet-50, JPEG files in DomainNet's
layout (the rehearsal: ``tests/rehearsal.py``)."""

from __future__ import annotations

import json

import pytest
import yaml

from rehearsal import make_domainnet_like, rehearse_preset

pytestmark = pytest.mark.slow


def test_domainnet_preset_end_to_end_at_224_px(tmp_path):
    root = make_domainnet_like(
        tmp_path / "domainnet",
        "real",
        ("aircraft_carrier", "airplane", "alarm_clock", "zebra"),
        1,
        1,
    )
    # One training batch a target epoch and one seed: every kind of run (P, P-T, RI-T, the
    # block-shuffled P-T and RI-T, P@k-T) and the pairs one seed has (P-T/RI-T, and RI-T/RI-T
    # from one shared init) at 224 px. A second seed's pairs (P-T/P-T, the control pair
    # P@0-T/P@0-T) are the same code on other runs, measured by every smaller study, and would
    # double the rehearsal's time.
    out = rehearse_preset(
        "domainnet",
        tmp_path,
        root,
        study={"seeds": [0], "same_init_pair": True},
        options={"domain": "real", "subsample": 50000},
    )
    study = yaml.safe_load((out / "study.yaml").read_text())
    assert study["model"]["name"] == "fixup-resnet50"
    assert study["source"]["options"]["image_size"] == 224
    sim = json.loads((out / "analyses" / "similarity.json").read_text())
    layers = next(iter(sim["targets"].values()))["pairs"][0]["layers"]
    # conv1 at 224 px: 64 x 112 x 112 features per image, the widest layer of the network: exact
    # CKA would not fit its memory cap, so it is estimated by minibatch CKA (and says so).
    assert layers["conv1"]["features"][0] == 802_816
    assert layers["conv1"]["estimator"].startswith("minibatch")
    assert layers["layer4"]["estimator"] == "exact"
    crit = json.loads((out / "analyses" / "criticality.json").read_text())
    pt = next(iter(crit["targets"].values()))["P-T"]
    assert len(pt["modules"]) == 18  # stem, 16 bottleneck blocks, head
