"""The GPU benchmark's code path, run at toy size on the CPU (it has no other test here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_runs_on_cpu_at_toy_size():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--cpu-smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["device"] == "cpu"
    for key in ("train_fp32", "train_bf16_channels_last"):
        assert result[key]["images_per_s"] > 0
    interp = result["interpolation"]
    assert interp["batched_images_x_lambdas_per_s"] > 0
    assert interp["per_lambda_images_x_lambdas_per_s"] > 0
    assert result["ratio"] > 0


def test_gpu_benchmark_skips_cleanly_without_cuda(monkeypatch):
    import torch

    sys.path.insert(0, str(ROOT))
    try:
        from bench import gpu
    finally:
        sys.path.remove(str(ROOT))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = gpu.main()
    assert result["skipped"]
    assert result["ratio"] is None
