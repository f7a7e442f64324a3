"""The study directory: every file name a study has, and the state of a run, in one place.

```
STUDY/study.yaml                         the resolved config
STUDY/plan.json                          every planned run and its roles; study.yaml's SHA-256
STUDY/LOCK                               who is running a command on the study
STUDY/runs/<id>/run.yaml                 the run's resolved config (its id hashes it)
STUDY/runs/<id>/metrics.jsonl            one row per evaluation
STUDY/runs/<id>/checkpoints/             final.safetensors, epoch-<k>.safetensors, resume
STUDY/runs/<id>/predictions/             test_outputs.npy, test_targets.npy (final model)
STUDY/runs/<id>/bad_images.json          unreadable images left out (--skip-bad-images)
STUDY/runs/<id>/DONE                     written last: summary, data digest, torch threads,
                                         every file's size and SHA-256
STUDY/runs/<id>/FAILED                   why the run stopped, and the last lines of its log
STUDY/runs/<id>/train.log                what each attempt at the run did and printed
STUDY/analyses/<name>.json               one result per analysis (transferscope.analyses)
STUDY/analyses/mistakes/<target>.npz     example images of the mistakes cells
STUDY/analyses/timings/<name>.json       its last computation's time, estimated and taken
STUDY/report/index.html, figures/        the report; .inputs.json stamps what it was built from
```

``docs/study-directory.md`` describes each file's contents. Code that reads or writes a study
takes the names from here, and this module imports nothing of transferscope but its error type
(as open_lth's ``foundations/paths.py``); a run's state is read by
:func:`transferscope.studydir.integrity.run_status`.
"""

from __future__ import annotations

from pathlib import Path

STUDY_CONFIG = "study.yaml"
PLAN = "plan.json"
LOCK = "LOCK"
RUNS = "runs"
RUN_CONFIG = "run.yaml"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
RESUME = "resume.safetensors"  # inside CHECKPOINTS, while a run trains
PREDICTIONS = "predictions"
TEST_OUTPUTS = "test_outputs.npy"
TEST_TARGETS = "test_targets.npy"
BAD_IMAGES = "bad_images.json"
DONE = "DONE"
FAILED = "FAILED"
RUN_LOG = "train.log"
ANALYSES = "analyses"
MISTAKE_EXAMPLES = "mistakes"
TIMINGS = "timings"
REPORT = "report"
REPORT_PAGE = "index.html"
FIGURES = "figures"
REPORT_INPUTS = ".inputs.json"


def child(folder: Path, name: str, what: str) -> Path:
    """``folder / name`` for a ``name`` that is one file name: no separator, not '.' or '..',
    at most 255 bytes. Names reach here from plan.json and configs (run ids, target ids); the
    config refuses any other id up front (:mod:`transferscope.names`), and this keeps every read
    and write inside the study directory even when plan.json was edited by hand."""
    from transferscope.errors import TransferscopeError

    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or len(name.encode("utf-8", "surrogateescape")) > 255
    ):
        raise TransferscopeError(
            f"{what} {name!r} is not a file name inside {folder}: ids are names (letters, "
            "digits, '-', '_', '.'), never paths; check the config's ids and plan.json"
        )
    return Path(folder) / name


def run_dir(root: Path, run_id: str) -> Path:
    return child(Path(root) / RUNS, run_id, "run id")


def analysis_path(root: Path, name: str) -> Path:
    return child(Path(root) / ANALYSES, f"{name}.json", "analysis")


def timing_path(root: Path, name: str) -> Path:
    """Where an analysis's last computation records its time, estimated and taken: beside its
    result, not in it, so that a recomputed result is the same bytes."""
    return child(Path(root) / ANALYSES / TIMINGS, f"{name}.json", "analysis")


def mistake_examples_path(root: Path, target: str) -> Path:
    """``analyses/mistakes/<target>.npz``: the example images of one target's mistakes cells."""
    return child(Path(root) / ANALYSES / MISTAKE_EXAMPLES, f"{target}.npz", "target id")


def report_dir(root: Path) -> Path:
    return Path(root) / REPORT


__all__ = [name for name in dir() if name.isupper()] + [
    "analysis_path",
    "child",
    "mistake_examples_path",
    "report_dir",
    "run_dir",
]
