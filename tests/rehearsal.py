"""Paper-scale rehearsal: ``transferscope run`` on the domainnet and chexpert presets, end to end.

Each test writes a tiny data set in the exact on-disk layout the preset reads (DomainNet's
``<domain>/<class>/*.jpg`` tree and split files; CheXpert-v1.0-small's CSVs with the official
header and grayscale JPEGs of the small release's size; an ImageNet-style folder, with a PNG among
the JPEGs, for P) with images at full resolution, then runs the preset through the CLI in a child
process. The model (Fixup ResNet-50), the image size (224 px), the recipes' optimiser, schedule,
mixup and every analysis stay the preset's; what is overridden is sizes: one epoch, batch 4,
one target, one block shuffle, the trajectory points inside that one epoch, the analyses'
example counts, grid points and curve epochs (a forward and backward pass of one 224-px image
takes ~0.2 s on the 2-core CPU these tests run on); and the report writes PNG figures only.

Each preset has its own test module (``test_rehearsal_<preset>.py``, calling
:func:`rehearse_preset`) so that the two run in parallel under ``make test``.

Measured and printed (``pytest -s`` shows it; the JSON lands in the study directory as
``rehearsal.json``): wall time of training, of each analysis and of the report, and the child's
peak resident memory over the whole run and during each analysis (sampled from /proc every
0.1 s). The test fails when an analysis or the report fails, or when peak memory exceeds
:data:`PEAK_RSS_LIMIT_GIB`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from transferscope import config, registry

from fixtures_data import CHEXPERT_HEADER

ROOT = Path(__file__).resolve().parents[1]
# Two Fixup ResNet-50s, their optimiser state and 224-px activations: ~2-3 GiB measured. A leak
# that kept every run's model or every analysis's features would pass this quickly.
PEAK_RSS_LIMIT_GIB = 6.0
# Width x height of real files: DomainNet 'real' photos are a few hundred pixels a side, the
# CheXpert-v1.0-small radiographs 320 px on the short side (portrait and landscape).
PHOTO_SIZES = ((640, 480), (500, 375), (375, 500), (600, 600), (800, 533))
XRAY_SIZES = ((390, 320), (320, 390), (369, 320))


def photo(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    """A smooth random image (low-frequency colour field plus mild noise) of ``size`` (w, h):
    compresses like a photograph, unlike white noise, so decoding costs what it does on real
    data."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    coarse = rng.integers(0, 256, (6, 8, channels), dtype=np.uint8)
    small = Image.fromarray(coarse if channels == 3 else coarse[..., 0], mode)
    big = np.asarray(small.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.integers(-8, 9, big.shape, dtype=np.int16)
    return Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8), mode)


def make_imagenet_like(root: Path, classes: int = 3, per_class: int = 4) -> Path:
    """ROOT/<wnid>/<wnid>_<i>.JPEG (one PNG per class, as some ImageNet-style sets have)."""
    for c in range(classes):
        wnid = f"n0{1440764 + c}"
        for i in range(per_class):
            ext, fmt = (".png", "PNG") if i == 0 else (".JPEG", "JPEG")
            path = root / wnid / f"{wnid}_{i}{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            photo(PHOTO_SIZES[(c + i) % len(PHOTO_SIZES)], 10 * c + i).save(path, fmt)
    return root


def make_domainnet_like(
    root: Path, domain: str, classes: tuple[str, ...], n_train: int, n_test: int
) -> Path:
    """The official layout: ROOT/<domain>/<class>/<domain>_<kkk>_<iiiiii>.jpg, and
    ROOT/<domain>_{train,test}.txt with '<domain>/<class>/<file> <label>' lines. Labels are the
    classes' indices in DomainNet's 345-class list, so they are not 0..K-1 (the source sizes its
    head by the largest label)."""
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for k, name in enumerate(classes):
        label = 3 * k  # gaps between used labels, as with a subset of the real class list
        for i in range(n_train + n_test):
            rel = f"{domain}/{name}/{domain}_{label + 1:03d}_{i + 1:06d}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            photo(PHOTO_SIZES[(k + i) % len(PHOTO_SIZES)], 100 * k + i).save(root / rel, "JPEG")
            lines["train" if i < n_train else "test"].append(f"{rel} {label}")
    for split, split_lines in lines.items():
        (root / f"{domain}_{split}.txt").write_text("\n".join(split_lines) + "\n")
    return root


def make_chexpert_like(parent: Path, n_train: int, n_valid: int) -> Path:
    """CheXpert-v1.0-small: train.csv / valid.csv with the official header, 'Path' values that
    start with the folder's name, labels 1.0 / 0.0 / -1.0 / blank, frontal and lateral views."""
    name = "CheXpert-v1.0-small"
    root = parent / name
    rng = np.random.default_rng(0)
    tasks = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
    for split, n in (("train", n_train), ("valid", n_valid)):
        rows = []
        for i in range(n):
            view = "Lateral" if i % 4 == 3 else "Frontal"
            rel = f"{name}/{split}/patient{i + 1:05d}/study1/view1_{view.lower()}.jpg"
            (parent / rel).parent.mkdir(parents=True, exist_ok=True)
            size = XRAY_SIZES[i % len(XRAY_SIZES)]
            photo(size, 1000 + i, mode="L").save(parent / rel, "JPEG")
            row = dict.fromkeys(CHEXPERT_HEADER, "")
            row.update({"Path": rel, "Sex": "Male", "Age": str(40 + i), "Frontal/Lateral": view})
            row["AP/PA"] = "PA" if view == "Frontal" else ""
            for task in tasks:
                row[task] = str(rng.choice(["1.0", "0.0", "-1.0", ""]))
            # Every task positive at least once in each split, so every AUC is defined.
            row[tasks[i % len(tasks)]] = "1.0"
            rows.append(row)
        with open(root / f"{split}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CHEXPERT_HEADER)
            writer.writeheader()
            writer.writerows(rows)
    return root


def shrink(data: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The preset with sizes and epochs overridden (see the module docstring), nothing else."""
    small = {"epochs": 1, "batch_size": 4, "eval_batch_size": 8, "milestones": []}
    for section in ("pretrain", "finetune", "randinit"):
        data[section] = {**data[section], **small}
    data["source"] = {**data["source"], "root": str(make_imagenet_like(tmp_path / "imagenet"))}
    # The preset's trajectory points that fall inside the one pre-training epoch.
    data["trajectory"] = {"checkpoints": [k for k in data["trajectory"]["checkpoints"] if k <= 1]}
    data["shuffles"] = {"block_sizes": [56], "pixel": False, "seeds": [0]}
    data["analyses"] = {
        **data.get("analyses", {}),
        "interpolation": {"num_points": 2, "recalibration_examples": 4},
        # 4 test images: at 8 MiB, exact CKA fits layer3-4 but not conv1-layer2 (802,816 and
        # 401,408 features per image), which switch to minibatch CKA as at full size.
        "similarity": {"max_examples": 4, "batch_size": 4, "max_exact_bytes": 8 << 20},
        # One example per forward pass: criticality probes 18 modules of two models at ~10
        # forwards each, the rehearsal's longest analysis (measured 41 s at one, 2x at two).
        "criticality": {
            "num_alphas": 2,
            "num_sigmas": 2,
            "noise_samples": 1,
            "max_examples": 1,
            "heatmap_alphas": 2,
            "heatmap_sigmas": 2,
            "eval_max_examples": 1,
        },
        "trajectory": {"num_points": 2},
        "alignment": {"num_points": 2, "max_sweeps": 1, "recalibration_examples": 4},
        "connectivity": {
            "epochs": 1,
            "batch_size": 4,
            "num_points": 2,
            "pairs": ["P-T/RI-T"],  # a pair one seed has
            "max_train_examples": 4,
            "recalibration_examples": 4,
        },
    }
    data["jobs"] = 1
    # PNG only: the PDF path is the same drawing into another file (tested on small studies).
    data["report"] = {**data.get("report", {}), "figures": ["png"]}
    data["output"] = str(tmp_path / "study")
    return data


def _rss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match.group(1)) if match else 0


ANALYSIS_LINE = re.compile(r"^analysis (\w+): (.*?)(?: \((\d+\.\d)s\))?$")


def rehearse(cfg_path: Path, out: Path) -> dict[str, Any]:
    """Run ``transferscope run`` in a child process; its timeline and memory, per phase.

    The child's stdout is read line by line as it arrives: training ends with the 'trained N
    runs' line, each analysis with its 'analysis NAME: ...' line and the report with 'report'.
    RSS samples between two such lines belong to the phase the second one ends.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "transferscope", "run", str(cfg_path), "--out", str(out)]
    # One thread: `make test` runs two test processes on two cores, and a second thread per
    # process only waits for a core the other process holds.
    cmd += ["--quiet", "--device", "cpu", "--threads", "1"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = {"phase": 0, "all": 0}
    lock = threading.Lock()

    def sample() -> None:
        while proc.poll() is None:
            rss = _rss_kib(proc.pid)
            with lock:
                peak["phase"] = max(peak["phase"], rss)
                peak["all"] = max(peak["all"], rss)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    phases: list[dict[str, Any]] = []
    log: list[str] = []
    last = started
    assert proc.stdout is not None
    for line in proc.stdout:
        text = line.rstrip()
        log.append(text)
        now = time.perf_counter()
        match = ANALYSIS_LINE.match(text)
        name = None
        if text.startswith("trained "):
            name = "training"
        elif match and not match.group(2).startswith("estimated"):
            name = f"analysis:{match.group(1)}"
        elif text.startswith("report"):
            name = "report"
        if name is None:
            continue
        with lock:  # a phase shorter than the sampling interval: its end's reading
            rss, peak["phase"] = max(peak["phase"], _rss_kib(proc.pid)), 0
        phase = {"phase": name, "seconds": round(now - last, 1), "peak_rss_gib": rss / 2**20}
        if match:
            phase["message"] = match.group(2)
        phases.append(phase)
        last = now
    proc.wait()
    sampler.join()
    return {
        "returncode": proc.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_gib": round(peak["all"] / 2**20, 2),
        "phases": [{**p, "peak_rss_gib": round(p["peak_rss_gib"], 2)} for p in phases],
        "log": log,
    }


def check(result: dict[str, Any], out: Path, disabled: frozenset[str] = frozenset()) -> None:
    """Every analysis but ``disabled`` and the report completed within the memory bound (the
    disabled ones said so and wrote nothing); print the timeline."""
    record = {k: v for k, v in result.items() if k != "log"}
    (out / "rehearsal.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    tail = "\n".join(result["log"][-40:])
    assert result["returncode"] == 0, tail
    names = {p["phase"].split(":", 1)[1] for p in result["phases"] if ":" in p["phase"]}
    assert names == set(registry.names()), (names, tail)
    for p in result["phases"]:
        assert not p.get("message", "").startswith("failed"), (p, tail)
        if p["phase"].removeprefix("analysis:") in disabled:
            assert p["message"] == "disabled", (p, tail)  # and no time: it never started
    for name in disabled:
        assert not (out / "analyses" / f"{name}.json").exists(), name
    for name in set(registry.names()) - disabled:
        doc = json.loads((out / "analyses" / f"{name}.json").read_text())
        assert doc["status"] in ("ok", "skipped"), (name, doc.get("reason"))
    assert (out / "report" / "index.html").stat().st_size > 10_000
    assert 0 < result["peak_rss_gib"] < PEAK_RSS_LIMIT_GIB, record


def write_config(data: dict[str, Any], path: Path) -> Path:
    config.from_dict(data)  # the overrides are a valid study
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def rehearse_preset(
    preset: str,
    tmp_path: Path,
    root: Path,
    study: dict[str, Any] | None = None,
    disabled: frozenset[str] = frozenset(),
    **target: Any,
) -> Path:
    """The preset ``preset`` shrunk (:func:`shrink`), its first target read from ``root`` (and
    ``target``'s keys), ``study``'s top-level keys replacing the preset's and the analyses in
    ``disabled`` turned off, run through the CLI in a child process and checked
    (:func:`check`); returns the study directory."""
    data = {**shrink(config.preset_dict(preset), tmp_path), **(study or {})}
    for name in disabled:
        data["analyses"][name] = {"enabled": False}
    data["targets"] = [{**data["targets"][0], "root": str(root), **target}]
    out = tmp_path / "study"
    check(rehearse(write_config(data, tmp_path / f"{preset}.yaml"), out), out, disabled)
    return out
