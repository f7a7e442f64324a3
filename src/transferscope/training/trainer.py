"""The training loop shared by P, P-T and RI-T (the paper's training setup).

SGD with momentum or AdamW (:mod:`transferscope.training.optim`: timm's parameter groups, layer-wise
lr decay, Fixup's scalar biases and scales at ``scalar_lr_factor`` x lr), a schedule with optional
warmup recomputed from the step, optional mixup. On CUDA it trains in bf16 autocast with
channels-last convolutions, keeps in-memory data on the device (or copies batches from pinned
memory without blocking) and can ``torch.compile`` the model. It evaluates at epoch 0,
after every epoch and at requested fractional epochs, and keeps weights at requested fractional
epochs. With a ``run_dir`` everything is written there atomically and an interrupted run resumes
from its last resume point to the same final weights as an uninterrupted run (CPU, same seed).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from transferscope import atomic
from transferscope.config import TrainSpec
from transferscope.data.base import Task, TensorImageDataset
from transferscope.errors import TransferscopeError, TransferscopeWarning
from transferscope.paths import (
    CHECKPOINTS,
    METRICS,
    PREDICTIONS,
    RESUME,
    TEST_OUTPUTS,
    TEST_TARGETS,
)
from transferscope.training import checkpoints as ckpt
from transferscope.training import distributed as dist_lib
from transferscope.training.distributed import Distributed
from transferscope.training.loaders import (
    BatchTransform,
    channels_last_batches,
    decode_policy,
    epoch_order,
    iterate,
    kept_loaders,
    sample_seeds,
    step_seed,
)
from transferscope.training.metrics import Evaluation, evaluate, loss_fn
from transferscope.training.optim import load_optimizer_state, make_optimizer, optimizer_state
from transferscope.training.schedule import lr_at


class DivergedError(TransferscopeError):
    """The training loss became NaN or infinite."""


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else is passed to ``torch.device``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TransferscopeError(
            f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TransferscopeError(
            f"device '{name}' asked for, but CUDA is not available here; use auto or cpu"
        )
    return device


def _points_to_steps(points: list[float], steps_per_epoch: int, total: int) -> dict[int, float]:
    """Map fractional epochs to the step at which they fall (later points win a shared step)."""
    out: dict[int, float] = {}
    for p in sorted(points):
        step = round(p * steps_per_epoch)
        if 0 <= step <= total:
            out[step] = p
    return out


@dataclass
class FitResult:
    """What a finished fit produced."""

    final: Evaluation
    history: list[dict[str, Any]]
    steps: int
    seconds: float
    checkpoints: dict[float, Path] = field(default_factory=dict)
    threads: int = 1
    """torch's intra-op threads the fit trained with (its weights depend on them on a CPU)."""


@dataclass
class Trainer:
    """Fits ``model`` on ``train`` and evaluates on ``test`` following ``spec``.

    Args:
        spec: epochs, batch size, optimiser, schedule, eval and checkpoint points.
        task: 'multiclass' (cross-entropy, accuracy) or 'multilabel' (BCE, mean AUC).
        seed: fixes the data order and mixup draws (the model's init is the caller's).
        device: where to train.
        run_dir: where metrics, checkpoints and predictions go; None keeps everything in memory.
        transform: applied to every image batch on the device (block / pixel shuffle).
        resume_every_s: also save resume state after this many seconds inside an epoch.
        on_step: called after each step with (step, total_steps).
        on_eval: called with each metrics row.
        keep_resume: keep ``resume.safetensors`` after a finished fit (the study deletes it only
            once DONE is written, so a crash between the two never retrains a finished run).
        channels_last: convolutions in channels-last memory format; None = on CUDA only (on CPU
            it does not speed up training and changes the last float digits).
        bf16: bf16 autocast for the forward pass; None = on CUDA only.
        compile: train through ``torch.compile(model)`` (first steps are slower while it
            compiles; saved weights and evaluation use the plain module).
        device_data_fraction: move in-memory data to a CUDA device when it takes less than this
            fraction of the device's free memory; larger data is copied batch by batch.
        distributed: this process's rank in a ``torchrun`` process group (see
            :mod:`transferscope.training.distributed`); None trains in this process alone.
        decode: where streamed image files are decoded and augmented: 'auto' (on the device
            when it is a GPU, else in loader workers), 'device' or 'workers' (see
            :mod:`transferscope.training.gpu_pipeline`); the crops and flips are the same.
    """

    spec: TrainSpec
    task: Task
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    run_dir: Path | None = None
    transform: BatchTransform | None = None
    resume_every_s: float = 60.0
    num_workers: int | None = None
    on_step: Callable[[int, int], None] | None = None
    on_eval: Callable[[dict[str, Any]], None] | None = None
    keep_resume: bool = False
    distributed: Distributed | None = None
    channels_last: bool | None = None
    bf16: bool | None = None
    compile: bool = False
    device_data_fraction: float = 0.25
    decode: str = "auto"

    def _on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def _use_channels_last(self) -> bool:
        if self.channels_last and self.device.type == "cpu":
            # Seen with PyTorch 2.14: a segmentation fault in the backward of a channels-last
            # Fixup network on the CPU. A clear error beats a crash.
            raise TransferscopeError(
                "performance.channels_last: true is for CUDA devices; PyTorch's CPU backward "
                "can crash on it. Leave it unset (on for CUDA only) or set it to false"
            )
        return self._on_cuda() if self.channels_last is None else self.channels_last

    def _use_bf16(self) -> bool:
        return self._on_cuda() if self.bf16 is None else self.bf16

    def _on_device(self, data: Dataset) -> Dataset:
        """In-memory data moved to the CUDA device once, when it fits comfortably."""
        if not (self._on_cuda() and isinstance(data, TensorImageDataset)):
            return data
        free, _ = torch.cuda.mem_get_info(self.device)
        return data.to(self.device) if data.nbytes < self.device_data_fraction * free else data

    # ------------------------------------------------------------------ files
    def _path(self, *parts: str) -> Path | None:
        return self.run_dir.joinpath(*parts) if self.run_dir is not None else None

    def _written(self, *parts: str) -> Path:
        """The path of a file this process writes: only called when it :attr:`_writes`."""
        assert self.run_dir is not None, "a trainer without a run_dir writes no files"
        return self.run_dir.joinpath(*parts)

    @property
    def _writes(self) -> bool:
        """Whether this process writes the run's files (rank 0 of a process group)."""
        return self.run_dir is not None and (self.distributed is None or self.distributed.is_writer)

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        path = self._path(METRICS)
        if path is not None and self._writes:
            atomic.write_jsonl(path, rows)

    def _resume_state(self) -> tuple[dict, dict, dict[str, Any]] | None:
        path = self._path(CHECKPOINTS, RESUME)
        if path is None or not path.exists():
            return None
        return ckpt.load_resume(path)

    def discard_resume(self) -> None:
        path = self._path(CHECKPOINTS, RESUME)
        if path is not None and self._writes:
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ loop
    def fit(self, model: nn.Module, train: Dataset, test: Dataset) -> FitResult:
        """Train ``model`` in place; returns the final evaluation and the metrics history.

        Every random draw of the fit derives from ``seed`` and the step (data order, each
        image's augmentation, mixup, and torch's global generator reseeded at every step), so
        the same inputs give the same weights with any number of loader workers and across a
        resume. The caller's global generator state is restored afterwards.

        On a CPU the weights also depend on torch's thread count (a matrix product summed over
        the batch, e.g. the head's weight gradient, rounds differently when split over another
        number of threads). The resume state records the count, and a fit resumed with another
        count in this process trains with the recorded one: one run never mixes two.
        """
        index = self.device.index
        cuda = [torch.cuda.current_device() if index is None else index] if self._on_cuda() else []
        with (
            torch.random.fork_rng(devices=cuda),
            decode_policy(self.decode),
            self._threads_it_started_with(),
            kept_loaders(),
        ):
            return self._fit(model, train, test)

    @contextmanager
    def _threads_it_started_with(self) -> Iterator[None]:
        """torch's thread count set to the one the resume state recorded, if it differs."""
        path = self._path(CHECKPOINTS, RESUME)
        recorded = None
        if path is not None and path.is_file():
            try:
                recorded = json.loads(ckpt.read_metadata(path)["resume"]).get("threads")
            except (OSError, KeyError, ValueError, AttributeError):
                recorded = None  # loading the resume state says what is wrong with it
        now = torch.get_num_threads()
        if not isinstance(recorded, int) or recorded < 1 or recorded == now:
            yield
            return
        warnings.warn(
            f"run {path.parent.parent.name} resumes with the {recorded} torch threads it "  # type: ignore[union-attr]
            f"started with, not this process's {now}: a run's weights depend on its thread "
            "count on the CPU",
            TransferscopeWarning,
            stacklevel=3,
        )
        torch.set_num_threads(recorded)
        try:
            yield
        finally:
            torch.set_num_threads(now)

    def _fit(self, model: nn.Module, train: Dataset, test: Dataset) -> FitResult:
        spec = self.spec
        model.to(self.device)
        transform = self.transform
        if self._on_cuda():
            torch.backends.cudnn.benchmark = True
        if self._use_channels_last():
            model.to(memory_format=torch.channels_last)
            transform = channels_last_batches(transform)
        train, test = self._on_device(train), self._on_device(test)
        n = len(train)  # type: ignore[arg-type]  # torch's Dataset declares no __len__
        if spec.max_train_examples is not None and spec.max_train_examples < n:
            subset = torch.from_numpy(
                np.sort(np.random.default_rng(self.seed).permutation(n)[: spec.max_train_examples])
            )
        else:
            subset = None
        n_used = len(subset) if subset is not None else n
        d = self.distributed
        if d is not None:
            dist_lib.check_batch(spec.batch_size, n_used, d.world)
        steps_per_epoch = max(1, math.ceil(n_used / spec.batch_size))
        total = spec.epochs * steps_per_epoch
        eval_steps = _points_to_steps(
            [*range(spec.epochs + 1), *spec.eval_points], steps_per_epoch, total
        )
        ckpt_steps = _points_to_steps([0.0, *spec.checkpoint_points], steps_per_epoch, total)

        optimizer = make_optimizer(model, spec)
        mix_rng = np.random.default_rng([self.seed, 7])
        rows: list[dict[str, Any]] = []
        step, elapsed, train_losses = 0, 0.0, []
        done_boundary = -1

        resumed = self._resume_state()
        if resumed is not None:
            model_state, optimizer_saved, info = resumed
            model.load_state_dict(model_state)
            load_optimizer_state(optimizer, model, optimizer_saved)
            step, elapsed = info["step"], info["elapsed"]
            mix_rng.bit_generator.state = info["mix_rng"]
            train_losses = info["train_losses"]
            done_boundary = step
            rows = [r for r in _read_rows(self._path(METRICS)) if r["step"] <= step]

        net: nn.Module = model
        if d is not None:
            # After loading the resume state: DDP starts every rank from rank 0's weights.
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if self.compile:
            net = torch.compile(net)  # type: ignore[assignment]  # an nn.Module (OptimizedModule), typed as a callable
        start_time = time.perf_counter() - elapsed
        last_resume_save = time.perf_counter()
        saved: dict[float, Path] = {}
        order: torch.Tensor | None = None
        batches = None
        last_eval: Evaluation | None = None
        model.train()

        while True:
            if step != done_boundary:
                if step in eval_steps:
                    row, last_eval = self._eval_row(
                        model, test, step, steps_per_epoch, train_losses, start_time, transform
                    )
                    rows.append(row)
                    train_losses = []
                    self._write_rows(rows)
                    if self.on_eval:
                        self.on_eval(rows[-1])
                if step in ckpt_steps and self._writes:
                    path = self._written(
                        CHECKPOINTS, ckpt.point_name(ckpt_steps[step]) + ".safetensors"
                    )
                    ckpt.save_weights(path, model.state_dict())
                    saved[ckpt_steps[step]] = path
                epoch_end = step % steps_per_epoch == 0
                if (
                    self._writes
                    and step > 0
                    and (epoch_end or time.perf_counter() - last_resume_save > self.resume_every_s)
                ):
                    self._save_resume(model, optimizer, step, start_time, mix_rng, train_losses)
                    last_resume_save = time.perf_counter()
            if step >= total:
                break
            epoch, pos = divmod(step, steps_per_epoch)
            if batches is None or pos == 0:
                order = epoch_order(n_used, self.seed, epoch)
                if subset is not None:
                    order = subset[order]
                rest = order[pos * spec.batch_size :]
                draws = sample_seeds(n_used, self.seed, epoch)[pos * spec.batch_size :]
                if d is not None:
                    rest = dist_lib.shard_order(rest, spec.batch_size, d)
                    draws = dist_lib.shard_order(draws, spec.batch_size, d)
                batches = iterate(
                    train,
                    spec.batch_size if d is None else spec.batch_size // d.world,
                    order=rest,
                    device=self.device,
                    transform=transform,
                    num_workers=self.num_workers,
                    seeds=draws,
                )
            x, y = next(batches)
            # Whatever the model draws from torch's global generator (dropout, stochastic depth)
            # depends on the run's seed and the step alone, so a resumed run draws the same.
            torch.manual_seed(step_seed(self.seed, step))
            lr = lr_at(spec, step / steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_factor"]
            if d is None:
                loss = self._train_step(net, optimizer, x, y, mix_rng)
            else:
                n_global = min(spec.batch_size, n_used - pos * spec.batch_size)
                loss = self._train_step(net, optimizer, x, y, mix_rng, n_global)
                loss = dist_lib.global_mean(loss, len(x), n_global, self.device)
            if not math.isfinite(loss):
                raise DivergedError(
                    f"training diverged: loss {loss} at epoch {epoch + 1}, step {step + 1} "
                    f"(lr {lr:g}); lower the learning rate"
                    + (f" (run '{self.run_dir}')" if self.run_dir else "")
                )
            train_losses.append(loss)
            step += 1
            if self.on_step:
                self.on_step(step, total)

        # The last step is always an evaluation point (an integer epoch); a run resumed at its
        # very end has not evaluated in this process yet.
        final_eval = last_eval
        if final_eval is None or rows[-1]["step"] != total:
            final_eval = evaluate(
                model, test, self.task, spec.eval_batch_size, self.device, transform
            )
        seconds = time.perf_counter() - start_time
        if self._writes:
            # evaluate() keeps the outputs and targets of every evaluation it returns
            assert final_eval.outputs is not None and final_eval.targets is not None
            ckpt.save_weights(self._written(CHECKPOINTS, ckpt.FINAL), model.state_dict())
            atomic.write_npy(self._written(PREDICTIONS, TEST_OUTPUTS), final_eval.outputs.numpy())
            atomic.write_npy(self._written(PREDICTIONS, TEST_TARGETS), final_eval.targets.numpy())
            if not self.keep_resume:
                self.discard_resume()
        return FitResult(final_eval, rows, total, seconds, saved, torch.get_num_threads())

    def _train_step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        mix_rng: np.random.Generator,
        n_global: int | None = None,
    ) -> float:
        """One optimizer step; returns the batch's mean loss.

        ``n_global`` (distributed only): the global batch's size; ``x`` is this rank's share. The
        loss is weighted by ``len(x) * world / n_global`` so DDP's gradient average is the
        gradient of the global batch's mean loss, and each rank's mixup permutation is drawn from
        the same random numbers on every rank (one global-size draw) so the ranks' generators
        never drift apart.
        """
        alpha = self.spec.mixup_alpha
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._use_bf16()):
            if alpha > 0:
                lam = float(mix_rng.beta(alpha, alpha))
                if n_global is None:
                    perm = torch.from_numpy(mix_rng.permutation(len(x))).to(x.device)
                else:  # a uniform permutation of len(x), using the same draws on every rank
                    drawn = mix_rng.permutation(n_global)[: len(x)]
                    perm = torch.from_numpy(np.argsort(drawn)).to(x.device)
                out = model(lam * x + (1 - lam) * x[perm])
                if self.task == "multiclass":
                    loss = lam * loss_fn(self.task, out, y) + (1 - lam) * loss_fn(
                        self.task, out, y[perm]
                    )
                else:
                    loss = loss_fn(self.task, out, lam * y + (1 - lam) * y[perm])
            else:
                loss = loss_fn(self.task, model(x), y)
        optimizer.zero_grad(set_to_none=True)
        if n_global is not None and self.distributed is not None:
            share = len(x) * self.distributed.world / n_global
            (loss * share if share != 1 else loss).backward()
        else:
            loss.backward()
        optimizer.step()
        return loss.item()

    def _eval_row(
        self,
        model: nn.Module,
        test: Dataset,
        step: int,
        steps_per_epoch: int,
        train_losses: list[float],
        start_time: float,
        transform: BatchTransform | None,
    ) -> tuple[dict[str, Any], Evaluation]:
        result = evaluate(model, test, self.task, self.spec.eval_batch_size, self.device, transform)
        model.train()
        row: dict[str, Any] = {
            "epoch": step / steps_per_epoch,
            "step": step,
            "split": "test",
            **result.row(),
            "train_loss": float(np.mean(train_losses)) if train_losses else None,
            "lr": lr_at(self.spec, step / steps_per_epoch),
            "seconds": time.perf_counter() - start_time,
        }
        return row, result

    def _save_resume(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        step: int,
        start_time: float,
        mix_rng: np.random.Generator,
        train_losses: list[float],
    ) -> None:
        info = {
            "step": step,
            "elapsed": time.perf_counter() - start_time,
            "mix_rng": _jsonable(mix_rng.bit_generator.state),
            "train_losses": train_losses,
            "threads": torch.get_num_threads(),
        }
        ckpt.save_resume(
            self._written(CHECKPOINTS, RESUME),
            model.state_dict(),
            optimizer_state(optimizer, model),
            info,
        )


def _jsonable(state: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(state, default=int))


def _read_rows(path: Path | None) -> list[dict[str, Any]]:
    """Rows of a metrics file. The file is written whole (atomically), so a line that is not a
    JSON object means the file was damaged: an error naming the file and line, never a silent
    stop that would drop every later evaluation."""
    if path is None or not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        problem: str | None
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            row, problem = None, f"not valid JSON ({e.msg})"
        else:
            problem = None if isinstance(row, dict) and "step" in row else "not a metrics row"
        if problem is not None:
            raise TransferscopeError(
                f"{path}, line {number}: {problem}; the file is damaged - `transferscope run` "
                f"retrains a finished run whose files changed; for an unfinished one delete "
                f"{path.parent} and rerun"
            )
        rows.append(row)
    return rows


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluation rows of a run directory, in order."""
    return _read_rows(Path(run_dir) / METRICS)
