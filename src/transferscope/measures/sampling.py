"""Which test examples an analysis reads: one seeded, class-stratified subset for every pair.

Test splits are often sorted by class (image folders, DomainNet's lists): the first N examples of
such a split cover a handful of classes, and a feature similarity measured there describes those
classes only. :func:`stratified_indices` draws a subset with every class in proportion to its
share of the split, seeded, so that every pair of models is compared on the same examples.
"""

from __future__ import annotations

import numpy as np

from transferscope.data.base import dataset_targets


def stratified_indices(
    targets: np.ndarray | None, n: int, size: int | None, seed: int = 0
) -> tuple[list[int], bool]:
    """A seeded subset of ``size`` of the indices 0..n-1, stratified by target.

    Args:
        targets: (n,) class indices, or (n, K) 0/1 labels (the stratum is the label combination);
            None draws a plain random subset.
        n: the number of examples; size: the subset size (None or >= n: every index).
        seed: of the draw.

    Returns:
        (sorted indices, whether the draw was stratified). Each stratum gets its proportional
        share by largest remainders (so the sizes add up to ``size`` exactly), drawn at random
        within the stratum.

    Example:
        >>> import numpy as np
        >>> from transferscope.measures.sampling import stratified_indices
        >>> targets = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2])  # sorted by class
        >>> indices, stratified = stratified_indices(targets, 12, 4, seed=0)
        >>> stratified, len(indices), np.bincount(targets[indices]).tolist()
        (True, 4, [2, 1, 1])
        >>> indices == stratified_indices(targets, 12, 4, seed=0)[0]  # seeded: the same draw
        True
        >>> stratified_indices(targets, 12, None)[0] == list(range(12))  # no size: every index
        True
    """
    if size is None or size >= n:
        return list(range(n)), targets is not None
    rng = np.random.default_rng(seed)
    if targets is None:
        return sorted(int(i) for i in rng.choice(n, size=size, replace=False)), False
    y = np.asarray(targets)
    keys = y.reshape(n, -1)
    _, stratum = np.unique(keys, axis=0, return_inverse=True)
    stratum = stratum.reshape(-1)
    counts = np.bincount(stratum)
    quota = counts * size / n
    take = np.floor(quota).astype(int)
    short = size - int(take.sum())
    if short:
        # Largest remainders first; ties broken at random so no class is always favoured.
        order = np.lexsort((rng.random(len(quota)), -(quota - take)))
        take[order[:short]] += 1
    chosen: list[int] = []
    for s, k in enumerate(take):
        members = np.flatnonzero(stratum == s)
        chosen += [int(i) for i in rng.choice(members, size=int(k), replace=False)]
    return sorted(chosen), True


__all__ = ["dataset_targets", "stratified_indices"]
