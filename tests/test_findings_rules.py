"""Every claim rule on constructed numbers: where it must hold, fail, and be inconclusive, in both
columns (the paper's comparison and the controlled one), with the chance guard.

The study data is built in memory (no files, no training): one target 't', with only the analysis
documents a rule reads. Numbers are chosen so that the decision is clear from the rule's text.
Run ids follow one scheme so that a test can put any of them at chance level: P-T seeds PT-0 and
PT-1, RI-T seeds RIT-0 and RIT-1, the same-init RI-T RIT-s, the control runs P0T-0 and P0T-1, P.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from transferscope import registry
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
from transferscope.report.html import findings_table_html, verdict_grid_html
from transferscope.report.markdown import findings_markdown, verdict_grid_markdown

KINDS = {"P": "P", "PT": "P-T", "RIT": "RI-T", "P0T": "P@k-T", "PkT": "P@k-T"}
RUNS = ("P", "PT-0", "PT-1", "RIT-0", "RIT-1", "RIT-s", "P0T-0", "P0T-1")


def run_row(run_id: str, kind: str | None = None, chance: bool = False) -> RunRow:
    kind = kind or KINDS[run_id.split("-")[0]]
    metric = 0.1 if chance else 0.9
    summary = {"final_metric": metric}
    check = {"chance": 0.1, "band": 0.03, "at_chance": chance, "z": 2.576}
    return RunRow(
        run_id, kind, "t", 0, None, None, None, "done", summary, chance_level=chance, chance=check
    )


def rows(*at_chance: str) -> list[RunRow]:
    """Every run of the constructed study, the ones named at chance level."""
    return [run_row(r, chance=r in at_chance) for r in RUNS]


def study(
    config: dict[str, Any] | None = None, runs: list[RunRow] | None = None, **entries: Any
) -> StudyData:
    """StudyData with target 't' and the given analysis entries (name=entry)."""
    docs: dict[str, Any] = {name: None for name in registry.names()}
    for name, entry in entries.items():
        # Validated into the unit's result model, as the report reads it from disk.
        unit = registry.get(name)
        doc = {"analysis": name, "version": unit.version, "status": "ok", "targets": {"t": entry}}
        docs[name] = unit.Result.model_validate(doc)
    return StudyData(Path("."), "", config or {}, runs or rows(), docs)


def finding(data: StudyData, claim: str) -> Finding:
    return {f.id: f for f in evaluate_findings(data)}[claim]


def verdicts(data: StudyData, claim: str) -> tuple[str, str | None]:
    """(paper, controlled) verdicts of ``claim`` over the study's targets."""
    found = finding(data, claim)
    return found.paper, found.controlled


def verdict(data: StudyData, claim: str) -> str:
    """The paper's verdict."""
    return finding(data, claim).paper


def cell(data: StudyData, claim: str) -> TargetResult:
    return finding(data, claim).per_target[0]


def cmp(
    direction: int, estimate: float = 0.0, low=None, high=None, p=None, **extra: Any
) -> dict[str, Any]:
    return {
        "status": "ok",
        "direction": direction,
        "estimate": estimate,
        "low": low,
        "high": high,
        "p_value": p,
        "method": "constructed",
        **extra,
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
        "runs": {"P-T": ["PT-0", "PT-1"], "RI-T": ["RIT-0", "RIT-1"]},
    }


def control(final_test: dict, pt_epochs: list, control_epochs: list, final: float = 0.85) -> dict:
    """P-T (0.9) against P@0-T (``final``) for C1's controlled verdict."""
    return {
        "P-T": side(0.9, pt_epochs),
        "P@0-T": side(final, control_epochs),
        "threshold": 0.8,
        "final_test": final_test,
        "runs": {"P-T": ["PT-0", "PT-1"], "P@0-T": ["P0T-0", "P0T-1"]},
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


# 2,000 test examples: P-T right on 120 that RI-T gets wrong, wrong on 20 it gets right.
BETTER = cmp(1, 0.05, p=1e-4, n=2000, wins=120, losses=20)
SAME = cmp(0, 0.001, p=0.8, n=2000, wins=41, losses=39)


def test_c1_holds_fails_and_is_inconclusive() -> None:
    assert verdict(study(curves=curves(BETTER, [1, 1], [3, 4])), "C1") == HOLDS
    # RI-T's final metric is better beyond the noise: does not hold, however fast P-T is.
    worse = cmp(-1, -0.05, p=1e-4, n=2000, wins=20, losses=120)
    assert verdict(study(curves=curves(worse, [1, 1], [3, 4])), "C1") == FAILS
    # RI-T reaches the bar first at every seed.
    assert verdict(study(curves=curves(BETTER, [3, 3], [1, 2])), "C1") == FAILS
    # A final difference within test-set noise and overlapping speeds: inconclusive.
    assert verdict(study(curves=curves(SAME, [1, 2], [2, 3])), "C1") == INCONCLUSIVE
    # A seed that never reaches the bar is never fast.
    slow = curves(BETTER, [1, None], [2, 2])
    assert verdict(study(curves=slow), "C1") == INCONCLUSIVE
    # No side above chance: no bar, speed cannot be compared.
    assert verdict(study(curves=curves(BETTER, [1], [2], threshold=None)), "C1") == INCONCLUSIVE


def test_c1_controlled_compares_p_t_with_the_untrained_init() -> None:
    both = curves(BETTER, [1, 1], [3, 4], control=control(BETTER, [1, 1], [3, 3]))
    assert verdicts(study(curves=both), "C1") == (HOLDS, HOLDS)
    # P-T beats RI-T, but a fine-tune of the untrained init with P-T's recipe does as well.
    recipe = curves(BETTER, [1, 1], [3, 4], control=control(SAME, [1, 1], [1, 2], 0.9))
    found = finding(study(curves=recipe), "C1")
    assert (found.paper, found.controlled) == (HOLDS, INCONCLUSIVE)
    assert "recipe" in found.explanation and found.gap_targets == ["t"]
    # The untrained init's fine-tunes beat P-T: pre-training hurt.
    hurt = control(cmp(-1, -0.04, p=1e-3, n=2000, wins=10, losses=90), [2, 2], [1, 1], 0.95)
    assert verdicts(study(curves=curves(BETTER, [1, 1], [3, 4], control=hurt)), "C1") == (
        HOLDS,
        FAILS,
    )
    # Without P@0-T runs the controlled verdict is not measured, and says why.
    found = finding(study(curves=curves(BETTER, [1, 1], [3, 4])), "C1")
    assert found.controlled == UNMEASURED
    assert "no control" in found.per_target[0].controlled.measured


def test_c1_holds_when_ri_t_learned_nothing_and_p_t_did() -> None:
    """RI-T at chance level, P-T far above: the strongest form of C1, in both columns."""
    rit_at_chance = side(0.12, [None, None])  # never reaches P-T's bar
    entry = {
        **curves(BETTER, [1, 1], [None, None], control=control(BETTER, [1, 1], [None, None], 0.11)),
        "RI-T": rit_at_chance,
    }
    data = study(runs=rows("RIT-0", "RIT-1", "P0T-0"), curves=entry)
    assert verdicts(data, "C1") == (HOLDS, HOLDS)
    assert "not reached" in cell(data, "C1").measured


def test_c1_says_what_would_decide_it() -> None:
    # Within noise at 2,000 examples: 41 vs 39 disagreements would need far more examples.
    found = cell(study(curves=curves(SAME, [1, 2], [2, 3])), "C1")
    assert found.verdict == INCONCLUSIVE
    assert "decisive with" in found.decide and "test examples" in found.decide
    assert "seeds" in found.decide  # the overlapping speeds: a t-test on epochs per side
    # The sides win equally often: no number of examples decides that.
    even = cmp(0, 0.0, p=1.0, n=2000, wins=30, losses=30)
    found = cell(study(curves=curves(even, [1], [3])), "C1")
    assert "would not decide it" in found.decide


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
    return curves(BETTER, [1, 1], [3, 4], shuffles=[unshuffled(), entry])


def test_c2_holds_fails_and_is_inconclusive() -> None:
    assert verdict(study(curves=with_shuffle(shuffled(cmp(1, 4.0), [1], [3]))), "C2") == HOLDS
    # Two shuffle seeds a side, ranges apart.
    two = with_shuffle(shuffled(cmp(1, 4.0), [1, 2], [3, 4]))
    assert verdict(study(curves=two), "C2") == HOLDS
    # The drop grows under shuffling beyond the bootstrap interval.
    assert verdict(study(curves=with_shuffle(shuffled(cmp(-1, -4), [1], [3]))), "C2") == FAILS
    # P-T is slower at the smallest block.
    assert verdict(study(curves=with_shuffle(shuffled(cmp(1, 4.0), [4], [2]))), "C2") == FAILS
    # One run per side a single evaluation slower: within seed noise, not a failure.
    one_apart = with_shuffle(shuffled(cmp(1, 4.0), [3], [2]))
    assert verdict(study(curves=one_apart), "C2") == INCONCLUSIVE
    # Within the interval, and both reach the bar at the same evaluation.
    same = with_shuffle(shuffled(cmp(0, 0.5, low=-1.0, high=2.0, n=500), [2], [2]))
    assert verdict(study(curves=same), "C2") == INCONCLUSIVE
    assert "test examples" in cell(study(curves=same), "C2").decide
    no_shuffle = curves(BETTER, [1], [2], shuffles=[unshuffled()])
    assert verdict(study(curves=no_shuffle), "C2") == UNMEASURED
    # No control: one verdict.
    assert finding(study(curves=two), "C2").controlled is None


# ---------------------------------------------------------------------------------------------
# C3, C4, C5: P-T pairs against RI-T pairs (paper) and the shared-start baselines (controlled)

PAIR_RUNS = {
    "P-T/P-T": ["PT-0", "PT-1"],
    "RI-T/RI-T": ["RIT-0", "RIT-1"],
    "RI-T/RI-T same init": ["RIT-0", "RIT-s"],
    "P@0-T/P@0-T": ["P0T-0", "P0T-1"],
}


def pair_start(name: str, runs: list[str] | None = None) -> dict[str, Any]:
    """The name, runs and seeds every pair entry starts with."""
    return {
        "pair": name,
        "status": "ok",
        "runs": runs or PAIR_RUNS.get(name, ["PT-0", "RIT-1"]),
        "seeds": [0, 1],
    }


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


def test_c3_paper_and_controlled() -> None:
    assert verdicts(study(mistakes=mistakes(0.05, 0.2, 0.19, 0.18)), "C3") == (HOLDS, HOLDS)
    assert verdicts(study(mistakes=mistakes(0.25, 0.2, 0.19, 0.3)), "C3") == (FAILS, FAILS)
    # Below independent RI-T pairs but level with two fine-tunes of an untrained P: the paper's
    # comparison holds, the controlled one cannot credit pre-training, and the report says so.
    found = finding(study(mistakes=mistakes(0.05, 0.2, 0.19, 0.052)), "C3")
    assert (found.paper, found.controlled) == (HOLDS, INCONCLUSIVE)
    assert "shared start" in found.explanation
    # The same-init RI-T pair is more alike than the P-T pair beyond the noise.
    assert verdicts(study(mistakes=mistakes(0.05, 0.2, 0.01, 0.18)), "C3") == (HOLDS, FAILS)
    # Within twice the binomial error of 100 examples; the floor says more seeds would not help.
    small = study(mistakes=mistakes(0.15, 0.17, 0.17, 0.17, n=100))
    assert verdicts(small, "C3") == (INCONCLUSIVE, INCONCLUSIVE)
    assert "more seeds would not decide it" in cell(small, "C3").decide


def test_c3_leaves_out_pairs_of_a_run_at_chance_and_names_it() -> None:
    entry = mistakes(0.05, 0.2, 0.19, 0.18)
    data = study(runs=rows("RIT-1"), mistakes=entry)
    paper = cell(data, "C3")
    # The only independent RI-T pair holds a run that learned nothing: the paper's comparison
    # cannot be made; the cell names the run and why.
    assert paper.verdict == INCONCLUSIVE and paper.voided_by == ("RIT-1",)
    assert "RIT-1" in paper.measured and "at chance" in paper.measured
    # The controlled comparison does not read that run: it stays decided.
    assert paper.controlled.verdict == HOLDS


def test_a_run_at_chance_outside_the_compared_set_changes_nothing() -> None:
    entry = mistakes(0.05, 0.2, 0.19, 0.052)
    before = verdicts(study(mistakes=entry), "C3")
    # A control run at chance level is not part of the paper's comparison.
    after = study(runs=rows("P0T-1"), mistakes=entry)
    assert verdict(after, "C3") == before[0] == HOLDS
    # A shuffled run at chance level changes neither C1 column.
    shuffled_run = run_row("PT-b1", "P-T", chance=True)
    both = curves(BETTER, [1, 1], [3, 4], control=control(BETTER, [1, 1], [3, 3]))
    data = study(runs=[*rows(), shuffled_run], curves=both)
    assert verdicts(data, "C1") == (HOLDS, HOLDS)


def cka(pt: float, rit: float, same: float, control: float, conv1: float | None = None) -> dict:
    def pair(name: str, value: float) -> dict[str, Any]:
        values = {"conv1": min(1.0, value + 0.05) if conv1 is None else conv1, "layer1": value}
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


def test_c4_paper_and_controlled() -> None:
    assert verdicts(study(similarity=cka(0.8, 0.3, 0.4, 0.45)), "C4") == (HOLDS, HOLDS)
    assert verdicts(study(similarity=cka(0.2, 0.6, 0.6, 0.6)), "C4") == (FAILS, FAILS)
    # The negative control's signature: as similar as two fine-tunes of an untrained P.
    assert verdicts(study(similarity=cka(0.8, 0.3, 0.4, 0.8)), "C4") == (HOLDS, INCONCLUSIVE)
    # A difference under the CKA floor (0.02) is noise, and more seeds would not change that.
    floor = study(similarity=cka(0.51, 0.5, 0.5, 0.5))
    assert verdicts(floor, "C4") == (INCONCLUSIVE, INCONCLUSIVE)
    assert "more seeds would not decide it" in cell(floor, "C4").decide


def test_c4_leaves_out_a_layer_where_every_pair_is_at_cka_one() -> None:
    """CKA cannot exceed 1: a first layer where every pair is within the floor of 1 cannot tell
    the pairs apart, and must not make an otherwise clear claim inconclusive."""
    data = study(similarity=cka(0.8, 0.3, 0.4, 0.45, conv1=0.999))
    assert verdicts(data, "C4") == (HOLDS, HOLDS)
    assert "left out" in cell(data, "C4").measured and "conv1" in cell(data, "C4").measured
    # Where no layer can tell them apart, nothing decides it.
    flat = study(similarity=cka(0.995, 0.99, 0.99, 0.99, conv1=0.999))
    assert verdict(flat, "C4") == INCONCLUSIVE


def test_c4_cka_of_a_model_that_learned_nothing_is_void() -> None:
    data = study(runs=rows("PT-1"), similarity=cka(0.8, 0.3, 0.4, 0.45))
    found = cell(data, "C4")
    assert found.verdict == INCONCLUSIVE and "PT-1" in found.voided_by
    assert found.controlled.verdict == INCONCLUSIVE


def test_c4_says_how_many_seeds_would_decide_it() -> None:
    # P-T pairs 0.05 above RI-T pairs against a pair spread of ~0.03: decisive with more seeds.
    entry = cka(0.55, 0.5, 0.5, 0.5)
    entry["pairs"] = [p for p in entry["pairs"] if p["pair"] != "P-T/RI-T"] + [
        {**entry["pairs"][-1], "cka": {"conv1": v + 0.05, "layer1": v}} for v in (0.2, 0.25, 0.21)
    ]
    found = cell(study(similarity=entry), "C4")
    assert found.verdict == INCONCLUSIVE, found.measured
    assert "decisive with" in found.decide and "seeds" in found.decide, found.decide


def distance(pt: float, same: float, control: float, relative: list[float]) -> dict[str, Any]:
    units = [f"m{i}" for i in range(len(relative))]

    def pair(name: str, total: float, **per: Any) -> dict[str, Any]:
        per_module = per.get("per_module", {})
        return {
            **pair_start(name, ["PT-0", "P"] if name == "P-T/P" else None),
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


def test_c5_paper_and_controlled() -> None:
    assert verdicts(study(distance=distance(5.0, 17.0, 12.0, RISING)), "C5") == (HOLDS, HOLDS)
    # The size-normalised change falls with depth beyond chance.
    assert verdicts(study(distance=distance(5.0, 17.0, 12.0, RISING[::-1])), "C5") == (
        FAILS,
        FAILS,
    )
    # As close as two fine-tunes from an untrained P: closeness is the shared start's.
    assert verdicts(study(distance=distance(5.0, 17.0, 5.1, RISING)), "C5") == (HOLDS, INCONCLUSIVE)
    # No depth order among the modules: within the noise of a rank test, which more seeds
    # cannot change (the modules are the model's).
    mixed = study(distance=distance(5.0, 17.0, 12.0, [0.05, 0.01, 0.08, 0.02, 0.1, 0.03]))
    assert verdict(mixed, "C5") == INCONCLUSIVE
    assert "more seeds would not decide it" in cell(mixed, "C5").decide


# ---------------------------------------------------------------------------------------------
# C6, C7, C8


def barriers(
    pt: float, rit: float, same: float, control: float | None = None, examples: int = 1000
) -> dict[str, Any]:
    from transferscope.analyses.interpolation import InterpolationEntry, InterpolationPair

    def pair(name: str, b: float) -> InterpolationPair:
        return InterpolationPair(
            pair=name, k=None, runs=PAIR_RUNS[name], checkpoints=["final", "final"],
            metric_name="accuracy", lambdas=[0.0, 0.5, 1.0], metric=[0.9, 0.9 - b, 0.9],
            loss=[0.3, 0.3 + b, 0.3], barrier_metric=b, barrier_loss=b,
            batchnorm_recalibrated=False,
        )  # fmt: skip

    pairs = [pair("P-T/P-T", pt), pair("RI-T/RI-T", rit), pair("RI-T/RI-T same init", same)]
    if control is not None:
        pairs.append(pair("P@0-T/P@0-T", control))
    entry = InterpolationEntry(metric_name="accuracy", examples=examples, pairs=pairs)
    return entry.model_dump(mode="json", by_alias=True)


def test_c6_paper_and_controlled() -> None:
    assert verdicts(study(interpolation=barriers(0.002, 0.5, 0.3, 0.4)), "C6") == (HOLDS, HOLDS)
    assert verdict(study(interpolation=barriers(0.2, 0.5, 0.3)), "C6") == FAILS
    # The same-init pair is flat: the paper's claim (even from the same init) does not hold.
    assert verdict(study(interpolation=barriers(0.002, 0.5, 0.005)), "C6") == FAILS
    # A same-init barrier of 0.03 is within twice the binomial error of 540 test images; more
    # test examples would decide it.
    undecided = study(interpolation=barriers(0.002, 0.5, 0.03, examples=540))
    assert verdict(undecided, "C6") == INCONCLUSIVE
    assert "test examples" in cell(undecided, "C6").decide
    # The control pair is flat too: the basin comes from the shared start, not pre-training.
    found = finding(study(interpolation=barriers(0.002, 0.5, 0.3, 0.004)), "C6")
    assert (found.paper, found.controlled) == (HOLDS, FAILS)
    assert "basin" in found.explanation
    # Without a control pair: not measured.
    assert verdicts(study(interpolation=barriers(0.002, 0.5, 0.3)), "C6")[1] == UNMEASURED


def test_c6_a_barrier_between_models_at_chance_is_void() -> None:
    data = study(runs=rows("RIT-1"), interpolation=barriers(0.002, 0.0, 0.3, 0.4))
    found = cell(data, "C6")
    # The independent RI-T pair (flat at chance) is left out and named, not read as flat.
    assert found.verdict == INCONCLUSIVE and found.voided_by == ("RIT-1",)
    assert found.controlled.verdict == HOLDS


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
    mixed = study(criticality=criticality([1.0, 5.0, 0.2, 9.0, 0.3, 2.0]))
    assert verdict(mixed, "C7") == INCONCLUSIVE
    assert "more seeds would not decide it" in cell(mixed, "C7").decide
    # The head (a fresh layer, last) is left out: a tiny μ there cannot break a rising body.
    assert verdict(study(criticality=criticality(rising, head=0.0)), "C7") == HOLDS
    # Infeasible modules are left out, never ranked: three finite modules cannot decide.
    few = criticality([0.1, None, 1.0, None, 5.0, None])
    assert verdict(study(criticality=few), "C7") == INCONCLUSIVE
    assert verdict(study(criticality=criticality([0.1, None, None])), "C7") == UNMEASURED
    # The valleys of a P-T that learned nothing say nothing.
    assert verdict(study(runs=rows("PT-0"), criticality=criticality(rising)), "C7") == INCONCLUSIVE


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


def trajectory(*early: dict[str, Any], start: dict[str, Any] | None = None) -> dict[str, Any]:
    """Early points k = 0.1, 0.2, ... with these comparisons to P-T (each against P@0-T by
    ``start``), the control k = 0 first and P-T last."""
    points = [point(0.0, 0.5, False, runs=["P0T-0"])]
    points += [
        point(0.1 * (i + 1), 0.85, True, vs_final=t, vs_start=start) for i, t in enumerate(early)
    ]
    points.append(point(2.0, 0.9, False, reference="P-T", runs=["PT-0"]))
    return {
        "status": "ok",
        "metric_name": "accuracy",
        "final_k": 2.0,
        "threshold": None,
        "chance": 0.1,
        "points": points,
    }


WORSE = cmp(-1, -0.05, low=-0.07, high=-0.03, n=1000)
LEVEL = cmp(0, -0.002, low=-0.008, high=0.004, n=1000)
UNSURE = cmp(0, -0.01, low=-0.03, high=0.01, n=1000)
ABOVE_START = cmp(1, 0.3, low=0.25, high=0.35, n=1000)


def test_c8_paper_and_controlled() -> None:
    assert verdicts(study(trajectory=trajectory(WORSE, LEVEL, start=ABOVE_START)), "C8") == (
        HOLDS,
        HOLDS,
    )
    assert verdicts(study(trajectory=trajectory(WORSE, WORSE, start=ABOVE_START)), "C8") == (
        FAILS,
        FAILS,
    )
    undecided = study(trajectory=trajectory(WORSE, UNSURE, start=ABOVE_START))
    assert verdicts(undecided, "C8") == (INCONCLUSIVE, INCONCLUSIVE)
    assert "test examples" in cell(undecided, "C8").decide
    # As good as the final P, but no better than the untrained init: the controlled verdict
    # cannot credit pre-training, and the report says what that means.
    level_start = cmp(0, 0.001, low=-0.01, high=0.012, n=1000)
    found = finding(study(trajectory=trajectory(LEVEL, start=level_start)), "C8")
    assert (found.paper, found.controlled) == (HOLDS, INCONCLUSIVE)
    assert "untrained init" in found.explanation
    # A checkpoint late in pre-training is not "early": with none early, not measured.
    late = trajectory()
    late["points"].insert(1, point(1.9, 0.9, False, vs_final=LEVEL))
    assert verdict(study(trajectory=late), "C8") == UNMEASURED


def test_c8_is_decided_by_the_checkpoints_it_compares() -> None:
    """A P@0-T run at chance level is outside C8's comparison (an early checkpoint against the
    final P-T): the verdict stands. P at chance level makes C8 inconclusive, never holds."""
    entry = trajectory(WORSE, LEVEL, start=ABOVE_START)
    assert verdicts(study(runs=rows("P0T-0"), trajectory=entry), "C8") == (HOLDS, HOLDS)
    found = cell(study(runs=rows("P"), trajectory=entry), "C8")
    assert found.verdict == INCONCLUSIVE and found.voided_by == ("P",)
    assert found.controlled.verdict == INCONCLUSIVE
    # The final P-T at chance: there is no transfer to match.
    assert verdict(study(runs=rows("PT-0"), trajectory=entry), "C8") == INCONCLUSIVE


def test_c8_names_the_final_p_t_reference_point() -> None:
    """The final P-T metric shown is the point marked as P-T's, not a P@k-T run at the final k."""
    traj = trajectory(cmp(-1, -0.03, low=-0.05, high=-0.02))
    traj["points"].insert(2, point(2.0, 0.86, False))  # a P@k-T run at the final k
    assert final_pt_metric(traj) == 0.9  # the reference point, not the P@k-T run at k = 2
    c8 = finding(study(trajectory=traj), "C8")
    assert c8.paper == FAILS  # worse than P-T beyond the tolerance and the noise
    assert "final P-T 0.9" in c8.measured


# ---------------------------------------------------------------------------------------------
# over targets, P at chance level, the table


def test_a_verdict_over_targets() -> None:
    def finding_of(*verdicts: str) -> Finding:
        rows_ = [TargetResult(f"t{i}", v, "") for i, v in enumerate(verdicts)]
        return Finding("C0", "", "", "", rows_)

    assert finding_of(HOLDS, HOLDS).paper == HOLDS
    assert finding_of(HOLDS, INCONCLUSIVE).paper == INCONCLUSIVE
    assert finding_of(HOLDS, INCONCLUSIVE, FAILS).paper == FAILS
    assert finding_of(HOLDS, UNMEASURED).paper == HOLDS
    assert finding_of(UNMEASURED).paper == UNMEASURED
    # A claim without a control has one verdict, the paper's.
    assert finding_of(HOLDS).controlled is None and finding_of(HOLDS).verdict == HOLDS


def constructed_study(*at_chance: str) -> StudyData:
    """Every rule's analysis on one target, each decided: P-T pairs as alike as the untrained
    init's fine-tunes (as in the negative control) or clearly more alike."""
    return study(
        runs=rows(*at_chance),
        curves=curves(BETTER, [1, 1], [3, 4], control=control(BETTER, [1, 1], [3, 3])),
        mistakes=mistakes(0.05, 0.2, 0.19, 0.18),
        similarity=cka(0.8, 0.3, 0.4, 0.45),
        distance=distance(5.0, 17.0, 12.0, RISING),
        interpolation=barriers(0.002, 0.5, 0.3, 0.4),
        criticality=criticality([0.1, 0.3, 1.0, 2.0, 5.0, 9.0]),
        trajectory=trajectory(LEVEL, start=ABOVE_START),
    )


def test_p_at_chance_makes_every_controlled_verdict_inconclusive() -> None:
    """A P that learned nothing (the negative control) never makes a controlled verdict hold,
    nor a claim about what P's training transferred; the paper's comparisons of C1 and C3-C6
    stay as the paper made them."""
    held = constructed_study()
    found = {f.id: f for f in evaluate_findings(held)}
    assert all(found[c].controlled == HOLDS for c in ("C1", "C3", "C4", "C5", "C6", "C8"))
    dead = {f.id: f for f in evaluate_findings(constructed_study("P"))}
    for claim in ("C1", "C3", "C4", "C5", "C6", "C8"):
        assert dead[claim].controlled == INCONCLUSIVE, claim
        assert dead[claim].per_target[0].controlled.voided_by == ("P",)
    for claim in ("C1", "C3", "C4", "C5", "C6"):
        assert dead[claim].paper == HOLDS, claim
    assert dead["C7"].paper == dead["C8"].paper == INCONCLUSIVE


@pytest.mark.parametrize("control", [False, True])
def test_the_negative_control_banner_names_controlled_verdicts_that_hold(control: bool) -> None:
    data = study(
        config={"negative_control": control},
        curves=curves(BETTER, [1], [3], control=control_gap_holding()),
    )
    html = findings_table_html(evaluate_findings(data), data.negative_control)
    assert ("Negative control" in html) is control
    if control:
        assert "C1 hold(s) anyway" in html


def control_gap_holding() -> dict[str, Any]:
    return control(BETTER, [1], [3])


def test_the_grid_and_the_tables_show_both_columns() -> None:
    data = constructed_study()
    findings = evaluate_findings(data)
    grid = verdict_grid_html(findings, data.targets)
    assert grid.count("<tr>") == len(findings) + 2  # two header rows
    assert ">paper<" in grid and ">controlled<" in grid
    markdown = findings_markdown(findings)
    assert "| paper | controlled |" in markdown.splitlines()[0]
    c2 = next(line for line in markdown.splitlines() if line.startswith("| C2 |"))
    assert "| **—** |" in c2  # no control: a dash in the controlled column
    assert "| C1 | holds / holds |" in verdict_grid_markdown(findings, data.targets)
