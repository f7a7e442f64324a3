"""Replaying the modules before the one whose weights change: exact, and only when it is safe."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from transferscope.measures.replay import PrefixReplay
from transferscope.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def net():
    torch.manual_seed(0)
    model = build_model("fixup-small", 4, 1, widths=[4, 8, 8]).eval()
    for p in model.parameters():  # Fixup starts with zero branches: give every layer weights
        p.data.normal_(0, 0.3)
    return model, torch.randn(10, 1, 12, 12)


def _convolutions(conv: nn.Conv2d) -> list[int]:
    """A counter of the convolutions ``conv`` computes (a replayed call computes none)."""
    count, compute = [0], conv._conv_forward

    def counted(*args: object) -> torch.Tensor:
        count[0] += 1
        return compute(*args)

    conv._conv_forward = counted
    return count


@pytest.mark.parametrize("varying", ["conv1", "layer2.0", "layer3.0", "fc"])
def test_replayed_forwards_equal_full_forwards_and_skip_the_modules_before(net, varying):
    model, x = net
    final = dict(model.state_dict())
    replay = PrefixReplay(model, varying)
    reference = replay.record("batch", lambda: functional_call(model, final, (x,)))
    assert torch.equal(reference, model(x))
    stem_calls = _convolutions(model.conv1)
    for scale in (0.0, 0.5, 3.0):
        moved = {
            k: v * scale if k.startswith(varying + ".") and v.is_floating_point() else v
            for k, v in final.items()
        }
        full = functional_call(model, moved, (x,))
        with replay.replay("batch"):
            fast = functional_call(model, moved, (x,))
        assert torch.equal(fast, full)
    # conv1 is computed by the three full forwards; replayed inside when it runs before.
    assert stem_calls[0] == (6 if varying == "conv1" else 3)
    assert replay.active == (varying != "conv1")
    assert "layer1" in replay.modules if varying in ("layer2.0", "fc") else True


class _InPlace(nn.Module):
    """A network whose second stage writes into the first stage's output."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 3)
        self.second = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        h.mul_(2.0)  # in place: a replayed tensor would be changed on every forward
        return self.second(F.relu(h))


def test_an_in_place_write_into_a_replayed_output_turns_replay_off():
    torch.manual_seed(0)
    model, x = _InPlace().eval(), torch.randn(4, 3)
    replay = PrefixReplay(model, "second")
    with torch.no_grad():
        reference = replay.record(0, lambda: model(x))
        assert not replay.active
        with replay.replay(0):
            assert torch.equal(model(x), reference)


def test_outputs_beyond_the_memory_budget_are_not_kept(net):
    model, x = net
    replay = PrefixReplay(model, "fc", max_bytes=16)
    replay.record(0, lambda: model(x))
    assert not replay.active and not replay.outputs
    with replay.replay(0):
        assert torch.equal(model(x), replay.record(1, lambda: model(x)))
