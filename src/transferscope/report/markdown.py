"""A markdown summary of a study: run counts, analyses, and the findings table.

Meant for a terminal, a README or a pull request comment; the HTML report has the figures.
Like the HTML report it reads only the study directory.
"""

from __future__ import annotations

from pathlib import Path

from transferscope.report.findings import (
    ACROSS_TARGETS,
    INCONCLUSIVE,
    NO_CONTROL,
    UNMEASURED,
    Finding,
    StudyData,
    evaluate_findings,
    finite,
    load_study,
)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (pipes and newlines would break the row)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _verdicts(f: Finding, target: str) -> str:
    for t in f.per_target:
        if t.target == target:
            if f.controlled_rule is None:
                return f"{t.verdict} / {NO_CONTROL}"
            return f"{t.verdict} / {t.controlled.verdict if t.controlled else UNMEASURED}"
    return "-"


def verdict_grid_markdown(findings: list[Finding], targets: list[str]) -> str:
    """The verdict grid: a row per claim, a column per target and the overall verdict, each cell
    'paper / controlled'."""
    lines = [
        "| claim | " + " | ".join(_cell(t) for t in targets) + " | overall |",
        "|---|" + "---|" * (len(targets) + 1),
    ]
    for f in findings:
        across = [t.target for t in f.per_target] == [ACROSS_TARGETS]
        cells = ["across targets" if across else _verdicts(f, t) for t in targets]
        overall = f"{f.paper} / {f.controlled if f.controlled is not None else NO_CONTROL}"
        lines.append(f"| {f.id} | " + " | ".join(cells) + f" | {overall} |")
    return "\n".join(lines)


def findings_markdown(findings: list[Finding]) -> str:
    """The findings table: one row per claim, its *paper* and *controlled* verdicts over every
    target, the numbers (paper's comparison, then the controlled one, per target), what would
    decide an inconclusive cell, and the rules."""
    lines = [
        "| claim | statement | paper | controlled | measured | would decide it | rule |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in findings:
        controlled = f.controlled if f.controlled is not None else NO_CONTROL
        measured = []
        decide = []
        for t in f.per_target:
            measured.append(f"{t.target}: {t.measured}")
            if t.decide and t.verdict == INCONCLUSIVE:
                decide.append(f"{t.target} paper: {t.decide}")
            c = t.controlled
            if c is not None:
                measured.append(f"{t.target} controlled: {c.measured}")
                if c.decide and c.verdict == INCONCLUSIVE:
                    decide.append(f"{t.target} controlled: {c.decide}")
        rule = f.rule + (f" Controlled: {f.controlled_rule}" if f.controlled_rule else "")
        statement = f.claim + (f" ({f.explanation})" if f.explanation else "")
        lines.append(
            f"| {f.id} | {_cell(statement)} | **{f.paper}** | **{controlled}** | "
            f"{_cell('; '.join(measured))} | {_cell('; '.join(decide))} | {_cell(rule)} |"
        )
    return "\n".join(lines)


def render_markdown(data: StudyData) -> str:
    """The summary of already-loaded study data."""
    counts: dict[str, int] = {}
    for r in data.runs:
        counts[r.state] = counts.get(r.state, 0) + 1
    seconds = sum(
        float(r.summary["seconds"])
        for r in data.runs
        if r.summary and finite(r.summary.get("seconds"))
    )
    state = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    lines = [
        f"# transferscope study `{_cell(data.name)}`",
        "",
        f"- runs: {len(data.runs)} planned ({state})",
        f"- compute time of finished runs: {seconds:.1f} s",
        "",
        "## Analyses",
        "",
    ]
    for name in data.analyses:
        reason = data.not_run_reason(name)
        lines.append(f"- {name}: {'ok' if reason is None else 'not run (' + reason + ')'}")
    findings = evaluate_findings(data)
    lines += [
        "",
        "## Findings",
        "",
        "Each cell: *paper* (the comparison as Neyshabur et al. 2020 made it) / *controlled* "
        f"(is pre-training the cause?; {NO_CONTROL}: the claim has no control).",
        "",
        verdict_grid_markdown(findings, data.targets),
        "",
        findings_markdown(findings),
        "",
    ]
    return "\n".join(lines)


def markdown_summary(study_dir: Path) -> str:
    """Markdown summary (run counts, analyses, findings table) of a study directory."""
    return render_markdown(load_study(Path(study_dir)))


__all__ = ["findings_markdown", "markdown_summary", "render_markdown", "verdict_grid_markdown"]
