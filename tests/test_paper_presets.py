"""The paper's presets plan and start on fixtures in the real on-disk formats (PAPER.md setup)."""

from __future__ import annotations

import pytest
import torch

from transferscope import config
from transferscope.study.executors import execute_run
from transferscope.studydir.inputs import DataCache, plan_study
from transferscope.studydir.store import StudyStore

from fixtures_data import make_chexpert, make_domainnet, make_imagefolder

pytestmark = pytest.mark.slow


def shrink(data: dict, tmp_path) -> dict:
    """The preset with tiny images, one epoch and roots pointing at the fixtures."""
    small = {"epochs": 1, "batch_size": 4, "eval_batch_size": 8}
    for section in ("pretrain", "finetune", "randinit"):
        data[section] = {**data[section], **small, "milestones": []}
    data["source"] = {
        **data["source"],
        "root": str(make_imagefolder(tmp_path / "imagenet", {"a": 4, "b": 4, "c": 4})),
        "options": {"image_size": 32},
    }
    data["trajectory"] = {"checkpoints": [0]}
    data["shuffles"] = {"block_sizes": [16], "pixel": False, "seeds": [0]}
    data["output"] = str(tmp_path / "study")
    return data


def start(cfg: config.StudyConfig) -> StudyStore:
    torch.set_num_threads(2)
    cache = DataCache()
    plan = plan_study(cfg, cache)
    store = StudyStore(cfg.output)
    store.write_study(cfg, plan)
    p = plan.select(kind="P")[0]
    pt = plan.select(kind="P-T", shuffle=None)[0]
    for run in (p, pt):
        summary = execute_run(run, cfg, store, cache, torch.device("cpu"))
        assert store.is_done(run.id)
        assert summary["steps"] > 0
    assert p.spec.model.name == "fixup-resnet50"
    return store


def test_domainnet_preset_plans_and_starts(tmp_path):
    data = shrink(config.preset_dict("domainnet"), tmp_path)
    root = tmp_path / "domainnet"
    for domain in ("real", "clipart", "quickdraw"):
        make_domainnet(root, domain=domain, n_train=4, n_test=2)
    data["targets"] = [
        {**t, "root": str(root), "options": {**t["options"], "image_size": 32, "subsample": None}}
        for t in data["targets"]
    ]
    cfg = config.from_dict(data)
    assert cfg.finetune.mixup_alpha == 0.7
    start(cfg)


def test_chexpert_preset_plans_and_starts(tmp_path):
    data = shrink(config.preset_dict("chexpert"), tmp_path)
    labels = [
        {"Edema": "-1", "Cardiomegaly": "1"},
        {"Atelectasis": "1"},
        {},
        {"Pleural Effusion": "1"},
    ]
    root = make_chexpert(tmp_path, labels * 3)
    data["targets"] = [{**data["targets"][0], "root": str(root), "options": {"image_size": 32}}]
    cfg = config.from_dict(data)
    store = start(cfg)
    pt = store.read_plan().select(kind="P-T", shuffle=None)[0]
    assert store.summary(pt.id)["metric_name"] == "mean_auc"
