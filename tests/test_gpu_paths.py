"""The CUDA path: device-resident and pinned-memory batches, bf16 + channels-last, torch.compile,
shuffles and interpolation on the device. Skipped where there is no CUDA device (CI); run on a GPU
machine with ``pytest tests/test_gpu_paths.py``."""

from __future__ import annotations

import pytest
import torch

from transferscope.config import TrainSpec
from transferscope.data import registry
from transferscope.data.base import TensorImageDataset
from transferscope.data.shuffle import block_shuffle, pixel_shuffle
from transferscope.measures.interpolation import interpolate
from transferscope.models import build_model
from transferscope.training.loaders import iterate
from transferscope.training.trainer import Trainer

from conftest import fashion_available

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def digits():
    return registry.load("digits")


@pytest.fixture(scope="module")
def fashion():
    if not fashion_available():
        pytest.skip("Fashion-MNIST is not installed")
    return registry.load("fashion-mnist", train_size=2000, test_size=500)


def _fit(splits, tmp_path, **options):
    # On this subset the model reaches ~0.57 accuracy on the CPU (chance 0.1).
    torch.manual_seed(0)
    model = build_model("fixup-small", 10, 1, widths=[8, 16, 16])
    spec = TrainSpec(epochs=3, batch_size=32, lr=0.1, schedule="cosine")
    trainer = Trainer(spec, "multiclass", seed=0, device=CUDA, run_dir=tmp_path, **options)
    return model, trainer.fit(model, splits.train, splits.test)


def test_pinned_batches_equal_device_resident_batches(digits):
    order = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(0))
    on_device = digits.train.to(CUDA)
    for (x1, y1), (x2, y2) in zip(
        iterate(digits.train, 100, order=order, device=CUDA),
        iterate(on_device, 100, order=order, device=CUDA),
        strict=True,
    ):
        assert x1.is_cuda and x2.is_cuda
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_cuda_training_learns_with_either_data_path(fashion, tmp_path):
    _, resident = _fit(fashion, tmp_path / "a", device_data_fraction=1.0)
    _, pinned = _fit(fashion, tmp_path / "b", device_data_fraction=0.0)
    assert resident.final.metric > 0.45
    # cuDNN may pick different kernels per process; the two paths see identical batches.
    assert abs(resident.final.metric - pinned.final.metric) < 0.05


def test_fp32_contiguous_matches_cpu_training_closely(digits, tmp_path):
    torch.manual_seed(0)
    cpu_model = build_model("fixup-small", 10, 1, widths=[8, 16, 16])
    spec = TrainSpec(epochs=1, batch_size=64, lr=0.05, schedule="cosine")
    cpu = Trainer(spec, "multiclass", seed=0).fit(cpu_model, digits.train, digits.test)
    torch.manual_seed(0)
    gpu_model = build_model("fixup-small", 10, 1, widths=[8, 16, 16])
    gpu = Trainer(spec, "multiclass", seed=0, device=CUDA, channels_last=False, bf16=False).fit(
        gpu_model, digits.train, digits.test
    )
    assert abs(cpu.final.loss - gpu.final.loss) < 0.05


def test_compiled_training_saves_plain_weights(fashion, tmp_path):
    model, result = _fit(fashion, tmp_path, compile=True)
    assert result.final.metric > 0.45
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "checkpoints" / "final.safetensors")
    assert set(saved) == set(model.state_dict())


def test_shuffles_on_the_device_equal_the_cpu():
    x = torch.randn(8, 3, 32, 32)
    assert torch.equal(block_shuffle(x.to(CUDA), 4, seed=3).cpu(), block_shuffle(x, 4, seed=3))
    assert torch.equal(pixel_shuffle(x.to(CUDA), seed=3).cpu(), pixel_shuffle(x, seed=3))


def test_interpolation_on_the_device_matches_the_cpu():
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 3)
    a = model.state_dict()
    torch.manual_seed(1)
    b = build_model("resnet18", 10, 3).state_dict()
    g = torch.Generator().manual_seed(0)
    data = TensorImageDataset(torch.randn(64, 3, 32, 32, generator=g), torch.arange(64) % 10)
    kwargs = {"num_points": 3, "train_data": data, "batch_size": 32}
    cpu = interpolate(model, a, b, data, **kwargs)
    gpu = interpolate(model, a, b, data, device=CUDA, channels_last=True, **kwargs)
    # bf16 autocast on the device: losses agree to about 2 significant digits.
    for l_cpu, l_gpu in zip(cpu.loss, gpu.loss, strict=True):
        assert l_gpu == pytest.approx(l_cpu, rel=0.05)
