"""The study directory as the report sees it, and the paper's claims C1-C8 (and the follow-up
claims C9-C10, beyond the paper) turned into verdicts.

The report reads only the study directory: ``study.yaml``, ``plan.json``,
``runs/<id>/{DONE, FAILED, metrics.jsonl}`` and ``analyses/<name>.json``. It never trains and never
re-runs an analysis, so a report can be rebuilt at any time, even while runs are still going.

Each claim of Neyshabur et al. (2020) becomes a :class:`Finding`: the numbers measured on every
target, a verdict and the rule that produced it, stated in words so a reader can check it, with
the statistic that decided. A verdict is a test that can fail:

- *holds*: the effect the claim states is there, beyond the noise (seeds, test-set sampling);
- *does not hold*: the opposite effect is there beyond the noise;
- *inconclusive*: the measured difference is within the noise (or a compared run sits at chance);
- *not measured*: the study lacks the runs or analysis the rule needs.

Rules that say "P-T models are alike" compare P-T pairs not only with independent RI-T pairs but
also with the RI-T pair that shares one random init: two P-T runs share P's weights as their
start, and a shared start alone must not make such a claim hold. Over targets: a claim does not
hold if it fails on one target, holds if it holds on every target measured, and is
inconclusive otherwise.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from transferscope import runfiles
from transferscope.config import AnalysesSpec
from transferscope.errors import TransferscopeError

Verdict = Literal["holds", "does not hold", "inconclusive", "not measured"]
HOLDS: Verdict = "holds"
FAILS: Verdict = "does not hold"
INCONCLUSIVE: Verdict = "inconclusive"
UNMEASURED: Verdict = "not measured"

# The config's analyses section declares every analysis, in the paper's order.
# (the report has one section for each)
ANALYSIS_NAMES = tuple(AnalysesSpec.model_fields)

# Tolerances of the claim rules, in metric units (accuracy and mean AUC both live in [0, 1]).
BARRIER_TOLERANCE = 0.01  # C6: one point of accuracy / AUC
CHECKPOINT_TOLERANCE = 0.01  # C8: an early checkpoint within one point of the final P-T metric
# Differences below these count as noise whatever the seeds say (a floor under the seed spread).
CKA_FLOOR = 0.02  # C4: two hundredths of CKA
# What "P-T models are alike" (C3-C5) is compared with: independent RI-T models, the RI-T pair
# from one shared random init, and the control pair (two fine-tunes from P's untrained init: the
# same start and recipe as P-T, without pre-training).
CONTROL_PAIR = "P@0-T/P@0-T"
BASELINES = ("RI-T/RI-T", "RI-T/RI-T same init", CONTROL_PAIR)
DISTANCE_FLOOR = 0.05  # C5: 5% of the larger mean distance


# ----------------------------------------------------------------------------------------------
# reading the study directory


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
    state: Literal["done", "failed", "partial", "pending", "damaged"]
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
    analyses: dict[str, dict[str, Any] | None]
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

    def analysis(self, name: str) -> dict[str, Any] | None:
        """The analysis document when it exists and its status is 'ok', else None."""
        doc = self.analyses.get(name)
        return doc if doc is not None and doc.get("status") == "ok" else None

    def not_run_reason(self, name: str) -> str | None:
        """Why a section has no results (None when it has)."""
        if name in self.analysis_errors:
            return self.analysis_errors[name]
        doc = self.analyses.get(name)
        if doc is None:
            return f"analyses/{name}.json does not exist (the analysis has not been run)"
        if doc.get("status") != "ok":
            return str(doc.get("reason") or f"status '{doc.get('status')}'")
        return None

    @property
    def negative_control(self) -> bool:
        """Whether the study is a negative control (P untrained): no claim should hold."""
        return bool(self.config.get("negative_control"))

    def guard_chance(self, result: TargetResult, entry: dict[str, Any]) -> TargetResult:
        """``result``, made inconclusive when a run it compares finished at chance level: a
        model that learned nothing makes any comparison with it meaningless."""
        if result.verdict == UNMEASURED:
            return result
        at_chance = {r.id for r in self.runs if r.chance_level}
        used = _run_ids(entry) & at_chance
        if not used:
            return result
        return TargetResult(
            result.target,
            INCONCLUSIVE,
            f"{result.measured}; at chance level: {', '.join(sorted(used))}",
            result.statistic,
        )

    def target_entry(self, name: str, target: str) -> dict[str, Any] | None:
        doc = self.analysis(name)
        if doc is None:
            return None
        entry = doc.get("targets", {}).get(target)
        return entry if isinstance(entry, dict) else None


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


def _run_state(folder: Path) -> tuple[str, dict[str, Any] | None, str | None]:
    """(state, DONE summary, FAILED message or what is damaged) of one run directory.

    A finished run whose files differ in size from what its DONE recorded, or whose DONE cannot be
    read, is 'damaged' (sizes only: the report does not read every weight file)."""
    done, failed = folder / runfiles.DONE, folder / runfiles.FAILED
    if done.is_file():
        summary, problem = runfiles.read_done(folder)
        if summary is not None:
            problem = runfiles.check(folder, summary.get("files"), checksums=False)
        if problem is not None:
            return "damaged", None, problem
        return "done", summary, None
    if failed.is_file():
        try:
            message = str(_read_json(failed).get("error", ""))
        except (OSError, json.JSONDecodeError, AttributeError):
            message = failed.read_text(errors="replace")
        return "failed", None, message
    if (folder / "metrics.jsonl").is_file():
        return "partial", None, None
    return "pending", None, None


def _bad_images(folder: Path) -> list[dict[str, Any]]:
    path = folder / "bad_images.json"
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
    plan_path = root / "plan.json"
    if not plan_path.is_file():
        raise TransferscopeError(
            f"'{root}' is not a study directory (no plan.json); run `transferscope run --out {root}` first"
        )
    rewrite = f"rerun `transferscope run --out {root}` to write it again"
    config_path = root / "study.yaml"
    config_text = config_path.read_text(errors="replace") if config_path.is_file() else ""
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
        folder = root / "runs" / str(r["id"])
        state, summary, error = _run_state(folder)
        chance = runfiles.chance_of(folder, summary) if summary else None
        runs.append(
            RunRow(
                id=str(r["id"]),
                kind=str(spec.get("kind") or r.get("kind") or "?"),
                target=str(r.get("target", "")),
                seed=r.get("seed"),
                shuffle=r.get("shuffle"),
                checkpoint=r.get("checkpoint"),
                same_init_as=r.get("same_init_as"),
                state=state,  # type: ignore[arg-type]
                summary=summary,
                error=error,
                bad_images=_bad_images(folder),
                chance_level=bool(chance and chance.get("at_chance")),
                chance=chance,
            )
        )
    analyses: dict[str, dict[str, Any] | None] = {}
    errors: dict[str, str] = {}
    for name in ANALYSIS_NAMES:
        path = root / "analyses" / f"{name}.json"
        if not path.is_file():
            analyses[name] = None
            continue
        try:
            doc = _read_json(path)
        except (OSError, json.JSONDecodeError) as e:
            # A broken file must not take the whole report down: its section says why.
            analyses[name] = None
            errors[name] = f"analyses/{name}.json could not be read: {e}"
            continue
        analyses[name] = doc if isinstance(doc, dict) else None
    return StudyData(root, config_text, config, runs, analyses, errors)


# ----------------------------------------------------------------------------------------------
# small numeric helpers


def finite(x: Any) -> bool:
    """Whether ``x`` is a real, finite number (JSON nulls and NaN are not)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def mean(values: Iterable[Any]) -> float | None:
    """Mean of the finite values (None when there are none)."""
    xs = [float(v) for v in values if finite(v)]
    return sum(xs) / len(xs) if xs else None


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties averaged (+inf ranks last)."""
    arr = np.asarray(values, dtype=float)
    order = np.argsort(arr, kind="mergesort")
    ranks = np.empty(len(arr))
    ranks[order] = np.arange(1, len(arr) + 1)
    for v in np.unique(arr):
        tied = arr == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(values: Sequence[float]) -> float | None:
    """Spearman rank correlation between position (0, 1, ...) and ``values``.

    None for fewer than 3 values or when every value is tied (the correlation is undefined).
    """
    if len(values) < 3:
        return None
    r = _ranks(values)
    d = np.arange(1, len(values) + 1, dtype=float)
    r, d = r - r.mean(), d - d.mean()
    denom = math.sqrt(float((r * r).sum() * (d * d).sum()))
    return float((r * d).sum() / denom) if denom > 0 else None


_SCALAR = re.compile(r"^(bias|scale)\d*[a-z]?$")
_STEM = ("conv1", "bn1", "stem", "embed", "patch_embed", "features.0")
_HEAD = ("fc", "head", "classifier", "last_linear")


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def depth_order(modules: Iterable[str], reference: Sequence[str] | None = None) -> list[str]:
    """Modules from input to output.

    With ``reference`` (e.g. criticality's module list, which comes from the model's layout) its
    order is used. Otherwise: the stem (conv1, bn1, stem, ...) first, then the blocks in natural
    order (layer1.0 < layer1.1 < layer2.0 < layer10.0), the head (fc, head, classifier) last.
    Fixup's top-level scalar biases and scales (bias1, scale, ...) are left out: they are single
    numbers, not modules.
    """
    names = [m for m in modules if not _SCALAR.match(m)]
    if reference:
        known = [m for m in reference if m in names]
        rest = [m for m in names if m not in known]
        return known + depth_order(rest) if rest else known

    def key(name: str) -> tuple[int, list[Any]]:
        first = name.split(".")[0]
        if name in _STEM or first in _STEM:
            group = 0
        elif first in _HEAD:
            group = 2
        else:
            group = 1
        return group, _natural(name)

    return sorted(names, key=key)


def fmt(x: Any, digits: int = 3) -> str:
    """A number for tables ('-' for missing)."""
    if not finite(x):
        return "-" if x is None else str(x)
    return f"{float(x):.{digits}g}" if abs(float(x)) < 1e4 else f"{float(x):.3e}"


# ----------------------------------------------------------------------------------------------
# findings


@dataclass(frozen=True)
class TargetResult:
    """A claim's measurement on one target: verdict, the numbers, and the statistic used."""

    target: str
    verdict: Verdict
    measured: str
    statistic: str = ""


@dataclass(frozen=True)
class Finding:
    """One claim of the paper, what was measured, and the verdict with its rule."""

    id: str
    claim: str
    rule: str
    section: str
    per_target: list[TargetResult]

    @property
    def verdict(self) -> Verdict:
        """Does not hold if it fails on a target; holds if it holds on every target measured;
        inconclusive otherwise; not measured when no target was."""
        verdicts = [t.verdict for t in self.per_target if t.verdict != UNMEASURED]
        if not verdicts:
            return UNMEASURED
        if FAILS in verdicts:
            return FAILS
        return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE

    @property
    def measured(self) -> str:
        if not self.per_target:
            return "no target"
        return "; ".join(f"{t.target}: {t.measured}" for t in self.per_target)

    @property
    def targets(self) -> dict[str, Verdict]:
        """Target -> its verdict."""
        return {t.target: t.verdict for t in self.per_target}


def combine(*directions: int | None) -> Verdict:
    """One verdict from the directions of a rule's parts (+1 the claim's way beyond the noise,
    -1 the other way, 0 within the noise, None not measured): every part must hold."""
    if any(d is None for d in directions):
        return UNMEASURED
    if any(d < 0 for d in directions):  # type: ignore[operator]
        return FAILS
    return HOLDS if all(d > 0 for d in directions) else INCONCLUSIVE  # type: ignore[operator]


def _per_target(
    data: StudyData, analysis: str, judge: Callable[[dict[str, Any], str], TargetResult]
) -> list[TargetResult]:
    """Apply ``judge`` to each target's entry of ``analysis`` (or say why it is not measured)."""
    out = []
    reason = data.not_run_reason(analysis)
    for target in data.targets:
        if reason is not None:
            out.append(TargetResult(target, UNMEASURED, f"{analysis} not run"))
            continue
        entry = data.target_entry(analysis, target)
        if entry is None or entry.get("status", "ok") != "ok":
            why = (entry or {}).get("reason", "no entry")
            out.append(TargetResult(target, UNMEASURED, f"{analysis} skipped ({why})"))
            continue
        out.append(data.guard_chance(judge(entry, target), entry))
    return out


def _ok_pairs(entry: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [
        p for p in entry.get("pairs", []) if p.get("pair") == name and p.get("status", "ok") == "ok"
    ]


def _values(pairs: list[dict[str, Any]], get: Callable[[dict[str, Any]], Any]) -> list[float]:
    return [float(v) for v in (get(p) for p in pairs) if finite(v)]


def _comparison(doc: Any) -> tuple[int | None, str]:
    """(direction, description) of a stored statistics Comparison (None when it is missing)."""
    if not isinstance(doc, dict) or doc.get("status", "ok") != "ok":
        why = doc.get("reason") if isinstance(doc, dict) else None
        return None, f"not computed ({why})" if why else "not computed"
    direction = doc.get("direction")
    text = f"Δ {fmt(doc.get('estimate'))}"
    if finite(doc.get("low")) and finite(doc.get("high")):
        text += f" [{fmt(doc['low'])}, {fmt(doc['high'])}]"
    if finite(doc.get("p_value")):
        text += f", p = {float(doc['p_value']):.2g}"
    method = str(doc.get("method") or "")
    return (int(direction) if isinstance(direction, int | float) else None), (
        f"{text} ({method})" if method else text
    )


def _speed_direction(pt: dict[str, Any], rit: dict[str, Any]) -> tuple[int, str]:
    """P-T faster (+1), slower (-1) or within the spread (0), from each run's epochs to the
    common threshold (a run that never reached it counts as never): the ranges over seeds must
    not overlap, so one evaluation epoch is the resolution."""
    a = [math.inf if e is None else float(e) for e in pt.get("epochs_to_threshold") or []]
    b = [math.inf if e is None else float(e) for e in rit.get("epochs_to_threshold") or []]
    if not a or not b:
        return 0, "no speeds"
    text = f"epochs {_list(a)} vs {_list(b)}"
    if max(a) < min(b):
        return 1, text
    if min(a) > max(b):
        return -1, text
    return 0, text


def _list(xs: Sequence[float]) -> str:
    return ", ".join("not reached" if math.isinf(x) else fmt(x, 2) for x in xs)


def _c1(entry: dict[str, Any], target: str) -> TargetResult:
    pt, rit = entry.get("P-T", {}), entry.get("RI-T", {})
    m_pt, m_rit = pt.get("final_metric_mean"), rit.get("final_metric_mean")
    if not (finite(m_pt) and finite(m_rit)):
        return TargetResult(target, UNMEASURED, "final metrics missing")
    better, test = _comparison(entry.get("final_test"))
    threshold = entry.get("threshold")
    if not finite(threshold):
        return TargetResult(
            target,
            INCONCLUSIVE,
            f"final {fmt(m_pt)} vs {fmt(m_rit)}; a side ends at chance: no speed threshold",
            test,
        )
    faster, speeds = _speed_direction(pt, rit)
    text = (
        f"final {fmt(m_pt)} vs {fmt(m_rit)}; to {fmt(threshold)}: {speeds}; "
        f"area between curves {fmt(entry.get('area_between'))}"
    )
    return TargetResult(
        target, combine(better, faster), text, f"final: {test}; speed: ranges over seeds"
    )


def _smallest_shuffle(entry: dict[str, Any]) -> dict[str, Any] | None:
    blocks = [
        s for s in entry.get("shuffles", []) if s.get("shuffle") and finite(s.get("block_size"))
    ]
    if blocks:
        return min(blocks, key=lambda s: s["block_size"])
    pixel = [s for s in entry.get("shuffles", []) if s.get("pixel")]
    return pixel[0] if pixel else None


def _c2(entry: dict[str, Any], target: str) -> TargetResult:
    base = next((s for s in entry.get("shuffles", []) if s.get("shuffle") is None), entry)
    small = _smallest_shuffle(entry)
    if small is None:
        return TargetResult(target, UNMEASURED, "no shuffled runs")
    d0, d1 = base.get("relative_drop"), small.get("relative_drop")
    if not (finite(d0) and finite(d1)):
        return TargetResult(target, UNMEASURED, "relative drop missing")
    label = small.get("shuffle")
    shrinks, test = _comparison(small.get("drop_test"))
    if not finite(small.get("threshold")):
        faster, speeds = 0, "a side ends at chance: no speed threshold"
    else:
        faster, speeds = _speed_direction(small.get("P-T", {}), small.get("RI-T", {}))
    text = f"drop {fmt(d0)}% unshuffled vs {fmt(d1)}% at {label}; speed at {label}: {speeds}"
    return TargetResult(
        target, combine(shrinks, faster), text, f"drop: {test}; speed: one evaluation apart"
    )


def _fraction_floor(pairs: list[dict[str, Any]]) -> float:
    """Twice the standard error of a difference of two uncommon-mistake fractions."""
    ns = [p.get("n") for p in pairs if finite(p.get("n")) and p.get("n")]
    fractions = _values(pairs, lambda p: (p.get("fractions") or {}).get("uncommon"))
    if not ns or not fractions:
        return 0.0
    f = float(np.mean(fractions))
    return 2 * math.sqrt(2) * math.sqrt(max(f * (1 - f), 0.0) / min(ns))


def _group_rule(
    entry: dict[str, Any],
    get: Callable[[dict[str, Any]], Any],
    want: int,
    what: str,
    **floors: float,
) -> tuple[int | None, str, str]:
    """P-T/P-T against RI-T/RI-T and against the same-init RI-T pair with
    :func:`transferscope.analysis.statistics.compare_groups`; the pair spread comes from every
    group, P-T/RI-T included. ``want`` is the claim's direction (+1: P-T/P-T larger)."""
    from transferscope.analysis.statistics import compare_groups

    groups = {
        name: _values(_ok_pairs(entry, name), get) for name in ("P-T/P-T", "P-T/RI-T", *BASELINES)
    }
    a = groups["P-T/P-T"]
    if not a or not groups["RI-T/RI-T"]:
        return None, "P-T/P-T or RI-T/RI-T pair missing", ""
    spread = [groups["P-T/RI-T"]]
    texts, stats, directions = [], [], []
    for other in BASELINES:
        b = groups[other]
        if not b:
            texts.append(f"{other} not measured")
            continue
        cmp = compare_groups(a, b, spread_from=spread, what=what, **floors)
        directions.append(cmp.direction * want)
        texts.append(f"{fmt(mean(a))} vs {other} {fmt(mean(b))}")
        stats.append(f"vs {other}: {cmp.method}")
    return _direction_of(directions), "; ".join(texts), "; ".join(stats)


def _direction_of(directions: list[int]) -> int:
    if any(d < 0 for d in directions):
        return -1
    return 1 if all(d > 0 for d in directions) else 0


def _c3(entry: dict[str, Any], target: str) -> TargetResult:
    everything = [p for p in entry.get("pairs", []) if p.get("status", "ok") == "ok"]
    direction, text, stat = _group_rule(
        entry,
        lambda p: (p.get("fractions") or {}).get("uncommon"),
        -1,
        "pairs",
        floor=_fraction_floor(everything),
    )
    if direction is None:
        return TargetResult(target, UNMEASURED, text)
    return TargetResult(target, combine(direction), f"uncommon mistakes {text}", stat)


def _c4(entry: dict[str, Any], target: str) -> TargetResult:
    layers: list[str] = []
    for p in _ok_pairs(entry, "P-T/P-T"):
        layers += [n for n in (p.get("cka") or {}) if n not in layers]
    if not layers:
        return TargetResult(target, UNMEASURED, "P-T/P-T or RI-T/RI-T pair missing")
    directions, parts, stats = [], [], []
    for layer in layers:
        d, text, stat = _group_rule(
            entry, lambda p, n=layer: (p.get("cka") or {}).get(n), +1, "pairs", floor=CKA_FLOOR
        )
        if d is None:
            continue
        directions.append(d)
        parts.append(f"{layer} {text}")
        stats.append(stat)
    if not directions:
        return TargetResult(target, UNMEASURED, "no layer measured for both pair kinds")
    return TargetResult(
        target, combine(_direction_of(directions)), "; ".join(parts), f"per layer: {stats[0]}"
    )


def _c5(data: StudyData) -> Callable[[dict[str, Any], str], TargetResult]:
    def judge(entry: dict[str, Any], target: str) -> TargetResult:
        from transferscope.analysis.statistics import spearman_trend

        closer, text, stat = _group_rule(
            entry, lambda p: p.get("total"), -1, "pairs", relative_floor=DISTANCE_FLOOR
        )
        per = _mean_per_key(_ok_pairs(entry, "P-T/P"), "per_module_relative")
        units = entry.get("depth_units") or _criticality_modules(data, target)
        order = [m for m in depth_order(per, units) if not units or m in units]
        if closer is None:
            return TargetResult(target, UNMEASURED, "missing: " + text)
        if len(order) < 3:
            return TargetResult(
                target, UNMEASURED, "P-T/P size-normalised distances for 3+ modules missing"
            )
        trend = spearman_trend([per[m] for m in order])
        rho = f"ρ = {trend.estimate:+.2f}" if finite(trend.estimate) else "no change"
        measured = (
            f"whole network {text}; P-T/P relative change ‖Δ‖/‖θ_P‖ vs depth "
            f"{rho} over {len(order)} modules"
        )
        return TargetResult(
            target,
            combine(closer, trend.direction),
            measured,
            f"{stat}; depth: {trend.method}, p = {fmt(trend.p_value, 2)}",
        )

    return judge


def _mean_per_key(pairs: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Per layer/module mean of ``pair[key][name]`` over the pairs."""
    names: list[str] = []
    for p in pairs:
        names += [n for n in (p.get(key) or {}) if n not in names]
    out = {}
    for n in names:
        m = mean((p.get(key) or {}).get(n) for p in pairs)
        if m is not None:
            out[n] = m
    return out


def _criticality_modules(data: StudyData, target: str) -> list[str] | None:
    entry = data.target_entry("criticality", target) or {}
    modules = (entry.get("P-T") or {}).get("modules")
    return list(modules) if isinstance(modules, list) else None


def barrier_noise(pair: dict[str, Any], examples: Any, key: str = "barrier_metric") -> float:
    """Twice the standard error of a barrier: the binomial error of the metric at the path's
    worst point on ``examples`` test examples (0 when unknown)."""
    metrics = pair.get("metric") or []
    if not finite(examples) or not metrics or key != "barrier_metric":
        return 0.0
    from transferscope.analysis.statistics import binomial_se

    worst = min(float(m) for m in metrics if finite(m)) if any(finite(m) for m in metrics) else 0.5
    se = binomial_se(worst, int(examples))
    return 2 * se if math.isfinite(se) else 0.0


def _barrier_state(value: float, noise: float, tolerance: float = BARRIER_TOLERANCE) -> int:
    """+1 a barrier beyond the noise, -1 flat (within the tolerance), 0 in between."""
    if value > tolerance + noise:
        return 1
    return -1 if value <= tolerance else 0


def _barriers(
    entry: dict[str, Any], pair: str, path: str | None = None
) -> list[tuple[float, float]]:
    """(barrier, noise) of every measured ``pair`` (on ``path`` for alignment / curves)."""
    out = []
    for p in _ok_pairs(entry, pair):
        source = p if path is None else (p.get(path) or {})
        value = source.get("barrier_metric")
        if finite(value):
            out.append((float(value), barrier_noise(source, entry.get("examples"))))
    return out


def _c6(entry: dict[str, Any], target: str) -> TargetResult:
    pt = _barriers(entry, "P-T/P-T")
    rit = _barriers(entry, "RI-T/RI-T")
    same = _barriers(entry, "RI-T/RI-T same init")
    if not pt or not rit:
        return TargetResult(target, UNMEASURED, "P-T/P-T or RI-T/RI-T barrier missing")
    # P-T/P-T must be flat (-1), every RI-T pair must show a barrier (+1).
    flat = [-_barrier_state(v, n) for v, n in pt]
    walls = [_barrier_state(v, n) for v, n in rit + same]
    text = f"P-T/P-T max {fmt(max(v for v, _ in pt))}, RI-T/RI-T min {fmt(min(v for v, _ in rit))}"
    text += f", same init {fmt(min(v for v, _ in same))}" if same else ", same init not measured"
    control = _barriers(entry, CONTROL_PAIR)
    if control:
        # Context, not part of the rule: a pair that shares P-T's start and recipe without
        # pre-training; flat here means P-T's flatness need not come from pre-training.
        text += f"; control pair {CONTROL_PAIR} {fmt(max(v for v, _ in control))}"
    noise = max(n for _, n in pt + rit + same)
    return TargetResult(
        target,
        combine(_direction_of(flat + walls)),
        text,
        f"flat: ≤ {BARRIER_TOLERANCE:g}; barrier: > {BARRIER_TOLERANCE:g} + 2 s.e. "
        f"(binomial at the worst point, up to {fmt(noise, 2)})",
    )


def _c7(entry: dict[str, Any], target: str) -> TargetResult:
    from transferscope.analysis.statistics import spearman_trend

    pt = entry.get("P-T") or {}
    if pt.get("status", "ok") != "ok":
        return TargetResult(target, UNMEASURED, f"P-T skipped ({pt.get('reason', '')})")
    modules, mu = pt.get("modules") or [], pt.get("mu") or {}
    body = modules[:-1]  # the head is the last module: a fresh layer, not a depth of P
    finite_modules = [m for m in body if finite(mu.get(m))]
    left_out = [m for m in body if m not in finite_modules]
    if len(finite_modules) < 3:
        return TargetResult(target, UNMEASURED, "fewer than 3 modules with a finite μ")
    trend = spearman_trend([float(mu[m]) for m in finite_modules])
    rho = f"ρ = {trend.estimate:+.2f}" if finite(trend.estimate) else "every μ equal"
    text = f"{rho} over {len(finite_modules)} modules (head left out)"
    if left_out:
        text += f"; {len(left_out)} without a finite μ left out: {', '.join(left_out)}"
    return TargetResult(
        target, combine(trend.direction), text, f"{trend.method}, p = {fmt(trend.p_value, 2)}"
    )


def _c8(data: StudyData) -> Callable[[dict[str, Any], str], TargetResult]:
    def judge(entry: dict[str, Any], target: str) -> TargetResult:
        points = [p for p in entry.get("points", []) if finite(p.get("k"))]
        early = sorted((p for p in points if p.get("early")), key=lambda p: p["k"])
        tested = [(p, p.get("vs_final")) for p in early]
        tested = [(p, t) for p, t in tested if isinstance(t, dict) and t.get("status") == "ok"]
        if not tested:
            return TargetResult(
                target, UNMEASURED, "no early checkpoint (k ≤ half of pre-training) with a P-T"
            )
        tol = CHECKPOINT_TOLERANCE
        good = [p for p, t in tested if finite(t.get("low")) and t["low"] >= -tol]
        worse = [p for p, t in tested if finite(t.get("high")) and t["high"] < -tol]
        final = final_pt_metric(entry)
        if good:
            best = good[0]
            verdict = HOLDS
        elif len(worse) == len(tested):
            best, verdict = max(early, key=lambda p: p.get("final_metric") or -1), FAILS
        else:
            best, verdict = tested[0][0], INCONCLUSIVE
        t = best.get("vs_final") or {}
        text = (
            f"final P-T {fmt(final)}; earliest early k = {fmt(best['k'])} gives "
            f"{fmt(best.get('final_metric'))} (Δ {fmt(t.get('estimate'))} "
            f"[{fmt(t.get('low'))}, {fmt(t.get('high'))}])"
        )
        return TargetResult(
            target,
            verdict,
            text,
            f"paired bootstrap of P@k-T − P-T (same seeds); within {tol:g}: lower bound ≥ −{tol:g}",
        )

    return judge


def path_barriers(
    entry: dict[str, Any], pair: str, path: str, key: str = "barrier_metric"
) -> list[float]:
    """The finite barriers ``pair[path][key]`` of every measured ``pair`` of an alignment or
    connectivity entry (``path``: 'linear', 'aligned' or 'curve')."""
    out = []
    for p in _ok_pairs(entry, pair):
        value = (p.get(path) or {}).get(key)
        if finite(value):
            out.append(float(value))
    return out


def _c9(entry: dict[str, Any], target: str) -> TargetResult:
    linear = _barriers(entry, "RI-T/RI-T", "linear")
    aligned = _barriers(entry, "RI-T/RI-T", "aligned")
    if not linear or not aligned:
        return TargetResult(target, UNMEASURED, "no aligned RI-T/RI-T pair")
    lin, ali = mean(v for v, _ in linear), mean(v for v, _ in aligned)
    assert lin is not None and ali is not None
    noise = math.hypot(max(n for _, n in linear), max(n for _, n in aligned))
    text = f"RI-T/RI-T {fmt(lin)} → {fmt(ali)} aligned"
    for other in ("P-T/RI-T", "P-T/P-T"):
        a, b = (
            mean(path_barriers(entry, other, "linear")),
            mean(path_barriers(entry, other, "aligned")),
        )
        if a is not None and b is not None:
            text += f"; {other} {fmt(a)} → {fmt(b)}"
    stat = f"shrinks by more than 2 s.e. of the difference ({fmt(noise, 2)})"
    if _barrier_state(lin, max(n for _, n in linear)) <= 0:
        return TargetResult(target, UNMEASURED, text + " (no linear barrier to shrink)", stat)
    change = lin - ali
    direction = 1 if change > max(noise, BARRIER_TOLERANCE) else (-1 if change < -noise else 0)
    return TargetResult(target, combine(direction), text, stat)


def _c10(entry: dict[str, Any], target: str) -> TargetResult:
    curves = _barriers(entry, "RI-T/RI-T", "curve")
    linear = path_barriers(entry, "RI-T/RI-T", "linear")
    if not curves:
        return TargetResult(target, UNMEASURED, "no RI-T/RI-T curve")
    worst = max(v for v, _ in curves)
    text = f"RI-T/RI-T curve barrier max {fmt(worst)} (linear {fmt(mean(linear))})"
    pt_rit = path_barriers(entry, "P-T/RI-T", "curve")
    if pt_rit:
        text += f"; P-T/RI-T curve max {fmt(max(pt_rit))}"
    flat = [-_barrier_state(v, n) for v, n in curves]
    return TargetResult(
        target,
        combine(_direction_of(flat)),
        text,
        f"flat: ≤ {BARRIER_TOLERANCE:g}; a barrier: > {BARRIER_TOLERANCE:g} + 2 s.e.",
    )


def final_pt_metric(entry: dict[str, Any]) -> float | None:
    """The final P-T metric of a trajectory entry.

    The point marked ``"reference": "P-T"`` (P-T's runs, fine-tuned from the final P) when there
    is one, else the mean of the points at ``final_k``.
    """
    points = [p for p in entry.get("points", []) if finite(p.get("final_metric"))]
    ref = [p["final_metric"] for p in points if p.get("reference") == "P-T"]
    if ref:
        return mean(ref)
    return mean(p["final_metric"] for p in points if p.get("k") == entry.get("final_k"))


def evaluate_findings(data: StudyData) -> list[Finding]:
    """Claims C1-C8 of Neyshabur et al. (2020) and C9-C10 beyond it, each with its rule,
    per-target numbers, statistic and verdict."""
    tol_b, tol_c = BARRIER_TOLERANCE, CHECKPOINT_TOLERANCE
    same = (
        "and than the same-init RI-T/RI-T pair and the control pair P@0-T/P@0-T (two fine-tunes "
        "from P's untrained init: a shared start and recipe alone must not make it hold)"
    )
    return [
        Finding(
            "C1",
            "P-T reaches a better final metric than RI-T and gets there faster.",
            "P-T's final test metric beats RI-T's beyond test-set noise (sign test on the "
            "examples the two disagree on, McNemar's test; paired bootstrap for mean AUC), and "
            "every P-T seed reaches the common threshold (chance + 0.9 × (lower final − chance)) "
            "at an earlier evaluation than every RI-T seed.",
            "feature-reuse",
            _per_target(data, "curves", _c1),
        ),
        Finding(
            "C2",
            "Block shuffling shrinks P-T's advantage, but P-T still trains faster at the smallest block.",
            "the relative drop 100·(A(P-T) − A(RI-T))/A(P-T) at the smallest block (pixel "
            "shuffle if no block) is smaller than unshuffled, beyond a paired bootstrap 95% "
            "interval, and at that block P-T reaches the common threshold at an earlier "
            "evaluation than RI-T.",
            "feature-reuse",
            _per_target(data, "curves", _c2),
        ),
        Finding(
            "C3",
            "Two P-T models make fewer uncommon mistakes than two RI-T models.",
            "the fraction of uncommon mistakes (exactly one model wrong) of P-T/P-T pairs is "
            f"below that of RI-T/RI-T pairs {same}, each by more than the pair spread and twice "
            "the binomial error, ranges not overlapping.",
            "mistakes",
            _per_target(data, "mistakes", _c3),
        ),
        Finding(
            "C4",
            "P-T models are more similar to each other in feature space than RI-T models.",
            "linear CKA of P-T/P-T pairs exceeds that of RI-T/RI-T pairs "
            f"{same} at every layer, each by more than the pair spread and {CKA_FLOOR:g}, "
            "ranges not overlapping.",
            "similarity",
            _per_target(data, "similarity", _c4),
        ),
        Finding(
            "C5",
            "P-T models are closer to each other in parameter space, and their distance to P grows "
            "with depth.",
            f"whole-network distance of P-T/P-T pairs is below that of RI-T/RI-T pairs {same} "
            f"(beyond the pair spread and {DISTANCE_FLOOR:.0%}), and the size-normalised change "
            "‖θ_P-T − θ_P‖/‖θ_P‖ per module rises with depth (Spearman ρ, one-sided "
            "permutation p < 0.05; head and Fixup scalars left out).",
            "distance",
            _per_target(data, "distance", _c5(data)),
        ),
        Finding(
            "C6",
            "No performance barrier between P-T models; a barrier between RI-T models, even from the "
            "same random init.",
            f"every P-T/P-T barrier (metric) ≤ {tol_b:g}, and every RI-T/RI-T barrier, the "
            f"same-init pair's included, > {tol_b:g} plus twice its binomial standard error "
            f"({tol_b:g} = one point of accuracy/AUC).",
            "barriers",
            _per_target(data, "interpolation", _c6),
        ),
        Finding(
            "C7",
            "Higher modules are more critical than lower ones.",
            "Spearman ρ between module depth (input → output) and P-T's module criticality μ "
            "is positive with one-sided permutation p < 0.05, over the modules with a finite μ "
            "(the head left out).",
            "criticality",
            _per_target(data, "criticality", _c7),
        ),
        Finding(
            "C8",
            "An early pre-training checkpoint transfers as well as the final one.",
            "some early checkpoint (k at most half of pre-training, trajectory.early_fraction) "
            f"gives a P@k-T final metric no worse than P-T's of the same seed by more than {tol_c:g} "
            "(lower bound of the paired bootstrap 95% interval ≥ −"
            f"{tol_c:g}); does not hold when every early k is worse beyond it.",
            "trajectory",
            _per_target(data, "trajectory", _c8(data)),
        ),
        Finding(
            "C9",
            "Beyond the paper: RI-T barriers shrink after permutation alignment (Git Re-Basin).",
            "the mean RI-T/RI-T barrier (metric) on the straight line after permuting B's units to "
            "match A (weight matching) is below the plain barrier by more than twice the "
            "standard error of the difference and "
            f"{tol_b:g}; not measured when there is no plain barrier to shrink.",
            "basins",
            _per_target(data, "alignment", _c9),
        ),
        Finding(
            "C10",
            "Beyond the paper: a non-linear low-loss path joins two RI-T models (Garipov et al. "
            "2018).",
            f"every RI-T/RI-T trained quadratic Bezier curve has a barrier (metric) ≤ {tol_b:g}; "
            f"does not hold when one exceeds {tol_b:g} by more than twice its standard error.",
            "basins",
            _per_target(data, "connectivity", _c10),
        ),
    ]


__all__ = [
    "ANALYSIS_NAMES",
    "BARRIER_TOLERANCE",
    "CHECKPOINT_TOLERANCE",
    "FAILS",
    "HOLDS",
    "INCONCLUSIVE",
    "UNMEASURED",
    "Finding",
    "RunRow",
    "StudyData",
    "TargetResult",
    "combine",
    "depth_order",
    "evaluate_findings",
    "final_pt_metric",
    "load_study",
    "path_barriers",
    "spearman",
]
