"""A fake data cache for study-step tests: random 8x8 images, no real data is loaded."""

from __future__ import annotations

import torch

from transferscope.data.base import DataInfo, Splits, TensorImageDataset
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
