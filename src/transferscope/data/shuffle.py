"""Block shuffle and pixel shuffle of images (Neyshabur et al. 2020, §3.1, "feature reuse vs low-level statistics").

The permutation is drawn ONCE from the seed and applied identically to every image of a batch,
train and test alike: a fixed re-arrangement that destroys visual features while keeping low-level
statistics, not per-image noise. Both functions are batched gathers on whatever device the images
are on.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import numpy as np
import torch

from transferscope.errors import TransferscopeError


def permutation(n: int, seed: int) -> torch.Tensor:
    """The fixed permutation of ``n`` items for ``seed`` (int64, on the CPU)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4:
        raise TransferscopeError(
            f"shuffles take a (B, C, H, W) batch of images, got shape {tuple(images.shape)}"
        )


def block_shuffle(
    images: torch.Tensor,
    block_size: int,
    seed: int,
    inverse: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Split each image into ``block_size`` x ``block_size`` blocks and permute the blocks.

    Args:
        images: (B, C, H, W); H and W must be divisible by ``block_size``.
        block_size: side of a block in pixels; ``block_size == H == W`` leaves images unchanged,
            1 permutes pixel positions (channels of a pixel stay together).
        seed: picks the permutation of the (H/b)*(W/b) blocks, shared by all images.
        inverse: apply the inverse permutation (undoes a shuffle with the same seed).
        out: a contiguous tensor of the same shape, dtype and device to write into (not
            ``images`` itself); None allocates one.

    Returns:
        ``out``, or a new tensor of the same shape, dtype and device.
    """
    _check_images(images)
    b, c, h, w = images.shape
    if block_size < 1 or h % block_size or w % block_size:
        raise TransferscopeError(
            f"block size {block_size} does not divide the image size {h}x{w}; choose a divisor "
            f"of both sides (e.g. {', '.join(str(d) for d in _divisors(h, w))})"
        )
    if out is None:
        out = torch.empty_like(images, memory_format=torch.contiguous_format)
    elif (
        out.shape != images.shape
        or out.dtype != images.dtype
        or out.device != images.device
        or not out.is_contiguous()
        or out.data_ptr() == images.data_ptr()
    ):
        raise TransferscopeError(
            f"out must be a contiguous {tuple(images.shape)} {images.dtype} tensor on "
            f"{images.device}, other than the images; got {tuple(out.shape)} {out.dtype} on "
            f"{out.device}"
        )
    # Each image row is w / block_size segments of block_size contiguous pixels, and a block
    # shuffle moves whole segments: one gather of segments (index_select over the middle axis
    # copies block_size values per index) writes every value once. Gathering single pixels
    # instead costs ~2.6 copies of the batch, a permuted 6-D view ~2.
    segments = h * (w // block_size)
    index = _segment_index(h, w, block_size, int(seed), inverse, str(images.device))
    source = images.reshape(b * c, segments, block_size)
    target = out.view(b * c, segments, block_size)
    if images.requires_grad:  # out= does not record the gather for autograd
        return out.copy_(torch.index_select(source, 1, index).view_as(out))
    if images.device.type != "cpu":
        torch.index_select(source, 1, index, out=target)
    else:
        _split_rows(
            lambda start, stop: _staged_gather(source, index, target, start, stop),
            b * c,
            images.nbytes,
        )
    return out


# A CPU gathers through a buffer of about this size (it stays in the cache), see _staged_gather.
_STAGE_BYTES = 1024**2
# Below this many bytes a shuffle is not worth splitting over threads.
_PARALLEL_BYTES = 4 * 1024**2


def _staged_gather(
    source: torch.Tensor, index: torch.Tensor, target: torch.Tensor, start: int, stop: int
) -> None:
    """``target[start:stop] = source[start:stop][:, index]`` through a cache-sized buffer.

    Read straight from memory in permuted order, every segment is a cache miss the prefetcher
    cannot foresee (~2.3 copies' time on this 2-core machine). A few images at a time are
    first copied into a small buffer (a sequential read) and gathered from there, from the
    cache: the batch crosses main memory once each way. The buffer is filled by numpy, a plain
    memcpy on this thread (a Tensor.copy_ would start an OpenMP team in each of _split_rows'
    threads); numpy sees the bytes, so any dtype goes.
    """
    rows = max(1, min(stop - start, _STAGE_BYTES // max(source[0].nbytes, 1)))
    stage = torch.empty((rows, *source.shape[1:]), dtype=source.dtype)
    stage_bytes, source_bytes = stage.view(torch.uint8).numpy(), source.view(torch.uint8).numpy()
    for first in range(start, stop, rows):
        last = min(first + rows, stop)
        np.copyto(stage_bytes[: last - first], source_bytes[first:last])
        torch.index_select(stage[: last - first], 1, index, out=target[first:last])


def _split_rows(gather: Callable[[int, int], None], rows: int, nbytes: int) -> None:
    """``gather(start, stop)`` over ``rows`` (``nbytes`` in all), split over the torch threads.

    PyTorch's CPU index_select copies slices of its middle axis on one thread; each torch thread
    gathering a share of the images (the op releases the GIL) uses the cores a plain copy uses.
    """
    threads = min(torch.get_num_threads(), rows)
    if threads < 2 or nbytes < _PARALLEL_BYTES:
        gather(0, rows)
        return
    bounds = [rows * i // threads for i in range(threads + 1)]
    errors: list[BaseException] = []

    def work(start: int, stop: int) -> None:
        try:
            gather(start, stop)
        except BaseException as e:  # re-raised in the calling thread
            errors.append(e)

    # Fresh threads per call (about 0.1 ms): a pool would not survive a fork (DataLoader).
    workers = [
        threading.Thread(target=work, args=(bounds[i], bounds[i + 1])) for i in range(1, threads)
    ]
    for worker in workers:
        worker.start()
    work(bounds[0], bounds[1])
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]


@functools.lru_cache(maxsize=64)
def _segment_index(
    h: int, w: int, block: int, seed: int, inverse: bool, device: str
) -> torch.Tensor:
    """For each output segment (row r of block row i, block column j, in memory order), the
    index of the input segment it copies, over the h * (w / block) segments of an image."""
    nh, nw = h // block, w // block
    perm = permutation(nh * nw, seed)
    if inverse:
        perm = torch.argsort(perm)
    source = perm.view(nh, 1, nw)  # the source block of each output block
    rows = (source // nw) * block + torch.arange(block).view(1, block, 1)
    return (rows * nw + source % nw).reshape(-1).to(device)


def pixel_shuffle(images: torch.Tensor, seed: int, inverse: bool = False) -> torch.Tensor:
    """Permute all C*H*W entries of each image with one fixed permutation (channels mixed too).

    Args:
        images: (B, C, H, W).
        seed: picks the permutation, shared by all images.
        inverse: apply the inverse permutation.
    """
    _check_images(images)
    b = images.shape[0]
    perm = permutation(images[0].numel(), seed).to(images.device)
    if inverse:
        perm = torch.argsort(perm)
    return images.reshape(b, -1)[:, perm].reshape(images.shape)


def _divisors(h: int, w: int) -> list[int]:
    return [d for d in range(1, min(h, w) + 1) if h % d == 0 and w % d == 0]


def shuffle_images(
    images: torch.Tensor, kind: str, seed: int, block_size: int | None = None
) -> torch.Tensor:
    """Dispatch on ``kind`` ('block' with ``block_size``, or 'pixel')."""
    if kind == "pixel":
        return pixel_shuffle(images, seed)
    if kind == "block" and block_size is not None:
        return block_shuffle(images, block_size, seed)
    raise TransferscopeError(
        f"unknown shuffle '{kind}' (block_size={block_size}); use 'block' or 'pixel'"
    )
