"""A finished (or running) study opened in Python, for notebooks: :func:`open_study`.

>>> study = open_study("transferscope-study")          # doctest: +SKIP
>>> study.runs                                          # one row per planned run (DataFrame)
>>> study.result("similarity").targets["digits"]        # the typed result of an analysis
>>> study.cka.pivot_table(index="layer", columns="pair", values="cka", sort=False).plot()

The study is read exactly as the report reads it (:func:`transferscope.report.load_study`): only
the study directory, never retraining or re-running an analysis. The typed results are the
analysis units' pydantic models; the tables flatten them into pandas DataFrames, one row per
measured number, with the run ids, seeds and targets as columns to filter and pivot on. pandas
is optional: ``pip install transferscope[notebook]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferscope import paths
from transferscope.errors import TransferscopeError
from transferscope.report.findings import Finding, evaluate_findings
from transferscope.unitkit.results import AnalysisResult, skipped_parts
from transferscope.unitkit.study_data import RunRow, StudyData, load_study

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """``rows`` as a DataFrame with ``columns`` in this order (also when there are no rows)."""
    try:
        import pandas as pd
    except ImportError as error:
        raise TransferscopeError(
            "study tables need pandas: pip install transferscope[notebook] (or pip install pandas)"
        ) from error
    return pd.DataFrame(rows, columns=columns)


def run_row(r: RunRow) -> dict[str, Any]:
    """One planned run as a row of :attr:`Study.runs`: its roles, state and, once finished,
    its ``DONE`` summary (final metric and loss, steps, seconds)."""
    summary = r.summary or {}
    return {
        "run": r.id,
        "kind": r.kind,
        "target": r.target,
        "seed": r.seed,
        "shuffle": r.shuffle,
        "checkpoint": r.checkpoint,
        "same_init_as": r.same_init_as,
        "state": r.state,
        "metric_name": summary.get("metric_name"),
        "final_metric": summary.get("final_metric"),
        "final_loss": summary.get("final_loss"),
        "steps": summary.get("steps"),
        "seconds": summary.get("seconds"),
        "chance_level": r.chance_level,
        "error": r.error,
    }


@dataclass
class Study:
    """One study directory: the plan, each run's state and metrics, every analysis's typed
    result and the findings, with DataFrame views of them (see :func:`open_study`)."""

    data: StudyData

    # ----------------------------------------------------------------- typed
    @property
    def root(self) -> Path:
        return self.data.root

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def config(self) -> dict[str, Any]:
        """``study.yaml`` as a dict."""
        return self.data.config

    @property
    def targets(self) -> list[str]:
        return self.data.targets

    @property
    def plan(self) -> list[RunRow]:
        """Every planned run with its roles, state on disk and ``DONE`` summary."""
        return self.data.runs

    def run(self, run_id: str) -> RunRow:
        """The planned run ``run_id``."""
        for r in self.data.runs:
            if r.id == run_id:
                return r
        raise TransferscopeError(
            f"study {self.root} has no run '{run_id}'; its runs: "
            + ", ".join(r.id for r in self.data.runs)
        )

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        """Run ``run_id``'s evaluation rows (``runs/<id>/metrics.jsonl``), in order."""
        from transferscope.training.trainer import read_metrics

        return read_metrics(paths.run_dir(self.root, self.run(run_id).id))

    @property
    def results(self) -> dict[str, AnalysisResult | None]:
        """Each registered analysis's result as its unit's model (None: not run yet)."""
        return self.data.analyses

    def result(self, name: str) -> AnalysisResult:
        """Analysis ``name``'s typed result; an error saying why when it has none."""
        from transferscope import registry

        registry.get(name)  # an unknown name lists the valid ones
        doc = self.data.analyses.get(name)
        if doc is None:
            raise TransferscopeError(
                self.data.not_run_reason(name) or f"analysis '{name}' has no result"
            )
        return doc

    @cached_property
    def claims(self) -> list[Finding]:
        """The findings: every claim with its verdict, per target, and the rule that decided."""
        return evaluate_findings(self.data)

    # ----------------------------------------------------------------- tables
    @property
    def runs(self) -> pd.DataFrame:
        """One row per planned run: roles, state and the final metric of finished ones."""
        return _frame([run_row(r) for r in self.data.runs], _RUN_COLUMNS)

    @property
    def learning_curves(self) -> pd.DataFrame:
        """Every evaluation row of every run's ``metrics.jsonl`` (epoch, step, split, metric,
        loss, train_loss, lr, ...), after the run's roles."""
        rows = []
        fields: dict[str, None] = dict.fromkeys(_CURVE_FIELDS)
        for r in self.data.runs:
            for row in self.metrics(r.id):
                fields.update(dict.fromkeys(row))
                roles = {"run": r.id, "kind": r.kind, "target": r.target, "seed": r.seed}
                rows.append({**roles, "shuffle": r.shuffle, "checkpoint": r.checkpoint, **row})
        return _frame(rows, [*_CURVE_ROLES, *fields])

    def table(self, name: str) -> pd.DataFrame:
        """The table ``name`` (one of :attr:`table_names`) that the analysis units flatten
        their results into, one row per measured number (each unit's
        :meth:`~transferscope.unitkit.unit.Analysis.tables`); several units may add rows to one
        table (``barriers``: interpolation, alignment and connectivity)."""
        found = self._tables.get(name)
        if found is None:
            raise TransferscopeError(
                f"no table '{name}' in this study; tables: {', '.join(self.table_names)}"
            )
        columns, rows = found
        return _frame(rows, columns)

    @property
    def table_names(self) -> list[str]:
        """The names :meth:`table` accepts, one or more per registered analysis unit."""
        return list(self._tables)

    @property
    def cka(self) -> pd.DataFrame:
        """CKA per pair and layer (Neyshabur et al. 2020, §3.2), layers input to output."""
        return self.table("cka")

    @property
    def distances(self) -> pd.DataFrame:
        """Parameter distance per pair and module (§3.3); ``total`` repeats the pair's whole
        L2 distance on each of its rows."""
        return self.table("distances")

    @property
    def barriers(self) -> pd.DataFrame:
        """Every measured path's barrier: the straight lines of interpolation (§3.3), and the
        aligned lines and trained curves of alignment and connectivity beside their straight
        lines. ``path`` names which (linear, aligned, curve)."""
        return self.table("barriers")

    @property
    def criticality(self) -> pd.DataFrame:
        """Module criticality per kind (P-T, RI-T) and module (§3.4): μ (None when no grid
        point was feasible, then ``mu_bound`` bounds it), distance and the rewound metric."""
        return self.table("criticality")

    @property
    def findings(self) -> pd.DataFrame:
        """One row per claim and target: the *paper* verdict there (the comparison as the paper
        made it) and the *controlled* one (is pre-training the cause?; None for a claim
        without a control), each with its numbers, statistic and what would decide it when
        inconclusive; ``paper_overall`` and ``controlled_overall`` are the claim's verdicts over
        every target (as in the findings table), ``voided_by`` the runs at chance level that
        voided a verdict."""
        rows = []
        for f in self.claims:
            for t in f.per_target:
                c = t.controlled
                rows.append(
                    {
                        "claim": f.id,
                        "text": f.claim,
                        "target": t.target,
                        "paper": t.verdict,
                        "controlled": None
                        if f.controlled_rule is None
                        else (c.verdict if c is not None else "not measured"),
                        "paper_overall": f.paper,
                        "controlled_overall": f.controlled,
                        "measured": t.measured,
                        "statistic": t.statistic,
                        "decide": t.decide,
                        "controlled_measured": c.measured if c is not None else None,
                        "controlled_statistic": c.statistic if c is not None else None,
                        "controlled_decide": c.decide if c is not None else None,
                        "voided_by": sorted({*t.voided_by, *(c.voided_by if c else ())}),
                    }
                )
        columns = [
            "claim", "text", "target", "paper", "controlled", "paper_overall",
            "controlled_overall", "measured", "statistic", "decide", "controlled_measured",
            "controlled_statistic", "controlled_decide", "voided_by",
        ]  # fmt: skip
        return _frame(rows, columns)

    @property
    def not_measured(self) -> pd.DataFrame:
        """Everything an analysis could not measure, and why: a whole analysis (``target``
        None), a target, or a part of one (``part``: a pair or kind)."""
        rows: list[dict[str, Any]] = []
        for name, doc in self.data.analyses.items():
            reason = self.data.not_run_reason(name)
            if reason is not None:
                rows.append(_gap(name, None, None, doc.status if doc else "missing", reason))
                continue
            assert doc is not None
            for target, entry in doc.targets.items():
                rows += [_gap(name, target, *found) for found in skipped_parts(entry)]
        return _frame(rows, ["analysis", "target", "part", "status", "reason"])

    # ----------------------------------------------------------------- helpers
    @cached_property
    def _tables(self) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
        """Every unit's tables, in the registry's order: name -> (columns, rows); built once,
        from the results read when the study was opened (as :attr:`claims`)."""
        from transferscope import registry

        out: dict[str, tuple[list[str], list[dict[str, Any]]]] = {}
        for unit in registry.units():
            for name, table in unit.tables(self.data.result(unit.name)).items():
                columns, rows = out.setdefault(name, ([], []))
                columns += [c for c in table.columns if c not in columns]
                rows += table.rows
        return out


_RUN_COLUMNS = [
    "run",
    "kind",
    "target",
    "seed",
    "shuffle",
    "checkpoint",
    "same_init_as",
    "state",
    "metric_name",
    "final_metric",
    "final_loss",
    "steps",
    "seconds",
    "chance_level",
    "error",
]
_CURVE_ROLES = ["run", "kind", "target", "seed", "shuffle", "checkpoint"]
_CURVE_FIELDS = ["epoch", "step", "split", "metric_name", "metric", "loss"]


def _gap(
    analysis: str, target: str | None, part: str | None, status: str, reason: str
) -> dict[str, Any]:
    return {
        "analysis": analysis,
        "target": target,
        "part": part,
        "status": status,
        "reason": reason,
    }


def open_study(root: str | Path) -> Study:
    """Open the study directory ``root`` (what ``transferscope run --out`` wrote) for Python.

    Reads ``plan.json``, the runs' state and every ``analyses/<name>.json`` into its unit's
    result model; the DataFrame properties (``runs``, ``learning_curves``, ``findings``,
    ``not_measured``, and the units' tables: ``cka``, ``distances``, ``barriers``,
    ``criticality``, any other through ``table(name)``) need pandas.

    Raises:
        TransferscopeError: ``root`` is not a study directory (no ``plan.json``).
    """
    return Study(load_study(Path(root).expanduser()))


__all__ = ["Study", "open_study", "run_row"]
