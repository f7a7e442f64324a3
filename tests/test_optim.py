"""Training recipes' optimizers: timm's parameter groups for AdamW, weight decay and layer-wise lr
decay, Fixup's scalars at lr/10 with either optimizer, and warmup."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferscope.config import TrainSpec, from_dict
from transferscope.errors import TransferscopeError
from transferscope.models import build_model
from transferscope.training.optim import make_optimizer, parameter_groups
from transferscope.training.schedule import lr_at

VIT = {"img_size": 8, "patch_size": 4, "embed_dim": 8, "depth": 3, "num_heads": 2}


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return build_model("timm:vit_tiny_patch16_224", 4, 1, **VIT, mlp_ratio=2.0)


def groups_by_name(model: nn.Module, groups: list[dict]) -> dict[str, tuple[float, float]]:
    """Parameter name -> (lr scale, weight decay) of the group holding it."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for g in groups:
        scale = g.get("lr_factor", g.get("lr_scale", 1.0))
        for p in g["params"]:
            assert names[id(p)] not in out, f"{names[id(p)]} in two groups"
            out[names[id(p)]] = (round(float(scale), 12), g["weight_decay"])
    return out


def test_adamw_layer_decay_groups_are_timms_for_a_small_vit() -> None:
    from timm.optim import create_optimizer_v2

    model = tiny_vit()
    spec = TrainSpec(
        optimizer="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.65, warmup_epochs=1
    )
    ours = make_optimizer(model, spec)
    timms = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.65)
    assert type(ours) is type(timms) is torch.optim.AdamW
    got, want = groups_by_name(model, ours.param_groups), groups_by_name(model, timms.param_groups)
    assert got == want and set(got) == {n for n, _ in model.named_parameters()}
    # What timm's rule means here, spelt out: 3 blocks between the embedding and the head.
    assert got["head.weight"] == (1.0, 0.05)
    assert got["blocks.2.mlp.fc1.weight"] == (0.65, 0.05)
    assert got["blocks.0.attn.qkv.weight"] == (round(0.65**3, 12), 0.05)
    assert got["patch_embed.proj.weight"] == (round(0.65**4, 12), 0.05)
    for name in ("pos_embed", "cls_token", "blocks.1.norm1.weight", "blocks.1.attn.qkv.bias"):
        assert got[name][1] == 0.0, name
    assert ours.defaults["betas"] == (0.9, 0.999) and ours.defaults["lr"] == 1e-3


def test_adamw_without_layer_decay_leaves_norms_biases_and_embeddings_undecayed() -> None:
    model = tiny_vit()
    got = groups_by_name(model, parameter_groups(model, TrainSpec(optimizer="adamw")))
    undecayed = {n for n, (_, wd) in got.items() if wd == 0}
    params = dict(model.named_parameters())
    assert undecayed == {n for n, p in params.items() if p.ndim <= 1} | {"pos_embed", "cls_token"}
    assert {scale for scale, _ in got.values()} == {1.0}
    # The option turns it off; SGD decays every weight unless asked not to.
    every = TrainSpec(optimizer="adamw", decay_norms_and_biases=True)
    assert all(
        wd == 1e-4 for _, wd in groups_by_name(model, parameter_groups(model, every)).values()
    )
    sgd = groups_by_name(model, parameter_groups(model, TrainSpec(decay_norms_and_biases=False)))
    assert {n for n, (_, wd) in sgd.items() if wd == 0} == undecayed


def test_layer_decay_on_a_fixup_resnet_follows_its_blocks_and_keeps_scalars_at_a_tenth() -> None:
    """A model without a timm group_matcher: stem, residual blocks and head from its layout
    (timm's fallback would put every parameter in one layer and decay nothing)."""
    model = build_model("fixup-small", 5, 1, widths=[4, 8, 8])
    for optimizer in ("sgd", "adamw"):
        spec = TrainSpec(optimizer=optimizer, layer_decay=0.5, scalar_lr_factor=0.1)
        got = groups_by_name(model, parameter_groups(model, spec))
        assert got["fc.weight"][0] == 1.0
        assert got["layer3.0.conv1.weight"][0] == 0.5
        assert got["layer2.0.conv2.weight"][0] == 0.25
        assert got["layer1.0.conv1.weight"][0] == 0.125
        assert got["conv1.weight"][0] == 0.0625
        # Fixup's scalars: their block's scale x scalar_lr_factor.
        assert got["layer2.0.scale"][0] == 0.025
        assert got["layer1.0.bias1a"][0] == 0.0125
    # Without layer decay the paper's two groups: every weight at lr (decayed), scalars at lr/10.
    opt = make_optimizer(model, TrainSpec())
    assert type(opt) is torch.optim.SGD and not opt.defaults["nesterov"]
    assert [g["lr_factor"] for g in opt.param_groups] == [1.0, 0.1]
    assert all(g["weight_decay"] == 1e-4 for g in opt.param_groups)


def test_layer_decay_on_a_torchvision_resnet_puts_the_stem_norm_with_the_stem() -> None:
    model = build_model("resnet18", 5, 3)
    got = groups_by_name(model, parameter_groups(model, TrainSpec(layer_decay=0.5)))
    assert got["bn1.weight"][0] == got["conv1.weight"][0] == 0.5**9  # 8 blocks, then the stem
    assert got["layer4.1.bn2.bias"][0] == 0.5 and got["fc.bias"][0] == 1.0


def test_layer_decay_without_known_layers_is_a_clear_error() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(TransferscopeError, match="layer_decay needs the model's layers"):
        parameter_groups(model, TrainSpec(layer_decay=0.7))


def test_warmup_rises_linearly_then_the_cosine_runs_over_the_rest() -> None:
    spec = TrainSpec(epochs=10, lr=1.0, schedule="cosine", warmup_epochs=2)
    assert [lr_at(spec, e) for e in (0, 0.5, 1, 2)] == pytest.approx([0, 0.25, 0.5, 1])
    assert lr_at(spec, 6) == pytest.approx(0.5) and lr_at(spec, 10) == pytest.approx(0)
    const = TrainSpec(epochs=4, lr=0.1, warmup_epochs=0.5)
    assert [lr_at(const, e) for e in (0.25, 0.5, 3)] == pytest.approx([0.05, 0.1, 0.1])
    steps = TrainSpec(epochs=4, lr=1, schedule="multistep", milestones=[2], warmup_epochs=1)
    assert [lr_at(steps, e) for e in (0.5, 1, 2)] == pytest.approx([0.5, 1, 0.1])


def test_new_recipe_keys_at_their_defaults_keep_run_ids_and_bad_values_are_named() -> None:
    # Run ids hash the resolved config with default values left out.
    explicit = TrainSpec(
        optimizer="sgd", warmup_epochs=0, layer_decay=None, betas=[0.9, 0.999], momentum=0.9
    )
    assert explicit.model_dump(mode="json", exclude_defaults=True) == {}
    assert TrainSpec(optimizer="adamw").model_dump(mode="json", exclude_defaults=True) == {
        "optimizer": "adamw"
    }
    base = {"source": {"name": "digits"}, "targets": [{"name": "fashion-mnist"}]}
    with pytest.raises(TransferscopeError, match=r"finetune.optimizer: Input should be 'sgd' or"):
        from_dict({**base, "finetune": {"optimizer": "adam"}})
    with pytest.raises(TransferscopeError, match=r"finetune: .*warmup_epochs \(5\) is longer"):
        from_dict({**base, "finetune": {"epochs": 3, "warmup_epochs": 5}})
    with pytest.raises(TransferscopeError, match=r"randinit.layer_decay"):
        from_dict({**base, "randinit": {"layer_decay": 1.5}})
    with pytest.raises(TransferscopeError, match=r"pretrain.betas: each beta"):
        from_dict({**base, "pretrain": {"betas": [0.9, 1.0]}})
