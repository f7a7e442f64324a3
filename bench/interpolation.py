"""Interpolation: all λ per loaded batch against one data pass per λ (goal: >= 4x faster).

K = 21 points of θ(λ) between two fixup-small networks (widths 16, 32, 64; stem stride 2) on an
evaluation set of 2,000 generated 32 px RGB JPEGs read from a temporary folder through
:class:`FileImageDataset` and the standard eval transform, streamed by ``iterate`` (a DataLoader
with the default workers), as a folder-backed target's test split is. Batched:
:func:`interpolate` decodes each batch once and runs all 21 λ on it. Per-λ: ``batched=False``, one
full pass (decode + forward) per λ. Both give the same curve (checked). One run each: the
per-λ loop takes ~20 x the batched pass's decoding, so medians would only add minutes.
``ratio`` is for the default (contiguous) memory format; ``ratio_channels_last`` repeats both
with ``channels_last=True`` (faster convolutions on CPU, so decoding weighs more).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from transferscope.data.folder_common import FileImageDataset, classification_transform
from transferscope.measures.interpolation import interpolate
from transferscope.models import build_model

N_IMAGES, SIZE, CLASSES, K, BATCH = 2000, 32, 10, 21, 250


def _images(folder: Path) -> FileImageDataset:
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(N_IMAGES):
        label = i % CLASSES
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        pixels[..., label % 3] //= 2  # a little class signal
        path = folder / f"{label}" / f"{i:05d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
        labels.append(label)
    tf = classification_transform(SIZE, 3, train=False, augment=False)
    return FileImageDataset(paths, torch.tensor(labels), tf, "RGB")


def _states() -> tuple[torch.nn.Module, dict, dict]:
    torch.manual_seed(0)
    model = build_model("fixup-small", CLASSES, 3, widths=[16, 32, 64], stem_stride=2)
    a = {k: v.clone() for k, v in model.state_dict().items()}
    b = {k: v + 0.05 * torch.randn_like(v) for k, v in a.items()}
    return model, a, b


def main() -> dict:
    torch.set_num_threads(int(os.environ.get("INTERP_BENCH_THREADS", "1")))
    model, a, b = _states()
    with tempfile.TemporaryDirectory() as tmp:
        data = _images(Path(tmp))
        timings, results = {}, {}
        for name, batched, cl in (
            ("batched", True, False),
            ("per_point", False, False),
            ("batched_channels_last", True, True),
            ("per_point_channels_last", False, True),
        ):
            start = time.perf_counter()
            results[name] = interpolate(
                model, a, b, data, K, batch_size=BATCH, batched=batched, channels_last=cl
            )
            timings[name] = time.perf_counter() - start
    same = np.allclose(results["batched"].loss, results["per_point"].loss, rtol=1e-5)
    same = same and results["batched"].metric == results["per_point"].metric
    return {
        "name": "interpolation",
        "compared": (
            "interpolate(): all 21 λ per loaded batch (functional_call) vs one DataLoader pass "
            "per λ, JPEG folder eval set"
        ),
        "sizes": {
            "images": N_IMAGES,
            "image_px": SIZE,
            "points": K,
            "batch": BATCH,
            "threads": torch.get_num_threads(),
        },
        "medians": {f"{name}_s": round(seconds, 3) for name, seconds in timings.items()},
        "ratio_channels_last": round(
            timings["per_point_channels_last"] / timings["batched_channels_last"], 2
        ),
        "same_curve": bool(same),
        "barrier_loss": results["batched"].barrier_loss,
        "ratio": round(timings["per_point"] / timings["batched"], 2),
        "goal": ">= 4 (batched faster)",
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main()))
