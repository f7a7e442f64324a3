"""The paper's analyses as pure functions on tensors, modules and metrics rows (Neyshabur et al. 2020, §3.1-§3.2).

Nothing here reads or writes files: :mod:`transferscope.study.analyze` feeds these functions from a
study directory, and a notebook can call them on any ``torch.nn.Module``.

- :mod:`.curves`: learning curves, convergence speed, shuffle gap (§1).
- :mod:`.mistakes`: common / uncommon mistakes of two models (§2).
- :mod:`.cka`: linear CKA, unbiased HSIC, streamed and minibatch CKA on feature matrices (§2).
- :mod:`.similarity`: per-layer feature similarity of two models (§2).
- :mod:`.distance`: parameter distance, whole network and per module (§2).
"""

from transferscope.measures.cka import (
    CKAAccumulator,
    hsic_unbiased,
    linear_cka,
    linear_cka_gram,
)
from transferscope.measures.curves import (
    aggregate_curves,
    compare_curves,
    final_metric,
    relative_drop,
    shuffle_gaps,
    time_to_threshold,
)
from transferscope.measures.distance import (
    ParameterDistance,
    layout_modules,
    module_of,
    parameter_distance,
)
from transferscope.measures.mistakes import MistakeCells, MistakeComparison, compare_mistakes
from transferscope.measures.similarity import feature_similarity

__all__ = [
    "CKAAccumulator",
    "MistakeCells",
    "MistakeComparison",
    "ParameterDistance",
    "aggregate_curves",
    "compare_curves",
    "compare_mistakes",
    "feature_similarity",
    "final_metric",
    "hsic_unbiased",
    "layout_modules",
    "linear_cka",
    "linear_cka_gram",
    "module_of",
    "parameter_distance",
    "relative_drop",
    "shuffle_gaps",
    "time_to_threshold",
]
