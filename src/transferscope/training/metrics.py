"""Losses and metrics for the two task types (PAPER.md: accuracy on DomainNet, mean AUC on
CheXpert), and evaluation of a model over a dataset."""

from __future__ import annotations

import math
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


def per_task_auc(outputs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """ROC AUC of each column of ``outputs`` (N, K) against 0/1 ``targets`` (N, K).

    A task whose test targets hold one class only has no AUC: NaN.
    """
    from sklearn.metrics import roc_auc_score

    out = []
    y = targets.cpu().numpy()
    s = outputs.float().cpu().numpy()
    for k in range(y.shape[1]):
        if len(np.unique(y[:, k])) < 2:
            out.append(float("nan"))
        else:
            out.append(float(roc_auc_score(y[:, k], s[:, k])))
    return out


def metric_name(task: Task) -> str:
    return "accuracy" if task == "multiclass" else "mean_auc"


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
