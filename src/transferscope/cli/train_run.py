"""Train one planned run of a study, alone or with ``torchrun`` (DistributedDataParallel).

```
transferscope run study.yaml --out STUDY --plan-only            # plan; lists the run ids
torchrun --nproc-per-node 8 -m transferscope.cli.train_run STUDY/runs/<run id>
transferscope run study.yaml --out STUDY                        # the rest; that run is DONE
```

Without torchrun the run trains in this process exactly as ``transferscope run`` trains it. Under
torchrun every process joins the group (nccl on CUDA, one GPU per process; gloo on the CPU), takes
its share of each global batch (``batch_size`` is the global batch), and rank 0 alone writes the
metrics, checkpoints and ``DONE``: the run directory looks as if one process had trained it, and an
interrupted run resumes from its last resume point when started again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transferscope.errors import TransferscopeError


def train_run(run_dir: Path) -> str:
    """Train the run whose directory is ``run_dir`` (``STUDY/runs/<id>``); returns a status line."""
    import torch
    import torch.distributed as dist

    from transferscope.study.executors import execute_run
    from transferscope.studydir.inputs import DataCache
    from transferscope.studydir.store import StudyStore
    from transferscope.training.distributed import init_process_group, launched_by_torchrun
    from transferscope.training.trainer import pick_device

    run_dir = run_dir.resolve()
    store = StudyStore(run_dir.parent.parent)
    plan = store.read_plan()
    run = plan.by_id().get(run_dir.name)
    if run is None or run_dir.parent != store.runs_dir:
        raise TransferscopeError(
            f"'{run_dir}' is not a run of the study in '{store.root}'; "
            f"`transferscope status {store.root}` lists its runs"
        )
    cfg = store.read_config()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if store.is_done(run.id):
        return f"{run.id}: already done"
    if not launched_by_torchrun():
        summary = execute_run(run, cfg, store, DataCache(), pick_device(cfg.device))
        return f"{run.id}: {summary['metric_name']} {summary['final_metric']:.4f}"
    distributed, device = init_process_group(cfg.device)
    try:
        if distributed.is_writer:
            store.prepare_run(run)
        dist.barrier()
        try:
            summary = execute_run(run, cfg, store, DataCache(), device, distributed=distributed)
        except TransferscopeError as e:
            # Every rank sees the same global loss, so a divergence stops every rank here.
            if distributed.is_writer:
                store.mark_failed(run.id, str(e))
            raise
        dist.barrier()  # rank 0 has written DONE when any rank returns
    finally:
        dist.destroy_process_group()
    return (
        f"{run.id}: {summary['metric_name']} {summary['final_metric']:.4f} "
        f"({distributed.world} processes)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transferscope.cli.train_run",
        description="Train one planned run of a study (under torchrun: with DDP).",
    )
    parser.add_argument("run_dir", type=Path, help="STUDY/runs/<run id>")
    args = parser.parse_args(argv)
    try:
        line = train_run(args.run_dir)
    except TransferscopeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import os

    if os.environ.get("RANK", "0") == "0":
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
