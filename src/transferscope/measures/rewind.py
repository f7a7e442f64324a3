"""The rewind test and criticality heat maps (Neyshabur et al. 2020, §3.4).

:func:`rewind_modules` sets one module at a time back to its initial value θ_i^0 (P-T: P's
weights; RI-T: the random init), every other module at its final value θ^F, and evaluates the
network. :func:`criticality_heatmap` evaluates the metric over an (α, σ) grid per module, with
module i at θ_i^α = (1 − α) θ_i^0 + α θ_i^F plus Gaussian noise of standard deviation σ, and the
distance α ‖θ_i^F − θ_i^0‖ of each row, usually on a coarser grid with one noise sample to stay
cheap. Module criticality itself (the μ search) is :mod:`transferscope.measures.criticality`.
"""

from __future__ import annotations

from typing import Any

import torch

from transferscope.measures.module_probe import PerturbedModule, ProbeInputs, alpha_grid


def rewind_modules(
    inputs: ProbeInputs, *, max_examples: int | None = None
) -> dict[str, dict[str, float]]:
    """Rewind one module at a time to θ_i^0 (others final) and evaluate (Neyshabur et al. 2020, §3.4).

    Returns ``{"final": {"loss", "metric"}, module: {"loss", "metric"}, ...}`` on
    ``inputs.data`` (the test split, at most ``max_examples`` examples: a fixed random subset).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from transferscope.data.base import TensorImageDataset
        >>> from transferscope.measures.module_probe import ProbeInputs
        >>> from transferscope.measures.rewind import rewind_modules
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Linear(4, 3))
        >>> final = model.state_dict()
        >>> init = {**final, "2.weight": torch.zeros(3, 4), "2.bias": torch.zeros(3)}
        >>> data = TensorImageDataset(torch.randn(20, 1, 2, 2), torch.randint(0, 3, (20,)))
        >>> result = rewind_modules(ProbeInputs(model, init, final, data, ["1", "2"]))
        >>> list(result)
        ['final', '1', '2']
        >>> result["1"] == result["final"]  # rewinding a module that did not move changes nothing
        True
        >>> round(result["2"]["loss"], 4)  # the head rewound to zero: uniform outputs, loss ln 3
        1.0986
    """
    setup = inputs.setup(max_examples)
    probe, init, final, params = setup.probe, setup.init, setup.final, setup.params
    loss, metric = probe.evaluate(final)
    out = {"final": {"loss": loss, "metric": metric}}
    for index, name in enumerate(setup.names):
        mod = PerturbedModule(name, index, params, init, final, 0, 0)
        loss, metric = probe.evaluate(mod.state(final, 0.0))
        out[name] = {"loss": loss, "metric": metric}
    return out


def criticality_heatmap(
    inputs: ProbeInputs,
    *,
    num_alphas: int = 4,
    num_sigmas: int = 4,
    noise_samples: int = 1,
    max_sigma: float = 1.0,
    seed: int = 0,
    max_examples: int | None = 500,
) -> dict[str, dict[str, Any]]:
    """Metric over an (α, σ) grid per module, as in the paper's heat maps (Neyshabur et al. 2020, §3.4).

    σ runs over ``linspace(0, max_sigma, num_sigmas)`` (σ = 0 included: no noise) and α over
    ``linspace(0, 1, num_alphas)``; each cell is the mean metric over ``noise_samples`` draws
    (one evaluation where σ = 0). Defaults are coarser than the μ search to stay cheap: the cost is
    modules × num_alphas × (1 + (num_sigmas − 1) × noise_samples) passes over a fixed random
    subset of at most ``max_examples`` of ``inputs.data`` (``seed`` picks it and the noise).

    Returns:
        module -> {"alphas": [A], "sigmas": [S], "distance": [A] (α ‖θ_i^F − θ_i^0‖_F),
        "metric": [[S] per α] (rows α, columns σ), "loss": same shape}.

    Example:
        >>> import torch
        >>> from transferscope.data.base import TensorImageDataset
        >>> from transferscope.measures.module_probe import ProbeInputs
        >>> from transferscope.measures.rewind import criticality_heatmap, rewind_modules
        >>> data = TensorImageDataset(torch.randn(20, 1, 2, 2), torch.randint(0, 2, (20,)))
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> init = {"1.weight": torch.zeros(2, 4), "1.bias": torch.zeros(2)}
        >>> inputs = ProbeInputs(model, init, {**init, "1.weight": torch.ones(2, 4)}, data, ["1"])
        >>> cells = criticality_heatmap(inputs, num_alphas=3, num_sigmas=2)["1"]
        >>> cells["alphas"], cells["sigmas"], [round(d, 2) for d in cells["distance"]]  # √8 moved
        ([0.0, 0.5, 1.0], [0.0, 1.0], [0.0, 1.41, 2.83])
        >>> rewound = rewind_modules(inputs)
        >>> cells["metric"][0][0] == rewound["1"]["metric"]  # α = 0, no noise: rewound
        True
        >>> cells["metric"][-1][0] == rewound["final"]["metric"]  # α = 1, no noise: final
        True
    """
    setup = inputs.setup(max_examples, seed)
    probe, init, final, params = setup.probe, setup.init, setup.final, setup.params
    alphas = alpha_grid(num_alphas)
    sigmas = [float(s) for s in torch.linspace(0, max_sigma, num_sigmas, dtype=torch.float64)]
    out: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(setup.names):
        mod = PerturbedModule(name, index, params, init, final, noise_samples, seed)
        metric_rows, loss_rows = [], []
        with probe.varying(name, final):
            for alpha in alphas:
                metric_row, loss_row = [], []
                for sigma in sigmas:
                    draws = [
                        probe.evaluate(mod.state(final, alpha, sigma, s))
                        for s in range(noise_samples if sigma > 0 else 1)
                    ]
                    loss_row.append(sum(d[0] for d in draws) / len(draws))
                    metric_row.append(sum(d[1] for d in draws) / len(draws))
                metric_rows.append(metric_row)
                loss_rows.append(loss_row)
        out[name] = {
            "alphas": alphas,
            "sigmas": sigmas,
            "distance": [alpha * mod.distance for alpha in alphas],
            "metric": metric_rows,
            "loss": loss_rows,
        }
    return out


__all__ = ["criticality_heatmap", "rewind_modules"]
