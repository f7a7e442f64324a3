"""A fake data cache for study-step tests: random 8x8 images, no real data is loaded."""

from __future__ import annotations

import torch

from transferscope.data.base import DataInfo, Splits, TensorImageDataset
from transferscope.models import build_model
from transferscope.study.executors import DataCache

INFO = DataInfo("digits", "multiclass", 10, (1, 8, 8), tuple(str(d) for d in range(10)))


class FakeData(DataCache):
    """Random 8x8 images for every data spec: the steps never load (or import) real data."""

    def get(self, spec):
        g = torch.Generator().manual_seed(0)
        images = torch.randn(40, 1, 8, 8, generator=g)
        labels = torch.randint(0, 10, (40,), generator=g)
        data = TensorImageDataset(images, labels)
        return Splits(info=INFO, train=data, test=data)


def fake_weights(seed: int, base: dict[str, torch.Tensor] | None, scale: float) -> dict:
    """A fixup-small (widths 4) state: ``base`` (or a fresh init) plus Gaussian noise of ``scale``."""
    torch.manual_seed(seed)
    state = build_model("fixup-small", 10, 1, widths=[4, 4, 4]).state_dict()
    start = base if base is not None else state
    return {k: start[k] + scale * torch.randn_like(v) for k, v in state.items()}
