"""The chexpert preset end to end at 224 px: full Fixup ResNet-50, CheXpert's CSV and PNG files
(the rehearsal: ``tests/rehearsal.py``)."""

from __future__ import annotations

import json

import pytest

from rehearsal import make_chexpert_like, rehearse_preset

pytestmark = pytest.mark.slow


def test_chexpert_preset_end_to_end_at_224_px(tmp_path):
    root = make_chexpert_like(tmp_path, n_train=6, n_valid=3)
    out = rehearse_preset("chexpert", tmp_path, root)
    done = [json.loads(p.read_text()) for p in (out / "runs").glob("PT-*/DONE")]
    assert done and all(d["metric_name"] == "mean_auc" for d in done)
