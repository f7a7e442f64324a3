"""Rank correlations of the noise models: against scipy, against their definitions, and how a
measured order survives (or not) the noise of each measurement; the power calculations that say
what would decide an inconclusive verdict, against the normal formulas."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from transferscope.errors import TransferscopeError
from transferscope.measures.statistics import cluster_ranks, noisy_spearman, spearman_trend


def test_cluster_ranks_are_scipys_average_ranks_without_a_tolerance() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 5, size=7).astype(float)  # ties on purpose
        assert np.array_equal(cluster_ranks(x), stats.rankdata(x))


def test_cluster_ranks_chain_values_within_the_tolerance() -> None:
    # 1.0-1.3-1.55 are linked by gaps of at most 0.31; 5 stands alone.
    assert cluster_ranks([1.3, 5.0, 1.0, 1.55], 0.31).tolist() == [2.0, 4.0, 2.0, 2.0]
    assert cluster_ranks([1.3, 5.0, 1.0, 1.55], 0.2).tolist() == [2.0, 4.0, 1.0, 3.0]


def test_noisy_spearman_without_noise_is_spearmans_rho_and_decides() -> None:
    rng = np.random.default_rng(1)
    for n in (3, 4, 6):
        for _ in range(5):
            x, y = rng.normal(size=n), rng.normal(size=n)
            got = noisy_spearman(x, y, [0.0] * n)
            rho = stats.spearmanr(x, y).statistic
            assert got.estimate == pytest.approx(rho)
            # Every redraw is the data itself: the sign is sure whenever ρ is not 0.
            assert got.direction == int(np.sign(round(rho, 12)))
            assert got.p_value == pytest.approx(0.0 if rho != 0 else 1.0)


def test_noisy_spearman_is_antisymmetric_and_invariant_to_monotone_maps() -> None:
    x, y, e = [1.0, 2.0, 4.0, 8.0], [5.0, 3.0, 4.0, 0.0], [0.8, 0.5, 0.7, 1.0]
    a = noisy_spearman(x, y, e, seed=3)
    b = noisy_spearman(x, [-v for v in y], e, seed=3)
    assert b.estimate == pytest.approx(-a.estimate) and b.direction == -a.direction
    assert b.p_value == pytest.approx(a.p_value, abs=0.01)  # the same noise, not negated
    # Distances enter through their ranks only.
    c = noisy_spearman(np.log(x), y, e, seed=3)
    assert (c.estimate, c.direction, c.p_value) == (a.estimate, a.direction, a.p_value)


def test_the_share_of_redraws_matches_its_definition() -> None:
    """p_value is the share of redraws (values + noise) whose ρ has the other sign: recomputed
    here by a plain loop over the same normal draws."""
    x, y, e = [0.0, 1.0, 2.0], [3.0, 2.0, 1.5], [0.6, 0.6, 0.6]
    got = noisy_spearman(x, y, e, draws=500, seed=7)
    draws = np.asarray(y) + np.random.default_rng(7).standard_normal((500, 3)) * np.asarray(e)
    other = np.mean([stats.spearmanr(x, d).statistic >= 0 for d in draws])
    assert got.p_value == pytest.approx(other)
    assert 0 < got.p_value < 0.5 and got.direction == (-1 if other <= 0.05 else 0)


def test_three_items_decide_only_when_the_noise_is_small_against_the_gaps() -> None:
    x = [1.0, 2.0, 3.0]
    assert noisy_spearman(x, [9.0, 6.0, 3.0], [0.5] * 3).direction == -1
    assert noisy_spearman(x, [9.0, 6.0, 3.0], [3.0] * 3).direction == 0
    assert noisy_spearman(x, [3.0, 6.0, 9.0], [0.5] * 3).direction == 1
    # A permutation test cannot decide on three values at all.
    assert spearman_trend([9.0, 6.0, 3.0]).direction == 0


def test_noisy_spearman_rejects_what_it_cannot_rank() -> None:
    with pytest.raises(TransferscopeError, match="at least 3"):
        noisy_spearman([1.0, 2.0], [1.0, 2.0], [0.1, 0.1])
    with pytest.raises(TransferscopeError, match="finite"):
        noisy_spearman([1.0, 2.0, 3.0], [1.0, float("nan"), 2.0], [0.1] * 3)
    with pytest.raises(TransferscopeError, match="finite"):
        noisy_spearman([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.1, -0.1, 0.1])
    tied = noisy_spearman([1.0, 2.0, 3.0], [4.0, 4.0, 4.0], [0.0] * 3)
    assert tied.direction == 0 and "all tied" in tied.method


def test_exact_permutation_p_of_spearman_trend_counts_orderings() -> None:
    values = [0.3, 0.1, 0.5, 0.9]
    rho = stats.spearmanr(range(4), values).statistic
    rhos = [stats.spearmanr(range(4), p).statistic for p in itertools.permutations(values)]
    expected = np.mean([r >= rho - 1e-12 for r in rhos])
    assert spearman_trend(values).p_value == pytest.approx(expected)


def test_power_of_more_seeds_matches_the_noncentral_t() -> None:
    """seeds_to_decide against an independent formulation: the power of a two-sided
    two-sample t-test with groups of n is P(|T| > t_crit) for T noncentral t with 2n - 2
    degrees of freedom and noncentrality d sqrt(n / 2) (scipy), and the answer is the first n
    whose power reaches 0.8."""
    from scipy.stats import nct, t

    from transferscope.measures.statistics import seeds_to_decide

    def power(d: float, n: int) -> float:
        df, nc = 2 * n - 2, d * math.sqrt(n / 2)
        crit = t.ppf(0.975, df)
        return float(nct.sf(crit, df, nc) + nct.cdf(-crit, df, nc))

    for d in (0.8, 1.0, 1.5, 3.0):
        n = seeds_to_decide(d, 1.0, lambda s: (s, s))
        assert n is not None and power(d, n) >= 0.8 > power(d, n - 1), (d, n)
        # The effect's sign and its units do not matter, only its size against the spread.
        assert seeds_to_decide(-2 * d, 2.0, lambda s: (s, s)) == n
    # A fixed baseline of one value caps the power: a small effect is never decided.
    assert seeds_to_decide(1.0, 1.0, lambda s: (s, 1)) is None
    assert seeds_to_decide(4.0, 1.0, lambda s: (s, 1)) is not None
    assert seeds_to_decide(0.0, 1.0, lambda s: (s, s)) is None


def test_examples_to_decide_matches_the_normal_formula() -> None:
    from scipy.stats import norm

    from transferscope.measures.statistics import examples_for_sign_test, examples_to_decide

    for effect, sd in ((0.02, 0.3), (0.05, 0.5), (0.1, 0.45)):
        formula = ((norm.ppf(0.975) + norm.ppf(0.8)) * sd / effect) ** 2
        assert examples_to_decide(effect, sd) == math.ceil(formula - 1e-9)
        one_sided = ((norm.ppf(0.95) + norm.ppf(0.8)) * sd / effect) ** 2
        assert examples_to_decide(effect, sd, one_sided=True) == math.ceil(one_sided - 1e-9)
        # The sign of the effect does not matter, only its size against the spread.
        assert examples_to_decide(-effect, sd) == examples_to_decide(effect, sd)
    # The sign test: Cohen's h of the win share against 1/2, scaled by the disagreement rate.
    h = 2 * math.asin(math.sqrt(0.6)) - 2 * math.asin(math.sqrt(0.5))
    disagreements = ((norm.ppf(0.975) + norm.ppf(0.8)) / h) ** 2
    assert examples_for_sign_test(60, 40, 1000) == math.ceil(disagreements * 1000 / 100 - 1e-9)
    assert examples_for_sign_test(50, 50, 1000) is None
