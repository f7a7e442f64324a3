"""What the runner and the analyses read besides the study directory: the data (loaded once per
process, shuffled copies kept: :class:`DataCache`), the study's plan after every check that needs
no training (:func:`plan_study`), and the model a run starts from (:func:`build_start_model`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from transferscope.config import StudyConfig
from transferscope.data import registry as data_registry
from transferscope.data.base import DataInfo, Splits, TensorImageDataset
from transferscope.data.digest import splits_digest
from transferscope.data.folder_common import drop_bad_images
from transferscope.data.shuffle import shuffle_images
from transferscope.models import build_model, load_state, transfer
from transferscope.models.weights import read_state
from transferscope.studydir.plan import Plan, RunSpec, ShuffleRef, build_plan
from transferscope.studydir.store import StudyStore
from transferscope.training import checkpoints as ckpt
from transferscope.training.loaders import BatchTransform


def _key(spec: Any) -> str:
    """A data spec's cache key: its JSON with sorted keys, so that the same source read from the
    config and from plan.json (whose options come back in another order) is loaded once."""
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True)


@dataclass
class DataCache:
    """Loads each data source once per process and keeps shuffled copies of in-memory data."""

    _splits: dict[str, Splits] = field(default_factory=dict)
    _shuffled: dict[tuple[str, str, int], Splits] = field(default_factory=dict)
    _skipped: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    _digests: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def get(self, spec: Any) -> Splits:
        key = _key(spec)
        if key not in self._splits:
            splits = data_registry.load(spec.name, root=spec.root, **spec.options)
            if getattr(spec, "skip_bad_images", False):
                splits, self._skipped[key] = drop_bad_images(splits)
            self._splits[key] = splits
        return self._splits[key]

    def digest(self, spec: Any) -> dict[str, dict[str, Any]]:
        """The digest of ``spec``'s training and test splits as loaded here (sizes, targets,
        and each image file's path, size and time: :mod:`transferscope.data.digest`)."""
        key = _key(spec)
        if key not in self._digests:
            self._digests[key] = splits_digest(self.get(spec))
        return self._digests[key]

    def bad_images(self, spec: Any) -> list[dict[str, str]]:
        """The image files :meth:`get` left out of ``spec``'s splits: [{split, path, error}]."""
        self.get(spec)
        return self._skipped.get(_key(spec), [])

    def shuffled(self, spec: Any, shuffle: ShuffleRef) -> tuple[Splits, BatchTransform | None]:
        """Splits with the shuffle applied, or the plain splits and a per-batch transform."""
        splits = self.get(spec)

        def fn(x: torch.Tensor) -> torch.Tensor:
            return shuffle_images(x, shuffle.kind, shuffle.seed, shuffle.block_size)

        if not (
            isinstance(splits.train, TensorImageDataset)
            and isinstance(splits.test, TensorImageDataset)
        ):
            return splits, fn
        key = (_key(spec), shuffle.label, shuffle.seed)
        if key not in self._shuffled:
            self._shuffled[key] = Splits(
                info=splits.info,
                train=TensorImageDataset(fn(splits.train.images), splits.train.targets),
                test=TensorImageDataset(fn(splits.test.images), splits.test.targets),
            )
        return self._shuffled[key], None


def infos_of(cfg: StudyConfig, cache: DataCache) -> dict[str, DataInfo]:
    """Metadata of the source and every target, keyed by label (loads the data once)."""
    out = {t.label: cache.get(t).info for t in cfg.targets}
    if cfg.pretrained is None and cfg.model.pretrained is None:
        out[cfg.source.label] = cache.get(cfg.source).info
    return out


def plan_study(cfg: StudyConfig, cache: DataCache) -> Plan:
    """The study's plan, after every check that needs no training: names and options in the
    config, the data loads, and the source, targets and model fit together."""
    from transferscope.config import check_references
    from transferscope.studydir.shapes import check_shapes

    check_references(cfg)
    infos = infos_of(cfg, cache)
    check_shapes(cfg, infos)
    return build_plan(cfg, infos)


def _in_channels(info: DataInfo) -> int:
    return info.image_shape[0]


def build_start_model(
    spec: RunSpec, target: DataInfo, source: DataInfo | None, store: StudyStore
) -> nn.Module:
    """The model a run starts from: random init, or P's weights with a fresh head (P-T)."""
    opts = spec.model.options
    if spec.kind in ("P", "RI-T"):
        torch.manual_seed(spec.init_seed if spec.init_seed is not None else spec.seed)
        return build_model(spec.model.name, target.num_outputs, _in_channels(target), **opts)
    # P-T and P@k-T: P's architecture and weights, then a fresh head.
    if spec.parent is not None:
        assert source is not None
        p = build_model(spec.model.name, source.num_outputs, _in_channels(source), **opts)
        path = store.weights_path(spec.parent, spec.parent_checkpoint or "final")
        load_state(p, ckpt.load_weights(path), what=str(path))
    elif spec.init_file is not None:
        state = read_state(spec.init_file)
        head_out = _head_outputs(state)
        p = build_model(
            spec.model.name, head_out or target.num_outputs, _in_channels(target), **opts
        )
        load_state(p, state, what=str(spec.init_file), ignore_head=head_out is None)
    else:
        p = build_model(
            spec.model.name,
            target.num_outputs,
            _in_channels(target),
            pretrained=spec.model.pretrained,
            **opts,
        )
    zero = None if spec.head_init is None else spec.head_init == "zero"
    return transfer(p, target.num_outputs, seed=spec.seed, zero_head=zero)


def _head_outputs(state: dict[str, torch.Tensor]) -> int | None:
    for key in ("fc.weight", "head.fc.weight", "classifier.weight", "head.weight"):
        if key in state:
            return int(state[key].shape[0])
    return None


__all__ = ["DataCache", "build_start_model", "infos_of", "plan_study"]
