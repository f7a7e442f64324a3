"""Parameter distance, whole network and per module (PAPER.md §2)."""

from __future__ import annotations

import math

import pytest
import torch

from transferscope import TransferscopeError, parameter_distance
from transferscope.measures.distance import layout_modules, module_of
from transferscope.models import build_model, transfer


def _model(seed: int, outputs: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = build_model("fixup-small", num_outputs=outputs, in_channels=1, widths=[4, 4, 4])
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))  # Fixup starts many tensors at zero
    return m


def test_zero_for_identical_and_symmetric():
    a, b = _model(0), _model(1)
    assert parameter_distance(a.state_dict(), a.state_dict()).total == 0.0
    ab = parameter_distance(a.state_dict(), b.state_dict())
    ba = parameter_distance(b.state_dict(), a.state_dict())
    assert ab.total == pytest.approx(ba.total, rel=1e-12)
    assert ab.per_module == pytest.approx(ba.per_module, rel=1e-12)


def test_equals_norm_of_flattened_difference_and_modules_add_up():
    a, b = _model(0), _model(1)
    sa, sb = a.state_dict(), b.state_dict()
    flat = torch.cat([(sa[k].double() - sb[k].double()).reshape(-1) for k in sa])
    result = parameter_distance(sa, sb)
    assert result.total == pytest.approx(float(torch.linalg.norm(flat)), rel=1e-12)
    assert result.elements == flat.numel()
    squares = sum(v**2 for v in result.per_module.values())
    assert squares == pytest.approx(result.total**2, rel=1e-12)
    # state-dict order; Fixup's top-level scalars are modules of their own
    assert list(result.per_module) == [
        "bias1",
        "bias2",
        "conv1",
        "layer1.0",
        "layer2.0",
        "layer3.0",
        "fc",
    ]
    # modules passed as nn.Module: the same parameters
    assert parameter_distance(a, b).total == pytest.approx(result.total, rel=1e-12)
    # grouping by the model's layout puts every block under its own name
    by_layout = parameter_distance(sa, sb, modules=layout_modules(a))
    assert set(by_layout.per_module) >= {"conv1", "layer1.0", "fc"}
    assert by_layout.total == pytest.approx(result.total, rel=1e-12)


def test_head_of_another_shape_is_excluded_and_reported():
    p = _model(0, outputs=10)
    pt = transfer(p, num_outputs=3, seed=0)
    result = parameter_distance(p.state_dict(), pt.state_dict())
    assert set(result.excluded) == {"fc.weight", "fc.bias"}
    assert "shapes differ" in result.excluded["fc.weight"]
    assert result.total == 0.0  # P-T is P with a new head
    same_shape = parameter_distance(_model(0), _model(1), exclude_head=True)
    assert "fc" not in same_shape.per_module and "fc.weight" in same_shape.excluded


def test_mismatches_are_errors_listing_keys():
    a = _model(0).state_dict()
    b = dict(a)
    del b["layer1.0.conv1.weight"]
    b["extra.weight"] = torch.zeros(2)
    with pytest.raises(TransferscopeError) as info:
        parameter_distance(a, b)
    assert "layer1.0.conv1.weight" in str(info.value) and "extra.weight" in str(info.value)
    c = dict(a)
    c["conv1.weight"] = torch.zeros(5, 1, 3, 3)
    with pytest.raises(TransferscopeError, match=r"conv1\.weight"):
        parameter_distance(a, c)


def test_only_floating_point_and_no_batchnorm_statistics():
    a = {"bn.weight": torch.ones(3), "bn.running_mean": torch.zeros(3), "bn.n": torch.tensor(4)}
    b = {"bn.weight": torch.zeros(3), "bn.running_mean": torch.ones(3), "bn.n": torch.tensor(9)}
    result = parameter_distance(a, b)
    assert result.total == pytest.approx(math.sqrt(3))
    assert set(result.excluded) == {"bn.running_mean", "bn.n"}


def test_module_of_default_grouping():
    assert module_of("layer1.0.conv2.weight") == "layer1.0"
    assert module_of("conv1.weight") == "conv1"
    assert module_of("bias1") == "bias1"
    assert module_of("layer1.0.conv2.weight", ["layer1", "layer1.0.conv2"]) == "layer1.0.conv2"


def test_a_result_missing_a_field_fails_on_load_naming_the_file_and_field(tmp_path):
    import json

    from transferscope import registry
    from transferscope.analyses.distance import DistancePair
    from transferscope.unitkit.results import ResultMismatch, load_result

    result = parameter_distance(_model(0).state_dict(), _model(1).state_dict())
    start = {"pair": "P@k-T/P-T", "runs": ["PkT-0", "PT-0"], "seeds": [0, 0], "k": 0.5}
    # The model describes what the library writes.
    pair = DistancePair.model_validate({**start, "checkpoints": ["final"] * 2, **result.to_dict()})
    unit = registry.get("distance")
    entry = {"status": "ok", "pairs": [pair.model_dump(mode="json", by_alias=True)]}
    doc = {"analysis": "distance", "version": unit.version, "targets": {"t": entry}}
    path = tmp_path / "analyses" / "distance.json"
    path.parent.mkdir()
    path.write_text(json.dumps(doc))
    loaded = load_result(unit.Result, path, unit.version).targets["t"].pairs[0]
    assert loaded.k == 0.5 and loaded.total == pytest.approx(result.total)
    del entry["pairs"][0]["total"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultMismatch, match=r"distance\.json does not match .*total"):
        load_result(unit.Result, path, unit.version)
