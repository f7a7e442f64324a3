"""The study directory as the report sees it, and the paper's claims C1-C8 (and the follow-up
claims C9-C10, beyond the paper) turned into verdicts.

The report reads only the study directory (DESIGN.md): ``study.yaml``, ``plan.json``,
``runs/<id>/{DONE, FAILED, metrics.jsonl}`` and ``analyses/<name>.json``. It never trains and never
re-runs an analysis, so a report can be rebuilt at any time, even while runs are still going.

Each claim of PAPER.md becomes a :class:`Finding`: the numbers measured on every target, a verdict
('holds', 'does not hold' or 'not measured') and the rule that produced the verdict, stated in
words so a reader can check it. A claim holds when it holds on every target where it could be
measured; targets where it could not be measured are listed but do not count.
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

Verdict = Literal["holds", "does not hold", "not measured"]
HOLDS: Verdict = "holds"
FAILS: Verdict = "does not hold"
UNMEASURED: Verdict = "not measured"

# The config's analyses section declares every analysis, in the paper's order.
# (the report has one section for each)
ANALYSIS_NAMES = tuple(AnalysesSpec.model_fields)

# Tolerances of the claim rules, in metric units (accuracy and mean AUC both live in [0, 1]).
BARRIER_TOLERANCE = 0.01  # C6: one point of accuracy / AUC
CHECKPOINT_TOLERANCE = 0.01  # C8: an early checkpoint within one point of the final P-T metric


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

    def target_entry(self, name: str, target: str) -> dict[str, Any] | None:
        doc = self.analysis(name)
        if doc is None:
            return None
        entry = doc.get("targets", {}).get(target)
        return entry if isinstance(entry, dict) else None


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
    """A claim's measurement on one target."""

    target: str
    verdict: Verdict
    measured: str


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
        """Holds when it holds on every target measured; not measured when none was."""
        verdicts = [t.verdict for t in self.per_target if t.verdict != UNMEASURED]
        if not verdicts:
            return UNMEASURED
        return HOLDS if all(v == HOLDS for v in verdicts) else FAILS

    @property
    def measured(self) -> str:
        if not self.per_target:
            return "no target"
        return "; ".join(f"{t.target}: {t.measured}" for t in self.per_target)


def _verdict(ok: bool) -> Verdict:
    return HOLDS if ok else FAILS


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
        out.append(judge(entry, target))
    return out


def _ok_pairs(entry: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [
        p for p in entry.get("pairs", []) if p.get("pair") == name and p.get("status", "ok") == "ok"
    ]


def _c1(entry: dict[str, Any], target: str) -> TargetResult:
    pt, rit = entry.get("P-T", {}), entry.get("RI-T", {})
    m_pt, m_rit = pt.get("final_metric_mean"), rit.get("final_metric_mean")
    gap = entry.get("speed_gap_epochs")
    if not (finite(m_pt) and finite(m_rit) and finite(gap)):
        return TargetResult(target, UNMEASURED, "final metrics or speed gap missing")
    text = f"final {fmt(m_pt)} vs {fmt(m_rit)}; speed gap {fmt(gap)} epochs (RI-T − P-T)"
    return TargetResult(target, _verdict(m_pt > m_rit and gap > 0), text)


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
    d0, d1, gap = (
        base.get("relative_drop"),
        small.get("relative_drop"),
        small.get("speed_gap_epochs"),
    )
    if not (finite(d0) and finite(d1) and finite(gap)):
        return TargetResult(target, UNMEASURED, "relative drop or speed gap missing")
    label = small.get("shuffle")
    text = (
        f"drop {fmt(d0)}% unshuffled vs {fmt(d1)}% at {label}; "
        f"speed gap at {label} {fmt(gap)} epochs"
    )
    return TargetResult(target, _verdict(d1 < d0 and gap > 0), text)


def _uncommon(pairs: list[dict[str, Any]]) -> float | None:
    return mean(p.get("fractions", {}).get("uncommon") for p in pairs)


def _c3(entry: dict[str, Any], target: str) -> TargetResult:
    a, b = _uncommon(_ok_pairs(entry, "P-T/P-T")), _uncommon(_ok_pairs(entry, "RI-T/RI-T"))
    if a is None or b is None:
        return TargetResult(target, UNMEASURED, "P-T/P-T or RI-T/RI-T pair missing")
    return TargetResult(target, _verdict(a < b), f"uncommon {fmt(a)} vs {fmt(b)}")


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


def _c4(entry: dict[str, Any], target: str) -> TargetResult:
    a = _mean_per_key(_ok_pairs(entry, "P-T/P-T"), "cka")
    b = _mean_per_key(_ok_pairs(entry, "RI-T/RI-T"), "cka")
    layers = [n for n in a if n in b]
    if not layers:
        return TargetResult(target, UNMEASURED, "P-T/P-T or RI-T/RI-T pair missing")
    text = ", ".join(f"{n} {fmt(a[n], 2)} vs {fmt(b[n], 2)}" for n in layers)
    return TargetResult(target, _verdict(all(a[n] > b[n] for n in layers)), text)


def _c5(data: StudyData) -> Callable[[dict[str, Any], str], TargetResult]:
    def judge(entry: dict[str, Any], target: str) -> TargetResult:
        a = mean(p.get("total") for p in _ok_pairs(entry, "P-T/P-T"))
        b = mean(p.get("total") for p in _ok_pairs(entry, "RI-T/RI-T"))
        per = _mean_per_key(_ok_pairs(entry, "P-T/P"), "per_module")
        order = depth_order(per, _criticality_modules(data, target))
        rho = spearman([per[m] for m in order])
        if a is None or b is None or rho is None:
            parts = [] if a is not None and b is not None else ["P-T/P-T or RI-T/RI-T distance"]
            if rho is None:
                parts.append("P-T/P per-module distances (3+ modules)")
            return TargetResult(target, UNMEASURED, "missing: " + ", ".join(parts))
        text = f"{fmt(a)} vs {fmt(b)}; P-T/P depth ρ = {rho:+.2f} over {len(order)} modules"
        return TargetResult(target, _verdict(a < b and rho > 0), text)

    return judge


def _criticality_modules(data: StudyData, target: str) -> list[str] | None:
    entry = data.target_entry("criticality", target) or {}
    modules = (entry.get("P-T") or {}).get("modules")
    return list(modules) if isinstance(modules, list) else None


def _max_barrier(pairs: list[dict[str, Any]]) -> float | None:
    xs = [p.get("barrier_metric") for p in pairs if finite(p.get("barrier_metric"))]
    return max(xs) if xs else None


def _min_barrier(pairs: list[dict[str, Any]]) -> float | None:
    xs = [p.get("barrier_metric") for p in pairs if finite(p.get("barrier_metric"))]
    return min(xs) if xs else None


def _c6(entry: dict[str, Any], target: str) -> TargetResult:
    pt = _max_barrier(_ok_pairs(entry, "P-T/P-T"))
    rit = _min_barrier(_ok_pairs(entry, "RI-T/RI-T"))
    same = _min_barrier(_ok_pairs(entry, "RI-T/RI-T same init"))
    if pt is None or rit is None:
        return TargetResult(target, UNMEASURED, "P-T/P-T or RI-T/RI-T barrier missing")
    ok = pt <= BARRIER_TOLERANCE and rit > BARRIER_TOLERANCE
    text = f"P-T/P-T max {fmt(pt)}, RI-T/RI-T min {fmt(rit)}"
    if same is None:
        text += ", same init not measured"
    else:
        ok = ok and same > BARRIER_TOLERANCE
        text += f", same init {fmt(same)}"
    return TargetResult(target, _verdict(ok), text)


def _c7(entry: dict[str, Any], target: str) -> TargetResult:
    pt = entry.get("P-T") or {}
    if pt.get("status", "ok") != "ok":
        return TargetResult(target, UNMEASURED, f"P-T skipped ({pt.get('reason', '')})")
    modules, mu = pt.get("modules") or [], pt.get("mu") or {}
    # A null μ means no (α, σ) on the grid met the loss bound: the tightest valley, ranked last.
    values = [float(mu[m]) if finite(mu.get(m)) else math.inf for m in modules if m in mu]
    rho = spearman(values)
    if rho is None:
        return TargetResult(target, UNMEASURED, "fewer than 3 modules with μ (or all tied)")
    return TargetResult(target, _verdict(rho > 0), f"ρ = {rho:+.2f} over {len(values)} modules")


def _c8(data: StudyData) -> Callable[[dict[str, Any], str], TargetResult]:
    def judge(entry: dict[str, Any], target: str) -> TargetResult:
        points = [p for p in entry.get("points", []) if finite(p.get("final_metric"))]
        final_k = entry.get("final_k")
        final = final_pt_metric(entry)
        if final is None:  # the final checkpoint's P@k-T is P-T: take the P-T mean
            curves = data.target_entry("curves", target) or {}
            final = (curves.get("P-T") or {}).get("final_metric_mean")
        early = [p for p in points if finite(p.get("k")) and finite(final_k) and p["k"] < final_k]
        if not finite(final) or not early:
            return TargetResult(target, UNMEASURED, "no early checkpoint or no final P-T metric")
        good = [p for p in early if p["final_metric"] >= final - CHECKPOINT_TOLERANCE]
        best = (
            min(good, key=lambda p: p["k"]) if good else max(early, key=lambda p: p["final_metric"])
        )
        text = f"final P-T {fmt(final)}; k = {fmt(best['k'])} gives {fmt(best['final_metric'])}"
        return TargetResult(target, _verdict(bool(good)), text)

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
    linear = mean(path_barriers(entry, "RI-T/RI-T", "linear"))
    aligned = mean(path_barriers(entry, "RI-T/RI-T", "aligned"))
    if linear is None or aligned is None:
        return TargetResult(target, UNMEASURED, "no aligned RI-T/RI-T pair")
    text = f"RI-T/RI-T {fmt(linear)} → {fmt(aligned)} aligned"
    for other in ("P-T/RI-T", "P-T/P-T"):
        a, b = (
            mean(path_barriers(entry, other, "linear")),
            mean(path_barriers(entry, other, "aligned")),
        )
        if a is not None and b is not None:
            text += f"; {other} {fmt(a)} → {fmt(b)}"
    if linear <= BARRIER_TOLERANCE:
        return TargetResult(target, UNMEASURED, text + " (no linear barrier to shrink)")
    return TargetResult(target, _verdict(aligned < linear), text)


def _c10(entry: dict[str, Any], target: str) -> TargetResult:
    curves = path_barriers(entry, "RI-T/RI-T", "curve")
    linear = path_barriers(entry, "RI-T/RI-T", "linear")
    if not curves:
        return TargetResult(target, UNMEASURED, "no RI-T/RI-T curve")
    worst = max(curves)
    text = f"RI-T/RI-T curve barrier max {fmt(worst)} (linear {fmt(mean(linear))})"
    pt_rit = path_barriers(entry, "P-T/RI-T", "curve")
    if pt_rit:
        text += f"; P-T/RI-T curve max {fmt(max(pt_rit))}"
    return TargetResult(target, _verdict(worst <= BARRIER_TOLERANCE), text)


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
    """Claims C1-C8 of PAPER.md and C9-C10 beyond it, each with its rule, per-target numbers and
    verdict."""
    tol_b, tol_c = BARRIER_TOLERANCE, CHECKPOINT_TOLERANCE
    return [
        Finding(
            "C1",
            "P-T reaches a better final metric than RI-T and gets there faster.",
            "mean final test metric of P-T > that of RI-T, and speed gap > 0 (RI-T's mean epochs "
            "to reach the fraction of its final metric minus P-T's).",
            "feature-reuse",
            _per_target(data, "curves", _c1),
        ),
        Finding(
            "C2",
            "Block shuffling shrinks P-T's advantage, but P-T still trains faster at the smallest block.",
            "relative drop 100·(A(P-T) − A(RI-T))/A(P-T) at the smallest block size (pixel shuffle "
            "if no block) < the unshuffled relative drop, and speed gap at that block > 0.",
            "feature-reuse",
            _per_target(data, "curves", _c2),
        ),
        Finding(
            "C3",
            "Two P-T models make fewer uncommon mistakes than two RI-T models.",
            "mean fraction of uncommon mistakes (exactly one model wrong) over P-T/P-T pairs < "
            "over RI-T/RI-T pairs.",
            "mistakes",
            _per_target(data, "mistakes", _c3),
        ),
        Finding(
            "C4",
            "P-T models are more similar to each other in feature space than RI-T models.",
            "mean linear CKA of P-T/P-T pairs > that of RI-T/RI-T pairs at every layer measured.",
            "similarity",
            _per_target(data, "similarity", _c4),
        ),
        Finding(
            "C5",
            "P-T models are closer to each other in parameter space, and their distance to P grows "
            "with depth.",
            "mean whole-network distance P-T/P-T < RI-T/RI-T, and Spearman ρ between module depth "
            "(input → output, scalar Fixup biases left out) and mean P-T/P per-module distance > 0.",
            "distance",
            _per_target(data, "distance", _c5(data)),
        ),
        Finding(
            "C6",
            "No performance barrier between P-T models; a barrier between RI-T models, even from the "
            "same random init.",
            f"every P-T/P-T barrier (metric) ≤ {tol_b:g} and every RI-T/RI-T barrier > {tol_b:g}, "
            f"including the same-init pair when it was run ({tol_b:g} = one point of accuracy/AUC).",
            "barriers",
            _per_target(data, "interpolation", _c6),
        ),
        Finding(
            "C7",
            "Higher modules are more critical than lower ones.",
            "Spearman ρ between module depth (input → output) and P-T's module criticality μ > 0 "
            "(a module with no feasible (α, σ), μ = null, ranks as most critical).",
            "criticality",
            _per_target(data, "criticality", _c7),
        ),
        Finding(
            "C8",
            "An early pre-training checkpoint transfers as well as the final one.",
            f"some checkpoint k < final k gives a P@k-T final metric ≥ final P-T metric − {tol_c:g}.",
            "trajectory",
            _per_target(data, "trajectory", _c8(data)),
        ),
        Finding(
            "C9",
            "Beyond the paper: RI-T barriers shrink after permutation alignment (Git Re-Basin).",
            "mean RI-T/RI-T barrier (metric) on the straight line after permuting B's units to "
            "match A (weight matching) < the mean plain barrier; not measured when there is no "
            f"plain barrier (≤ {tol_b:g}) to shrink.",
            "basins",
            _per_target(data, "alignment", _c9),
        ),
        Finding(
            "C10",
            "Beyond the paper: a non-linear low-loss path joins two RI-T models (Garipov et al. "
            "2018).",
            f"every RI-T/RI-T trained quadratic Bezier curve has a barrier (metric) ≤ {tol_b:g}, "
            "the tolerance under which C6 calls a path barrier-free.",
            "basins",
            _per_target(data, "connectivity", _c10),
        ),
    ]


__all__ = [
    "ANALYSIS_NAMES",
    "BARRIER_TOLERANCE",
    "CHECKPOINT_TOLERANCE",
    "Finding",
    "RunRow",
    "StudyData",
    "TargetResult",
    "depth_order",
    "evaluate_findings",
    "final_pt_metric",
    "load_study",
    "path_barriers",
    "spearman",
]
