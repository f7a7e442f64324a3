"""Linear CKA, its streamed and minibatch forms, and per-layer feature similarity (PAPER.md §2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferscope import TransferscopeError
from transferscope.measures.sampling import stratified_indices
from transferscope.measures.similarity import (
    MINIBATCH,
    CKAAccumulator,
    exact_state_bytes,
    feature_similarity,
    hsic_unbiased,
    layer_similarity,
    linear_cka,
    linear_cka_gram,
)
from transferscope.models import build_model


def _pair(n: int = 300, p: int = 20, q: int = 12, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g, dtype=torch.float64) + 3.0  # non-zero means: centring
    y = x @ torch.randn(p, q, generator=g, dtype=torch.float64)
    y = y + 2.0 * torch.randn(n, q, generator=g, dtype=torch.float64)
    return x, y


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def test_cka_of_a_representation_with_itself_is_one():
    x, _ = _pair()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka_gram(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    x, y = _pair()
    base = linear_cka(x, y)
    assert 0.05 < base < 0.95  # a non-trivial value, so invariance means something
    assert linear_cka(x @ _orthogonal(20, 1), y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, y @ _orthogonal(12, 2)) == pytest.approx(base, abs=1e-10)
    assert linear_cka(7.5 * x, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, 0.01 * y) == pytest.approx(base, abs=1e-10)


def test_feature_space_equals_gram_space_on_random_data():
    for seed, (n, p, q) in enumerate([(50, 5, 80), (200, 30, 30), (40, 100, 7)]):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(n, p, generator=g)  # float32 in: both compute in float64
        y = torch.rand(n, q, generator=g) + x[:, :1]
        assert linear_cka(x, y) == pytest.approx(linear_cka_gram(x, y), abs=1e-6)


def test_conv_shaped_inputs_are_flattened():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 2, 3, 3, generator=g)
    y = torch.randn(30, 4, 2, 2, generator=g)
    assert linear_cka(x, y) == pytest.approx(linear_cka(x.reshape(30, -1), y.reshape(30, -1)))


@pytest.mark.parametrize("strategy", ["auto", "sums", "rows"])
def test_streamed_equals_one_shot(strategy):
    x, y = _pair(n=500)
    acc = CKAAccumulator(strategy=strategy)
    for start in range(0, 500, 37):  # uneven batches
        acc.update(x[start : start + 37], y[start : start + 37])
    assert acc.n == 500
    assert acc.compute() == pytest.approx(linear_cka(x, y), abs=1e-10)
    if strategy == "auto":
        assert acc.mode == "sums"  # 500 x 32 rows outweigh 20x20 + 12x12 + 20x12 sums


def test_streamed_wide_features_stay_rows_and_match_gram():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(60, 900, generator=g)
    y = torch.randn(60, 400, generator=g) + x[:, :400]
    acc = CKAAccumulator()
    for start in range(0, 60, 16):
        acc.update(x[start : start + 16], y[start : start + 16])
    assert acc.mode == "rows"  # 60 rows are far smaller than 900 x 900 sums
    assert acc.compute() == pytest.approx(linear_cka_gram(x, y), abs=1e-6)


def test_accumulator_errors():
    acc = CKAAccumulator()
    with pytest.raises(TransferscopeError, match="before any update"):
        acc.compute()
    acc.update(torch.randn(8, 3), torch.randn(8, 2))
    with pytest.raises(TransferscopeError, match="feature sizes"):
        acc.update(torch.randn(8, 4), torch.randn(8, 2))
    with pytest.raises(TransferscopeError, match="same examples"):
        acc.update(torch.randn(8, 3), torch.randn(7, 2))


def test_hsic_unbiased_matches_the_formula_with_matrices():
    x, y = _pair(n=40, p=6, q=4, seed=2)
    k, l = x @ x.T, y @ y.T  # noqa: E741
    kt, lt = k.clone().fill_diagonal_(0), l.clone().fill_diagonal_(0)
    one = torch.ones(40, 1, dtype=torch.float64)
    n = 40
    expected = (
        torch.trace(kt @ lt)
        + (one.T @ kt @ one) * (one.T @ lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one.T @ kt @ lt @ one)
    ) / (n * (n - 3))
    assert float(hsic_unbiased(k, l)) == pytest.approx(float(expected), rel=1e-10)
    # one batch of minibatch CKA is the full-data unbiased CKA
    acc = CKAAccumulator(unbiased_minibatch=True)
    acc.update(x, y)
    by_hand = hsic_unbiased(k, l) / torch.sqrt(hsic_unbiased(k, k) * hsic_unbiased(l, l))
    assert acc.compute() == pytest.approx(float(by_hand), abs=1e-12)


def test_exact_state_over_max_bytes_is_a_clear_error():
    acc = CKAAccumulator(max_bytes=10_000)
    acc.update(torch.randn(4, 100), torch.randn(4, 100))  # 3,200 bytes of rows
    with pytest.raises(TransferscopeError, match="pooled"):
        acc.update(torch.randn(20, 100), torch.randn(20, 100))
    with pytest.raises(TransferscopeError, match="minibatch"):
        CKAAccumulator(strategy="sums", max_bytes=1000).update(
            torch.randn(4, 50), torch.randn(4, 5)
        )


def test_minibatch_cka_rejects_batches_smaller_than_four():
    acc = CKAAccumulator(unbiased_minibatch=True)
    with pytest.raises(TransferscopeError, match="at least 4"):
        acc.update(torch.randn(3, 5), torch.randn(3, 5))


def test_minibatch_cka_approaches_the_full_data_unbiased_value():
    x, y = _pair(n=2048, p=16, q=16, seed=5)
    full = CKAAccumulator(unbiased_minibatch=True)
    full.update(x, y)  # one batch of everything: the full-data unbiased CKA
    target = full.compute()

    def error(batch: int) -> float:
        """Mean |minibatch - full| over 3 random orders of the examples (one order is noisy)."""
        total = 0.0
        for seed in range(3):
            order = torch.randperm(2048, generator=torch.Generator().manual_seed(seed))
            xs, ys = x[order], y[order]
            acc = CKAAccumulator(unbiased_minibatch=True)
            for start in range(0, 2048, batch):
                acc.update(xs[start : start + batch], ys[start : start + batch])
            total += abs(acc.compute() - target)
        return total / 3

    errors = [error(b) for b in (4, 64, 1024)]
    assert errors[0] > 2 * errors[1] > 4 * errors[2]
    assert errors[2] < 0.005


def _models() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    a = build_model("fixup-small", num_outputs=3, in_channels=1, widths=[4, 4, 4])
    b = build_model("fixup-small", num_outputs=3, in_channels=1, widths=[4, 4, 4])
    # Fixup zero-initialises the last conv of each branch: perturb so blocks are not identity.
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return a, b


def test_feature_similarity_default_layers_and_self_similarity():
    a, b = _models()
    a.train()
    data = [torch.randn(10, 1, 8, 8) for _ in range(3)]
    same = feature_similarity(a, a, data)
    assert list(same) == ["conv1", "layer1", "layer2", "layer3"]
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in same.values())
    assert a.training  # mode restored
    other = feature_similarity(a, b, [(x, None) for x in data], pooled=True, max_examples=25)
    assert all(0.0 <= v <= 1.0 for v in other.values())
    # max_examples truncates: the first 25 examples, pooled, by hand at conv1
    x = torch.cat(data)[:25]
    feats = {}
    hooks = [
        m.conv1.register_forward_hook(lambda mod, i, o, k=k: feats.__setitem__(k, o))
        for k, m in (("a", a), ("b", b))
    ]
    with torch.no_grad():
        a.eval()(x)
        b.eval()(x)
    for h in hooks:
        h.remove()
    expected = linear_cka(feats["a"].mean(dim=(2, 3)), feats["b"].mean(dim=(2, 3)))
    assert other["conv1"] == pytest.approx(expected, abs=1e-9)


def test_feature_similarity_minibatch_and_module_paths():
    a, b = _models()
    data = [torch.randn(16, 1, 8, 8) for _ in range(2)] + [torch.randn(2, 1, 8, 8)]
    out = feature_similarity(a, b, data, layers=["layer1.0", "layer2"], unbiased_minibatch=True)
    assert set(out) == {"layer1.0", "layer2"}


def test_unknown_layer_lists_valid_names():
    a, b = _models()
    with pytest.raises(TransferscopeError) as info:
        feature_similarity(a, b, [torch.randn(4, 1, 8, 8)], layers=["layr2"])
    message = str(info.value)
    assert "did you mean 'layer2'" in message
    assert "conv1, layer1, layer2, layer3" in message


def test_auto_estimator_switches_layers_too_wide_for_exact_cka():
    """Per layer: exact while its state fits the cap, minibatch (unbiased HSIC) beyond it."""
    a, b = _models()
    data = [torch.randn(16, 1, 8, 8) for _ in range(4)]
    # conv1 and layer1 keep 4 x 8 x 8 = 256 features per example, layer3 4 x 2 x 2 = 16: with
    # 64 examples, exact conv1 needs min(rows 64 x 512 x 4 B, sums) = 128 KiB.
    cap = 64 * 1024
    out = layer_similarity(a, b, data, max_examples=64, max_exact_bytes=cap)
    assert out["conv1"].estimator == MINIBATCH and out["layer3"].estimator == "exact"
    assert exact_state_bytes(256, 256, 64) > cap >= exact_state_bytes(16, 16, 64)
    exact = feature_similarity(a, b, data, max_examples=64)
    minibatch = feature_similarity(a, b, data, max_examples=64, unbiased_minibatch=True)
    assert out["layer3"].cka == pytest.approx(exact["layer3"], abs=1e-12)
    assert out["conv1"].cka == pytest.approx(minibatch["conv1"], abs=1e-12)
    assert out["conv1"].features == (256, 256) and out["conv1"].examples == 64
    # The paper presets' widest layer (ResNet-50 conv1 at 224 px) over 2,000 examples: minibatch.
    assert exact_state_bytes(802_816, 802_816, 2000) > 1 << 30


def test_one_failing_layer_is_reported_and_the_others_computed():
    a, b = _models()
    data = [torch.randn(16, 1, 8, 8) for _ in range(2)]
    # Exact everywhere, with a cap that only the narrowest layer fits under.
    out = layer_similarity(a, b, data, estimator="exact", max_exact_bytes=20_000)
    assert out["conv1"].cka is None and "max_bytes" in (out["conv1"].error or "")
    assert out["layer3"].cka is not None and out["layer3"].error is None
    with pytest.raises(TransferscopeError, match="max_bytes"):
        layer_similarity(a, b, data, estimator="exact", max_exact_bytes=20_000, strict=True)


def test_stratified_subset_keeps_class_shares_and_is_seeded():
    targets = np.repeat(np.arange(10), [100] * 5 + [20] * 5)  # class-sorted, unbalanced
    idx, stratified = stratified_indices(targets, len(targets), 120, seed=3)
    assert stratified and len(idx) == 120 and idx == sorted(set(idx))
    counts = np.bincount(targets[idx], minlength=10)
    assert counts[:5].tolist() == [20] * 5 and counts[5:].tolist() == [4] * 5
    assert stratified_indices(targets, len(targets), 120, seed=3)[0] == idx
    assert stratified_indices(targets, len(targets), 120, seed=4)[0] != idx
    # Not the first N of a sorted list: every class is there.
    assert set(targets[idx]) == set(range(10))
    # Multi-label targets stratify by label combination; no targets: a plain random draw.
    multi = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 25)
    idx, _ = stratified_indices(multi, 100, 40, seed=0)
    assert len({tuple(r) for r in multi[idx]}) == 4
    plain, stratified = stratified_indices(None, 50, 10, seed=0)
    assert len(plain) == 10 and not stratified
    assert stratified_indices(targets, len(targets), None)[0] == list(range(len(targets)))


def test_a_result_missing_a_field_fails_on_load_naming_the_file_and_field(tmp_path):
    import json

    from transferscope import registry
    from transferscope.analyses.similarity import SimilarityPair
    from transferscope.unitkit.results import ResultMismatch, load_result

    a, b = _models()
    layers = layer_similarity(a, b, [torch.randn(8, 1, 8, 8)])
    # The model describes what the library writes.
    pair = SimilarityPair(
        pair="P-T/P-T",
        runs=["PT-0", "PT-1"],
        seeds=[0, 1],
        cka={n: r.cka for n, r in layers.items() if r.cka is not None},
        layers={n: r.to_dict() for n, r in layers.items()},
        examples=8,
    )
    unit = registry.get("similarity")
    entry = {
        "status": "ok",
        "pairs": [pair.model_dump(mode="json", by_alias=True)],
        "subset": {"examples": 8, "of": 8, "seed": 0, "stratified": False},
    }
    doc = {"analysis": "similarity", "version": unit.version, "targets": {"t": entry}}
    path = tmp_path / "analyses" / "similarity.json"
    path.parent.mkdir()
    path.write_text(json.dumps(doc))
    assert list(load_result(unit.Result, path, unit.version).targets["t"].pairs[0].cka) == list(
        layers
    )
    del entry["subset"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultMismatch, match=r"similarity\.json does not match .*subset"):
        load_result(unit.Result, path, unit.version)
