"""BatchNorm running statistics recomputed for weights that were never trained as they are (Neyshabur et al. 2020, §3.3).

The running statistics of an interpolated network (or of one with a module rewound or moved)
describe no model, so they are recomputed on a training subset: statistics reset (mean 0, var 1,
count 0), momentum None (a cumulative average over batches), forward passes in train mode under
``no_grad``. :func:`recalibrate_batchnorm` does it in place on a model; :func:`recalibrated_statistics`
for a state dict swapped in with ``functional_call`` (the model's own tensors untouched), as
module criticality does at each α; :func:`recalibration_plan` decides whether a path needs it.
:func:`bn_buffers` lists the state keys involved and :func:`train_subset` fixes the subset.
Used by :mod:`transferscope.measures.interpolation`, :mod:`transferscope.measures.connectivity`
and :mod:`transferscope.measures.criticality`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import Dataset

from transferscope.errors import TransferscopeError
from transferscope.training.loaders import BatchTransform, epoch_order, iterate, seeded

RECALIBRATION_EXAMPLES = 2000


def has_running_stats(model: nn.Module) -> bool:
    """Whether ``model`` has BatchNorm layers that keep running statistics.

    Example:
        >>> from torch import nn
        >>> from transferscope.measures.batchnorm import has_running_stats
        >>> has_running_stats(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)))
        True
        >>> has_running_stats(nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3)))
        False
        >>> has_running_stats(nn.BatchNorm1d(3, track_running_stats=False))
        False
    """
    return any(isinstance(m, _BatchNorm) and m.track_running_stats for m in model.modules())


def bn_buffers(model: nn.Module) -> list[str]:
    """State keys of the running statistics of every BatchNorm layer (mean, var, count).

    Example:
        >>> from torch import nn
        >>> from transferscope.measures.batchnorm import bn_buffers
        >>> bn_buffers(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)))
        ['1.running_mean', '1.running_var', '1.num_batches_tracked']
        >>> bn_buffers(nn.Linear(2, 3))
        []
    """
    out = []
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            prefix = f"{name}." if name else ""
            out += [prefix + b for b in ("running_mean", "running_var", "num_batches_tracked")]
    return out


class CumulativeBatchNorm:
    """Context: every BatchNorm of ``model`` with momentum None (a cumulative average).

    Example:
        >>> from torch import nn
        >>> from transferscope.measures.batchnorm import CumulativeBatchNorm
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
        >>> with CumulativeBatchNorm(net):
        ...     print(net[1].momentum)
        None
        >>> net[1].momentum  # restored on exit
        0.1
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]

    def __enter__(self) -> None:
        self.saved = [m.momentum for m in self.layers]
        for m in self.layers:
            m.momentum = None

    def __exit__(self, *exc: object) -> None:
        for m, momentum in zip(self.layers, self.saved, strict=True):
            m.momentum = momentum


def reset_stats(state: dict[str, Tensor], keys: list[str]) -> None:
    """reset_running_stats on a state dict: mean 0, var 1, count 0 (fresh tensors).

    Example:
        >>> import torch
        >>> from transferscope.measures.batchnorm import reset_stats
        >>> state = {
        ...     "bn.running_mean": torch.tensor([0.5, -1.0]),
        ...     "bn.running_var": torch.tensor([2.0, 3.0]),
        ...     "bn.num_batches_tracked": torch.tensor(7),
        ... }
        >>> reset_stats(state, list(state))
        >>> [value.tolist() for value in state.values()]
        [[0.0, 0.0], [1.0, 1.0], 0]
    """
    for k in keys:
        if k.endswith("running_mean") or k.endswith("num_batches_tracked"):
            state[k] = torch.zeros_like(state[k])
        else:
            state[k] = torch.ones_like(state[k])


def train_subset(data: Dataset, max_examples: int | None, seed: int = 0) -> torch.Tensor | None:
    """A fixed random subset order (training data is often sorted by class).

    Example:
        >>> import torch
        >>> from transferscope.measures.batchnorm import train_subset
        >>> data = list(range(10))  # anything with a length
        >>> order = train_subset(data, 4)
        >>> len(order), len(set(order.tolist())), all(0 <= i < 10 for i in order.tolist())
        (4, 4, True)
        >>> torch.equal(order, train_subset(data, 4))  # seeded: the same subset every time
        True
        >>> train_subset(data, None) is None  # every example, in order
        True
    """
    n = len(data)  # type: ignore[arg-type]
    if max_examples is None or max_examples >= n:
        return None
    return epoch_order(n, seed, 0)[:max_examples]


def recalibrate_batchnorm(
    model: nn.Module,
    data: Dataset,
    *,
    batch_size: int = 256,
    max_examples: int | None = RECALIBRATION_EXAMPLES,
    device: torch.device | str = "cpu",
    transform: BatchTransform | None = None,
) -> nn.Module:
    """Recompute ``model``'s BatchNorm running statistics on ``data`` in place (Neyshabur et al. 2020, §3.3).

    Statistics are reset, then averaged cumulatively (momentum None) over train-mode forward passes
    under ``no_grad`` on at most ``max_examples`` examples (a fixed random subset). The model's
    mode and momenta are restored. Returns the model.

    Example:
        >>> import torch
        >>> from transferscope.data.base import TensorImageDataset
        >>> from transferscope.measures.batchnorm import recalibrate_batchnorm
        >>> _ = torch.manual_seed(0)
        >>> norm = torch.nn.BatchNorm1d(3)
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), norm).eval()
        >>> data = TensorImageDataset(torch.randn(8, 1, 2, 2), torch.zeros(8, dtype=torch.long))
        >>> _ = recalibrate_batchnorm(net, data, batch_size=4)
        >>> features = net[:2](data.images)  # the inputs of the BatchNorm
        >>> torch.allclose(norm.running_mean, features.mean(dim=0))  # mean over 2 batches
        True
        >>> int(norm.num_batches_tracked), net.training  # the mode is restored
        (2, False)
    """
    was_training = model.training
    model.train()
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            m.reset_running_stats()
    order = train_subset(data, max_examples)
    # Train mode: whatever the model draws (dropout) comes from a fixed seed, as the augmentation
    # of a streamed training split does (iterate's default seeds).
    with torch.no_grad(), CumulativeBatchNorm(model), seeded(0):
        for x, _ in iterate(data, batch_size, order=order, device=device, transform=transform):
            model(x)
    model.train(was_training)
    return model


@torch.no_grad()
def recalibrated_statistics(
    model: nn.Module,
    state: Mapping[str, Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    bn_keys: list[str],
) -> dict[str, Tensor]:
    """BatchNorm running statistics recomputed for ``state`` on ``batches`` (Neyshabur et al. 2020, §3.3).

    The statistics ``bn_keys`` are reset and averaged cumulatively over train-mode forward
    passes of ``model`` with ``state`` swapped in (``functional_call``; the model's own tensors
    are not touched). Returns the fresh statistics only: merge them into ``state`` to evaluate
    the model as the interpolation does at each λ. Used by module criticality to recalibrate at
    each α of a module's interpolation.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from transferscope.measures.batchnorm import bn_buffers, recalibrated_statistics
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
        >>> x = torch.randn(8, 4)
        >>> stats = recalibrated_statistics(net, net.state_dict(), [(x, None)], bn_buffers(net))
        >>> sorted(stats)
        ['1.num_batches_tracked', '1.running_mean', '1.running_var']
        >>> torch.allclose(stats["1.running_mean"], net[0](x).mean(dim=0))
        True
        >>> net[1].running_mean.tolist()  # the model's own statistics are untouched
        [0.0, 0.0, 0.0]
    """
    stats = {key: state[key] for key in bn_keys}
    reset_stats(stats, bn_keys)
    was_training = model.training
    model.train()
    with CumulativeBatchNorm(model), seeded(0):
        for x, _ in batches:
            functional_call(model, {**state, **stats}, (x,))
    model.train(was_training)
    return stats


def recalibration_plan(
    model: nn.Module, recalibrate: bool | None, train_data: Dataset | None, where: str
) -> tuple[list[str], bool]:
    """(BatchNorm buffer keys, whether to recompute them at each point of a path).

    ``recalibrate`` None means: exactly when the model has running statistics. Recomputing needs
    ``train_data``; without it a TransferscopeError says what to pass.

    Example:
        >>> from torch import nn
        >>> from transferscope.measures.batchnorm import recalibration_plan
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
        >>> train_data = [(None, None)]  # stands for a training set
        >>> keys, recalibrate = recalibration_plan(net, None, train_data, "interpolation")
        >>> len(keys), recalibrate
        (3, True)
        >>> recalibration_plan(nn.Linear(2, 3), None, None, "interpolation")  # no BatchNorm
        ([], False)
        >>> recalibration_plan(net, None, None, "interpolation")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        transferscope.errors.TransferscopeError: the model has BatchNorm running statistics, ...
    """
    bn_keys = bn_buffers(model)
    recal = bool(bn_keys) if recalibrate is None else recalibrate and bool(bn_keys)
    if recal and train_data is None:
        raise TransferscopeError(
            f"the model has BatchNorm running statistics, which must be recomputed at each "
            f"{where} point: pass train_data, or recalibrate_batchnorm=False to keep the "
            "interpolated statistics"
        )
    return bn_keys, recal


__all__ = [
    "RECALIBRATION_EXAMPLES",
    "CumulativeBatchNorm",
    "bn_buffers",
    "has_running_stats",
    "recalibrate_batchnorm",
    "recalibrated_statistics",
    "recalibration_plan",
    "reset_stats",
    "train_subset",
]
