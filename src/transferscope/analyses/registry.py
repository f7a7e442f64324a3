"""The one list of analysis units: config, CLI, executors, report and findings all read it.

Built-in units register themselves when their module is imported; :func:`units` imports them (in
the paper's order) on first use, so merely importing the registry stays cheap. A unit registered
later (a plug-in, or a test) follows them.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import TypeVar

from transferscope.analyses.unit import Analysis
from transferscope.errors import TransferscopeError, unknown_name

# Modules of the built-in units, in the order of the paper's sections (and of the report).
BUILTIN = (
    "curves",
    "domain",
    "mistakes",
    "similarity",
    "distance",
    "interpolation",
    "criticality",
    "trajectory",
    "alignment",
    "connectivity",
)

_UNITS: dict[str, Analysis] = {}
_loaded = False

A = TypeVar("A", bound=type[Analysis])


def register(cls: A) -> A:
    """Class decorator: register one instance of the unit ``cls`` under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not name or not name.isidentifier():
        raise TransferscopeError(
            f"analysis unit {cls.__name__} needs a name that is an identifier: "
            f'class {cls.__name__}(Analysis, name="...", ...)'
        )
    if name in _UNITS and type(_UNITS[name]) is not cls:
        raise TransferscopeError(f"an analysis named '{name}' is already registered")
    if not hasattr(cls, "section"):
        raise TransferscopeError(
            f"analysis unit {cls.__name__} does not set section=ReportSection(...)"
        )
    if not hasattr(cls, "title"):
        raise TransferscopeError(
            f"analysis unit {cls.__name__} needs a docstring: its first line is the title"
        )
    _UNITS[name] = cls()
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN:
            importlib.import_module(f"transferscope.analyses.{module}")


def units() -> list[Analysis]:
    """Every registered unit: the built-in ones in the paper's order, then any added later."""
    _load_builtins()
    builtin = [_UNITS[n] for n in BUILTIN if n in _UNITS]
    return builtin + [u for n, u in _UNITS.items() if n not in BUILTIN]


def names() -> tuple[str, ...]:
    """The names of every registered analysis, in order."""
    return tuple(u.name for u in units())


def get(name: str) -> Analysis:
    """The unit called ``name``; an unknown name is an error listing the valid ones."""
    _load_builtins()
    if name not in _UNITS:
        raise unknown_name("analysis", name, names())
    return _UNITS[name]


@contextlib.contextmanager
def registered(cls: type[Analysis]) -> Iterator[Analysis]:
    """Register ``cls`` for the duration of a ``with`` block (for tests and experiments)."""
    register(cls)
    try:
        yield _UNITS[cls.name]
    finally:
        _UNITS.pop(cls.name, None)


__all__ = ["BUILTIN", "get", "names", "register", "registered", "units"]
