"""The findings table: every claim of every registered analysis unit, judged per target.

Each claim of Neyshabur et al. (2020) (C1-C8), and the follow-up claims C9-C11 beyond it, is
declared by the analysis unit that measures it (:class:`transferscope.unitkit.unit.Claim`).
:func:`evaluate_findings` applies each claim's judge to every target's result and returns one
:class:`Finding` per claim: the numbers measured, the verdicts (:mod:`.rules`) and the rules that
produced them, in words a reader can check, with the statistic that decided.

A claim has two verdicts where a control changes the question: *paper*, the comparison as the
paper made it, and *controlled*, whether pre-training is the cause (against fine-tunes of P's
untrained init and, for the "P-T models are alike" claims, the same-init RI-T pair). Over
targets: a claim does not hold if it fails on one target, holds if it holds on every target
measured, and is inconclusive otherwise. A claim about how targets differ (C11: the benefit
against the distance from the source) is judged once over all of them, in one row.
"""

from __future__ import annotations

from typing import Any

from transferscope import registry
from transferscope.unitkit.results import Skipped
from transferscope.unitkit.rules import (
    BARRIER_TOLERANCE,
    CHECKPOINT_TOLERANCE,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NO_CONTROL,
    UNMEASURED,
    Finding,
    TargetResult,
    Verdict,
    combine,
    depth_order,
    finite,
    fmt,
    mean,
    spearman,
)
from transferscope.unitkit.study_data import RunRow, StudyData, load_study
from transferscope.unitkit.unit import Analysis, Claim

ACROSS_TARGETS = "across targets"
"""The 'target' of a claim judged once over every target (``Claim.across``)."""


def _judge(data: StudyData, claim: Claim, entry: Any, target: str) -> TargetResult:
    """``claim``'s judge on one entry; a claim that does not guard itself is made inconclusive
    when the entry names a run at chance level."""
    result = claim.judge(entry, target, data)
    return result if claim.guards_chance else data.guard_chance(result, entry)


def _across_targets(data: StudyData, unit: Analysis, claim: Claim) -> TargetResult:
    """``claim`` judged once on ``unit``'s whole result."""
    reason = data.not_run_reason(unit.name)
    result = data.result(unit.name)
    if reason is not None or result is None:
        return TargetResult(ACROSS_TARGETS, UNMEASURED, f"{unit.name} not run")
    return _judge(data, claim, result, ACROSS_TARGETS)


def _per_target(data: StudyData, unit: Analysis, claim: Claim) -> list[TargetResult]:
    """Apply ``claim`` to each target's entry of ``unit``'s result (or say why it is not
    measured). A claim across targets gives one result for all of them."""
    if claim.across:
        return [_across_targets(data, unit, claim)]
    out = []
    reason = data.not_run_reason(unit.name)
    for target in data.targets:
        if reason is not None:
            # The reason itself: "not run" would hide e.g. an architecture it does not support.
            out.append(TargetResult(target, UNMEASURED, f"{unit.name} not measured: {reason}"))
            continue
        entry = data.target_entry(unit.name, target)
        status = (
            entry.get("status", "ok") if isinstance(entry, dict) else getattr(entry, "status", None)
        )
        if entry is None or isinstance(entry, Skipped) or status != "ok":
            why = getattr(entry, "reason", None) or (
                entry.get("reason") if isinstance(entry, dict) else None
            )
            out.append(
                TargetResult(target, UNMEASURED, f"{unit.name} skipped ({why or 'no entry'})")
            )
            continue
        out.append(_judge(data, claim, entry, target))
    return out


def evaluate_findings(data: StudyData) -> list[Finding]:
    """Every registered claim (C1-C8 of Neyshabur et al. 2020, C9-C11 beyond it, and any a
    plug-in unit adds), each with its rule, per-target numbers, statistic and verdict."""
    claims = [(unit, claim) for unit in registry.units() for claim in unit.claims]
    claims.sort(key=lambda uc: uc[1].order or 0.0)  # never None: Claim.__post_init__ sets it
    return [
        Finding(
            claim.id,
            claim.claim,
            claim.rule,
            unit.section.id,
            _per_target(data, unit, claim),
            claim.controlled,
            claim.meaning,
            claim.short,
        )
        for unit, claim in claims
    ]


def final_pt_metric(entry: object) -> float | None:
    """The final P-T metric of a trajectory entry (a model, or its plain form); see
    :func:`transferscope.analyses.trajectory.final_pt_metric`."""
    from transferscope.analyses.trajectory import TrajectoryEntry
    from transferscope.analyses.trajectory import final_pt_metric as of_entry

    if not isinstance(entry, TrajectoryEntry):
        entry = TrajectoryEntry.model_validate(entry)
    return of_entry(entry)


__all__ = [
    "ACROSS_TARGETS",
    "BARRIER_TOLERANCE",
    "CHECKPOINT_TOLERANCE",
    "FAILS",
    "HOLDS",
    "INCONCLUSIVE",
    "NO_CONTROL",
    "UNMEASURED",
    "Finding",
    "RunRow",
    "StudyData",
    "TargetResult",
    "Verdict",
    "combine",
    "depth_order",
    "evaluate_findings",
    "final_pt_metric",
    "finite",
    "fmt",
    "load_study",
    "mean",
    "spearman",
]
