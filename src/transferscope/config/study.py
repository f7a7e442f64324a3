"""Typed study configuration (pydantic v2), read from YAML with ``safe_load``.

A :class:`StudyConfig` says everything a study does: the source domain P is pre-trained on, the
target domains, the model, the three training recipes (pretrain / finetune / randinit), seeds,
shuffles (Neyshabur et al. 2020, §3.1), pre-training trajectory checkpoints (§5), which analyses run, and where the
study directory is. Every section forbids unknown keys: a typo fails with the key, where it is, and
the nearest valid key, instead of silently running a different study.

This module holds the study config, its analyses section, and how a config is loaded (presets,
YAML, errors a person can act on) and compared; the sections it is made of (data, model,
training, shuffles, trajectory, hardware) are in :mod:`transferscope.config.sections` and importable from
here too.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from transferscope.config.sections import (
    DataSpec,
    ModelSpec,
    PerformanceSpec,
    PretrainedSpec,
    ReportSpec,
    ResourcesSpec,
    ShuffleSpec,
    TrainSpec,
    TrajectorySpec,
)
from transferscope.errors import TransferscopeError, did_you_mean
from transferscope.options import AnalysisOptions, Section, Seed


class AnalysesSpec(BaseModel):
    """Which analyses run and their options: one key per registered analysis unit
    (:mod:`transferscope.analyses`), each validated by the unit's own options model and on by
    default. An unknown key is an error naming the registered analyses."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _registered(cls, data: Any) -> Any:
        from transferscope import registry

        if isinstance(data, AnalysesSpec):
            return data
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ValueError("must be a mapping: analysis name -> its options")
        valid = registry.names()
        for key in data:
            if key not in valid:
                raise AnalysisOptionsError(
                    f"unknown analysis '{key}' in analyses{did_you_mean(str(key), valid)}; "
                    f"valid: {', '.join(valid)}"
                )
        out: dict[str, Any] = {}
        for unit in registry.units():
            value = data.get(unit.name)
            if isinstance(value, unit.Options):
                out[unit.name] = value
                continue
            try:
                out[unit.name] = unit.Options.model_validate({} if value is None else value)
            except ValidationError as e:
                raise AnalysisOptionsError(
                    str(explain(e, "", root=unit.Options, prefix=("analyses", unit.name)))
                ) from None
        return out

    def __getattr__(self, name: str) -> Any:
        extra = self.__pydantic_extra__ or {}
        if name in extra:
            return extra[name]
        raise AttributeError(f"no analysis '{name}' is registered")

    def of(self, name: str) -> AnalysisOptions:
        """The options of the analysis ``name``."""
        return (self.__pydantic_extra__ or {})[name]


class AnalysisOptionsError(TransferscopeError):
    """An analyses section that does not match the registered units' options."""


class StudyConfig(Section):
    """Everything one study does. docs/study-directory.md describes the study directory it produces."""

    name: str = "study"
    source: DataSpec
    targets: list[DataSpec] = Field(min_length=1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    pretrained: PretrainedSpec | None = None
    pretrain: TrainSpec = Field(default_factory=TrainSpec)
    finetune: TrainSpec = Field(default_factory=TrainSpec)
    randinit: TrainSpec = Field(default_factory=TrainSpec)
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1], min_length=1)
    pretrain_seed: Seed = 0
    same_init_pair: bool = Field(
        default=True,
        description="also train, for each seed after the first, an RI-T from the first RI-T's "
        "random init: pairs that share an init (§3)",
    )
    control_pair: bool = Field(
        default=True,
        description="also fine-tune every seed from P's untrained init (P@0-T): pairs that share "
        "a start and the fine-tuning recipe but no pre-training (the controlled verdicts)",
    )
    head_init: Literal["random", "zero"] = Field(
        default="random",
        description="P-T's new head: random from the run's seed (the paper's fine-tuning) or zero "
        "(Fixup's rule); part of P-T run ids",
    )
    negative_control: bool = Field(
        default=False,
        description="P is an untrained network (no pre-training, no trajectory): a study whose "
        "claims C1, C4 and C5 must not hold",
    )
    shuffles: ShuffleSpec = Field(default_factory=ShuffleSpec)
    trajectory: TrajectorySpec = Field(default_factory=TrajectorySpec)
    analyses: AnalysesSpec = Field(default_factory=AnalysesSpec)
    output: Path = Path("transferscope-study")
    device: str = Field(default="auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:1")
    num_threads: int | None = Field(default=None, ge=1)
    jobs: int = Field(
        default=1,
        ge=1,
        description="runs trained at once by the local executor, each in its own process",
    )
    performance: PerformanceSpec = Field(default_factory=PerformanceSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        labels = [t.label for t in self.targets]
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise ValueError(f"targets share the id {sorted(dup)}; give each an 'id'")
        if self.source.label in labels:
            raise ValueError(f"a target has the source's id '{self.source.label}'")
        return self


# --------------------------------------------------------------------------------------------
# Loading, with errors a person can act on


def _section_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The config section class that the error location ``loc`` (from ``root``) points into."""
    cls: type[BaseModel] | None = root
    for part in loc:
        if cls is None or isinstance(part, int):
            continue
        field = cls.model_fields.get(str(part))
        if field is None:
            return None
        cls = _model_in(field.annotation)
    return cls


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _shown(value: Any) -> str:
    """A value as an error message shows it: repr, cut to 80 characters (a 300-character id)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def explain(
    error: ValidationError,
    origin: str,
    root: type[BaseModel] | None = None,
    prefix: tuple[Any, ...] = (),
) -> TransferscopeError:
    """Turn a pydantic error into one line naming the key, where it is, and the fix.

    ``root`` is the model that was validated (default :class:`StudyConfig`), found at ``prefix``
    inside the study config.
    """
    lines = []
    for err in error.errors():
        inner = tuple(err["loc"])
        loc = prefix + inner
        if err["type"] == "extra_forbidden":
            key, parent = str(loc[-1]), loc[:-1]
            section = _section_at(inner[:-1], root or StudyConfig)
            valid = list(section.model_fields) if section else []
            where = _format_loc(parent) if parent else "the top level"
            hint = did_you_mean(key, valid) or (
                f"; valid keys: {', '.join(valid)}" if valid else ""
            )
            lines.append(f"unknown key '{key}' in {where}{hint}")
        else:
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {_shown(value)})"
            message = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{_format_loc(loc)}: {message}{shown}")
    return TransferscopeError((f"{origin}: " if origin else "") + "; ".join(lines))


def from_dict(data: dict[str, Any], origin: str = "config") -> StudyConfig:
    """Validate a plain dict (as read from YAML) into a :class:`StudyConfig`."""
    if not isinstance(data, dict):
        raise TransferscopeError(
            f"{origin}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as e:
        raise explain(e, origin) from None
    except AnalysisOptionsError as e:
        raise TransferscopeError(f"{origin}: {e}") from None


def preset_names() -> list[str]:
    """Names of the presets shipped with transferscope (presets/*.yaml)."""
    folder = resources.files("transferscope.config") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_yaml(text: str, origin: str) -> dict[str, Any]:
    """Parse YAML text safely; a syntax error is one line naming ``origin``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        # PyYAML's own text spans several lines with a caret drawing; keep what and where.
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None)
        if mark is not None and problem:
            where = f"line {mark.line + 1}, column {mark.column + 1}"
            raise TransferscopeError(f"{origin}: not valid YAML at {where}: {problem}") from None
        raise TransferscopeError(f"{origin}: not valid YAML: {e}".replace("\n", " ")) from None
    return data if data is not None else {}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset_description(name: str) -> str:
    """The one-line description of a shipped preset: the first line of its YAML, a comment."""
    text = (resources.files("transferscope.config") / "presets" / f"{name}.yaml").read_text()
    first = text.splitlines()[0] if text else ""
    return first.lstrip("#").strip() if first.startswith("#") else ""


def preset_dict(name: str) -> dict[str, Any]:
    """The raw mapping of a shipped preset."""
    names = preset_names()
    if name not in names:
        raise TransferscopeError(
            f"unknown preset '{name}'{did_you_mean(name, names)}; presets: {', '.join(names)}"
        )
    text = (resources.files("transferscope.config") / "presets" / f"{name}.yaml").read_text()
    return read_yaml(text, f"preset '{name}'")


# Sections that name what they configure (a data source, an architecture): their options, root
# and id belong to that choice. A config that names another one replaces the preset's section
# instead of merging into it: the preset's Fixup widths are no options of a ViT.
NAMED_SECTIONS = ("source", "model")


def merge_preset(preset: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` over ``preset``: mappings merged key by key, except a ``source`` or ``model``
    section that names another source or model than the preset's, which replaces it whole."""
    out = _merge(preset, data)
    for key in NAMED_SECTIONS:
        if _renames(preset.get(key), data.get(key)):
            out[key] = data[key]
    return out


def _renames(preset_section: Any, section: Any) -> bool:
    return (
        isinstance(section, dict)
        and isinstance(preset_section, dict)
        and "name" in section
        and section["name"] != preset_section.get("name")
    )


def option_origins(
    preset_name: str, preset: dict[str, Any], data: dict[str, Any], file: str
) -> dict[str, str]:
    """Where the options of ``source``, ``model`` and ``targets`` came from when ``data`` (read
    from ``file``) starts from ``preset``: said with an error about those options."""
    where = f"preset '{preset_name}'"
    out = {}
    for key in NAMED_SECTIONS:
        mine = given if isinstance(given := data.get(key), dict) else {}
        theirs = preset_section if isinstance(preset_section := preset.get(key), dict) else {}
        own = dict(mine.get("options") or {})
        inherited = {} if _renames(theirs, mine) else dict(theirs.get("options") or {})
        kept = sorted(k for k in inherited if k not in own)
        if own and kept:
            out[key] = (
                f"{key}.options: {', '.join(kept)} from {where}, {', '.join(sorted(own))} "
                f"from {file}"
            )
        elif kept:
            out[key] = f"{key}.options from {where}"
        elif own:
            out[key] = f"{key}.options from {file}"
    out["targets"] = f"targets from {file if 'targets' in data else where}"
    return out


def load(path: str | Path) -> StudyConfig:
    """Read a study config from a YAML file, and check the names it refers to.

    A file may start from a preset with ``preset: NAME`` and override any key of it (see
    :func:`merge_preset`). An option a data source or the model does not take is an error
    naming where the option came from: the preset or the file.
    """
    path = Path(path)
    if not path.is_file():
        raise TransferscopeError(
            f"config file '{path}' does not exist; pass a YAML file or --preset NAME"
        )
    data = read_yaml(path.read_text(), str(path))
    if not isinstance(data, dict):
        raise TransferscopeError(f"{path}: expected a mapping at the top level")
    origins: dict[str, str] = {}
    if "preset" in data:
        name = str(data.pop("preset"))
        preset = preset_dict(name)
        origins = option_origins(name, preset, data, str(path))
        data = merge_preset(preset, data)
    cfg = from_dict(data, str(path))
    try:
        check_references(cfg, origins)
    except TransferscopeError as e:
        raise TransferscopeError(f"{path}: {e}") from None
    return cfg


def load_preset(name: str, **overrides: Any) -> StudyConfig:
    """A shipped preset, optionally with top-level keys replaced (e.g. ``output=...``), merged
    as a file's keys are (:func:`merge_preset`)."""
    data = merge_preset(preset_dict(name), overrides)
    return from_dict(data, f"preset '{name}'")


def to_yaml(config: StudyConfig) -> str:
    """The fully resolved config (every default written out) as YAML."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


# Keys that say how a study runs, not what it computes: a config differing only in these is the
# same study (``transferscope run`` then takes the new values without asking for --force).
EXECUTION_KEYS = (
    "output",
    "device",
    "num_threads",
    "jobs",
    "performance",
    "resources",
    "report",
)


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two plain (JSON-like) configs, in order.

    Mappings are compared key by key, lists of mappings item by item (``targets[1].options``);
    any other list is one value.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in [*old, *(k for k in new if k not in old)]:
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(where)
            else:
                out += changed_keys(old[key], new[key], where)
        return out
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and len(old) == len(new)
        and all(isinstance(x, dict) for x in old + new)
    ):
        return [
            k
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for k in changed_keys(a, b, f"{prefix}[{i}]")
        ]
    return [] if old == new else [prefix or "(top level)"]


def study_changes(old: StudyConfig, new: StudyConfig) -> list[str]:
    """Keys of ``new`` that make it another study than ``old`` (:data:`EXECUTION_KEYS` and
    ``skip_bad_images`` left out: ``--skip-bad-images`` is the documented way to go on after an
    unreadable image, and it gives the affected runs ids of their own)."""

    def plain(cfg: StudyConfig) -> dict[str, Any]:
        data = cfg.model_dump(mode="json", exclude=set(EXECUTION_KEYS))
        for spec in [data["source"], *data["targets"]]:
            spec.pop("skip_bad_images", None)
        return data

    return changed_keys(plain(old), plain(new))


def study_growth(old: StudyConfig, new: StudyConfig) -> list[str] | None:
    """What ``new`` adds to ``old`` when it only grows the study: more seeds (the old ones
    first, in their order), more targets (every old one kept as it was) or more shuffle seeds.
    Every run of ``old`` then keeps its id and role, so only the new runs train. None when
    ``new`` changes anything else (or removes something); [] when nothing differs."""
    grown: list[str] = []
    for key, before, after in (
        ("seeds", old.seeds, new.seeds),
        ("shuffles.seeds", old.shuffles.seeds, new.shuffles.seeds),
    ):
        if after[: len(before)] != before:
            return None
        if len(after) > len(before):
            grown.append(f"{key} {_ints(before)} → {_ints(after)}")
    old_targets = [t.model_dump(mode="json") for t in old.targets]
    new_targets = [t.model_dump(mode="json") for t in new.targets]
    if any(t not in new_targets for t in old_targets):
        return None
    added = [t.label for t in new.targets if t.model_dump(mode="json") not in old_targets]
    if added:
        grown.append(f"targets + {', '.join(added)}")
    same = new.model_copy(
        update={
            "seeds": old.seeds,
            "targets": old.targets,
            "shuffles": new.shuffles.model_copy(update={"seeds": old.shuffles.seeds}),
        }
    )
    return grown if not study_changes(old, same) else None


def _ints(values: list[int]) -> str:
    return ",".join(str(v) for v in values)


# Sources that stream image files from disk: the only ones that can hold an unreadable image.
FILE_SOURCES = ("imagefolder", "domainnet", "chexpert")


def with_skip_bad_images(cfg: StudyConfig) -> StudyConfig:
    """``cfg`` with ``skip_bad_images`` set on every source and target read from image files.

    In-memory sources are left as they are, so their runs keep their ids (and stay done).
    """

    def mark(spec: DataSpec) -> DataSpec:
        if spec.name in FILE_SOURCES:
            return spec.model_copy(update={"skip_bad_images": True})
        return spec

    return cfg.model_copy(
        update={"source": mark(cfg.source), "targets": [mark(t) for t in cfg.targets]}
    )


def check_references(cfg: StudyConfig, origins: dict[str, str] | None = None) -> None:
    """Check the names a config refers to: data sources, their options (names, types, positive
    sizes, seeds in range), the model and its options.

    Raises a :class:`TransferscopeError` naming the key and the nearest valid name, and, from
    ``origins`` (:func:`option_origins`), where the section's options came from.
    """
    from transferscope.data import registry as data_registry
    from transferscope.models import registry as model_registry

    origins = origins or {}

    def said(section: str) -> str:
        return f" ({origins[section]})" if section in origins else ""

    specs = [("source", "source", cfg.source)] + [
        (f"targets[{i}]", "targets", t) for i, t in enumerate(cfg.targets)
    ]
    for where, section, spec in specs:
        try:
            data_registry.check_options(spec.name, spec.options)
        except TransferscopeError as e:
            raise TransferscopeError(f"{where}: {e}{said(section)}") from None
    try:
        model_registry.check_model_options(cfg.model.name, cfg.model.options)
    except TransferscopeError as e:
        raise TransferscopeError(f"model: {e}{said('model')}") from None


__all__ = [
    "EXECUTION_KEYS",
    "FILE_SOURCES",
    "NAMED_SECTIONS",
    "AnalysesSpec",
    "AnalysisOptionsError",
    "StudyConfig",
    "changed_keys",
    "check_references",
    "explain",
    "from_dict",
    "load",
    "load_preset",
    "merge_preset",
    "option_origins",
    "preset_description",
    "preset_dict",
    "preset_names",
    "read_yaml",
    "study_changes",
    "study_growth",
    "to_yaml",
    "with_skip_bad_images",
]
