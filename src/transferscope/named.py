"""What the registries by name (data sources, models) share: names, prefixes, unknown names.

A :class:`NamedRegistry` holds entries registered under a name (``digits``) or a prefix
(``timm``: every ``timm:<x>``, the entry then gets ``name=<x>``). Its members register themselves
when the package that holds them is imported (its ``__init__`` imports each member module); the
registry imports that package on first use and none of the members itself, so a registry built on
it stays a leaf (as timm's ``models/_registry.py``). An unknown name is one error that names the
nearest valid one.
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

from transferscope.errors import unknown_name

T = TypeVar("T")


class NamedRegistry(Generic[T]):
    """Entries of one kind by name and by prefix.

    ``what`` names the kind in errors ("data source"), ``package`` is imported before any lookup
    so that its members have registered, ``placeholder`` stands for the rest of a prefixed name in
    :meth:`available` (``timm:<name>``), and ``empty_rest`` says whether a bare ``prefix:``
    resolves (to ``name=""``) or is an unknown name.
    """

    def __init__(self, what: str, package: str, placeholder: str, *, empty_rest: bool) -> None:
        self.what = what
        self.package = package
        self.placeholder = placeholder
        self.empty_rest = empty_rest
        self.names: dict[str, T] = {}
        self.prefixes: dict[str, T] = {}

    def add(self, name: str, entry: T, *, prefix: bool = False) -> str:
        """Register ``entry`` under ``name`` (or, with ``prefix``, every ``name:<x>``); returns
        the name as :meth:`available` lists it."""
        (self.prefixes if prefix else self.names)[name] = entry
        return f"{name}:<{self.placeholder}>" if prefix else name

    def ensure_loaded(self) -> None:
        """Import the package whose modules register the members."""
        importlib.import_module(self.package)

    def available(self) -> list[str]:
        """Every registered name, sorted; prefixed families appear as ``prefix:<placeholder>``."""
        self.ensure_loaded()
        return sorted(self.names) + sorted(f"{p}:<{self.placeholder}>" for p in self.prefixes)

    def resolve(self, name: str) -> tuple[T, dict[str, Any]]:
        """The entry for ``name`` and the fixed keyword arguments its name implies (``name=<x>``
        for a prefixed one); an unknown name is an error listing the valid ones."""
        self.ensure_loaded()
        if name in self.names:
            return self.names[name], {}
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self.prefixes and (rest or self.empty_rest):
            return self.prefixes[prefix], {"name": rest}
        raise unknown_name(self.what, name, self.available())


__all__ = ["NamedRegistry"]
