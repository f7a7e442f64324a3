"""The HTML report: one self-contained page, STUDY/report/index.html, figures beside it.

Self-contained and offline: inline CSS, no script, no font or stylesheet from elsewhere; every
image is a file under ``report/figures/`` referenced by a relative path. Every string that comes
from the config or the data (target labels, run ids, pair names, reasons) goes through
:func:`html.escape`, so a label such as ``<script>`` shows as text.

Sections follow the paper: overview, feature reuse (§1), mistakes, feature similarity, parameter
distance (§2), barriers (§3), module criticality (§4), pre-training trajectory (§5), then, beyond
the paper, basins modulo permutation and non-linear paths, and the findings.
A section whose analysis is missing or skipped says "not run" and why.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transferscope import atomic
from transferscope.analyses import registry
from transferscope.errors import TransferscopeError
from transferscope.report import figures as F
from transferscope.report.findings import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Finding,
    StudyData,
    evaluate_findings,
    final_pt_metric,
    finite,
    fmt,
    load_study,
)
from transferscope.report.page import Page, Raw, esc, not_run, table
from transferscope.study import layout

FIGURES_DIR = layout.FIGURES

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  margin: 0; color: #1b1b1b; background: #fff; line-height: 1.45; }
header { background: #f4f6f8; border-bottom: 1px solid #dde2e6; padding: 1.2rem 2rem; }
header h1 { margin: 0 0 .3rem 0; font-size: 1.5rem; }
nav a { margin-right: .9rem; color: #0060a0; text-decoration: none; font-size: .92rem; }
main { padding: 0 2rem 3rem 2rem; max-width: 1200px; }
h2 { border-bottom: 2px solid #0072B2; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { margin-top: 1.4rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem 0; font-size: .86rem; }
th, td { border: 1px solid #d5dade; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f0f3f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; border: 1px solid #e2e2e2; padding: .8rem; overflow-x: auto;
  font-size: .8rem; max-height: 30rem; }
figure { display: inline-block; margin: .5rem 1rem 1rem 0; vertical-align: top; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .8rem; color: #555; }
.notrun { background: #fff6e5; border-left: 4px solid #e69f00; padding: .5rem .8rem; }
.holds, .fails, .inconclusive, .unmeasured { white-space: nowrap; padding: 0 .2rem; }
.holds { background: #e3f4ea; color: #0b5d2a; font-weight: 600; }
.fails { background: #fde8e1; color: #8a2a08; font-weight: 600; }
.inconclusive { background: #fff4cc; color: #6b5300; font-weight: 600; }
.unmeasured { background: #eeeeee; color: #555; font-weight: 600; }
.control { background: #fde8e1; border-left: 4px solid #b00020; padding: .6rem .9rem; }
.method { font-size: .85rem; color: #333; background: #f7f9fb; border-left: 3px solid #0072B2;
  padding: .4rem .8rem; }
.state-done { color: #0b5d2a; } .state-failed { color: #b00020; font-weight: 600; }
.state-pending, .state-partial { color: #8a6d00; }
.state-damaged { color: #b00020; font-weight: 600; } .chance { color: #b00020; }
.key { display: inline-block; width: .9em; height: .9em; vertical-align: middle;
  margin: 0 .25em 0 .6em; }
.small { font-size: .82rem; color: #555; }
"""


_table = table
_Raw = Raw
_not_run = not_run


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class _Page(Page):
    """The page, with the sections of the units whose results are not typed yet."""

    def legacy_per_target(self, analysis: str, render: Callable[[str, dict[str, Any]], str]) -> str:
        """The section body: 'not run', or one sub-section per target."""
        reason = self.data.not_run_reason(analysis)
        if reason is not None:
            return _not_run(reason)
        doc = self.data.analysis(analysis) or {}
        parts = []
        targets = list(doc.get("targets", {}))
        for target in [*self.data.targets, *[t for t in targets if t not in self.data.targets]]:
            entry = doc.get("targets", {}).get(target)
            parts.append(f"<h3>Target {esc(target)}</h3>")
            if not isinstance(entry, dict):
                parts.append(_not_run(f"no entry for target {target} in {analysis}.json"))
            elif entry.get("status", "ok") != "ok":
                parts.append(_not_run(str(entry.get("reason", "skipped"))))
            else:
                parts.append(render(target, entry))
        missing = doc.get("runs_missing") or []
        if missing:
            parts.append(
                f'<p class="small">Runs this analysis needed that had not finished: '
                f"{esc(', '.join(missing))}</p>"
            )
        return "".join(parts)

    # -------------------------------------------------------------- sections
    def _bad_images(self) -> str:
        """The unreadable images runs left out (``--skip-bad-images``), once per data source."""
        seen: dict[tuple[str, str, str], str] = {}
        runs: dict[str, int] = {}
        for r in self.data.runs:
            for item in r.bad_images:
                key = (r.target, str(item.get("split", "")), str(item.get("path", "")))
                seen.setdefault(key, str(item.get("error", "")))
            if r.bad_images:
                runs[r.target] = runs.get(r.target, 0) + 1
        if not seen:
            return ""
        rows = [(t, split, path, err) for (t, split, path), err in sorted(seen.items())]
        counts = ", ".join(f"{t}: {sum(k[0] == t for k in seen)}" for t in sorted(runs))
        return (
            "<h3>Unreadable images left out</h3>"
            f"<p>{len(seen)} image files could not be read and were left out of every run on "
            f"their data ({esc(counts)}); each run lists them in its bad_images.json.</p>"
            + _table(("data", "split", "file", "error"), rows)
        )

    def overview(self) -> str:
        d = self.data
        counts: dict[str, int] = {}
        for r in d.runs:
            counts[r.state] = counts.get(r.state, 0) + 1
        seconds = sum(
            float(r.summary.get("seconds", 0.0))
            for r in d.runs
            if r.summary and finite(r.summary.get("seconds"))
        )
        devices = sorted(
            {str(r.summary["device"]) for r in d.runs if r.summary and r.summary.get("device")}
        )
        recorded: dict[str, set[str]] = {}
        for r in d.runs:
            s = r.summary or {}
            versions = s.get("versions") if isinstance(s.get("versions"), dict) else s
            for key in ("python", "torch", "transferscope"):
                if versions.get(key):
                    recorded.setdefault(key, set()).add(str(versions[key]))
        env_rows = []
        now = {
            "python": platform.python_version(),
            "torch": _version("torch"),
            "transferscope": _version("transferscope"),
        }
        for key in ("python", "torch", "transferscope"):
            runs_v = ", ".join(sorted(recorded.get(key, set()))) or "not recorded"
            env_rows.append((key, runs_v, now[key]))
        env_rows.append(("device", ", ".join(devices) or "no finished run", "-"))
        state_text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        runs_rows = []
        for r in d.runs:
            s = r.summary or {}
            metric = s.get("final_metric")
            name = s.get("metric_name") or ""
            state = _Raw(f'<span class="state-{esc(r.state)}">{esc(r.state)}</span>')
            if r.error:
                state = _Raw(state.html + f'<br><span class="small">{esc(r.error[:300])}</span>')
            shown = esc(f"{fmt(metric, 4)} {name}".strip()) if finite(metric) else "-"
            if r.chance_level and r.chance:
                band = f"{fmt(r.chance.get('chance'))} ± {fmt(r.chance.get('band'), 2)}"
                shown += f'<br><span class="chance small">at chance ({esc(band)})</span>'
            runs_rows.append(
                (
                    r.id,
                    r.kind,
                    r.target,
                    "-" if r.seed is None else r.seed,
                    r.shuffle or "-",
                    "-" if r.checkpoint is None else fmt(r.checkpoint),
                    _Raw(shown),
                    f"{float(s['seconds']):.1f}" if finite(s.get("seconds")) else "-",
                    state,
                )
            )
        analyses = []
        for name in d.analyses:
            reason = d.not_run_reason(name)
            doc = d.analyses.get(name)
            because = doc.computed_because if reason is None and doc is not None else None
            analyses.append(
                (
                    name,
                    "ok" if reason is None else f"not run: {reason}",
                    str(because) if because else "-",
                )
            )
        at_chance = [r for r in d.runs if r.chance_level]
        chance_note = (
            f"<p><strong>{len(at_chance)} runs ended within noise of chance</strong> (final metric "
            f"below chance plus {fmt((at_chance[0].chance or {}).get('z'))} standard errors at "
            "their test set's size): they learned nothing measurable, and a comparison with them "
            "says little.</p>"
            if at_chance
            else ""
        )
        return (
            f"<p>{len(d.runs)} planned runs: {esc(state_text or 'none')}. Total compute time of "
            f"finished runs: <strong>{seconds:.1f} s</strong> ({seconds / 3600:.2f} h).</p>"
            "<h3>Environment</h3>"
            + _table(("", "recorded by the runs", "this report was built with"), env_rows)
            + "<h3>Runs</h3>"
            + _table(
                (
                    "run",
                    "kind",
                    "target",
                    "seed",
                    "shuffle",
                    "k",
                    "final metric",
                    "wall time (s)",
                    "state",
                ),
                runs_rows,
                numeric=(3, 5, 6, 7),
            )
            + chance_note
            + self._bad_images()
            + "<h3>Analyses</h3>"
            + _table(("analysis", "status", "computed because"), analyses)
            + "<h3>Resolved configuration (study.yaml)</h3>"
            + f"<pre>{esc(d.config_text or '(study.yaml missing)')}</pre>"
        )

    def barriers(self) -> str:
        def render(target: str, entry: dict[str, Any]) -> str:
            rows = [
                (
                    p.get("pair"),
                    ", ".join(p.get("runs") or []),
                    "-" if p.get("k") is None else fmt(p.get("k")),
                    fmt(p.get("barrier_metric")),
                    fmt(p.get("barrier_loss")),
                    "yes" if p.get("batchnorm_recalibrated") else "no",
                )
                if p.get("status", "ok") == "ok"
                else (
                    p.get("pair"),
                    ", ".join(p.get("runs") or []),
                    "-" if p.get("k") is None else fmt(p.get("k")),
                    _Raw(f"<em>skipped: {esc(p.get('reason', ''))}</em>"),
                    "-",
                    "-",
                )
                for p in entry.get("pairs") or []
            ]
            return _table(
                (
                    "pair",
                    "runs",
                    "k",
                    "barrier (metric)",
                    "barrier (loss)",
                    "BatchNorm recalibrated",
                ),
                rows,
                numeric=(2, 3, 4),
            ) + self.figure(
                F.interpolation_curves(entry, f"Linear interpolation, target {target}"),
                f"interpolation-{target}",
                f"Test metric and loss along the linear path between the models of every pair on {target}.",
            )

        return (
            '<p class="small">Barrier: max over λ of the linear interpolation of the end points\' '
            "metric minus the metric at θ(λ) (mirrored for the loss).</p>"
            + self.legacy_per_target("interpolation", render)
        )

    def criticality(self) -> str:
        def render(target: str, entry: dict[str, Any]) -> str:
            kinds = [k for k, _ in F.computed_kinds(entry)]
            skipped = "".join(
                f'<p class="small">{esc(k)} skipped: {esc(entry[k].get("reason", ""))}</p>'
                for k in ("P-T", "RI-T")
                if isinstance(entry.get(k), dict) and k not in kinds
            )
            if not kinds:
                return skipped or _not_run("no P-T or RI-T result")
            modules: list[str] = []
            for k in kinds:
                modules += [m for m in entry[k].get("modules") or [] if m not in modules]
            rows = []
            for m in modules:
                row: list[Any] = [m]
                for k in kinds:
                    mu = (entry[k].get("mu") or {}).get(m, "-")
                    bound = (entry[k].get("mu_bound") or {}).get(m)
                    row.append(f"> {fmt(bound)}" if mu is None else fmt(mu))
                for k in kinds:
                    row.append(fmt((entry[k].get("rewind") or {}).get(m)))
                rows.append(row)
            header = ["module", *[f"μ {k}" for k in kinds], *[f"rewound metric {k}" for k in kinds]]

            def network(e: dict[str, Any]) -> str:
                if finite(e.get("network_criticality")):
                    return fmt(e["network_criticality"])
                bound = e.get("network_criticality_bound")
                return f"> {fmt(bound)}" if finite(bound) else "-"

            summary = _table(
                ("kind", "run", "network criticality", "final loss", "ε", "final metric"),
                [
                    (
                        k,
                        entry[k].get("run", "-"),
                        network(entry[k]),
                        fmt(entry[k].get("final_loss")),
                        fmt(entry[k].get("epsilon")),
                        fmt(entry[k].get("final_metric")),
                    )
                    for k in kinds
                ],
                numeric=(2, 3, 4, 5),
            )
            for k in kinds:
                if entry[k].get("final_meets_epsilon") is False:
                    summary += (
                        f'<p class="notrun">{esc(k)}: the final model\'s training loss '
                        f"{esc(fmt(entry[k].get('final_loss')))} is above ε = "
                        f"{esc(fmt(entry[k].get('epsilon')))}: no module can be feasible.</p>"
                    )
            sigmas = next((entry[k].get("sigmas") for k in kinds if entry[k].get("sigmas")), None)
            if sigmas:
                summary += (
                    f'<p class="small">σ grid: {len(sigmas)} geometric levels from '
                    f"{esc(fmt(sigmas[0]))} to {esc(fmt(sigmas[-1]))}. A module with no "
                    "feasible (α, σ) shows its lower bound ‖θ<sup>F</sup> − θ<sup>0</sup>‖² / "
                    "min σ², and the network criticality is then a lower bound too.</p>"
                )
            out = skipped + summary + _table(header, rows, numeric=tuple(range(1, len(header))))
            out += self.figure(
                F.criticality_bars(entry, f"Module criticality, target {target}"),
                f"criticality-{target}",
                f"Module criticality μ per module, P-T and RI-T, on {target}.",
            )
            out += self.figure(
                F.rewind_bars(entry, f"Rewinding one module, target {target}"),
                f"rewind-{target}",
                f"Test metric after rewinding one module to its initial value on {target}.",
            )
            out += self.figure(
                F.criticality_heatmaps(
                    entry, f"Performance over distance and noise, target {target}"
                ),
                f"heatmaps-{target}",
                f"Test metric per module over α (init → final) and noise σ on {target}.",
            )
            return out

        return self.legacy_per_target("criticality", render)

    def trajectory(self) -> str:
        def render(target: str, entry: dict[str, Any]) -> str:
            points = sorted(
                (p for p in entry.get("points") or [] if finite(p.get("k"))), key=lambda p: p["k"]
            )

            def versus(p: dict[str, Any]) -> str:
                t = p.get("vs_final") or {}
                if t.get("status") != "ok":
                    return "-"
                return f"{fmt(t.get('estimate'))} [{fmt(t.get('low'))}, {fmt(t.get('high'))}]"

            rows = [
                (
                    fmt(p.get("k")) + (" (early)" if p.get("early") else ""),
                    ", ".join(p.get("runs") or []),
                    fmt(p.get("final_metric"), 4),
                    versus(p),
                    "not reached"
                    if p.get("reached") and not any(p["reached"])
                    else fmt(p.get("epochs_to_threshold")),
                    fmt(p.get("barrier_metric")),
                    fmt(p.get("barrier_loss")),
                    "P-T (reference)" if p.get("reference") == "P-T" else "P@k-T",
                )
                for p in points
            ]
            final_pt = final_pt_metric(entry)
            if final_pt is None:
                curves = self.data.target_entry("curves", target) or {}
                final_pt = (curves.get("P-T") or {}).get("final_metric_mean")
            return (
                f"<p>Final pre-training checkpoint: k = {esc(fmt(entry.get('final_k')))}.</p>"
                + _table(
                    (
                        "k",
                        "runs",
                        "final metric",
                        "− P-T, same seeds [95% interval]",
                        f"epochs to {fmt(entry.get('threshold'))}",
                        "barrier to P-T (metric)",
                        "barrier to P-T (loss)",
                        "runs are",
                    ),
                    rows,
                    numeric=(2, 4, 5, 6),
                )
                + self.figure(
                    F.trajectory_plot(entry, f"Pre-training trajectory, target {target}", final_pt),
                    f"trajectory-{target}",
                    f"Final P@k-T metric and barrier to P-T against checkpoint k on {target}.",
                )
            )

        return self.legacy_per_target("trajectory", render)

    def basins(self) -> str:
        """Barriers on the straight line, after permutation alignment and along a trained curve."""
        reasons = {n: self.data.not_run_reason(n) for n in ("alignment", "connectivity")}
        intro = (
            '<p class="small">Beyond the paper. <em>Aligned</em>: the straight line after '
            "permuting B's hidden units to match A (weight matching, Ainsworth et al. 2022, "
            '"Git Re-Basin"); a barrier that vanishes there was a permutation of one basin. '
            "<em>Curve</em>: a quadratic Bezier curve between the two models whose middle control "
            "point was trained (Garipov et al. 2018). All three are measured the same way as the "
            "straight line above (BatchNorm statistics recomputed at each point).</p>"
        )
        notes = "".join(
            _not_run(f"{name}: {reason}") for name, reason in reasons.items() if reason is not None
        )
        if all(r is not None for r in reasons.values()):
            return intro + notes
        docs = {n: self.data.analysis(n) or {} for n in reasons}
        targets: list[str] = list(self.data.targets)
        for doc in docs.values():
            targets += [t for t in doc.get("targets", {}) if t not in targets]
        parts = [intro, notes]
        for target in targets:
            parts.append(f"<h3>Target {esc(target)}</h3>")
            rows, skipped, metric = self._basin_rows(docs, target)
            if not rows:
                parts.append(_not_run(skipped[0] if skipped else f"no entry for target {target}"))
                continue
            table = [
                (
                    r["pair"],
                    ", ".join(r["runs"]),
                    *[
                        fmt((r.get(k) or {}).get("barrier_metric"))
                        for k in ("linear", "aligned", "curve")
                    ],
                    *[
                        fmt((r.get(k) or {}).get("barrier_loss"))
                        for k in ("linear", "aligned", "curve")
                    ],
                    f"{fmt(r['alignment'].get('distance_before'))} → "
                    f"{fmt(r['alignment'].get('distance_after'))}"
                    if r.get("alignment")
                    else "-",
                    fmt(r.get("seconds")),
                )
                for r in rows
            ]
            parts.append(
                _table(
                    (
                        "pair",
                        "runs",
                        "barrier linear (metric)",
                        "aligned (metric)",
                        "curve (metric)",
                        "barrier linear (loss)",
                        "aligned (loss)",
                        "curve (loss)",
                        "distance to A before → after alignment",
                        "curve time (s)",
                    ),
                    table,
                    numeric=tuple(range(2, 10)),
                )
            )
            parts += [f'<p class="small">{esc(reason)}</p>' for reason in skipped]
            parts.append(
                self.figure(
                    F.basin_barriers(rows, f"Barriers per path, target {target}"),
                    f"basins-barriers-{target}",
                    f"Barrier (metric) of each pair on the straight line, after alignment and "
                    f"along the trained curve, on {target}.",
                )
            )
            parts.append(
                self.figure(
                    F.basin_paths(rows, metric, f"Paths between two models, target {target}"),
                    f"basins-paths-{target}",
                    f"Test metric along the three paths for each pair on {target}.",
                )
            )
        return "".join(parts)

    def _basin_rows(
        self, docs: dict[str, dict[str, Any]], target: str
    ) -> tuple[list[dict[str, Any]], list[str], str | None]:
        """One row per pair (alignment and connectivity joined on pair and runs), skip notes."""
        rows: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
        skipped: list[str] = []
        metric = None
        for name, doc in docs.items():
            entry = (doc.get("targets") or {}).get(target)
            if not isinstance(entry, dict):
                continue
            metric = metric or entry.get("metric_name")
            for p in entry.get("pairs") or []:
                runs = tuple(str(r) for r in p.get("runs") or [])
                if p.get("status", "ok") != "ok":
                    skipped.append(
                        f"{name} {p.get('pair')} ({', '.join(runs)}) skipped: {p.get('reason', '')}"
                    )
                    continue
                row = rows.setdefault(
                    (str(p.get("pair")), runs),
                    {"pair": str(p.get("pair")), "runs": list(runs), "label": str(p.get("pair"))},
                )
                for key in ("linear", "aligned", "curve", "alignment", "seconds", "seeds"):
                    if key in p and (key != "linear" or "linear" not in row):
                        row[key] = p[key]
        # Several pairs of one kind get their seeds in the label.
        out = list(rows.values())
        for r in out:
            if sum(o["pair"] == r["pair"] for o in out) > 1 and r.get("seeds"):
                r["label"] = f"{r['pair']} (seeds {', '.join(str(x) for x in r['seeds'])})"
        return out, skipped, metric

    def findings(self, findings: list[Finding]) -> str:
        return findings_table_html(findings, self.data.negative_control)


VERDICT_CLASS = {HOLDS: "holds", FAILS: "fails", INCONCLUSIVE: "inconclusive"}


def findings_table_html(findings: list[Finding], control: bool = False) -> str:
    """The findings table: claim, verdict, the numbers and statistic per target, the rule."""
    rows = []
    for f in findings:
        cls = VERDICT_CLASS.get(f.verdict, "unmeasured")
        measured = (
            "<br>".join(
                f"<strong>{esc(t.target)}</strong> "
                f'<span class="{VERDICT_CLASS.get(t.verdict, "unmeasured")}">{esc(t.verdict)}'
                f"</span>: {esc(t.measured)}"
                + (f'<br><span class="small">{esc(t.statistic)}</span>' if t.statistic else "")
                for t in f.per_target
            )
            or "no target"
        )
        rows.append(
            (
                _Raw(f'<a href="#{esc(f.section)}">{esc(f.id)}</a>'),
                f.claim,
                _Raw(f'<span class="{cls}">{esc(f.verdict)}</span>'),
                _Raw(measured),
                f.rule,
            )
        )
    header = ("claim", "statement (Neyshabur et al. 2020)", "verdict", "per target", "rule")
    banner = ""
    if control:
        held = [f.id for f in findings if f.verdict == HOLDS]
        banner = (
            '<p class="control"><strong>Negative control.</strong> P here is an untrained network: '
            "nothing was pre-trained, so no claim about what pre-training transfers should hold. "
            + (
                f"<strong>{esc(', '.join(held))} hold(s) anyway: a rule that holds on the control "
                "measures something other than pre-training.</strong>"
                if held
                else "No claim holds: every rule failed or could not decide, as it should."
            )
            + "</p>"
        )
    return (
        banner
        + "<p>A claim <em>holds</em> when its effect is there beyond the noise on every target "
        "where it could be measured, <em>does not hold</em> when the opposite effect is there "
        "beyond the noise on some target, is <em>inconclusive</em> when the difference is "
        "within the noise (seeds, test-set sampling) or a compared run sits at chance, and is "
        "<em>not measured</em> when no target had the results it needs. Each target shows the "
        "statistic that decided. Metrics are fractions (accuracy or mean AUC).</p>"
        + _table(header, rows, table_id="findings-table")
    )


def sections() -> list[tuple[str, str]]:
    """(id, title) of every section: the findings and the overview, then each registered
    unit's section in the registry's order (units may share one)."""
    out = [("findings", "Findings"), ("overview", "Overview")]
    for unit in registry.units():
        if (unit.section.id, unit.section.title) not in out:
            out.append((unit.section.id, unit.section.title))
    return out


def render_html(data: StudyData, out: Path, formats: Sequence[str] = ("png", "pdf")) -> str:
    """The page's HTML for ``data``; figures are written under ``out/figures``."""
    page = _Page(data, out, formats)
    findings = evaluate_findings(data)
    bodies = {"overview": page.overview(), "findings": page.findings(findings)}
    for unit in registry.units():
        part = unit.render_section(page, data.result(unit.name))
        bodies[unit.section.id] = bodies.get(unit.section.id, "") + part
    order = sections()
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title in order)
    keys = "".join(
        f'<span class="key" style="background:{F.COLORS[k]}"></span>{esc(k)}'
        for k in ("P-T", "RI-T", "P", "P@k")
    )
    body = "".join(
        f'<section id="{sid}"><h2>{esc(title)}</h2>{bodies.get(sid, "")}</section>'
        for sid, title in order
    )
    verdicts = ", ".join(f"{f.id} {f.verdict}" for f in findings)
    if data.negative_control:
        verdicts = f"negative control (P untrained): {verdicts}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>transferscope report: {esc(data.name)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<header><h1>What is being transferred? Study {esc(data.name)}</h1>"
        f'<p class="small">Study directory: {esc(data.root)}. Colours: {keys}. '
        f"Findings: {esc(verdicts)}.</p><nav>{nav}</nav></header>"
        f"<main>{body}</main></body></html>\n"
    )


INPUTS_FILE = ".inputs.json"
# The lock file of the command running on the study (who holds it, since when): not an input.
LOCK = "LOCK"


def _fingerprint(study_dir: Path, formats: Sequence[str]) -> dict[str, Any]:
    """What the report is built from: every study file outside report/ and the weight folders
    (path and content hash; a rerun rewrites study.yaml and plan.json with the same bytes), the
    figure formats and this transferscope's version."""
    files = sorted(
        (str(p.relative_to(study_dir)), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in study_dir.rglob("*")
        if p.is_file()
        and not p.name.endswith(".tmp")
        and p.relative_to(study_dir).parts[0] not in ("report", LOCK)
        and "checkpoints" not in p.relative_to(study_dir).parts
    )
    return {"version": _version("transferscope"), "formats": list(formats), "files": files}


def report_is_current(study_dir: Path, formats: Sequence[str] = ("png", "pdf")) -> bool:
    """Whether STUDY/report was built from exactly the study's present files."""
    out = Path(study_dir) / "report"
    stamp = out / INPUTS_FILE
    if not (out / "index.html").is_file() or not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return recorded == json.loads(json.dumps(_fingerprint(Path(study_dir), formats)))


def build_report(
    study_dir: Path, formats: Sequence[str] = ("png", "pdf"), force: bool = True
) -> Path:
    """Write STUDY/report/index.html and its figures from the study directory; return its path.

    Reads only the study directory: nothing is trained or re-analysed. Sections whose analysis is
    missing or skipped say so.

    Args:
        study_dir: the study directory.
        formats: file formats of every figure; PNG (shown in the page) is always written, the
            others (PDF or SVG, for papers) are linked from each caption.

        force: build even when :func:`report_is_current` (``transferscope run`` passes False,
            so that rerunning a finished study does not redraw an unchanged report).

    Raises:
        TransferscopeError: when ``study_dir`` is not a study directory.
    """
    study_dir = Path(study_dir)
    data = load_study(study_dir)
    out = study_dir / "report"
    if not force and report_is_current(study_dir, formats):
        return out / "index.html"
    inputs = _fingerprint(study_dir, formats)
    figures = out / FIGURES_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
        # First: a build killed from here on leaves no stamp, so the next run rebuilds.
        (out / INPUTS_FILE).unlink(missing_ok=True)
        if figures.is_dir():
            # Figures of an older build (a target since renamed) must not linger beside the page.
            for old in [p for ext in ("png", "pdf", "svg") for p in figures.glob(f"*.{ext}")]:
                old.unlink()
    except OSError as e:
        raise TransferscopeError(
            f"cannot write the report into {out}: {e.strerror or e}; make that folder writable "
            "and rerun `transferscope report`"
        ) from None
    with F.style():
        text = render_html(data, out, formats)
    path = out / "index.html"
    atomic.write_text(path, text)
    # Last: a build killed before this line is not taken for a current one.
    atomic.write_json(out / INPUTS_FILE, inputs)
    return path


__all__ = ["FIGURES_DIR", "build_report", "render_html"]
