"""From a :class:`StudyConfig` to the list of training runs of a study (Neyshabur et al. 2020, §3.1-§3.5).

- P: pre-training on the source, keeping the trajectory checkpoints (or an external P);
- for each target and seed: P-T and RI-T, and for each seed after the first an RI-T that shares
  the first RI-T's random init (the same-init barrier of §3);
- for each block size / pixel shuffle and shuffle seed: P-T and RI-T on shuffled target data,
  the i-th shuffle seed trained with the i-th study seed (none for a block as large as the image, nor for a pixel shuffle of one-channel images when
  block size 1 is planned: both would repeat another run exactly);
- for each trajectory checkpoint k: P@k-T;
- the control pairs: P@0-T for every seed (fine-tunes from P's untrained init).

A run's id is ``<kind>-<target>-<hash>``: the hash is over the run's resolved config with every
field left at its default omitted, so a new option added later does not change the ids of runs
that already finished (the open_lth convention).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Literal

from pydantic import Field

from transferscope.config import DataSpec, ModelSpec, StudyConfig, TrainSpec
from transferscope.data.base import DataInfo
from transferscope.errors import TransferscopeError, TransferscopeWarning
from transferscope.names import MAX_LENGTH
from transferscope.options import Section

Kind = Literal["P", "P-T", "RI-T", "P@k-T"]
# A run id is '<kind>-<target id>-<hash>': one file name (run directories are named by it).
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_SLUG = {"P": "P", "P-T": "PT", "RI-T": "RIT", "P@k-T": "PkT"}


class ShuffleRef(Section):
    """A block shuffle (``block_size``) or a pixel shuffle (``block_size`` None) with its seed."""

    kind: Literal["block", "pixel"]
    block_size: int | None = None
    seed: int = 0

    @property
    def label(self) -> str:
        return f"b{self.block_size}" if self.kind == "block" else "pixel"


class RunSpec(Section):
    """Everything that determines one training run's result."""

    kind: Kind
    data: DataSpec
    model: ModelSpec
    train: TrainSpec
    seed: int = Field(description="data order, mixup and the fresh head of P-T")
    init_seed: int | None = Field(default=None, description="random init; default: seed")
    parent: str | None = Field(default=None, description="run id whose weights P-T starts from")
    parent_checkpoint: str | None = Field(default=None, description="'final' or 'epoch-<k>'")
    init_file: Path | None = Field(default=None, description="external P weights for P-T")
    shuffle: ShuffleRef | None = None
    head_init: Literal["random", "zero"] | None = Field(
        default=None, description="P-T's fresh head: random (from seed) or zero"
    )

    def digest(self) -> str:
        """Hash of the run's config with default-valued fields left out."""
        text = json.dumps(self.model_dump(mode="json", exclude_defaults=True), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    @property
    def run_id(self) -> str:
        return f"{_SLUG[self.kind]}-{self.data.label}-{self.digest()}"


class PlannedRun(Section):
    """A run plus the roles the analyses look it up by."""

    id: str = Field(pattern=RUN_ID_PATTERN, max_length=MAX_LENGTH + 16)
    spec: RunSpec
    target: str = Field(description="target label, or the source label for P")
    seed: int
    shuffle: str | None = Field(default=None, description="'b7', 'pixel' or None")
    shuffle_seed: int | None = None
    checkpoint: float | None = Field(default=None, description="P@k-T: the trajectory point k")
    same_init_as: str | None = Field(default=None, description="RI-T sharing this one's init")
    depends_on: list[str] = Field(default_factory=list)


class Plan(Section):
    runs: list[PlannedRun]
    study_yaml_sha256: str | None = Field(
        default=None,
        description="SHA-256 of the study.yaml written with this plan: a study.yaml that no "
        "longer matches (edited, truncated, replaced) is refused instead of trusted",
    )

    def by_id(self) -> dict[str, PlannedRun]:
        return {r.id: r for r in self.runs}

    def select(self, **roles: object) -> list[PlannedRun]:
        """Runs whose attributes (``kind`` reads the spec) equal every given role."""
        out = []
        for r in self.runs:
            attrs = {"kind": r.spec.kind, **r.model_dump(exclude={"spec"})}
            if all(attrs.get(k) == v for k, v in roles.items()):
                out.append(r)
        return out


def _trajectory_name(k: float) -> str:
    return f"epoch-{k:g}"


def check_shuffles(cfg: StudyConfig, infos: dict[str, DataInfo]) -> None:
    """Every block size must divide every target's image sides (Neyshabur et al. 2020, §3.1)."""
    for target in cfg.targets:
        _, h, w = infos[target.label].image_shape
        for b in cfg.shuffles.block_sizes:
            if h % b or w % b:
                raise TransferscopeError(
                    f"shuffles.block_sizes: {b} does not divide the {h}x{w} images of target "
                    f"'{target.label}'; use divisors of {h} and {w}"
                )


# P's random init is drawn from its own seed range: with P and an RI-T run both initialised from
# seed 0, the RI-T model would start from P's starting weights, and every P-T/RI-T comparison of
# that seed would measure two models that share an init (the paper treats them as independent).
P_INIT_SEED_OFFSET = 7_919_000_000


def p_init_seed(pretrain_seed: int) -> int:
    """The seed of P's random initialisation: outside any seed a study gives its RI-T runs."""
    return P_INIT_SEED_OFFSET + pretrain_seed


def build_plan(cfg: StudyConfig, infos: dict[str, DataInfo]) -> Plan:
    """The runs of a study, in an order that respects their dependencies.

    Args:
        cfg: the study config.
        infos: metadata of the source and every target, keyed by their labels (image sizes are
            needed to check block sizes).
    """
    check_shuffles(cfg, infos)
    runs: list[PlannedRun] = []
    control = cfg.negative_control
    external = not control and cfg.pretrained is not None and bool(cfg.pretrained.checkpoints)
    trajectory = [] if control else cfg.trajectory.checkpoints
    if trajectory and not external and cfg.model.pretrained is not None:
        # P is a weights file (or ImageNet weights): it has no trajectory here to start from.
        warnings.warn(
            f"P comes from model.pretrained ({cfg.model.pretrained}), which has no pre-training "
            f"trajectory: the P@k-T runs at trajectory.checkpoints "
            f"[{', '.join(f'{k:g}' for k in trajectory)}] are left out (give "
            "pretrained.checkpoints: {k: weights file} to fine-tune from points of P's own "
            "trajectory, or trajectory.checkpoints: [] to say none)",
            TransferscopeWarning,
            stacklevel=1,  # one place: said once per process, not by each caller that plans
        )
        trajectory = []
    p_id: str | None = None
    if control or (not external and cfg.model.pretrained is None):
        points = sorted({*cfg.pretrain.checkpoint_points, *trajectory})
        for k in trajectory:
            if k > cfg.pretrain.epochs:
                raise TransferscopeError(
                    f"trajectory.checkpoints: {k:g} is past the end of pre-training "
                    f"(pretrain.epochs = {cfg.pretrain.epochs})"
                )
        # The negative control's P is its random init: no epoch, no trajectory.
        train = (
            cfg.pretrain.model_copy(
                update={"epochs": 0, "checkpoint_points": [], "eval_points": []}
            )
            if control
            else cfg.pretrain.model_copy(update={"checkpoint_points": points})
        )
        p_spec = RunSpec(
            kind="P",
            data=cfg.source,
            model=_random_init(cfg.model),
            train=train,
            seed=cfg.pretrain_seed,
            init_seed=p_init_seed(cfg.pretrain_seed),
        )
        p_id = p_spec.run_id
        runs.append(
            PlannedRun(id=p_id, spec=p_spec, target=cfg.source.label, seed=cfg.pretrain_seed)
        )

    def p_start(k: float | None) -> dict[str, object]:
        """Where a P-T (k None: the final P) or a P@k-T starts from."""
        if external:
            assert cfg.pretrained is not None
            files = {float(key): path for key, path in cfg.pretrained.checkpoints.items()}
            point = max(files) if k is None else k
            if point not in files:
                raise TransferscopeError(
                    f"trajectory.checkpoints: {k:g} has no file in pretrained.checkpoints "
                    f"(have {', '.join(f'{x:g}' for x in sorted(files))})"
                )
            return {"init_file": files[point]}
        if p_id is None:  # torchvision weights: the model spec says pretrained
            return {}
        return {"parent": p_id, "parent_checkpoint": "final" if k is None else _trajectory_name(k)}

    def add(spec: RunSpec, **roles: object) -> PlannedRun:
        deps = [spec.parent] if spec.parent else []
        run = PlannedRun(
            id=spec.run_id, spec=spec, target=spec.data.label, depends_on=deps, **roles
        )
        runs.append(run)
        return run

    def pt(target: DataSpec, seed: int, k: float | None = None, **extra: object) -> RunSpec:
        kind = "P-T" if k is None else "P@k-T"
        return RunSpec(
            kind=kind,
            data=target,
            model=cfg.model,
            train=cfg.finetune,
            seed=seed,
            head_init=cfg.head_init,
            **p_start(k),
            **extra,
        )

    def rit(target: DataSpec, seed: int, **extra: object) -> RunSpec:
        model = _random_init(cfg.model)
        return RunSpec(
            kind="RI-T", data=target, model=model, train=cfg.randinit, seed=seed, **extra
        )

    shuffles = [
        ShuffleRef(kind="block", block_size=b, seed=s)
        for b in cfg.shuffles.block_sizes
        for s in cfg.shuffles.seeds
    ]
    if cfg.shuffles.pixel:
        shuffles += [ShuffleRef(kind="pixel", seed=s) for s in cfg.shuffles.seeds]
    first_seed = cfg.seeds[0]

    def shuffle_run_seed(sh: ShuffleRef) -> int:
        """The training seed of a shuffled replicate: the i-th shuffle seed trains with the i-th
        study seed (cycling), so replicates differ in data order and head as well as in the
        permutation, as independent seeds do; the first one keeps the first seed."""
        i = cfg.shuffles.seeds.index(sh.seed)
        return cfg.seeds[i % len(cfg.seeds)]

    for target in cfg.targets:
        rits = []
        for seed in cfg.seeds:
            add(pt(target, seed), seed=seed)
            rits.append(add(rit(target, seed), seed=seed))
        if cfg.same_init_pair:
            # Same init as the first RI-T, different data order and mixup draws (Neyshabur et al.
            # 2020, §3.3): one run per further seed, so that more seeds give more same-init pairs.
            for seed in cfg.seeds[1:]:
                add(rit(target, seed, init_seed=first_seed), seed=seed, same_init_as=rits[0].id)
        c, h, w = infos[target.label].image_shape
        for sh in shuffles:
            if sh.kind == "block" and sh.block_size == h == w:
                continue  # block = image: no shuffle, the unshuffled runs are this point
            if sh.kind == "pixel" and c == 1 and 1 in cfg.shuffles.block_sizes:
                continue  # one channel: a pixel shuffle is the block-1 shuffle, same permutation
            seed = shuffle_run_seed(sh)
            roles = {"seed": seed, "shuffle": sh.label, "shuffle_seed": sh.seed}
            add(pt(target, seed, shuffle=sh), **roles)
            add(rit(target, seed, shuffle=sh), **roles)
        for k in trajectory:
            add(pt(target, first_seed, k=k), seed=first_seed, checkpoint=k)
        if cfg.control_pair and p_id is not None and len(cfg.seeds) > 1:
            # Fine-tunes from P's untrained init, one per seed: a shared start and P-T's recipe
            # without pre-training, the baseline "P-T models are alike" must beat (each two of
            # them a control pair, so that more seeds give more pairs).
            for seed in cfg.seeds:
                if not (seed == first_seed and 0 in trajectory):
                    add(pt(target, seed, k=0.0), seed=seed, checkpoint=0.0)
    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        raise AssertionError("two planned runs share an id")  # a bug, not a user error
    return Plan(runs=runs)


def _random_init(model: ModelSpec) -> ModelSpec:
    """RI-T uses the same architecture without any pre-trained weights."""
    return model.model_copy(update={"pretrained": None}) if model.pretrained else model


__all__ = ["Plan", "PlannedRun", "RunSpec", "ShuffleRef", "TrainSpec", "build_plan"]
