"""Finished runs whose data has changed since they were trained: found, then trained again.

A run's id hashes its config, not its data: an image folder that gained, lost or replaced files,
or a data source whose split changed between transferscope releases (digits' did), gives the same
ids as before. Every run records in its ``DONE`` the digest of the training and test splits it
read (:mod:`transferscope.data.digest`: sizes, targets, and each image file's path, size and
modification time). A finished run whose splits differ today was trained or tested on other
examples: reused, its test metric would describe other data, and the analyses, which read today's
data, would compare it with runs that saw another. Such a run is trained again, and so is every
run that starts from it (the P-T runs of a P that changed).

A run finished before runs recorded their data is compared by the targets of the test split it
saved (``predictions/test_targets.npy``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np

from transferscope.data.base import dataset_targets
from transferscope.data.digest import what_changed
from transferscope.paths import PREDICTIONS, TEST_TARGETS
from transferscope.studydir import integrity
from transferscope.studydir.plan import Plan, PlannedRun
from transferscope.studydir.store import StudyStore

# Maps a data spec to the digest of its splits (``DataCache().digest``); None: compare only the
# test targets.
Digest: TypeAlias = Callable[[Any], dict[str, dict[str, Any]]] | None
# (run id, why) pairs.
Changes: TypeAlias = list[tuple[str, str]]


def _same(saved: np.ndarray, now: np.ndarray) -> bool:
    if saved.shape != now.shape:
        return False
    if saved.dtype.kind == "f" or now.dtype.kind == "f":
        # Multi-label targets may hold NaN for unlabelled findings.
        return bool(
            np.array_equal(saved.astype(np.float64), now.astype(np.float64), equal_nan=True)
        )
    return bool(np.array_equal(saved, now))


def _by_test_targets(store: StudyStore, run: PlannedRun, load: Any) -> str | None:
    """A run without a recorded data digest: do its saved test targets match the split now?"""
    try:
        saved = np.load(store.run_dir(run.id) / PREDICTIONS / TEST_TARGETS, allow_pickle=False)
    except (OSError, ValueError):
        return None  # left to StudyStore.damage, which reports missing and corrupt files
    now = dataset_targets(load(run.spec.data).test)
    if now is None or _same(saved, now):
        return None
    return (
        f"its {len(saved)} test examples are not the {len(now)} in the test split of "
        f"'{run.spec.data.label}' now (the data changed since it was trained)"
    )


def changed_runs(store: StudyStore, plan: Plan, load: Any, digest: Digest = None) -> Changes:
    """(run id, why) for each finished run of ``plan`` whose training or test split is not the
    one it read, then each finished run that depends on one of those.

    ``load`` maps a data spec to its splits and ``digest`` to their digest (``DataCache().get``
    and ``.digest``); without ``digest`` only the test targets are compared.
    """
    out: Changes = []
    for run in plan.runs:
        if not store.is_done(run.id):
            continue
        summary, _ = integrity.read_done(store.run_dir(run.id))
        recorded = (summary or {}).get("data")
        if digest is not None and isinstance(recorded, dict):
            why = what_changed(run.spec.data.label, recorded, digest(run.spec.data))
        else:
            why = _by_test_targets(store, run, load)
        if why is not None:
            out.append((run.id, why))
    changed = {run_id for run_id, _ in out}
    grew = True
    while grew:  # runs that start from a changed run, and runs that start from those
        grew = False
        for run in plan.runs:
            parents = changed.intersection(run.depends_on)
            if run.id not in changed and parents and store.is_done(run.id):
                changed.add(run.id)
                out.append((run.id, f"it started from run {sorted(parents)[0]}, which changed"))
                grew = True
    return out


def retrain_changed(store: StudyStore, plan: Plan, load: Any, digest: Digest = None) -> Changes:
    """Remove the runs :func:`changed_runs` finds, so they train again; returns them."""
    found = changed_runs(store, plan, load, digest)
    for run_id, _ in found:
        shutil.rmtree(store.run_dir(run_id))
    return found


__all__ = ["changed_runs", "retrain_changed"]
