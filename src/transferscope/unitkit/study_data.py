"""The study directory as the report sees it: config, planned runs with their state, and every
analysis's result read into its model.

The report reads only the study directory: ``study.yaml``, ``plan.json``,
``runs/<id>/{DONE, FAILED, metrics.jsonl, bad_images.json}`` and ``analyses/<name>.json``. It
never trains and never re-runs an analysis, so a report can be rebuilt at any time, even while runs
are still going.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from transferscope import paths, registry
from transferscope.errors import TransferscopeError
from transferscope.studydir import integrity
from transferscope.unitkit.results import AnalysisResult, ResultMismatch, load_result
from transferscope.unitkit.rules import UNMEASURED, TargetResult, voided


@dataclass(frozen=True)
class RunRow:
    """One planned run with its roles and its state on disk."""

    id: str
    kind: str
    target: str
    seed: int | None
    shuffle: str | None
    checkpoint: float | None
    same_init_as: str | None
    state: integrity.RunState
    summary: dict[str, Any] | None
    error: str | None = None
    """FAILED's message, or for a damaged run what is wrong with its files."""
    bad_images: list[dict[str, Any]] = field(default_factory=list)
    """Unreadable image files the run left out (``--skip-bad-images``): {split, path, error}."""
    chance_level: bool = False
    """The final test metric is within noise of chance (or below): the run learned nothing
    measurable, and a claim that compares it with another run cannot be decided by it."""
    chance: dict[str, Any] | None = None
    """The chance-level check behind ``chance_level``: {chance, band, at_chance, z}
    (:func:`transferscope.training.metrics.chance_level`); None when not known."""


@dataclass
class StudyData:
    """Everything the report shows, read once from a study directory."""

    root: Path
    config_text: str
    config: dict[str, Any]
    runs: list[RunRow]
    analyses: dict[str, AnalysisResult | None]
    """Each registered analysis's result, validated into its unit's model (None: no file)."""
    analysis_errors: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.root.name)

    @property
    def targets(self) -> list[str]:
        """Target labels: from the plan (run roles), in order of first appearance."""
        out: list[str] = []
        for r in self.runs:
            if r.kind != "P" and r.target not in out:
                out.append(r.target)
        return out

    def result(self, name: str) -> AnalysisResult | None:
        """The analysis result when it exists and its status is 'ok', else None."""
        doc = self.analyses.get(name)
        return doc if doc is not None and doc.status == "ok" else None

    def not_run_reason(self, name: str) -> str | None:
        """Why a section has no results (None when it has)."""
        if name in self.analysis_errors:
            return self.analysis_errors[name]
        doc = self.analyses.get(name)
        if doc is None:
            return f"analyses/{name}.json does not exist (the analysis has not been run)"
        if doc.status != "ok":
            return str(doc.reason or f"status '{doc.status}'")
        return None

    @property
    def seeds(self) -> int:
        """How many seeds the study trains each kind of run with (2 when not known)."""
        seeds = self.config.get("seeds")
        return len(seeds) if isinstance(seeds, list) and seeds else 2

    @property
    def negative_control(self) -> bool:
        """Whether the study is a negative control (P untrained): no claim should hold."""
        return bool(self.config.get("negative_control"))

    def guard_chance(self, result: TargetResult, entry: Any) -> TargetResult:
        """``result``, made inconclusive when any run ``entry`` names finished at chance level:
        the guard of a claim that does not name the runs its measure needs
        (``Claim.guards_chance`` False, e.g. a plug-in unit's); the built-in claims void only
        what needs a run that learned (:func:`transferscope.unitkit.rules.voided`)."""
        if result.verdict == UNMEASURED:
            return result
        if isinstance(entry, BaseModel):
            entry = entry.model_dump(by_alias=True)
        used = _run_ids(entry)
        dead = [r for r in self.runs if r.chance_level and r.id in used]
        if not dead:
            return result
        return voided(result, dead, "the claim compares it")

    def target_entry(self, name: str, target: str) -> Any:
        """One target's entry of an 'ok' analysis result (a model, or a dict for a unit whose
        result is not typed yet); None when there is none."""
        doc = self.result(name)
        return None if doc is None else doc.targets.get(target)


def _run_ids(doc: Any) -> set[str]:
    """Every run id an analysis entry names under a 'run' or 'runs' key, at any depth."""
    found: set[str] = set()
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("run", "runs"):
                found |= _strings(value)
            else:
                found |= _run_ids(value)
    elif isinstance(doc, list):
        for item in doc:
            found |= _run_ids(item)
    return found


def _strings(value: Any) -> set[str]:
    """The strings in a value (a string, or lists and dicts of them); counts are not ids."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return set().union(*(_strings(v) for v in value)) if value else set()
    return set()


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _bad_images(folder: Path) -> list[dict[str, Any]]:
    path = folder / paths.BAD_IMAGES
    try:
        doc = _read_json(path) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return [{"split": "?", "path": str(path), "error": "unreadable list of skipped images"}]
    skipped = doc.get("skipped") if isinstance(doc, dict) else None
    return [x for x in skipped if isinstance(x, dict)] if isinstance(skipped, list) else []


def load_study(root: Path) -> StudyData:
    """Read a study directory (never writes to it).

    Raises:
        TransferscopeError: when ``root`` has no plan.json (not a study directory).
    """
    root = Path(root)
    plan_path = root / paths.PLAN
    if not plan_path.is_file():
        raise TransferscopeError(
            f"'{root}' is not a study directory (no plan.json); run `transferscope run --out {root}` first"
        )
    rewrite = f"rerun `transferscope run --out {root}` to write it again"
    config_path = root / paths.STUDY_CONFIG
    config_text = config_path.read_text(errors="replace") if config_path.is_file() else ""
    mismatch = integrity.config_mismatch(root, config_path.read_bytes()) if config_text else None
    if mismatch is not None:
        raise TransferscopeError(
            f"{config_path} {mismatch}; restore it, or rerun `transferscope run CONFIG --out "
            f"{root} --force` with the study's config file"
        )
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError as e:
        raise TransferscopeError(
            f"{config_path} is not valid YAML ({str(e).splitlines()[0]}); restore it, or rerun "
            "`transferscope run CONFIG --out DIR --force` with the study's config file"
        ) from None
    if not isinstance(config, dict):
        raise TransferscopeError(f"{config_path} does not hold a study config; restore it")
    try:
        plan = _read_json(plan_path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TransferscopeError(f"{plan_path} is damaged ({e}); {rewrite}") from None
    plan_runs = plan.get("runs") if isinstance(plan, dict) else None
    if not isinstance(plan_runs, list) or not all(
        isinstance(r, dict) and "id" in r for r in plan_runs
    ):
        raise TransferscopeError(f"{plan_path} is damaged (no list of runs with ids); {rewrite}")
    runs = []
    for r in plan_runs:
        spec = r.get("spec") or {}
        folder = paths.run_dir(root, str(r["id"]))
        # Sizes only: the report does not read every weight file.
        status = integrity.run_status(folder, checksums=False)
        summary = status.summary
        chance = integrity.chance_of(folder, summary) if summary else None
        runs.append(
            RunRow(
                id=str(r["id"]),
                kind=str(spec.get("kind") or r.get("kind") or "?"),
                target=str(r.get("target", "")),
                seed=r.get("seed"),
                shuffle=r.get("shuffle"),
                checkpoint=r.get("checkpoint"),
                same_init_as=r.get("same_init_as"),
                state=status.state,
                summary=summary,
                error=status.problem,
                bad_images=_bad_images(folder),
                chance_level=bool(chance and chance.get("at_chance")),
                chance=chance,
            )
        )
    analyses: dict[str, AnalysisResult | None] = {}
    errors: dict[str, str] = {}
    for unit in registry.units():
        path = paths.analysis_path(root, unit.name)
        analyses[unit.name] = None
        if not path.is_file():
            continue
        try:
            analyses[unit.name] = load_result(unit.Result, path, unit.version)
        except ResultMismatch as e:
            # A broken or outdated file must not take the whole report down: its section says why.
            errors[unit.name] = str(e)
    return StudyData(root, config_text, config, runs, analyses, errors)
