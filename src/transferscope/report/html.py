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

from transferscope import atomic, paths, registry
from transferscope.errors import TransferscopeError
from transferscope.report.findings import ACROSS_TARGETS, Finding, TargetResult, evaluate_findings
from transferscope.unitkit import figures as F
from transferscope.unitkit import rules
from transferscope.unitkit.figure_saver import FigureSaver
from transferscope.unitkit.page import Page, Raw, esc, not_run, table
from transferscope.unitkit.rules import FAILS, HOLDS, INCONCLUSIVE, NO_CONTROL, UNMEASURED, fmt
from transferscope.unitkit.study_data import StudyData, load_study

FIGURES_DIR = paths.FIGURES

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  margin: 0; color: #1b1b1b; background: #fff; line-height: 1.45; }
header { background: #f4f6f8; border-bottom: 1px solid #dde2e6; padding: .7rem 2rem; }
header h1 { margin: 0 0 .2rem 0; font-size: 1.35rem; }
header p { margin: .2rem 0; }
nav a { margin-right: .7rem; color: #0060a0; text-decoration: none; font-size: .82rem; }
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
.nocontrol { color: #888; }
#verdict-grid { font-size: .8rem; margin-top: .4rem; }
#verdict-grid th, #verdict-grid td { padding: .12rem .35rem; text-align: center; }
#verdict-grid th.claim { text-align: left; font-weight: normal; background: #fff; }
section#findings h2 { margin-top: 1rem; }
#verdict-grid th.sub { font-weight: normal; font-size: .72rem; color: #444; }
#verdict-grid td.across { color: #888; font-style: italic; }
.decide { font-size: .82rem; color: #6b5300; }
.meaning { font-size: .85rem; color: #8a2a08; margin: .3rem 0 0 0; }
details summary { cursor: pointer; color: #0060a0; }
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
            if r.summary and rules.finite(r.summary.get("seconds"))
        )
        devices = sorted(
            {str(r.summary["device"]) for r in d.runs if r.summary and r.summary.get("device")}
        )
        recorded: dict[str, set[str]] = {}
        for r in d.runs:
            s = r.summary or {}
            nested = s.get("versions")
            versions: dict[str, Any] = nested if isinstance(nested, dict) else s
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
            shown = esc(f"{fmt(metric, 4)} {name}".strip()) if rules.finite(metric) else "-"
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
                    f"{float(s['seconds']):.1f}" if rules.finite(s.get("seconds")) else "-",
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
        return verdict_grid_html(findings, self.data.targets) + findings_table_html(
            findings, self.data.negative_control
        )


VERDICT_CLASS: dict[str, str] = {HOLDS: "holds", FAILS: "fails", INCONCLUSIVE: "inconclusive"}
# One word per verdict in the grid (the findings table below spells them out).
GRID_WORD: dict[str, str] = {
    HOLDS: "holds",
    FAILS: "fails",
    INCONCLUSIVE: "inconclusive",
    UNMEASURED: "n/m",
}


def _word(verdict: str | None) -> str:
    """A verdict as one coloured word of the grid ('—' for a claim without a control)."""
    if verdict is None:
        return f'<span class="nocontrol">{esc(NO_CONTROL)}</span>'
    cls = VERDICT_CLASS.get(verdict, "unmeasured")
    return (
        f'<span class="{cls}" title="{esc(verdict)}">{esc(GRID_WORD.get(verdict, verdict))}</span>'
    )


def _target_verdicts(f: Finding, target: str) -> tuple[str | None, str | None]:
    """(paper, controlled) verdicts of ``f`` on ``target`` (None: no such cell)."""
    for t in f.per_target:
        if t.target == target:
            controlled = None
            if f.controlled_rule is not None:
                controlled = t.controlled.verdict if t.controlled else UNMEASURED
            return t.verdict, controlled
    return None, None


def verdict_grid_html(findings: list[Finding], targets: Sequence[str]) -> str:
    """The verdict grid: a row per claim, a column pair (paper, controlled) per target and
    overall, each cell one coloured word. A claim judged across targets fills the overall pair."""
    head1 = '<th rowspan="2">claim</th>' + "".join(
        f'<th colspan="2">{esc(t)}</th>' for t in [*targets, "overall"]
    )
    head2 = '<th class="sub">paper</th><th class="sub">controlled</th>' * (len(targets) + 1)
    rows = []
    for f in findings:
        cells = []
        across = [t.target for t in f.per_target] == [ACROSS_TARGETS]
        for target in targets:
            if across:
                cells.append('<td class="across" colspan="2">across targets</td>')
                continue
            paper, controlled = _target_verdicts(f, target)
            if paper is None:
                cells.append('<td colspan="2">-</td>')
                continue
            cells.append(
                f"<td>{_word(paper)}</td><td>{_word(controlled if f.controlled_rule else None)}</td>"
            )
        cells.append(f"<td>{_word(f.paper)}</td><td>{_word(f.controlled)}</td>")
        title = f'<a href="#claim-{esc(f.id)}">{esc(f.id)}</a> {esc(f.short or f.claim)}'
        rows.append(
            f'<tr><th class="claim" title="{esc(f.claim)}">{title}</th>{"".join(cells)}</tr>'
        )
    return (
        '<table id="verdict-grid"><thead>'
        f"<tr>{head1}</tr><tr>{head2}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _cell_html(t: TargetResult) -> str:
    """One verdict of one target in the findings table: the word, the numbers, the statistic,
    what would decide it, and which run voided it."""
    cls = VERDICT_CLASS.get(t.verdict, "unmeasured")
    out = f'<span class="{cls}">{esc(t.verdict)}</span>: {esc(t.measured)}'
    if t.statistic:
        out += f'<br><span class="small">{esc(t.statistic)}</span>'
    if t.decide and t.verdict in (INCONCLUSIVE, UNMEASURED):
        out += f'<br><span class="decide">would decide it: {esc(t.decide)}</span>'
    return out


def findings_table_html(findings: list[Finding], control: bool = False) -> str:
    """The findings table: claim, both verdicts, the numbers and statistic per target, the
    rules, and for a claim whose paper comparison holds where the controlled one does not, the
    sentence saying what that means for the study."""
    rows = []
    for f in findings:
        parts = []
        for t in f.per_target:
            part = f"<strong>{esc(t.target)}</strong> paper {_cell_html(t)}"
            if f.controlled_rule is not None:
                c = t.controlled or TargetResult(t.target, UNMEASURED, "no controlled result")
                part += f"<br>controlled {_cell_html(c)}"
            parts.append(part)
        measured = "<br><br>".join(parts) or "no target"
        rule = f"paper: {esc(f.rule)}"
        if f.controlled_rule is not None:
            rule += f"<br>controlled: {esc(f.controlled_rule)}"
        controlled = f.controlled
        rows.append(
            (
                _Raw(f'<a id="claim-{esc(f.id)}" href="#{esc(f.section)}">{esc(f.id)}</a>'),
                _Raw(
                    esc(f.claim)
                    + (f'<p class="meaning">{esc(f.explanation)}</p>' if f.explanation else "")
                ),
                _Raw(
                    f'<span class="{VERDICT_CLASS.get(f.paper, "unmeasured")}">{esc(f.paper)}</span>'
                ),
                _Raw(
                    f'<span class="{VERDICT_CLASS.get(controlled, "unmeasured")}">'
                    f"{esc(controlled)}</span>"
                    if controlled is not None
                    else esc(NO_CONTROL)
                ),
                _Raw(f"<details><summary>numbers and statistics</summary>{measured}</details>"),
                _Raw(f"<details><summary>rules</summary>{rule}</details>"),
            )
        )
    header = (
        "claim",
        "statement (Neyshabur et al. 2020)",
        "paper",
        "controlled",
        "per target",
        "rule",
    )
    banner = ""
    if control:
        held = [
            f.id
            for f in findings
            if f.controlled == HOLDS or (f.controlled is None and f.paper == HOLDS)
        ]
        paper_held = [f.id for f in findings if f.controlled is not None and f.paper == HOLDS]
        banner = (
            '<p class="control"><strong>Negative control.</strong> P here is an untrained network: '
            "nothing was pre-trained, so no controlled verdict (is pre-training the cause?) should "
            "hold. "
            + (
                f"<strong>{esc(', '.join(held))} hold(s) anyway: a rule that holds on the control "
                "measures something other than pre-training.</strong>"
                if held
                else "None holds, as it should."
            )
            + (
                f" The paper's comparison holds for {esc(', '.join(paper_held))}: on this study "
                "it cannot tell pre-training from a shared start and recipe."
                if paper_held
                else ""
            )
            + "</p>"
        )
    explained = [f.explanation for f in findings if f.explanation]
    meaning = (
        "<p><strong>Where the paper's comparison holds and the controlled one does not:</strong></p><ul>"
        + "".join(f"<li>{esc(text)}</li>" for text in explained)
        + "</ul>"
        if explained
        else ""
    )
    return (
        banner
        + meaning
        + "<p>Each claim has two verdicts where a control changes the question. <em>Paper</em>: "
        "the comparison as Neyshabur et al. (2020) made it (C1: P-T against RI-T; C3-C5: P-T "
        "pairs against RI-T pairs from independent inits; C6: P-T pairs flat, RI-T pairs with "
        "a barrier). <em>Controlled</em> (beyond the paper): is pre-training the cause? The same "
        "measure against fine-tunes of P's untrained init with P-T's recipe (P@0-T) and, for "
        "C3-C5, the RI-T pair from one shared init; it needs a P that learned. A claim "
        "<em>holds</em> when its effect is there beyond the noise on every target where it "
        "could be measured, <em>does not hold</em> when the opposite effect is there beyond "
        "the noise on some target, is <em>inconclusive</em> when the difference is within the "
        "noise (seeds, test-set sampling) or a run the measure needs to have learned sits at "
        "chance (the cell names it), and is <em>not measured</em> (n/m) when no target had "
        "the results it needs. An inconclusive cell says what would decide it. Metrics are "
        "fractions (accuracy or mean AUC).</p>" + _table(header, rows, table_id="findings-table")
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
    held = [f.id for f in findings if f.verdict == HOLDS]
    verdicts = f"{len(held)} of {len(findings)} claims hold" + (
        f" ({', '.join(held)})" if held else ""
    )
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
        cfg = yaml.safe_load((Path(study_dir) / paths.STUDY_CONFIG).read_text())
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
