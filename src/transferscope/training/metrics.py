"""Losses and metrics for the two task types (Neyshabur et al. 2020: accuracy on DomainNet, mean AUC on
CheXpert), and evaluation of a model over a dataset."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from transferscope.data.base import Task
from transferscope.training.loaders import forward_in_chunks, iterate


def loss_fn(task: Task, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (multiclass, targets (B,) int64 or (B, K) soft) or BCE-with-logits."""
    if task == "multiclass":
        return F.cross_entropy(outputs.float(), targets)
    return F.binary_cross_entropy_with_logits(outputs.float(), targets.float())


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows of ``outputs`` (N, K) whose argmax equals ``targets`` (N,)."""
    return (outputs.argmax(1) == targets).float().mean().item()


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of each label under each row of example weights.

    Args:
        scores: (n, K) scores (logits); labels: (n, K) 0/1 targets; weights: (B, n) non-negative
            example weights (bootstrap counts).

    Returns:
        (B, K) AUCs: the weighted probability that a positive example scores above a negative one
        (ties count half). NaN where a label has no weighted positive or negative example.

    Example:
        >>> import numpy as np
        >>> from transferscope.training.metrics import weighted_auc
        >>> scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
        >>> weighted_auc(scores, labels, np.ones((1, 4))).tolist()  # 3 of 4 pairs in order
        [[0.75]]
        >>> weighted_auc(np.zeros(4), labels, np.ones((1, 4))).tolist()  # all tied
        [[0.5]]
        >>> weighted_auc(scores, labels, np.array([[1, 0, 1, 1]])).tolist()  # 0.4 left out
        [[1.0]]
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels) > 0.5
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if scores.ndim == 1:
        scores, labels = scores[:, None], labels[:, None]
    out = np.empty((weights.shape[0], scores.shape[1]))
    for k in range(scores.shape[1]):
        order = np.argsort(scores[:, k], kind="mergesort")
        s, pos = scores[order, k], labels[order, k]
        w = weights[:, order]
        wn = np.where(pos, 0.0, w)
        wp = np.where(pos, w, 0.0)
        # Negatives strictly below each example, and tied negatives (counted half): from the
        # cumulative negative weight at the start and end of each run of equal scores.
        starts = np.searchsorted(s, s, side="left")
        ends = np.searchsorted(s, s, side="right")
        cum = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(wn, axis=1)], axis=1)
        below = cum[:, starts]
        tied = cum[:, ends] - below
        num = (wp * (below + 0.5 * tied)).sum(axis=1)
        den = wp.sum(axis=1) * wn.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, k] = np.where(den > 0, num / den, np.nan)
    return out


def per_task_auc(outputs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """ROC AUC of each column of ``outputs`` (N, K) against 0/1 ``targets`` (N, K).

    :func:`weighted_auc` with every example weighted 1 (scikit-learn's ``roc_auc_score``, to
    rounding): 0.27 ms for 4 columns of 200 examples where ``roc_auc_score`` takes ~7 ms a column
    (its input checks), and a multi-label target computes AUCs at every evaluation and every
    point of a path. A task whose test targets hold one class only has no AUC: NaN.
    """
    scores = outputs.float().cpu().numpy()
    return weighted_auc(scores, targets.cpu().numpy(), np.ones((1, len(scores))))[0].tolist()


def metric_name(task: Task) -> str:
    return "accuracy" if task == "multiclass" else "mean_auc"


# Standard errors that make the chance band: 2.576 is the two-sided 99% normal quantile, so a model
# that learned nothing lands above the band about once in 200 runs.
CHANCE_Z = 2.576


@dataclass(frozen=True)
class ChanceCheck:
    """Whether a final test metric is no better than a model that learned nothing.

    ``chance`` is that model's expected metric (1/classes for accuracy, 0.5 for mean AUC) and
    ``band`` the half-width of the noise band around it (``z`` standard errors of the metric at the
    test set's size). ``at_chance`` is true when the metric is below ``chance + band`` (within noise
    of chance, or worse than chance) or not a number.
    """

    chance: float
    band: float
    at_chance: bool
    z: float = CHANCE_Z

    def to_dict(self) -> dict[str, float | bool]:
        return {"chance": self.chance, "band": self.band, "at_chance": self.at_chance, "z": self.z}


def chance_metric(task: Task, num_outputs: int) -> float:
    """The metric of a model that learned nothing: 1/classes (accuracy) or 0.5 (mean AUC)."""
    if task == "multiclass":
        if num_outputs < 1:
            raise ValueError(f"a multiclass task needs >= 1 class, got {num_outputs}")
        return 1.0 / num_outputs
    return 0.5


def chance_level(
    task: Task,
    num_classes: int,
    num_examples: int,
    metric: float,
    *,
    positives: Sequence[int] | None = None,
    z: float = CHANCE_Z,
) -> ChanceCheck:
    """Whether ``metric``, a run's final test metric, is within noise of chance.

    Multiclass (accuracy): chance is 1/``num_classes``; the band is ``z`` binomial standard errors
    sqrt(p (1 - p) / n) at p = 1/``num_classes`` and n = ``num_examples``.

    Multilabel (mean AUC): chance is 0.5; the standard error of one label's AUC when scores ignore
    the labels is sqrt((n+ + n- + 1) / (12 n+ n-)) (the Mann-Whitney statistic's null variance),
    with n+ positives and n- negatives of that label (``positives``; without them, half of
    ``num_examples`` each, the narrowest band). Labels whose test set holds one class only have no
    AUC and are left out. The band of the mean is the mean of the labels' bands: the labels are
    scored on the same images, so their errors are not independent and nothing averages out.

    Args:
        task: 'multiclass' or 'multilabel'.
        num_classes: classes (multiclass) or labels (multilabel).
        num_examples: size of the test set the metric was measured on.
        metric: the final test metric.
        positives: multilabel only: positive test examples per label.
        z: standard errors in the band.
    """
    if num_classes < 1 or num_examples < 1:
        raise ValueError(
            f"need num_classes >= 1 and num_examples >= 1, got {num_classes}, {num_examples}"
        )
    chance = chance_metric(task, num_classes)
    if task == "multiclass":
        band = z * math.sqrt(chance * (1 - chance) / num_examples)
    else:
        counts = (
            [(num_examples / 2, num_examples / 2)]
            if positives is None
            else [(p, num_examples - p) for p in positives if 0 < p < num_examples]
        )
        errors = [math.sqrt((a + b + 1) / (12 * a * b)) for a, b in counts]
        band = z * float(np.mean(errors)) if errors else math.inf
    at_chance = not math.isfinite(metric) or metric < chance + band
    return ChanceCheck(chance, band, bool(at_chance), z)


@dataclass
class Evaluation:
    """Loss and metric of a model on one split; ``outputs`` are the logits (N, K) on the CPU."""

    loss: float
    metric: float
    metric_name: str
    per_task: list[float] = field(default_factory=list)
    outputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None

    def row(self) -> dict[str, object]:
        out: dict[str, object] = {
            "loss": self.loss,
            "metric": self.metric,
            "metric_name": self.metric_name,
        }
        if self.per_task:
            out["per_task_auc"] = self.per_task
        return out


def score(task: Task, outputs: torch.Tensor, targets: torch.Tensor) -> Evaluation:
    """Loss and metric of logits ``outputs`` (N, K) against ``targets``."""
    loss = loss_fn(task, outputs, targets).item()
    if task == "multiclass":
        return Evaluation(
            loss, accuracy(outputs, targets), "accuracy", outputs=outputs, targets=targets
        )
    aucs = per_task_auc(outputs, targets)
    finite = [a for a in aucs if not math.isnan(a)]
    mean = float(np.mean(finite)) if finite else float("nan")
    return Evaluation(loss, mean, "mean_auc", aucs, outputs=outputs, targets=targets)


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
    transform=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, K) float32 on the CPU and targets of ``model`` over ``dataset``, in order."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    outs, tgts = [], []
    for x, y in iterate(dataset, batch_size, device=device, transform=transform):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            outs.append(forward_in_chunks(model, x).float().cpu())
        tgts.append(y.cpu())
    model.train(was_training)
    return torch.cat(outs), torch.cat(tgts)


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    task: Task,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
    transform=None,
) -> Evaluation:
    """Test loss and metric (accuracy, or mean AUC with per-task AUCs) of ``model`` on ``dataset``."""
    outputs, targets = predict(model, dataset, batch_size, device, transform)
    return score(task, outputs, targets)
