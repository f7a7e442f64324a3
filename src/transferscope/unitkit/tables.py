"""Tables a unit flattens its result into, for notebooks (:meth:`transferscope.notebook.Study.table`).

A unit's :meth:`~transferscope.unitkit.unit.Analysis.tables` returns ``{name: Table}``: one row
per measured number, with the target, pair, run ids and seeds as columns to filter and pivot
on. Units that return a table of the same name (the straight lines of interpolation, alignment
and connectivity are all ``barriers``) add their rows to one table, in the registry's order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

PAIR_COLUMNS = ("target", "pair", "runs", "seeds")
BARRIER_COLUMNS = (
    "analysis",
    *PAIR_COLUMNS,
    "k",
    "path",
    "barrier_metric",
    "barrier_loss",
    "batchnorm_recalibrated",
)


@dataclass(frozen=True)
class Table:
    """Rows of one notebook table, each a dict of ``columns`` (the DataFrame's column order,
    kept when there are no rows)."""

    columns: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)


def measured(value: Any) -> bool:
    """Whether ``value`` (an entry, pair or side of a result) was measured: status ``ok``."""
    return getattr(value, "status", None) == "ok"


def measured_pairs(result: Any) -> list[tuple[str, Any]]:
    """(target, pair) of every measured pair of ``result`` (a result whose target entries hold
    ``pairs``); nothing for a result that is None."""
    out: list[tuple[str, Any]] = []
    for target, entry in (result.targets if result is not None else {}).items():
        if measured(entry):
            out += [(target, p) for p in entry.pairs if measured(p)]
    return out


def pair_columns(target: str, pair: Any) -> dict[str, Any]:
    """The columns that say which pair a row is about: target, pair name, run ids, seeds."""
    return {
        "target": target,
        "pair": pair.pair,
        "runs": tuple(pair.runs),
        "seeds": tuple(getattr(pair, "seeds", ())),
    }


def pair_table(
    result: Any, columns: Sequence[str], values: Callable[[Any], Iterable[Sequence[Any]]]
) -> Table:
    """A table of ``result``'s measured pairs: the :data:`PAIR_COLUMNS`, then ``columns``, one
    row for each of the value rows ``values(pair)`` gives (per module, layer, ...)."""
    rows = [
        {**pair_columns(target, pair), **dict(zip(columns, row, strict=True))}
        for target, pair in measured_pairs(result)
        for row in values(pair)
    ]
    return Table((*PAIR_COLUMNS, *columns), rows)


def barrier_rows(analysis: str, result: Any, paths: Iterable[tuple[str, str | None]]) -> Table:
    """The ``barriers`` table's rows of one unit: for each measured pair, one row per path
    (``(name, attribute)``: the pair's own barrier for attribute None, else the barrier of the
    path stored under that attribute)."""
    paths = list(paths)
    rows = []
    for target, pair in measured_pairs(result):
        for path, attr in paths:
            line = pair if attr is None else getattr(pair, attr)
            rows.append(
                {
                    "analysis": analysis,
                    **pair_columns(target, pair),
                    "k": getattr(pair, "k", None),
                    "path": path,
                    "barrier_metric": line.barrier_metric,
                    "barrier_loss": line.barrier_loss,
                    "batchnorm_recalibrated": line.batchnorm_recalibrated,
                }
            )
    return Table(BARRIER_COLUMNS, rows)


__all__ = [
    "BARRIER_COLUMNS",
    "PAIR_COLUMNS",
    "Table",
    "barrier_rows",
    "measured",
    "measured_pairs",
    "pair_columns",
    "pair_table",
]
