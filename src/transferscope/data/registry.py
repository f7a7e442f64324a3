"""Data sources by name.

A source is a function ``build(root, seed, **options) -> Splits``. ``root`` is the directory that
holds the data (None: the source's own search order), ``seed`` fixes every random choice the source
makes (splits, subsampling, mosaics). Options are checked against the function's signature, so a
misspelt option fails with the nearest valid name, and validated against a pydantic model made from
its types (:func:`options_model`), so ``image_size: "big"`` or ``augment: "no"`` fails at once with
one line instead of a traceback mid-study or, worse, a silently different study.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from transferscope.data.base import Splits
from transferscope.errors import TransferscopeError, check_option_names
from transferscope.named import NamedRegistry

Builder = Callable[..., Splits]
# The members register when the package's __init__ imports them; this module imports none of them
# (a leaf registry, as timm's models/_registry.py).
_SOURCES: NamedRegistry[Builder] = NamedRegistry(
    "data source", "transferscope.data", "Name", empty_rest=True
)
_DESCRIPTIONS: dict[str, str] = {}


def register(
    name: str, *, prefix: bool = False, description: str = ""
) -> Callable[[Builder], Builder]:
    """Register ``build`` under ``name`` (or, with ``prefix``, every ``name:<x>``).

    ``description`` is the one line ``transferscope data list`` shows beside the name.
    """

    def wrap(fn: Builder) -> Builder:
        _DESCRIPTIONS[_SOURCES.add(name, fn, prefix=prefix)] = description
        return fn

    return wrap


def available() -> list[str]:
    """Every registered name; prefixed families appear as ``prefix:<Name>``."""
    return _SOURCES.available()


def describe(name: str) -> str:
    """The one-line description of a name listed by :func:`available` ('' if it has none)."""
    _SOURCES.ensure_loaded()
    return _DESCRIPTIONS.get(name, "")


def resolve(name: str) -> tuple[Builder, dict[str, Any]]:
    """The builder for ``name`` and the fixed keyword arguments its name implies."""
    return _SOURCES.resolve(name)


def _unquoted_is_not_text(value: str) -> bool:
    """Whether YAML reads ``value`` without its quotes as a number or a boolean."""
    import yaml

    try:
        return not isinstance(yaml.safe_load(value), str)
    except yaml.YAMLError:
        return False


def option_names(name: str) -> list[str]:
    """The options ``name`` accepts (besides ``root`` and ``seed``)."""
    builder, fixed = resolve(name)
    params = inspect.signature(builder).parameters
    return [p for p in params if p not in ("root", "seed", *fixed)]


@functools.cache
def _options_model(builder: Builder, fixed: tuple[str, ...]) -> type[BaseModel]:
    """A pydantic model of ``builder``'s options, from its signature's types and defaults.

    Strict: YAML already gives numbers and booleans their types, so a string where a number or a
    boolean belongs ('1', 'no') is a mistake to report, not a value to guess at.
    """
    hints = typing.get_type_hints(builder, include_extras=True)
    fields: dict[str, Any] = {}
    for param in inspect.signature(builder).parameters.values():
        if param.name in ("root", "seed", *fixed) or param.kind is param.VAR_KEYWORD:
            continue
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints.get(param.name, Any), default)
    config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
    return create_model(f"{builder.__module__}.options", __config__=config, **fields)


def options_model(name: str) -> type[BaseModel]:
    """The pydantic model that validates the options of data source ``name``."""
    builder, fixed = resolve(name)
    return _options_model(builder, tuple(fixed))


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise one clear error for an option ``name`` does not accept or a value of the wrong type."""
    valid = option_names(name)
    check_option_names(f"data source '{name}'", options, valid)
    try:
        options_model(name).model_validate(options)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0])
        where = ".".join(str(x) for x in err["loc"])
        expected = str(inspect.signature(resolve(name)[0]).parameters[key].annotation)
        expected = expected.replace("PositiveInt", "positive int")
        value = err.get("input")
        message = str(err["msg"])
        if message.startswith("Value error, "):  # the type's own rule (a seed's range)
            raise TransferscopeError(
                f"data source '{name}': option {where}: {message.removeprefix('Value error, ')}, "
                f"got {value!r}"
            ) from None
        wanted = message.removeprefix("Input should be ")
        hint = (
            f"; in YAML a quoted value is text: write {key}: {value} without quotes"
            if isinstance(value, str) and _unquoted_is_not_text(value)
            else ""
        )
        raise TransferscopeError(
            f"data source '{name}': option {where} should be {wanted} ({expected}), got "
            f"{value!r}{hint}"
        ) from None


def load(name: str, root: str | Path | None = None, seed: int = 0, **options: Any) -> Splits:
    """Build the splits of the data source ``name``.

    >>> splits = load("digits")  # doctest: +SKIP
    >>> splits.info.task, splits.train[0][0].shape
    ('multiclass', torch.Size([1, 28, 28]))
    """
    builder, fixed = resolve(name)
    check_options(name, options)
    return builder(root=Path(root) if root is not None else None, seed=seed, **fixed, **options)
