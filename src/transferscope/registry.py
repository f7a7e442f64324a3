"""The one list of analysis units: config, CLI, runner, report and findings all read it.

A leaf, as timm's ``models/_registry.py``: this module imports none of the units. A unit
registers itself when its module is imported (``@register`` on its class); :func:`load_units`
imports them, the built-in ones from the package :mod:`transferscope.analyses` (whose
``__init__`` imports each unit module in the paper's order) and then every plug-in package named
by an entry point in the group ``transferscope.analyses``. The config validates its
``analyses:`` section against the units listed here without importing any unit itself.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, TypeVar

from transferscope.errors import TransferscopeError, unknown_name

if TYPE_CHECKING:  # pragma: no cover
    from transferscope.unitkit.unit import Analysis

# Plug-ins: ``[project.entry-points."transferscope.analyses"] my_units = "my_package.units"``
# in a package's pyproject.toml; the module named is imported, and its units register.
ENTRY_POINT_GROUP = "transferscope.analyses"
BUILTIN_PACKAGE = "transferscope.analyses"

_UNITS: dict[str, Analysis] = {}
_loaded = False

A = TypeVar("A", bound="type[Analysis]")


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


def load_units() -> None:
    """Import the built-in units and the plug-ins' (once per process); each registers itself.

    A plug-in that fails to import is an error naming its entry point, not a unit silently
    missing from the study.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module(BUILTIN_PACKAGE)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as e:  # a plug-in's own error, whatever it is
            raise TransferscopeError(
                f"the analysis plug-in '{point.name}' ({point.value}, entry point group "
                f"{ENTRY_POINT_GROUP}) failed to import: {type(e).__name__}: {e}"
            ) from e


def units() -> list[Analysis]:
    """Every registered unit, in the order registered: the built-in ones in the paper's order,
    then plug-ins and any registered later."""
    load_units()
    return list(_UNITS.values())


def names() -> tuple[str, ...]:
    """The names of every registered analysis, in order."""
    return tuple(u.name for u in units())


def get(name: str) -> Analysis:
    """The unit called ``name``; an unknown name is an error listing the valid ones."""
    load_units()
    if name not in _UNITS:
        raise unknown_name("analysis", name, names())
    return _UNITS[name]


@contextlib.contextmanager
def registered(cls: type[Analysis]) -> Iterator[Analysis]:
    """Register ``cls`` for the duration of a ``with`` block (for tests and experiments)."""
    load_units()
    register(cls)
    try:
        yield _UNITS[cls.name]
    finally:
        _UNITS.pop(cls.name, None)


__all__ = ["ENTRY_POINT_GROUP", "get", "load_units", "names", "register", "registered", "units"]
