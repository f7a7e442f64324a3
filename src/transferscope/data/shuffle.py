"""Block shuffle and pixel shuffle of images (PAPER.md §1, "feature reuse vs low-level statistics").

The permutation is drawn ONCE from the seed and applied identically to every image of a batch,
train and test alike: a fixed re-arrangement that destroys visual features while keeping low-level
statistics, not per-image noise. Both functions are batched gathers on whatever device the images
are on.
"""

from __future__ import annotations

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
    images: torch.Tensor, block_size: int, seed: int, inverse: bool = False
) -> torch.Tensor:
    """Split each image into ``block_size`` x ``block_size`` blocks and permute the blocks.

    Args:
        images: (B, C, H, W); H and W must be divisible by ``block_size``.
        block_size: side of a block in pixels; ``block_size == H == W`` leaves images unchanged,
            1 permutes pixel positions (channels of a pixel stay together).
        seed: picks the permutation of the (H/b)*(W/b) blocks, shared by all images.
        inverse: apply the inverse permutation (undoes a shuffle with the same seed).

    Returns:
        A new tensor of the same shape, dtype and device.
    """
    _check_images(images)
    b, c, h, w = images.shape
    if block_size < 1 or h % block_size or w % block_size:
        raise TransferscopeError(
            f"block size {block_size} does not divide the image size {h}x{w}; choose a divisor "
            f"of both sides (e.g. {', '.join(str(d) for d in _divisors(h, w))})"
        )
    nh, nw = h // block_size, w // block_size
    perm = permutation(nh * nw, seed)
    if inverse:
        perm = torch.argsort(perm)
    # The source pixel of every output pixel, as one flat index over H*W: a single gather over
    # contiguous rows moves every block of every image (about 2x faster than gathering blocks
    # of a permuted 6-D view, which copies twice).
    source = perm.view(nh, 1, nw, 1)
    offsets = torch.arange(block_size)
    rows = (source // nw) * block_size + offsets.view(1, block_size, 1, 1)
    cols = (source % nw) * block_size + offsets.view(1, 1, 1, block_size)
    index = (rows * w + cols).reshape(-1).to(images.device)
    flat = images.reshape(b * c, h * w)
    return torch.index_select(flat, 1, index).view(b, c, h, w)


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
