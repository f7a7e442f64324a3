"""The chexpert preset end to end at 224 px: full Fixup ResNet-50, CheXpert's CSV and JPEG files
(the rehearsal: ``tests/rehearsal.py``).

What this rehearsal adds to the domainnet one is CheXpert's files and its multi-label task (mean
AUC in every run and analysis) at full size: one seed, no shuffle and no trajectory point. Every
kind of run at 224 px is rehearsed by ``test_rehearsal_domainnet.py``; here the runs are P, P-T
and RI-T, and every analysis but criticality runs (those that need a second seed or P@k-T runs
say so and skip that part). Criticality is the rehearsals' longest analysis
(~45 s of ResNet-50 forwards at 224 px); at full size it is rehearsed by the domainnet module, and
on a multi-label target (the mean AUC of its rewind test and heat maps) by the micro study's
mosaic in ``test_study.py``: here it would add time and nothing else."""

from __future__ import annotations

import json

import pytest

from rehearsal import make_chexpert_like, rehearse_preset

pytestmark = pytest.mark.slow


def test_chexpert_preset_end_to_end_at_224_px(tmp_path):
    root = make_chexpert_like(tmp_path, n_train=6, n_valid=3)
    narrow = {
        "seeds": [0],
        "shuffles": {"block_sizes": [], "pixel": False, "seeds": [0]},
        "trajectory": {"checkpoints": []},
    }
    out = rehearse_preset(
        "chexpert", tmp_path, root, study=narrow, disabled=frozenset({"criticality"})
    )
    done = [json.loads(p.read_text()) for p in (out / "runs").glob("PT-*/DONE")]
    assert done and all(d["metric_name"] == "mean_auc" for d in done)
