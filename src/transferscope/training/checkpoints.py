"""Weights and resume state as safetensors, written atomically.

Weights of a run live in ``checkpoints/epoch-<k>.safetensors`` (k a fractional epoch, e.g. 0,
0.125, 1, 2) and ``final.safetensors``. ``epoch-0`` is the run's initial weights, kept because
module criticality (Neyshabur et al. 2020, §3.4) needs θ⁰ for RI-T too. ``resume.safetensors`` holds what an
interrupted run needs to continue bit-identically on CPU: weights, the optimizer's state (SGD's
momentum buffers, AdamW's moments and step count), and a JSON header with the step and the RNG
states.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from transferscope import atomic
from transferscope.errors import TransferscopeError

FINAL = "final.safetensors"


def point_name(epoch: float) -> str:
    """Canonical file stem of the checkpoint at fractional ``epoch`` ('epoch-0.125', 'epoch-2')."""
    return f"epoch-{epoch:g}"


def save_weights(
    path: str | Path, state: dict[str, torch.Tensor], meta: dict[str, str] | None = None
) -> None:
    """Save a state dict as safetensors, atomically. Tensors are copied to contiguous CPU memory."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    with atomic.atomic_path(path, size=size) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors state dict; a missing or corrupt file is a clear error naming it."""
    path = Path(path)
    if not path.is_file():
        raise TransferscopeError(f"checkpoint '{path}' does not exist")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise TransferscopeError(
            f"checkpoint '{path}' is not a readable safetensors file: {e}"
        ) from None


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def save_resume(
    path: str | Path,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, torch.Tensor],
    info: dict[str, Any],
) -> None:
    """One file, so weights, optimizer and position can never disagree after a crash.

    ``optimizer_state``: ``"<entry>/<parameter name>"`` -> tensor (SGD's momentum buffers,
    AdamW's moments and step; :func:`transferscope.training.optim.optimizer_state`).
    """
    tensors = {f"model/{k}": v for k, v in model_state.items()}
    tensors.update({f"optimizer/{k}": v for k, v in optimizer_state.items()})
    save_weights(path, tensors, meta={"resume": json.dumps(info)})


def load_resume(
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """Inverse of :func:`save_resume`: (model state, optimizer state, info).

    A resume file written before the optimizer state was kept whole holds SGD's momentum
    buffers as ``momentum/<name>``: they are read as ``momentum_buffer/<name>``.
    """
    tensors = load_weights(path)
    info = json.loads(read_metadata(path)["resume"])
    model = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    optimizer = {
        k[len("optimizer/") :]: v for k, v in tensors.items() if k.startswith("optimizer/")
    }
    optimizer.update(
        {
            "momentum_buffer/" + k[len("momentum/") :]: v
            for k, v in tensors.items()
            if k.startswith("momentum/")
        }
    )
    return model, optimizer, info
