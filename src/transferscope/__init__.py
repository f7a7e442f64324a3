"""transferscope: what did my pre-trained model actually transfer?

Implements the studies of Neyshabur, Sedghi and Zhang, "What is being transferred in transfer
learning?" (NeurIPS 2020) on a user's own models and data. Every analysis is a function on plain
``torch.nn.Module`` objects and tensors; the study runner (``transferscope run``) strings them
together and writes a report.
"""

from __future__ import annotations

import importlib
from typing import Any

# What ``import transferscope`` offers, imported on first use: the command line starts without
# loading every analysis, the report and matplotlib (about a second and a half of each CLI call).
_EXPORTS = {
    "align": "transferscope.measures.alignment",
    "CKAAccumulator": "transferscope.measures.cka",
    "linear_cka": "transferscope.measures.cka",
    "evaluate_curve": "transferscope.measures.connectivity",
    "fit_curve": "transferscope.measures.connectivity",
    "module_criticality": "transferscope.measures.criticality",
    "aggregate_curves": "transferscope.measures.curves",
    "compare_curves": "transferscope.measures.curves",
    "relative_drop": "transferscope.measures.curves",
    "shuffle_gaps": "transferscope.measures.curves",
    "time_to_threshold": "transferscope.measures.curves",
    "parameter_distance": "transferscope.measures.distance",
    "interpolate": "transferscope.measures.interpolation",
    "compare_mistakes": "transferscope.measures.mistakes",
    "feature_similarity": "transferscope.measures.similarity",
    "trajectory_summary": "transferscope.measures.trajectory",
    "StudyConfig": "transferscope.config",
    "load_preset": "transferscope.config",
    "block_shuffle": "transferscope.data.shuffle",
    "pixel_shuffle": "transferscope.data.shuffle",
    "TransferscopeError": "transferscope.errors",
    "Study": "transferscope.notebook",
    "open_study": "transferscope.notebook",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'transferscope' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__version__ = "0.1.0"

__all__ = [
    "CKAAccumulator",
    "Study",
    "StudyConfig",
    "TransferscopeError",
    "__version__",
    "aggregate_curves",
    "align",
    "block_shuffle",
    "compare_curves",
    "compare_mistakes",
    "evaluate_curve",
    "feature_similarity",
    "fit_curve",
    "interpolate",
    "linear_cka",
    "load_preset",
    "module_criticality",
    "open_study",
    "parameter_distance",
    "pixel_shuffle",
    "relative_drop",
    "shuffle_gaps",
    "time_to_threshold",
    "trajectory_summary",
]
