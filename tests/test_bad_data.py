"""Bad input stops a study with one line naming the file and the fix, or is skipped and listed.

Unreadable images (default: stop; ``--skip-bad-images``: leave out, count, list in the run's
bad_images.json and the report), and a diverging run (FAILED, the study goes on, the report says
which run and why). The end-to-end study is tiny: digits as the source, a generated image folder
as the target, one epoch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from transferscope import limits
from transferscope.config import DataSpec, check_references, load_preset, with_skip_bad_images
from transferscope.data import domainnet, imagefolder
from transferscope.data.folder_common import BadImageError, drop_bad_images
from transferscope.errors import TransferscopeError, TransferscopeWarning
from transferscope.study.executors import BAD_IMAGES
from transferscope.studydir.inputs import DataCache
from transferscope.studydir.store import StudyStore
from transferscope.training.loaders import iterate

from fixtures_data import make_domainnet, make_imagefolder, write_huge_png
from study_checks import assert_intact, assert_same_results, invoke


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_jpeg_in_a_domainnet_split_names_the_file(tmp_path: Path) -> None:
    root = make_domainnet(tmp_path / "dn", n_train=2, n_test=2)
    splits = domainnet.build(root, seed=0, image_size=8)
    bad = truncate(Path(splits.test.paths[1]))
    splits.test[0]
    with pytest.raises(BadImageError) as err:
        splits.test[1]
    message = str(err.value)
    assert f"cannot read image {bad}" in message and "--skip-bad-images" in message
    assert "\n" not in message


@pytest.mark.parametrize("workers", [0, 1])
def test_a_bad_image_in_a_loader_is_one_line_naming_the_file(tmp_path, workers, one_thread):
    root = make_imagefolder(tmp_path / "tree", {"a": 3, "b": 3})
    splits = imagefolder.build(root, seed=0, image_size=8, augment=False)
    bad = truncate(Path(splits.train.paths[2]))
    with pytest.raises(BadImageError) as err:
        list(iterate(splits.train, 2, num_workers=workers))
    message = str(err.value)
    assert message.startswith(f"cannot read image {bad}") and "\n" not in message


def test_drop_bad_images_leaves_them_out_and_lists_them(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "tree", {"a": 5, "b": 5})
    splits = imagefolder.build(root, seed=0, image_size=8, augment=False)
    truncated = truncate(Path(splits.train.paths[0]))
    garbage = Path(splits.test.paths[-1])
    garbage.write_bytes(b"<html>not an image</html>")
    kept, skipped = drop_bad_images(splits)
    assert [(s["split"], s["path"]) for s in skipped] == [
        ("train", str(truncated)),
        ("test", str(garbage)),
    ]
    assert all("cannot read image" in s["error"] for s in skipped)
    assert kept.train.paths == splits.train.paths[1:]
    assert torch.equal(kept.train.targets, splits.train.targets[1:])
    assert kept.test.paths == splits.test.paths[:-1] and len(kept.test.targets) == len(kept.test)
    for i in range(len(kept.train)):
        kept.train[i]  # every image left decodes
    # Nothing bad: the same splits come back, nothing listed.
    again, none = drop_bad_images(kept)
    assert none == [] and again.train.paths == kept.train.paths


def test_every_image_bad_is_an_error(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "tree", {"a": 2, "b": 2})
    splits = imagefolder.build(root, seed=0, image_size=8)
    for p in splits.test.paths:
        truncate(Path(p))
    with pytest.raises(TransferscopeError, match="every image of the test split"):
        drop_bad_images(splits)


def test_data_cache_skips_only_when_asked(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "tree", {"a": 4, "b": 4})
    bad = truncate(root / "a" / "a_001.jpg")
    cache = DataCache()
    plain = DataSpec(name="imagefolder", root=root, options={"image_size": 8})
    assert cache.bad_images(plain) == [] and str(bad) in cache.get(plain).train.paths + (
        cache.get(plain).test.paths
    )
    skip = plain.model_copy(update={"skip_bad_images": True})
    assert [s["path"] for s in cache.bad_images(skip)] == [str(bad)]
    splits = cache.get(skip)
    assert str(bad) not in splits.train.paths + splits.test.paths


def test_skip_flag_marks_only_file_sources() -> None:
    cfg = load_preset(
        "micro", targets=[{"name": "digits"}, {"name": "imagefolder", "root": "/data/x"}]
    )
    marked = with_skip_bad_images(cfg)
    assert not marked.source.skip_bad_images and not marked.targets[0].skip_bad_images
    assert marked.targets[1].skip_bad_images


# --- end to end: a tiny study ----------------------------------------------------------------


STUDY = """\
name: bad-data
source: {name: digits, options: {image_size: 16}}
targets:
  - name: imagefolder
    id: shapes
    root: ROOT
    options: {image_size: 16, channels: 1, augment: false, test_fraction: 0.25}
model:
  name: fixup-small
  options: {widths: [4, 4, 4]}
pretrain: {epochs: 1, batch_size: 64, lr: 0.05}
finetune: {epochs: 1, batch_size: 8, lr: 0.02}
randinit: {epochs: 1, batch_size: 8, lr: 1.0e+30, momentum: 0.0}
seeds: [0]
same_init_pair: false
analyses:
  similarity: {enabled: false}
  interpolation: {enabled: false}
  criticality: {enabled: false}
  trajectory: {enabled: false}
"""


@pytest.mark.slow
def test_bad_image_stops_then_skip_and_a_diverging_run_is_marked_failed(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "shapes", {"a": 8, "b": 8})
    # A name with markup: the report must show it as text.
    bad = root / "b" / "b_<b>x.jpg"
    (root / "b" / "b_003.jpg").rename(bad)
    truncate(bad)
    config = tmp_path / "study.yaml"
    config.write_text(STUDY.replace("ROOT", str(root)))
    out = tmp_path / "study"
    args = ("run", str(config), "--out", str(out), "--quiet", "--threads", "1")

    # Default: the study stops at the bad image, one line naming it and the fix; nothing failed.
    result = invoke(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    error = " ".join(result.stderr.split())
    assert f"cannot read image {bad}" in error and "--skip-bad-images" in error
    assert "Traceback" not in result.stderr
    store = StudyStore(out)
    assert not list(out.rglob("FAILED"))
    p_run = store.read_plan().select(kind="P")[0]
    assert store.is_done(p_run.id)

    # Skipping: P (digits, no files) is kept; the target's runs get ids of their own.
    result = invoke(*args, "--skip-bad-images")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "left out 1 unreadable images" in " ".join(result.stdout.split())
    plan = store.read_plan()
    assert plan.select(kind="P")[0].id == p_run.id
    pt, rit = plan.select(kind="P-T")[0], plan.select(kind="RI-T")[0]
    assert store.is_done(pt.id)
    listed = json.loads((store.run_dir(pt.id) / BAD_IMAGES).read_text())
    assert listed["count"] == 1 and listed["skipped"][0]["path"] == str(bad)
    # The diverging RI-T: FAILED with epoch and step, no DONE, the study went on.
    assert store.state(rit.id) == "failed" and not store.is_done(rit.id)
    message = json.loads((store.run_dir(rit.id) / "FAILED").read_text())["error"]
    assert re.search(r"diverged: loss \S+ at epoch 1, step \d+", message)
    html = (out / "report" / "index.html").read_text()
    assert rit.id in html and 'class="state-failed"' in html
    assert "training diverged" in html
    assert "Unreadable images left out" in html
    assert "b_&lt;b&gt;x.jpg" in html and "<b>x" not in html
    assert_intact(out, temporaries=False)


# --- checked before any training --------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (
            {"image_size": "big"},
            "option image_size should be a valid integer (positive int), got 'big'",
        ),
        ({"channels": "1"}, "option channels should be a valid integer (int), got '1'"),
        (
            {"image_size": 28.7},
            "option image_size should be a valid integer (positive int), got 28.7",
        ),
        ({"augment": "no"}, "option augment should be a valid boolean (bool), got 'no'"),
        ({"test_fraction": "0.2"}, "option test_fraction should be a valid number"),
    ],
)
def test_data_options_are_validated_with_their_types(options, needle) -> None:
    cfg = load_preset(
        "micro", targets=[{"name": "imagefolder", "root": "/data", "options": options}]
    )
    with pytest.raises(TransferscopeError) as err:
        check_references(cfg)
    message = str(err.value)
    assert message.startswith("targets[0]: data source 'imagefolder'") and needle in message
    assert "\n" not in message
    if isinstance(next(iter(options.values())), str) and next(iter(options.values())) != "big":
        assert "without quotes" in message


def test_every_data_source_has_a_typed_options_model() -> None:
    from transferscope.data import registry

    for name in registry.available():
        model = registry.options_model(name.replace(":<Name>", ":MNIST"))
        assert set(model.model_fields) == set(
            registry.option_names(name.replace(":<Name>", ":MNIST"))
        )
    assert registry.options_model("imagefolder").model_validate({}).image_size == 224


def test_an_empty_class_folder_in_test_only_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    make_imagefolder(root / "train", {"a": 2, "b": 2})
    make_imagefolder(root / "test", {"a": 1})
    (root / "test" / "b").mkdir()
    with pytest.raises(TransferscopeError, match=r"class folder .*test/b holds no images"):
        imagefolder.build(root, seed=0, image_size=8)


def test_a_file_that_is_not_an_image_is_named_in_a_warning(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "tree", {"a": 3, "b": 3})
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / ".DS_Store").write_bytes(b"\0")  # hidden files are not the user's data
    with pytest.warns(TransferscopeWarning) as caught:
        splits = imagefolder.build(root, seed=0, image_size=8)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "1 file(s) in class folders are not images" in message
    assert str(root / "a" / "notes.txt") in message and ".DS_Store" not in message
    assert len(splits.train) + len(splits.test) == 6


TINY = """\
name: tiny
source: {name: digits, id: src, options: {image_size: 8}}
targets: [TARGET]
model: {name: fixup-small, options: {widths: [4, 4, 4]}}
pretrain: {epochs: 1, batch_size: 64}
finetune: {epochs: 1, batch_size: 64}
randinit: {epochs: 1, batch_size: 64}
seeds: [0]
same_init_pair: false
"""


def one_line_error(result, *needles: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    error = " ".join(result.stderr.split())
    assert error.startswith("error: ") and error.count("error: ") == 1, result.stderr
    for needle in needles:
        assert needle in error, error
    return error


def test_an_rgb_target_of_a_grayscale_source_stops_before_training(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "rgb", {"a": 4, "b": 4})  # channels: 3, the default
    config = tmp_path / "study.yaml"
    target = f"{{name: imagefolder, root: {root}, options: {{image_size: 8}}}}"
    config.write_text(TINY.replace("TARGET", target))
    out = tmp_path / "study"
    result = invoke("run", str(config), "--out", str(out))
    one_line_error(
        result,
        "targets[0] 'imagefolder' has 3x8x8 images but P (pre-trained on 'src', 1x8x8) takes "
        "1-channel images",
        "set targets[0].options.channels: 1",
    )
    assert not (out / "runs").exists()  # nothing trained
    config.write_text(TINY.replace("TARGET", target.replace("image_size: 8", 'channels: "1"')))
    one_line_error(invoke("run", str(config), "--out", str(out)), "option channels", "got '1'")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--threads", "-1"), "--threads must be 1 or more, got -1"),
        (("--jobs", "0"), "--jobs must be 1 or more, got 0"),
        (("--jobs", "-2"), "--jobs must be 1 or more, got -2"),
    ],
)
def test_command_line_counts_are_validated(tmp_path: Path, args, needle) -> None:
    out = tmp_path / "study"
    one_line_error(invoke("run", "--preset", "micro", "--out", str(out), *args), needle)
    assert not out.exists()


def test_counts_beyond_what_the_machine_has_are_refused(tmp_path: Path) -> None:
    """Threads, runs at once, analyses at once, data-loader and figure workers: more than 4 per
    usable core is one line naming the value, the limit and the cores (``--threads 10000``
    would exhaust the machine's thread limit for every user on it)."""
    from transferscope.unitkit.figure_saver import FigureSaver

    cores = limits.usable_cores()
    most = 4 * cores
    said = f"is more than this machine can run: at most {most} (4 per CPU core, and this process may use {cores} cores)"
    out = tmp_path / "study"
    for args, value in [
        (("--threads", "10000"), "--threads 10000"),
        (("--jobs", str(most + 1)), f"--jobs {most + 1}"),
        (
            ("--threads", str(most), "--jobs", "2"),
            f"--threads {most} per run × --jobs 2 runs at once = {2 * most}",
        ),
    ]:
        one_line_error(
            invoke("run", "--preset", "micro", "--out", str(out), *args), f"{value} {said}"
        )
    config = tmp_path / "study.yaml"
    config.write_text(f"preset: micro\nnum_threads: {most + 1}\n")
    one_line_error(
        invoke("run", str(config), "--out", str(out)),
        f"num_threads {most + 1} (in the study's config) {said}",
    )
    assert not (out / "runs").exists()  # nothing started
    one_line_error(invoke("analyze", str(out), "--jobs", "1000"), f"--jobs 1000 {said}")
    root = make_imagefolder(tmp_path / "tree", {"a": 2, "b": 2})
    splits = imagefolder.build(root, seed=0, image_size=8, augment=False)
    with pytest.raises(TransferscopeError) as err:
        list(iterate(splits.train, 2, num_workers=most + 1))
    assert f"num_workers {most + 1} (data-loader workers) {said}" in str(err.value)
    with pytest.raises(TransferscopeError) as err:
        FigureSaver(most + 1)
    assert f"report.workers {most + 1} {said}" in str(err.value)
    # Up to the limit is the user's choice.
    assert len(list(iterate(splits.test, 2, num_workers=0))) >= 1


def test_an_image_past_pils_decompression_bomb_limit_is_named_and_can_be_skipped(
    tmp_path: Path, one_thread
) -> None:
    """A 20000 x 20000 PNG (a 50 kB file) in an image folder: read in a data-loader worker, it is
    one line naming the file, not PIL's DecompressionBombError from inside the worker; with
    --skip-bad-images it is left out and listed like any unreadable image."""
    root = make_imagefolder(tmp_path / "tree", {"a": 3, "b": 3})
    huge = write_huge_png(root / "a" / "a_huge.png")
    splits = imagefolder.build(root, seed=0, image_size=8, augment=False)
    split = splits.train if str(huge) in splits.train.paths else splits.test
    with pytest.raises(BadImageError) as err:
        list(iterate(split, 2, num_workers=1))
    message = str(err.value)
    assert message.startswith(f"image {huge} is too large to decode: Image size (400000000 pixels)")
    assert "--skip-bad-images" in message and "\n" not in message
    cache = DataCache()
    spec = DataSpec(name="imagefolder", root=root, options={"image_size": 8}, skip_bad_images=True)
    assert [(s["path"], s["error"].split(":")[0]) for s in cache.bad_images(spec)] == [
        (str(huge), f"image {huge} is too large to decode")
    ]
    kept = cache.get(spec)
    assert str(huge) not in kept.train.paths + kept.test.paths


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` mounted at ``folder`` within the block (root only: skipped else)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system (tmpfs) needs root")
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


@pytest.mark.slow
def test_a_full_disk_during_a_run_is_one_line_and_a_rerun_resumes(tmp_path: Path) -> None:
    """The study's disk fills up while P trains (a real full file system, not a mock: safetensors
    reports it as its own error, numpy as a short write): one line naming the file and the
    space free, nothing finished lost, and once there is space the rerun resumes to the
    weights of a study that never ran out."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("TARGET", "{name: digits, options: {image_size: 8}}"))
    args = ("--quiet", "--threads", "1", "--no-analyses")
    reference = tmp_path / "reference"
    assert invoke("run", str(config), "--out", str(reference), *args).returncode == 0
    with small_disk(tmp_path / "disk", "1m") as disk:
        out = disk / "study"
        # 48 kB left: the study's files, P's first checkpoints and metrics, not the rest.
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - 48 * 1024))
        result = invoke("run", str(config), "--out", str(out), *args)
        error = one_line_error(
            result,
            f"error: no space left on the device to write {out / 'runs'}/",
            "free there; the file alone takes",
            "nothing finished is lost",
            "rerun the same command to resume",
        )
        assert re.search(r"\(\d+\.\d kB free there", error), error
        assert_intact(out)
        assert not list(out.rglob("DONE")) and not list(out.rglob("FAILED"))
        filler.unlink()
        result = invoke("run", str(config), "--out", str(out), *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_same_results(reference, out)
        assert_intact(out, temporaries=False)


def test_out_must_be_a_writable_directory(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    one_line_error(
        invoke("run", "--preset", "micro", "--out", str(a_file)), "is a file, not a directory"
    )
    one_line_error(
        invoke("run", "--preset", "micro", "--out", str(a_file / "study")),
        f"cannot create the study directory {a_file / 'study'}",
    )
    parent = tmp_path / "read-only"
    parent.mkdir()
    with read_only(parent):
        result = invoke("run", "--preset", "micro", "--out", str(parent / "study"))
    one_line_error(
        result,
        f"cannot create the study directory {parent / 'study'}",
        "choose a writable place with --out",
    )


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> Path:
    """A study planned (not trained) from the tiny config with digits as the target."""
    base = tmp_path_factory.mktemp("planned")
    config = base / "study.yaml"
    config.write_text(TINY.replace("TARGET", "{name: digits, options: {image_size: 8}}"))
    out = base / "study"
    result = invoke("run", str(config), "--out", str(out), "--plan-only")
    assert result.returncode == 0, result.stderr
    return out


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` cannot be written in (no file created, renamed or removed) within the block.

    Root ignores permission bits, so as root the folder is made immutable (chattr +i) instead."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only for root here (chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_report_into_a_read_only_folder_is_one_line(planned: Path, tmp_path: Path) -> None:
    study = tmp_path / "study"
    shutil.copytree(planned, study)
    assert invoke("report", str(study)).returncode == 0  # an earlier report is there
    before = (study / "report" / "index.html").read_bytes()
    with read_only(study / "report"):
        result = invoke("report", str(study))
    one_line_error(result, f"cannot write the report into {study / 'report'}")
    assert (study / "report" / "index.html").read_bytes() == before


@pytest.mark.parametrize(
    ("name", "text", "commands"),
    [
        ("plan.json", '{"runs": [', ("status", "report", "analyze")),
        ("plan.json", "[]", ("status", "report", "analyze")),
        ("study.yaml", "name: [unclosed\n", ("report", "analyze")),
        ("study.yaml", "- a list\n", ("report", "analyze")),
    ],
)
def test_a_damaged_study_file_is_one_line(planned: Path, tmp_path: Path, name, text, commands):
    study = tmp_path / "study"
    shutil.copytree(planned, study)
    (study / name).write_text(text)
    for command in commands:
        one_line_error(invoke(command, str(study)), str(study / name))


def test_a_damaged_done_is_shown_by_the_report(planned: Path, tmp_path: Path) -> None:
    study = tmp_path / "study"
    shutil.copytree(planned, study)
    run_id = StudyStore(study).read_plan().runs[0].id
    (study / "runs" / run_id).mkdir(parents=True)
    (study / "runs" / run_id / "DONE").write_text("{not json")
    result = invoke("report", str(study))
    assert result.returncode == 0, result.stderr
    html = (study / "report" / "index.html").read_text()
    assert 'class="state-damaged"' in html and "DONE is not valid JSON" in html
