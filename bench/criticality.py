"""Module criticality: bisection over σ (``search="bisection"``) against the exhaustive (α, σ)
grid (goal: >= 4x fewer forward passes, the same μ for every module), with the exact default
search (``"pruned"``) beside it and the fewest forward passes any exact search could make.

The mini preset's model (fixup-small, widths 16, 32, 64, stem stride 2) on 28x28 one-channel
inputs, fitted for 40 Adam steps to a synthetic 10-class task from its Fixup init (θ⁰, like
RI-T); μ_i(ε) for the stem, the three blocks and the head on 128 training examples (one batch),
6 α x 11 σ geometric in [1e-5, 0.1], 2 noise samples, ε = 1.05 x L_S(θ^F). Exhaustive: every
(α, σ) with every noise sample. Bisection: the largest feasible σ per α (α = 0 first, then α
from 1 down), only over σ that could beat the best μ so far; it assumes feasibility monotone in
σ (``monotone_rows`` counts the (module, α) rows of the grid where that holds). Pruned: exact,
cells in ascending μ until the first feasible one. All with the exact early stop of the
noise-sample loop. ``exact_best_forward_passes``: from the grid's own per-sample losses, what
an exact search that knew them could not go below (every cell under μ shown infeasible with
the fewest samples whose losses already exceed the limit, the μ cell with every sample, plus
the fixed passes). Same process, one run each (the grid alone is 666 forward passes); forward
passes are counted, not estimated.
"""

from __future__ import annotations

import os
import time

import torch

from transferscope.data.base import TensorImageDataset
from transferscope.measures.criticality import module_criticality
from transferscope.measures.module_probe import PerturbedModule, ProbeInputs
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


def _grid_table(model, init, final, data, epsilon: float, mu: dict) -> tuple[int, int, int]:
    """(rows where feasibility is monotone in σ, rows, forward passes an exact search needs at
    least) from every (module, α, σ, sample) loss, each cell decided as the grid decides it."""
    from transferscope.measures.criticality import alpha_grid, sigma_grid

    setup = ProbeInputs(model, init, final, data, batch_size=N).setup(N, 0)
    alphas = alpha_grid(GRID["num_alphas"])
    sigmas = sigma_grid(GRID["num_sigmas"], GRID["max_sigma"])
    samples, monotone, rows = GRID["noise_samples"], 0, 0
    limit = samples * epsilon
    least = 1 + len(setup.names)  # L_S(θ^F), and each module's pass recording its prefix
    for index, name in enumerate(setup.names):
        mod = PerturbedModule(name, index, setup.params, setup.init, setup.final, samples, 0)
        d2 = mod.distance**2
        cells = []
        with setup.probe.varying(name, setup.final):
            for alpha in alphas:
                row = []
                for sigma in sigmas:
                    losses = [
                        setup.probe.loss_sum(mod.state(setup.final, alpha, sigma, s))
                        for s in range(samples)
                    ]
                    row.append(sum(losses) <= limit)
                    cells.append((alpha**2 * d2 / sigma**2, losses))
                monotone += row == sorted(row, reverse=True)  # feasible, then infeasible
                rows += 1
        below = [losses for value, losses in cells if mu[name] is None or value < mu[name]]
        for losses in below:  # the fewest samples whose losses alone exceed the limit
            ranked = sorted(losses, reverse=True)
            least += next(k for k in range(1, samples + 1) if sum(ranked[:k]) > limit)
        least += samples if mu[name] is not None else 0
    return monotone, rows, least


def main() -> dict:
    torch.set_num_threads(int(os.environ.get("CRIT_BENCH_THREADS", "1")))
    model, init, final, data = _problem()
    runs = {}
    for search in ("bisection", "pruned", "grid"):
        start = time.perf_counter()
        result = module_criticality(model, init, final, data, batch_size=N, search=search, **GRID)
        runs[search] = (result, time.perf_counter() - start)
    fast, exact, slow = (runs[s][0] for s in ("bisection", "pruned", "grid"))
    monotone, rows, least = _grid_table(model, init, final, data, slow.epsilon, slow.mu)
    return {
        "name": "criticality",
        "compared": "module_criticality: search='bisection' (σ per α) and the exact default "
        "search ('pruned') vs the exhaustive grid",
        "sizes": {
            "examples": N,
            "modules": len(fast.modules),
            **GRID,
            "threads": torch.get_num_threads(),
        },
        "medians": {
            "bisection_s": round(runs["bisection"][1], 3),
            "pruned_s": round(runs["pruned"][1], 3),
            "grid_s": round(runs["grid"][1], 3),
            "bisection_forward_passes": fast.forward_passes,
            "pruned_forward_passes": exact.forward_passes,
            "grid_forward_passes": slow.forward_passes,
            "exact_best_forward_passes": least,
        },
        "mu_bisection": fast.mu,
        "mu_pruned": exact.mu,
        "mu_grid": slow.mu,
        "same_mu": fast.mu == slow.mu,
        "pruned_same_mu": exact.mu == slow.mu,
        "monotone_rows": f"{monotone}/{rows}",
        "final_loss": round(fast.final_loss, 4),
        "time_ratio": round(runs["grid"][1] / runs["bisection"][1], 2),
        "pruned_ratio": round(slow.forward_passes / exact.forward_passes, 2),
        "exact_best_ratio": round(slow.forward_passes / least, 2),
        "ratio": round(slow.forward_passes / fast.forward_passes, 2),
        "goal": ">= 4 (fewer forward passes) with the same μ for every module",
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main()))
