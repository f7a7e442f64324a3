"""Typed result documents: what ``analyses/<name>.json`` holds, written from and read into models.

Every document is one :class:`AnalysisResult` subclass (a unit's ``Result``): the envelope the
runner fills (status, version, options, the runs used and missed, the inputs it was computed
from) and the unit's own fields, usually ``targets``: target label -> an entry that is either the
unit's ``ok`` model or a :class:`Skipped` one with the reason. Models forbid unknown keys, so a
renamed field fails where it is written, and a file that does not match its model fails on load
with the file and the field (:func:`load_result`) instead of showing as a silent "-".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from transferscope.errors import TransferscopeError

Status = Literal["ok", "skipped", "failed"]


class Model(BaseModel):
    """Base of every result model: unknown keys are errors; NaN and ∞ survive the JSON."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, ser_json_inf_nan="constants")


class Skipped(Model):
    """A target, pair or part that could not be measured, and why."""

    status: Literal["skipped", "failed"]
    reason: str = ""


class TargetEntry(Model):
    """Base of a unit's per-target ``ok`` entry."""

    status: Literal["ok"] = "ok"


E = TypeVar("E", bound=BaseModel)


def _measured(value: Any) -> str:
    status = (
        value.get("status", "ok") if isinstance(value, dict) else getattr(value, "status", "ok")
    )
    return "skipped" if status in ("skipped", "failed") else "ok"


def entry(model: type[E]) -> Any:
    """The annotation of a field holding ``model`` when measured, else :class:`Skipped` (told
    apart by ``status``; a measured entry may leave it out)."""
    return Annotated[
        Annotated[model, Tag("ok")] | Annotated[Skipped, Tag("skipped")], Discriminator(_measured)
    ]


if TYPE_CHECKING:
    # For the type checker: a field ``Entry[M]`` holds an M or a Skipped.
    Entry: TypeAlias = Union[E, Skipped]  # noqa: UP007  (a generic alias needs Union)
else:

    class Entry:
        """``Entry[Model]``: the annotation of a field holding ``Model`` when measured, else
        :class:`Skipped` (told apart by ``status``), as :func:`entry` builds it."""

        def __class_getitem__(cls, model: type[BaseModel]) -> Any:
            return entry(model)


class Comparison(Model):
    """A stored :class:`transferscope.measures.statistics.Comparison`: A against B."""

    status: Literal["ok"] = "ok"
    direction: int
    """+1: A exceeds B beyond the noise; -1: B exceeds A; 0: within the noise."""
    estimate: float
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    method: str = ""
    n: int | None = None
    """The test examples a paired comparison was measured on."""
    wins: int | None = None
    """Sign test: examples A gets right and B wrong (averaged over seeds)."""
    losses: int | None = None


class AnalysisResult(Model):
    """The envelope of every analysis document; units subclass it with their own fields."""

    analysis: str = ""
    version: int = 0
    status: Status = "ok"
    reason: str | None = None
    traceback: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    runs_used: list[str] = Field(default_factory=list)
    runs_missing: list[str] = Field(default_factory=list)
    computed_because: str | None = None
    inputs: dict[str, Any] | None = None
    targets: dict[str, Any] = Field(default_factory=dict)


R = TypeVar("R", bound=AnalysisResult)


class ResultMismatch(TransferscopeError):
    """An analysis document that does not match its result model (or is not JSON)."""


def load_result(model: type[R], path: Path, version: int | None = None) -> R:
    """Read ``path`` into ``model``.

    Raises:
        ResultMismatch: the file is not JSON, was written by another version of the analysis,
            or does not match the model; the message names the file, the field and the fix.
    """
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultMismatch(f"{path} could not be read ({e}); {_fix(path)}") from None
    return validate_result(model, raw, path, version)


def validate_result(model: type[R], raw: Any, path: Path, version: int | None = None) -> R:
    """``raw`` (the JSON already read from ``path``) as ``model``; raises as :func:`load_result`."""
    name, fix = Path(path).stem, _fix(path)
    if not isinstance(raw, dict):
        raise ResultMismatch(f"{path} does not hold an analysis result; {fix}")
    if version is not None and raw.get("status") == "ok" and raw.get("version") != version:
        raise ResultMismatch(
            f"{path} was written by version {raw.get('version', 'unknown')} of the {name} "
            f"analysis, this transferscope reads version {version}; {fix}"
        )
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ResultMismatch(
            f"{path} does not match the {name} result: field {where}: {first['msg']}{more}; {fix}"
        ) from None


def skipped_parts(value: Any, part: str | None = None) -> list[tuple[str | None, str, str]]:
    """(part, status, reason) of every skipped or failed model within ``value`` (a result, a
    target entry, or lists and dicts of them): the part is the pair name, or the alias of the
    field holding it (e.g. a criticality kind, "P-T"), else ``part``."""
    if isinstance(value, BaseModel):
        label = getattr(value, "pair", None) or part
        status = getattr(value, "status", None)
        if status in ("skipped", "failed"):
            return [(label, str(status), getattr(value, "reason", None) or "")]
        found = []
        for name, info in type(value).model_fields.items():
            found += skipped_parts(getattr(value, name), info.alias or label)
        return found
    if isinstance(value, list | tuple):
        return [x for item in value for x in skipped_parts(item, part)]
    if isinstance(value, dict):
        return [x for key, item in value.items() for x in skipped_parts(item, part or str(key))]
    return []


def _fix(path: Path) -> str:
    return f"rerun `transferscope analyze {Path(path).parent.parent} --only {Path(path).stem}`"


__all__ = [
    "AnalysisResult",
    "Comparison",
    "Entry",
    "Model",
    "ResultMismatch",
    "Skipped",
    "Status",
    "TargetEntry",
    "entry",
    "load_result",
    "skipped_parts",
    "validate_result",
]
