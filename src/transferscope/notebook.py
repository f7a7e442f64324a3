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

from transferscope.analyses.results import AnalysisResult, skipped_parts
from transferscope.errors import TransferscopeError
from transferscope.report.findings import Finding, depth_order, evaluate_findings
from transferscope.report.study_data import RunRow, StudyData, load_study
from transferscope.study import layout

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


def _ok(value: Any) -> bool:
    return getattr(value, "status", None) == "ok"


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

        return read_metrics(layout.run_dir(self.root, self.run(run_id).id))

    @property
    def results(self) -> dict[str, AnalysisResult | None]:
        """Each registered analysis's result as its unit's model (None: not run yet)."""
        return self.data.analyses

    def result(self, name: str) -> AnalysisResult:
        """Analysis ``name``'s typed result; an error saying why when it has none."""
        from transferscope.analyses import registry

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
        rows = []
        for r in self.data.runs:
            summary = r.summary or {}
            rows.append(
                {
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
            )
        return _frame(rows, _RUN_COLUMNS)

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

    @property
    def cka(self) -> pd.DataFrame:
        """CKA per pair and layer (Neyshabur et al. 2020, §3.2), layers input to output."""
        rows = []
        for target, pair in self._pairs("similarity"):
            # Input to output: the JSON stores layers in key order ("stem" after "stages.3").
            for layer in depth_order(pair.layers):
                value = pair.layers[layer]
                rows.append(
                    {
                        **_pair_columns(target, pair),
                        "layer": layer,
                        "cka": value.cka,
                        "estimator": value.estimator,
                        "examples": value.examples,
                    }
                )
        return _frame(rows, [*_PAIR_COLUMNS, "layer", "cka", "estimator", "examples"])

    @property
    def distances(self) -> pd.DataFrame:
        """Parameter distance per pair and module (§3.3); ``total`` repeats the pair's whole
        L2 distance on each of its rows."""
        rows = []
        for target, pair in self._pairs("distance"):
            for module, value in pair.per_module.items():
                rows.append(
                    {
                        **_pair_columns(target, pair),
                        "k": pair.k,
                        "module": module,
                        "distance": value,
                        "relative": pair.per_module_relative.get(module),
                        "rms": pair.per_module_rms.get(module),
                        "elements": pair.module_elements.get(module),
                        "total": pair.total,
                    }
                )
        columns = ["k", "module", "distance", "relative", "rms", "elements", "total"]
        return _frame(rows, [*_PAIR_COLUMNS, *columns])

    @property
    def barriers(self) -> pd.DataFrame:
        """Every measured path's barrier: the straight lines of interpolation (§3.3), and the
        aligned lines and trained curves of alignment and connectivity beside their straight
        lines. ``path`` names which (linear, aligned, curve)."""
        paths = {
            "interpolation": (("linear", None),),
            "alignment": (("linear", "linear"), ("aligned", "aligned")),
            "connectivity": (("linear", "linear"), ("curve", "curve")),
        }
        rows = []
        for analysis, kinds in paths.items():
            for target, pair in self._pairs(analysis):
                for path, attr in kinds:
                    line = pair if attr is None else getattr(pair, attr)
                    rows.append(
                        {
                            "analysis": analysis,
                            **_pair_columns(target, pair),
                            "k": getattr(pair, "k", None),
                            "path": path,
                            "barrier_metric": line.barrier_metric,
                            "barrier_loss": line.barrier_loss,
                            "batchnorm_recalibrated": line.batchnorm_recalibrated,
                        }
                    )
        columns = ["k", "path", "barrier_metric", "barrier_loss", "batchnorm_recalibrated"]
        return _frame(rows, ["analysis", *_PAIR_COLUMNS, *columns])

    @property
    def criticality(self) -> pd.DataFrame:
        """Module criticality per kind (P-T, RI-T) and module (§3.4): μ (None when no grid
        point was feasible, then ``mu_bound`` bounds it), distance and the rewound metric."""
        rows = []
        doc = self.data.result("criticality")
        for target, entry in (doc.targets if doc is not None else {}).items():
            if not _ok(entry):
                continue
            for kind, result in (("P-T", entry.pt), ("RI-T", entry.rit)):
                if not _ok(result):
                    continue
                for module in result.modules:
                    rows.append(
                        {
                            "target": target,
                            "kind": kind,
                            "run": result.run,
                            "module": module,
                            "mu": result.mu.get(module),
                            "mu_bound": result.mu_bound.get(module),
                            "distance": result.distance.get(module),
                            "rewind_metric": result.rewind.get(module),
                            "rewind_loss": result.rewind_loss.get(module),
                            "network_criticality": result.network_criticality,
                            "recalibrated_batchnorm": result.recalibrated_batchnorm,
                        }
                    )
        return _frame(rows, _CRITICALITY_COLUMNS)

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
    def _pairs(self, name: str) -> list[tuple[str, Any]]:
        """(target, pair) of every measured pair of analysis ``name``."""
        doc = self.data.result(name)
        out = []
        for target, entry in (doc.targets if doc is not None else {}).items():
            if _ok(entry):
                out += [(target, p) for p in entry.pairs if _ok(p)]
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
_PAIR_COLUMNS = ["target", "pair", "runs", "seeds"]
_CRITICALITY_COLUMNS = [
    "target",
    "kind",
    "run",
    "module",
    "mu",
    "mu_bound",
    "distance",
    "rewind_metric",
    "rewind_loss",
    "network_criticality",
    "recalibrated_batchnorm",
]


def _pair_columns(target: str, pair: Any) -> dict[str, Any]:
    return {
        "target": target,
        "pair": pair.pair,
        "runs": tuple(pair.runs),
        "seeds": tuple(getattr(pair, "seeds", ())),
    }


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
    result model; the DataFrame properties (``runs``, ``learning_curves``, ``cka``,
    ``distances``, ``barriers``, ``criticality``, ``findings``, ``not_measured``) need pandas.

    Raises:
        TransferscopeError: ``root`` is not a study directory (no ``plan.json``).
    """
    return Study(load_study(Path(root).expanduser()))


__all__ = ["Study", "open_study"]
