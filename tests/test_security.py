"""Nothing a user hands transferscope is executed: weights are read without unpickling code, YAML
without constructors, and our own files hold tensors (safetensors) and plain data only."""

from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import transferscope
from transferscope.config import DataSpec, ModelSpec, TrainSpec
from transferscope.data.base import DataInfo, TensorImageDataset
from transferscope.errors import TransferscopeError
from transferscope.models import build_model
from transferscope.models.weights import read_state
from transferscope.studydir.inputs import build_start_model
from transferscope.studydir.plan import RunSpec
from transferscope.training import checkpoints as ckpt
from transferscope.training.trainer import Trainer

SRC = Path(transferscope.__file__).parent


class Exploit:
    """Unpickling this runs a shell command (``touch MARKER``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious(path: Path, marker: Path, torch_format: bool = True) -> Path:
    obj = {"fc.weight": torch.zeros(2, 2), "payload": Exploit(marker)}
    if torch_format:
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    return path


def test_the_payload_is_live(tmp_path):
    """Control: an unsafe load of the same file does run the command."""
    marker = tmp_path / "ran"
    path = malicious(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, suffix):
    marker = tmp_path / "ran"
    path = malicious(tmp_path / f"evil{suffix}", marker)
    with pytest.raises(TransferscopeError, match=r"refused to load .*evil.*weights_only"):
        read_state(path)
    with pytest.raises(TransferscopeError, match="refused to load"):
        build_model("fixup-small", 10, in_channels=1, pretrained=str(path))
    assert not marker.exists()


def test_a_pickle_named_safetensors_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = malicious(tmp_path / "evil.safetensors", marker, torch_format=False)
    with pytest.raises(TransferscopeError, match=r"cannot read .*evil\.safetensors"):
        read_state(path)
    with pytest.raises(TransferscopeError, match="not a readable safetensors file"):
        ckpt.load_weights(path)
    assert not marker.exists()


def test_checkpoint_of_another_architecture_as_p_lists_the_mismatch(tmp_path):
    path = tmp_path / "p.safetensors"
    save_file(build_model("resnet18", 10).state_dict(), str(path))
    spec = RunSpec(
        kind="P-T",
        data=DataSpec(name="digits"),
        model=ModelSpec(name="fixup-small", options={"widths": [4, 4, 4]}),
        train=TrainSpec(),
        seed=0,
        init_file=path,
    )
    info = DataInfo("digits", "multiclass", 10, (1, 8, 8), tuple("0123456789"))
    with pytest.raises(TransferscopeError) as err:
        build_start_model(spec, info, None, store=None)  # type: ignore[arg-type]
    message = str(err.value)
    assert message.startswith(f"{path} does not fit FixupResNet")
    assert "missing keys: " in message and "unexpected keys: " in message
    assert "conv1.weight: expected (4, 1, 3, 3) vs got (64, 3, 7, 7)" in message


def test_our_own_files_are_safetensors_and_plain_arrays(tmp_path):
    torch.manual_seed(0)
    data = TensorImageDataset(torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)))
    model = build_model("fixup-small", 10, 1, widths=[4, 4, 4])
    spec = TrainSpec(epochs=1, batch_size=8, checkpoint_points=[0.5])
    Trainer(spec, "multiclass", run_dir=tmp_path, keep_resume=True).fit(model, data, data)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert {p.suffix for p in files} == {".safetensors", ".jsonl", ".npy"}
    for p in files:
        if p.suffix == ".safetensors":
            ckpt.load_weights(p)  # parses as safetensors: a JSON header and raw tensor bytes
            assert not p.read_bytes().startswith(b"\x80"), f"{p} is a pickle"
        elif p.suffix == ".npy":
            np.load(p, allow_pickle=False)


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def test_source_never_unpickles_evaluates_or_loads_yaml_unsafely():
    """A static check of every module: the rules above hold for code added later too."""
    problems = []
    torch_loads = 0
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                bad = {"pickle", "dill", "marshal", "shelve", "cloudpickle"} & set(mods)
                if bad:
                    problems.append(f"{path.name}:{node.lineno} imports {bad}")
        for call in _calls(tree):
            name = _name(call.func)
            kw = {k.arg: k.value for k in call.keywords}
            where = f"{path.relative_to(SRC)}:{call.lineno}"
            if name in ("eval", "exec", "yaml.load", "yaml.unsafe_load", "yaml.full_load"):
                problems.append(f"{where} calls {name}")
            if name == "torch.load":
                torch_loads += 1
                value = kw.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if name in ("np.load", "numpy.load"):
                value = kw.get("allow_pickle")
                if isinstance(value, ast.Constant) and value.value is True:
                    problems.append(f"{where}: np.load with allow_pickle=True")
    assert not problems, problems
    assert torch_loads >= 1  # the check sees the one place that reads torch files
