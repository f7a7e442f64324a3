import pytest
import torch

from transferscope import block_shuffle, pixel_shuffle
from transferscope.errors import TransferscopeError


@pytest.fixture
def images():
    return torch.randn(5, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def test_block_size_equal_to_side_is_identity(images):
    assert torch.equal(block_shuffle(images, 12, seed=3), images)


@pytest.mark.parametrize("block", [1, 2, 3, 4, 6])
def test_same_seed_same_permutation_and_inverse_restores(images, block):
    a = block_shuffle(images, block, seed=7)
    b = block_shuffle(images, block, seed=7)
    assert torch.equal(a, b)
    assert torch.equal(block_shuffle(a, block, seed=7, inverse=True), images)


def test_different_seeds_differ(images):
    assert not torch.equal(block_shuffle(images, 2, seed=0), block_shuffle(images, 2, seed=1))
    assert not torch.equal(pixel_shuffle(images, seed=0), pixel_shuffle(images, seed=1))


def test_values_of_each_image_preserved(images):
    for out in (block_shuffle(images, 3, seed=1), pixel_shuffle(images, seed=1)):
        for i in range(len(images)):
            assert torch.equal(out[i].flatten().sort().values, images[i].flatten().sort().values)


def test_permutation_is_shared_by_every_image():
    base = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    batch = torch.cat([base, base + 1000])
    out = block_shuffle(batch, 2, seed=5)
    assert torch.equal(out[1] - 1000, out[0])
    out = pixel_shuffle(batch, seed=5)
    assert torch.equal(out[1] - 1000, out[0])


def test_blocks_move_as_whole_blocks():
    # Each 2x2 block holds one constant; after shuffling every 2x2 block is still constant.
    img = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    img = img.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # (1, 1, 8, 8)
    out = block_shuffle(img, 2, seed=11)
    blocks = out.reshape(1, 1, 4, 2, 4, 2).permute(0, 1, 2, 4, 3, 5).reshape(16, 4)
    assert torch.all(blocks == blocks[:, :1])
    assert not torch.equal(out, img)


def test_block_size_one_keeps_channels_together_pixel_shuffle_mixes():
    # Channel c of every pixel holds value c: block shuffle keeps that, pixel shuffle breaks it.
    img = torch.arange(3, dtype=torch.float32).view(1, 3, 1, 1).expand(2, 3, 6, 6).contiguous()
    out = block_shuffle(img, 1, seed=2)
    assert torch.equal(out, img)
    mixed = pixel_shuffle(img, seed=2)
    assert not torch.equal(mixed, img)
    assert (mixed[:, 0] != 0).any()


def test_pixel_inverse_restores(images):
    assert torch.equal(pixel_shuffle(pixel_shuffle(images, 4), 4, inverse=True), images)


def test_non_divisible_block_size_is_a_clear_error(images):
    with pytest.raises(
        TransferscopeError, match=r"block size 5 does not divide the image size 12x12"
    ):
        block_shuffle(images, 5, seed=0)


def test_rejects_non_batch_input():
    with pytest.raises(TransferscopeError, match=r"\(B, C, H, W\)"):
        block_shuffle(torch.zeros(3, 4, 4), 2, seed=0)


def test_dtype_and_shape_kept(images):
    out = block_shuffle(images.half(), 4, seed=0)
    assert out.dtype == torch.float16 and out.shape == images.shape


def _reference_block_shuffle(images: torch.Tensor, block: int, seed: int) -> torch.Tensor:
    """Blocks cut out with a permuted 6-D view, permuted, put back: the plain definition."""
    from transferscope.data.shuffle import permutation

    b, c, h, w = images.shape
    nh, nw = h // block, w // block
    blocks = images.reshape(b, c, nh, block, nw, block).permute(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(b, c, nh * nw, block, block)[:, :, permutation(nh * nw, seed)]
    return blocks.reshape(b, c, nh, nw, block, block).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


@pytest.mark.parametrize("block", [1, 7, 16])
def test_large_batches_on_two_threads_into_a_buffer_equal_the_definition(block):
    """8 x 3 x 224 x 224 (4.8 MB) is split over the threads and staged through small buffers."""
    images = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        buffer = torch.full_like(images, float("nan"))
        out = block_shuffle(images, block, seed=3, out=buffer)
    finally:
        torch.set_num_threads(threads)
    assert out is buffer
    assert torch.equal(out, _reference_block_shuffle(images, block, 3))


def test_a_bad_out_buffer_is_a_clear_error(images):
    for bad in (torch.empty(5, 3, 12, 6), images.double(), images):  # shape, dtype, itself
        with pytest.raises(TransferscopeError, match="out must be a contiguous"):
            block_shuffle(images, 4, seed=0, out=bad)


def test_gradients_flow_through_a_shuffle():
    images = torch.randn(2, 1, 4, 4, requires_grad=True)
    weights = torch.arange(32, dtype=torch.float32).view(2, 1, 4, 4)
    (block_shuffle(images, 2, seed=1) * weights).sum().backward()
    assert torch.equal(images.grad, block_shuffle(weights, 2, seed=1, inverse=True))
