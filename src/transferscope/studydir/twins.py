"""Runs whose training is another finished run's, reused instead of trained again.

A plan can hold two runs that are one computation under two names: a P@k-T run whose k is the end
of pre-training starts from the same weights as the P-T run of its seed (P's last trajectory
checkpoint is its final weights), with the same data, seed and schedule. Training it again only
repeats that run bit for bit (CPU), so the executor links the finished twin's files into the
run's own directory instead. The run keeps its id, its ``run.yaml`` and every file an analysis
reads; its ``DONE`` says which run it was copied from.

Twins are decided from what would be trained, never from names: every field of the run's spec
other than its kind and the name of the parent checkpoint must be equal, and the two parent
checkpoints must hold identical tensors.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from transferscope import atomic
from transferscope.errors import TransferscopeError
from transferscope.paths import RESUME
from transferscope.studydir.plan import PlannedRun, RunSpec
from transferscope.studydir.store import StudyStore
from transferscope.training import checkpoints as ckpt

# What a run directory holds besides its own run.yaml and DONE (see StudyStore).
_COPIED = ("checkpoints", "predictions", "metrics.jsonl", "bad_images.json")
_FILE_COMPARE_LIMIT = 2 * 1024**3  # parent checkpoints larger than this are not compared


def _training_key(spec: RunSpec) -> str:
    """The spec without its kind and parent checkpoint name, canonical (sorted keys: a spec read
    back from plan.json has its option dicts in another order than the one built from YAML)."""
    fields = spec.model_dump(mode="json", exclude={"kind", "parent_checkpoint"})
    return json.dumps(fields, sort_keys=True)


def find_twin(run: PlannedRun, store: StudyStore) -> PlannedRun | None:
    """A finished run of the study's plan whose training is exactly ``run``'s, or None.

    Only runs fine-tuned from a parent run qualify; the parent's two checkpoints are compared
    tensor by tensor (identical files under two names, e.g. ``epoch-2`` and ``final``).
    """
    spec = run.spec
    if spec.parent is None or spec.kind not in ("P-T", "P@k-T"):
        return None
    try:
        runs = store.read_plan().runs
    except TransferscopeError:  # a run trained outside a planned study
        return None
    key = _training_key(spec)
    for other in runs:
        if other.id == run.id or other.spec.parent != spec.parent:
            continue
        if _training_key(other.spec) != key or not store.is_done(other.id):
            continue
        if _same_weights(store, spec.parent, spec.parent_checkpoint, other.spec.parent_checkpoint):
            return other
    return None


def _same_weights(store: StudyStore, run_id: str, a: str | None, b: str | None) -> bool:
    a, b = a or "final", b or "final"
    if a == b:
        return True
    pa, pb = store.weights_path(run_id, a), store.weights_path(run_id, b)
    if not (pa.is_file() and pb.is_file()) or pa.stat().st_size != pb.stat().st_size:
        return False
    if pa.stat().st_size > _FILE_COMPARE_LIMIT:
        return False
    wa, wb = ckpt.load_weights(pa), ckpt.load_weights(pb)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def reuse_twin(run: PlannedRun, twin: PlannedRun, store: StudyStore) -> dict[str, Any]:
    """Give ``run`` the finished ``twin``'s files and mark it done; returns its DONE summary.

    Files are hard links where the file system allows (every study file is replaced by rename,
    never rewritten in place, so a link can never see a later change of the twin) and atomic
    copies elsewhere; DONE is written last, so an interrupted reuse is simply redone.
    """
    source, target = store.run_dir(twin.id), store.prepare_run(run)
    for name in _COPIED:
        path = source / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and not file.name.startswith(".") and file.name != RESUME:
                _link_or_copy(file, target / file.relative_to(source))
    summary = {**(store.summary(twin.id) or {}), "id": run.id, "kind": run.spec.kind}
    summary.update(target=run.target, copied_from=twin.id, wall_seconds_this_session=0.0)
    store.mark_done(run.id, summary)
    resume = target / "checkpoints" / RESUME
    resume.unlink(missing_ok=True)  # left by an earlier, interrupted training of this run
    return summary


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(target) as tmp:
        tmp.unlink()  # atomic_path made an empty file there; a link needs the name free
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


__all__ = ["find_twin", "reuse_twin"]
