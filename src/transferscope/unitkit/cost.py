"""What an analysis's work is made of, read off the study's architecture: for time estimates.

A unit's :meth:`~transferscope.unitkit.unit.Analysis.work` counts forwards, training steps,
float64 multiply-adds and model loads (:class:`~transferscope.unitkit.unit.Work`); how much one
forward costs depends on the model, and these helpers look at the model once, on one synthetic
example: whether it has BatchNorm running statistics (paths then recompute them at every point),
the multiply-adds of each of its weight layers in the order they run (a criticality probe replays
the modules before the one it moves, so it pays only for the rest), and the features each module
outputs (CKA's cost grows with them).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from transferscope.measures.batchnorm import has_running_stats


@dataclass
class ModelFacts:
    """One architecture as an estimate sees it (:func:`facts`)."""

    batchnorm: bool
    """Whether it has BatchNorm running statistics."""
    macs: list[tuple[str, int]]
    """(module path, multiply-adds per example) of each convolution and linear layer, in the
    order the forward pass calls them."""
    outputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Module path -> the shape of its output for one example (batch dimension left out)."""

    def suffix_fraction(self, module: str) -> float:
        """The share of a forward's multiply-adds spent from ``module`` on (1.0 when unknown):
        what a probe that replays the modules before ``module`` computes."""
        total = sum(m for _, m in self.macs)
        first = next((i for i, (path, _) in enumerate(self.macs) if _within(path, module)), None)
        if total == 0 or first is None:
            return 1.0
        return sum(m for _, m in self.macs[first:]) / total

    def features(self, module: str, pooled: bool) -> int:
        """Features per example of ``module``'s output, flattened or (``pooled``) its channels."""
        shape = self.outputs.get(module)
        if not shape:
            return 0
        if pooled and len(shape) >= 2:
            return int(shape[-1] if len(shape) == 2 else shape[0])
        return int(torch.Size(shape).numel())


def _within(path: str, module: str) -> bool:
    return path == module or path.startswith(module + ".")


_FACTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], ModelFacts]] = (
    weakref.WeakKeyDictionary()
)


def facts(model: nn.Module, image_shape: tuple[int, ...]) -> ModelFacts:
    """Look at ``model`` once on one synthetic example of ``image_shape`` (C, H, W), in eval mode
    without gradients (its weights and mode are left as they were); cached per model."""
    cached = _FACTS.setdefault(model, {})
    key = tuple(image_shape)
    if key in cached:
        return cached[key]
    macs: list[tuple[str, int]] = []
    outputs: dict[str, tuple[int, ...]] = {}
    names = {module: name for name, module in model.named_modules()}

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        name = names[module]
        out = output[0] if isinstance(output, tuple | list) else output
        if not isinstance(out, torch.Tensor):
            return
        outputs.setdefault(name, tuple(out.shape[1:]))
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups
            per_output *= module.kernel_size[0] * module.kernel_size[1]
            macs.append((name, out[0].numel() * per_output))
        elif isinstance(module, nn.Linear):
            macs.append((name, out[0].numel() * module.in_features))

    handles = [m.register_forward_hook(hook) for m in names]
    mode = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *image_shape, device=device))
    finally:
        model.train(mode)
        for h in handles:
            h.remove()
    cached[key] = ModelFacts(has_running_stats(model), macs, outputs)
    return cached[key]


__all__ = ["ModelFacts", "facts"]
