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
