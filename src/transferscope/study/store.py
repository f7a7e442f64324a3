"""The study directory: the only state a study has (DESIGN.md "The study directory").

```
STUDY/study.yaml            resolved config
STUDY/plan.json             every planned run and its roles (kind, target, seed, shuffle, k)
STUDY/runs/<id>/run.yaml    the run's resolved config (its id hashes this)
STUDY/runs/<id>/...         checkpoints/, metrics.jsonl, predictions/
STUDY/runs/<id>/DONE        written last: final metric, wall time
STUDY/analyses/<name>.json
STUDY/report/index.html
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from transferscope import atomic
from transferscope.config import StudyConfig, to_yaml
from transferscope.errors import TransferscopeError
from transferscope.study.plan import Plan, PlannedRun
from transferscope.training import checkpoints as ckpt

RunState = Literal["done", "partial", "failed", "pending"]


@dataclass(frozen=True)
class StudyStore:
    """Paths and small reads/writes of one study directory."""

    root: Path

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def analyses_dir(self) -> Path:
        return self.root / "analyses"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    # ------------------------------------------------------------- study files
    def clean_temporaries(self) -> int:
        """Remove temporary files a killed process left behind (see :mod:`transferscope.atomic`)."""
        count = 0
        if self.root.is_dir():
            for path in self.root.rglob(".*.tmp"):
                path.unlink(missing_ok=True)
                count += 1
        return count

    def write_study(self, cfg: StudyConfig, plan: Plan) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.root / "study.yaml", to_yaml(cfg))
        atomic.write_json(self.root / "plan.json", plan.model_dump(mode="json"))

    def read_plan(self) -> Plan:
        path = self.root / "plan.json"
        if not path.is_file():
            raise TransferscopeError(
                f"'{self.root}' is not a study directory (no plan.json); run `transferscope run --out {self.root}` first"
            )
        return Plan.model_validate_json(path.read_text())

    def read_config(self) -> StudyConfig:
        from transferscope.config import from_dict

        path = self.root / "study.yaml"
        return from_dict(yaml.safe_load(path.read_text()), str(path))

    # ------------------------------------------------------------- runs
    def prepare_run(self, run: PlannedRun) -> Path:
        """Create the run directory and its run.yaml (the config its id hashes)."""
        path = self.run_dir(run.id)
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        run_yaml = path / "run.yaml"
        if not run_yaml.exists():
            atomic.write_text(
                run_yaml, yaml.safe_dump(run.spec.model_dump(mode="json"), sort_keys=False)
            )
        return path

    def mark_done(self, run_id: str, summary: dict[str, Any]) -> None:
        atomic.write_json(self.run_dir(run_id) / "DONE", summary)
        failed = self.run_dir(run_id) / "FAILED"
        if failed.exists():
            failed.unlink()

    def mark_failed(self, run_id: str, message: str) -> None:
        atomic.write_json(self.run_dir(run_id) / "FAILED", {"error": message})

    def is_done(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / "DONE").is_file()

    def summary(self, run_id: str) -> dict[str, Any] | None:
        path = self.run_dir(run_id) / "DONE"
        return json.loads(path.read_text()) if path.is_file() else None

    def state(self, run_id: str) -> RunState:
        path = self.run_dir(run_id)
        if (path / "DONE").is_file():
            return "done"
        if (path / "FAILED").is_file():
            return "failed"
        if (path / "checkpoints" / ckpt.RESUME).is_file() or (path / "metrics.jsonl").is_file():
            return "partial"
        return "pending"

    def weights_path(self, run_id: str, checkpoint: str = "final") -> Path:
        """The safetensors file of a run's checkpoint ('final' or 'epoch-<k>')."""
        name = ckpt.FINAL if checkpoint == "final" else f"{checkpoint}.safetensors"
        return self.run_dir(run_id) / "checkpoints" / name
