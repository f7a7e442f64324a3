"""A fake data cache for study-step tests: random 8x8 images, no real data is loaded."""

from __future__ import annotations

from pathlib import Path

import torch

from transferscope.config import StudyConfig
from transferscope.data.base import DataInfo, Splits, TensorImageDataset
from transferscope.models import build_model
from transferscope.studydir.inputs import DataCache
from transferscope.studydir.plan import Plan, build_plan
from transferscope.studydir.store import StudyStore

INFO = DataInfo("digits", "multiclass", 10, (1, 8, 8), tuple(str(d) for d in range(10)))


class FakeData(DataCache):
    """Random 8x8 images for every data spec: the steps never load (or import) real data."""

    def get(self, spec):
        g = torch.Generator().manual_seed(0)
        images = torch.randn(40, 1, 8, 8, generator=g)
        labels = torch.randint(0, 10, (40,), generator=g)
        data = TensorImageDataset(images, labels)
        return Splits(info=INFO, train=data, test=data)


def fake_config(**fields) -> StudyConfig:
    """A study of fixup-small (widths 4) on 8x8 digits, source 'src' and target 'digits'; ``fields``
    replace or add top-level keys (seeds, shuffles, analyses, ...)."""
    digits = {"name": "digits", "options": {"image_size": 8}}
    base = {
        "name": "fake",
        "source": {**digits, "id": "src"},
        "targets": [digits],
        "model": {"name": "fixup-small", "options": {"widths": [4, 4, 4]}},
        "seeds": [0, 1],
    }
    return StudyConfig.model_validate({**base, **fields})


def fake_study(root: Path, cfg: StudyConfig) -> tuple[StudyStore, Plan]:
    """A study directory at ``root`` holding ``cfg`` and its plan (source and target: INFO), no
    run written yet."""
    plan = build_plan(cfg, {"src": INFO, "digits": INFO})
    store = StudyStore(root)
    store.write_study(cfg, plan)
    return store, plan


def fake_weights(seed: int, base: dict[str, torch.Tensor] | None, scale: float) -> dict:
    """A fixup-small (widths 4) state: ``base`` (or a fresh init) plus Gaussian noise of ``scale``."""
    torch.manual_seed(seed)
    state = build_model("fixup-small", 10, 1, widths=[4, 4, 4]).state_dict()
    start = base if base is not None else state
    return {k: start[k] + scale * torch.randn_like(v) for k, v in state.items()}


def write_runs(store, plan, runs=None, final_metric: float = 0.9, n_test: int = 40) -> None:
    """Write a finished run directory (weights, metrics, predictions, DONE) for each of ``runs``
    (default: every run of ``plan``), as the trainer would; P-T runs start from P's weights."""
    import json
    import zlib

    import numpy as np

    from transferscope.training import checkpoints as ckpt

    p = next((r for r in plan.runs if r.spec.kind == "P"), None)
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 10, n_test)
    for run in runs if runs is not None else plan.runs:
        folder = store.prepare_run(run)
        from_p = run.spec.kind in ("P-T", "P@k-T") and p is not None
        start = ckpt.load_weights(store.weights_path(p.id)) if from_p else None
        final = fake_weights(
            1000 + zlib.crc32(run.id.encode()) % 1000, start, 0.02 if from_p else 0.3
        )
        ckpt.save_weights(store.weights_path(run.id, "epoch-0"), start or final)
        ckpt.save_weights(store.weights_path(run.id, "final"), final)
        for k in run.spec.train.checkpoint_points:
            ckpt.save_weights(store.weights_path(run.id, ckpt.point_name(k)), final)
        curve = [0.1, 0.5, final_metric]
        rows = [
            {"epoch": e, "step": 10 * e, "split": "test", "metric": m, "metric_name": "accuracy"}
            for e, m in enumerate(curve)
        ]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "predictions").mkdir(exist_ok=True)
        np.save(folder / "predictions" / "test_outputs.npy", rng.normal(size=(n_test, 10)))
        np.save(folder / "predictions" / "test_targets.npy", targets)
        store.mark_done(
            run.id, {"metric_name": "accuracy", "final_metric": final_metric, "seconds": 1.0}
        )
