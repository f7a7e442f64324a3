"""The sections of a study config: data sources, the model, training recipes, shuffles, the
pre-training trajectory, and how runs use the hardware.

Each is a typed :class:`~transferscope.options.Section` that forbids unknown keys;
:class:`~transferscope.config.StudyConfig` assembles them (with the analyses' options) into a
study.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from transferscope.names import RULE, name_problem
from transferscope.options import Section, Seed


def _non_negative_sorted(v: list[float]) -> list[float]:
    """Epoch points: none negative or infinite, sorted, each once."""
    if any(not math.isfinite(x) or x < 0 for x in v):
        raise ValueError("epochs must be finite and not negative")
    return sorted(set(v))


class DataSpec(Section):
    """One data source (a source or target domain)."""

    name: str = Field(description="registry name: fashion-mnist, digits, fashion-mosaic, ...")
    id: str | None = Field(
        default=None, description="short label used in run names; default: derived from name"
    )
    root: Path | None = Field(default=None, description="directory holding the data")
    options: dict[str, Any] = Field(
        default_factory=dict, description="source-specific options (see `transferscope data`)"
    )
    skip_bad_images: bool = Field(
        default=False,
        description="leave unreadable image files out (listed in each run's bad_images.json) "
        "instead of stopping; part of the run id, since the runs then see other data",
    )

    @field_validator("id")
    @classmethod
    def _id_is_a_name(cls, v: str | None) -> str | None:
        problem = None if v is None else name_problem(v)
        if problem is not None:
            raise ValueError(
                f"not a name: {problem}; an id names run directories and files, so it holds {RULE}"
            )
        return v

    @model_validator(mode="after")
    def _label_is_a_name(self) -> DataSpec:
        if self.id is None:
            problem = name_problem(self.label)
            if problem is not None:
                raise ValueError(
                    f"the id {self.label!r} made from name and options.domain is not a name "
                    f"({problem}); give this data source an 'id' of {RULE}"
                )
        return self

    @property
    def label(self) -> str:
        """The id used in run directory names and the report."""
        if self.id:
            return self.id
        base = self.name.replace("torchvision:", "tv-").replace(":", "-")
        domain = self.options.get("domain")
        return f"{base}-{domain}" if domain else base


class ModelSpec(Section):
    """The architecture shared by P, P-T and RI-T."""

    name: str = "fixup-small"
    pretrained: str | None = Field(
        default=None, description="'imagenet' (torchvision cache) or a local weights file"
    )
    options: dict[str, Any] = Field(default_factory=dict)


Schedule = Literal["constant", "multistep", "cosine"]
Optimizer = Literal["sgd", "adamw"]


class TrainSpec(Section):
    """One training recipe: the paper's (SGD with momentum, Fixup's scalars at lr/10) or the one
    ViTs and ConvNeXts are trained with (AdamW, warmup, layer-wise lr decay; docs/methods.md)."""

    epochs: int = Field(default=3, ge=0)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=0.05, gt=0)
    scale_lr_by_batch: bool = Field(
        default=False, description="multiply lr by batch_size/256, as the paper does"
    )
    optimizer: Optimizer = Field(
        default="sgd",
        description="sgd (with momentum, the paper's) or adamw (decoupled weight decay, as "
        "timm, DeiT, BEiT and MAE train ViTs and ConvNeXts)",
    )
    momentum: float = Field(default=0.9, ge=0, lt=1, description="sgd's momentum")
    betas: tuple[float, float] = Field(
        default=(0.9, 0.999), description="adamw's moment decay rates (MAE pre-trains with 0.95)"
    )
    weight_decay: float = Field(default=1e-4, ge=0)
    decay_norms_and_biases: bool | None = Field(
        default=None,
        description="weight decay on biases, norm weights, position embeddings and class tokens "
        "too; default: yes for sgd (the paper's recipe decays every weight), no for adamw (timm's "
        "rule: every 1-d parameter and the model's no_weight_decay() list are left undecayed)",
    )
    warmup_epochs: float = Field(
        default=0,
        ge=0,
        description="raise lr linearly from 0 over these (fractional) epochs; the schedule "
        "then runs over the remaining epochs",
    )
    layer_decay: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="layer-wise lr decay (BEiT, MAE fine-tuning): the head trains at lr, the "
        "block below at lr x layer_decay, the one below that at lr x layer_decay^2, down to the "
        "embedding; layers from the model's timm group_matcher, else its stem and blocks",
    )
    scalar_lr_factor: float = Field(
        default=0.1, gt=0, description="lr factor for Fixup's scalar biases and scales"
    )
    schedule: Schedule = "constant"
    milestones: list[float] = Field(
        default_factory=list, description="epochs at which multistep multiplies lr by gamma"
    )
    gamma: float = Field(default=0.1, gt=0)
    mixup_alpha: float = Field(default=0.0, ge=0)
    eval_points: list[float] = Field(
        default_factory=list, description="extra fractional epochs at which to evaluate"
    )
    checkpoint_points: list[float] = Field(
        default_factory=list, description="fractional epochs at which to keep weights"
    )
    eval_batch_size: int = Field(default=1000, ge=1)
    max_train_examples: int | None = Field(
        default=None, ge=1, description="train on a fixed random subset of this size"
    )

    _epoch_points = field_validator("milestones", "eval_points", "checkpoint_points")(
        _non_negative_sorted
    )

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainSpec:
        if self.epochs > 0 and self.warmup_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs:g}) is longer than the {self.epochs} "
                "epochs of training; shorten the warmup or train longer"
            )
        return self

    @property
    def effective_lr(self) -> float:
        return self.lr * self.batch_size / 256 if self.scale_lr_by_batch else self.lr

    @property
    def decays_every_weight(self) -> bool:
        """Whether weight decay also applies to biases, norms, position embeddings and tokens."""
        if self.decay_norms_and_biases is not None:
            return self.decay_norms_and_biases
        return self.optimizer == "sgd"


class PretrainedSpec(Section):
    """An external P instead of pre-training one: a model's own weights or a user's trajectory."""

    checkpoints: dict[str, Path] = Field(
        default_factory=dict,
        description="trajectory point (e.g. '0', '0.5', '90') -> weights file; the largest is P",
    )

    @field_validator("checkpoints")
    @classmethod
    def _points_are_epochs(cls, v: dict[str, Path]) -> dict[str, Path]:
        for key in v:
            try:
                point = float(key)
            except ValueError:
                point = float("nan")
            if not math.isfinite(point) or point < 0:
                raise ValueError(
                    f"key {key!r} is not a trajectory point: each key is the epoch of its file "
                    "(a number >= 0, e.g. '0', '0.5', '90')"
                )
        return v


class ShuffleSpec(Section):
    """Block and pixel shuffles of the target data (Neyshabur et al. 2020, §3.1)."""

    block_sizes: list[int] = Field(default_factory=list)
    pixel: bool = False
    seeds: list[Seed] = Field(default_factory=lambda: [0])

    @field_validator("block_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError(f"block sizes must be >= 1, got {v}")
        return sorted(set(v), reverse=True)


class TrajectorySpec(Section):
    """Fine-tune from these points of P's pre-training trajectory (Neyshabur et al. 2020, §3.5)."""

    checkpoints: list[float] = Field(default_factory=list, description="epochs (fractions allowed)")

    _epoch_points = field_validator("checkpoints")(_non_negative_sorted)


class PerformanceSpec(Section):
    """How runs use the hardware. None of it changes what a run computes beyond float rounding,
    so none of it is part of a run's id."""

    channels_last: bool | None = Field(
        default=None, description="channels-last convolutions; null = on CUDA only"
    )
    bf16: bool | None = Field(default=None, description="bf16 autocast; null = on CUDA only")
    compile: bool = Field(default=False, description="train through torch.compile")
    decode: Literal["auto", "device", "workers"] = Field(
        default="auto",
        description="where image files are decoded and augmented: auto (on the GPU when training "
        "on one, else in CPU loader workers), device, or workers; same crops and flips either way",
    )


def _png_and_pdf() -> list[Literal["png", "pdf", "svg"]]:
    """The default of ``ReportSpec.figures`` (a lambda's list would be typed ``list[str]``)."""
    return ["png", "pdf"]


class ReportSpec(Section):
    """How the report is written; it never changes a run or an analysis."""

    figures: list[Literal["png", "pdf", "svg"]] = Field(
        default_factory=_png_and_pdf,
        min_length=1,
        description="file formats of every figure; PNG (shown in the page) is always written, "
        "PDF and SVG are for papers (PDF embeds its fonts and is the slowest to write)",
    )
    workers: int | None = Field(
        default=None,
        description="processes that write figure files while the page is built (default: the "
        "CPU cores, at most 4; 1: in the process that builds the page)",
        ge=1,
    )


class ResourcesSpec(Section):
    """What each training run asks a cluster for (``--executor ray``); never part of a run's id."""

    cpus_per_run: float = Field(default=1, gt=0, description="CPU cores reserved per run")
    gpus_per_run: float | None = Field(
        default=None, ge=0, description="GPUs per run; default: 1 when device is cuda, else 0"
    )
    max_retries: int = Field(
        default=3, ge=0, description="retries of a run whose worker or node died"
    )

    def gpus(self, device: str) -> float:
        """GPUs to ask for: the configured number, or one per run when the device is CUDA."""
        if self.gpus_per_run is not None:
            return self.gpus_per_run
        return 1.0 if device.startswith("cuda") else 0.0


__all__ = [
    "DataSpec",
    "ModelSpec",
    "Optimizer",
    "PerformanceSpec",
    "PretrainedSpec",
    "ReportSpec",
    "ResourcesSpec",
    "Schedule",
    "ShuffleSpec",
    "TrainSpec",
    "TrajectorySpec",
]
