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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from transferscope import atomic
from transferscope.analyses import registry
from transferscope.errors import TransferscopeError
from transferscope.report import figures as F
from transferscope.report.figure_saver import FigureSaver
from transferscope.report.findings import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Finding,
    StudyData,
    evaluate_findings,
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
    """The page, with the sections that are not an analysis's: the overview and the findings."""

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


DEFAULT_FORMATS = ("png", "pdf")
"""Figure formats when a study does not say: PNG for the page, PDF for papers."""


def render_html(
    data: StudyData,
    out: Path,
    formats: Sequence[str] = DEFAULT_FORMATS,
    saver: FigureSaver | None = None,
) -> str:
    """The page's HTML for ``data``; figures are written under ``out/figures`` (by ``saver``'s
    workers when given: they are complete once its ``with`` block is left)."""
    page = _Page(data, out, formats, saver)
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


def figure_formats(study_dir: Path) -> tuple[str, ...]:
    """The figure formats the study asks for (``report.figures`` in its study.yaml, written
    validated by ``transferscope run``); PNG and PDF when it says nothing."""
    try:
        cfg = yaml.safe_load((Path(study_dir) / layout.STUDY_CONFIG).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return DEFAULT_FORMATS  # load_study names the damaged file
    return _formats_of(cfg)


def _report_option(cfg: Any, key: str) -> Any:
    """``report.<key>`` of a parsed study config (None when it does not say)."""
    report = cfg.get("report") if isinstance(cfg, dict) else None
    return report.get(key) if isinstance(report, dict) else None


def _workers_of(cfg: Any) -> int | None:
    """``report.workers`` of a parsed study config, or None (the default)."""
    workers = _report_option(cfg, "workers")
    return workers if isinstance(workers, int) and workers >= 1 else None


def _formats_of(cfg: Any) -> tuple[str, ...]:
    """``report.figures`` of a parsed study config, or the default."""
    figures = _report_option(cfg, "figures")
    return (
        tuple(str(f) for f in figures) if isinstance(figures, list) and figures else DEFAULT_FORMATS
    )


def report_is_current(study_dir: Path, formats: Sequence[str] | None = None) -> bool:
    """Whether STUDY/report was built from exactly the study's present files (and ``formats``,
    by default the study's own :func:`figure_formats`)."""
    formats = figure_formats(study_dir) if formats is None else formats
    out = Path(study_dir) / "report"
    stamp = out / INPUTS_FILE
    if not (out / "index.html").is_file() or not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return recorded == json.loads(json.dumps(_fingerprint(Path(study_dir), formats)))


def build_report(study_dir: Path, formats: Sequence[str] | None = None, force: bool = True) -> Path:
    """Write STUDY/report/index.html and its figures from the study directory; return its path.

    Reads only the study directory: nothing is trained or re-analysed. Sections whose analysis is
    missing or skipped say so.

    Args:
        study_dir: the study directory.
        formats: file formats of every figure; PNG (shown in the page) is always written, the
            others (PDF or SVG, for papers) are linked from each caption. Default: the study's
            ``report.figures`` (PNG and PDF unless its config says otherwise).

        force: build even when :func:`report_is_current` (``transferscope run`` passes False,
            so that rerunning a finished study does not redraw an unchanged report).

    Raises:
        TransferscopeError: when ``study_dir`` is not a study directory.
    """
    study_dir = Path(study_dir)
    data = load_study(study_dir)
    formats = _formats_of(data.config) if formats is None else tuple(formats)
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
    with F.style(), FigureSaver(_workers_of(data.config)) as saver:
        text = render_html(data, out, formats, saver)
    path = out / "index.html"
    atomic.write_text(path, text)
    # Last: a build killed before this line is not taken for a current one.
    atomic.write_json(out / INPUTS_FILE, inputs)
    return path


__all__ = ["FIGURES_DIR", "build_report", "render_html"]
