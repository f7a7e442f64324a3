"""Common and uncommon mistakes of two models (PAPER.md §2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferscope import TransferscopeError, compare_mistakes


def test_hand_computed_multiclass_example():
    target = np.array([0, 1, 2, 0, 1, 2])
    a = np.array([0, 1, 0, 0, 2, 1])  # wrong at 2, 4, 5
    b = np.array([0, 2, 2, 0, 2, 0])  # wrong at 1, 4, 5
    result = compare_mistakes(a, b, target)
    assert result.task == "multiclass"
    assert result.counts == {
        "both_correct": 2,
        "only_a_wrong": 1,
        "only_b_wrong": 1,
        "both_wrong": 2,
        "uncommon": 2,
    }
    assert result.cells.both_correct.tolist() == [0, 3]
    assert result.cells.only_a_wrong.tolist() == [2]
    assert result.cells.only_b_wrong.tolist() == [1]
    assert result.cells.both_wrong.tolist() == [4, 5]
    assert result.fractions["both_wrong"] == pytest.approx(2 / 6)


def test_logits_are_argmaxed_and_counts_sum_to_n():
    g = torch.Generator().manual_seed(0)
    logits_a = torch.randn(100, 5, generator=g)
    logits_b = torch.randn(100, 5, generator=g)
    target = torch.randint(0, 5, (100,), generator=g)
    result = compare_mistakes(logits_a, logits_b, target)
    cells = ("both_correct", "only_a_wrong", "only_b_wrong", "both_wrong")
    assert sum(result.counts[c] for c in cells) == 100
    same = compare_mistakes(logits_a.argmax(1), logits_b.argmax(1), target)
    assert same.counts == result.counts
    d = result.to_dict(max_indices=3)
    assert all(len(v) <= 3 for v in d["indices"].values())
    assert d["n"] == 100


def test_multilabel_is_per_task_with_logit_threshold_zero():
    target = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    # logit >= 0 is sigmoid >= 0.5
    a = np.array([[2.0, -1.0], [0.0, 3.0], [-1.0, 1.0], [-2.0, -2.0]])  # wrong: (1,0), (2,0)
    b = np.array([[1, 1], [0, 1], [1, 0], [0, 0]], dtype=np.int64)  # wrong: (0,1), (2,1)
    result = compare_mistakes(a, b, target)
    assert result.task == "multilabel"
    assert len(result.per_task) == 2
    t0, t1 = result.per_task
    assert t0.only_a_wrong.tolist() == [1, 2] and t0.only_b_wrong.tolist() == []
    assert t1.only_b_wrong.tolist() == [0, 2] and t1.only_a_wrong.tolist() == []
    assert t0.both_correct.tolist() == [0, 3] and t1.both_correct.tolist() == [1, 3]
    for t in result.per_task:
        assert t.counts["both_correct"] + t.counts["uncommon"] + t.counts["both_wrong"] == 4
    assert result.counts["uncommon"] == 4 and result.cells.n == 8
    assert len(result.to_dict()["per_task"]) == 2


def test_shape_errors_are_clear():
    with pytest.raises(TransferscopeError, match="expected logits"):
        compare_mistakes(np.zeros((5, 3)), np.zeros((4, 3)), np.zeros(5, dtype=int))
    with pytest.raises(TransferscopeError, match="multi-label"):
        compare_mistakes(np.zeros((5, 3)), np.zeros((5, 2)), np.zeros((5, 3)))


def _document(tmp_path, pair: dict) -> tuple:
    """A mistakes.json holding one target with ``pair``, and the unit that reads it."""
    import json

    from transferscope import registry

    unit = registry.get("mistakes")
    doc = {
        "analysis": "mistakes",
        "version": unit.version,
        "status": "ok",
        "targets": {"t": {"status": "ok", "pairs": [pair]}},
        "max_indices_per_cell": 64,
    }
    path = tmp_path / "study" / "analyses" / "mistakes.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    return unit, path


def test_a_result_missing_a_field_fails_on_load_naming_the_file_and_field(tmp_path):
    from transferscope.analyses.mistakes import MistakePair
    from transferscope.unitkit.results import ResultMismatch, load_result

    result = compare_mistakes(np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([0, 1, 0]))
    start = {"pair": "P-T/RI-T", "runs": ["PT-0", "RIT-0"], "seeds": [0, 0]}
    # The model describes what the library writes.
    pair = MistakePair.model_validate({**start, **result.to_dict(64)})
    complete = pair.model_dump(mode="json", by_alias=True)
    unit, path = _document(tmp_path, complete)
    loaded = load_result(unit.Result, path, unit.version)
    assert loaded.targets["t"].pairs[0].fractions.uncommon == pytest.approx(1 / 3)
    del complete["fractions"]
    unit, path = _document(tmp_path / "b", complete)
    with pytest.raises(ResultMismatch, match=r"mistakes\.json does not match .*fractions"):
        load_result(unit.Result, path, unit.version)
