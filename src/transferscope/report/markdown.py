"""A markdown summary of a study: run counts, analyses, and the findings table.

Meant for a terminal, a README or a pull request comment; the HTML report has the figures.
Like the HTML report it reads only the study directory.
"""

from __future__ import annotations

from pathlib import Path

from transferscope.report.findings import Finding, StudyData, evaluate_findings, finite, load_study


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (pipes and newlines would break the row)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def findings_markdown(findings: list[Finding]) -> str:
    """The findings table: one row per claim."""
    lines = [
        "| claim | statement | measured | verdict | rule |",
        "|---|---|---|---|---|",
    ]
    for f in findings:
        lines.append(
            f"| {f.id} | {_cell(f.claim)} | {_cell(f.measured)} | **{f.verdict}** | {_cell(f.rule)} |"
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
    lines += ["", "## Findings", "", findings_markdown(evaluate_findings(data)), ""]
    return "\n".join(lines)


def markdown_summary(study_dir: Path) -> str:
    """Markdown summary (run counts, analyses, findings table) of a study directory."""
    return render_markdown(load_study(Path(study_dir)))


__all__ = ["findings_markdown", "markdown_summary", "render_markdown"]
