"""End-to-end training images/s from JPEG files on disk vs the same training on synthetic tensors.

A DomainNet-layout folder of generated JPEGs (photo-like content and sizes, 300-800 px a side) is
read through the ``domainnet`` source and :class:`Trainer` exactly as a study reads it, with
RandomResizedCrop(224) + flip; the baseline is the same model, batch and steps on random tensors
already on the device. ``ratio`` = files / synthetic (goal on one H100/H200: >= 0.9, and >= 5,000
img/s for Fixup ResNet-50 at 224 px with bf16). Both input paths are measured: ``device`` (decode
with nvJPEG and augment on the GPU, the default on CUDA) and ``workers`` (PIL in DataLoader
worker processes, the default on a CPU); ``ratio`` is the better one.

Without CUDA it runs at toy size on the CPU (``--cpu-smoke``, also what ``python -m bench`` does
there): tiny model, 64-px crops, a few hundred files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from transferscope.config import TrainSpec
from transferscope.data import registry
from transferscope.data.base import TensorImageDataset
from transferscope.models import build_model
from transferscope.training.trainer import Trainer

FULL = {
    "model": "fixup-resnet50",
    "size": 224,
    "images": 20_000,
    "batch": 256,
    "steps": 40,
    "warmup": 10,
    "classes": 345,
}
SMOKE = {
    "model": "resnet18",
    "size": 64,
    "images": 240,
    "batch": 16,
    "steps": 6,
    "warmup": 2,
    "classes": 10,
}
SIZES = ((640, 480), (500, 375), (375, 500), (600, 600), (800, 533), (300, 300), (450, 338))


def _write(job: tuple[str, int]) -> None:
    path, seed = job
    rng = np.random.default_rng(seed)
    w, h = SIZES[seed % len(SIZES)]
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    big = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = np.clip(big + rng.integers(-12, 13, big.shape, dtype=np.int16), 0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(path, "JPEG", quality=90)


def make_domainnet_folder(root: Path, images: int, classes: int, test: int = 256) -> Path:
    """ROOT/real/<class>/*.jpg and real_{train,test}.txt: ``images`` train + ``test`` test files,
    written by a process pool (a few seconds for 20,000 on 16 cores)."""
    jobs, lines = [], {"train": [], "test": []}
    for i in range(images + test):
        k = i % classes
        rel = f"real/class_{k:03d}/real_{k + 1:03d}_{i + 1:06d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        jobs.append((str(root / rel), i))
        lines["train" if i < images else "test"].append(f"{rel} {k}")
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_write, jobs, chunksize=64))
    for split, split_lines in lines.items():
        (root / f"real_{split}.txt").write_text("\n".join(split_lines) + "\n")
    return root


def throughput(
    sizes: dict[str, Any], device: torch.device, train: Any, test: Any, decode: str
) -> float:
    """Steady-state training images/s (clock between the end of step ``warmup`` and the last)."""
    batch, steps = sizes["batch"], sizes["steps"]
    torch.manual_seed(0)
    model = build_model(sizes["model"], sizes["classes"], 3)
    spec = TrainSpec(
        epochs=1,
        batch_size=batch,
        lr=0.01,  # throughput only: random targets diverge at higher rates in bf16
        eval_batch_size=batch,
        max_train_examples=batch * steps,
    )
    ends: list[float] = []
    trainer = Trainer(
        spec,
        "multiclass",
        device=device,
        decode=decode,
        on_step=lambda s, t: ends.append(time.perf_counter()),
    )
    trainer.fit(model, train, test)
    warm = sizes["warmup"]
    return (len(ends) - warm) * batch / (ends[-1] - ends[warm - 1])


def main(smoke: bool | None = None) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    smoke = (not cuda) if smoke is None else smoke
    device = torch.device("cuda" if cuda and not smoke else "cpu")
    sizes = SMOKE if smoke else FULL
    with tempfile.TemporaryDirectory(prefix="ts-input-") as tmp:
        started = time.perf_counter()
        root = make_domainnet_folder(Path(tmp), sizes["images"], sizes["classes"])
        written = time.perf_counter() - started
        splits = registry.load("domainnet", root=root, image_size=sizes["size"], subsample=None)
        g = torch.Generator(device=device).manual_seed(0)
        n = sizes["batch"] * sizes["steps"]
        shape = (n, 3, sizes["size"], sizes["size"])
        synthetic = TensorImageDataset(
            torch.randn(shape, generator=g, device=device),
            torch.randint(0, sizes["classes"], (n,), generator=g, device=device),
        )
        syn_test = TensorImageDataset(
            synthetic.images[: sizes["batch"]], synthetic.targets[: sizes["batch"]]
        )
        rates = {"synthetic": throughput(sizes, device, synthetic, syn_test, "auto")}
        for decode in ("device", "workers"):
            rates[decode] = throughput(sizes, device, splits.train, splits.test, decode)
    best = max(rates["device"], rates["workers"])
    return {
        "name": "input_pipeline",
        "compared": "training images/s from JPEG files (domainnet source, RandomResizedCrop + "
        "flip) vs the same training on synthetic tensors on the device",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "sizes": sizes,
        "seconds_writing_files": round(written, 1),
        "images_per_s": {k: round(v, 1) for k, v in rates.items()},
        "ratio_device": round(rates["device"] / rates["synthetic"], 3),
        "ratio_workers": round(rates["workers"] / rates["synthetic"], 3),
        "ratio": round(best / rates["synthetic"], 3),
        "goal": ">= 0.9 of synthetic and >= 5000 img/s, Fixup ResNet-50 224 px bf16, one H100/H200",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU")
    args = parser.parse_args()
    json.dump(main(smoke=True if args.cpu_smoke else None), sys.stdout, indent=2)
    print()
