"""The study directory: the only state a study has (docs/study-directory.md).

```
STUDY/study.yaml            resolved config
STUDY/plan.json             every planned run and its roles (kind, target, seed, shuffle, k)
STUDY/runs/<id>/run.yaml    the run's resolved config (its id hashes this)
STUDY/runs/<id>/...         checkpoints/, metrics.jsonl, predictions/
STUDY/runs/<id>/DONE        written last: final metric, wall time, every file's size and SHA-256
STUDY/analyses/<name>.json
STUDY/report/index.html
STUDY/LOCK                  who is running a command on the study (see :mod:`.lock`)
```

A run is *damaged* when its DONE cannot be read or its files no longer match the list DONE
recorded (:mod:`transferscope.studydir.integrity`); ``transferscope run`` retrains damaged runs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from transferscope import atomic, paths
from transferscope.config import StudyConfig, to_yaml
from transferscope.errors import DamagedRunError, TransferscopeError
from transferscope.studydir import integrity
from transferscope.studydir.plan import Plan, PlannedRun
from transferscope.training import checkpoints as ckpt

RunState = integrity.RunState


@dataclass(frozen=True)
class StudyStore:
    """Paths and small reads/writes of one study directory."""

    root: Path

    @property
    def runs_dir(self) -> Path:
        return self.root / paths.RUNS

    @property
    def analyses_dir(self) -> Path:
        return self.root / paths.ANALYSES

    def run_dir(self, run_id: str) -> Path:
        return paths.run_dir(self.root, run_id)

    # ------------------------------------------------------------- study files
    def create(self) -> None:
        """Make the study directory, or say in one line why it cannot be one."""
        if self.root.exists() and not self.root.is_dir():
            raise TransferscopeError(
                f"--out {self.root} is a file, not a directory; give a directory for the study"
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TransferscopeError(
                f"cannot create the study directory {self.root}: {e.strerror or e}; choose a "
                "writable place with --out"
            ) from None

    def clean_temporaries(self) -> int:
        """Remove temporary files a killed process left behind (see :mod:`transferscope.atomic`)."""
        count = 0
        if self.root.is_dir():
            for path in self.root.rglob(".*.tmp"):
                path.unlink(missing_ok=True)
                count += 1
        return count

    def write_study(self, cfg: StudyConfig, plan: Plan) -> None:
        """Write study.yaml, then plan.json stamped with study.yaml's SHA-256 (the two are read
        only together: :meth:`read_config` refuses a study.yaml that no longer matches)."""
        self.root.mkdir(parents=True, exist_ok=True)
        text = to_yaml(cfg)
        atomic.write_text(self.root / paths.STUDY_CONFIG, text)
        stamped = plan.model_copy(update={"study_yaml_sha256": integrity.sha256(text.encode())})
        atomic.write_json(self.root / paths.PLAN, stamped.model_dump(mode="json"))

    def is_study(self) -> bool:
        """Whether the directory holds a study (its resolved config)."""
        return (self.root / paths.STUDY_CONFIG).is_file()

    def holds_runs(self) -> bool:
        """Whether the directory holds a plan or run directories: the work of a study, whether
        or not its study.yaml is still there."""
        return (self.root / paths.PLAN).is_file() or bool(self.runs_on_disk())

    def missing_config_error(self) -> TransferscopeError:
        """The error for a directory that holds runs but no study.yaml to say what they are."""
        path = self.root / paths.STUDY_CONFIG
        return TransferscopeError(
            f"{self.root} holds a study's runs but {path} is missing, and with it the config "
            f"they were trained with; restore it, or rerun with the study's config file: "
            f"`transferscope run CONFIG --out {self.root} --force` (nothing was written)"
        )

    def _study_file(self, name: str) -> Path:
        """The study file ``name``; its absence means this is not a study directory."""
        path = self.root / name
        if not path.is_file():
            raise TransferscopeError(
                f"'{self.root}' is not a study directory (no {name}); run `transferscope run --out {self.root}` first"
            )
        return path

    def read_plan(self) -> Plan:
        path = self._study_file(paths.PLAN)
        try:
            return Plan.model_validate_json(path.read_bytes())
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            detail = f"{where}: {first['msg']}" if where else first["msg"]
            raise TransferscopeError(
                f"{path} is damaged ({detail}); rerun `transferscope run --out {self.root}` to "
                "write it again from study.yaml"
            ) from None

    def read_config(self, verify: bool = True) -> StudyConfig:
        """The study's resolved config (study.yaml); a damaged file is one clear error.

        ``verify``: also refuse a study.yaml whose SHA-256 is not the one plan.json recorded when
        both were written (a file edited, cut short or replaced since: a truncated study.yaml can
        still be valid YAML, with defaults where its end was).
        """
        from transferscope.config import from_dict, read_yaml

        if not self.is_study() and self.holds_runs():
            raise self.missing_config_error()
        path = self._study_file(paths.STUDY_CONFIG)
        try:
            data = path.read_bytes()
            text = data.decode()
        except (OSError, UnicodeDecodeError) as e:
            raise TransferscopeError(f"cannot read {path}: {e}") from None
        hint = (
            f"; restore it, or rerun `transferscope run CONFIG --out {self.root} --force` with "
            "the study's config file"
        )
        if verify:
            problem = integrity.config_mismatch(self.root, data)
            if problem is not None:
                raise TransferscopeError(f"{path} {problem}{hint}")
        try:
            return from_dict(read_yaml(text, str(path)), str(path))
        except TransferscopeError as e:
            raise TransferscopeError(f"{e}{hint}") from None

    # ------------------------------------------------------------- runs
    def prepare_run(self, run: PlannedRun) -> Path:
        """Create the run directory and its run.yaml (the config its id hashes)."""
        path = self.run_dir(run.id)
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        run_yaml = path / paths.RUN_CONFIG
        if not run_yaml.exists():
            atomic.write_text(
                run_yaml, yaml.safe_dump(run.spec.model_dump(mode="json"), sort_keys=False)
            )
        return path

    def mark_done(self, run_id: str, summary: dict[str, Any]) -> None:
        """Write DONE: ``summary`` plus the size and SHA-256 of every file the run wrote."""
        folder = self.run_dir(run_id)
        failed = folder / integrity.FAILED
        if failed.exists():
            failed.unlink()
        atomic.write_json(folder / integrity.DONE, {**summary, "files": integrity.manifest(folder)})

    def mark_failed(self, run_id: str, message: str, log: list[str] | None = None) -> None:
        """Write FAILED: the error (one line) and the last lines of the run's log."""
        doc: dict[str, Any] = {"error": message}
        if log is not None:
            doc["log"] = log
            doc["log_file"] = paths.RUN_LOG
        atomic.write_json(self.run_dir(run_id) / integrity.FAILED, doc)

    def is_done(self, run_id: str) -> bool:
        """Whether the run has a DONE marker (whole or not: see :meth:`damage`)."""
        return (self.run_dir(run_id) / integrity.DONE).is_file()

    def summary(self, run_id: str) -> dict[str, Any] | None:
        """The run's DONE summary (None when it has not finished); an unreadable DONE is an error."""
        summary, problem = integrity.read_done(self.run_dir(run_id))
        if problem is not None:
            raise self.damaged_error(run_id, problem)
        return summary

    def damage(self, run_id: str, checksums: bool = True) -> str | None:
        """How a finished run's files differ from what its DONE recorded (None: whole, or not
        finished). ``checksums`` false compares sizes only, which does not read the files."""
        folder = self.run_dir(run_id)
        summary, problem = integrity.read_done(folder)
        if problem is not None or summary is None:
            return problem
        return integrity.check(folder, summary.get("files"), checksums)

    def damaged_error(self, run_id: str, problem: str) -> DamagedRunError:
        """The error for reading a damaged run; ``problem`` (from :meth:`damage`) starts with
        the file's path inside the run directory."""
        return DamagedRunError(
            f"run {run_id} is damaged: {self.run_dir(run_id)}/{problem}; "
            f"rerun `transferscope run --out {self.root}` to retrain it"
        )

    def retrain_damaged(self, plan: Plan) -> list[tuple[str, str]]:
        """Remove every planned run whose files do not verify, so it trains again from scratch.

        Returns (run id, what is wrong with it) for each; the run directory is deleted (a run is
        deterministic, so retraining gives what it held before the damage).
        """
        out = []
        for run in plan.runs:
            if self.is_done(run.id):
                problem = self.damage(run.id, checksums=True)
                if problem is not None:
                    shutil.rmtree(self.run_dir(run.id))
                    out.append((run.id, problem))
        return out

    def runs_on_disk(self) -> list[str]:
        """Ids of every run directory, planned or not, sorted."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir() if p.is_dir())

    def state(self, run_id: str, checksums: bool = False) -> RunState:
        """done / damaged / failed / partial / pending; ``checksums`` also hashes done runs."""
        return integrity.run_status(self.run_dir(run_id), checksums).state

    def weights_path(self, run_id: str, checkpoint: str = "final") -> Path:
        """The safetensors file of a run's checkpoint ('final' or 'epoch-<k>')."""
        name = ckpt.FINAL if checkpoint == "final" else f"{checkpoint}.safetensors"
        return self.run_dir(run_id) / paths.CHECKPOINTS / name
