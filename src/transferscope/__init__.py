"""transferscope: what did my pre-trained model actually transfer?

Implements the studies of Neyshabur, Sedghi and Zhang, "What is being transferred in transfer
learning?" (NeurIPS 2020) on a user's own models and data. Every analysis is a function on plain
``torch.nn.Module`` objects and tensors; the study runner (``transferscope run``) strings them
together and writes a report.
"""

from transferscope.analysis.alignment import align
from transferscope.analysis.cka import CKAAccumulator, linear_cka
from transferscope.analysis.connectivity import evaluate_curve, fit_curve
from transferscope.analysis.criticality import module_criticality
from transferscope.analysis.curves import (
    aggregate_curves,
    compare_curves,
    relative_drop,
    shuffle_gaps,
    time_to_threshold,
)
from transferscope.analysis.distance import parameter_distance
from transferscope.analysis.interpolation import interpolate
from transferscope.analysis.mistakes import compare_mistakes
from transferscope.analysis.similarity import feature_similarity
from transferscope.analysis.trajectory import trajectory_summary
from transferscope.config import StudyConfig, load_preset
from transferscope.data.shuffle import block_shuffle, pixel_shuffle
from transferscope.errors import TransferscopeError
from transferscope.notebook import Study, open_study

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
