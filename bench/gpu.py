"""GPU throughput: ResNet-50 training at 224 px through :class:`Trainer`, and interpolation.

Training images/s in fp32 (contiguous) against bf16 autocast + channels-last (goal on an H100:
>= 2,500 images/s), optionally also with ``torch.compile``; and test images x λ evaluated per
second along a linear interpolation (§3), all λ per batch against one pass per λ. Data are
synthetic tensors generated on the device, so the numbers measure the model path, not a disk.
Without CUDA it returns a result marked skipped; ``python -m bench.gpu --cpu-smoke`` runs the same
code on the CPU at toy size (the test suite does this).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch

from transferscope.config import TrainSpec
from transferscope.data.base import TensorImageDataset
from transferscope.measures.interpolation import interpolate
from transferscope.models import build_model
from transferscope.training.trainer import Trainer

FULL = {"model": "resnet50", "size": 224, "batch": 256, "steps": 30, "warmup": 10, "classes": 1000}
SMOKE = {"model": "resnet18", "size": 32, "batch": 4, "steps": 3, "warmup": 1, "classes": 10}
INTERP = {"full": {"examples": 4096, "points": 11}, "smoke": {"examples": 8, "points": 3}}


def _data(n: int, size: int, classes: int, device: torch.device, seed: int) -> TensorImageDataset:
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g, device=device)
    y = torch.randint(0, classes, (n,), generator=g, device=device)
    return TensorImageDataset(x, y)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(
    sizes: dict[str, Any],
    device: torch.device,
    *,
    channels_last: bool,
    bf16: bool,
    compile: bool = False,
) -> dict[str, float]:
    """Steady-state training images/s of one configuration, after ``warmup`` steps.

    One epoch of ``steps`` batches through ``Trainer.fit``; the clock runs between the ends of
    step ``warmup`` and of the last step (each step ends with ``loss.item()``, a device sync), so
    cuDNN autotuning, compilation and the start/end evaluations are not counted.
    """
    batch, steps = sizes["batch"], sizes["steps"]
    train = _data(batch * steps, sizes["size"], sizes["classes"], device, seed=0)
    test = _data(batch, sizes["size"], sizes["classes"], device, seed=1)
    torch.manual_seed(0)
    model = build_model(sizes["model"], sizes["classes"], 3)
    spec = TrainSpec(epochs=1, batch_size=batch, lr=0.1, schedule="cosine", eval_batch_size=batch)
    ends: list[float] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(
        spec,
        "multiclass",
        device=device,
        channels_last=channels_last,
        bf16=bf16,
        compile=compile,
        on_step=lambda s, t: ends.append(time.perf_counter()),
    )
    trainer.fit(model, train, test)
    warm = sizes["warmup"]
    seconds = ends[-1] - ends[warm - 1]
    out = {"images_per_s": round((len(ends) - warm) * batch / seconds, 1)}
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def interpolation_throughput(
    sizes: dict[str, Any], interp: dict[str, int], device: torch.device, repeats: int
) -> dict[str, float]:
    """Test images x λ per second along A -> B, bf16 + channels-last, BatchNorm statistics
    interpolated (no recalibration pass), all λ per batch vs one pass per λ."""
    classes = sizes["classes"]
    data = _data(interp["examples"], sizes["size"], classes, device, seed=2)
    torch.manual_seed(0)
    model = build_model(sizes["model"], classes, 3)
    a = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    b = build_model(sizes["model"], classes, 3).state_dict()
    work = interp["examples"] * interp["points"]

    def timed(batched: bool) -> float:
        _sync(device)
        start = time.perf_counter()
        interpolate(
            model, a, b, data, interp["points"], recalibrate_batchnorm=False, device=device,
            batch_size=sizes["batch"], batched=batched, channels_last=True,
        )  # fmt: skip
        _sync(device)
        return work / (time.perf_counter() - start)

    timed(True)  # warm-up: cuDNN autotuning for this batch shape
    batched = statistics.median(timed(True) for _ in range(repeats))
    per_point = statistics.median(timed(False) for _ in range(repeats))
    return {
        "batched_images_x_lambdas_per_s": round(batched, 1),
        "per_lambda_images_x_lambdas_per_s": round(per_point, 1),
        "ratio": round(batched / per_point, 3),
    }


def main(smoke: bool = False, compile: bool = False) -> dict[str, Any]:
    device = torch.device("cpu" if smoke else "cuda")
    result: dict[str, Any] = {
        "name": "gpu",
        "compared": "ResNet-50 training images/s: bf16 + channels-last vs fp32 (Trainer.fit, "
        "synthetic data on the device); interpolation evaluation images x λ per second",
    }
    if not smoke and not torch.cuda.is_available():
        return {**result, "skipped": "no CUDA device here", "ratio": None, "goal": ">= 2500 img/s"}
    sizes = SMOKE if smoke else FULL
    result["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result["torch"] = torch.__version__
    result["sizes"] = sizes
    fp32 = train_throughput(sizes, device, channels_last=False, bf16=False)
    # Channels-last is a CUDA setting (the trainer refuses it on the CPU, see Trainer).
    fast = train_throughput(sizes, device, channels_last=device.type == "cuda", bf16=True)
    result["train_fp32"] = fp32
    result["train_bf16_channels_last"] = fast
    if compile:
        result["train_bf16_channels_last_compiled"] = train_throughput(
            sizes, device, channels_last=True, bf16=True, compile=True
        )
    interp = INTERP["smoke" if smoke else "full"]
    result["interpolation"] = {
        **interp,
        **interpolation_throughput(sizes, interp, device, repeats=1 if smoke else 3),
    }
    best = max(
        v["images_per_s"]
        for k, v in result.items()
        if k.startswith("train_bf16") and "images_per_s" in v
    )
    result["best_train_images_per_s"] = best
    result["ratio"] = round(fast["images_per_s"] / fp32["images_per_s"], 3)
    result["goal"] = ">= 2500 img/s training on an H100 (ratio: bf16+channels-last over fp32)"
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    args = parser.parse_args()
    json.dump(main(smoke=args.cpu_smoke, compile=args.compile), sys.stdout, indent=2)
    print()
