"""Module criticality, the rewind test and heat maps (PAPER.md §4)."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from transferscope import TransferscopeError, module_criticality
from transferscope.data.base import TensorImageDataset
from transferscope.measures.criticality import (
    ProbeInputs,
    _bisection,
    _exhaustive,
    _pruned,
    alpha_grid,
    criticality_heatmap,
    rewind_modules,
    sigma_grid,
)
from transferscope.measures.interpolation import recalibrate_batchnorm
from transferscope.models import build_model

# Tiny models on a shared machine: extra OpenMP threads only wait for busy cores.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained():
    """(model, θ⁰, θ^F, data): a tiny Fixup ResNet fitted a little to a 4-class toy task."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(64, 1, 8, 8)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0).long()
    data = TensorImageDataset(x, y)
    model = build_model("fixup-small", 4, 1, widths=[4, 4, 4])
    init = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return model, init, {k: v.clone() for k, v in model.state_dict().items()}, data


GRID = dict(num_alphas=5, num_sigmas=6, noise_samples=2, max_sigma=0.12, tolerance=1.3)


def test_searches_against_the_exhaustive_grid(trained) -> None:
    model, init, final, data = trained
    exact = module_criticality(model, init, final, data, batch_size=64, **GRID)
    fast = module_criticality(model, init, final, data, batch_size=64, search="bisection", **GRID)
    slow = module_criticality(model, init, final, data, batch_size=64, search="grid", **GRID)
    assert exact.search == "pruned" and fast.search == "bisection"
    assert exact.modules == ["conv1", "layer1.0", "layer2.0", "layer3.0", "fc"]
    assert exact.mu == slow.mu, (exact.mu, exact.argmin)
    assert exact.network_criticality == slow.network_criticality
    # This model's grid is monotone in σ on every row bisection relies on: the same μ.
    assert fast.mu == slow.mu, (fast.mu, fast.argmin)
    # Non-trivial: some modules are feasible with α > 0, and the head cannot be rewound.
    assert any(v is not None and v > 0 for v in exact.mu.values())
    assert exact.mu["fc"] is None or exact.mu["fc"] > 0
    assert (
        fast.forward_passes < exact.forward_passes
        and exact.forward_passes * 3 < slow.forward_passes
    )
    # every cell, every sample, L_S(θ^F) and one pass per module recording what runs before it
    assert slow.forward_passes == 5 * 5 * 6 * 2 + 1 + 5
    assert exact.epsilon == pytest.approx(1.3 * exact.final_loss)
    # μ is α² ‖Δθ‖² / σ² at the argmin
    for result in (fast, exact):
        for m, v in result.mu.items():
            if v is not None and result.argmin[m] is not None:
                alpha, sigma = result.argmin[m]
                assert v == pytest.approx(alpha**2 * result.distance[m] ** 2 / sigma**2)
    with pytest.raises(TransferscopeError, match="pruned, bisection, grid"):
        module_criticality(model, init, final, data, search="random", **GRID)


def _decide(table: torch.Tensor, alphas: list[float], sigmas: list[float]):
    """A feasibility callback over a fixed (α, σ) table of booleans, counting its calls."""
    calls = []

    def feasible(alpha: float, sigma: float, early: bool) -> bool:
        calls.append((alpha, sigma))
        return bool(table[alphas.index(alpha), sigmas.index(sigma)])

    return feasible, calls


def test_bisection_is_exact_on_monotone_rows_and_never_below_the_grid() -> None:
    """The searches on random feasibility tables: on rows monotone in σ bisection finds the
    grid's minimum, and on any table its μ is a feasible cell's (never below the grid's)."""
    alphas, sigmas = alpha_grid(6), sigma_grid(11, 0.1)
    g = torch.Generator().manual_seed(0)
    differed = 0
    for trial in range(300):
        d2 = float(torch.empty(()).uniform_(0.01, 100, generator=g))
        if trial % 2 == 0:
            # Monotone: feasible up to a per-α boundary (-1: nowhere), any shape across α.
            edge = torch.randint(-1, len(sigmas), (len(alphas),), generator=g)
            table = torch.arange(len(sigmas))[None, :] <= edge[:, None]
        else:
            table = torch.rand(len(alphas), len(sigmas), generator=g) < 0.3
        feasible, calls = _decide(table, alphas, sigmas)
        grid = _exhaustive(feasible, alphas, sigmas, d2)
        assert len(calls) == table.numel()
        assert _pruned(_decide(table, alphas, sigmas)[0], alphas, sigmas, d2) == grid
        feasible, calls = _decide(table, alphas, sigmas)
        found = _bisection(feasible, alphas, sigmas, d2)
        if trial % 2 == 0:
            assert (found and found[0]) == (grid and grid[0]), (table, found, grid)
            assert len(calls) < table.numel()
        elif grid is None:
            assert found is None
        else:
            assert found is None or found[0] >= grid[0]
            if found is not None:
                assert table[alphas.index(found[1]), sigmas.index(found[2])]
            differed += found is None or found[0] > grid[0]
    assert differed > 0  # random tables are rarely monotone: the assumption matters


def test_unchanged_module_and_absolute_epsilon(trained) -> None:
    model, _, final, data = trained
    # θ⁰ = θ^F: rewinding changes nothing, so α = 0 is feasible and μ = 0 everywhere.
    same = module_criticality(model, final, final, data, modules=["layer1.0", "fc"], **GRID)
    assert same.mu == {"layer1.0": 0.0, "fc": 0.0} and same.network_criticality == 0.0
    # ε below the final loss: nothing is feasible, and it is said.
    none = module_criticality(model, final, final, data, modules=["fc"], epsilon=1e-6, **GRID)
    assert none.mu == {"fc": None} and none.infeasible == ["fc"]
    assert not none.final_meets_epsilon


def test_sigma_grid_reaches_vanishing_noise() -> None:
    grid = sigma_grid(21, 0.05)
    assert grid[0] == pytest.approx(0.05e-4) and grid[-1] == 0.05 and len(grid) == 21
    ratios = [b / a for a, b in itertools.pairwise(grid)]
    assert max(ratios) == pytest.approx(min(ratios))  # geometric
    # 10^(-2 + k/2) from float64 logarithms: a few ε·ln(10)·|exponent| relative; not values
    # rounded by hand to 6 digits, which sat 7e-7 from the grid against a tolerance of 1e-6.
    exact = [10 ** (-2 + k / 2) for k in range(5)]
    assert sigma_grid(5, 1.0, min_sigma=0.01) == pytest.approx(exact, rel=1e-13)
    with pytest.raises(TransferscopeError, match="min_sigma"):
        sigma_grid(5, 0.1, min_sigma=0.2)


def test_every_module_is_finite_when_the_final_model_meets_epsilon(trained) -> None:
    """The failure the geometric grid fixes: noise levels comparable to the weights only."""
    model, init, final, data = trained
    coarse = dict(num_alphas=3, num_sigmas=3, noise_samples=2, tolerance=1.01)
    result = module_criticality(model, init, final, data, max_sigma=2.0, **coarse)
    assert result.final_meets_epsilon
    assert result.infeasible == [] and all(v is not None for v in result.mu.values())
    assert result.network_criticality == pytest.approx(sum(result.mu.values()))
    # The same grid without its vanishing levels finds nothing for some modules: those are
    # lower bounds, and the network criticality is a bound, never a sum that counts them as 0.
    high = module_criticality(model, init, final, data, max_sigma=2.0, min_sigma=1.0, **coarse)
    assert high.infeasible
    assert high.network_criticality is None
    for m in high.infeasible:
        assert high.mu_bound[m] == pytest.approx(high.distance[m] ** 2 / 1.0**2)
    finite = sum(v for v in high.mu.values() if v is not None)
    assert high.network_criticality_bound == pytest.approx(finite + sum(high.mu_bound.values()))


def test_margin_sets_epsilon_above_the_final_loss(trained) -> None:
    model, init, final, data = trained
    result = module_criticality(model, init, final, data, modules=["fc"], margin=0.05, **GRID)
    assert result.epsilon == pytest.approx(result.final_loss + 0.05)


def test_batchnorm_statistics_are_recomputed_at_each_alpha() -> None:
    """A BatchNorm model's running statistics are refitted at θ^α, as along a path."""
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 1).eval()
    x = torch.randn(32, 1, 32, 32)
    y = torch.arange(32) % 3
    data = TensorImageDataset(x, y)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    final = {k: v.clone() for k, v in init.items()}
    # A trained-looking final state: perturbed weights, stale (wrong) running statistics.
    g = torch.Generator().manual_seed(1)
    for k, v in final.items():
        if k.endswith("running_mean"):
            final[k] = v + 5.0
        elif v.is_floating_point() and not k.endswith("running_var"):
            final[k] = v + 0.01 * torch.randn(v.shape, generator=g)
    kwargs = dict(
        modules=["layer1.0", "fc"], num_alphas=2, num_sigmas=3, noise_samples=1,
        tolerance=1.01, batch_size=32,
    )  # fmt: skip
    refit = module_criticality(model, init, final, data, **kwargs)
    stale = module_criticality(model, init, final, data, recalibrate_batchnorm=False, **kwargs)
    assert refit.recalibrated and not stale.recalibrated

    def loss_of(net: torch.nn.Module) -> float:
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(net.eval()(x), y).item()

    # Independently: the interpolation's recalibration on the same examples, then evaluate.
    fitted = copy.deepcopy(model)
    fitted.load_state_dict(final)
    assert stale.final_loss == pytest.approx(loss_of(fitted), rel=1e-5)
    recalibrate_batchnorm(fitted, data, batch_size=32, max_examples=None)
    assert refit.final_loss == pytest.approx(loss_of(fitted), rel=1e-5)
    assert refit.final_loss != pytest.approx(stale.final_loss, rel=1e-3)
    assert all(v is not None for v in refit.mu.values())


def test_rewind_and_heatmap(trained) -> None:
    model, init, final, data = trained
    rewind = rewind_modules(ProbeInputs(model, init, final, data, modules=["layer1.0", "fc"]))
    assert set(rewind) == {"final", "layer1.0", "fc"}
    # The Fixup head starts at zero: rewinding it gives uniform outputs, chance-level loss.
    assert rewind["fc"]["loss"] == pytest.approx(torch.log(torch.tensor(4.0)).item(), rel=1e-5)
    heat = criticality_heatmap(
        ProbeInputs(model, init, final, data, modules=["fc"]),
        num_alphas=3,
        num_sigmas=3,
        max_sigma=0.1,
    )["fc"]
    assert heat["alphas"] == [0.0, 0.5, 1.0] and heat["sigmas"][0] == 0.0
    assert len(heat["metric"]) == 3 and all(len(row) == 3 for row in heat["metric"])
    assert heat["metric"][-1][0] == pytest.approx(rewind["final"]["metric"])
    assert heat["distance"][-1] == pytest.approx(
        torch.cat([(final[k] - init[k]).flatten() for k in ("fc.weight", "fc.bias")]).norm().item()
    )


def test_states_must_fit_the_model(trained) -> None:
    model, init, final, data = trained
    bad = {k: v for k, v in final.items() if k != "fc.bias"}
    with pytest.raises(TransferscopeError, match=r"final_state .* fc\.bias"):
        module_criticality(model, init, bad, data)
    with pytest.raises(TransferscopeError, match="module 'nope'"):
        module_criticality(model, init, final, data, modules=["nope"])
