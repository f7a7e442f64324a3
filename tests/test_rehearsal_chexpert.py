"""The chexpert preset end to end at 224 px: full Fixup ResNet-50, CheXpert's CSV and PNG files.

The rehearsal itself (data in the real on-disk layout, the child process, the per-phase timeline
and memory) is in ``tests/rehearsal.py``; each preset has its own test module so that the two run
in parallel under ``make test``.
"""

from __future__ import annotations

import json

import pytest

from rehearsal import check, make_chexpert_like, rehearse, shrink, write_config
from transferscope import config

pytestmark = pytest.mark.slow


def test_chexpert_preset_end_to_end_at_224_px(tmp_path):
    data = shrink(config.preset_dict("chexpert"), tmp_path)
    root = make_chexpert_like(tmp_path, n_train=6, n_valid=3)
    data["targets"] = [{**data["targets"][0], "root": str(root)}]
    out = tmp_path / "study"
    result = rehearse(write_config(data, tmp_path / "chexpert.yaml"), out)
    check(result, out)
    done = [json.loads(p.read_text()) for p in (out / "runs").glob("PT-*/DONE")]
    assert done and all(d["metric_name"] == "mean_auc" for d in done)
