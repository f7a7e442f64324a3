"""Common and uncommon mistakes of two models on one test set (Neyshabur et al. 2020, §3.2, "Mistakes").

For models A and B and each test example: *common correct* (both right), *uncommon mistakes*
(exactly one wrong, split into A-only and B-only) and *common mistakes* (both wrong). The paper's
finding: two P-T models have far fewer uncommon mistakes than two RI-T models.

Multiclass: a prediction is the argmax of the logits (or a given class index). Multi-label: each
label is a separate binary task, predicted positive when sigmoid(logit) >= 0.5, i.e. logit >= 0, and
the four cells are reported per task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from transferscope.errors import TransferscopeError

CELLS = ("both_correct", "only_a_wrong", "only_b_wrong", "both_wrong")
ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class MistakeCells:
    """The four cells for one binary question "is the prediction right?" over N examples.

    Every attribute holding indices is a sorted int64 array of example positions (0..N-1).

    Example:
        >>> from transferscope.measures.mistakes import CELLS, compare_mistakes
        >>> cells = compare_mistakes([0, 1, 0, 0], [0, 2, 2, 0], [0, 1, 2, 1]).cells
        >>> cells.fractions["uncommon"], sum(cells.counts[c] for c in CELLS) == cells.n
        (0.5, True)
        >>> cells.to_dict(max_indices=1)["indices"]
        {'both_correct': [0], 'only_a_wrong': [2], 'only_b_wrong': [1], 'both_wrong': [3]}
    """

    n: int
    both_correct: np.ndarray
    only_a_wrong: np.ndarray
    only_b_wrong: np.ndarray
    both_wrong: np.ndarray

    @property
    def counts(self) -> dict[str, int]:
        """Number of examples per cell, plus ``uncommon`` (A-only + B-only); cells sum to ``n``."""
        out = {name: len(getattr(self, name)) for name in CELLS}
        out["uncommon"] = out["only_a_wrong"] + out["only_b_wrong"]
        return out

    @property
    def fractions(self) -> dict[str, float]:
        """:attr:`counts` divided by ``n`` (NaN for an empty test set)."""
        return {k: (v / self.n if self.n else float("nan")) for k, v in self.counts.items()}

    def to_dict(self, max_indices: int | None = None) -> dict[str, Any]:
        """JSON-ready counts, fractions and (up to ``max_indices`` per cell) example indices."""
        return {
            "n": self.n,
            "counts": self.counts,
            "fractions": self.fractions,
            "indices": {
                name: getattr(self, name)[:max_indices].tolist()
                if max_indices is not None
                else getattr(self, name).tolist()
                for name in CELLS
            },
        }


@dataclass(frozen=True)
class MistakeComparison:
    """Result of :func:`compare_mistakes`.

    Attributes:
        task: 'multiclass' or 'multilabel'.
        cells: multiclass: the cells over the N examples. Multi-label: the cells summed over every
            (example, label) pair, N x K in all; its index arrays are flat positions
            ``example * K + label``.
        per_task: multi-label only: one :class:`MistakeCells` per label, each over the N examples.
    """

    task: Literal["multiclass", "multilabel"]
    cells: MistakeCells
    per_task: list[MistakeCells] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return self.cells.counts

    @property
    def fractions(self) -> dict[str, float]:
        return self.cells.fractions

    def to_dict(self, max_indices: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, **self.cells.to_dict(max_indices)}
        if self.task == "multilabel":
            out["per_task"] = [c.to_dict(max_indices) for c in self.per_task]
        return out


def _numpy(x: ArrayLike | Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _cells(correct_a: np.ndarray, correct_b: np.ndarray) -> MistakeCells:
    return MistakeCells(
        n=len(correct_a),
        both_correct=np.flatnonzero(correct_a & correct_b),
        only_a_wrong=np.flatnonzero(~correct_a & correct_b),
        only_b_wrong=np.flatnonzero(correct_a & ~correct_b),
        both_wrong=np.flatnonzero(~correct_a & ~correct_b),
    )


def _class_predictions(pred: np.ndarray, n: int, name: str) -> np.ndarray:
    if pred.ndim == 2 and pred.shape[0] == n:
        return pred.argmax(axis=1)
    if pred.ndim == 1 and pred.shape[0] == n:
        if np.issubdtype(pred.dtype, np.floating) and not np.all(pred == np.round(pred)):
            raise TransferscopeError(
                f"{name}: 1-d multiclass predictions must be class indices, got non-integer values"
            )
        return pred.astype(np.int64)
    raise TransferscopeError(
        f"{name}: expected logits ({n}, K) or class indices ({n},) for {n} multiclass targets, "
        f"got shape {pred.shape}"
    )


def _label_predictions(pred: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    if pred.shape != shape:
        raise TransferscopeError(
            f"{name}: expected shape {shape} (one output per example and label) for multi-label "
            f"targets, got {pred.shape}"
        )
    if pred.dtype == np.bool_ or np.issubdtype(pred.dtype, np.integer):
        return pred.astype(bool)  # already 0/1 decisions
    # sigmoid(z) >= 0.5  <=>  z >= 0: thresholding logits avoids computing the sigmoid.
    return pred >= 0


def compare_mistakes(pred_a: ArrayLike, pred_b: ArrayLike, target: ArrayLike) -> MistakeComparison:
    """Common correct, uncommon and common mistakes of models A and B (Neyshabur et al. 2020, §3.2).

    Args:
        pred_a: model A's test outputs. Multiclass: logits (N, K) (argmax is taken) or class
            indices (N,). Multi-label: logits (N, K) (positive when logit >= 0, i.e. sigmoid >=
            0.5) or 0/1 decisions (N, K) as a bool or integer array.
        pred_b: model B's outputs on the same examples, same conventions.
        target: class indices (N,) for multiclass, 0/1 labels (N, K) for multi-label; the task is
            read from its shape.

    Returns:
        A :class:`MistakeComparison` with counts, fractions and example indices per cell
        (multi-label: also per task).

    Example:
        >>> import torch
        >>> from transferscope.measures.mistakes import compare_mistakes
        >>> target = torch.tensor([0, 1, 2, 1])
        >>> pred_a = torch.tensor([0, 1, 0, 0])  # class indices (or logits: argmax is taken)
        >>> pred_b = torch.tensor([0, 2, 2, 0])
        >>> result = compare_mistakes(pred_a, pred_b, target)
        >>> result.counts
        {'both_correct': 1, 'only_a_wrong': 1, 'only_b_wrong': 1, 'both_wrong': 1, 'uncommon': 2}
        >>> result.cells.only_a_wrong.tolist(), result.cells.both_wrong.tolist()
        ([2], [3])
        >>> swapped = compare_mistakes(pred_b, pred_a, target)  # A-only becomes B-only
        >>> swapped.cells.only_a_wrong.tolist() == result.cells.only_b_wrong.tolist()
        True
        >>> labels = torch.tensor([[1, 0], [0, 1]])  # multi-label: logit >= 0 is positive
        >>> logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
        >>> multi = compare_mistakes(logits, labels, labels)
        >>> multi.task, multi.counts["only_a_wrong"], [c.n for c in multi.per_task]
        ('multilabel', 1, [2, 2])
    """
    y = _numpy(target)
    a, b = _numpy(pred_a), _numpy(pred_b)
    if y.ndim == 1:
        n = y.shape[0]
        ca = _class_predictions(a, n, "pred_a") == y
        cb = _class_predictions(b, n, "pred_b") == y
        return MistakeComparison("multiclass", _cells(ca, cb))
    if y.ndim == 2:
        truth = y >= 0.5
        ca = _label_predictions(a, y.shape, "pred_a") == truth
        cb = _label_predictions(b, y.shape, "pred_b") == truth
        per_task = [_cells(ca[:, k], cb[:, k]) for k in range(y.shape[1])]
        return MistakeComparison("multilabel", _cells(ca.reshape(-1), cb.reshape(-1)), per_task)
    raise TransferscopeError(
        f"target must be class indices (N,) or multi-label 0/1 labels (N, K), got shape {y.shape}"
    )


__all__ = ["CELLS", "MistakeCells", "MistakeComparison", "compare_mistakes"]
