"""Every analysis at the paper's scale: Fixup ResNet-50 at 224 px, on a few generated images.

No training: the study directory holds weights made from the model's own init plus noise. What is
tested is that each analysis completes at this size within bounded memory (CKA's widest layer,
802,816 features at conv1, switches to minibatch CKA when exact would not fit) and that nothing
aborts the others. Sizes are shrunk (examples, grid points, curve epochs), options are the
domainnet preset's otherwise.
"""

from __future__ import annotations

import json
import resource

import pytest
import torch

from transferscope import config
from transferscope.data.base import DataInfo, Splits, TensorImageDataset
from transferscope.models import build_model
from transferscope.study.analyze import ANALYSES, run_analyses
from transferscope.study.executors import DataCache
from transferscope.study.plan import build_plan
from transferscope.study.store import StudyStore
from transferscope.training import checkpoints as ckpt

pytestmark = pytest.mark.slow

SIDE, N, CLASSES = 224, 4, 5
TARGET = DataInfo("target", "multiclass", CLASSES, (3, SIDE, SIDE), tuple("abcde"))
SOURCE = DataInfo("source", "multiclass", 10, (3, SIDE, SIDE), tuple("0123456789"))


class Images(DataCache):
    """Four random 224-px images per split (the same for every data spec)."""

    def get(self, spec):
        g = torch.Generator().manual_seed(0)
        info = SOURCE if spec.label == "imagenet" else TARGET
        x = torch.randn(N, 3, SIDE, SIDE, generator=g)
        y = torch.arange(N) % info.num_outputs
        data = TensorImageDataset(x, y)
        return Splits(info=info, train=data, test=data)


def _config(tmp_path) -> config.StudyConfig:
    data = config.preset_dict("domainnet")
    data["targets"] = data["targets"][:1]
    data["trajectory"] = {"checkpoints": [0]}
    data["shuffles"] = {"block_sizes": [], "pixel": False}
    data["output"] = str(tmp_path / "study")
    data["analyses"] = {
        "interpolation": {"num_points": 3, "recalibration_examples": N},
        # A cap that conv1 and layer1 (802,816 features) exceed even at 4 examples: those two
        # layers take the minibatch path that 2,000 examples would force at the default cap.
        "similarity": {"batch_size": N, "max_exact_bytes": 16 << 20},
        "criticality": {
            "num_alphas": 2,
            "num_sigmas": 2,
            "noise_samples": 1,
            "max_examples": 2,
            "heatmap_alphas": 2,
            "heatmap_sigmas": 2,
            "eval_max_examples": 2,
        },
        "trajectory": {"num_points": 3},
        "alignment": {"num_points": 3, "max_sweeps": 2},
        "connectivity": {"epochs": 1, "batch_size": N, "num_points": 3, "pairs": ["RI-T/RI-T"]},
    }
    return config.from_dict(data)


def test_every_analysis_completes_at_224_px_with_fixup_resnet50(tmp_path):
    cfg = _config(tmp_path)
    plan = build_plan(cfg, {"imagenet": SOURCE, cfg.targets[0].label: TARGET})
    store = StudyStore(cfg.output)
    store.write_study(cfg, plan)
    states: dict[str, dict[str, torch.Tensor]] = {}
    for i, run in enumerate(plan.runs):
        store.prepare_run(run)
        outputs = SOURCE.num_outputs if run.spec.kind == "P" else CLASSES
        torch.manual_seed(i)
        model = build_model("fixup-resnet50", outputs, 3)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        if run.spec.parent:  # P-T and P@k-T start from P, with a fresh head
            start.update({k: v for k, v in states["P"].items() if not k.startswith("fc.")})
        final = {k: v + 0.01 * torch.randn_like(v) for k, v in start.items()}
        if run.spec.kind == "P":
            states["P"] = final
        ckpt.save_weights(store.weights_path(run.id, "epoch-0"), start)
        ckpt.save_weights(store.weights_path(run.id, "final"), final)
        rows = [{"epoch": e, "step": e, "split": "test", "metric": 0.2 + 0.1 * e} for e in range(3)]
        (store.run_dir(run.id) / "metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows)
        )
        store.mark_done(run.id, {"metric_name": "accuracy", "final_metric": 0.4})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    messages: dict[str, str] = {}
    paths = run_analyses(store, progress=lambda n, m: messages.__setitem__(n, m), cache=Images())
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert not any(m.startswith("failed") for m in messages.values()), messages
    for name in ANALYSES:
        doc = json.loads(paths[name].read_text())
        assert doc["status"] in ("ok", "skipped"), (name, doc.get("reason"))
    sim = json.loads(paths["similarity"].read_text())["targets"]
    pairs = next(iter(sim.values()))["pairs"]
    ok = [p for p in pairs if p["status"] == "ok"]
    assert ok and all(
        set(p["cka"]) == {"conv1", "layer1", "layer2", "layer3", "layer4"} for p in ok
    )
    assert ok[0]["layers"]["conv1"]["features"] == [802_816, 802_816]
    assert ok[0]["layers"]["conv1"]["estimator"].startswith("minibatch")
    assert ok[0]["layers"]["layer4"]["estimator"] == "exact"
    crit = next(iter(json.loads(paths["criticality"].read_text())["targets"].values()))
    assert len(crit["P-T"]["modules"]) == 18  # stem, 16 bottleneck blocks, head
    # Bounded: a few GiB for two ResNet-50s and their activations (measured ~3 GiB).
    assert peak_gib < 8, (before, peak_gib)
