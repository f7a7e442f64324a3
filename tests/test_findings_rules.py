"""Every claim rule on constructed numbers: where it must hold, fail, and be inconclusive.

The study data is built in memory (no files, no training): one target 't', with only the analysis
documents a rule reads. Numbers are chosen so that the decision is clear from the rule's text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from transferscope.analyses import registry
from transferscope.report.findings import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    UNMEASURED,
    Finding,
    RunRow,
    StudyData,
    TargetResult,
    evaluate_findings,
    final_pt_metric,
)
from transferscope.report.html import findings_table_html


def run_row(run_id: str, kind: str = "P-T", chance: bool = False) -> RunRow:
    summary = {"final_metric": 0.9}
    return RunRow(run_id, kind, "t", 0, None, None, None, "done", summary, chance_level=chance)


def study(config: dict[str, Any] | None = None, runs=None, **entries: dict[str, Any]) -> StudyData:
    """StudyData with target 't' and the given analysis entries (name=entry)."""
    docs: dict[str, Any] = {name: None for name in registry.names()}
    for name, entry in entries.items():
        # Validated into the unit's result model, as the report reads it from disk.
        unit = registry.get(name)
        doc = {"analysis": name, "version": unit.version, "status": "ok", "targets": {"t": entry}}
        docs[name] = unit.Result.model_validate(doc)
    rows = runs or [run_row("PT-0"), run_row("RIT-0", "RI-T")]
    return StudyData(Path("."), "", config or {}, rows, docs)


def verdict(data: StudyData, claim: str) -> str:
    found = {f.id: f for f in evaluate_findings(data)}[claim]
    return found.verdict


def cmp(direction: int, estimate: float = 0.0, low=None, high=None, p=None) -> dict[str, Any]:
    return {
        "status": "ok",
        "direction": direction,
        "estimate": estimate,
        "low": low,
        "high": high,
        "p_value": p,
        "method": "constructed",
    }


# ---------------------------------------------------------------------------------------------
# C1, C2: curves


def side(final: float, epochs: list[float | None]) -> dict[str, Any]:
    reached = [e for e in epochs if e is not None]
    return {
        "runs": len(epochs),
        "final_metric": [final] * len(epochs),
        "final_metric_mean": final,
        "epochs_to_threshold": epochs,
        "steps_to_threshold": [None if e is None else int(10 * e) for e in epochs],
        "reached": [e is not None for e in epochs],
        "epochs_to_threshold_mean": sum(reached) / len(reached) if reached else None,
        "steps_to_threshold_mean": None,
    }


def gap(pt: dict, rit: dict, threshold: float | None, drop: float) -> dict[str, Any]:
    return {
        "P-T": pt,
        "RI-T": rit,
        "chance": 0.1,
        "fraction": 0.9,
        "threshold": threshold,
        "relative_drop": drop,
        "speed_gap_epochs": None,
        "speed_gap_steps": None,
        "area_between": None,
        "runs": {"P-T": ["PT-0"], "RI-T": ["RIT-0"]},
    }


def curves(final_test: dict, pt_epochs: list, rit_epochs: list, **extra: Any) -> dict[str, Any]:
    entry = {
        "status": "ok",
        **gap(side(0.9, pt_epochs), side(0.85, rit_epochs), 0.8, 5.0),
        "metric_name": "accuracy",
        "final_test": final_test,
        "shuffles": [],
    }
    return {**entry, **extra}


def test_c1_holds_fails_and_is_inconclusive() -> None:
    assert verdict(study(curves=curves(cmp(1, 0.05, p=1e-4), [1, 1], [3, 4])), "C1") == HOLDS
    # RI-T's final metric is better beyond the noise: does not hold, however fast P-T is.
    assert verdict(study(curves=curves(cmp(-1, -0.05, p=1e-4), [1, 1], [3, 4])), "C1") == FAILS
    # RI-T reaches the bar first at every seed.
    assert verdict(study(curves=curves(cmp(1, 0.05, p=1e-4), [3, 3], [1, 2])), "C1") == FAILS
    # A final difference within test-set noise and overlapping speeds: inconclusive.
    assert verdict(study(curves=curves(cmp(0, 0.001, p=0.8), [1, 2], [2, 3])), "C1") == INCONCLUSIVE
    # A seed that never reaches the bar is never fast.
    slow = curves(cmp(1, 0.05, p=1e-4), [1, None], [2, 2])
    assert verdict(study(curves=slow), "C1") == INCONCLUSIVE
    # A side at chance: no threshold above chance, speed cannot be compared.
    assert verdict(study(curves=curves(cmp(1), [1], [2], threshold=None)), "C1") == INCONCLUSIVE


def shuffled(drop_test: dict, pt: list, rit: list) -> dict[str, Any]:
    return {
        **gap(side(0.6, pt), side(0.59, rit), 0.5, 1.0),
        "shuffle": "b1",
        "block_size": 1,
        "pixel": False,
        "drop_test": drop_test,
    }


def unshuffled(drop: float = 5.0) -> dict[str, Any]:
    plain = gap(side(0.9, [1]), side(0.85, [2]), 0.8, drop)
    return {**plain, "shuffle": None, "block_size": None, "pixel": False}


def with_shuffle(entry: dict[str, Any]) -> dict[str, Any]:
    return curves(cmp(1, 0.05, p=1e-4), [1, 1], [3, 4], shuffles=[unshuffled(), entry])


def test_c2_holds_fails_and_is_inconclusive() -> None:
    assert verdict(study(curves=with_shuffle(shuffled(cmp(1, 4.0), [1], [3]))), "C2") == HOLDS
    # The drop grows under shuffling beyond the bootstrap interval.
    assert verdict(study(curves=with_shuffle(shuffled(cmp(-1, -4), [1], [3]))), "C2") == FAILS
    # P-T is slower at the smallest block.
    assert verdict(study(curves=with_shuffle(shuffled(cmp(1, 4.0), [4], [2]))), "C2") == FAILS
    # One run per side a single evaluation slower: within seed noise, not a failure.
    one_apart = with_shuffle(shuffled(cmp(1, 4.0), [3], [2]))
    assert verdict(study(curves=one_apart), "C2") == INCONCLUSIVE
    # Within the interval, and both reach the bar at the same evaluation.
    same = with_shuffle(shuffled(cmp(0, 0.5), [2], [2]))
    assert verdict(study(curves=same), "C2") == INCONCLUSIVE
    no_shuffle = curves(cmp(1), [1], [2], shuffles=[unshuffled()])
    assert verdict(study(curves=no_shuffle), "C2") == UNMEASURED


# ---------------------------------------------------------------------------------------------
# C3, C4, C5: P-T pairs against RI-T pairs and the shared-start baselines


def pair_start(name: str) -> dict[str, Any]:
    """The name, runs and seeds every pair entry starts with."""
    return {"pair": name, "status": "ok", "runs": ["A-0", "B-1"], "seeds": [0, 1]}


def catalogue(
    pair: Callable[[str, float], dict[str, Any]],
    pt: float,
    rit: float,
    same: float,
    control: float,
    across: Sequence[float],
) -> list[dict[str, Any]]:
    """``pair(name, value)`` for each pair of the catalogue; ``across``: the P-T/RI-T pairs."""
    return [
        pair("P-T/P-T", pt),
        pair("RI-T/RI-T", rit),
        pair("RI-T/RI-T same init", same),
        pair("P@0-T/P@0-T", control),
        *(pair("P-T/RI-T", v) for v in across),
    ]


def mistakes(pt: float, rit: float, same: float, control: float, n: int = 2000) -> dict:
    def pair(name: str, uncommon: float) -> dict[str, Any]:
        fractions = {
            "both_correct": 0.9 - uncommon,
            "only_a_wrong": uncommon / 2,
            "only_b_wrong": uncommon / 2,
            "both_wrong": 0.1,
            "uncommon": uncommon,
        }
        return {
            **pair_start(name),
            "task": "multiclass",
            "n": n,
            "counts": {k: round(v * n) for k, v in fractions.items()},
            "fractions": fractions,
            "indices": {
                k: [] for k in ("both_correct", "only_a_wrong", "only_b_wrong", "both_wrong")
            },
        }

    return {
        "status": "ok",
        # P-T/RI-T across seeds: how much one pair differs from another.
        "pairs": catalogue(pair, pt, rit, same, control, (0.3, 0.31, 0.305, 0.295)),
    }


def test_c3_holds_fails_and_a_shared_start_is_not_enough() -> None:
    assert verdict(study(mistakes=mistakes(0.05, 0.2, 0.19, 0.18)), "C3") == HOLDS
    assert verdict(study(mistakes=mistakes(0.25, 0.2, 0.19, 0.3)), "C3") == FAILS
    # Below independent RI-T pairs but level with two fine-tunes of an untrained P: what the
    # shared start explains is not credited to pre-training.
    assert verdict(study(mistakes=mistakes(0.05, 0.2, 0.19, 0.052)), "C3") == INCONCLUSIVE
    # Within twice the binomial error of 100 examples.
    assert verdict(study(mistakes=mistakes(0.15, 0.17, 0.17, 0.17, n=100)), "C3") == INCONCLUSIVE


def cka(pt: float, rit: float, same: float, control: float) -> dict[str, Any]:
    def pair(name: str, value: float) -> dict[str, Any]:
        values = {"conv1": min(1.0, value + 0.05), "layer1": value}
        layer = {"estimator": "exact", "features": [4, 4], "examples": 100, "error": None}
        return {
            **pair_start(name),
            "cka": values,
            "layers": {n: {**layer, "cka": v} for n, v in values.items()},
            "examples": 100,
        }

    return {
        "status": "ok",
        "pairs": catalogue(pair, pt, rit, same, control, (0.2, 0.22, 0.21, 0.2)),
        "subset": {"examples": 100, "of": 100, "seed": 0, "stratified": True},
    }


def test_c4_holds_fails_and_a_shared_start_is_not_enough() -> None:
    assert verdict(study(similarity=cka(0.8, 0.3, 0.4, 0.45)), "C4") == HOLDS
    assert verdict(study(similarity=cka(0.2, 0.6, 0.6, 0.6)), "C4") == FAILS
    # The negative control's signature: as similar as two fine-tunes of an untrained P.
    assert verdict(study(similarity=cka(0.8, 0.3, 0.4, 0.8)), "C4") == INCONCLUSIVE
    # A difference under the CKA floor (0.02) is noise.
    assert verdict(study(similarity=cka(0.51, 0.5, 0.5, 0.5)), "C4") == INCONCLUSIVE


def distance(pt: float, same: float, control: float, relative: list[float]) -> dict[str, Any]:
    units = [f"m{i}" for i in range(len(relative))]

    def pair(name: str, total: float, **per: Any) -> dict[str, Any]:
        per_module = per.get("per_module", {})
        return {
            **pair_start(name),
            "checkpoints": ["final", "final"],
            "total": total,
            "per_module": per_module,
            "per_module_relative": per.get("per_module_relative", {}),
            "per_module_rms": {},
            "module_elements": {m: 10 for m in per_module},
            "excluded": {},
            "tensors": 2 * len(per_module),
            "elements": 10 * len(per_module),
        }

    return {
        "status": "ok",
        "pairs": [
            pair("P-T/P-T", pt),
            pair("RI-T/RI-T", 30.0),
            pair("RI-T/RI-T same init", same),
            pair("P@0-T/P@0-T", control),
            *(pair("P-T/RI-T", t) for t in (29.0, 30.5, 30, 29.5)),
            pair(
                "P-T/P",
                5.0,
                # Raw l2 grows with size (the trap C5 avoids): here it falls with depth.
                per_module={u: 10.0 - i for i, u in enumerate(units)},
                per_module_relative=dict(zip(units, relative, strict=True)),
            ),
        ],
        "depth_units": units,
    }


RISING = [0.01, 0.02, 0.03, 0.05, 0.08, 0.1]


def test_c5_holds_fails_and_is_inconclusive() -> None:
    assert verdict(study(distance=distance(5.0, 17.0, 12.0, RISING)), "C5") == HOLDS
    # The size-normalised change falls with depth beyond chance.
    assert verdict(study(distance=distance(5.0, 17.0, 12.0, RISING[::-1])), "C5") == FAILS
    # As close as two fine-tunes from an untrained P: closeness is the shared start's.
    assert verdict(study(distance=distance(5.0, 17.0, 5.1, RISING)), "C5") == INCONCLUSIVE
    # No depth order among the modules: within the noise of a rank test.
    mixed = [0.05, 0.01, 0.08, 0.02, 0.1, 0.03]
    assert verdict(study(distance=distance(5.0, 17.0, 12.0, mixed)), "C5") == INCONCLUSIVE


# ---------------------------------------------------------------------------------------------
# C6, C7, C8


def barriers(pt: float, rit: float, same: float, examples: int = 1000) -> dict[str, Any]:
    from transferscope.analyses.interpolation import InterpolationEntry, InterpolationPair

    def pair(name: str, b: float) -> InterpolationPair:
        return InterpolationPair(
            pair=name, k=None, runs=["a", "b"], checkpoints=["final", "final"],
            metric_name="accuracy", lambdas=[0.0, 0.5, 1.0], metric=[0.9, 0.9 - b, 0.9],
            loss=[0.3, 0.3 + b, 0.3], barrier_metric=b, barrier_loss=b,
            batchnorm_recalibrated=False,
        )  # fmt: skip

    entry = InterpolationEntry(
        metric_name="accuracy",
        examples=examples,
        pairs=[pair("P-T/P-T", pt), pair("RI-T/RI-T", rit), pair("RI-T/RI-T same init", same)],
    )
    return entry.model_dump(mode="json", by_alias=True)


def test_c6_holds_fails_and_is_inconclusive() -> None:
    assert verdict(study(interpolation=barriers(0.002, 0.5, 0.3)), "C6") == HOLDS
    assert verdict(study(interpolation=barriers(0.2, 0.5, 0.3)), "C6") == FAILS
    # The same-init pair is flat: a shared init alone gives a basin.
    assert verdict(study(interpolation=barriers(0.002, 0.5, 0.005)), "C6") == FAILS
    # A same-init barrier of 0.03 is within twice the binomial error of 540 test images.
    assert verdict(study(interpolation=barriers(0.002, 0.5, 0.03, 540)), "C6") == INCONCLUSIVE


def criticality(mu: list[float | None], head: float = 0.0) -> dict[str, Any]:
    """A criticality entry: P-T's μ per module (the head last), RI-T not measured."""
    modules = [f"m{i}" for i in range(len(mu))] + ["fc"]
    values = dict(zip(modules, [*mu, head], strict=True))
    bounds = {m: 1e6 for m, v in values.items() if v is None}
    return {
        "P-T": {
            "status": "ok",
            "run": "PT-0",
            "modules": modules,
            "mu": values,
            "mu_bound": bounds,
            "network_criticality": None if bounds else sum(values.values()),
            "network_criticality_bound": 1e6 * len(bounds) if bounds else None,
            "infeasible_modules": list(bounds),
            "distance": {m: 1.0 for m in modules},
            "argmin": {m: None if v is None else (1.0, 0.1) for m, v in values.items()},
            "final_loss": 0.3,
            "epsilon": 0.35,
            "final_meets_epsilon": True,
            "alphas": [0.0, 1.0],
            "sigmas": [1e-4, 1.0],
            "sigma_grid": "geometric",
            "forward_passes": 10,
            "examples": 100,
            "search": "pruned",
            "recalibrated_batchnorm": False,
            "final_metric": 0.9,
            "final_test_loss": 0.3,
            "rewind": {m: 0.5 for m in modules},
            "rewind_loss": {m: 1.0 for m in modules},
            "heatmap": {},
        },
        "RI-T": {"status": "skipped", "reason": "not part of C7", "run": "RIT-0"},
    }


def test_c7_holds_fails_and_is_inconclusive() -> None:
    rising = [0.1, 0.3, 1.0, 2.0, 5.0, 9.0]
    assert verdict(study(criticality=criticality(rising)), "C7") == HOLDS
    assert verdict(study(criticality=criticality(rising[::-1])), "C7") == FAILS
    assert verdict(study(criticality=criticality([1.0, 5.0, 0.2, 9.0, 0.3, 2.0])), "C7") == (
        INCONCLUSIVE
    )
    # The head (a fresh layer, last) is left out: a tiny μ there cannot break a rising body.
    assert verdict(study(criticality=criticality(rising, head=0.0)), "C7") == HOLDS
    # Infeasible modules are left out, never ranked: three finite modules cannot decide.
    few = criticality([0.1, None, 1.0, None, 5.0, None])
    assert verdict(study(criticality=few), "C7") == INCONCLUSIVE
    assert verdict(study(criticality=criticality([0.1, None, None])), "C7") == UNMEASURED


def point(k: float, final: float, early: bool, **extra: Any) -> dict[str, Any]:
    """A trajectory point: one run, speed and barrier not measured."""
    return {
        "k": k,
        "runs": [f"PkT-{k:g}"],
        "final_metric": final,
        "epochs_to_threshold": None,
        "reached": [False],
        "barrier_metric": None,
        "barrier_loss": None,
        "early": early,
        **extra,
    }


def trajectory(*early: dict[str, Any]) -> dict[str, Any]:
    points = [point(0.1 * (i + 1), 0.85, True, vs_final=t) for i, t in enumerate(early)]
    points.append(point(2.0, 0.9, False, reference="P-T"))
    return {
        "status": "ok",
        "metric_name": "accuracy",
        "final_k": 2.0,
        "threshold": None,
        "chance": 0.1,
        "points": points,
    }


def test_c8_holds_fails_and_is_inconclusive() -> None:
    worse = cmp(-1, -0.05, low=-0.07, high=-0.03)
    level = cmp(0, -0.002, low=-0.008, high=0.004)
    unsure = cmp(0, -0.01, low=-0.03, high=0.01)
    assert verdict(study(trajectory=trajectory(worse, level)), "C8") == HOLDS
    assert verdict(study(trajectory=trajectory(worse, worse)), "C8") == FAILS
    assert verdict(study(trajectory=trajectory(worse, unsure)), "C8") == INCONCLUSIVE
    # A checkpoint late in pre-training is not "early": with none early, not measured.
    late = trajectory()
    late["points"].insert(0, point(1.9, 0.9, False, vs_final=level))
    assert verdict(study(trajectory=late), "C8") == UNMEASURED


def test_c8_names_the_final_p_t_reference_point() -> None:
    """The final P-T metric shown is the point marked as P-T's, not a P@k-T run at the final k."""
    traj = trajectory(cmp(-1, -0.03, low=-0.05, high=-0.02))
    traj["points"].insert(1, point(2.0, 0.86, False))  # a P@k-T run at the final k
    assert final_pt_metric(traj) == 0.9  # the reference point, not the P@k-T run at k = 2
    c8 = {f.id: f for f in evaluate_findings(study(trajectory=traj))}["C8"]
    assert c8.verdict == FAILS  # worse than P-T beyond the tolerance and the noise
    assert "final P-T 0.9" in c8.measured


# ---------------------------------------------------------------------------------------------
# across targets, chance-level runs, the negative control


def test_a_verdict_over_targets() -> None:
    def finding(*verdicts: str) -> Finding:
        rows = [TargetResult(f"t{i}", v, "") for i, v in enumerate(verdicts)]
        return Finding("C0", "", "", "", rows)

    assert finding(HOLDS, HOLDS).verdict == HOLDS
    assert finding(HOLDS, INCONCLUSIVE).verdict == INCONCLUSIVE
    assert finding(HOLDS, INCONCLUSIVE, FAILS).verdict == FAILS
    assert finding(HOLDS, UNMEASURED).verdict == HOLDS
    assert finding(UNMEASURED).verdict == UNMEASURED


def test_a_run_at_chance_level_makes_its_claims_inconclusive() -> None:
    entry = curves(cmp(1, 0.05, p=1e-4), [1, 1], [3, 4])
    assert verdict(study(curves=entry), "C1") == HOLDS
    at_chance = [run_row("PT-0"), run_row("RIT-0", "RI-T", chance=True)]
    data = study(runs=at_chance, curves=entry)
    c1 = {f.id: f for f in evaluate_findings(data)}["C1"]
    assert c1.verdict == INCONCLUSIVE and "at chance level: RIT-0" in c1.measured


@pytest.mark.parametrize("control", [False, True])
def test_the_negative_control_banner_names_claims_that_hold(control: bool) -> None:
    data = study(
        config={"negative_control": control}, curves=curves(cmp(1, 0.05, p=1e-4), [1], [3])
    )
    html = findings_table_html(evaluate_findings(data), data.negative_control)
    assert ("Negative control" in html) is control
    if control:
        assert "C1 hold(s) anyway" in html
