"""The built-in analysis units, one module each (:class:`transferscope.unitkit.unit.Analysis`).

Importing this package registers them with :mod:`transferscope.registry` in the order of the
paper's sections, which is the order of the report; :func:`transferscope.registry.load_units`
imports it. The measures they compute live in :mod:`transferscope.measures`.
"""

# isort: skip_file
# The order below is the report's: learning curves and shuffles (§3.1), domain distance, shared
# mistakes and feature similarity (§3.2), parameter distance and interpolation (§3.3),
# criticality (§3.4), the pre-training trajectory (§5), then the analyses beyond the paper.
from transferscope.analyses import curves as curves
from transferscope.analyses import domain as domain
from transferscope.analyses import mistakes as mistakes
from transferscope.analyses import similarity as similarity
from transferscope.analyses import distance as distance
from transferscope.analyses import interpolation as interpolation
from transferscope.analyses import criticality as criticality
from transferscope.analyses import trajectory as trajectory
from transferscope.analyses import alignment as alignment
from transferscope.analyses import connectivity as connectivity
