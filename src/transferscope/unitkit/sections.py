"""The report's sections of the built-in analysis units, in the paper's order.

A section is an ``<h2>`` of the report and its link in the navigation; the findings table names
it for each claim. Several units may share one (the basin units). A unit from outside the
package declares its own: ``section=ReportSection("probe", "Linear probe")``.
"""

from __future__ import annotations

from transferscope.unitkit.unit import ReportSection

FEATURE_REUSE = ReportSection("feature-reuse", "Feature reuse (§1)")
MISTAKES = ReportSection("mistakes", "Mistakes (§2)")
SIMILARITY = ReportSection("similarity", "Feature similarity (§2)")
DISTANCE = ReportSection("distance", "Parameter distance (§2)")
BARRIERS = ReportSection("barriers", "Performance barriers (§3)")
CRITICALITY = ReportSection("criticality", "Module criticality (§4)")
TRAJECTORY = ReportSection("trajectory", "Pre-training trajectory (§5)")
BASINS = ReportSection("basins", "Basins modulo permutation and non-linear paths")

__all__ = [
    "BARRIERS",
    "BASINS",
    "CRITICALITY",
    "DISTANCE",
    "FEATURE_REUSE",
    "MISTAKES",
    "SIMILARITY",
    "TRAJECTORY",
]
