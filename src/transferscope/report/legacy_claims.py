"""Claims C6-C10 as rules on plain result documents, for the analysis units not yet converted
to typed results (each unit's module names its claims; a converted unit holds its own rules).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from transferscope.analyses.pairs import CONTROL_PAIR
from transferscope.report.rules import (
    BARRIER_TOLERANCE,
    CHECKPOINT_TOLERANCE,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    UNMEASURED,
    TargetResult,
    _barrier_state,
    _barriers,
    _direction_of,
    combine,
    finite,
    fmt,
    mean,
    path_barriers,
)

if TYPE_CHECKING:  # pragma: no cover
    from transferscope.report.study_data import StudyData


def _c6(entry: dict[str, Any], target: str) -> TargetResult:
    pt = _barriers(entry, "P-T/P-T")
    rit = _barriers(entry, "RI-T/RI-T")
    same = _barriers(entry, "RI-T/RI-T same init")
    if not pt or not rit:
        return TargetResult(target, UNMEASURED, "P-T/P-T or RI-T/RI-T barrier missing")
    # P-T/P-T must be flat (-1), every RI-T pair must show a barrier (+1).
    flat = [-_barrier_state(v, n) for v, n in pt]
    walls = [_barrier_state(v, n) for v, n in rit + same]
    text = f"P-T/P-T max {fmt(max(v for v, _ in pt))}, RI-T/RI-T min {fmt(min(v for v, _ in rit))}"
    text += f", same init {fmt(min(v for v, _ in same))}" if same else ", same init not measured"
    control = _barriers(entry, CONTROL_PAIR)
    if control:
        # Context, not part of the rule: a pair that shares P-T's start and recipe without
        # pre-training; flat here means P-T's flatness need not come from pre-training.
        text += f"; control pair {CONTROL_PAIR} {fmt(max(v for v, _ in control))}"
    noise = max(n for _, n in pt + rit + same)
    return TargetResult(
        target,
        combine(_direction_of(flat + walls)),
        text,
        f"flat: ≤ {BARRIER_TOLERANCE:g}; barrier: > {BARRIER_TOLERANCE:g} + 2 s.e. "
        f"(binomial at the worst point, up to {fmt(noise, 2)})",
    )


def _c7(entry: dict[str, Any], target: str) -> TargetResult:
    from transferscope.analysis.statistics import spearman_trend

    pt = entry.get("P-T") or {}
    if pt.get("status", "ok") != "ok":
        return TargetResult(target, UNMEASURED, f"P-T skipped ({pt.get('reason', '')})")
    modules, mu = pt.get("modules") or [], pt.get("mu") or {}
    body = modules[:-1]  # the head is the last module: a fresh layer, not a depth of P
    finite_modules = [m for m in body if finite(mu.get(m))]
    left_out = [m for m in body if m not in finite_modules]
    if len(finite_modules) < 3:
        return TargetResult(target, UNMEASURED, "fewer than 3 modules with a finite μ")
    trend = spearman_trend([float(mu[m]) for m in finite_modules])
    rho = f"ρ = {trend.estimate:+.2f}" if finite(trend.estimate) else "every μ equal"
    text = f"{rho} over {len(finite_modules)} modules (head left out)"
    if left_out:
        text += f"; {len(left_out)} without a finite μ left out: {', '.join(left_out)}"
    return TargetResult(
        target, combine(trend.direction), text, f"{trend.method}, p = {fmt(trend.p_value, 2)}"
    )


def _c8(data: StudyData) -> Callable[[dict[str, Any], str], TargetResult]:
    def judge(entry: dict[str, Any], target: str) -> TargetResult:
        points = [p for p in entry.get("points", []) if finite(p.get("k"))]
        early = sorted((p for p in points if p.get("early")), key=lambda p: p["k"])
        tested = [(p, p.get("vs_final")) for p in early]
        tested = [(p, t) for p, t in tested if isinstance(t, dict) and t.get("status") == "ok"]
        if not tested:
            return TargetResult(
                target, UNMEASURED, "no early checkpoint (k ≤ half of pre-training) with a P-T"
            )
        tol = CHECKPOINT_TOLERANCE
        good = [p for p, t in tested if finite(t.get("low")) and t["low"] >= -tol]
        worse = [p for p, t in tested if finite(t.get("high")) and t["high"] < -tol]
        final = final_pt_metric(entry)
        if good:
            best = good[0]
            verdict = HOLDS
        elif len(worse) == len(tested):
            best, verdict = max(early, key=lambda p: p.get("final_metric") or -1), FAILS
        else:
            best, verdict = tested[0][0], INCONCLUSIVE
        t = best.get("vs_final") or {}
        text = (
            f"final P-T {fmt(final)}; earliest early k = {fmt(best['k'])} gives "
            f"{fmt(best.get('final_metric'))} (Δ {fmt(t.get('estimate'))} "
            f"[{fmt(t.get('low'))}, {fmt(t.get('high'))}])"
        )
        return TargetResult(
            target,
            verdict,
            text,
            f"paired bootstrap of P@k-T − P-T (same seeds); within {tol:g}: lower bound ≥ −{tol:g}",
        )

    return judge


def _c9(entry: dict[str, Any], target: str) -> TargetResult:
    linear = _barriers(entry, "RI-T/RI-T", "linear")
    aligned = _barriers(entry, "RI-T/RI-T", "aligned")
    if not linear or not aligned:
        return TargetResult(target, UNMEASURED, "no aligned RI-T/RI-T pair")
    lin, ali = mean(v for v, _ in linear), mean(v for v, _ in aligned)
    assert lin is not None and ali is not None
    noise = math.hypot(max(n for _, n in linear), max(n for _, n in aligned))
    text = f"RI-T/RI-T {fmt(lin)} → {fmt(ali)} aligned"
    for other in ("P-T/RI-T", "P-T/P-T"):
        a, b = (
            mean(path_barriers(entry, other, "linear")),
            mean(path_barriers(entry, other, "aligned")),
        )
        if a is not None and b is not None:
            text += f"; {other} {fmt(a)} → {fmt(b)}"
    stat = f"shrinks by more than 2 s.e. of the difference ({fmt(noise, 2)})"
    if _barrier_state(lin, max(n for _, n in linear)) <= 0:
        return TargetResult(target, UNMEASURED, text + " (no linear barrier to shrink)", stat)
    change = lin - ali
    direction = 1 if change > max(noise, BARRIER_TOLERANCE) else (-1 if change < -noise else 0)
    return TargetResult(target, combine(direction), text, stat)


def _c10(entry: dict[str, Any], target: str) -> TargetResult:
    curves = _barriers(entry, "RI-T/RI-T", "curve")
    linear = path_barriers(entry, "RI-T/RI-T", "linear")
    if not curves:
        return TargetResult(target, UNMEASURED, "no RI-T/RI-T curve")
    worst = max(v for v, _ in curves)
    text = f"RI-T/RI-T curve barrier max {fmt(worst)} (linear {fmt(mean(linear))})"
    pt_rit = path_barriers(entry, "P-T/RI-T", "curve")
    if pt_rit:
        text += f"; P-T/RI-T curve max {fmt(max(pt_rit))}"
    flat = [-_barrier_state(v, n) for v, n in curves]
    return TargetResult(
        target,
        combine(_direction_of(flat)),
        text,
        f"flat: ≤ {BARRIER_TOLERANCE:g}; a barrier: > {BARRIER_TOLERANCE:g} + 2 s.e.",
    )


def final_pt_metric(entry: dict[str, Any]) -> float | None:
    """The final P-T metric of a trajectory entry.

    The point marked ``"reference": "P-T"`` (P-T's runs, fine-tuned from the final P) when there
    is one, else the mean of the points at ``final_k``.
    """
    points = [p for p in entry.get("points", []) if finite(p.get("final_metric"))]
    ref = [p["final_metric"] for p in points if p.get("reference") == "P-T"]
    if ref:
        return mean(ref)
    return mean(p["final_metric"] for p in points if p.get("k") == entry.get("final_k"))
