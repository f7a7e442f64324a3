"""Decoding and augmenting image files on the device (transferscope.training.gpu_pipeline).

The device path runs here on the CPU (torchvision's decode_jpeg and transforms take CPU tensors;
only ``device`` differs on a GPU). What is checked: it draws exactly torchvision's crop, flip and
affine parameters for a seed, so its augmentation matches the CPU workers' path in distribution
(crop scales, aspect ratios, flip rates measured on the output pixels of a coordinate-coded image,
two-sample KS tests) and per sample; it is deterministic for a seed with any number of reader
threads; bad files and unsupported transforms fail with clear errors; and a Trainer fits through it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from transferscope.config import TrainSpec
from transferscope.data import registry
from transferscope.data.chexpert import chexpert_transform
from transferscope.data.folder_common import (
    BadImageError,
    FileImageDataset,
    classification_transform,
)
from transferscope.errors import TransferscopeError
from transferscope.models import build_model
from transferscope.training import gpu_pipeline as gp
from transferscope.training.loaders import SeededItems, iterate, sample_seeds
from transferscope.training.trainer import Trainer

SIDE = 256


def coordinate_image(path, width: int = SIDE, height: int = SIDE):
    """A lossless PNG whose red channel is the column index and green the row index (scaled to
    0..255): the pixels of any crop say which box of the image it came from."""
    xs = np.linspace(0, 255, width).round().astype(np.uint8)
    ys = np.linspace(0, 255, height).round().astype(np.uint8)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = xs[None, :]
    rgb[..., 1] = ys[:, None]
    rgb[..., 2] = 128
    Image.fromarray(rgb).save(path, "PNG")
    return path


def geometry(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Crop area fraction, log aspect ratio and flip of each (B, 3, S, S) normalised output of
    a coordinate image, read from the red/green ramps at the output's edges."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (images * std + mean) * 255
    red, green = x[:, 0], x[:, 1]
    dx = (red[:, :, -1] - red[:, :, 0]).mean(1)  # signed: negative when flipped
    dy = (green[:, -1, :] - green[:, 0, :]).mean(1)
    width, height = dx.abs() / 255, dy / 255
    return {
        "area": (width * height).numpy(),
        "log_aspect": torch.log(width / height).numpy(),
        "flipped": (dx < 0).numpy(),
    }


def cpu_path(dataset: FileImageDataset, seeds: list[int]) -> torch.Tensor:
    """What a DataLoader worker yields: the PIL pipeline with torch's generator seeded."""
    items = SeededItems(dataset)
    return torch.stack([items[(0, s)][0] for s in seeds])


@pytest.fixture
def coordinates(tmp_path) -> FileImageDataset:
    path = coordinate_image(tmp_path / "coords.png")
    transform = classification_transform(224, 3, train=True, augment=True)
    return FileImageDataset([path], torch.zeros(1, dtype=torch.long), transform)


@pytest.mark.parametrize("size", [(480, 640), (375, 500), (50, 1000), (224, 224)])
def test_parameters_are_torchvisions_draws_for_the_same_seed(size):
    from torchvision.transforms import v2

    crop = v2.RandomResizedCrop(224, antialias=True)
    affine = v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05))
    image = torch.zeros(1, *size, dtype=torch.uint8)
    fallbacks = 0
    for seed in range(200):
        torch.manual_seed(seed)
        want = crop.make_params([image])
        want_flip = bool(torch.rand(1) < 0.5)
        want_affine = affine.make_params([image])
        gen = torch.Generator().manual_seed(seed)
        got = gp.resized_crop_params(*size, crop.scale, crop.ratio, gen)
        assert got == want, seed
        assert gp.flip_drawn(0.5, gen) == want_flip
        got_affine = gp.affine_params(affine, *size, gen)
        assert got_affine["angle"] == pytest.approx(want_affine["angle"])
        assert list(got_affine["translate"]) == list(want_affine["translate"])
        assert got_affine["scale"] == pytest.approx(want_affine["scale"])
        fallbacks += got["height"] == size[0] and got["top"] == 0
    if size == (50, 1000):  # 20:1 cannot hold most crops: torchvision's centre-crop fallback
        assert fallbacks > 0


def test_crop_scales_and_flip_rates_match_the_cpu_path_in_distribution(coordinates):
    n = 400
    # Different seeds for the two paths: independent samples of each distribution.
    cpu = geometry(cpu_path(coordinates, list(range(n))))
    pipeline = gp.DevicePipeline(coordinates, "cpu", threads=2)
    device = geometry(pipeline.load([0] * n, list(range(10_000, 10_000 + n))))
    for key in ("area", "log_aspect"):
        result = stats.ks_2samp(cpu[key], device[key])
        assert result.pvalue > 0.001, (key, result)
    # RandomResizedCrop's scale is uniform on [0.08, 1] of the area: the measured crop areas
    # cover it (a path that skipped the crop would sit at 1).
    assert np.quantile(device["area"], 0.1) < 0.25 and np.quantile(device["area"], 0.9) > 0.75
    for flips in (cpu["flipped"], device["flipped"]):
        assert stats.binomtest(int(flips.sum()), n, 0.5).pvalue > 0.001
    table = [[cpu["flipped"].sum(), n - cpu["flipped"].sum()]]
    table.append([device["flipped"].sum(), n - device["flipped"].sum()])
    assert stats.fisher_exact(table).pvalue > 0.001


def test_same_seed_gives_the_cpu_paths_crop_and_flip(coordinates):
    seeds = list(range(40))
    cpu = cpu_path(coordinates, seeds)
    device = gp.DevicePipeline(coordinates, "cpu").load([0] * len(seeds), seeds)
    a, b = geometry(cpu), geometry(device)
    assert (a["flipped"] == b["flipped"]).all()
    np.testing.assert_allclose(a["area"], b["area"], atol=0.02)
    # PIL's and torchvision's antialiased resize differ by rounding: a few grey levels at most.
    assert (cpu - device).abs().mean() < 0.02


def test_batches_are_deterministic_for_a_seed_with_any_thread_count(tmp_path):
    from fixtures_data import make_imagefolder

    root = make_imagefolder(tmp_path / "f", {"a": 5, "b": 5})
    train = registry.load("imagefolder", root=root, image_size=32).train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))
    seeds = sample_seeds(len(train), 3, 0)

    def run(threads: int, prefetch: int) -> list[torch.Tensor]:
        pipe = gp.DevicePipeline(train, "cpu", threads=threads, prefetch=prefetch)
        return [x for x, _ in pipe.batches(3, order, seeds)]

    first, second = run(1, 1), run(4, 3)
    assert len(first) == -(-len(train) // 3)
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    other = gp.DevicePipeline(train, "cpu").batches(3, order, sample_seeds(len(train), 4, 0))
    assert not torch.equal(next(other)[0], first[0])  # another seed, other crops
    via_iterate = [x for x, _ in iterate(train, 3, order=order, seeds=seeds, decode="device")]
    assert all(torch.equal(x, y) for x, y in zip(first, via_iterate, strict=True))
    targets = torch.cat([y for _, y in iterate(train, 3, order=order, decode="device")])
    assert torch.equal(targets, train.targets[order])


def test_chexpert_steps_run_on_tensors_like_on_pil_images(tmp_path):
    from fixtures_data import write_jpeg

    path = write_jpeg(tmp_path / "x.jpg", size=(390, 320), mode="L")
    ds = FileImageDataset(
        [path], torch.zeros(1, 5), chexpert_transform(224, train=False, augment=True), "L"
    )
    cpu = ds[0][0]
    device = gp.DevicePipeline(ds, "cpu").load([0], None)[0]
    assert device.shape == cpu.shape == (3, 224, 224)
    # Noise equalised: rounding of the two resize kernels moves some pixels by a few levels.
    assert (cpu - device).abs().mean() < 0.05
    train = FileImageDataset(
        [path], torch.zeros(1, 5), chexpert_transform(224, train=True, augment=True), "L"
    )
    a = gp.DevicePipeline(train, "cpu").load([0, 0], [5, 5])
    assert torch.equal(a[0], a[1]) and not torch.equal(a[0], device)


def test_a_corrupt_or_missing_file_names_the_file(tmp_path):
    from fixtures_data import write_jpeg

    good = write_jpeg(tmp_path / "good.jpg", size=(40, 30))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:40])  # a JPEG header and nothing after it
    transform = classification_transform(16, 3, train=False, augment=False)
    ds = FileImageDataset([good, bad], torch.zeros(2, dtype=torch.long), transform)
    with pytest.raises(BadImageError, match=r"bad\.jpg"):
        gp.DevicePipeline(ds, "cpu").load([0, 1], None)
    gone = FileImageDataset([tmp_path / "gone.jpg"], torch.zeros(1), transform)
    with pytest.raises(BadImageError, match=r"gone\.jpg"):
        list(gp.DevicePipeline(gone, "cpu").batches(1))


def test_a_random_transform_it_cannot_replay_is_a_clear_error(tmp_path):
    from torchvision.transforms import v2

    from fixtures_data import write_jpeg

    path = write_jpeg(tmp_path / "a.jpg", size=(40, 30))
    ds = FileImageDataset([path], torch.zeros(1), v2.Compose([v2.RandomVerticalFlip()]))
    with pytest.raises(TransferscopeError, match=r"RandomVerticalFlip.*decode: workers"):
        gp.DevicePipeline(ds, "cpu").load([0], [0])


def test_trainer_fits_through_the_device_path_reproducibly(tmp_path, one_thread):
    from fixtures_data import make_imagefolder

    root = make_imagefolder(tmp_path / "f", {"a": 4, "b": 4})
    splits = registry.load("imagefolder", root=root, image_size=16)
    spec = TrainSpec(epochs=1, batch_size=4, lr=0.05, eval_batch_size=8)

    def fit() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model("fixup-small", 2, 3)
        Trainer(spec, "multiclass", seed=1, decode="device").fit(model, splits.train, splits.test)
        return model.state_dict()

    a, b = fit(), fit()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bash bench/on_gpu.sh)")
def test_cuda_decoding_gives_the_cpu_decodings_batches(tmp_path):
    from fixtures_data import write_jpeg

    paths = [write_jpeg(tmp_path / f"{i}.jpg", size=(500, 375), seed=i) for i in range(6)]
    transform = classification_transform(224, 3, train=True, augment=True)
    ds = FileImageDataset(paths, torch.arange(6), transform)
    seeds = list(range(6))
    cpu = gp.DevicePipeline(ds, "cpu").load(range(6), seeds)
    cuda = gp.DevicePipeline(ds, "cuda").load(range(6), seeds)
    assert cuda.device.type == "cuda"
    # nvJPEG and libjpeg-turbo decode differently (IDCT, chroma upsampling): on an H200 the mean
    # difference is 0.11 normalised units (about 6 grey levels) with or without augmentation,
    # the same for every image; a different crop or flip would differ by about 1.
    assert (cuda.cpu() - cpu).abs().mean() < 0.25
    again = gp.DevicePipeline(ds, "cuda").load(range(6), seeds)
    assert torch.equal(cuda, again)
