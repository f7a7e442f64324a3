"""Finished runs whose data has changed since they were trained: found, then trained again.

A run's id hashes its config, not its data: an image folder that gained or lost files, or a data
source whose split changed between transferscope releases (digits' did), gives the same ids as
before. Every run saves the targets of the test split it was evaluated on
(``predictions/test_targets.npy``). A finished run whose saved targets differ from its data's test
split today was trained and tested on other examples: reused, its test metric would describe
other data, and an analysis that forwards it on today's test split could read examples it was
trained on. Such a run is trained again, and so is every run that starts from it (the P-T runs
of a P that changed).
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np

from transferscope.analysis.sampling import dataset_targets
from transferscope.study.layout import PREDICTIONS, TEST_TARGETS
from transferscope.study.plan import Plan
from transferscope.study.store import StudyStore


def _same(saved: np.ndarray, now: np.ndarray) -> bool:
    if saved.shape != now.shape:
        return False
    if saved.dtype.kind == "f" or now.dtype.kind == "f":
        # Multi-label targets may hold NaN for unlabelled findings.
        return bool(
            np.array_equal(saved.astype(np.float64), now.astype(np.float64), equal_nan=True)
        )
    return bool(np.array_equal(saved, now))


def changed_runs(store: StudyStore, plan: Plan, load: Any) -> list[tuple[str, str]]:
    """(run id, why) for each finished run of ``plan`` tested on other examples than its data's
    test split has now, then each finished run that depends on one of those.

    ``load`` maps a data spec to its splits (``DataCache().get``). A run whose saved targets cannot
    be read is left to :meth:`StudyStore.damage`, which reports missing and corrupt files.
    """
    out: list[tuple[str, str]] = []
    for run in plan.runs:
        if not store.is_done(run.id):
            continue
        try:
            saved = np.load(store.run_dir(run.id) / PREDICTIONS / TEST_TARGETS, allow_pickle=False)
        except (OSError, ValueError):
            continue
        now = dataset_targets(load(run.spec.data).test)
        if now is None or _same(saved, now):
            continue
        out.append(
            (
                run.id,
                f"its {len(saved)} test examples are not the {len(now)} in the test split of "
                f"'{run.spec.data.label}' now (the data changed since it was trained)",
            )
        )
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


def retrain_changed(store: StudyStore, plan: Plan, load: Any) -> list[tuple[str, str]]:
    """Remove the runs :func:`changed_runs` finds, so they train again; returns them."""
    found = changed_runs(store, plan, load)
    for run_id, _ in found:
        shutil.rmtree(store.run_dir(run_id))
    return found


__all__ = ["changed_runs", "retrain_changed"]
