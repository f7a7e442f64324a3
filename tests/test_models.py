"""Tests for transferscope.models: builders, Fixup init, layouts, P -> P-T, weight loading."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from transferscope.errors import TransferscopeError
from transferscope.models import (
    FixupBasicBlock,
    FixupBottleneck,
    ModelLayout,
    analysis_layers,
    available_models,
    build_model,
    imagenet_weights_path,
    layout,
    load_state,
    read_state,
    scalar_parameter_names,
    transfer,
)
from transferscope.models.fixup import fixup_factor, he_std


@pytest.fixture(scope="module")
def resnet50_fixup() -> nn.Module:
    torch.manual_seed(0)
    return build_model("fixup-resnet50", 7)


def _perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with every parameter moved off its init, like a trained P (non-zero fc, scalars)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=gen))
    return model


def _state_equal(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip: str | tuple[str, ...] = ""
) -> None:
    keys = [k for k in a if not (skip and k.startswith(skip))]
    assert keys
    for key in keys:
        assert torch.equal(a[key], b[key]), key


# --- builders -------------------------------------------------------------------------------


def test_available_models() -> None:
    names = available_models()
    for name in ("fixup-small", "fixup-resnet50", "resnet18", "resnet50", "timm:<name>"):
        assert name in names


@pytest.mark.parametrize(
    ("name", "in_channels", "size"),
    [
        ("fixup-small", 1, 28),
        ("fixup-small", 3, 64),
        ("resnet18", 1, 32),
        ("resnet18", 3, 32),
        ("resnet50", 1, 64),
    ],
)
def test_output_shapes(name: str, in_channels: int, size: int) -> None:
    model = build_model(name, 7, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7)
    assert model.conv1.in_channels == in_channels


def test_fixup_resnet50_shape_and_zero_output(resnet50_fixup: nn.Module) -> None:
    with torch.no_grad():
        out = resnet50_fixup(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7)
    # Zero fc and zero last convs: the initial output is exactly 0.
    assert torch.equal(out, torch.zeros(2, 7))
    assert [len(getattr(resnet50_fixup, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert resnet50_fixup.fc.in_features == 2048


def test_fixup_small_options() -> None:
    model = build_model("fixup-small", 4, in_channels=1, widths=(8, 16), blocks_per_stage=2)
    assert layout(model).stages == ("layer1", "layer2")
    assert len(layout(model).blocks) == 4
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 4)
    with pytest.raises(TransferscopeError, match="one block count per stage"):
        build_model("fixup-small", 4, widths=(8, 16), blocks_per_stage=(1, 1, 1))


def test_unknown_model_suggests_nearest() -> None:
    with pytest.raises(TransferscopeError, match="did you mean 'fixup-small'"):
        build_model("fixup-smal", 10)


def test_unknown_option_suggests_nearest() -> None:
    with pytest.raises(TransferscopeError, match=r"no option 'width'.*did you mean 'widths'"):
        build_model("fixup-small", 10, width=(8, 16, 32))
    with pytest.raises(TransferscopeError, match=r"no option 'depth'.*valid options: \(none\)"):
        build_model("resnet18", 10, depth=3)


# --- Fixup initialisation ------------------------------------------------------------------


def test_fixup_small_init_is_identity_on_branches() -> None:
    torch.manual_seed(0)
    model = build_model("fixup-small", 10, in_channels=1, blocks_per_stage=2)
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(x), torch.zeros(4, 10))
    assert torch.count_nonzero(model.fc.weight) == 0
    assert torch.count_nonzero(model.fc.bias) == 0
    blocks = [m for m in model.modules() if isinstance(m, FixupBasicBlock)]
    assert len(blocks) == 6
    h = torch.relu(torch.randn(4, 16, 28, 28))
    for block in blocks:
        assert torch.count_nonzero(block.conv2.weight) == 0
        assert block.scale.item() == 1.0
        h_in = torch.relu(torch.randn(4, block.conv1.in_channels, 14, 14))
        assert torch.equal(block.branch(h_in), torch.zeros_like(block.branch(h_in)))
        if block.downsample is None:
            # A non-negative input (a previous ReLU's output) passes through unchanged.
            assert torch.equal(block(h_in), h_in)
        else:
            assert torch.equal(block(h_in), torch.relu(block.downsample(h_in)))
    assert torch.equal(blocks[0](h), h)


def test_fixup_he_scaling_small() -> None:
    torch.manual_seed(0)
    model = build_model("fixup-small", 10, in_channels=1, blocks_per_stage=2)
    factor = fixup_factor(6, 2)
    assert factor == pytest.approx(6**-0.5)
    for name in ("layer1.1.conv1", "layer2.1.conv1", "layer3.0.conv1", "layer3.1.conv1"):
        weight = model.get_submodule(name).weight
        expected = math.sqrt(2 / (weight.shape[0] * 9)) * factor
        assert weight.std().item() == pytest.approx(expected, rel=0.1), name
        assert weight.mean().abs().item() < 0.1 * expected


def test_fixup_he_scaling_resnet50(resnet50_fixup: nn.Module) -> None:
    factor = 16**-0.25  # L = 16 bottleneck branches of m = 3 layers: L^(-1/(2m-2))
    assert fixup_factor(16, 3) == pytest.approx(factor)
    for name in ("layer3.1.conv1", "layer3.1.conv2", "layer4.2.conv2"):
        weight = resnet50_fixup.get_submodule(name).weight
        assert weight.std().item() == pytest.approx(he_std(weight) * factor, rel=0.03), name
    blocks = [m for m in resnet50_fixup.modules() if isinstance(m, FixupBottleneck)]
    assert len(blocks) == 16
    assert all(torch.count_nonzero(b.conv3.weight) == 0 for b in blocks)
    stem = resnet50_fixup.conv1.weight
    assert stem.std().item() == pytest.approx(he_std(stem, "fan_in"), rel=0.05)


def test_scalar_parameter_names() -> None:
    model = build_model("fixup-small", 1, in_channels=1, blocks_per_stage=2)
    names = scalar_parameter_names(model)
    expected = {"bias1", "bias2"} | {
        f"layer{s}.{b}.{p}"
        for s in (1, 2, 3)
        for b in (0, 1)
        for p in ("bias1a", "bias1b", "bias2a", "bias2b", "scale")
    }
    # A one-output head's bias is a single element too, but it is no Fixup scalar.
    assert names == expected
    assert "fc.bias" not in names
    assert scalar_parameter_names(build_model("resnet18", 10)) == set()


# --- layout -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fixup-small", "resnet18"])
def test_layout_names_exist(name: str) -> None:
    model = build_model(name, 10)
    parts = layout(model)
    modules = dict(model.named_modules())
    for path in (parts.stem, *parts.stages, *parts.blocks, parts.head):
        assert path in modules
    assert parts.stem == "conv1" and parts.head == "fc"
    assert parts.blocks[0] == "layer1.0"
    assert list(analysis_layers(model)) == ["conv1", *parts.stages]


def test_layout_fixup_resnet50(resnet50_fixup: nn.Module) -> None:
    parts = layout(resnet50_fixup)
    assert parts.stages == ("layer1", "layer2", "layer3", "layer4")
    assert len(parts.blocks) == 16 and parts.blocks[-1] == "layer4.2"
    assert analysis_layers(resnet50_fixup) == {
        "conv1": "conv1",
        "layer1": "layer1",
        "layer2": "layer2",
        "layer3": "layer3",
        "layer4": "layer4",
    }


def test_layout_inferred_for_user_resnet_and_refused_otherwise() -> None:
    import torchvision

    user_model = torchvision.models.resnet18(weights=None, num_classes=3)
    assert layout(user_model) == ModelLayout(
        stem="conv1",
        stages=("layer1", "layer2", "layer3", "layer4"),
        blocks=tuple(f"layer{s}.{b}" for s in (1, 2, 3, 4) for b in (0, 1)),
        head="fc",
    )
    with pytest.raises(TransferscopeError, match="give the layer names explicitly"):
        layout(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(2)))


# --- P -> P-T -----------------------------------------------------------------------------------


def test_transfer_fixup_keeps_body_and_zeroes_head() -> None:
    p_model = _perturbed(build_model("fixup-small", 10, in_channels=1))
    before = {k: v.clone() for k, v in p_model.state_dict().items()}
    p_t = transfer(p_model, 5)
    _state_equal(before, p_t.state_dict(), skip="fc.")
    assert p_t.fc.weight.shape == (5, 64) and p_t.fc.bias.shape == (5,)
    assert torch.count_nonzero(p_t.fc.weight) == 0 and torch.count_nonzero(p_t.fc.bias) == 0
    # P itself is untouched and P-T shares no storage with it.
    _state_equal(before, p_model.state_dict())
    with torch.no_grad():
        p_t.layer1[0].conv1.weight.add_(1.0)
    assert torch.equal(before["layer1.0.conv1.weight"], p_model.layer1[0].conv1.weight)
    assert layout(p_t) == layout(p_model)


def test_transfer_resnet_is_deterministic_with_seed() -> None:
    p_model = build_model("resnet18", 10)
    rng_before = torch.random.get_rng_state()
    a, b, c = (transfer(p_model, 3, seed=s) for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert torch.equal(a.fc.weight, b.fc.weight) and torch.equal(a.fc.bias, b.fc.bias)
    assert not torch.equal(a.fc.weight, c.fc.weight)
    assert torch.count_nonzero(a.fc.weight) > 0
    _state_equal(p_model.state_dict(), a.state_dict(), skip="fc.")


# --- loading weights -------------------------------------------------------------------------


def test_load_state_lists_mismatches() -> None:
    model = build_model("fixup-small", 10, in_channels=1)
    state = build_model("resnet18", 10).state_dict()
    with pytest.raises(TransferscopeError) as info:
        load_state(model, state, what="resnet18.pt")
    message = str(info.value)
    assert message.startswith("resnet18.pt does not fit FixupResNet")
    assert "missing keys: " in message and "layer1.0.bias1a" in message
    assert "unexpected keys: " in message and "bn1.weight" in message
    assert "conv1.weight: expected (16, 1, 3, 3) vs got (64, 3, 7, 7)" in message
    assert "fc.weight: expected (10, 64) vs got (10, 512)" in message
    assert "19 missing keys: " in message and "and 9 more" in message


def test_load_state_roundtrip_and_ignore_head() -> None:
    source = _perturbed(build_model("fixup-small", 10))
    target = build_model("fixup-small", 10)
    load_state(target, source.state_dict())
    _state_equal(source.state_dict(), target.state_dict())
    other_head = build_model("fixup-small", 4)
    with pytest.raises(TransferscopeError, match=r"fc\.weight: expected"):
        load_state(other_head, source.state_dict())
    load_state(other_head, source.state_dict(), ignore_head=True)
    _state_equal(source.state_dict(), other_head.state_dict(), skip="fc.")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_pretrained_local_file(tmp_path, suffix: str) -> None:
    p_model = _perturbed(build_model("fixup-small", 10, in_channels=1))
    path = tmp_path / f"p{suffix}"
    if suffix == ".safetensors":
        save_file(p_model.state_dict(), str(path))
    else:
        torch.save(p_model.state_dict(), path)
    model = build_model("fixup-small", 3, in_channels=1, pretrained=str(path))
    _state_equal(p_model.state_dict(), model.state_dict(), skip="fc.")
    assert model.fc.weight.shape == (3, 64) and torch.count_nonzero(model.fc.weight) == 0


def test_read_state_unwraps_training_checkpoints(tmp_path) -> None:
    state = {"conv.weight": torch.ones(2, 2), "fc.bias": torch.zeros(2)}
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = read_state(path)
    assert set(loaded) == set(state) and torch.equal(loaded["conv.weight"], state["conv.weight"])


class _Payload:
    """An arbitrary class: unpickling it would need to import and run code."""


def test_pickled_object_is_refused(tmp_path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"model": _Payload(), "w": torch.zeros(1)}, path)
    with pytest.raises(TransferscopeError, match=r"refused to load .*weights_only"):
        build_model("fixup-small", 10, pretrained=str(path))


def test_pretrained_errors(tmp_path) -> None:
    with pytest.raises(TransferscopeError, match="weight file not found"):
        build_model("fixup-small", 10, pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(TransferscopeError, match="did you mean 'imagenet'"):
        build_model("resnet18", 10, pretrained="imagnet")
    with pytest.raises(TransferscopeError, match="has no ImageNet weights"):
        build_model("fixup-small", 10, pretrained="imagenet")


def test_imagenet_from_empty_cache_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_weights_path("resnet18") == expected
    with pytest.raises(TransferscopeError) as info:
        build_model("resnet18", 10, pretrained="imagenet")
    assert str(expected) in str(info.value) and "never downloads" in str(info.value)


def test_imagenet_from_cache_replaces_head_and_adapts_stem(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    imagenet = _perturbed(build_model("resnet18", 1000))
    path = imagenet_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    # torchvision's files predate BatchNorm's num_batches_tracked buffers.
    state = {k: v for k, v in imagenet.state_dict().items() if "num_batches" not in k}
    torch.save(state, path)
    model = build_model("resnet18", 10, pretrained="imagenet")
    _state_equal(state, model.state_dict(), skip="fc.")
    assert model.fc.weight.shape == (10, 512)
    gray = build_model("resnet18", 10, in_channels=1, pretrained="imagenet")
    assert torch.allclose(gray.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))


# --- timm -------------------------------------------------------------------------------------


def test_timm_model_builds() -> None:
    pytest.importorskip("timm")
    model = build_model("timm:resnet18", 5, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    assert layout(model).head == "fc"
    assert transfer(model, 2, seed=0).fc.out_features == 2
    with pytest.raises(TransferscopeError, match="did you mean 'resnet18'"):
        build_model("timm:resnet81", 5)


def test_timm_missing_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(TransferscopeError, match=r"pip install transferscope\[timm\]"):
        build_model("timm:resnet18", 5)


# A ViT for 28x28 images: patch 4, two blocks.
TINY_VIT = {"img_size": 28, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_own_pretrained_timm_vit(tmp_path, suffix: str) -> None:
    """A user's own timm ViT state dict (RGB, 1000 classes) as P for grayscale 5-class data:
    every weight loaded, the head fresh, the patch embedding summed over RGB."""
    pytest.importorskip("timm")
    import timm

    own = _perturbed(
        timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000, **TINY_VIT)
    )
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        save_file(own.state_dict(), str(path))
    else:
        torch.save(own.state_dict(), path)
    model = build_model(
        "timm:vit_tiny_patch16_224", 5, in_channels=1, pretrained=str(path), **TINY_VIT
    )
    state = own.state_dict()
    _state_equal(state, model.state_dict(), skip=("head.", "patch_embed.proj.weight"))
    assert model.head.weight.shape == (5, 32)
    stem = model.patch_embed.proj.weight
    assert torch.allclose(stem, state["patch_embed.proj.weight"].sum(1, keepdim=True))
    # Grayscale input x gives the RGB model's tokens for the image x replicated to RGB.
    x = torch.randn(2, 1, 28, 28)
    own.eval(), model.eval()
    with torch.no_grad():
        assert torch.allclose(
            model.forward_features(x), own.forward_features(x.expand(-1, 3, -1, -1)), atol=1e-5
        )
