from pathlib import Path

import pytest
import torch
import yaml

from transferscope import config
from transferscope.data.base import DataInfo
from transferscope.errors import TransferscopeError, TransferscopeWarning
from transferscope.studydir.plan import RunSpec, build_plan
from transferscope.studydir.store import StudyStore

from conftest import requires_fashion
from study_checks import invoke


def info(side=28, task="multiclass", outputs=10):
    return DataInfo("x", task, outputs, (1, side, side), tuple(map(str, range(outputs))))


def infos_for(cfg, side=28):
    out = {t.label: info(side) for t in cfg.targets}
    out[cfg.source.label] = info(side)
    return out


def micro():
    return config.load_preset("micro")


def test_micro_plan_has_every_kind_of_run():
    cfg = micro()
    plan = build_plan(cfg, infos_for(cfg))
    assert len(plan.select(kind="P")) == 1
    for t in ("digits", "fashion-mosaic"):
        assert len(plan.select(kind="P-T", target=t, shuffle=None)) == 2
        assert len(plan.select(kind="RI-T", target=t, shuffle=None)) == 3  # 2 seeds + same init
        same = [r for r in plan.select(kind="RI-T", target=t) if r.same_init_as]
        assert len(same) == 1
        partner = plan.by_id()[same[0].same_init_as]
        assert partner.spec.init_seed in (None, same[0].spec.init_seed)
        assert same[0].spec.init_seed == partner.spec.seed and same[0].seed != partner.seed
        assert {r.shuffle for r in plan.select(kind="P-T", target=t) if r.shuffle} == {
            "b7",
            "pixel",
        }
        assert {r.checkpoint for r in plan.select(kind="P@k-T", target=t)} == {0.0, 0.25, 2.0}
        # The control pair: two seeds fine-tuned from P's untrained init.
        control = [r for r in plan.select(kind="P@k-T", target=t) if r.checkpoint == 0]
        assert sorted(r.seed for r in control) == [0, 1]
        assert {r.spec.parent_checkpoint for r in control} == {"epoch-0"}
    assert len(plan.runs) == 1 + 2 * (2 + 3 + 4 + 2 + 2)


def test_dependencies_point_to_p_and_come_first():
    cfg = micro()
    plan = build_plan(cfg, infos_for(cfg))
    p = plan.select(kind="P")[0]
    seen = set()
    for run in plan.runs:
        assert all(d in seen for d in run.depends_on)
        seen.add(run.id)
        if run.spec.kind in ("P-T", "P@k-T"):
            assert run.depends_on == [p.id]
    ks = {r.spec.parent_checkpoint for r in plan.select(kind="P@k-T")}
    assert ks == {"epoch-0", "epoch-0.25", "epoch-2"}
    # P keeps the checkpoints the trajectory needs.
    assert {0.25, 2.0} <= set(p.spec.train.checkpoint_points)


def test_ids_are_stable_and_skip_defaults():
    cfg = micro()
    a = build_plan(cfg, infos_for(cfg))
    b = build_plan(micro(), infos_for(cfg))
    assert [r.id for r in a.runs] == [r.id for r in b.runs]
    spec = a.runs[1].spec
    # Writing a default value explicitly (as a newly added option would be) keeps the id.
    explicit = spec.model_copy(update={"train": spec.train.model_copy(update={"momentum": 0.9})})
    assert explicit.run_id == spec.run_id
    changed = spec.model_copy(update={"seed": spec.seed + 100})
    assert changed.run_id != spec.run_id
    assert spec.run_id.startswith("PT-digits-")


def test_ids_unique_and_p_change_propagates():
    cfg = micro()
    plan = build_plan(cfg, infos_for(cfg))
    assert len({r.id for r in plan.runs}) == len(plan.runs)
    other = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update={"lr": 0.01})})
    plan2 = build_plan(other, infos_for(cfg))
    pt1 = {r.id for r in plan.select(kind="P-T")}
    pt2 = {r.id for r in plan2.select(kind="P-T")}
    assert not pt1 & pt2  # P-T hashes include their parent P
    assert {r.id for r in plan.select(kind="RI-T")} == {r.id for r in plan2.select(kind="RI-T")}


def test_block_size_must_divide_image():
    cfg = micro()
    with pytest.raises(TransferscopeError, match=r"block_sizes: 7 does not divide the 32x32"):
        build_plan(cfg, infos_for(cfg, side=32))


def test_block_equal_to_side_is_the_unshuffled_run():
    cfg = micro().model_copy(update={"shuffles": config.ShuffleSpec(block_sizes=[28, 7])})
    plan = build_plan(cfg, infos_for(cfg))
    assert {r.shuffle for r in plan.runs if r.shuffle} == {"b7"}


def test_trajectory_point_past_pretraining_is_an_error():
    cfg = micro().model_copy(update={"trajectory": config.TrajectorySpec(checkpoints=[5])})
    with pytest.raises(TransferscopeError, match="past the end of pre-training"):
        build_plan(cfg, infos_for(cfg))


def test_external_p_trajectory_files(tmp_path):
    files = {"0": tmp_path / "a.safetensors", "2": tmp_path / "b.safetensors"}
    cfg = micro().model_copy(
        update={
            "pretrained": config.PretrainedSpec(checkpoints=files),
            "trajectory": config.TrajectorySpec(checkpoints=[0]),
        }
    )
    plan = build_plan(cfg, infos_for(cfg))
    assert not plan.select(kind="P")
    assert {r.spec.init_file for r in plan.select(kind="P-T", shuffle=None)} == {files["2"]}
    assert plan.select(kind="P@k-T")[0].spec.init_file == files["0"]
    bad = cfg.model_copy(update={"trajectory": config.TrajectorySpec(checkpoints=[1])})
    with pytest.raises(TransferscopeError, match=r"no file in pretrained\.checkpoints"):
        build_plan(bad, infos_for(cfg))


@pytest.mark.parametrize("name", ["domainnet", "chexpert"])
def test_paper_presets_plan(name):
    cfg = config.load_preset(name)
    infos = {t.label: info(224) for t in cfg.targets}
    infos[cfg.source.label] = info(224, outputs=1000)
    plan = build_plan(cfg, infos)
    p = plan.select(kind="P")[0]
    assert p.spec.model.name == "fixup-resnet50"
    # 13 trajectory points (0 among them), plus the control pair's second seed at k = 0.
    assert len(plan.select(kind="P@k-T")) == 14 * len(cfg.targets)


def test_runspec_rejects_unknown_fields():
    with pytest.raises(Exception, match="extra"):
        RunSpec.model_validate(
            {"kind": "P", "data": {"name": "x"}, "model": {}, "train": {}, "seed": 0, "bogus": 1}
        )


def test_pixel_shuffle_of_one_channel_images_is_block_one():
    import torch

    from transferscope import block_shuffle, pixel_shuffle

    images = torch.randn(3, 1, 8, 8)
    assert torch.equal(block_shuffle(images, 1, seed=4), pixel_shuffle(images, seed=4))
    cfg = micro().model_copy(
        update={"shuffles": config.ShuffleSpec(block_sizes=[7, 1], pixel=True)}
    )
    plan = build_plan(cfg, infos_for(cfg))
    assert {r.shuffle for r in plan.runs if r.shuffle} == {"b7", "b1"}
    three = {
        t.label: DataInfo("x", "multiclass", 10, (3, 28, 28), tuple("0123456789"))
        for t in cfg.targets
    }
    three[cfg.source.label] = info()
    assert "pixel" in {r.shuffle for r in build_plan(cfg, three).runs}


def test_p_never_shares_its_random_init_with_an_ri_t_run():
    from transferscope.studydir.inputs import build_start_model

    cfg = micro()
    infos = infos_for(cfg)
    plan = build_plan(cfg, infos)
    p = plan.select(kind="P")[0]
    rit_inits = {
        r.spec.init_seed if r.spec.init_seed is not None else r.spec.seed
        for r in plan.select(kind="RI-T")
    }
    assert p.spec.init_seed is not None and p.spec.init_seed not in rit_inits
    # And the weights really differ: the first conv of P's init vs RI-T seed 0's init.
    rit0 = next(r for r in plan.select(kind="RI-T") if r.seed == 0 and r.spec.init_seed is None)
    w_p = build_start_model(p.spec, infos[cfg.source.label], None, None).state_dict()
    w_r = build_start_model(rit0.spec, infos[rit0.target], None, None).state_dict()
    key = next(k for k in w_p if k.endswith("weight") and w_p[k].dim() == 4)
    assert not torch.equal(w_p[key], w_r[key])


def test_control_pair_can_be_turned_off_and_needs_two_seeds():
    cfg = micro().model_copy(update={"control_pair": False})
    plan = build_plan(cfg, infos_for(cfg))
    assert {r.checkpoint for r in plan.select(kind="P@k-T")} == {0.25, 2.0}
    one = micro().model_copy(update={"seeds": [0]})
    assert not [r for r in build_plan(one, infos_for(one)).runs if r.checkpoint == 0]


def test_pt_heads_are_random_from_the_seed_unless_zero_is_asked(monkeypatch, tmp_path):
    from transferscope.studydir import inputs
    from transferscope.studydir.store import StudyStore

    cfg = micro()
    infos = infos_for(cfg)
    plan = build_plan(cfg, infos)
    pts = plan.select(kind="P-T", target="digits", shuffle=None)
    assert {r.spec.head_init for r in pts} == {"random"}
    zero = build_plan(cfg.model_copy(update={"head_init": "zero"}), infos)
    zero_pts = zero.select(kind="P-T", target="digits", shuffle=None)
    assert {r.spec.head_init for r in zero_pts} == {"zero"}
    # The head is part of what a run computes: part of its id.
    assert {r.id for r in pts}.isdisjoint(r.id for r in zero_pts)
    assert {r.id for r in plan.select(kind="RI-T")} == {r.id for r in zero.select(kind="RI-T")}
    # P's weights: its own random init stands in for the trained file.
    p = plan.select(kind="P")[0]
    p_state = inputs.build_start_model(p.spec, infos[cfg.source.label], None, None).state_dict()
    monkeypatch.setattr(inputs.ckpt, "load_weights", lambda path: p_state)
    store = StudyStore(tmp_path)

    def head(run) -> torch.Tensor:
        model = inputs.build_start_model(run.spec, infos["digits"], infos[cfg.source.label], store)
        return model.fc.weight.detach()

    a, b = head(pts[0]), head(pts[1])
    assert a.abs().sum() > 0 and not torch.equal(a, b)  # random, and per seed
    assert torch.equal(head(pts[0]), a)  # reproducible
    assert head(zero_pts[0]).abs().sum() == 0


def test_negative_control_plans_an_untrained_p():
    cfg = micro().model_copy(update={"negative_control": True})
    plan = build_plan(cfg, infos_for(cfg))
    p = plan.select(kind="P")[0]
    assert p.spec.train.epochs == 0 and p.spec.train.checkpoint_points == []
    # No trajectory (P has none), but the control pair and every other kind are there.
    ks = {r.checkpoint for r in plan.select(kind="P@k-T")}
    assert ks == {0.0}
    assert all(r.spec.parent == p.id for r in plan.select(kind="P-T"))
    assert p.id not in {r.id for r in build_plan(micro(), infos_for(cfg)).runs}


def test_more_seeds_add_runs_and_keep_the_old_ones():
    """A study grown from two seeds to three keeps every run of the two-seed plan (same ids and
    roles) and adds the new seed's P-T and RI-T, a same-init RI-T and a control fine-tune for
    it, so that every pair kind (the controlled verdicts' baselines included) grows with the
    seeds; the i-th shuffle seed trains with the i-th study seed."""
    two = micro().model_copy(
        update={"shuffles": micro().shuffles.model_copy(update={"seeds": [0, 1]})}
    )
    three = two.model_copy(update={"seeds": [0, 1, 2]})
    small, large = build_plan(two, infos_for(two)), build_plan(three, infos_for(three))
    before = {r.id: r for r in small.runs}
    after = {r.id: r for r in large.runs}
    assert set(before) <= set(after)
    assert all(after[i].model_dump() == r.model_dump() for i, r in before.items())
    added = [after[i] for i in after if i not in before]
    t = "digits"
    kinds = sorted((r.spec.kind, r.seed, bool(r.same_init_as)) for r in added if r.target == t)
    assert kinds == [("P-T", 2, False), ("P@k-T", 2, False), ("RI-T", 2, False), ("RI-T", 2, True)]
    same = [r for r in large.select(kind="RI-T", target=t) if r.same_init_as]
    first = large.by_id()[same[0].same_init_as]
    assert {r.same_init_as for r in same} == {first.id}
    assert {r.spec.init_seed for r in same} == {first.seed}
    control = [r for r in large.select(kind="P@k-T", target=t) if r.checkpoint == 0]
    assert sorted(r.seed for r in control) == [0, 1, 2]
    # Shuffled replicates: permutation i with study seed i (independent runs, not one seed).
    shuffled = {(r.shuffle_seed, r.seed) for r in small.select(kind="P-T", target=t, shuffle="b7")}
    assert shuffled == {(0, 0), (1, 1)}


def test_own_weights_with_a_preset_that_has_trajectory_points(tmp_path):
    """P given as model.pretrained has no trajectory: the preset's P@k-T runs would all start
    from the same file and share ids ("two planned runs share an id"); they are left out, and a
    warning says so and what would keep them."""
    weights = tmp_path / "p.safetensors"
    for name in ("mini", "micro"):
        cfg = config.load_preset(name, model={"pretrained": str(weights)})
        assert cfg.model.options == config.load_preset(name).model.options  # same model: merged
        with pytest.warns(TransferscopeWarning) as caught:
            plan = build_plan(cfg, infos_for(cfg))
        message = str(caught[0].message)
        points = ", ".join(f"{k:g}" for k in cfg.trajectory.checkpoints)
        assert f"trajectory.checkpoints [{points}] are left out" in message, message
        assert "pretrained.checkpoints" in message
        assert not plan.select(kind="P") and not plan.select(kind="P@k-T")
        assert len({r.id for r in plan.runs}) == len(plan.runs)
        assert {str(r.spec.model.pretrained) for r in plan.select(kind="P-T")} == {str(weights)}


README = Path(__file__).parent.parent / "README.md"


@requires_fashion
def test_readme_own_weights_example(tmp_path, monkeypatch):
    """The README's "your own pre-trained weights" config, as written there (a ViT's weights over
    the mini preset), plans: the preset's Fixup options are not merged into the ViT's, the
    trajectory runs are left out with a warning, and grayscale targets take the RGB weights."""
    import safetensors.torch
    import timm

    text = README.read_text()
    start = text.index("Your own pre-trained weights are P")
    block = text[
        text.index("```yaml\n", start) + 8 : text.index("```", text.index("```yaml", start) + 7)
    ]
    data = yaml.safe_load(block)
    assert data["preset"] == "mini" and data["model"]["pretrained"] == "my-vit.safetensors"
    monkeypatch.chdir(tmp_path)
    vit = timm.create_model(data["model"]["name"].removeprefix("timm:"), **data["model"]["options"])
    safetensors.torch.save_file(vit.state_dict(), "my-vit.safetensors")
    Path("study.yaml").write_text(block)
    result = invoke("run", "study.yaml", "--out", "study", "--plan-only")
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join((result.stdout + result.stderr).split())
    assert "P@k-T runs at trajectory.checkpoints [0, 1, 2] are left out" in said
    # 3 targets x (2 P-T + 3 RI-T + 2 shuffle seeds x 2): no P, no P@k-T, no control pair.
    assert "study mini in study: 27 runs, 27 to train" in said
    plan = StudyStore(tmp_path / "study").read_plan()
    assert {r.spec.model.options["embed_dim"] for r in plan.runs} == {32}
    assert all("widths" not in r.spec.model.options for r in plan.runs)
