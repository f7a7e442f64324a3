"""A study directory never gives a silent wrong answer: its files follow the umask, damaged runs
are found, analyses are redone when what they read changed, a rerun keeps the study's own config,
and two commands never work on one directory at once."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from transferscope import atomic
from transferscope.training import checkpoints as ckpt


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path: Path, umask, mask: int, mode: int) -> None:
    umask(mask)
    assert atomic.current_umask() == mask
    atomic.write_text(tmp_path / "study.yaml", "name: x\n")
    atomic.write_json(tmp_path / "analyses" / "curves.json", {"status": "ok"})
    atomic.write_npy(tmp_path / "predictions" / "test_outputs.npy", np.zeros(3))
    ckpt.save_weights(tmp_path / "checkpoints" / "final.safetensors", {"w": torch.ones(2)})
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 4
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
