"""Linear interpolation and the performance barrier (PAPER.md §3)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from transferscope import TransferscopeError, interpolate
from transferscope.data.base import TensorImageDataset
from transferscope.measures.interpolation import barrier, recalibrate_batchnorm
from transferscope.training.metrics import evaluate

# Tiny models on a shared machine: extra OpenMP threads only wait for busy cores.
pytestmark = pytest.mark.usefixtures("one_thread")


# The same float32 loss computed in batches of another size: the convolution and linear kernels
# may sum their 9 and 24 terms in another order (the CPU's vector width decides), and the mean
# over 50 examples in another order too; float32 rounds each by 2^-24, so the loss may differ by
# about (9 + 4 + 24 + 50)·2^-24 = 5e-6 relative, not by 1e-6.
FLOAT32_LOSS = 1e-5


def _data(n: int, seed: int, labels: str = "multiclass") -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    if labels == "multiclass":
        y = (x[:, 0, :3].mean((1, 2)) > 0).long() + 2 * (x[:, 0, 3:].mean((1, 2)) > 0).long()
    else:
        y = torch.stack([x[:, 0, :3].mean((1, 2)) > 0, x[:, 0, 3:].mean((1, 2)) > 0], 1).float()
    return TensorImageDataset(x, y)


def _net(seed: int, bn: bool = False, outputs: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 6, 3)]
    if bn:
        layers.append(nn.BatchNorm2d(6))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, outputs)]
    return nn.Sequential(*layers)


def _trained(seed: int, bn: bool = False, data: TensorImageDataset | None = None) -> nn.Module:
    """A few SGD steps so the two endpoints are distinct, non-trivial solutions."""
    model = _net(seed, bn)
    data = data or _data(96, 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(data.images), data.targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_barrier_formula() -> None:
    lams = [0.0, 0.5, 1.0]
    assert barrier([0.8, 0.2, 0.6], lams) == pytest.approx(0.5)
    assert barrier([1.0, 3.0, 2.0], lams, higher_is_better=False) == pytest.approx(1.5)
    assert barrier([0.5, 0.9, 0.7], lams) == 0.0  # above the line: no barrier


def test_endpoints_and_self_barrier_without_batchnorm() -> None:
    test = _data(50, 1)
    a, b = _trained(0), _trained(1)
    res = interpolate(a, a.state_dict(), b.state_dict(), test, num_points=5, batch_size=16)
    assert not res.batchnorm_recalibrated
    assert res.lambdas == [0.0, 0.25, 0.5, 0.75, 1.0]
    for model, i in ((a, 0), (b, -1)):
        ev = evaluate(model, test, "multiclass")
        assert res.metric[i] == ev.metric
        assert res.loss[i] == pytest.approx(ev.loss, rel=FLOAT32_LOSS)
    same = interpolate(a, a.state_dict(), a.state_dict(), test, num_points=4)
    assert same.barrier_metric == 0.0 and same.barrier_loss == 0.0
    assert res.barrier_loss >= 0.0 and res.barrier_metric >= 0.0


def test_batchnorm_is_recalibrated_at_every_point() -> None:
    train, test = _data(96, 0), _data(50, 1)
    a, b = _trained(0, bn=True, data=train), _trained(1, bn=True, data=train)
    with pytest.raises(TransferscopeError, match="train_data"):
        interpolate(a, a.state_dict(), b.state_dict(), test)
    res = interpolate(
        a, a.state_dict(), b.state_dict(), test, num_points=3, train_data=train, batch_size=32
    )
    assert res.batchnorm_recalibrated
    # The endpoints are A and B with statistics recomputed the same way.
    for model, i in ((a, 0), (b, -1)):
        ref = recalibrate_batchnorm(copy.deepcopy(model), train, batch_size=32).eval()
        ev = evaluate(ref, test, "multiclass")
        assert res.metric[i] == ev.metric
        assert res.loss[i] == pytest.approx(ev.loss, rel=1e-5)
    same = interpolate(a, a.state_dict(), a.state_dict(), test, num_points=3, train_data=train)
    assert same.barrier_metric == 0.0 and same.barrier_loss == 0.0
    kept = interpolate(
        a, a.state_dict(), b.state_dict(), test, num_points=3, recalibrate_batchnorm=False
    )
    assert not kept.batchnorm_recalibrated
    assert kept.metric[0] == evaluate(a, test, "multiclass").metric


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_all_points_per_batch_equals_one_pass_per_point(bn: bool, task: str) -> None:
    train, test = _data(64, 0, task), _data(40, 1, task)
    outputs = 4 if task == "multiclass" else 2
    a, b = _net(0, bn, outputs), _net(1, bn, outputs)
    kwargs = dict(task=task, train_data=train, batch_size=16, recalibration_examples=48)
    fast = interpolate(a, a.state_dict(), b.state_dict(), test, 6, **kwargs)
    slow = interpolate(a, a.state_dict(), b.state_dict(), test, 6, batched=False, **kwargs)
    assert fast.batchnorm_recalibrated == bn
    assert fast.metric == pytest.approx(slow.metric, abs=1e-6)
    assert fast.loss == pytest.approx(slow.loss, rel=1e-5)
    assert fast.barrier_metric == pytest.approx(slow.barrier_metric, abs=1e-6)
    if bn and task == "multiclass":
        cl = interpolate(a, a.state_dict(), b.state_dict(), test, 6, channels_last=True, **kwargs)
        assert cl.loss == pytest.approx(fast.loss, rel=1e-4)


def test_mismatched_architectures_are_named() -> None:
    a, b = _net(0), _net(1, outputs=3)
    with pytest.raises(TransferscopeError, match=r"shapes differ: 4\.bias \(4,\) vs \(3,\)"):
        interpolate(a, a.state_dict(), b.state_dict(), _data(8, 0))
    c = _net(2, bn=True)
    with pytest.raises(
        TransferscopeError, match=r"only in A: 4\.bias.*only in B: .*1\.running_mean"
    ):
        interpolate(a, a.state_dict(), c.state_dict(), _data(8, 0))


def test_a_document_missing_a_field_names_the_file_and_the_field(tmp_path) -> None:
    import json

    from transferscope.analyses.interpolation import Interpolation, InterpolationEntry
    from transferscope.unitkit.results import ResultMismatch, load_result

    line = {
        "pair": "P-T/P-T", "k": None, "runs": ["a", "b"], "checkpoints": ["final", "final"],
        "status": "ok",
        "metric_name": "accuracy", "lambdas": [0.0, 1.0], "metric": [0.9, float("nan")],
        "loss": [0.3, 0.3], "barrier_metric": float("nan"), "barrier_loss": 0.0,
        "batchnorm_recalibrated": True,
    }  # fmt: skip
    entry = InterpolationEntry(metric_name="accuracy", examples=10, pairs=[line])
    doc = Interpolation.Result(targets={"t": entry}, version=Interpolation.version)
    path = tmp_path / "analyses" / "interpolation.json"
    path.parent.mkdir()
    path.write_text(doc.model_dump_json(by_alias=True))
    loaded = load_result(Interpolation.Result, path, Interpolation.version)
    assert loaded.targets["t"].pairs[0].status == "ok"  # NaN survives the JSON
    raw = json.loads(path.read_text())
    del raw["targets"]["t"]["pairs"][0]["barrier_loss"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ResultMismatch, match=r"interpolation\.json.*barrier_loss"):
        load_result(Interpolation.Result, path, Interpolation.version)
