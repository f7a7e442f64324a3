import json
from pathlib import Path

import pytest
import yaml

from transferscope import config
from transferscope.errors import TransferscopeError

MINIMAL = {"source": {"name": "fashion-mnist"}, "targets": [{"name": "digits"}]}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", config.preset_names())
def test_every_preset_validates_and_round_trips(name):
    cfg = config.load_preset(name)
    again = config.from_dict(yaml.safe_load(config.to_yaml(cfg)))
    assert again == cfg


def test_presets_shipped():
    assert {"mini", "micro", "domainnet", "chexpert"} <= set(config.preset_names())


def test_misspelt_key_names_key_location_and_nearest(tmp_path):
    path = write(tmp_path, {**MINIMAL, "pretrain": {"epohcs": 3}})
    with pytest.raises(TransferscopeError) as e:
        config.load(path)
    msg = str(e.value)
    assert "'epohcs'" in msg and "pretrain" in msg and "'epochs'" in msg
    assert str(path) in msg
    assert "\n" not in msg


def test_misspelt_key_inside_a_list_item(tmp_path):
    data = {**MINIMAL, "targets": [{"name": "digits"}, {"name": "x", "optoins": {}}]}
    with pytest.raises(TransferscopeError, match=r"targets\[1\].*'options'"):
        config.load(write(tmp_path, data))


def test_misspelt_top_level_key(tmp_path):
    with pytest.raises(TransferscopeError, match="'seeds'"):
        config.load(write(tmp_path, {**MINIMAL, "seedz": [0]}))


def test_unknown_analysis_name(tmp_path):
    with pytest.raises(TransferscopeError, match="'criticality'"):
        config.load(write(tmp_path, {**MINIMAL, "analyses": {"critcality": {}}}))


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"pretrain": {"epochs": -1}}, "pretrain.epochs"),
        ({"targets": []}, "targets"),
        ({"finetune": {"lr": "fast"}}, "finetune.lr"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"shuffles": {"block_sizes": [0]}}, "shuffles.block_sizes"),
        ({"trajectory": {"checkpoints": [-1]}}, "trajectory.checkpoints"),
    ],
)
def test_bad_values_name_the_field(tmp_path, patch, field):
    with pytest.raises(TransferscopeError) as e:
        config.load(write(tmp_path, {**MINIMAL, **patch}))
    assert field in str(e.value)


def test_preset_file_override_merges(tmp_path):
    cfg = config.load(write(tmp_path, {"preset": "mini", "pretrain": {"epochs": 1}}))
    base = config.load_preset("mini")
    assert cfg.pretrain.epochs == 1
    assert cfg.pretrain.lr == base.pretrain.lr
    assert cfg.targets == base.targets


def test_duplicate_target_ids_rejected(tmp_path):
    data = {**MINIMAL, "targets": [{"name": "digits"}, {"name": "digits"}]}
    with pytest.raises(TransferscopeError, match="id"):
        config.load(write(tmp_path, data))


def test_target_label_includes_domain():
    spec = config.DataSpec(name="domainnet", options={"domain": "clipart"})
    assert spec.label == "domainnet-clipart"


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("source: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(TransferscopeError, match="not valid YAML"):
        config.load(path)


def test_missing_file_and_unknown_preset():
    with pytest.raises(TransferscopeError, match="does not exist"):
        config.load("/nonexistent/study.yaml")
    with pytest.raises(TransferscopeError, match="did you mean 'mini'"):
        config.load_preset("minii")


def test_resolved_yaml_writes_every_default():
    text = config.to_yaml(config.load_preset("micro"))
    data = yaml.safe_load(text)
    assert data["finetune"]["momentum"] == 0.9
    assert data["analyses"]["criticality"]["tolerance"] == 1.01


# --------------------------------------------------------------------------------------------
# ids are names, never paths


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("x/../../../../ESCAPED", "it holds '/', which a name may not"),
        ("a/b", "it holds '/'"),
        ("..", "it starts with '.', '-' or '_'"),
        (".hidden", "it starts with '.'"),
        ("a\\b", "it holds '\\\\'"),
        ("new\nline", "it holds '\\n'"),
        ("x" * 300, "it has 300 characters (at most 64)"),
        ("", "it is empty"),
    ],
)
def test_ids_are_names_not_paths(tmp_path, value, problem):
    data = {**MINIMAL, "targets": [{"name": "digits", "id": value}]}
    with pytest.raises(TransferscopeError) as e:
        config.load(write(tmp_path, data))
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 'study.yaml'}: targets[0].id: not a name: {problem}")
    assert "letters, digits, '-', '_' and '.' only" in message and "\n" not in message
    assert len(message) < 400  # a 300-character id is shown cut short


def test_an_id_made_from_a_name_and_a_domain_is_checked_too():
    with pytest.raises(TransferscopeError, match=r"targets\[0\]: the id 'domainnet-real/x' made"):
        config.from_dict(
            {**MINIMAL, "targets": [{"name": "domainnet", "options": {"domain": "real/x"}}]}
        )
    config.from_dict(  # an id of its own makes it fine
        {**MINIMAL, "targets": [{"name": "domainnet", "id": "dn", "options": {"domain": "a/b"}}]}
    )


def test_every_write_resolves_inside_the_study(tmp_path):
    """plan.json holds the run ids every run directory is named by: one edited by hand to a path
    is refused when read, and the directory helpers refuse anything but one name."""
    from transferscope import paths
    from transferscope.studydir.store import StudyStore

    for bad in ("../../ESCAPED", "a/b", "..", ".", "", "x" * 300):
        with pytest.raises(TransferscopeError, match="is not a file name inside"):
            paths.run_dir(tmp_path, bad)
    for bad in ("../../ESCAPED", "a/b", "x" * 300):
        with pytest.raises(TransferscopeError, match="is not a file name inside"):
            paths.mistake_examples_path(tmp_path, bad)
    assert paths.run_dir(tmp_path, "PT-digits-0123456789").parent == tmp_path / "runs"
    (tmp_path / "study.yaml").write_text("name: x\n")
    run = {"id": "../../ESCAPED", "target": "t", "seed": 0, "spec": {}}
    (tmp_path / "plan.json").write_text(json.dumps({"runs": [run]}))
    with pytest.raises(TransferscopeError, match=r"plan.json is damaged \(runs.0.id: String"):
        StudyStore(tmp_path).read_plan()


# --------------------------------------------------------------------------------------------
# seeds and sizes, checked when the config is read


@pytest.mark.parametrize(
    ("patch", "key", "problem"),
    [
        ({"seeds": [2**64]}, "seeds[0]", "a seed is an integer from 0 to 4294967295"),
        ({"seeds": [0, -1]}, "seeds[1]", "a seed is an integer from 0 to 4294967295"),
        ({"pretrain_seed": 2**32}, "pretrain_seed", "a seed is an integer from 0 to"),
        ({"shuffles": {"seeds": [-5]}}, "shuffles.seeds[0]", "a seed is an integer from 0 to"),
        ({"analyses": {"domain": {"subset_seed": 2**40}}}, "analyses.domain.subset_seed", "seed"),
        (
            {"source": {"name": "fashion-mnist", "options": {"train_size": -5}}},
            "source: data source 'fashion-mnist': option train_size",
            "should be greater than 0 (positive int | None), got -5",
        ),
        (
            {"source": {"name": "fashion-mnist", "options": {"train_size": 0}}},
            "option train_size",
            "should be greater than 0",
        ),
        (
            {"source": {"name": "fashion-mnist", "options": {"test_size": -1}}},
            "option test_size",
            "should be greater than 0",
        ),
        (
            {"targets": [{"name": "fashion-mosaic", "options": {"train_size": 0}}]},
            "targets[0]: data source 'fashion-mosaic': option train_size",
            "should be greater than 0",
        ),
        (
            {"targets": [{"name": "digits", "options": {"image_size": -28}}]},
            "option image_size",
            "should be greater than 0",
        ),
        (
            {"targets": [{"name": "chexpert", "options": {"split_seed": 2**32}}]},
            "option split_seed",
            "a seed is an integer from 0 to 4294967295 (2^32 - 1), got 4294967296",
        ),
        ({"pretrain": {"batch_size": 0}}, "pretrain.batch_size", "greater than or equal to 1"),
        ({"finetune": {"max_train_examples": -3}}, "finetune.max_train_examples", "greater"),
        (
            {"pretrain": {"checkpoint_points": [float("inf")]}},
            "pretrain.checkpoint_points",
            "finite",
        ),
        ({"pretrained": {"checkpoints": {"last": "p.pt"}}}, "pretrained.checkpoints", "'last'"),
    ],
)
def test_seeds_and_sizes_are_one_line_naming_the_key(tmp_path, patch, key, problem):
    with pytest.raises(TransferscopeError) as e:
        config.load(write(tmp_path, {**MINIMAL, **patch}))
    message = str(e.value)
    assert key in message and problem in message, message
    assert "\n" not in message and message.startswith(str(tmp_path / "study.yaml"))


def test_the_largest_seed_is_taken():
    cfg = config.from_dict({**MINIMAL, "seeds": [0, 2**32 - 1], "pretrain_seed": 2**32 - 1})
    assert cfg.seeds == [0, 4294967295]


# --------------------------------------------------------------------------------------------
# a config over a preset


def test_a_section_naming_another_model_or_source_replaces_the_presets(tmp_path):
    vit = {"img_size": 28, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}
    cfg = config.load(
        write(
            tmp_path,
            {"preset": "mini", "model": {"name": "timm:vit_tiny_patch16_224", "options": vit}},
        )
    )
    assert cfg.model.options == vit  # not the preset's Fixup widths and stem_stride
    cfg = config.load(
        write(
            tmp_path,
            {
                "preset": "micro",
                "source": {"name": "digits"},
                "targets": [{"name": "fashion-mosaic"}],
            },
        )
    )
    assert cfg.source.options == {}  # not micro's fashion-mnist train_size / test_size
    cfg = config.load(
        write(tmp_path, {"preset": "mini", "model": {"options": {"widths": [4, 4, 4]}}})
    )
    assert cfg.model.options == {"widths": [4, 4, 4], "stem_stride": 2}  # same model: merged
    cfg = config.load(write(tmp_path, {"preset": "micro", "source": {"name": "fashion-mnist"}}))
    assert cfg.source.options == {"train_size": 2000, "test_size": 500}


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (
            {"preset": "mini", "model": {"options": {"width": [4]}}},
            "model: model 'fixup-small' has no option 'width' (did you mean 'widths'?); valid "
            "options: widths, blocks_per_stage, stem_stride (model.options: stem_stride, widths "
            "from preset 'mini', width from FILE)",
        ),
        (
            {"preset": "micro", "source": {"options": {"train_sise": 5}}},
            "source: data source 'fashion-mnist' has no option 'train_sise' (did you mean "
            "'train_size'?); valid options: train_size, test_size (source.options: test_size, "
            "train_size from preset 'micro', train_sise from FILE)",
        ),
        (
            {
                "preset": "micro",
                "source": {"name": "digits", "options": {"train_size": 5}},
                "targets": [{"name": "fashion-mosaic"}],
            },
            "source: data source 'digits' has no option 'train_size'",
        ),
        (
            {"preset": "micro", "targets": [{"name": "digits", "options": {"size": 5}}]},
            "targets[0]: data source 'digits' has no option 'size' (did you mean 'image_size'?); "
            "valid options: test_fraction, image_size (targets from FILE)",
        ),
    ],
)
def test_a_wrong_option_says_where_it_came_from(tmp_path, data, said):
    path = write(tmp_path, data)
    with pytest.raises(TransferscopeError) as e:
        config.load(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and said.replace("FILE", str(path)) in message, message
