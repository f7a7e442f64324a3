"""Batches for training and evaluation.

In-memory datasets (:class:`TensorImageDataset`) are sliced a whole batch at a time, which avoids
per-sample collation. Other datasets stream through a ``DataLoader`` with workers. The order of an
epoch is a pure function of (seed, epoch), so a run resumed in the middle of an epoch sees exactly
the batches an uninterrupted run would have.

Random augmentation of streamed images (crops, flips) draws from torch's global generator, which
in a ``DataLoader`` belongs to whichever worker fetches the image and is seeded from the main
process's generator. Its draws would therefore depend on the number of workers, on which worker got
which batch and on the main generator's state. Instead, each fetch reseeds the generator from a seed
of its own (:func:`sample_seeds`, a pure function of the run's seed, the epoch and the position in
it), so the same image gets the same augmentation with any number of workers and after a resume.

Streamed image files can instead be decoded and augmented on the device
(:mod:`transferscope.training.gpu_pipeline`), with the same per-sample seeds and so the same crops
and flips. :func:`decode_policy` chooses: ``auto`` (the default) decodes on the device when it is a
GPU and in worker processes otherwise; ``device`` and ``workers`` force one path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from transferscope import limits
from transferscope.data.base import TensorImageDataset, same_device
from transferscope.data.folder_common import FileImageDataset
from transferscope.errors import TransferscopeError

BatchTransform = Callable[[torch.Tensor], torch.Tensor]
Decode = Literal["auto", "device", "workers"]
DECODE_MODES: tuple[str, ...] = ("auto", "device", "workers")
_DECODE: ContextVar[str] = ContextVar("transferscope_decode", default="auto")


@contextmanager
def decode_policy(mode: str) -> Iterator[None]:
    """Within the block, :func:`iterate` decodes image files as ``mode`` says (see the module
    docstring); the setting is per thread / async context."""
    if mode not in DECODE_MODES:
        raise TransferscopeError(
            f"performance.decode must be one of {', '.join(DECODE_MODES)}, got {mode!r}"
        )
    token = _DECODE.set(mode)
    try:
        yield
    finally:
        _DECODE.reset(token)


def decodes_on_device(dataset: Dataset, device: torch.device, decode: str | None = None) -> bool:
    """Whether :func:`iterate` decodes ``dataset`` on ``device`` (image files only)."""
    mode = decode or _DECODE.get()
    if not isinstance(dataset, FileImageDataset) or mode == "workers":
        return False
    return mode == "device" or device.type == "cuda"


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``n`` examples for ``epoch`` of a run with ``seed``."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)


def sample_seeds(n: int, seed: int, epoch: int) -> torch.Tensor:
    """(n,) int64 seeds for the random draws of positions 0..n-1 of ``epoch`` of a run with
    ``seed`` (a stream separate from :func:`epoch_order`'s)."""
    rng = np.random.default_rng([int(seed), int(epoch), 0x5EED])
    return torch.from_numpy(rng.integers(0, 2**62, n, dtype=np.int64))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside the block torch's global generator starts from ``seed`` (whatever draws from it:
    dropout, stochastic depth, a library's own sampling); the caller's state is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) % 2**63)
        yield


def step_seed(seed: int, step: int) -> int:
    """Seed of torch's global generator for training step ``step`` of a run with ``seed``."""
    return int(np.random.default_rng([int(seed), int(step), 0x57E9]).integers(0, 2**62))


class SeededItems(Dataset):
    """``dataset`` indexed by (index, seed): item ``index`` fetched with torch's global generator
    seeded from ``seed`` (the caller's generator state is restored afterwards)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def channels_last_batches(transform: BatchTransform | None) -> BatchTransform:
    """``transform`` followed by a switch of 4-D batches to channels-last memory format."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = transform(x) if transform is not None else x
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x

    return fn


# On a CPU an evaluation forward pass takes at most this many examples at once: the activations
# of a larger batch fall out of the caches. The mini preset's model evaluates 1,000 test images
# ~1.6x faster in chunks of 256 than in one batch (2-core CPU, one thread), with the same outputs.
CPU_FORWARD_ROWS = 256


def forward_in_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, rows: int | None = None
) -> torch.Tensor:
    """``fn(x)``, computed over chunks of at most ``rows`` examples and concatenated.

    ``rows`` None: :data:`CPU_FORWARD_ROWS` on a CPU, no chunking elsewhere (a GPU wants large
    batches). Only for functions whose output rows depend on their own input rows alone, such as
    an eval-mode forward pass (never BatchNorm in train mode, whose statistics are per batch).
    """
    if rows is None:
        rows = CPU_FORWARD_ROWS if x.device.type == "cpu" else len(x)
    if len(x) <= rows:
        return fn(x)
    return torch.cat([fn(x[start : start + rows]) for start in range(0, len(x), rows)])


_DEFAULT_WORKERS: int | None = None


def default_workers() -> int:
    """Loader worker processes for a streamed dataset: the cores but one, at most 8, or what
    :func:`set_default_workers` said for this process."""
    if _DEFAULT_WORKERS is not None:
        return _DEFAULT_WORKERS
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def set_default_workers(workers: int | None) -> None:
    """Loader workers of :func:`iterate` in this process when the caller names none (None: the
    cores but one). A process that trains one of several runs side by side has its share of the
    cores: with one core or less, images are decoded in the process itself."""
    global _DEFAULT_WORKERS
    _DEFAULT_WORKERS = workers


class _Order:
    """The sampler of a kept DataLoader: the (index, seed) pairs of the pass about to start."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class _Kept:
    dataset: Dataset  # held, so that its id() names it while the loader lives
    order: _Order
    loader: DataLoader
    busy: bool = False


_KEPT: ContextVar[dict[tuple[Any, ...], _Kept] | None] = ContextVar(
    "transferscope_kept_loaders", default=None
)


@contextmanager
def kept_loaders() -> Iterator[None]:
    """Within the block, :func:`iterate` keeps one ``DataLoader`` with persistent workers per
    streamed dataset and batch size, instead of starting its workers for every pass (each epoch,
    each evaluation). Starting them costs a fork, or, in a process started with ``spawn`` (the
    local executor's workers), a fresh interpreter that imports torch: seconds per pass. The
    workers stop when the block ends. What a pass yields is the same either way."""
    token = _KEPT.set({})
    try:
        yield
    finally:
        kept = _KEPT.get() or {}
        _KEPT.reset(token)
        for entry in kept.values():
            iterator = getattr(entry.loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
        kept.clear()


def _loader(
    dataset: Dataset, sampler: list[Any], batch_size: int, workers: int, pin: bool
) -> tuple[DataLoader, _Kept | None]:
    """A DataLoader over ``sampler``: the one kept for ``dataset`` (:func:`kept_loaders`) when
    there is one and no pass over it is under way, else a new one for this pass."""

    def make(order: Iterable[Any], persistent: bool) -> DataLoader:
        return DataLoader(
            SeededItems(dataset),
            batch_size=batch_size,
            sampler=order,
            shuffle=False,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=persistent,
        )

    kept = _KEPT.get()
    if kept is not None and workers > 0:
        key = (id(dataset), batch_size, workers, pin)
        entry = kept.get(key)
        if entry is None:
            order = _Order()
            entry = kept[key] = _Kept(dataset, order, make(order, persistent=True))
        if not entry.busy:
            entry.order.items = sampler
            return entry.loader, entry
    return make(sampler, persistent=False), None


def iterate(
    dataset: Dataset,
    batch_size: int,
    *,
    order: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    transform: BatchTransform | None = None,
    num_workers: int | None = None,
    seeds: torch.Tensor | None = None,
    seed: int = 0,
    decode: str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, targets)`` batches on ``device`` following ``order`` (default: 0..N-1).

    ``transform`` is applied to each image batch on the device (e.g. a block shuffle). ``seeds``
    (same length as ``order``): a streamed dataset fetches ``order[i]`` with torch's generator
    seeded from ``seeds[i]`` (see :class:`SeededItems`); without them, from
    ``sample_seeds(len(order), seed, 0)``. Every random draw of a streamed dataset (an augmented
    training split read by an analysis) is so a function of the order and the seed, never of
    torch's global generator or of which loader worker fetched it; in-memory data draws nothing.
    ``decode``: where image files are decoded (None: the current :func:`decode_policy`).
    ``num_workers``: data-loader processes (default :func:`default_workers`), at most
    :func:`transferscope.limits.limit`.
    """
    limits.check_count("num_workers", num_workers, minimum=0, where=" (data-loader workers)")
    device = torch.device(device)
    if seeds is None and not isinstance(dataset, TensorImageDataset):
        seeds = sample_seeds(len(order) if order is not None else len(dataset), seed, 0)  # type: ignore[arg-type]
    if decodes_on_device(dataset, device, decode):
        from transferscope.training.gpu_pipeline import DevicePipeline

        assert isinstance(dataset, FileImageDataset)
        for x, y in DevicePipeline(dataset, device).batches(batch_size, order, seeds):
            yield (transform(x) if transform else x), y
        return
    non_blocking = device.type == "cuda"
    if isinstance(dataset, TensorImageDataset):
        n = len(order) if order is not None else len(dataset)
        if same_device(dataset.images.device, device):
            idx_all = order.to(device) if order is not None else None
            stage = None
        else:
            idx_all = order
            stage = _PinnedStage() if device.type == "cuda" else None
        for start in range(0, n, batch_size):
            if idx_all is None:
                x = dataset.images[start : start + batch_size]
                y = dataset.targets[start : start + batch_size]
            else:
                idx = idx_all[start : start + batch_size]
                if stage is not None:
                    x, y = stage.gather(dataset, idx)
                else:
                    x, y = dataset.images[idx], dataset.targets[idx]
            x, y = x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)
            if stage is not None:
                stage.copied()
            yield (transform(x) if transform else x), y
        return
    workers = default_workers() if num_workers is None else num_workers
    indices = order.tolist() if order is not None else list(range(len(dataset)))  # type: ignore[arg-type]
    assert seeds is not None
    if len(seeds) != len(indices):
        raise ValueError("seeds need an order of the same length")
    sampler: list[Any] = list(zip(indices, seeds.tolist(), strict=True))
    loader, kept = _loader(dataset, sampler, batch_size, workers, device.type == "cuda")
    if kept is not None:
        kept.busy = True
    try:
        for x, y in loader:
            x, y = x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)
            yield (transform(x) if transform else x), y
    except TransferscopeError as e:
        if workers == 0:
            raise
        # A worker's error comes back with its traceback in the message: keep the one line.
        raise type(e)(_worker_message(str(e))) from None
    finally:
        # Also when the pass is left early (the last epoch's batches are not asked past its
        # last step): the next pass resets the kept loader's workers.
        if kept is not None:
            kept.busy = False


def _worker_message(text: str) -> str:
    """The original message of an exception re-raised from a DataLoader worker."""
    last = text.rstrip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


class _PinnedStage:
    """Two pinned host buffers, used in turn, so a batch's host-to-device copy runs
    asynchronously while the next batch is gathered; a buffer is refilled only after the copy
    that read it has finished."""

    def __init__(self) -> None:
        self._buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None, None]
        self._events: list[torch.cuda.Event | None] = [None, None]
        self._turn = 0

    def gather(
        self, dataset: TensorImageDataset, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        i = self._turn
        event = self._events[i]
        if event is not None:
            event.synchronize()
        n = len(idx)
        buf = self._buffers[i]
        if buf is None or buf[0].shape[0] < n:
            buf = (
                torch.empty(
                    (n, *dataset.images.shape[1:]), dtype=dataset.images.dtype
                ).pin_memory(),
                torch.empty(
                    (n, *dataset.targets.shape[1:]), dtype=dataset.targets.dtype
                ).pin_memory(),
            )
            self._buffers[i] = buf
        x, y = buf[0][:n], buf[1][:n]
        torch.index_select(dataset.images, 0, idx, out=x)
        torch.index_select(dataset.targets, 0, idx, out=y)
        return x, y

    def copied(self) -> None:
        event = torch.cuda.Event()
        event.record()
        self._events[self._turn] = event
        self._turn = 1 - self._turn
