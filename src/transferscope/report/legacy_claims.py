"""Claims C3-C10 as rules on plain result documents, for the analysis units not yet converted
to typed results (each unit's module names its claims; a converted unit holds its own rules).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from transferscope.report.rules import (
    CKA_FLOOR,
    DISTANCE_FLOOR,
    UNMEASURED,
    TargetResult,
    _direction_of,
    _fraction_floor,
    _group_rule,
    _mean_per_key,
    _ok_pairs,
    combine,
    depth_order,
    finite,
    fmt,
)

if TYPE_CHECKING:  # pragma: no cover
    from transferscope.report.study_data import StudyData


def _c3(entry: dict[str, Any], target: str) -> TargetResult:
    everything = [p for p in entry.get("pairs", []) if p.get("status", "ok") == "ok"]
    direction, text, stat = _group_rule(
        entry,
        lambda p: (p.get("fractions") or {}).get("uncommon"),
        -1,
        "pairs",
        floor=_fraction_floor(everything),
    )
    if direction is None:
        return TargetResult(target, UNMEASURED, text)
    return TargetResult(target, combine(direction), f"uncommon mistakes {text}", stat)


def _c4(entry: dict[str, Any], target: str) -> TargetResult:
    layers: list[str] = []
    for p in _ok_pairs(entry, "P-T/P-T"):
        layers += [n for n in (p.get("cka") or {}) if n not in layers]
    if not layers:
        return TargetResult(target, UNMEASURED, "P-T/P-T or RI-T/RI-T pair missing")
    directions, parts, stats = [], [], []
    for layer in layers:
        d, text, stat = _group_rule(
            entry, lambda p, n=layer: (p.get("cka") or {}).get(n), +1, "pairs", floor=CKA_FLOOR
        )
        if d is None:
            continue
        directions.append(d)
        parts.append(f"{layer} {text}")
        stats.append(stat)
    if not directions:
        return TargetResult(target, UNMEASURED, "no layer measured for both pair kinds")
    return TargetResult(
        target, combine(_direction_of(directions)), "; ".join(parts), f"per layer: {stats[0]}"
    )


def _c5(data: StudyData) -> Callable[[dict[str, Any], str], TargetResult]:
    def judge(entry: dict[str, Any], target: str) -> TargetResult:
        from transferscope.analysis.statistics import spearman_trend

        closer, text, stat = _group_rule(
            entry, lambda p: p.get("total"), -1, "pairs", relative_floor=DISTANCE_FLOOR
        )
        per = _mean_per_key(_ok_pairs(entry, "P-T/P"), "per_module_relative")
        units = entry.get("depth_units") or _criticality_modules(data, target)
        order = [m for m in depth_order(per, units) if not units or m in units]
        if closer is None:
            return TargetResult(target, UNMEASURED, "missing: " + text)
        if len(order) < 3:
            return TargetResult(
                target, UNMEASURED, "P-T/P size-normalised distances for 3+ modules missing"
            )
        trend = spearman_trend([per[m] for m in order])
        rho = f"ρ = {trend.estimate:+.2f}" if finite(trend.estimate) else "no change"
        measured = (
            f"whole network {text}; P-T/P relative change ‖Δ‖/‖θ_P‖ vs depth "
            f"{rho} over {len(order)} modules"
        )
        return TargetResult(
            target,
            combine(closer, trend.direction),
            measured,
            f"{stat}; depth: {trend.method}, p = {fmt(trend.p_value, 2)}",
        )

    return judge


def _criticality_modules(data: StudyData, target: str) -> list[str] | None:
    """The module list (input to output, head last) of the target's P-T criticality result, to
    order other analyses' modules by depth; None when P-T's criticality was not measured."""
    entry = data.target_entry("criticality", target)
    if isinstance(entry, dict):  # a result read without its typed model
        pt = entry.get("P-T")
        modules = pt.get("modules") if isinstance(pt, dict) else None
    else:
        modules = getattr(getattr(entry, "pt", None), "modules", None)
    return list(modules) if isinstance(modules, list) else None
