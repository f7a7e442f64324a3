"""The report (transferscope.report): built from hand-made study directories, no training.

The analyses' JSON documents here follow the schemas the study steps write (curves, mistakes,
similarity, distance) and the ones agreed for interpolation, criticality and trajectory.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transferscope import registry
from transferscope.errors import TransferscopeError
from transferscope.report import build_report, evaluate_findings, load_study, markdown_summary
from transferscope.report.findings import (
    BARRIER_TOLERANCE,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    UNMEASURED,
    depth_order,
    spearman,
)
from transferscope.unitkit.results import ResultMismatch, load_result

EVIL = "<script>alert(1)</script>"
TARGETS = ("digits", EVIL)
MODULES = ["conv1", "layer1.0", "layer2.0", "layer3.0", "fc"]
# Criticality and distance per weight layer (a depth trend needs more than four modules).
UNITS = ["conv1", "l1.conv1", "l1.conv2", "l2.conv1", "l2.conv2", "l3.conv1", "l3.conv2"]
LAYERS = ["conv1", "layer1", "layer2", "layer3"]


# ----------------------------------------------------------------------------------------------
# a hand-made study directory


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))


def _curve(values: list[float]) -> dict[str, Any]:
    n = len(values)
    return {
        "epoch": [float(i) for i in range(n)],
        "mean": values,
        "min": [v - 0.01 for v in values],
        "max": [v + 0.01 for v in values],
        "std": [0.01] * n,
        "count": [2] * n,
    }


def _side(final: float, epochs: float, curve: list[float] | None = None) -> dict[str, Any]:
    side: dict[str, Any] = {
        "final_metric": [final, final],
        "final_metric_mean": final,
        "epochs_to_threshold": [epochs, epochs],
        "epochs_to_threshold_mean": epochs,
        "reached": [True, True],
        "runs": 2,
        "steps_to_threshold": [int(10 * epochs)] * 2,
        "steps_to_threshold_mean": 10 * epochs,
    }
    if curve is not None:
        side["curve"] = _curve(curve)
    return side


def comparison(direction: int, estimate: float, **extra: Any) -> dict[str, Any]:
    """A stored statistics.Comparison."""
    return {
        "status": "ok",
        "direction": direction,
        "estimate": estimate,
        "low": extra.get("low"),
        "high": extra.get("high"),
        "p_value": extra.get("p_value"),
        "method": extra.get("method", "test"),
    }


def _shuffle(label: str | None, block: int | None, pt: float, rit: float, gap: float) -> dict:
    entry = {
        "shuffle": label,
        "block_size": block,
        "pixel": label == "pixel",
        "P-T": _side(pt, 1.0),
        "RI-T": _side(rit, 1.0 + gap),
        "relative_drop": 100 * (pt - rit) / pt,
        "speed_gap_epochs": gap,
        "speed_gap_steps": 10 * gap,
        "area_between": None,
        "threshold": 0.5,
        "chance": 0.1,
        "fraction": 0.9,
        "runs": {"P-T": ["PT-1", "PT-2"], "RI-T": ["RIT-3", "RIT-4"]},
    }
    if label is not None:
        shrink = 100 * 0.2 / 0.9 - entry["relative_drop"]
        entry["drop_test"] = comparison(1, shrink, low=shrink / 2, high=shrink * 1.5)
    return entry


def _curves_entry() -> dict[str, Any]:
    return {
        "status": "ok",
        "metric_name": "accuracy",
        "fraction": 0.9,
        "chance": 0.1,
        "threshold": 0.64,
        "P-T": _side(0.9, 1.0, [0.1, 0.8, 0.9]),
        "RI-T": _side(0.7, 2.0, [0.1, 0.5, 0.7]),
        "relative_drop": 100 * (0.9 - 0.7) / 0.9,
        "speed_gap_epochs": 1.0,
        "speed_gap_steps": 10.0,
        "area_between": 0.15,
        "runs": {"P-T": ["PT-1", "PT-2"], "RI-T": ["RIT-3", "RIT-4"]},
        "final_test": comparison(1, 0.2, p_value=1e-6, method="sign test (McNemar)"),
        "shuffles": [
            _shuffle(None, None, 0.9, 0.7, 1.0),
            _shuffle("b7", 7, 0.8, 0.7, 1.0),
            _shuffle("b1", 1, 0.6, 0.58, 0.5),
            _shuffle("pixel", None, 0.55, 0.55, 0.5),
        ],
    }


def _mistake_pair(name: str, runs: list[str], uncommon: float) -> dict[str, Any]:
    half = uncommon / 2
    fractions = {
        "both_correct": 0.8 - uncommon,
        "only_a_wrong": half,
        "only_b_wrong": half,
        "both_wrong": 0.2,
        "uncommon": uncommon,
    }
    return {
        "pair": name,
        "runs": runs,
        "seeds": [0, 1],
        "status": "ok",
        "task": "multiclass",
        "n": 100,
        "counts": {k: round(v * 100) for k, v in fractions.items()},
        "fractions": fractions,
        "indices": {
            "only_a_wrong": [3, 5],
            "only_b_wrong": [7],
            "both_wrong": [],
            "both_correct": [],
        },
    }


def _distance_pair(
    name: str,
    runs: list[str],
    total: float,
    per_module: dict[str, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    per_module = per_module or {}
    return {
        "pair": name,
        "runs": runs,
        "seeds": [0, 1],
        "checkpoints": ["final", "final"],
        "status": "ok",
        "total": total,
        "per_module": per_module,
        "per_module_relative": {},
        "per_module_rms": {},
        "module_elements": {m: 10 for m in per_module},
        "excluded": {},
        "tensors": 2 * len(per_module),
        "elements": 10 * len(per_module),
        **extra,
    }


def _cka_pair(name: str, runs: list[str], cka: dict[str, float]) -> dict[str, Any]:
    layer = {"estimator": "exact", "features": [4, 4], "examples": 100, "error": None}
    return {
        "pair": name,
        "runs": runs,
        "seeds": [0, 1],
        "status": "ok",
        "cka": cka,
        "layers": {n: {**layer, "cka": v} for n, v in cka.items()},
        "examples": 100,
    }


def _interp_pair(name: str, barrier: float, k: float | None = None) -> dict[str, Any]:
    lam = [i / 10 for i in range(11)]
    metric = [0.9 - barrier * (1 - abs(2 * x - 1)) for x in lam]
    loss = [0.3 + 3 * barrier * (1 - abs(2 * x - 1)) for x in lam]
    return {
        "pair": name,
        "k": k,
        "runs": ["a", "b"],
        "checkpoints": ["final", "final"],
        "status": "ok",
        "metric_name": "accuracy",
        "lambdas": lam,
        "metric": metric,
        "loss": loss,
        "barrier_metric": barrier,
        "barrier_loss": 3 * barrier,
        "batchnorm_recalibrated": False,
    }


def _criticality_kind(run: str, mu: list[float | None], rewind: list[float]) -> dict[str, Any]:
    """A complete criticality result of one kind (the criticality unit's KindCriticality)."""
    modules = [*UNITS, "fc"]
    heat = {
        m: {
            "alphas": [0.0, 0.5, 1.0],
            "sigmas": [0.0, 0.5, 1.0],
            "distance": [0.0, 1.0, 2.0],
            "metric": [[0.9, 0.8, 0.2], [0.9, 0.7, 0.1], [0.9, 0.6, 0.1]],
            "loss": [[0.3, 0.5, 2.0], [0.3, 0.8, 2.5], [0.3, 0.9, 2.5]],
        }
        for m in modules[:3]
    }
    finite = [v for v in mu if v is not None]
    bounds = {m: 1e6 for m, v in zip(modules, mu, strict=True) if v is None}
    return {
        "status": "ok",
        "run": run,
        "modules": modules,
        "mu": dict(zip(modules, mu, strict=True)),
        "mu_bound": bounds,
        "network_criticality": None if bounds else sum(finite),
        "network_criticality_bound": sum(finite) + sum(bounds.values()) if bounds else None,
        "infeasible_modules": list(bounds),
        "distance": {m: 2.0 for m in modules},
        "argmin": {m: None if v is None else [1.0, 0.1] for m, v in zip(modules, mu, strict=True)},
        "final_loss": 0.3,
        "epsilon": 0.35,
        "final_meets_epsilon": True,
        "alphas": [0.0, 0.5, 1.0],
        "sigmas": [1e-5, 1e-3, 0.1],
        "sigma_grid": "geometric",
        "forward_passes": 100,
        "examples": 1000,
        "search": "pruned",
        "recalibrated_batchnorm": False,
        "final_metric": 0.9,
        "final_test_loss": 0.3,
        "rewind": dict(zip(modules, rewind, strict=True)),
        "rewind_loss": {m: 2.0 for m in modules},
        "heatmap": heat,
    }


def make_study(root: Path, *, complete: bool = True) -> Path:
    """A study directory like the micro preset's, analyses hand-made.

    ``complete``: all seven analyses; otherwise interpolation, criticality and trajectory are
    missing and similarity was skipped.
    """
    config = "name: fake & <b>bold</b>\nsource:\n  name: fashion-mnist\ntargets:\n" + "".join(
        f"- name: '{t}'\n" for t in TARGETS
    )
    _write(root / "study.yaml", config)
    runs = [{"id": "P-src", "target": "fashion-mnist", "seed": 0, "spec": {"kind": "P"}}]
    for t in TARGETS:
        for kind, slug in (("P-T", "PT"), ("RI-T", "RIT")):
            for seed in (0, 1):
                runs.append(
                    {"id": f"{slug}-{len(runs)}", "target": t, "seed": seed, "spec": {"kind": kind}}
                )
    runs.append(
        {"id": "PkT-x", "target": "digits", "seed": 0, "checkpoint": 0.5, "spec": {"kind": "P@k-T"}}
    )
    runs.append(
        {
            "id": "RIT-failed",
            "target": "digits",
            "seed": 0,
            "shuffle": "b1",
            "spec": {"kind": "RI-T"},
        }
    )
    runs.append(
        {
            "id": "PT-pending",
            "target": "digits",
            "seed": 0,
            "shuffle": "b1",
            "spec": {"kind": "P-T"},
        }
    )
    _write(root / "plan.json", {"runs": runs})
    for r in runs[:-2]:
        summary = {
            "kind": r["spec"]["kind"],
            "target": r["target"],
            "metric_name": "accuracy",
            "final_metric": 0.9,
            "final_loss": 0.3,
            "steps": 40,
            "seconds": 2.5,
            "device": "cpu",
        }
        _write(root / "runs" / r["id"] / "DONE", summary)
    _write(root / "runs" / "RIT-failed" / "FAILED", {"error": "CUDA out of memory <oops>"})

    def doc(name: str, targets: dict[str, Any]) -> dict[str, Any]:
        return {
            "analysis": name,
            "version": registry.get(name).version,
            "status": "ok",
            "targets": targets,
            "options": {},
            "runs_used": [],
            "runs_missing": [],
        }

    a = root / "analyses"
    _write(a / "curves.json", doc("curves", {t: _curves_entry() for t in TARGETS}))
    mistakes = {
        "status": "ok",
        "pairs": [
            _mistake_pair("P-T/P-T", ["PT-1", "PT-2"], 0.05),
            _mistake_pair("RI-T/RI-T", ["RIT-3", "RIT-4"], 0.2),
            _mistake_pair("RI-T/RI-T same init", ["RIT-3", "RIT-4"], 0.19),
            _mistake_pair("P@0-T/P@0-T", ["PkT-0", "PkT-0b"], 0.21),
            _mistake_pair("P-T/RI-T", ["PT-1", "RIT-3"], 0.15),
        ],
    }
    _write(a / "mistakes.json", doc("mistakes", {t: mistakes for t in TARGETS}))
    # Example images for digits only: the other target falls back to indices.
    rng = np.random.default_rng(0)
    (a / "mistakes").mkdir()
    np.savez(
        a / "mistakes" / "digits.npz",
        pt_wrong_rit_right=rng.normal(size=(5, 1, 8, 8)).astype(np.float32),
        pt_wrong_rit_right_indices=np.array([3, 5, 8, 13, 21]),
        rit_wrong_pt_right=rng.normal(size=(3, 3, 8, 8)).astype(np.float32),
    )
    distance = {
        "status": "ok",
        "pairs": [
            _distance_pair(
                "P-T/P-T",
                ["PT-1", "PT-2"],
                0.2,
                {"bias1": 0.001, **{m: 0.01 * (i + 1) for i, m in enumerate(MODULES)}},
            ),
            _distance_pair(
                "RI-T/RI-T",
                ["RIT-3", "RIT-4"],
                12.0,
                {m: 2.0 * (i + 1) for i, m in enumerate(MODULES)},
            ),
            _distance_pair("RI-T/RI-T same init", ["RIT-3", "RIT-4"], 9.0),
            _distance_pair("P@0-T/P@0-T", ["PkT-0", "PkT-0b"], 5.0),
            _distance_pair(
                "P-T/P",
                ["PT-1", "P-src"],
                0.1,
                {"bias1": 0.5, **{m: 0.02 * (i + 1) for i, m in enumerate(UNITS)}},
                seeds=[0],
                # The size-free change rises with depth (C5), unlike its raw l2 (not used).
                per_module_relative={
                    "bias1": 9.0,
                    **{m: 0.01 * (i + 1) for i, m in enumerate(UNITS)},
                },
            ),
            _distance_pair(
                "P@k/P-T",
                ["P-src", "PT-1"],
                0.9,
                {m: 0.1 for m in MODULES[:-1]},
                seeds=[0],
                checkpoints=["epoch-0.5", "final"],
                k=0.5,
            ),
            {
                "pair": "RI-T/P",
                "runs": ["RIT-3"],
                "seeds": [0],
                "status": "skipped",
                "reason": "P's weights <missing>",
            },
        ],
        "depth_units": UNITS,
    }
    if complete:
        similarity = {
            "status": "ok",
            "pairs": [
                _cka_pair(
                    "P-T/P-T", ["PT-1", "PT-2"], {n: 0.9 - 0.1 * i for i, n in enumerate(LAYERS)}
                ),
                _cka_pair(
                    "RI-T/RI-T",
                    ["RIT-3", "RIT-4"],
                    {n: 0.5 - 0.1 * i for i, n in enumerate(LAYERS)},
                ),
                _cka_pair(
                    "RI-T/RI-T same init",
                    ["RIT-3", "RIT-4"],
                    {n: 0.55 - 0.1 * i for i, n in enumerate(LAYERS)},
                ),
                _cka_pair(
                    "P@0-T/P@0-T",
                    ["PkT-0", "PkT-0b"],
                    {n: 0.6 - 0.1 * i for i, n in enumerate(LAYERS)},
                ),
                _cka_pair("P-T/RI-T", ["PT-1", "RIT-3"], {n: 0.3 for n in LAYERS}),
                {
                    "pair": "P/P-T",
                    "runs": ["P-src", "PT-1"],
                    "seeds": [0],
                    "status": "skipped",
                    "reason": "not done",
                },
            ],
            "subset": {"examples": 100, "of": 100, "seed": 0, "stratified": True},
        }
        _write(a / "similarity.json", doc("similarity", {t: similarity for t in TARGETS}))
    else:
        skipped = doc("similarity", {})
        skipped.update(status="skipped", reason="runs not finished: PT-<b>1</b>")
        _write(a / "similarity.json", skipped)
    _write(a / "distance.json", doc("distance", {t: distance for t in TARGETS}))
    if not complete:
        return root
    interp = {
        "status": "ok",
        "metric_name": "accuracy",
        "examples": 1000,
        "pairs": [
            _interp_pair("P-T/P-T", 0.002),
            _interp_pair("RI-T/RI-T", 0.4),
            _interp_pair("P-T/RI-T", 0.5),
            _interp_pair("RI-T/RI-T same init", 0.3),
            _interp_pair("P/P-T", 0.1),
            _interp_pair("P@k/P-T", 0.2, k=0.5),
            {
                "pair": "P@k/P-T",
                "k": 1.0,
                "runs": ["PkT-1"],
                "status": "skipped",
                "reason": "<wait>",
            },
        ],
    }
    _write(a / "interpolation.json", doc("interpolation", {"digits": interp}))
    crit = {
        "P-T": _criticality_kind(
            "PT-1", [0.1, 0.2, 0.5, 0.7, None, 3.0, 4.0, 1.0], [0.9] * 6 + [0.6, 0.1]
        ),
        "RI-T": _criticality_kind("RIT-3", [5.0, 4.0, 6.0, 7.0, 8.0, 8.5, 9, 9.5], [0.1] * 8),
    }
    # Per kind, a criticality result may be skipped (the run had not finished).
    crit_skipped = {
        k: {"status": "skipped", "reason": f"{k} <not finished>"} for k in ("P-T", "RI-T")
    }
    _write(a / "criticality.json", doc("criticality", {"digits": crit, EVIL: crit_skipped}))
    traj = {
        "status": "ok",
        "metric_name": "accuracy",
        "final_k": 2.0,
        "threshold": 0.8,
        "chance": 0.1,
        "points": [
            {
                "k": 0.0,
                "runs": ["PkT-0"],
                "final_metric": 0.7,
                "epochs_to_threshold": None,
                "reached": [False],
                "barrier_metric": 0.3,
                "barrier_loss": 1.0,
                "early": True,
                "vs_final": comparison(-1, -0.2, low=-0.25, high=-0.15),
            },
            {
                "k": 0.5,
                "runs": ["PkT-x"],
                "final_metric": 0.895,
                "epochs_to_threshold": 1.0,
                "reached": [True],
                "barrier_metric": 0.01,
                "barrier_loss": 0.05,
                "early": True,
                "vs_final": comparison(0, -0.005, low=-0.009, high=0.001),
            },
            {
                "k": 2.0,
                "runs": ["PT-1"],
                "final_metric": 0.9,
                "epochs_to_threshold": 1.0,
                "reached": [True],
                "barrier_metric": None,
                "barrier_loss": None,
                "early": False,
                "reference": "P-T",
            },
        ],
    }
    skipped_target = {"status": "skipped", "reason": "no P@k-T runs for <this> target"}
    _write(a / "trajectory.json", doc("trajectory", {"digits": traj, EVIL: skipped_target}))
    _write(a / "alignment.json", doc("alignment", {"digits": _alignment_entry()}))
    _write(a / "connectivity.json", doc("connectivity", {"digits": _connectivity_entry()}))
    return root


def _path(barrier: float) -> dict[str, Any]:
    p = _interp_pair("x", barrier)
    keys = ("lambdas", "metric", "loss", "barrier_metric", "barrier_loss", "batchnorm_recalibrated")
    return {k: p[k] for k in keys}


# (pair, runs, seeds, linear barrier, aligned barrier, curve barrier)
BASIN_PAIRS = [
    ("P-T/P-T", ["PT-1", "PT-2"], [0, 1], 0.002, 0.001, None),
    ("RI-T/RI-T", ["RIT-3", "RIT-4"], [0, 1], 0.4, 0.15, 0.005),
    ("P-T/RI-T", ["PT-1", "RIT-3"], [0, 0], 0.5, 0.3, 0.008),
    ("P-T/RI-T", ["PT-2", "RIT-4"], [1, 1], 0.45, 0.25, 0.009),
]


def _alignment_entry() -> dict[str, Any]:
    pairs: list[dict[str, Any]] = [
        {
            "pair": pair,
            "runs": runs,
            "seeds": seeds,
            "status": "ok",
            "linear": _path(linear),
            "aligned": _path(aligned),
            "alignment": {
                "distance_before": 40.0,
                "distance_after": 31.0,
                "sweeps": 4,
                "units_moved": {"layer1": 3},
            },
        }
        for pair, runs, seeds, linear, aligned, _ in BASIN_PAIRS
    ]
    pairs.append(
        {
            "pair": "RI-T/RI-T",
            "runs": ["RIT-x"],
            "seeds": [2],
            "status": "skipped",
            "reason": "<gone>",
        }
    )
    return {"status": "ok", "metric_name": "accuracy", "pairs": pairs, "examples": 1000}


def _connectivity_entry() -> dict[str, Any]:
    pairs = [
        {
            "pair": pair,
            "runs": runs,
            "seeds": seeds,
            "status": "ok",
            "linear": _path(linear),
            "curve": _path(curve),
            "train_loss": [0.5, 0.2],
            "control_offset": 3.0,
        }
        for pair, runs, seeds, linear, _, curve in BASIN_PAIRS
        if curve is not None
    ]
    return {"status": "ok", "metric_name": "accuracy", "pairs": pairs, "examples": 1000}


# ----------------------------------------------------------------------------------------------
# reading the page


class _Page(HTMLParser):
    """Collects <img> sources, findings-table rows and every <script> element."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.scripts = 0
        self.external: list[str] = []
        self._in_findings = False
        self._in_body = False
        self.finding_rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag == "script":
            self.scripts += 1
        if tag == "link" or (tag in ("img", "script") and re.match(r"\w+://", a.get("src") or "")):
            self.external.append(str(a))
        if tag == "table" and a.get("id") == "findings-table":
            self._in_findings = True
        if self._in_findings and tag == "tbody":
            self._in_body = True
        if self._in_body and tag == "tr":
            self.finding_rows += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_findings = self._in_body = False


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A complete study and its report (built once: figures take a while on shared CPUs)."""
    root = make_study(tmp_path_factory.mktemp("full") / "study")
    # PNG only: PDFs triple the build time; test_figure_formats covers them.
    return root, build_report(root, formats=("png",))


@pytest.fixture(scope="module")
def partial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = make_study(tmp_path_factory.mktemp("partial") / "study", complete=False)
    return root, build_report(root, formats=("png",))


# ----------------------------------------------------------------------------------------------
# tests


def test_report_path_and_figures(full: tuple[Path, Path]) -> None:
    root, index = full
    assert index == root / "report" / "index.html"
    page = _parse(index)
    assert len(page.images) >= 12
    for src in page.images:
        assert not src.startswith(("/", "http")), src
        assert (index.parent / src).is_file(), src


def test_figure_formats(tmp_path: Path) -> None:
    """Each figure is written as PNG plus the paper formats, without pyplot's figure list."""
    import matplotlib.pyplot as plt

    from transferscope.analyses import curves
    from transferscope.unitkit import figures

    with figures.style():
        fig = curves.learning_curves(curves.CurvesEntry.model_validate(_curves_entry()), "t")
        assert fig is not None
        name = figures.save(fig, tmp_path, "curves", ("png", "pdf", "svg"))
    assert name == "curves.png"
    for ext in ("png", "pdf", "svg"):
        assert (tmp_path / f"curves.{ext}").stat().st_size > 0
    assert not plt.get_fignums()
    assert figures.slug(EVIL) == "script_alert_1_script"


def test_the_study_config_picks_the_figure_formats(tmp_path: Path) -> None:
    """``report.figures`` in study.yaml decides the formats; a stamp records them, so a change
    of formats makes the report out of date."""
    from transferscope.report.html import figure_formats, report_is_current

    root = make_study(tmp_path / "study", complete=False)
    assert figure_formats(root) == ("png", "pdf")  # the default, for papers
    with (root / "study.yaml").open("a") as f:
        f.write("report:\n  figures: [svg]\n")
    assert figure_formats(root) == ("svg",)
    build_report(root)
    figs = root / "report" / "figures"
    assert list(figs.glob("*.svg")) and list(figs.glob("*.png")) and not list(figs.glob("*.pdf"))
    assert report_is_current(root)
    assert not report_is_current(root, formats=("png", "pdf"))


def test_report_is_offline_and_scriptless(full: tuple[Path, Path]) -> None:
    _, index = full
    page = _parse(index)
    assert page.scripts == 0
    assert page.external == []
    assert "<style>" in index.read_text()


def test_findings_table_has_one_row_per_claim(full: tuple[Path, Path]) -> None:
    _, index = full
    assert _parse(index).finding_rows == 11
    text = index.read_text()
    for i in range(1, 12):
        assert f">C{i}</a>" in text


def test_sections_in_paper_order(full: tuple[Path, Path]) -> None:
    text = full[1].read_text()
    # The verdicts first, then the evidence in the paper's order.
    ids = [
        "findings",
        "overview",
        "feature-reuse",
        "domain",
        "mistakes",
        "similarity",
        "distance",
        "barriers",
        "criticality",
        "trajectory",
        "basins",
    ]
    positions = [text.index(f'<section id="{i}">') for i in ids]
    assert positions == sorted(positions)


def test_strings_from_data_are_escaped(full: tuple[Path, Path]) -> None:
    text = full[1].read_text()
    assert EVIL not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>bold</b>" not in text  # from study.yaml, shown in the <pre>
    assert "&lt;oops&gt;" in text  # FAILED message
    assert "&lt;this&gt;" in text  # skip reason of one target


def test_overview_lists_every_run_and_state(full: tuple[Path, Path]) -> None:
    root, index = full
    text = index.read_text()
    plan = json.loads((root / "plan.json").read_text())
    for r in plan["runs"]:
        assert f"<td>{r['id']}</td>" in text
    assert 'class="state-failed"' in text and 'class="state-pending"' in text
    assert "<pre>" in text and "fashion-mnist" in text
    done = len(plan["runs"]) - 2
    assert f"{done * 2.5:.1f} s" in text  # total compute time


def test_mistake_grids_from_saved_examples(full: tuple[Path, Path]) -> None:
    _, index = full
    images = _parse(index).images
    assert any("mistakes-digits-pt_wrong_rit_right" in s for s in images)
    assert any("mistakes-digits-rit_wrong_pt_right" in s for s in images)
    # The other target has no saved images: its indices are listed instead.
    assert "No example images saved" in index.read_text()


def test_verdicts_on_the_hand_made_study(full: tuple[Path, Path]) -> None:
    findings = {f.id: f for f in evaluate_findings(load_study(full[0]))}
    assert [f for f in findings] == [f"C{i}" for i in range(1, 12)]
    # C11 ranks targets: two are too few for a rank correlation.
    assert findings["C11"].paper == UNMEASURED
    for claim in ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "C10"):
        assert findings[claim].paper == HOLDS, (claim, findings[claim].measured)
    # Only digits has interpolation results: the other target is not measured there.
    assert [t.verdict for t in findings["C6"].per_target] == [HOLDS, UNMEASURED]
    assert [t.verdict for t in findings["C7"].per_target] == [HOLDS, UNMEASURED]
    assert "skipped" in findings["C7"].per_target[1].measured


def test_skipped_parts_show_their_reasons(full: tuple[Path, Path]) -> None:
    text = full[1].read_text()
    assert "skipped: &lt;wait&gt;" in text  # an interpolation pair
    assert "RI-T skipped: RI-T &lt;not finished&gt;" in text  # a criticality kind


def test_partial_study_says_not_run(partial: tuple[Path, Path]) -> None:
    root, index = partial
    text = index.read_text()
    assert text.count("<strong>not run</strong>") >= 4  # similarity + 3 missing analyses
    assert "runs not finished: PT-&lt;b&gt;1&lt;/b&gt;" in text
    assert "interpolation.json does not exist" in text
    page = _parse(index)
    assert page.finding_rows == 11
    for src in page.images:
        assert (index.parent / src).is_file()
    findings = {f.id: f.paper for f in evaluate_findings(load_study(root))}
    assert findings["C4"] == findings["C6"] == findings["C7"] == findings["C8"] == UNMEASURED
    assert findings["C9"] == findings["C10"] == UNMEASURED
    assert findings["C1"] == HOLDS


def test_report_reads_only_the_study(partial: tuple[Path, Path]) -> None:
    """Rebuilding touches nothing outside report/ (no retraining, no re-analysis)."""
    root, _ = partial
    before = {
        p: p.stat().st_mtime_ns
        for p in root.rglob("*")
        if "report" not in p.relative_to(root).parts
    }
    build_report(root, formats=("png",))
    after = {
        p: p.stat().st_mtime_ns
        for p in root.rglob("*")
        if "report" not in p.relative_to(root).parts
    }
    assert before == after


def test_markdown_summary(full: tuple[Path, Path]) -> None:
    text = markdown_summary(full[0])
    rows = [line for line in text.splitlines() if re.match(r"\| C\d+ \|", line)]
    assert len(rows) == 22  # the verdict grid, then the findings table: a row per claim each
    header = next(line for line in text.splitlines() if line.startswith("| claim | statement"))
    assert "| paper | controlled |" in header
    assert "**holds**" in text
    assert "interpolation: ok" in text


def test_not_a_study_directory(tmp_path: Path) -> None:
    with pytest.raises(TransferscopeError, match=r"plan\.json"):
        build_report(tmp_path)
    with pytest.raises(TransferscopeError, match=r"plan\.json"):
        markdown_summary(tmp_path)


def test_broken_analysis_file_does_not_break_the_report(tmp_path: Path) -> None:
    root = tmp_path / "s"
    _write(root / "plan.json", {"runs": []})
    _write(root / "analyses" / "curves.json", "{not json")
    text = build_report(root).read_text()
    assert "could not be read" in text
    assert {f.paper for f in evaluate_findings(load_study(root))} == {UNMEASURED}


def test_failing_claims(tmp_path: Path) -> None:
    """Numbers against each claim, beyond the noise, give 'does not hold'."""
    root = make_study(tmp_path / "s")
    a = root / "analyses"
    curves = json.loads((a / "curves.json").read_text())
    for entry in curves["targets"].values():
        entry["RI-T"]["epochs_to_threshold"] = [0.0, 0.0]  # RI-T faster at every seed
    _write(a / "curves.json", curves)
    interp = json.loads((a / "interpolation.json").read_text())
    interp["targets"]["digits"]["pairs"][0]["barrier_metric"] = 0.2  # P-T/P-T: a clear barrier
    _write(a / "interpolation.json", interp)
    crit = json.loads((a / "criticality.json").read_text())
    crit["targets"]["digits"]["P-T"]["mu"] = dict(
        zip([*UNITS, "fc"], [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 1.0], strict=True)
    )
    _write(a / "criticality.json", crit)
    traj = json.loads((a / "trajectory.json").read_text())
    for p in traj["targets"]["digits"]["points"][:2]:
        p["vs_final"] = comparison(-1, -0.3, low=-0.35, high=-0.25)
    _write(a / "trajectory.json", traj)
    verdicts = {f.id: f.paper for f in evaluate_findings(load_study(root))}
    assert verdicts["C1"] == verdicts["C6"] == verdicts["C7"] == verdicts["C8"] == FAILS
    assert verdicts["C3"] == HOLDS


@pytest.mark.parametrize(
    ("name", "where", "field", "claim", "expected"),
    [
        ("criticality", ("digits", "P-T"), "final_test_loss", "C7", "digits.P-T.ok"),
        ("trajectory", ("digits", "points", 1), "early", "C8", "digits.ok.points.1"),
    ],
)
def test_a_document_missing_a_field_names_file_and_field(
    tmp_path: Path, name: str, where: tuple, field: str, claim: str, expected: str
) -> None:
    root = make_study(tmp_path / "s")
    path = root / "analyses" / f"{name}.json"
    doc = json.loads(path.read_text())
    inner = doc["targets"]
    for key in where:
        inner = inner[key]
    del inner[field]
    _write(path, doc)
    unit = registry.get(name)
    with pytest.raises(ResultMismatch) as error:
        load_result(unit.Result, path, unit.version)
    missing = f"targets.{expected}.{field}"
    assert str(path) in str(error.value)
    assert missing in str(error.value)
    # The report still builds: the section says why, the claim is not measured.
    assert missing in build_report(root, formats=("png",)).read_text()
    found = {f.id: f for f in evaluate_findings(load_study(root))}[claim]
    assert found.paper == UNMEASURED


def test_spearman_and_depth_order() -> None:
    assert spearman([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert spearman([3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([1.0, 1.0, 1.0]) is None
    assert spearman([1.0, 2.0]) is None
    assert spearman([1.0, 2.0, float("inf")]) == pytest.approx(1.0)
    names = ["fc", "layer10.0", "layer2.1", "bias1", "layer2.0", "conv1", "scale"]
    assert depth_order(names) == ["conv1", "layer2.0", "layer2.1", "layer10.0", "fc"]
    assert depth_order(["b", "a", "c"], reference=["c", "b"]) == ["c", "b", "a"]


def test_basins_section_shows_three_barriers_per_pair(full: tuple[Path, Path]) -> None:
    root, index = full
    text = index.read_text()
    section = text[text.index('<section id="basins">') : text.index("</main>")]
    assert "Basins modulo permutation and non-linear paths" in section
    # RI-T/RI-T: linear 0.4, aligned 0.15, curve 0.005; P-T/P-T has no curve.
    assert re.search(
        r"<td>RI-T/RI-T</td><td>RIT-3, RIT-4</td><td[^>]*>0.4</td>"
        r"<td[^>]*>0.15</td><td[^>]*>0.005</td>",
        section,
    )
    assert re.search(
        r"<td>P-T/P-T</td><td>PT-1, PT-2</td><td[^>]*>0.002</td>"
        r"<td[^>]*>0.001</td><td[^>]*>-</td>",
        section,
    )
    assert "40 → 31" in section
    assert "&lt;gone&gt;" in section
    images = _parse(index).images
    assert any("basins-barriers-digits" in s for s in images)
    assert any("basins-paths-digits" in s for s in images)
    # The other target has neither analysis: its sub-section says so.
    assert section.count("<strong>not run</strong>") == 1
    findings = {f.id: f for f in evaluate_findings(load_study(root))}
    assert "RI-T/RI-T 0.4 → 0.15 aligned; P-T/RI-T 0.475 → 0.275" in findings["C9"].measured
    assert "curve barrier max 0.005 (linear 0.4)" in findings["C10"].measured


def test_basin_claims_fail_and_go_unmeasured_honestly(tmp_path: Path) -> None:
    root = make_study(tmp_path / "s")
    a = root / "analyses"
    aligned = json.loads((a / "alignment.json").read_text())
    rit = aligned["targets"]["digits"]["pairs"][1]
    rit["aligned"]["barrier_metric"] = 0.5  # alignment made it worse
    _write(a / "alignment.json", aligned)
    connected = json.loads((a / "connectivity.json").read_text())
    connected["targets"]["digits"]["pairs"][0]["curve"]["barrier_metric"] = 0.2
    _write(a / "connectivity.json", connected)
    verdicts = {f.id: f.paper for f in evaluate_findings(load_study(root))}
    assert verdicts["C9"] == verdicts["C10"] == FAILS
    # Within the noise of 1000 test examples: neither shrinks nor flat, inconclusive.
    rit["aligned"]["barrier_metric"] = 0.39
    _write(a / "alignment.json", aligned)
    connected["targets"]["digits"]["pairs"][0]["curve"]["barrier_metric"] = 0.02
    _write(a / "connectivity.json", connected)
    verdicts = {f.id: f.paper for f in evaluate_findings(load_study(root))}
    assert verdicts["C9"] == verdicts["C10"] == INCONCLUSIVE
    rit["linear"]["barrier_metric"] = BARRIER_TOLERANCE / 2  # no barrier to shrink
    _write(a / "alignment.json", aligned)
    c9 = next(f for f in evaluate_findings(load_study(root)) if f.id == "C9")
    assert c9.paper == UNMEASURED and "no linear barrier to shrink" in c9.measured


def test_an_unchanged_study_is_not_redrawn(partial: tuple[Path, Path], tmp_path: Path) -> None:
    """``transferscope run`` on a finished study keeps its report; any change to what the report
    reads, or other figure formats, make it stale."""
    import shutil

    from transferscope.report.html import report_is_current

    root = tmp_path / "study"
    shutil.copytree(partial[0], root)
    assert report_is_current(root, ("png",))
    assert not report_is_current(root, ("png", "pdf"))
    index = root / "report" / "index.html"
    before = index.stat().st_mtime_ns
    assert build_report(root, formats=("png",), force=False) == index
    assert index.stat().st_mtime_ns == before
    with (root / "study.yaml").open("a") as f:
        f.write("# edited\n")
    assert not report_is_current(root, ("png",))
    (root / "report" / "index.html").unlink()
    assert not report_is_current(root, ("png",))
