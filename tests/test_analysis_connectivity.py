"""Quadratic Bezier curves between two models (beyond PAPER.md §3), and the alignment and
connectivity study steps on a hand-made study directory."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from transferscope import TransferscopeError, evaluate_curve, fit_curve, interpolate
from transferscope.config import StudyConfig
from transferscope.data import registry
from transferscope.data.base import TensorImageDataset
from transferscope.measures.connectivity import bezier_state
from transferscope.measures.interpolation import interpolated_state
from transferscope.models import build_model
from transferscope.study.analyze import run_analyses
from transferscope.training import checkpoints as ckpt
from transferscope.training.loaders import epoch_order, iterate
from transferscope.training.metrics import loss_fn

from fake_study import FakeData, fake_study, fake_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def _bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(24, 4),
    )  # fmt: skip


def _data(n: int, seed: int) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    y = (x[:, 0, :3].mean((1, 2)) > 0).long() + 2 * (x[:, 0, 3:].mean((1, 2)) > 0).long()
    return TensorImageDataset(x, y)


def test_curve_reproduces_its_end_points_exactly_and_starts_on_the_line() -> None:
    model = _bn_net(0)
    a = {k: v.clone() for k, v in _bn_net(1).state_dict().items()}
    b = {k: v.clone() for k, v in _bn_net(2).state_dict().items()}
    curve = fit_curve(model, a, b, _data(64, 0), epochs=2, batch_size=16, lr=0.1)
    assert set(curve.control) == {k for k, _ in model.named_parameters()}
    for t, end in ((0.0, a), (1.0, b)):
        state = curve.state(t)
        for k in a:
            assert torch.equal(state[k], end[k] if k in curve.control else a[k]), (t, k)
    assert len(curve.train_loss) == 2
    # Before training the control point is the midpoint, and the curve is the straight line:
    # (1-t)² a + 2t(1-t) (a+b)/2 + t² b = (1-t) a + t b.
    mid = {k: (a[k] + b[k]) / 2 for k in curve.control}
    for t in (0.1, 0.5, 0.77):
        line = interpolated_state(a, b, t)
        on_curve = bezier_state(a, mid, b, t)
        for k in mid:
            torch.testing.assert_close(on_curve[k], line[k], atol=1e-6, rtol=1e-6)
    with pytest.raises(TransferscopeError, match=r"in \[0, 1\]"):
        curve.state(1.5)


def test_untrained_curve_is_measured_exactly_like_the_line() -> None:
    model, train, test = _bn_net(0), _data(64, 0), _data(48, 1)
    a, b = _bn_net(1).state_dict(), _bn_net(2).state_dict()
    curve = fit_curve(model, a, b, train, epochs=0)
    common = {"train_data": train, "batch_size": 16, "recalibration_examples": 32}
    along = evaluate_curve(model, curve, test, 5, **common)
    line = interpolate(model, a, b, test, 5, **common)
    assert along.batchnorm_recalibrated and along.lambdas == line.lambdas
    assert along.metric == pytest.approx(line.metric, abs=1e-6)
    assert along.loss == pytest.approx(line.loss, rel=1e-5)
    with pytest.raises(TransferscopeError, match="pass train_data"):
        evaluate_curve(model, curve, test, 5)


def _train_digits(splits, seed: int, epochs: int = 5) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model("fixup-small", 10, 1, widths=[8, 16, 16])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    n = len(splits.train)
    for epoch in range(epochs):
        for x, y in iterate(splits.train, 32, order=epoch_order(n, seed, epoch)):
            opt.zero_grad()
            loss_fn("multiclass", model(x), y).backward()
            opt.step()
    return model.state_dict()


def test_trained_curve_between_two_rit_models_lowers_the_barrier() -> None:
    """Two RI-T models on the micro study's digits (8 px here): a barrier on the line, and a
    curve trained for 3 epochs that mostly goes around it (Garipov et al. 2018)."""
    splits = registry.load("digits", image_size=8)
    a, b = _train_digits(splits, 0), _train_digits(splits, 1)
    model = build_model("fixup-small", 10, 1, widths=[8, 16, 16])
    line = interpolate(model, a, b, splits.test, 7)
    curve = fit_curve(model, a, b, splits.train, epochs=3, lr=0.05, seed=0)
    along = evaluate_curve(model, curve, splits.test, 7)
    assert line.metric[0] > 0.8 and line.metric[-1] > 0.8  # two real solutions
    assert along.metric[0] == line.metric[0] and along.metric[-1] == line.metric[-1]
    assert line.barrier_metric > 0.1
    assert along.barrier_metric < line.barrier_metric / 2
    assert along.barrier_loss < line.barrier_loss


# ----------------------------------------------------------------------------------------------
# study steps


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    digits = {"name": "digits", "options": {"image_size": 8}}
    cfg = StudyConfig.model_validate(
        {
            "name": "fake",
            "source": {**digits, "id": "src"},
            "targets": [digits],
            "model": {"name": "fixup-small", "options": {"widths": [4, 4, 4]}},
            "pretrain": {"epochs": 1},
            "seeds": [0, 1],
            "analyses": {
                "alignment": {"num_points": 3},
                "connectivity": {"num_points": 3, "epochs": 1, "batch_size": 16},
            },
        }
    )
    store, plan = fake_study(tmp_path_factory.mktemp("fake") / "study", cfg)
    p_final = None
    for i, run in enumerate(plan.runs):
        store.prepare_run(run)
        from_p = run.spec.kind == "P-T"
        start = p_final if from_p else fake_weights(100 + i, None, 0.1)
        final = fake_weights(i, start, 0.02 if from_p else 0.3)
        ckpt.save_weights(store.weights_path(run.id, "final"), final)
        if run.spec.kind == "P":
            p_final = final
        store.mark_done(run.id, {"metric_name": "accuracy", "final_metric": 0.5})
    return store


def test_alignment_and_connectivity_steps(study) -> None:
    names = ["alignment", "connectivity"]
    paths = run_analyses(study, only=names, cache=FakeData())
    docs = {name: json.loads(paths[name].read_text()) for name in names}
    assert all(doc["status"] == "ok" for doc in docs.values()), docs

    aligned = docs["alignment"]["targets"]["digits"]
    assert aligned["metric_name"] == "accuracy"
    assert sorted(p["pair"] for p in aligned["pairs"]) == [
        "P-T/P-T",
        "P-T/RI-T",
        "P-T/RI-T",
        "RI-T/RI-T",
    ]
    for p in aligned["pairs"]:
        assert p["status"] == "ok", p
        stats = p["alignment"]
        assert stats["distance_after"] <= stats["distance_before"]
        for path in ("linear", "aligned"):
            assert p[path]["lambdas"] == [0.0, 0.5, 1.0] and p[path]["barrier_metric"] >= 0
        # Permuting B's units leaves B's function, so the end point B is measured the same.
        assert p["aligned"]["metric"][-1] == pytest.approx(p["linear"]["metric"][-1], abs=1e-6)
        assert p["aligned"]["metric"][0] == p["linear"]["metric"][0]

    connected = docs["connectivity"]["targets"]["digits"]
    assert sorted(p["pair"] for p in connected["pairs"]) == ["P-T/RI-T", "P-T/RI-T", "RI-T/RI-T"]
    for p in connected["pairs"]:
        assert p["status"] == "ok", p
        assert p["curve"]["metric"][0] == p["linear"]["metric"][0]
        assert p["curve"]["metric"][-1] == p["linear"]["metric"][-1]
        assert len(p["train_loss"]) == 1 and p["control_offset"] > 0 and "seconds" not in p

    # Unchanged options and runs: both are reused.
    messages: list[tuple[str, str]] = []
    run_analyses(study, only=names, cache=FakeData(), progress=lambda n, m: messages.append((n, m)))
    assert messages == [("alignment", "cached"), ("connectivity", "cached")]


@pytest.mark.parametrize("name", ["alignment", "connectivity"])
def test_a_document_missing_a_field_names_the_file_and_the_field(study, name) -> None:
    """A result file that lost a field is an error naming the file and the field on load."""
    from transferscope import registry
    from transferscope.unitkit.results import ResultMismatch, load_result

    unit = registry.get(name)
    path = run_analyses(study, only=[name], cache=FakeData())[name]
    loaded = load_result(unit.Result, path, unit.version)
    assert any(p.status == "ok" for p in loaded.targets["digits"].pairs)
    raw = json.loads(path.read_text())
    field = {"alignment": "aligned", "connectivity": "curve"}[name]
    del raw["targets"]["digits"]["pairs"][0][field]["barrier_metric"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ResultMismatch, match=rf"{name}\.json.*{field}\.barrier_metric"):
        load_result(unit.Result, path, unit.version)
