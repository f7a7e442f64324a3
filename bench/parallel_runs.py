"""Runs side by side on an image folder: ``transferscope run --jobs 2`` against ``--jobs 1``.

A generated image folder (4 classes, 60 JPEGs each, 40x40, augmented, read from the files every
epoch) is the target of a small study (P on digits, two P-T and two RI-T runs of 3 epochs), run
by the command a user types, each with the threads its ``--jobs`` gives (``--jobs 1``: every core
for one run and its loader worker in this process; ``--jobs 2``: one core each in two worker
processes). The two are timed in turns, ``REPEATS`` times, into fresh directories; ``ratio`` is
the median ``--jobs 1`` seconds over the median ``--jobs 2`` seconds (above 1: two runs side by
side are faster). Before loader workers were kept across epochs and each worker process decoded
its own images, each epoch and evaluation of a run in a worker process started a loader worker
that imported torch again: ``--jobs 2`` took 3.4x as long as ``--jobs 1`` on this study (218 s
against 64 s, 2 shared cores).

``train_s`` are the runs' own training seconds (their DONE), summed: what is left is starting
processes and loading data.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES, PER_CLASS, SIDE, REPEATS = 4, 60, 40, 2

CONFIG = """\
name: parallel-runs
source: {{name: digits, id: src, options: {{image_size: 32}}}}
targets:
  - {{name: imagefolder, id: shapes, root: {root},
      options: {{image_size: 32, channels: 1, augment: true, test_fraction: 0.25}}}}
model: {{name: fixup-small, options: {{widths: [8, 16, 16], stem_stride: 2}}}}
pretrain: {{epochs: 1, batch_size: 64}}
finetune: {{epochs: 3, batch_size: 16, lr: 0.02}}
randinit: {{epochs: 3, batch_size: 16}}
seeds: [0, 1]
same_init_pair: false
control_pair: false
"""


def _folder(root: Path) -> Path:
    """CLASSES folders of PER_CLASS noise JPEGs, each class a little brighter than the last."""
    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = rng.integers(0, 160, (SIDE, SIDE, 3)) + 30 * c
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.jpg")
    return root


def _run(config: Path, out: Path, jobs: int) -> tuple[float, float]:
    """Seconds of one `transferscope run`, and the runs' own training seconds (summed)."""
    cmd = [sys.executable, "-m", "transferscope", "run", str(config), "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(
        [*cmd, "--quiet", "--no-analyses", "--jobs", str(jobs)], check=True, capture_output=True
    )
    seconds = time.perf_counter() - start
    trained = sum(json.loads(p.read_text())["seconds"] for p in out.glob("runs/*/DONE"))
    return seconds, trained


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = _folder(Path(tmp) / "tree")
        config = Path(tmp) / "study.yaml"
        config.write_text(CONFIG.format(root=root))
        seconds: dict[int, list[float]] = {1: [], 2: []}
        trained: dict[int, list[float]] = {1: [], 2: []}
        for repeat in range(REPEATS):
            for jobs in (1, 2):  # in turns: a change in the machine's load hits both
                wall, train = _run(config, Path(tmp) / f"study-{jobs}-{repeat}", jobs)
                seconds[jobs].append(wall)
                trained[jobs].append(train)
    one, two = statistics.median(seconds[1]), statistics.median(seconds[2])
    return {
        "name": "parallel_runs",
        "compared": "transferscope run --jobs 2 vs --jobs 1 on a generated image folder "
        "(augmented, streamed), 5 runs, no analyses",
        "sizes": {
            "images": CLASSES * PER_CLASS,
            "side": SIDE,
            "image_size": 32,
            "runs": 5,
            "epochs": 3,
            "repeats": REPEATS,
            "timing": "median wall seconds of the command, the two measured in turns",
        },
        "cpus": os.cpu_count(),
        "jobs1_s": round(one, 1),
        "jobs2_s": round(two, 1),
        "train_s": {
            "jobs1": round(statistics.median(trained[1]), 1),
            "jobs2": round(statistics.median(trained[2]), 1),
        },
        "all_s": {str(k): [round(s, 1) for s in v] for k, v in seconds.items()},
        "ratio": round(one / two, 3),
        "goal": ">= 1: --jobs 2 at least as fast as --jobs 1 on an image folder",
    }


if __name__ == "__main__":
    print(json.dumps(main()))
