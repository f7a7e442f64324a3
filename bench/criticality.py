"""Module criticality: pruned search against the exhaustive (α, σ) grid (goal: >= 4x fewer
forward passes, the same μ for every module).

The mini preset's model (fixup-small, widths 16, 32, 64, stem stride 2) on 28x28 one-channel
inputs, fitted for 40 Adam steps to a synthetic 10-class task from its Fixup init (θ⁰, like
RI-T); μ_i(ε) for the stem, the three blocks and the head on 128 training examples (one batch),
6 α x 11 σ geometric in [1e-5, 0.1], 2 noise samples, ε = 1.05 x L_S(θ^F). Exhaustive: every (α, σ) with every
noise sample. Search: :func:`module_criticality`'s pruned search over σ per α (largest first, only σ that could
beat the best μ so far), with the exact early stop of the noise-sample loop. Same process, one run each (the grid
alone is 661 forward passes); forward passes are counted, not estimated.
"""

from __future__ import annotations

import os
import time

import torch

from transferscope.analysis.criticality import module_criticality
from transferscope.data.base import TensorImageDataset
from transferscope.models import build_model

N, STEPS = 128, 40
GRID = dict(num_alphas=6, num_sigmas=11, noise_samples=2, max_sigma=0.1, tolerance=1.05)


def _problem() -> tuple[torch.nn.Module, dict, dict, TensorImageDataset]:
    torch.manual_seed(0)
    # Ten random smooth templates plus noise: learnable in a few steps, not trivial.
    templates = torch.nn.functional.avg_pool2d(torch.randn(10, 1, 28, 28), 5, 1, 2) * 3
    y = torch.arange(N) % 10
    x = templates[y] + torch.randn(N, 1, 28, 28)
    model = build_model("fixup-small", 10, 1, widths=[16, 32, 64], stem_stride=2)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=0.003)
    for _ in range(STEPS):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return model, init, final, TensorImageDataset(x, y)


def main() -> dict:
    torch.set_num_threads(int(os.environ.get("CRIT_BENCH_THREADS", "1")))
    model, init, final, data = _problem()
    runs = {}
    for search in ("pruned", "grid"):
        start = time.perf_counter()
        result = module_criticality(model, init, final, data, batch_size=N, search=search, **GRID)
        runs[search] = (result, time.perf_counter() - start)
    fast, slow = runs["pruned"][0], runs["grid"][0]
    return {
        "name": "criticality",
        "compared": "module_criticality: largest feasible σ per α (pruned, early stop) vs exhaustive grid",
        "sizes": {
            "examples": N,
            "modules": len(fast.modules),
            **GRID,
            "threads": torch.get_num_threads(),
        },
        "medians": {
            "search_s": round(runs["pruned"][1], 3),
            "grid_s": round(runs["grid"][1], 3),
            "search_forward_passes": fast.forward_passes,
            "grid_forward_passes": slow.forward_passes,
        },
        "mu_search": fast.mu,
        "mu_grid": slow.mu,
        "same_mu": fast.mu == slow.mu,
        "final_loss": round(fast.final_loss, 4),
        "time_ratio": round(runs["grid"][1] / runs["pruned"][1], 2),
        "ratio": round(slow.forward_passes / fast.forward_passes, 2),
        "goal": ">= 4 (fewer forward passes) with the same μ for every module",
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main()))
