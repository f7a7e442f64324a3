"""Data sources by name.

A source is a function ``build(root, seed, **options) -> Splits``. ``root`` is the directory that
holds the data (None: the source's own search order), ``seed`` fixes every random choice the source
makes (splits, subsampling, mosaics). Options are checked against the function's signature, so a
misspelt option fails with the nearest valid name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transferscope.data.base import Splits
from transferscope.errors import TransferscopeError, did_you_mean, unknown_name

Builder = Callable[..., Splits]
_SOURCES: dict[str, Builder] = {}
_PREFIXES: dict[str, Builder] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(
    name: str, *, prefix: bool = False, description: str = ""
) -> Callable[[Builder], Builder]:
    """Register ``build`` under ``name`` (or, with ``prefix``, every ``name:<x>``).

    ``description`` is the one line ``transferscope data list`` shows beside the name.
    """

    def wrap(fn: Builder) -> Builder:
        (_PREFIXES if prefix else _SOURCES)[name] = fn
        _DESCRIPTIONS[f"{name}:<Name>" if prefix else name] = description
        return fn

    return wrap


def _ensure_loaded() -> None:
    # Importing the modules registers their sources.
    from transferscope.data import (  # noqa: F401
        chexpert,
        digits,
        domainnet,
        fashion_mnist,
        imagefolder,
        mosaic,
        torchvision_source,
    )


def available() -> list[str]:
    """Every registered name; prefixed families appear as ``prefix:<Name>``."""
    _ensure_loaded()
    return sorted(_SOURCES) + sorted(f"{p}:<Name>" for p in _PREFIXES)


def describe(name: str) -> str:
    """The one-line description of a name listed by :func:`available` ('' if it has none)."""
    _ensure_loaded()
    return _DESCRIPTIONS.get(name, "")


def resolve(name: str) -> tuple[Builder, dict[str, Any]]:
    """The builder for ``name`` and the fixed keyword arguments its name implies."""
    _ensure_loaded()
    if name in _SOURCES:
        return _SOURCES[name], {}
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _PREFIXES:
        return _PREFIXES[prefix], {"name": rest}
    raise unknown_name("data source", name, available())


def option_names(name: str) -> list[str]:
    """The options ``name`` accepts (besides ``root`` and ``seed``)."""
    builder, fixed = resolve(name)
    params = inspect.signature(builder).parameters
    return [p for p in params if p not in ("root", "seed", *fixed)]


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise a clear error for an option ``name`` does not accept."""
    valid = option_names(name)
    for key in options:
        if key not in valid:
            raise TransferscopeError(
                f"data source '{name}' has no option '{key}'{did_you_mean(key, valid)}; "
                f"valid options: {', '.join(valid) or '(none)'}"
            )


def load(name: str, root: str | Path | None = None, seed: int = 0, **options: Any) -> Splits:
    """Build the splits of the data source ``name``.

    >>> splits = load("digits")  # doctest: +SKIP
    >>> splits.info.task, splits.train[0][0].shape
    ('multiclass', torch.Size([1, 28, 28]))
    """
    builder, fixed = resolve(name)
    check_options(name, options)
    return builder(root=Path(root) if root is not None else None, seed=seed, **fixed, **options)
