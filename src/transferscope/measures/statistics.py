"""Noise models for verdicts: when is a measured difference more than seed and test-set noise?

A finding compares two things measured on finite data from a few seeds: P-T's accuracy against
RI-T's on 539 test images, the CKA of one P-T pair against that of one RI-T pair. Each function
here returns a :class:`Comparison`: the estimate, its interval or p-value, and a *direction*
(+1: A is larger beyond the noise, -1: smaller beyond the noise, 0: within the noise), so that a
rule can say *holds*, *does not hold* or *inconclusive* and show the statistic it used.

- :func:`paired_correctness`: multiclass final accuracy of two groups of runs on the same test
  examples, by an exact sign test on the examples where they disagree (McNemar's test, extended
  to several runs per side by averaging each example's correctness over the runs).
- :func:`bootstrap_interval`: a paired bootstrap over test examples of any statistic of example
  weights (used for mean AUC, relative drops and metric differences).
- :func:`weighted_auc`: ROC AUC of each label under many bootstrap weightings at once (defined
  in :mod:`transferscope.training.metrics`, whose per-task AUC is its one-weighting case).
- :func:`compare_groups`: two sets of pairwise measures (CKA, distance, uncommon mistakes) over
  seed pairs: the difference of means against the pair-to-pair spread and a stated floor, and the
  two ranges must not overlap.
- :func:`spearman_trend`: Spearman's ρ between depth and a per-module value, with an exact
  permutation p-value for small numbers of modules.
- :func:`noisy_spearman`: Spearman's ρ across a few measured items (targets), its sign tested
  against each item's measurement noise.

What would decide an undecided comparison (statsmodels' power functions, at :data:`POWER`):

- :func:`seeds_to_decide`: the seeds at which a two-sample t-test of two groups of pairwise
  measures (their sizes a function of the seeds) detects an effect against the measured spread;
- :func:`examples_to_decide`: the test examples at which a one-sample z-test detects an effect
  against a per-example standard deviation (barriers, bootstrap intervals);
- :func:`examples_for_sign_test`: the test examples at which the sign test on disagreements
  detects the observed balance of wins and losses.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from transferscope.errors import TransferscopeError
from transferscope.training.metrics import weighted_auc

ALPHA = 0.05  # two-sided level of every test here (one-sided tests use it on their side)
BOOTSTRAP_SAMPLES = 1000
_BOOTSTRAP_CHUNK = 100  # bootstrap weightings built at once: bounds memory at 100 x n floats


def scipy_stats() -> ModuleType:
    """scipy.stats, imported on first use: it takes ~1 s, and every command that plans a study
    imports this module through the analyses' verdicts.

    Example:
        >>> from transferscope.measures.statistics import scipy_stats
        >>> scipy_stats().norm.cdf(0.0)
        np.float64(0.5)
    """
    from scipy import stats

    return stats


@dataclass(frozen=True)
class Comparison:
    """The outcome of a comparison of A against B.

    Attributes:
        direction: +1 when A exceeds B beyond the noise, -1 when B exceeds A, 0 within the noise.
        estimate: the measured difference A - B (or the statistic itself, e.g. ρ).
        low, high: a 95% interval of ``estimate`` when the method gives one.
        p_value: the test's p-value when it gives one.
        method: the statistic in words, for the findings table.
        n: the test examples a paired comparison was measured on.
        wins, losses: the sign test's examples where A (B) is right and the other side wrong.

    Example:
        >>> from transferscope.measures.statistics import Comparison
        >>> c = Comparison(1, 0.05, 0.01, 0.09, p_value=0.003, method="a test")
        >>> c.describe()
        '+0.05 [+0.01, +0.09], p = 0.003 (a test)'
    """

    direction: int
    estimate: float
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    method: str = ""
    n: int | None = None
    wins: int | None = None
    losses: int | None = None

    def describe(self, digits: int = 3) -> str:
        """``estimate [low, high], p = ...; method`` in a compact form."""
        text = f"{self.estimate:+.{digits}g}"
        if self.low is not None and self.high is not None:
            text += f" [{self.low:+.{digits}g}, {self.high:+.{digits}g}]"
        if self.p_value is not None:
            text += f", p = {self.p_value:.2g}"
        return f"{text} ({self.method})" if self.method else text


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial p-value of ``wins`` against ``losses`` under p = 1/2.

    With one run per side this is McNemar's exact test on the discordant examples.

    Example:
        >>> from transferscope.measures.statistics import sign_test
        >>> sign_test(10, 0)  # 2 x (1/2)^10
        0.001953125
        >>> sign_test(5, 5), sign_test(0, 0)
        (1.0, 1.0)
        >>> sign_test(8, 2) == sign_test(2, 8)  # two-sided: symmetric
        True
    """
    n = wins + losses
    if n == 0:
        return 1.0
    return float(scipy_stats().binomtest(wins, n, 0.5, alternative="two-sided").pvalue)


def paired_correctness(correct_a: np.ndarray, correct_b: np.ndarray) -> Comparison:
    """Accuracy of runs A against runs B on the same test examples (sign test / McNemar).

    Args:
        correct_a: (runs A, n) booleans, whether each run of A classified each example right.
        correct_b: (runs B, n) booleans for B, on the same n examples in the same order.

    Each example's score is its mean correctness over a side's runs; the examples where the two
    sides' scores differ are counted as wins of A or of B, and an exact binomial test decides
    whether A and B differ. One run per side is McNemar's exact test. ``estimate`` is the
    difference of mean accuracies (A - B), in accuracy units.

    Example:
        >>> import numpy as np
        >>> from transferscope.measures.statistics import paired_correctness
        >>> a = np.ones((1, 12), dtype=bool)  # one run, right on all 12 examples
        >>> b = a.copy()
        >>> b[0, :10] = False  # wrong on 10 of them
        >>> c = paired_correctness(a, b)
        >>> c.direction, c.wins, c.losses, round(c.estimate, 4), c.p_value
        (1, 10, 0, 0.8333, 0.001953125)
        >>> paired_correctness(b, a).direction  # swapped: B better
        -1
        >>> paired_correctness(a, a).direction  # no disagreement: within the noise
        0
    """
    a = np.atleast_2d(np.asarray(correct_a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(correct_b, dtype=np.float64))
    if a.shape[1] != b.shape[1]:
        raise TransferscopeError(
            f"paired_correctness needs the same test examples on both sides: {a.shape[1]} vs "
            f"{b.shape[1]}"
        )
    d = a.mean(axis=0) - b.mean(axis=0)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    p = sign_test(wins, losses)
    direction = int(np.sign(wins - losses)) if p < ALPHA else 0
    return Comparison(
        direction,
        float(a.mean() - b.mean()),
        p_value=p,
        method=f"sign test (McNemar) on {wins + losses} of {a.shape[1]} test examples "
        f"where the sides disagree: {wins} vs {losses}",
        n=int(a.shape[1]),
        wins=wins,
        losses=losses,
    )


def bootstrap_weights(n: int, samples: int, seed: int) -> Callable[[], np.ndarray]:
    """A generator of (chunk, n) float64 example-count weights of a paired bootstrap.

    Example:
        >>> from transferscope.measures.statistics import bootstrap_weights
        >>> draw = bootstrap_weights(5, samples=3, seed=0)
        >>> weights = draw()  # each row: how often each of the 5 examples was resampled
        >>> weights.shape, weights.sum(axis=1).tolist()
        ((3, 5), [5.0, 5.0, 5.0])
    """
    rng = np.random.default_rng(seed)
    remaining = [samples]

    def next_chunk() -> np.ndarray:
        size = min(_BOOTSTRAP_CHUNK, remaining[0])
        remaining[0] -= size
        idx = rng.integers(0, n, size=(size, n))
        weights = np.zeros((size, n))
        np.add.at(weights, (np.arange(size)[:, None], idx), 1.0)
        return weights

    return next_chunk


def bootstrap_interval(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    method: str = "",
) -> Comparison:
    """Percentile interval of a statistic over a paired bootstrap of n test examples.

    Args:
        statistic: maps example weights (B, n) (multinomial counts summing to n per row; a row of
            ones is the data itself) to the statistic of each weighting (B,).
        n: the number of test examples.
        samples: bootstrap resamples; seed: of the resampling.
        method: words for the findings table (the bootstrap is added).

    ``direction`` is +1 (-1) when the whole 95% interval is above (below) zero.

    Example:
        >>> import numpy as np
        >>> from transferscope.measures.statistics import bootstrap_interval
        >>> diff = np.array([0.2, 0.1, 0.3, 0.2, 0.25, 0.15])  # per-example A - B
        >>> def mean(weights):
        ...     return weights @ diff / weights.sum(axis=1)
        >>> c = bootstrap_interval(mean, len(diff), samples=200, seed=0)
        >>> c.direction, round(c.estimate, 4), c.low <= c.estimate <= c.high
        (1, 0.2, True)
        >>> bootstrap_interval(lambda w: -mean(w), len(diff), samples=200).direction
        -1
    """
    if n < 2:
        raise TransferscopeError(f"a bootstrap needs at least 2 examples, got {n}")
    estimate = float(np.asarray(statistic(np.ones((1, n))))[0])
    draw = bootstrap_weights(n, samples, seed)
    values: list[np.ndarray] = []
    done = 0
    while done < samples:
        chunk = draw()
        values.append(np.asarray(statistic(chunk), dtype=np.float64))
        done += len(chunk)
    all_values = np.concatenate(values)
    all_values = all_values[np.isfinite(all_values)]
    if len(all_values) < samples // 2:
        return Comparison(
            0, estimate, method=f"{method}; bootstrap undefined" if method else "", n=n
        )
    low, high = (float(x) for x in np.quantile(all_values, [ALPHA / 2, 1 - ALPHA / 2]))
    direction = 1 if low > 0 else (-1 if high < 0 else 0)
    words = f"paired bootstrap over {n} test examples, {samples} resamples"
    return Comparison(
        direction, estimate, low, high, method=f"{method}; {words}" if method else words, n=n
    )


def mean_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean over labels of :func:`weighted_auc` (labels without an AUC left out): (B,).

    Example:
        >>> import numpy as np
        >>> from transferscope.measures.statistics import mean_auc
        >>> labels = np.array([[0, 0], [0, 0], [1, 1], [1, 1]])
        >>> scores = np.array([[0.1, 0.0], [0.2, 0.0], [0.3, 0.0], [0.4, 0.0]])
        >>> mean_auc(scores, labels, np.ones((1, 4))).tolist()  # AUCs 1.0 and 0.5 (ties)
        [0.75]
    """
    aucs = weighted_auc(scores, labels, weights)
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.where(np.isfinite(aucs), aucs, np.nan), axis=1)


def metric_under_weights(
    task: str, outputs: np.ndarray, targets: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """The test metric of one run's saved outputs as a function of example weights.

    Args:
        task: 'multiclass' (accuracy of the argmax) or 'multilabel' (mean AUC over labels).
        outputs: (n, K) logits; targets: (n,) class indices or (n, K) 0/1 labels.

    Returns:
        ``f(weights (B, n)) -> (B,)``; a row of ones gives the run's metric itself.

    Example:
        >>> import numpy as np
        >>> from transferscope.measures.statistics import metric_under_weights
        >>> logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [3.0, 0.0]])
        >>> targets = np.array([0, 1, 1, 0])  # the third example is misclassified
        >>> accuracy = metric_under_weights("multiclass", logits, targets)
        >>> accuracy(np.ones((1, 4))).tolist()  # the run's own accuracy
        [0.75]
        >>> accuracy(np.array([[1.0, 1.0, 0.0, 2.0]])).tolist()  # a resample without it
        [1.0]
    """
    if task == "multiclass":
        correct = (np.asarray(outputs).argmax(axis=1) == np.asarray(targets)).astype(np.float64)
        return lambda w: (w @ correct) / w.sum(axis=1)
    return lambda w: mean_auc(outputs, targets, w)


def compare_final_metrics(
    task: str,
    outputs_a: Sequence[np.ndarray],
    outputs_b: Sequence[np.ndarray],
    targets: np.ndarray,
    *,
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
) -> Comparison:
    """Final test metric of runs A (e.g. P-T, one per seed) against runs B (e.g. RI-T) on the
    same test examples.

    Multiclass: :func:`paired_correctness` (sign test on the examples where the sides disagree,
    McNemar's test for one run per side). Multilabel: :func:`bootstrap_interval` of the
    difference of mean AUCs (each side's mean over its runs). ``estimate`` is A - B in metric
    units.

    Example:
        >>> import numpy as np
        >>> from transferscope.measures.statistics import compare_final_metrics
        >>> targets = np.array([0, 1] * 6)
        >>> right = np.eye(2)[targets]  # logits of a run right on all 12 examples
        >>> wrong = right.copy()
        >>> wrong[:10] = right[:10, ::-1]  # a run wrong on 10 of them
        >>> c = compare_final_metrics("multiclass", [right], [wrong], targets)
        >>> c.direction, round(c.estimate, 4)
        (1, 0.8333)
        >>> compare_final_metrics("multiclass", [right], [right], targets).direction
        0
    """
    if not outputs_a or not outputs_b:
        raise TransferscopeError("compare_final_metrics needs at least one run on each side")
    y = np.asarray(targets)
    if task == "multiclass":
        return paired_correctness(
            np.stack([np.asarray(o).argmax(axis=1) == y for o in outputs_a]),
            np.stack([np.asarray(o).argmax(axis=1) == y for o in outputs_b]),
        )
    fa = [metric_under_weights(task, o, y) for o in outputs_a]
    fb = [metric_under_weights(task, o, y) for o in outputs_b]

    def difference(w: np.ndarray) -> np.ndarray:
        return np.mean([f(w) for f in fa], axis=0) - np.mean([f(w) for f in fb], axis=0)

    return bootstrap_interval(
        difference, len(y), samples=samples, seed=seed, method="mean AUC difference"
    )


def pooled_sd(groups: Sequence[Sequence[float]]) -> tuple[float | None, int]:
    """Pooled standard deviation over the groups with at least two values, and its d.o.f.

    Example:
        >>> from transferscope.measures.statistics import pooled_sd
        >>> s, dof = pooled_sd([[1.0, 3.0], [2.0, 4.0], [5.0]])  # a single value adds nothing
        >>> round(s, 4), dof  # sqrt((2 + 2) / 2)
        (1.4142, 2)
        >>> pooled_sd([[1.0]])
        (None, 0)
    """
    ss, dof = 0.0, 0
    for g in groups:
        x = np.asarray([v for v in g if math.isfinite(v)], dtype=np.float64)
        if len(x) >= 2:
            ss += float(((x - x.mean()) ** 2).sum())
            dof += len(x) - 1
    return (math.sqrt(ss / dof), dof) if dof else (None, 0)


def compare_groups(
    a: Sequence[float],
    b: Sequence[float],
    *,
    floor: float = 0.0,
    relative_floor: float = 0.0,
    spread_from: Sequence[Sequence[float]] = (),
    what: str = "pairs",
) -> Comparison:
    """Pairwise measures of group A against group B, over seed pairs (e.g. CKA of P-T/P-T pairs
    against RI-T/RI-T pairs).

    The difference of means counts when it exceeds a margin and the two ranges do not overlap.
    The margin is the largest of ``floor``, ``relative_floor`` x the larger |mean|, and
    t x s x sqrt(1/n_A + 1/n_B), where s is the pooled pair-to-pair standard deviation of A, B
    and ``spread_from`` (other groups of the same measure, e.g. P-T/RI-T pairs, whose spread
    tells how much one pair differs from another) and t the Student quantile for its degrees of
    freedom. Without any group of two or more pairs the seed noise is unknown and only the floor
    applies: the method text says so.

    Example:
        >>> from transferscope.measures.statistics import compare_groups
        >>> pt_pairs, rit_pairs = [0.9, 0.92, 0.91], [0.5, 0.52, 0.51]  # e.g. CKA per pair
        >>> c = compare_groups(pt_pairs, rit_pairs)
        >>> c.direction, round(c.estimate, 4)
        (1, 0.4)
        >>> compare_groups(rit_pairs, pt_pairs).direction  # swapped
        -1
        >>> compare_groups(pt_pairs, rit_pairs, floor=0.5).direction  # below a stated floor
        0
    """
    xa = [float(v) for v in a if math.isfinite(v)]
    xb = [float(v) for v in b if math.isfinite(v)]
    if not xa or not xb:
        raise TransferscopeError("compare_groups needs at least one finite value on each side")
    ma, mb = float(np.mean(xa)), float(np.mean(xb))
    diff = ma - mb
    s, dof = pooled_sd([xa, xb, *spread_from])
    margin = max(floor, relative_floor * max(abs(ma), abs(mb)))
    if s is not None:
        t = float(scipy_stats().t.ppf(1 - ALPHA / 2, dof))
        margin = max(margin, t * s * math.sqrt(1 / len(xa) + 1 / len(xb)))
        noise = f"pair spread s = {s:.2g} ({dof} d.o.f.)"
    else:
        noise = "seed spread unknown (one pair per group)"
    if diff > margin and min(xa) > max(xb):
        direction = 1
    elif diff < -margin and max(xa) < min(xb):
        direction = -1
    else:
        direction = 0
    return Comparison(
        direction,
        diff,
        diff - margin,
        diff + margin,
        method=f"{len(xa)} vs {len(xb)} {what}; margin {margin:.2g} from {noise}",
    )


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    stats = scipy_stats()
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


EXACT_PERMUTATIONS = 8  # up to 8! = 40,320 orderings are enumerated; more use the t approximation


def spearman_trend(values: Sequence[float]) -> Comparison:
    """Spearman's ρ between position (0, 1, ..., input to output) and ``values``, with a p-value.

    A depth trend is a directional claim, so each direction has its one-sided test at level
    :data:`ALPHA`: ``direction`` is +1 when P(ρ' >= ρ) < 0.05 under random orderings, -1 when
    P(ρ' <= ρ) < 0.05, else 0; ``p_value`` is the one-sided p of the observed sign. Exact (every
    ordering enumerated) for up to :data:`EXACT_PERMUTATIONS` values, else scipy's t
    approximation. With 4 values only a perfect ordering decides (p = 1/24); with 3 nothing can
    (p >= 1/6), and the comparison says so rather than read a trend into noise.

    Example:
        >>> from transferscope.measures.statistics import spearman_trend
        >>> rising = spearman_trend([0.1, 0.2, 0.3, 0.4, 0.5])  # p = 1/5! of the orderings
        >>> rising.direction, rising.estimate, round(rising.p_value, 6)
        (1, 1.0, 0.008333)
        >>> spearman_trend([0.5, 0.4, 0.3, 0.2, 0.1]).direction
        -1
        >>> spearman_trend([0.1, 0.2, 0.3]).direction  # 3 values never decide
        0
    """
    y = np.asarray(values, dtype=np.float64)
    n = len(y)
    if n < 3:
        raise TransferscopeError(f"a rank correlation needs at least 3 values, got {n}")
    x = np.arange(n, dtype=np.float64)
    rho = _spearman(x, y)
    if not math.isfinite(rho):
        return Comparison(0, float("nan"), method=f"Spearman ρ over {n} values, all tied")
    if n <= EXACT_PERMUTATIONS:
        ranks = scipy_stats().rankdata(y)
        perms = np.asarray(list(itertools.permutations(range(n))), dtype=np.float64)
        rc = ranks - ranks.mean()
        pc = perms - perms.mean(axis=1, keepdims=True)
        den = math.sqrt(float((rc * rc).sum())) * np.sqrt((pc * pc).sum(axis=1))
        rhos = (pc @ rc) / den
        p_up = float(np.mean(rhos >= rho - 1e-12))
        p_down = float(np.mean(rhos <= rho + 1e-12))
        how = "exact permutation p"
    else:
        stats = scipy_stats()
        p_up = float(stats.spearmanr(x, y, alternative="greater").pvalue)
        p_down = float(stats.spearmanr(x, y, alternative="less").pvalue)
        how = "t approximation"
    direction = 1 if p_up < ALPHA else (-1 if p_down < ALPHA else 0)
    p = p_up if rho >= 0 else p_down
    return Comparison(
        direction, rho, p_value=p, method=f"Spearman ρ over {n} values, one-sided {how}"
    )


def cluster_ranks(x: Sequence[float], tie_within: float = 0.0) -> np.ndarray:
    """Average ranks (1-based) of ``x``, where values that a chain of gaps of at most
    ``tie_within`` links together share one rank: distances closer than their own noise are
    not ordered.

    Example:
        >>> from transferscope.measures.statistics import cluster_ranks
        >>> cluster_ranks([0.1, 0.5, 0.52, 0.9]).tolist()
        [1.0, 2.0, 3.0, 4.0]
        >>> cluster_ranks([0.1, 0.5, 0.52, 0.9], tie_within=0.05).tolist()  # 0.5, 0.52 tie
        [1.0, 2.5, 2.5, 4.0]
    """
    v = np.asarray(x, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    start = 0
    for i in range(1, len(v) + 1):
        if i == len(v) or v[order[i]] - v[order[i - 1]] > tie_within:
            ranks[order[start:i]] = (start + 1 + i) / 2
            start = i
    return ranks


NOISE_DRAWS = 2000


def noisy_spearman(
    x: Sequence[float],
    values: Sequence[float],
    errors: Sequence[float],
    *,
    tie_within: float = 0.0,
    draws: int = NOISE_DRAWS,
    seed: int = 0,
) -> Comparison:
    """Spearman's ρ between ``x`` and ``values``, its sign tested against the values' own
    measurement noise.

    For a fixed set of measured items (the targets of one study) the question is whether their
    order survives the noise of each measurement, not whether a random ordering could give the
    same ρ: the values are redrawn ``draws`` times, each from N(value, error²) independently
    (each item has its own test set), and ρ recomputed. ``direction`` is +1 when ρ > 0 in at
    least 1 − :data:`ALPHA` of the draws and the measured ρ > 0, -1 likewise for ρ < 0, else 0;
    ``p_value`` is the share of draws whose ρ has the other sign or is 0. Values of ``x`` within
    ``tie_within`` of each other share a rank (:func:`cluster_ranks`). Three items can decide,
    unlike :func:`spearman_trend`'s permutation test: with errors small against the gaps
    between values every draw keeps the measured order.

    Args:
        x: (n,) the ordering variable (e.g. distance from the source), n >= 3.
        values: (n,) measured values; errors: (n,) their standard errors (>= 0, finite).

    Example:
        >>> from transferscope.measures.statistics import noisy_spearman
        >>> distance, gain = [1.0, 2.0, 3.0], [0.1, 0.5, 0.9]
        >>> c = noisy_spearman(distance, gain, [0.01, 0.01, 0.01], draws=200)  # small errors
        >>> c.direction, c.estimate, c.p_value
        (1, 1.0, 0.0)
        >>> noisy_spearman(distance, gain, [1.0, 1.0, 1.0], draws=200).direction  # lost in noise
        0
    """
    xv = cluster_ranks(x, tie_within)
    y = np.asarray(values, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    n = len(y)
    if n < 3 or len(xv) != n or len(e) != n:
        raise TransferscopeError(
            f"a rank correlation needs at least 3 items with a value and an error each, got "
            f"{len(xv)} positions, {n} values, {len(e)} errors"
        )
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(e)) and np.all(e >= 0)):
        raise TransferscopeError("noisy_spearman needs finite values and errors >= 0")
    method = f"Spearman ρ over {n} items, sign over {draws} redraws within each item's noise"
    rho = _spearman(xv, y)
    if not math.isfinite(rho):
        return Comparison(0, float("nan"), method=f"{method}; all tied")
    rng = np.random.default_rng(seed)
    samples = y + rng.standard_normal((draws, n)) * e
    # Ranks per draw, then Pearson on ranks: Spearman's ρ of every draw at once.
    ry = np.apply_along_axis(scipy_stats().rankdata, 1, samples)
    rx = xv - xv.mean()
    ry = ry - ry.mean(axis=1, keepdims=True)
    den = math.sqrt(float((rx * rx).sum())) * np.sqrt((ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rhos = np.where(den > 0, (ry @ rx) / den, 0.0)
    same = float(np.mean(rhos > 0)) if rho > 0 else float(np.mean(rhos < 0))
    direction = int(np.sign(rho)) if same >= 1 - ALPHA else 0
    low, high = (float(q) for q in np.quantile(rhos, [ALPHA / 2, 1 - ALPHA / 2]))
    return Comparison(direction, rho, low, high, p_value=1.0 - same, method=method)


POWER = 0.8  # the power at which an undecided comparison is said to become decisive
MAX_SEEDS = 64  # beyond this many seeds "more seeds" is no plan: the effect is within the noise


def _power() -> ModuleType:
    """statsmodels.stats.power, imported on first use (it imports scipy.stats and takes ~1 s);
    only an inconclusive verdict needs it."""
    from statsmodels.stats import power

    return power


def seeds_to_decide(
    effect: float,
    spread: float,
    group_sizes: Callable[[int], tuple[int, int]],
    *,
    min_seeds: int = 2,
    alpha: float = ALPHA,
    power: float = POWER,
    max_seeds: int = MAX_SEEDS,
) -> int | None:
    """The fewest seeds at which a two-sided two-sample t-test of two groups detects ``effect``.

    Args:
        effect: the observed difference of group means (any sign), in the measure's units.
        spread: the measured standard deviation of one value (e.g. the pair-to-pair spread of
            CKA), > 0.
        group_sizes: seeds -> (values in group A, values in group B) the study would then have,
            e.g. ``lambda s: (s * (s - 1) // 2, 1)`` for all P-T/P-T pairs against the one
            control pair.
        min_seeds: the first number of seeds tried.

    Returns:
        The smallest number of seeds from ``min_seeds`` up to ``max_seeds`` whose power
        (statsmodels ``TTestIndPower``, effect size ``|effect| / spread``) reaches ``power``;
        None when none does (the effect is within the noise for any practical study).

    Example:
        >>> from transferscope.measures.statistics import seeds_to_decide
        >>> seeds_to_decide(0.1, 0.05, lambda s: (s, s))
        6
        >>> seeds_to_decide(0.001, 0.05, lambda s: (s, s)) is None
        True
    """
    if not (math.isfinite(effect) and math.isfinite(spread)) or spread <= 0 or effect == 0:
        return None
    test = _power().TTestIndPower()
    d = abs(effect) / spread
    for seeds in range(min_seeds, max_seeds + 1):
        na, nb = group_sizes(seeds)
        if na < 2 or nb < 1:
            continue
        if test.power(effect_size=d, nobs1=na, alpha=alpha, ratio=nb / na) >= power:
            return seeds
    return None


def examples_to_decide(
    effect: float,
    sd: float,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    one_sided: bool = False,
) -> int | None:
    """The test examples at which a z-test detects ``effect`` against a per-example spread.

    Args:
        effect: the observed effect, in the metric's units (e.g. a barrier minus its tolerance).
        sd: the standard deviation of one example's contribution (e.g. sqrt(m (1 − m)) of a
            proportion, or a bootstrap standard error × sqrt(n)), > 0.
        one_sided: test in the effect's direction only (a barrier above its tolerance).

    Returns:
        statsmodels ``NormalIndPower`` (one sample: ``ratio=0``) solved for the number of
        examples at effect size ``|effect| / sd``, rounded up; None when the effect is 0 or not
        finite.

    Example:
        >>> from transferscope.measures.statistics import examples_to_decide
        >>> examples_to_decide(0.05, 0.5)
        785
    """
    if not (math.isfinite(effect) and math.isfinite(sd)) or sd <= 0 or effect == 0:
        return None
    n = (
        _power()
        .NormalIndPower()
        .solve_power(
            effect_size=abs(effect) / sd,
            alpha=alpha,
            power=power,
            ratio=0,
            alternative="larger" if one_sided else "two-sided",
        )
    )
    return math.ceil(float(np.asarray(n).item()))


def examples_for_sign_test(
    wins: int, losses: int, examples: int, *, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """The test examples at which the sign test of :func:`paired_correctness` detects the
    observed balance of wins and losses.

    The examples where the sides disagree are a share ``(wins + losses) / examples`` of the test
    set; among them A wins a share ``wins / (wins + losses)``. statsmodels' ``NormalIndPower``
    (one sample) solves for the disagreements at which a test of that share against 1/2
    (Cohen's h, ``proportion_effectsize``) reaches ``power``; the test set must hold that many
    disagreements. None when the sides never disagree or win equally often.

    Example:
        >>> from transferscope.measures.statistics import examples_for_sign_test
        >>> examples_for_sign_test(30, 20, 500)
        1936
    """
    disagree = wins + losses
    if disagree == 0 or wins == losses or examples < 1:
        return None
    from statsmodels.stats.proportion import proportion_effectsize

    h = float(proportion_effectsize(wins / disagree, 0.5))
    needed = (
        _power().NormalIndPower().solve_power(effect_size=abs(h), alpha=alpha, power=power, ratio=0)
    )
    return math.ceil(float(np.asarray(needed).item()) * examples / disagree)


def binomial_se(metric: float, n: int) -> float:
    """Standard error of a proportion-like metric (accuracy, and as an approximation AUC) on n
    test examples: sqrt(m (1 - m) / n).

    Example:
        >>> from transferscope.measures.statistics import binomial_se
        >>> round(binomial_se(0.9, 100), 6)  # sqrt(0.9 x 0.1 / 100)
        0.03
        >>> binomial_se(0.9, 0)
        nan
    """
    if n <= 0 or not math.isfinite(metric):
        return float("nan")
    m = min(max(metric, 0.0), 1.0)
    return math.sqrt(m * (1 - m) / n)


__all__ = [
    "ALPHA",
    "Comparison",
    "binomial_se",
    "bootstrap_interval",
    "bootstrap_weights",
    "cluster_ranks",
    "compare_final_metrics",
    "compare_groups",
    "examples_for_sign_test",
    "examples_to_decide",
    "mean_auc",
    "metric_under_weights",
    "noisy_spearman",
    "paired_correctness",
    "pooled_sd",
    "scipy_stats",
    "seeds_to_decide",
    "sign_test",
    "spearman_trend",
    "weighted_auc",
]
