import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from transferscope.cli import app
from transferscope.data import digits, fashion_mnist, mosaic, registry
from transferscope.errors import TransferscopeError

from conftest import requires_fashion


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, gz: bool = False) -> None:
    magic = magic if magic is not None else (0x0803 if array.ndim == 3 else 0x0801)
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw += array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def fake_fashion(root: Path, n_train: int = 30, n_test: int = 40, gz: bool = False) -> None:
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            root / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), gz=gz
        )
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz=gz)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_reads_generated_files(tmp_path, gz):
    fake_fashion(tmp_path, gz=gz)
    splits = registry.load("fashion-mnist", root=tmp_path)
    assert splits.sizes() == {"train": 30, "test": 40}
    x, y = splits.train[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert int(y) == 3
    assert splits.info.task == "multiclass" and splits.info.num_outputs == 10


def test_wrong_magic_names_file(tmp_path):
    fake_fashion(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte"
    write_idx(bad, np.arange(30) % 10, magic=0x0803)
    with pytest.raises(TransferscopeError, match=r"train-labels-idx1-ubyte' has magic number"):
        registry.load("fashion-mnist", root=tmp_path)


def test_truncated_idx_names_file(tmp_path):
    fake_fashion(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(TransferscopeError, match=r"t10k-images-idx3-ubyte' holds .* truncated"):
        registry.load("fashion-mnist", root=tmp_path)


def test_header_only_truncation(tmp_path):
    fake_fashion(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(TransferscopeError, match="truncated"):
        registry.load("fashion-mnist", root=tmp_path)


def test_label_count_mismatch(tmp_path):
    fake_fashion(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(29))
    with pytest.raises(TransferscopeError, match=r"30 images .* 29 labels"):
        registry.load("fashion-mnist", root=tmp_path)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(TransferscopeError, match="dataset-fashion-mnist"):
        registry.load("fashion-mnist", root=tmp_path)


def test_env_var_is_searched_first(tmp_path, monkeypatch):
    fake_fashion(tmp_path, n_train=12)
    monkeypatch.setenv("TRANSFERSCOPE_DATA", str(tmp_path))
    assert fashion_mnist.locate()["train_images"].parent == tmp_path
    assert len(registry.load("fashion-mnist").train) == 12


def test_subsets_are_seeded(tmp_path):
    fake_fashion(tmp_path, n_train=30)
    a = registry.load("fashion-mnist", root=tmp_path, seed=0, train_size=10)
    b = registry.load("fashion-mnist", root=tmp_path, seed=0, train_size=10)
    c = registry.load("fashion-mnist", root=tmp_path, seed=1, train_size=10)
    assert torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.train.images, c.train.images)
    assert len(a.train) == 10 and len(a.test) == 40


def test_digits_split_is_deterministic_stratified_and_upsampled():
    a = registry.load("digits", seed=0)
    b = registry.load("digits", seed=0)
    c = registry.load("digits", seed=1)
    assert torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.train.targets, c.train.targets)
    assert len(a.train) + len(a.test) == 1797
    assert a.train.images.shape[1:] == (1, 28, 28)
    train_frac = torch.bincount(a.train.targets, minlength=10) / len(a.train)
    test_frac = torch.bincount(a.test.targets, minlength=10) / len(a.test)
    assert torch.allclose(train_frac, test_frac, atol=0.01)
    assert abs(a.train.images.mean().item()) < 1e-4
    assert registry.load("digits", image_size=32).info.image_shape == (1, 32, 32)
    # Each class sends round(n * 0.3) of its scans to test.
    per_class = np.bincount(digits.load_arrays()[1])
    test_counts = torch.bincount(a.test.targets, minlength=10).numpy()
    assert test_counts.tolist() == [round(n * 0.3) for n in per_class]
    assert len(a.test) == 539


def test_digits_are_scikit_learns_read_without_importing_it():
    from sklearn.datasets import load_digits

    scans, labels = digits.load_arrays()
    bunch = load_digits()
    assert np.array_equal(scans, bunch.images) and np.array_equal(labels, bunch.target)
    # In a fresh interpreter, loading digits leaves scikit-learn unimported (~1.8 s saved).
    code = (
        "import sys; from transferscope.data import registry; registry.load('digits', seed=0); "
        "print('sklearn' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_make_mosaics_labels_and_layout():
    items = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 4, 4).contiguous()
    labels = np.array([0, 1, 2, 3, 4, 5])
    images, targets = mosaic.make_mosaics(items, labels, count=50, classes=(1, 4), seed=3)
    assert images.shape == (50, 1, 4, 4) and targets.shape == (50, 2)
    for img, tgt in zip(images, targets, strict=True):
        # Each quadrant is one item (constant value = its index = its label here).
        quads = {int(img[0, r, c]) for r in (0, 2) for c in (0, 2)}
        assert tgt.tolist() == [float(1 in quads), float(4 in quads)]
        assert torch.all(img[0, :2, :2] == img[0, 0, 0])


@requires_fashion
def test_fashion_mosaic_is_multilabel_deterministic_and_balanced():
    a = registry.load("fashion-mosaic", train_size=300, test_size=100)
    b = registry.load("fashion-mosaic", train_size=300, test_size=100)
    assert torch.equal(a.train.images, b.train.images)
    assert a.info.task == "multilabel" and a.info.num_outputs == 5
    assert a.train.targets.dtype == torch.float32
    frac = a.train.targets.mean(0)
    assert torch.all((frac > 0.2) & (frac < 0.5))  # 1 - 0.9**4 = 0.34 in expectation
    assert (a.train.targets.sum(1) >= 2).any()


@requires_fashion
def test_fashion_rotated_turns_unseen_items_and_keeps_their_labels():
    a = registry.load("fashion-rotated", train_size=300, test_size=100)
    assert len(a.train) == 300 and len(a.test) == 100
    assert a.info.task == "multiclass" and a.info.num_outputs == 10
    assert torch.equal(
        a.train.images, registry.load("fashion-rotated", train_size=300).train.images
    )
    # Every image is a Fashion-MNIST test item turned by a quarter: turned back, it is one of
    # them, with that item's label; train and test never share an item.
    arrays = fashion_mnist.load_arrays()
    items = fashion_mnist.to_tensor(arrays["test_images"]).flatten(1)
    matched = []
    for split in (a.train, a.test):
        back = torch.rot90(split.images, -1, dims=(2, 3)).flatten(1)
        match = torch.cdist(back, items).argmin(1)
        assert torch.allclose(back, items[match], atol=1e-5)
        assert torch.equal(
            torch.from_numpy(arrays["test_labels"][match.numpy()]).long(), split.targets
        )
        matched.append(set(match.tolist()))
    assert not matched[0] & matched[1]
    with pytest.raises(TransferscopeError, match="quarter_turns=4"):
        registry.load("fashion-rotated", quarter_turns=4)


def test_mosaic_bad_classes():
    with pytest.raises(TransferscopeError, match="class indices"):
        registry.load("fashion-mosaic", classes=[3, 3])


def test_unknown_source_and_option_suggest_nearest():
    with pytest.raises(TransferscopeError, match="did you mean 'digits'"):
        registry.load("digit")
    with pytest.raises(TransferscopeError, match="did you mean 'test_fraction'"):
        registry.load("digits", test_fracton=0.2)


def test_cli_data_show_digits():
    result = CliRunner().invoke(app, ["data", "show", "digits"])
    assert result.exit_code == 0, result.output
    assert "multiclass" in result.output and "1258" in result.output


@requires_fashion
@pytest.mark.parametrize(
    ("name", "task"), [("fashion-mnist", "multiclass"), ("fashion-mosaic", "multilabel")]
)
def test_cli_data_show_fashion(name, task):
    result = CliRunner().invoke(app, ["data", "show", name])
    assert result.exit_code == 0, result.output
    assert task in result.output


def test_cli_unknown_source_is_one_line_exit_2():
    result = CliRunner().invoke(app, ["data", "show", "fashion-mnsit"])
    assert result.exit_code == 2
    assert "did you mean 'fashion-mnist'" in result.output
    assert "Traceback" not in result.output
