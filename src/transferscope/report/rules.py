"""The toolkit of the findings rules: verdicts, per-target results, and the statistics the
analysis units' claims share (group comparisons of pairs, barriers within noise, depth order).

A verdict is a test that can fail:

- *holds*: the effect the claim states is there, beyond the noise (seeds, test-set sampling);
- *does not hold*: the opposite effect is there beyond the noise;
- *inconclusive*: the measured difference is within the noise (or a compared run sits at chance);
- *not measured*: the study lacks the runs or analysis the rule needs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from transferscope.analyses.pairs import BASELINES

Verdict = Literal["holds", "does not hold", "inconclusive", "not measured"]

HOLDS: Verdict = "holds"

FAILS: Verdict = "does not hold"

INCONCLUSIVE: Verdict = "inconclusive"

UNMEASURED: Verdict = "not measured"


# Tolerances of the claim rules, in metric units (accuracy and mean AUC both live in [0, 1]).
BARRIER_TOLERANCE = 0.01  # C6: one point of accuracy / AUC
CHECKPOINT_TOLERANCE = 0.01  # C8: an early checkpoint within one point of the final P-T metric
# Differences below these count as noise whatever the seeds say (a floor under the seed spread).
CKA_FLOOR = 0.02  # C4: two hundredths of CKA
DISTANCE_FLOOR = 0.05  # C5: 5% of the larger mean distance
# The baselines of the "P-T models are alike" rules (C3-C5), in the words of the findings table.
SAME_INIT_RULE = (
    "and than the same-init RI-T/RI-T pair and the control pair P@0-T/P@0-T (two fine-tunes "
    "from P's untrained init: a shared start and recipe alone must not make it hold)"
)


def finite(x: Any) -> bool:
    """Whether ``x`` is a real, finite number (JSON nulls and NaN are not)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def mean(values: Iterable[Any]) -> float | None:
    """Mean of the finite values (None when there are none)."""
    xs = [float(v) for v in values if finite(v)]
    return sum(xs) / len(xs) if xs else None


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties averaged (+inf ranks last)."""
    arr = np.asarray(values, dtype=float)
    order = np.argsort(arr, kind="mergesort")
    ranks = np.empty(len(arr))
    ranks[order] = np.arange(1, len(arr) + 1)
    for v in np.unique(arr):
        tied = arr == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(values: Sequence[float]) -> float | None:
    """Spearman rank correlation between position (0, 1, ...) and ``values``.

    None for fewer than 3 values or when every value is tied (the correlation is undefined).
    """
    if len(values) < 3:
        return None
    r = _ranks(values)
    d = np.arange(1, len(values) + 1, dtype=float)
    r, d = r - r.mean(), d - d.mean()
    denom = math.sqrt(float((r * r).sum() * (d * d).sum()))
    return float((r * d).sum() / denom) if denom > 0 else None


_SCALAR = re.compile(r"^(bias|scale)\d*[a-z]?$")


_STEM = ("conv1", "bn1", "stem", "embed", "patch_embed", "features.0")


_HEAD = ("fc", "head", "classifier", "last_linear")


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def depth_order(modules: Iterable[str], reference: Sequence[str] | None = None) -> list[str]:
    """Modules from input to output.

    With ``reference`` (e.g. criticality's module list, which comes from the model's layout) its
    order is used. Otherwise: the stem (conv1, bn1, stem, ...) first, then the blocks in natural
    order (layer1.0 < layer1.1 < layer2.0 < layer10.0), the head (fc, head, classifier) last.
    Fixup's top-level scalar biases and scales (bias1, scale, ...) are left out: they are single
    numbers, not modules.
    """
    names = [m for m in modules if not _SCALAR.match(m)]
    if reference:
        known = [m for m in reference if m in names]
        rest = [m for m in names if m not in known]
        return known + depth_order(rest) if rest else known

    def key(name: str) -> tuple[int, list[Any]]:
        first = name.split(".")[0]
        if name in _STEM or first in _STEM:
            group = 0
        elif first in _HEAD:
            group = 2
        else:
            group = 1
        return group, _natural(name)

    return sorted(names, key=key)


def fmt(x: Any, digits: int = 3) -> str:
    """A number for tables ('-' for missing)."""
    if not finite(x):
        return "-" if x is None else str(x)
    return f"{float(x):.{digits}g}" if abs(float(x)) < 1e4 else f"{float(x):.3e}"


@dataclass(frozen=True)
class TargetResult:
    """A claim's measurement on one target: verdict, the numbers, and the statistic used."""

    target: str
    verdict: Verdict
    measured: str
    statistic: str = ""


@dataclass(frozen=True)
class Finding:
    """One claim of the paper, what was measured, and the verdict with its rule."""

    id: str
    claim: str
    rule: str
    section: str
    per_target: list[TargetResult]

    @property
    def verdict(self) -> Verdict:
        """Does not hold if it fails on a target; holds if it holds on every target measured;
        inconclusive otherwise; not measured when no target was."""
        verdicts = [t.verdict for t in self.per_target if t.verdict != UNMEASURED]
        if not verdicts:
            return UNMEASURED
        if FAILS in verdicts:
            return FAILS
        return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE

    @property
    def measured(self) -> str:
        if not self.per_target:
            return "no target"
        return "; ".join(f"{t.target}: {t.measured}" for t in self.per_target)

    @property
    def targets(self) -> dict[str, Verdict]:
        """Target -> its verdict."""
        return {t.target: t.verdict for t in self.per_target}


def combine(*directions: int | None) -> Verdict:
    """One verdict from the directions of a rule's parts (+1 the claim's way beyond the noise,
    -1 the other way, 0 within the noise, None not measured): every part must hold."""
    if any(d is None for d in directions):
        return UNMEASURED
    if any(d < 0 for d in directions):  # type: ignore[operator]
        return FAILS
    return HOLDS if all(d > 0 for d in directions) else INCONCLUSIVE  # type: ignore[operator]


def plain(value: Any) -> Any:
    """A result model's plain form (as in its JSON file); anything else unchanged."""
    return value.model_dump(mode="python", by_alias=True) if isinstance(value, BaseModel) else value


def _ok_pairs(entry: Any, name: str) -> list[dict[str, Any]]:
    """The measured pairs called ``name`` of an entry (a result model or its plain form)."""
    entry = plain(entry)
    return [
        p for p in entry.get("pairs", []) if p.get("pair") == name and p.get("status", "ok") == "ok"
    ]


def _values(pairs: list[dict[str, Any]], get: Callable[[dict[str, Any]], Any]) -> list[float]:
    return [float(v) for v in (get(p) for p in pairs) if finite(v)]


def comparison(doc: Any) -> tuple[int | None, str]:
    """(direction, description) of a stored statistics comparison (None when it is missing);
    ``doc`` is a result model or its plain form."""
    if isinstance(doc, BaseModel):
        doc = doc.model_dump()
    if not isinstance(doc, dict) or doc.get("status", "ok") != "ok":
        why = doc.get("reason") if isinstance(doc, dict) else None
        return None, f"not computed ({why})" if why else "not computed"
    direction = doc.get("direction")
    text = f"Δ {fmt(doc.get('estimate'))}"
    if finite(doc.get("low")) and finite(doc.get("high")):
        text += f" [{fmt(doc['low'])}, {fmt(doc['high'])}]"
    if finite(doc.get("p_value")):
        text += f", p = {float(doc['p_value']):.2g}"
    method = str(doc.get("method") or "")
    return (int(direction) if isinstance(direction, int | float) else None), (
        f"{text} ({method})" if method else text
    )


def _fraction_floor(pairs: list[dict[str, Any]]) -> float:
    """Twice the standard error of a difference of two uncommon-mistake fractions."""
    ns = [p.get("n") for p in pairs if finite(p.get("n")) and p.get("n")]
    fractions = _values(pairs, lambda p: (p.get("fractions") or {}).get("uncommon"))
    if not ns or not fractions:
        return 0.0
    f = float(np.mean(fractions))
    return 2 * math.sqrt(2) * math.sqrt(max(f * (1 - f), 0.0) / min(ns))


def _group_rule(
    entry: dict[str, Any],
    get: Callable[[dict[str, Any]], Any],
    want: int,
    what: str,
    **floors: float,
) -> tuple[int | None, str, str]:
    """P-T/P-T against RI-T/RI-T and against the same-init RI-T pair with
    :func:`transferscope.analysis.statistics.compare_groups`; the pair spread comes from every
    group, P-T/RI-T included. ``want`` is the claim's direction (+1: P-T/P-T larger)."""
    from transferscope.analysis.statistics import compare_groups

    groups = {
        name: _values(_ok_pairs(entry, name), get) for name in ("P-T/P-T", "P-T/RI-T", *BASELINES)
    }
    a = groups["P-T/P-T"]
    if not a or not groups["RI-T/RI-T"]:
        return None, "P-T/P-T or RI-T/RI-T pair missing", ""
    spread = [groups["P-T/RI-T"]]
    texts, stats, directions = [], [], []
    for other in BASELINES:
        b = groups[other]
        if not b:
            texts.append(f"{other} not measured")
            continue
        cmp = compare_groups(a, b, spread_from=spread, what=what, **floors)
        directions.append(cmp.direction * want)
        texts.append(f"{fmt(mean(a))} vs {other} {fmt(mean(b))}")
        stats.append(f"vs {other}: {cmp.method}")
    return _direction_of(directions), "; ".join(texts), "; ".join(stats)


def _direction_of(directions: list[int]) -> int:
    if any(d < 0 for d in directions):
        return -1
    return 1 if all(d > 0 for d in directions) else 0


def barrier_noise(pair: dict[str, Any], examples: Any, key: str = "barrier_metric") -> float:
    """Twice the standard error of a barrier: the binomial error of the metric at the path's
    worst point on ``examples`` test examples (0 when unknown)."""
    metrics = pair.get("metric") or []
    if not finite(examples) or not metrics or key != "barrier_metric":
        return 0.0
    from transferscope.analysis.statistics import binomial_se

    worst = min(float(m) for m in metrics if finite(m)) if any(finite(m) for m in metrics) else 0.5
    se = binomial_se(worst, int(examples))
    return 2 * se if math.isfinite(se) else 0.0


def _barrier_state(value: float, noise: float, tolerance: float = BARRIER_TOLERANCE) -> int:
    """+1 a barrier beyond the noise, -1 flat (within the tolerance), 0 in between."""
    if value > tolerance + noise:
        return 1
    return -1 if value <= tolerance else 0


def barrier_verdict(
    flat: Sequence[tuple[float, float]], walls: Sequence[tuple[float, float]] = ()
) -> Verdict:
    """The verdict of a barrier rule on (barrier, noise) pairs: holds when every ``flat`` one is
    within the tolerance and every ``walls`` one exceeds it by more than its noise; does not hold
    when one is beyond its noise the other way; inconclusive otherwise (C6, C10)."""
    states = [-_barrier_state(v, n) for v, n in flat] + [_barrier_state(v, n) for v, n in walls]
    return combine(_direction_of(states))
