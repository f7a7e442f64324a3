"""The folder-based sources: imagefolder, domainnet, chexpert and torchvision:<Name>.

Fixtures are written in the exact on-disk formats (see fixtures_data.py); nothing touches the
network.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from transferscope.data import chexpert, domainnet, imagefolder, torchvision_source
from transferscope.data.base import TensorImageDataset
from transferscope.data.folder_common import FileImageDataset
from transferscope.errors import TransferscopeError

from fixtures_data import (
    CHEXPERT_HEADER,
    chexpert_row,
    make_chexpert,
    make_domainnet,
    make_imagefolder,
    make_torchvision_mnist,
    write_chexpert_csv,
)

SIZE = 16


def _paths(ds: FileImageDataset) -> list[str]:
    return [Path(p).name for p in ds.paths]


# --- imagefolder -------------------------------------------------------------------------------


def test_imagefolder_stratified_split(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "tree", {"cat": 10, "dog": 5, "emu": 1})
    splits = imagefolder.build(root, seed=3, image_size=SIZE, test_fraction=0.2)
    assert splits.info.class_names == ("cat", "dog", "emu")
    assert splits.info.num_outputs == 3 and splits.info.task == "multiclass"
    assert splits.dev is None
    train_t, test_t = splits.train.targets.tolist(), splits.test.targets.tolist()
    # round(10 * 0.2) = 2 cats, round(5 * 0.2) = 1 dog; the lone emu stays in train.
    assert sorted(test_t) == [0, 0, 1]
    assert sorted(train_t) == [0] * 8 + [1] * 4 + [2]
    assert not set(_paths(splits.train)) & set(_paths(splits.test))
    for ds in (splits.train, splits.test):
        for name, label in zip(_paths(ds), ds.targets.tolist(), strict=True):
            assert name.startswith(splits.info.class_names[label])

    again = imagefolder.build(root, seed=3, image_size=SIZE)
    assert _paths(again.test) == _paths(splits.test)
    other = [_paths(imagefolder.build(root, seed=s, image_size=SIZE).test) for s in range(4, 9)]
    assert any(o != _paths(splits.test) for o in other)


@pytest.mark.parametrize("channels", [3, 1])
def test_imagefolder_sample_shape_dtype(tmp_path: Path, channels: int) -> None:
    root = make_imagefolder(tmp_path / "tree", {"a": 3, "b": 3})
    splits = imagefolder.build(root, seed=0, image_size=SIZE, channels=channels)
    assert splits.info.image_shape == (channels, SIZE, SIZE)
    assert len(splits.info.mean) == channels
    for ds in (splits.train, splits.test):
        image, target = ds[0]
        assert image.shape == (channels, SIZE, SIZE) and image.dtype == torch.float32
        assert target.dtype == torch.int64 and target.ndim == 0
    # DataLoader workers receive the dataset pickled.
    clone = pickle.loads(pickle.dumps(splits.train))
    assert clone[0][0].shape == (channels, SIZE, SIZE)


def test_imagefolder_uses_given_train_test_and_val(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "t" / "train", {"a": 3, "b": 2})
    make_imagefolder(tmp_path / "t" / "test", {"a": 1, "b": 1})
    make_imagefolder(tmp_path / "t" / "val", {"b": 2})
    splits = imagefolder.build(tmp_path / "t", seed=0, image_size=SIZE, augment=False)
    assert splits.sizes() == {"train": 5, "test": 2, "dev": 2}
    assert splits.info.class_names == ("a", "b")
    assert splits.dev is not None and splits.dev.targets.tolist() == [1, 1]


def test_imagefolder_errors(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "half" / "train", {"a": 2})
    with pytest.raises(TransferscopeError, match="no test/ folder"):
        imagefolder.build(tmp_path / "half", seed=0)
    make_imagefolder(tmp_path / "t", {"a": 2})
    (tmp_path / "t" / "empty").mkdir()
    with pytest.raises(TransferscopeError, match="empty holds no images"):
        imagefolder.build(tmp_path / "t", seed=0)
    with pytest.raises(TransferscopeError, match="needs root"):
        imagefolder.build(None, seed=0)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "tree", {"a": 4, "b": 4})
    splits = imagefolder.build(root, seed=0, image_size=SIZE)
    bad = Path(splits.train.paths[0])
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # truncated JPEG
    with pytest.raises(TransferscopeError, match=re.escape(f"cannot read image {bad}")):
        splits.train[0]
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(TransferscopeError, match=re.escape(str(bad))):
        splits.train[0]


# --- domainnet ---------------------------------------------------------------------------------


def test_domainnet_labels_and_sizes(tmp_path: Path) -> None:
    root = make_domainnet(tmp_path / "dn", n_train=4, n_test=2)
    splits = domainnet.build(root, seed=0, image_size=SIZE, subsample=None)
    assert splits.info.name == "domainnet-real"
    assert splits.info.class_names == ("aircraft_carrier", "airplane", "zebra")
    assert splits.info.num_outputs == 3
    assert splits.sizes() == {"train": 12, "test": 6}
    assert splits.train.targets.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert _paths(splits.train)[0] == "real_001_000001.jpg"
    image, target = splits.test[5]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert target.dtype == torch.int64 and int(target) == 2


def test_domainnet_num_outputs_is_max_label_plus_one(tmp_path: Path) -> None:
    root = make_domainnet(tmp_path / "dn", classes=("a", "b"), n_train=1, n_test=1)
    for split in ("train", "test"):  # relabel b as 4: labels 1..3 never occur
        f = root / f"real_{split}.txt"
        f.write_text(f.read_text().replace(" 1\n", " 4\n"))
    info = domainnet.build(root, seed=0, image_size=SIZE).info
    assert info.num_outputs == 5
    assert info.class_names == ("a", "class_1", "class_2", "class_3", "b")


def test_domainnet_subsample_determinism(tmp_path: Path) -> None:
    root = make_domainnet(tmp_path / "dn", classes=[f"c{i}" for i in range(5)], n_train=4)

    def subset(seed: int) -> tuple[list[str], list[str]]:
        s = domainnet.build(root, seed=0, image_size=SIZE, subsample=6, subsample_seed=seed)
        return _paths(s.train), _paths(s.test)

    a, b = subset(2020), subset(2020)
    assert a == b and len(a[0]) == 6 and len(a[1]) == 6
    assert subset(7) != a
    full = domainnet.build(root, seed=0, image_size=SIZE, subsample=None)
    assert set(a[0]) <= set(_paths(full.train)) and set(a[1]) <= set(_paths(full.test))
    # The run seed must not change the data: every run of a study sees the same images.
    s1 = domainnet.build(root, seed=1, image_size=SIZE, subsample=6)
    assert (_paths(s1.train), _paths(s1.test)) == a


def test_domainnet_missing_split_file(tmp_path: Path) -> None:
    root = make_domainnet(tmp_path / "dn", domain="clipart", n_train=1, n_test=1)
    with pytest.raises(TransferscopeError) as err:
        domainnet.build(root, seed=0, domain="clipar")
    msg = str(err.value)
    assert str(root / "clipar_train.txt") in msg and "<domain>_train.txt" in msg
    assert "did you mean 'clipart'" in msg


def test_domainnet_missing_image(tmp_path: Path) -> None:
    root = make_domainnet(tmp_path / "dn", n_train=2, n_test=2)
    missing = root / "real" / "airplane" / "real_002_000002.jpg"
    missing.unlink()
    with pytest.raises(TransferscopeError) as err:
        domainnet.build(root, seed=0)
    msg = str(err.value)
    assert "real_train.txt, line 4" in msg and str(missing) in msg


def test_domainnet_registry_end_to_end(tmp_path: Path) -> None:
    from transferscope.data import registry

    root = make_domainnet(tmp_path / "dn", n_train=3, n_test=2)
    splits = registry.load("domainnet", root=str(root), image_size=SIZE, subsample=4)
    assert splits.sizes() == {"train": 4, "test": 4}
    assert splits.train[0][0].shape == (3, SIZE, SIZE)
    with pytest.raises(TransferscopeError, match="did you mean 'subsample'"):
        registry.load("domainnet", root=root, subsampel=4)


# --- chexpert ----------------------------------------------------------------------------------

POLICY = [
    ("", {t: 0.0 for t in chexpert.TASKS}),
    ("1.0", {t: 1.0 for t in chexpert.TASKS}),
    ("1", {t: 1.0 for t in chexpert.TASKS}),
    ("0.0", {t: 0.0 for t in chexpert.TASKS}),
    (
        "-1.0",
        {
            "Atelectasis": 1.0,
            "Cardiomegaly": 0.0,
            "Consolidation": 0.0,
            "Edema": 1.0,
            "Pleural Effusion": 0.0,
        },
    ),
]


@pytest.mark.parametrize(("raw", "expected"), POLICY)
def test_chexpert_uncertainty_policy(raw: str, expected: dict[str, float]) -> None:
    for task in chexpert.TASKS:
        assert chexpert.label_value(raw, task) == expected[task], (raw, task)
    assert chexpert.label_value("2.0", "Edema") is None
    assert chexpert.label_value("yes", "Edema") is None


def test_chexpert_csv_targets_and_sample(tmp_path: Path) -> None:
    rows = [
        {"Atelectasis": "-1.0", "Cardiomegaly": "-1.0", "Edema": "-1.0", "No Finding": "1.0"},
        {"Consolidation": "1.0", "Pleural Effusion": "-1.0", "Edema": "0.0"},
        {"Pleural Effusion": "1.0", "Lung Opacity": "-1.0"},  # a non-task column is ignored
    ]
    root = make_chexpert(tmp_path, rows, valid_labels=[{"Cardiomegaly": "1.0"}])
    splits = chexpert.build(root, seed=0, image_size=SIZE, train_size=2, test_size=1)
    assert splits.info.task == "multilabel" and splits.info.class_names == chexpert.TASKS
    assert splits.sizes() == {"train": 2, "test": 1, "dev": 1}
    _, targets = chexpert.read_csv(root, root / "train.csv", frontal_only=False)
    # Order: Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion.
    np.testing.assert_array_equal(targets, [[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1]])
    assert splits.dev is not None
    assert splits.dev.targets.tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0]]
    for ds in (splits.train, splits.test, splits.dev):
        image, target = ds[0]
        assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
        assert target.shape == (5,) and target.dtype == torch.float32
        mean = torch.tensor(chexpert.IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(chexpert.IMAGENET_STD).view(3, 1, 1)
        pixels = image * std + mean  # the grayscale image replicated to 3 channels
        assert torch.allclose(pixels[0], pixels[1], atol=1e-5)
        assert torch.allclose(pixels[0], pixels[2], atol=1e-5)
    # 20x16 image scaled to 16x13 and padded: the top padding row is black (zero before norm).
    image, _ = splits.test[0]
    black = (0.0 - chexpert.IMAGENET_MEAN[0]) / chexpert.IMAGENET_STD[0]
    assert torch.allclose(image[0, 0], torch.full((SIZE,), black))


def test_chexpert_split_sizes_and_seed(tmp_path: Path) -> None:
    root = make_chexpert(tmp_path, [{} for _ in range(10)])
    # Smaller than 50k + 50k: shared in proportion 1:1.
    default = chexpert.build(root, seed=0, image_size=SIZE)
    assert default.sizes() == {"train": 5, "test": 5, "dev": 2}
    names = set(default.train.paths) | set(default.test.paths)
    assert len(names) == 10
    assert chexpert.split_sizes(10, 3, 1) == (3, 1)
    assert chexpert.split_sizes(10, 30, 10) == (8, 2)
    same = chexpert.build(root, seed=5, image_size=SIZE)
    assert same.train.paths == default.train.paths
    other = chexpert.build(root, seed=0, image_size=SIZE, split_seed=99)
    assert other.train.paths != default.train.paths
    perm = np.random.default_rng(1234).permutation(10)
    assert default.train.paths[0].endswith(f"patient{perm[0] + 1:05d}/study1/view1_frontal.jpg")


def test_chexpert_frontal_only(tmp_path: Path) -> None:
    views = ["Frontal", "Lateral", "Frontal", "Lateral", "Frontal", "Frontal"]
    root = make_chexpert(tmp_path, [{} for _ in views], views=views)
    splits = chexpert.build(root, seed=0, image_size=SIZE, frontal_only=True)
    kept = splits.train.paths + splits.test.paths
    assert len(kept) == 4 and all("frontal" in p for p in kept)
    assert len(chexpert.build(root, seed=0, image_size=SIZE).train) == 3


def test_chexpert_path_resolution(tmp_path: Path) -> None:
    root = tmp_path / "CheXpert-v1.0-small"
    assert chexpert.resolve_path(root, "CheXpert-v1.0-small/train/p/s/v.jpg") == (
        tmp_path / "CheXpert-v1.0-small/train/p/s/v.jpg"
    )
    assert chexpert.resolve_path(root, "train/p/s/v.jpg") == root / "train/p/s/v.jpg"


def test_chexpert_errors(tmp_path: Path) -> None:
    root = make_chexpert(tmp_path, [{}, {"Edema": "1.0"}, {}])
    header = [c for c in CHEXPERT_HEADER if c != "Edema"]
    rows = [{"Path": "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"}]
    write_chexpert_csv(root / "valid.csv", rows, header=header)
    with pytest.raises(TransferscopeError) as err:
        chexpert.build(root, seed=0)
    assert str(root / "valid.csv") in str(err.value) and "no column 'Edema'" in str(err.value)

    root = make_chexpert(tmp_path / "b", [{}, {"Cardiomegaly": "2.0"}, {}])
    with pytest.raises(TransferscopeError) as err:
        chexpert.build(root, seed=0)
    msg = str(err.value)
    assert str(root / "train.csv") in msg and "row 2" in msg
    assert "'Cardiomegaly'" in msg and "'2.0'" in msg

    root = make_chexpert(tmp_path / "c", [{}, {}])
    (root / "valid.csv").unlink()
    with pytest.raises(TransferscopeError, match=r"valid\.csv not found"):
        chexpert.build(root, seed=0)

    # A renamed root with the official CSV: the first image cannot be found, said up front.
    root = make_chexpert(tmp_path / "d", [{}, {}], name="renamed")
    rows = [chexpert_row(p) for p in ("CheXpert-v1.0-small/train/x.jpg", "a.jpg")]
    write_chexpert_csv(root / "train.csv", rows)
    with pytest.raises(TransferscopeError, match="does not exist"):
        chexpert.build(root, seed=0)


# --- torchvision:<Name> ------------------------------------------------------------------------


def test_torchvision_mnist_in_memory(tmp_path: Path) -> None:
    root = make_torchvision_mnist(tmp_path / "tv", n_train=20, n_test=10)
    splits = torchvision_source.build(root, seed=0, name="MNIST")
    assert isinstance(splits.train, TensorImageDataset)
    assert splits.sizes() == {"train": 20, "test": 10}
    assert splits.info.name == "torchvision:MNIST" and splits.info.num_outputs == 10
    assert splits.info.image_shape == (1, 28, 28)
    image, target = splits.train[3]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert target.dtype == torch.int64 and int(target) == 3
    # Normalised with the training split's own statistics.
    assert abs(float(splits.train.images.mean())) < 1e-4

    rgb = torchvision_source.build(root, seed=0, name="MNIST", image_size=SIZE, channels=3)
    assert rgb.info.image_shape == (3, SIZE, SIZE)
    assert rgb.test[0][0].shape == (3, SIZE, SIZE)


def test_torchvision_streams_large_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_torchvision_mnist(tmp_path / "tv", n_train=6, n_test=4)
    monkeypatch.setattr(torchvision_source, "MAX_IN_MEMORY_IMAGES", 5)
    splits = torchvision_source.build(root, seed=0, name="MNIST", image_size=SIZE, channels=3)
    assert isinstance(splits.train, torchvision_source.TorchvisionStream)
    assert splits.info.image_shape == (3, SIZE, SIZE) and splits.info.num_outputs == 10
    image, target = splits.test[2]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert target.dtype == torch.int64 and int(target) == 2


def test_torchvision_errors(tmp_path: Path) -> None:
    with pytest.raises(TransferscopeError, match="did you mean 'MNIST'"):
        torchvision_source.build(tmp_path, seed=0, name="MNSIT")
    with pytest.raises(TransferscopeError) as err:
        torchvision_source.build(tmp_path / "nothing", seed=0, name="CIFAR10")
    msg = str(err.value)
    assert str(tmp_path / "nothing") in msg and "never downloads" in msg
    assert not (tmp_path / "nothing").exists()


def test_a_split_digest_sees_added_replaced_and_relabelled_examples(tmp_path: Path) -> None:
    """What a run's DONE records of its data (transferscope.data.digest): two mislabelled images
    added to train/ change the training split only; a test image replaced in place under its
    name changes the test split only (its size or time differs); in-memory data is compared by
    sizes and targets."""
    import os

    from transferscope.data.digest import split_digest, splits_digest, what_changed

    root = tmp_path / "tree"
    make_imagefolder(root / "train", {"a": 3, "b": 3})
    make_imagefolder(root / "test", {"a": 2, "b": 2}, seed=50)
    build = lambda: imagefolder.build(root, seed=0, image_size=8)  # noqa: E731
    before = splits_digest(build())
    assert splits_digest(build()) == before  # read again: the same
    assert what_changed("t", before, splits_digest(build())) is None
    for i in (10, 11):  # two more "a" images that are b's
        (root / "train" / "a" / f"a_{i:03d}.jpg").write_bytes(
            (root / "train" / "b" / "b_000.jpg").read_bytes()
        )
    added = splits_digest(build())
    assert added["test"] == before["test"] and added["train"] != before["train"]
    assert what_changed("t", before, added) == (
        "the training split of 't' changed since it was read (6 examples then, 8 now)"
    )
    test_image = root / "test" / "a" / "a_000.jpg"
    stat = test_image.stat()
    test_image.write_bytes((root / "test" / "b" / "b_000.jpg").read_bytes())
    os.utime(test_image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    replaced = splits_digest(build())
    assert replaced["train"] == added["train"] and replaced["test"] != added["test"]
    assert what_changed("t", added, replaced) == (
        "the test split of 't' changed since it was read (the same 4 examples, but other "
        "files, file sizes, times or labels)"
    )
    memory = TensorImageDataset(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]))
    relabelled = TensorImageDataset(memory.images, torch.tensor([0, 1, 1, 1]))
    digest = {"train": split_digest(memory), "test": split_digest(memory)}
    now = {"train": split_digest(relabelled), "test": split_digest(memory)}
    assert what_changed("m", digest, now) == (
        "the training split of 'm' changed since it was read (the same 4 examples, but other "
        "labels)"
    )
