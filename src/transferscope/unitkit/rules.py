"""The toolkit of the findings rules: verdicts, per-target results, and the statistics the
analysis units' claims share (group comparisons of pairs, barriers within noise, depth order,
the chance guard and what would decide an undecided verdict).

A verdict is a test that can fail:

- *holds*: the effect the claim states is there, beyond the noise (seeds, test-set sampling);
- *does not hold*: the opposite effect is there beyond the noise;
- *inconclusive*: the measured difference is within the noise, or a run the measure needs to
  have learned sits at chance level; the result says what would decide it;
- *not measured*: the study lacks the runs or analysis the rule needs.

Two verdicts per claim where a control changes the question:

- *paper*: the comparison exactly as Neyshabur et al. (2020) made it (C1: P-T against RI-T;
  C3-C5: P-T/P-T against RI-T/RI-T from independent inits; C6: P-T/P-T flat, RI-T/RI-T
  barriers, the same-init pair included);
- *controlled* (beyond the paper): is pre-training the cause? The same measure against runs that
  share P-T's start and recipe but not pre-training: the control pair P@0-T/P@0-T (two
  fine-tunes of P's untrained init) and, for C3-C5, the same-init RI-T pair; C1 and C8 against
  P@0-T. A P that learned nothing (at chance level on its source) makes every controlled
  verdict inconclusive: nothing it learned can be the cause.

The chance guard voids only what it must: each rule names the runs that must have learned for
its measure to mean anything (CKA, mistakes and barriers of a model that learned nothing mean
nothing; a final metric at chance is data), and the result names the run that voided it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import numpy as np
from pydantic import BaseModel

from transferscope.unitkit.pairs import CONTROL_PAIR, SAME_INIT

if TYPE_CHECKING:  # pragma: no cover
    from transferscope.unitkit.study_data import RunRow, StudyData

Verdict = Literal["holds", "does not hold", "inconclusive", "not measured"]

HOLDS: Verdict = "holds"

FAILS: Verdict = "does not hold"

INCONCLUSIVE: Verdict = "inconclusive"

UNMEASURED: Verdict = "not measured"

NO_CONTROL = "—"
"""What the *controlled* column shows for a claim that has no control."""


# Tolerances of the claim rules, in metric units (accuracy and mean AUC both live in [0, 1]).
BARRIER_TOLERANCE = 0.01  # C6: one point of accuracy / AUC
CHECKPOINT_TOLERANCE = 0.01  # C8: an early checkpoint within one point of the final P-T metric
# Differences below these count as noise whatever the seeds say (a floor under the seed spread).
CKA_FLOOR = 0.02  # C4: two hundredths of CKA
DISTANCE_FLOOR = 0.05  # C5: 5% of the larger mean distance
# The baselines of the "P-T models are alike" rules (C3-C5).
PAPER_BASELINES: tuple[str, ...] = ("RI-T/RI-T",)
"""The paper's comparison: RI-T models from independent random inits."""
CONTROL_BASELINES: tuple[str, ...] = (SAME_INIT, CONTROL_PAIR)
"""The controlled comparison: the RI-T pair from one shared random init, and the control pair
(two fine-tunes of P's untrained init with P-T's recipe)."""
CONTROLLED_PAIRS_RULE = (
    "the same measure against the same-init RI-T/RI-T pair and the control pair P@0-T/P@0-T "
    "(two fine-tunes from P's untrained init: a shared start and recipe without pre-training), "
    "both beaten by the same margin; P must have learned (not at chance on its source)."
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
    """A claim's measurement on one target: verdict, the numbers, and the statistic used.

    For a claim with a control, ``controlled`` holds the controlled verdict on the same target
    (its own numbers and statistic); the fields of this object are the paper's comparison.
    """

    target: str
    verdict: Verdict
    measured: str
    statistic: str = ""
    decide: str = ""
    """For an inconclusive verdict: the observed effect, its noise and the seeds (or test
    examples) at which an effect of that size would be decisive at the rule's level, or why
    more data would not decide it."""
    voided_by: tuple[str, ...] = ()
    """Runs at chance level that made the verdict inconclusive (the chance guard)."""
    controlled: TargetResult | None = None
    """The controlled verdict on this target (is pre-training the cause?)."""


def _overall(verdicts: list[Verdict]) -> Verdict:
    """Does not hold if it fails on a target; holds if it holds on every target measured;
    inconclusive otherwise; not measured when no target was."""
    measured = [v for v in verdicts if v != UNMEASURED]
    if not measured:
        return UNMEASURED
    if FAILS in measured:
        return FAILS
    return HOLDS if all(v == HOLDS for v in measured) else INCONCLUSIVE


@dataclass(frozen=True)
class Finding:
    """One claim of the paper, what was measured, and its verdicts with their rules."""

    id: str
    claim: str
    rule: str
    section: str
    per_target: list[TargetResult]
    controlled_rule: str | None = None
    """The rule of the controlled verdict; None for a claim without a control."""
    meaning: str = ""
    """What it means for this study when the paper's comparison holds and the controlled one
    does not (one sentence, shown with the finding then)."""
    short: str = ""
    """A few words for the verdict grid."""

    @property
    def paper(self) -> Verdict:
        """The paper's comparison over targets: does not hold if it fails on a target; holds if
        it holds on every target measured; inconclusive otherwise; not measured when no target
        was."""
        return _overall([t.verdict for t in self.per_target])

    @property
    def controlled(self) -> Verdict | None:
        """The controlled verdict over targets (as :attr:`paper`); None without a control."""
        if self.controlled_rule is None:
            return None
        return _overall(
            [t.controlled.verdict if t.controlled else UNMEASURED for t in self.per_target]
        )

    @property
    def verdict(self) -> Verdict:
        """The answer to "did pre-training transfer this?": the controlled verdict where the
        claim has a control, else the paper's."""
        controlled = self.controlled
        return self.paper if controlled is None else controlled

    @property
    def measured(self) -> str:
        if not self.per_target:
            return "no target"
        return "; ".join(f"{t.target}: {t.measured}" for t in self.per_target)

    @property
    def targets(self) -> dict[str, Verdict]:
        """Target -> its paper verdict."""
        return {t.target: t.verdict for t in self.per_target}

    @property
    def gap_targets(self) -> list[str]:
        """Targets where the paper's comparison holds and the controlled one does not."""
        return [
            t.target
            for t in self.per_target
            if t.verdict == HOLDS
            and t.controlled is not None
            and t.controlled.verdict != HOLDS
            and t.controlled.verdict != UNMEASURED
        ]

    @property
    def explanation(self) -> str:
        """The one sentence saying what it means that the paper's comparison holds where the
        controlled one does not ('' when that does not happen)."""
        targets = self.gap_targets
        if not targets or not self.meaning:
            return ""
        return f"{self.id} on {', '.join(targets)}: {self.meaning}"


def combine(*directions: int | None) -> Verdict:
    """One verdict from the directions of a rule's parts (+1 the claim's way beyond the noise,
    -1 the other way, 0 within the noise, None not measured): every part must hold."""
    if any(d is None for d in directions):
        return UNMEASURED
    if any(d < 0 for d in directions):  # type: ignore[operator]
        return FAILS
    return HOLDS if all(d > 0 for d in directions) else INCONCLUSIVE  # type: ignore[operator]


def direction_of(directions: Sequence[int]) -> int:
    """-1 if any part goes the other way, +1 if every part goes the claim's way, else 0."""
    if any(d < 0 for d in directions):
        return -1
    return 1 if directions and all(d > 0 for d in directions) else 0


def plain(value: Any) -> Any:
    """A result model's plain form (as in its JSON file); anything else unchanged."""
    return value.model_dump(mode="python", by_alias=True) if isinstance(value, BaseModel) else value


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


@dataclass(frozen=True)
class Decide:
    """What would decide one undecided part of a rule: the observed effect and its noise in
    words (``what``), and the seeds or test examples at which an effect of that size would be
    decisive at the rule's level, or ``never`` with the reason."""

    what: str
    seeds: int | None = None
    examples: int | None = None
    never: str = ""
    """Why more data would not decide it (empty when it would)."""


def decide_text(parts: Sequence[Decide]) -> str:
    """One cell's "would decide it": every undecided part must be decided, so a part more data
    cannot decide says so, else the most seeds and test examples any part needs."""
    parts = [p for p in parts if p is not None]
    never = [p for p in parts if p.never]
    if never:
        more = f" (and {len(never) - 1} more part(s) alike)" if len(never) > 1 else ""
        return f"{never[0].never}: {never[0].what}{more}"
    needs = []
    by_seeds = [p for p in parts if p.seeds]
    if by_seeds:
        worst = max(by_seeds, key=lambda p: p.seeds or 0)
        needs.append(f"{worst.seeds} seeds ({worst.what})")
    by_examples = [p for p in parts if p.examples]
    if by_examples:
        worst = max(by_examples, key=lambda p: p.examples or 0)
        needs.append(f"{worst.examples} test examples ({worst.what})")
    if needs:
        return "decisive with " + " and ".join(needs) + " (power 0.8)"
    return "; ".join(p.what for p in parts)


def comparison_decide(doc: Any, what: str, offset: float = 0.0) -> Decide | None:
    """What would decide a stored paired comparison over test examples (a sign test or a
    bootstrap interval): the observed effect, its noise, and the test examples at which an
    effect of that size would be decisive (statsmodels power at :data:`POWER`). ``offset`` moves
    the bar (a non-inferiority margin: the effect is ``estimate + offset``). None when the
    comparison is missing."""
    from transferscope.measures.statistics import examples_for_sign_test, examples_to_decide

    doc = plain(doc)
    if not isinstance(doc, dict) or doc.get("status", "ok") != "ok":
        return None
    # JSON values (None when missing): typed Any, as finite() checks them before any use
    estimate: Any = doc.get("estimate")
    n: Any = doc.get("n")
    if not (finite(estimate) and finite(n)):
        return None
    effect = float(estimate) + offset
    wins: Any = doc.get("wins")
    losses: Any = doc.get("losses")
    if offset == 0 and finite(wins) and finite(losses):
        k = examples_for_sign_test(int(wins), int(losses), int(n))
        where = f"{what}: Δ {fmt(estimate)}, {int(wins)} vs {int(losses)} disagreements in {int(n)}"
        if k is None:
            return Decide(where, never="the sides win equally often, more data would not decide it")
        return Decide(where, examples=k)
    low: Any = doc.get("low")
    high: Any = doc.get("high")
    if not (finite(low) and finite(high)) or high <= low:
        return None
    se = (float(high) - float(low)) / (2 * 1.959964)
    k = examples_to_decide(effect, se * math.sqrt(float(n)))
    bar = f" vs {-offset:g}" if offset else ""
    where = f"{what}: Δ {fmt(estimate)}{bar} ± {fmt(se, 2)} (s.e. on {int(n)} test examples)"
    if k is None:
        return Decide(where, never="the effect is zero within noise, more data would not decide it")
    return Decide(where, examples=k)


# ----------------------------------------------------------------------------------------------
# the chance guard


def describe_run(row: RunRow) -> str:
    """A run at chance level in words: its id, role and final metric against chance."""
    role = row.kind
    if row.seed is not None and row.kind != "P":
        role += f" seed {row.seed}"
    if row.shuffle:
        role += f" ({row.shuffle})"
    metric = (row.summary or {}).get("final_metric")
    check = row.chance or {}
    band = ""
    if finite(check.get("chance")) and finite(check.get("band")):
        band = f", chance {fmt(check['chance'])} ± {fmt(check['band'], 2)}"
    return f"{row.id} ({role}, final {fmt(metric)}{band})"


def at_chance(data: StudyData, run_ids: Iterable[str]) -> list[RunRow]:
    """The runs among ``run_ids`` that finished at chance level (learned nothing measurable)."""
    ids = set(run_ids)
    return [r for r in data.runs if r.id in ids and r.chance_level]


def voided(result: TargetResult, runs: Sequence[RunRow], why: str, fix: str = "") -> TargetResult:
    """``result`` made inconclusive because ``runs`` (at chance level) had to have learned for
    its measure to mean anything; the cell names them and why."""
    names = "; ".join(describe_run(r) for r in runs)
    return replace(
        result,
        verdict=INCONCLUSIVE,
        measured=f"{result.measured}; voided: at chance level: {names}: {why}",
        decide=fix or "a run that learns: train it longer (its epochs) or check its data",
        voided_by=tuple(r.id for r in runs),
    )


def p_guard(data: StudyData, result: TargetResult) -> TargetResult:
    """``result``, made inconclusive when P is at chance level on its source: it learned
    nothing, so nothing it transferred can be credited with anything (every controlled verdict,
    and the claims about what P's training transferred)."""
    dead = [r for r in data.runs if r.kind == "P" and r.chance_level]
    if not dead or result.verdict == UNMEASURED:
        return result
    return voided(
        result,
        dead,
        "P learned nothing, so nothing it transferred can explain the result",
        "a P that learned its source (pretrain.epochs, its data); with an untrained P (the "
        "negative control) this is the expected answer",
    )


def learned_only(
    pairs: Sequence[dict[str, Any]], data: StudyData | None
) -> tuple[list[dict[str, Any]], list[RunRow]]:
    """The pairs (plain entries with a ``runs`` list) whose runs all learned, and the runs at
    chance level that the left-out pairs held."""
    if data is None:
        return list(pairs), []
    dead = {r.id: r for r in data.runs if r.chance_level}
    kept, hit = [], {}
    for p in pairs:
        bad = [dead[i] for i in p.get("runs", []) if i in dead]
        if bad:
            hit.update({r.id: r for r in bad})
        else:
            kept.append(p)
    return kept, list(hit.values())


# ----------------------------------------------------------------------------------------------
# pairs of models (C3-C5): P-T/P-T against other pairs


def _ok_pairs(entry: Any, name: str) -> list[dict[str, Any]]:
    """The measured pairs called ``name`` of an entry (a result model or its plain form)."""
    entry = plain(entry)
    return [
        p for p in entry.get("pairs", []) if p.get("pair") == name and p.get("status", "ok") == "ok"
    ]


def _values(pairs: list[dict[str, Any]], get: Callable[[dict[str, Any]], Any]) -> list[float]:
    return [float(v) for v in (get(p) for p in pairs) if finite(v)]


def fraction_floor(pairs: list[dict[str, Any]]) -> float:
    """Twice the standard error of a difference of two uncommon-mistake fractions."""
    ns: list[Any] = [p.get("n") for p in pairs if finite(p.get("n")) and p.get("n")]
    fractions = _values(pairs, lambda p: (p.get("fractions") or {}).get("uncommon"))
    if not ns or not fractions:
        return 0.0
    f = float(np.mean(fractions))
    return 2 * math.sqrt(2) * math.sqrt(max(f * (1 - f), 0.0) / min(ns))


def _pairs_from_seeds(seeds: int) -> int:
    return seeds * (seeds - 1) // 2


def _group_size(name: str, seeds: int) -> int:
    """Pairs of kind ``name`` a study with ``seeds`` seeds has: every two of P-T, RI-T and
    P@0-T runs, and the first RI-T with each same-init RI-T (one per further seed)."""
    return seeds - 1 if name == SAME_INIT else _pairs_from_seeds(seeds)


def seeds_decide(
    effect: float, spread: float | None, floor: float, baseline: str, seeds_now: int
) -> Decide:
    """What would decide a group comparison of P-T/P-T pairs against ``baseline`` pairs: the
    seeds at which a t-test on the measured pair spread detects the observed difference."""
    from transferscope.measures.statistics import seeds_to_decide

    where = f"vs {baseline}: Δ {fmt(effect)}"
    if abs(effect) <= floor:
        return Decide(
            f"{where} within the floor {fmt(floor, 2)}", never="more seeds would not decide it"
        )
    if spread is None or not spread > 0:
        return Decide(
            f"{where}, pair spread unknown with one pair per group",
            seeds=max(seeds_now + 1, 3),
        )
    where += f" against a pair spread of {fmt(spread, 2)}"
    n = seeds_to_decide(
        effect,
        spread,
        lambda s: (_pairs_from_seeds(s), _group_size(baseline, s)),
        min_seeds=max(seeds_now, 2),
    )
    if n is None:
        return Decide(where, never="more seeds would not decide it (within the noise)")
    return Decide(where, seeds=n)


@dataclass(frozen=True)
class GroupOutcome:
    """P-T/P-T pairs against one or more baselines (:func:`group_rule`)."""

    direction: int | None
    """+1 the claim's way against every baseline, -1 the other way against one, 0 otherwise;
    None when P-T/P-T or a baseline is missing."""
    text: str
    statistic: str
    decide: list[Decide] = field(default_factory=list)
    voided_by: list[RunRow] = field(default_factory=list)


def group_rule(
    entry: Any,
    get: Callable[[dict[str, Any]], Any],
    want: int,
    what: str,
    baselines: Sequence[str],
    data: StudyData | None = None,
    *,
    needs_learned: bool = False,
    seeds: int = 2,
    **floors: float,
) -> GroupOutcome:
    """P-T/P-T pairs against each of ``baselines`` with
    :func:`transferscope.measures.statistics.compare_groups`: the claim's way (``want``: +1 P-T
    pairs larger) against every baseline by more than the margin. The pair spread comes from
    every group, P-T/RI-T included.

    With ``needs_learned`` (a measure that means nothing for a model that learned nothing: CKA,
    mistakes) pairs holding a run at chance level are left out, and a group left empty makes
    the outcome inconclusive, naming the runs. ``seeds`` (the study's seeds now) sizes what more
    seeds would give, for the ``decide`` text.
    """
    from transferscope.measures.statistics import compare_groups, pooled_sd

    names = ("P-T/P-T", "P-T/RI-T", "RI-T/RI-T", *baselines)
    dead: list[RunRow] = []
    groups: dict[str, list[float]] = {}
    for name in dict.fromkeys(names):
        pairs = _ok_pairs(entry, name)
        kept, hit = learned_only(pairs, data if needs_learned else None)
        dead += [r for r in hit if r not in dead]
        groups[name] = _values(kept, get)
    a = groups["P-T/P-T"]
    missing = [n for n in ("P-T/P-T", *baselines) if not groups[n]]
    if missing:
        if dead:
            return GroupOutcome(
                0, f"{', '.join(missing)} left without a pair that learned", "", voided_by=dead
            )
        return GroupOutcome(None, f"{', '.join(missing)} pair missing", "")
    spread = [groups["P-T/RI-T"]]
    texts, stats, directions, decides = [], [], [], []
    for other in baselines:
        b = groups[other]
        cmp = compare_groups(a, b, spread_from=spread, what=what, **floors)
        directions.append(cmp.direction * want)
        texts.append(f"{fmt(mean(a))} vs {other} {fmt(mean(b))}")
        stats.append(f"vs {other}: {cmp.method}")
        if cmp.direction == 0:
            s, _ = pooled_sd([a, b, *spread])
            floor = max(
                floors.get("floor", 0.0),
                floors.get("relative_floor", 0.0) * max(abs(mean(a) or 0), abs(mean(b) or 0)),
            )
            decides.append(seeds_decide(cmp.estimate, s, floor, other, seeds))
    return GroupOutcome(direction_of(directions), "; ".join(texts), "; ".join(stats), decides, dead)


def group_result(
    target: str, outcome: GroupOutcome, prefix: str = "", why: str = ""
) -> TargetResult:
    """A :class:`TargetResult` of a :func:`group_rule` outcome (inconclusive and naming the
    runs when pairs were left out for want of a learned run)."""
    if outcome.direction is None:
        return TargetResult(target, UNMEASURED, outcome.text)
    result = TargetResult(
        target,
        combine(outcome.direction),
        prefix + outcome.text,
        outcome.statistic,
        decide=decide_text(outcome.decide) if outcome.direction == 0 else "",
    )
    if outcome.voided_by and outcome.direction == 0:
        return voided(result, outcome.voided_by, why or "the measure needs models that learned")
    return result


def combine_outcomes(parts: Sequence[tuple[str, GroupOutcome]]) -> GroupOutcome:
    """Several :func:`group_rule` outcomes (e.g. one per layer) as one: every part must go the
    claim's way; a missing part is left out, all missing is missing."""
    measured = [(label, o) for label, o in parts if o.direction is not None]
    if not measured:
        return GroupOutcome(None, parts[0][1].text if parts else "nothing measured", "")
    dead: list[RunRow] = []
    for _, o in measured:
        dead += [r for r in o.voided_by if r not in dead]
    directions = [o.direction for _, o in measured if o.direction is not None]
    return GroupOutcome(
        direction_of(directions),
        "; ".join(f"{label} {o.text}" for label, o in measured),
        f"per part: {measured[0][1].statistic}",
        [replace(d, what=f"{label} {d.what}") for label, o in measured for d in o.decide],
        dead,
    )


PAIRS_MEANING = (
    "models that share a start without pre-training (two fine-tunes of P's untrained init, or "
    "two RI-T runs from one init) are as alike, so the likeness of P-T models here comes from "
    "their shared start and recipe, and cannot be credited to what pre-training learned."
)


class ClaimKeywords(TypedDict):
    """Keywords of :func:`~transferscope.unitkit.unit.claim` that claims share."""

    controlled: str
    meaning: str
    guards_chance: bool


PAIRS_CLAIM: ClaimKeywords = {
    "controlled": CONTROLLED_PAIRS_RULE,
    "meaning": PAIRS_MEANING,
    "guards_chance": True,
}
"""The keywords of a claim whose judge returns :func:`pairs_claim` (C3, C4): its controlled
rule and meaning, and that it guards chance itself (its group rules leave out pairs holding a
run at chance level): ``@claim(..., **PAIRS_CLAIM)``."""


def pairs_claim(
    target: str,
    data: StudyData,
    outcome: Callable[[Sequence[str]], GroupOutcome],
    prefix: str = "",
    why: str = "",
) -> TargetResult:
    """The two verdicts of a "P-T models are alike" claim (C3-C5): ``outcome(baselines)`` of
    the paper's baselines (:data:`PAPER_BASELINES`) and of the controlled ones
    (:data:`CONTROL_BASELINES`, guarded by P having learned)."""
    paper = group_result(target, outcome(PAPER_BASELINES), prefix, why)
    controlled = p_guard(data, group_result(target, outcome(CONTROL_BASELINES), prefix, why))
    return replace(paper, controlled=controlled)


# ----------------------------------------------------------------------------------------------
# barriers (C6, C9, C10)


def barrier_noise(pair: dict[str, Any], examples: Any, key: str = "barrier_metric") -> float:
    """Twice the standard error of a barrier: the binomial error of the metric at the path's
    worst point on ``examples`` test examples (0 when unknown)."""
    metrics = pair.get("metric") or []
    if not finite(examples) or not metrics or key != "barrier_metric":
        return 0.0
    from transferscope.measures.statistics import binomial_se

    worst = min(float(m) for m in metrics if finite(m)) if any(finite(m) for m in metrics) else 0.5
    se = binomial_se(worst, int(examples))
    return 2 * se if math.isfinite(se) else 0.0


def barrier_state(value: float, noise: float, tolerance: float = BARRIER_TOLERANCE) -> int:
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
    states = [-barrier_state(v, n) for v, n in flat] + [barrier_state(v, n) for v, n in walls]
    return combine(direction_of(states))


def barrier_decide(
    barriers: Sequence[tuple[float, float]], examples: Any, tolerance: float = BARRIER_TOLERANCE
) -> Decide | None:
    """What would decide barriers between flat and a wall: the test examples at which the
    smallest undecided excess over the tolerance exceeds twice its standard error (more seeds
    do not help: the noise is the test set's). None when every barrier is decided."""
    from transferscope.measures.statistics import examples_to_decide

    undecided = [(v, n) for v, n in barriers if barrier_state(v, n, tolerance) == 0]
    if not undecided:
        return None
    value, noise = min(undecided, key=lambda vn: vn[0])
    where = f"barrier {fmt(value)} vs tolerance {tolerance:g} ± {fmt(noise, 2)}"
    if not finite(examples) or noise <= 0:
        return Decide(where, never="its noise is unknown")
    # noise = 2 sqrt(m (1 - m) / n): the per-example spread is noise / 2 * sqrt(n).
    sd = noise / 2 * math.sqrt(float(examples))
    n = examples_to_decide(value - tolerance, sd, one_sided=True)
    if n is None:
        return Decide(where, never="more test examples would not decide it")
    return Decide(where, examples=n)


def without_learned_pairs(target: str, missing: str, dead: Sequence[RunRow]) -> TargetResult:
    """A barrier rule's result when ``missing`` (a pair kind) has no pair to read: not measured,
    or, when its pairs held runs at chance level (``dead``), inconclusive naming them."""
    if not dead:
        return TargetResult(target, UNMEASURED, f"{missing} barrier missing")
    return voided(
        TargetResult(target, INCONCLUSIVE, f"{missing} left without a pair that learned"),
        dead,
        "a path between models at chance level is flat at chance and means nothing",
    )


def barrier_result(
    target: str,
    flat: Sequence[tuple[float, float]],
    walls: Sequence[tuple[float, float]],
    text: str,
    statistic: str,
    examples: int | None,
    dead: Sequence[RunRow] = (),
    missing: str = "",
) -> TargetResult:
    """A barrier rule's result (C6, C10): ``flat`` pairs must be flat and ``walls`` pairs show a
    barrier (:func:`barrier_verdict`), with what would decide it when inconclusive; ``missing``
    names a group left empty (not measured, or voided when its pairs held runs at chance level:
    ``dead``)."""
    if missing:
        return without_learned_pairs(target, missing, dead)
    verdict = barrier_verdict(flat=flat, walls=walls)
    decide = (
        decide_text([d for d in [barrier_decide([*flat, *walls], examples)] if d is not None])
        if verdict == INCONCLUSIVE
        else ""
    )
    return TargetResult(target, verdict, text, statistic, decide=decide)


def learned_barriers(
    pairs: Sequence[Any],
    name: str,
    examples: int | None,
    data: StudyData,
    path: Callable[[Any], Any] = lambda p: p,
) -> tuple[list[tuple[float, float]], list[RunRow]]:
    """(barrier, twice its standard error) of every measured pair ``name`` whose two models
    learned (a barrier between models at chance level is flat at chance and means nothing), and
    the runs at chance level of the pairs left out."""
    from transferscope.unitkit.model_paths import ok_pairs

    dead = {r.id: r for r in data.runs if r.chance_level}
    out, hit = [], {}
    for p in ok_pairs(pairs, name):
        bad = [dead[i] for i in p.runs if i in dead]
        if bad:
            hit.update({r.id: r for r in bad})
            continue
        line = path(p)
        if line is not None and finite(line.barrier_metric):
            out.append((float(line.barrier_metric), line.noise(examples)))
    return out, list(hit.values())


__all__ = [
    "BARRIER_TOLERANCE",
    "CHECKPOINT_TOLERANCE",
    "CKA_FLOOR",
    "CONTROLLED_PAIRS_RULE",
    "CONTROL_BASELINES",
    "DISTANCE_FLOOR",
    "FAILS",
    "HOLDS",
    "INCONCLUSIVE",
    "NO_CONTROL",
    "PAIRS_CLAIM",
    "PAIRS_MEANING",
    "PAPER_BASELINES",
    "UNMEASURED",
    "ClaimKeywords",
    "Decide",
    "Finding",
    "GroupOutcome",
    "TargetResult",
    "Verdict",
    "at_chance",
    "barrier_decide",
    "barrier_noise",
    "barrier_result",
    "barrier_state",
    "barrier_verdict",
    "combine",
    "combine_outcomes",
    "comparison",
    "comparison_decide",
    "decide_text",
    "depth_order",
    "describe_run",
    "direction_of",
    "finite",
    "fmt",
    "fraction_floor",
    "group_result",
    "group_rule",
    "learned_barriers",
    "learned_only",
    "mean",
    "p_guard",
    "pairs_claim",
    "plain",
    "seeds_decide",
    "spearman",
    "voided",
    "without_learned_pairs",
]
