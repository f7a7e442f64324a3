"""What the analyses' estimates read off a model (analyses/cost.py) and count of CKA's work."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18

from transferscope.measures.cka import CKAAccumulator, multiply_adds
from transferscope.models import build_model
from transferscope.models.layout import layout
from transferscope.unitkit.cost import facts
from transferscope.unitkit.unit import Work

pytestmark = pytest.mark.usefixtures("one_thread")


def test_facts_of_a_model_match_its_forward_pass():
    model = build_model("fixup-small", 10, 1, widths=[4, 8, 16], stem_stride=2)
    seen = facts(model, (1, 28, 28))
    assert facts(model, (1, 28, 28)) is seen  # looked at once
    assert not seen.batchnorm and facts(resnet18(num_classes=3), (3, 32, 32)).batchnorm
    # Every output shape is the one the module gives on a real batch.
    shapes: dict[str, tuple[int, ...]] = {}

    def keep(name: str):
        def hook(module, inputs, output) -> None:
            shapes.setdefault(name, tuple(output.shape[1:]))

        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in model.named_modules() if n]
    model(torch.randn(3, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert {n: seen.outputs[n] for n in shapes} == shapes
    assert seen.features("layer3", pooled=False) == 16 * 4 * 4
    assert seen.features("layer3", pooled=True) == 16
    # Multiply-adds of the stem: 4 channels x 14 x 14 outputs, each over 1 x 3 x 3 inputs.
    stem = layout(model).stem
    assert dict(seen.macs)[stem] == 4 * 14 * 14 * 9
    # From the stem a probe computes everything; later modules less, the head least.
    parts = [stem, "layer1.0", "layer2.0", "layer3.0", layout(model).head]
    fractions = [seen.suffix_fraction(m) for m in parts]
    assert fractions[0] == 1.0 and fractions == sorted(fractions, reverse=True)
    assert 0 < fractions[-1] < 0.05
    assert seen.suffix_fraction("no.such.module") == 1.0


@pytest.mark.parametrize(("p", "q", "n"), [(8, 6, 500), (10, 10, 20), (300, 200, 40), (50, 40, 60)])
def test_cka_multiply_adds_follow_the_route_the_accumulator_takes(p, q, n):
    """Running sums cost n (p² + q² + pq) and so do rows ending as feature products; rows that
    end as Gram matrices (wide features, few examples) cost n² (p + q)."""
    acc = CKAAccumulator()
    for start in range(0, n, 16):
        b = min(16, n - start)
        acc.update(torch.randn(b, p), torch.randn(b, q))
    sums = n * (p * p + q * q + p * q)
    grams = n * n * (p + q)
    wide = acc.mode == "rows" and n * (p + q) < p * p + q * q + p * q
    assert multiply_adds(p, q, n) == (grams if wide else sums)
    assert multiply_adds(p, q, n, minibatch=True, batch=16) == n * 16 * (p + q)


def test_work_adds_scales_and_counts_a_shared_line_once():
    line = Work(forwards=100, models=2)
    a = Work(forwards=10, train=1, lines=(("l1", line), ("l2", line)))
    b = Work(multiply_adds=5, lines=(("l1", line),))
    both = a + b
    assert both.alone() == Work(forwards=210, train=1, multiply_adds=5, models=4)
    assert both.passes == 213
    measured: set = {"l2"}
    assert a.alone(measured) == Work(forwards=110, train=1, models=2) and measured == {"l1", "l2"}
    assert b.alone(measured) == Work(multiply_adds=5)  # l1 was the first analysis's
    assert (a * 2).alone() == a.alone() + Work(forwards=10, train=1)
