"""Feature similarity: linear CKA per layer (Neyshabur et al. 2020, §3.2): claim C4.

Per target and pair of final models (P-T/P-T, RI-T/RI-T, the same-init RI-T pair, the control
pair, P-T/RI-T across seeds, and P/P-T): linear CKA (Kornblith et al. 2019) of each layer's
features, in [0, 1], on one seeded, class-stratified test subset shared by every pair. A layer
whose exact CKA state would not fit ``max_exact_bytes`` uses the minibatch estimator. The math is
in :mod:`transferscope.measures.similarity`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from transferscope.config import DataSpec
from transferscope.errors import TransferscopeError
from transferscope.measures.cka import exact_state_bytes
from transferscope.measures.cka import multiply_adds as cka_multiply_adds
from transferscope.measures.sampling import dataset_targets, stratified_indices
from transferscope.measures.similarity import layer_similarity, resolve_layers
from transferscope.options import AnalysisOptions
from transferscope.registry import register
from transferscope.training.loaders import iterate
from transferscope.unitkit import rules, sections
from transferscope.unitkit.context import StudyContext, failed, skipped, take
from transferscope.unitkit.cost import facts
from transferscope.unitkit.pairs import Pair, PairName, Pairs, SkippedPair, study_pairs
from transferscope.unitkit.results import AnalysisResult, Entry, Model, TargetEntry
from transferscope.unitkit.rules import (
    CKA_FLOOR,
    INCONCLUSIVE,
    UNMEASURED,
    TargetResult,
    finite,
    fmt,
)
from transferscope.unitkit.tables import Table, pair_table
from transferscope.unitkit.unit import Analysis, TargetSize, Work, claim

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from transferscope.studydir.plan import PlannedRun
    from transferscope.unitkit.page import Page
    from transferscope.unitkit.study_data import StudyData


class SimilarityOptions(AnalysisOptions):
    layers: list[str] | None = None
    pooled: bool = False
    max_examples: int | None = Field(
        default=2000, ge=1, description="a seeded random (class-stratified) test subset"
    )
    subset_seed: int = Field(default=0, description="seed of the test subset, shared by every pair")
    max_exact_bytes: int = Field(
        default=1 << 30,
        ge=1,
        description="a layer whose exact CKA state would exceed this switches to minibatch CKA",
    )
    batch_size: int = Field(
        default=256, ge=4, description="examples per forward pass (and per minibatch-CKA batch)"
    )


# ----------------------------------------------------------------------------------------------
# result


class Layer(Model):
    """How one layer's CKA was measured (:class:`~transferscope.measures.similarity.LayerSimilarity`)."""

    cka: float | None
    """Linear CKA in [0, 1] (NaN for a constant layer), None when ``error``."""
    estimator: str
    """'exact', or the minibatch estimator (unbiased HSIC, Nguyen et al. 2021)."""
    features: list[int]
    """(p, q): features per example of each model at this layer (flattened or pooled)."""
    examples: int
    error: str | None = None


class SimilarityPair(Pair):
    """One measured pair: CKA per layer, in the models' layer order."""

    status: Literal["ok"] = "ok"
    cka: dict[str, float]
    """Layer -> linear CKA, for the layers that have one."""
    layers: dict[str, Layer]
    examples: int


class Subset(Model):
    """The test examples every pair of a target is compared on."""

    examples: int
    of: int
    seed: int
    stratified: bool
    """Drawn in proportion to each class (else uniformly)."""


class SimilarityEntry(TargetEntry):
    pairs: Pairs[SimilarityPair, SkippedPair] = Field(default_factory=list)
    subset: Subset


class SimilarityResult(AnalysisResult):
    targets: dict[str, Entry[SimilarityEntry]] = Field(default_factory=dict)
    split: Literal["test"] | None = None
    pooled: bool | None = None
    max_examples: int | None = None


# ----------------------------------------------------------------------------------------------
# computing


def _subset(data: Any, opts: SimilarityOptions) -> tuple[Any, dict[str, Any]]:
    """The test examples every pair is compared on, and how they were drawn."""
    indices, stratified = stratified_indices(
        dataset_targets(data), len(data), opts.max_examples, opts.subset_seed
    )
    subset = data if len(indices) == len(data) else take(data, indices)
    drawn = {
        "examples": len(indices),
        "of": len(data),
        "seed": opts.subset_seed,
        "stratified": stratified,
    }
    return subset, drawn


def _pairs(ctx: StudyContext, label: str) -> list[tuple[PairName, PlannedRun | None, PlannedRun]]:
    """(pair, A or None for P, B): P is the P run when the study pre-trained one."""
    pairs: list[tuple[PairName, PlannedRun | None, PlannedRun]] = list(
        study_pairs(ctx, label, same_init=True, every_p_t_ri_t=True)
    )
    return pairs + [("P/P-T", None, pt) for pt in ctx.independent("P-T", label)]


def _pair(
    ctx: StudyContext,
    opts: SimilarityOptions,
    pair: tuple[PairName, PlannedRun | None, PlannedRun],
    subset: Any,
    drawn: dict[str, Any],
) -> dict[str, Any]:
    name, a, b = pair
    p_run = ctx.p_run()
    needs = [r for r in (a if a is not None else p_run, b) if r is not None]
    start: dict[str, Any] = {"pair": name, "runs": [r.id for r in needs]}
    start["seeds"] = [b.seed] if a is None else [a.seed, b.seed]
    reason = ctx.unfinished(needs)
    if reason:
        return {**start, **skipped(reason)}
    try:
        if a is None:
            model_a, p_id = ctx.p_model(b)
            start["runs"] = [p_id, b.id]
        else:
            model_a = ctx.final_model(a)
        model_b = ctx.final_model(b)
        device = ctx.device
        layers = layer_similarity(
            model_a.to(device),
            model_b.to(device),
            iterate(subset, opts.batch_size, device=device),
            layers=opts.layers,
            pooled=opts.pooled,
            max_examples=None,
            estimator="auto",
            max_exact_bytes=opts.max_exact_bytes,
            expected_examples=drawn["examples"],
        )
    except (TransferscopeError, RuntimeError, MemoryError) as e:
        # One pair's failure (a missing file, memory) is reported there; the others run.
        return {**start, **failed(e)}
    return {
        **start,
        "status": "ok",
        "cka": {n: r.cka for n, r in layers.items() if r.cka is not None},
        "layers": {n: r.to_dict() for n, r in layers.items()},
        "examples": drawn["examples"],
    }


# ----------------------------------------------------------------------------------------------
# claim


def _ok(e: SimilarityEntry, name: str | None = None) -> list[SimilarityPair]:
    return [
        p for p in e.pairs if isinstance(p, SimilarityPair) and (name is None or p.pair == name)
    ]


@claim(
    "C4",
    "P-T models are more similar to each other in feature space than RI-T models.",
    "linear CKA of P-T/P-T pairs exceeds that of RI-T/RI-T pairs from independent inits at "
    f"every layer, each by more than the pair spread and {CKA_FLOOR:g}, ranges not "
    "overlapping; pairs holding a run at chance level are left out (the features of a model "
    "that learned nothing mean nothing).",
    **rules.PAIRS_CLAIM,
    short="P-T pairs more alike in features (CKA)",
)
def C4(e: SimilarityEntry, target: str, data: StudyData) -> TargetResult:
    layers: list[str] = []
    for p in _ok(e, "P-T/P-T"):
        layers += [n for n in p.cka if n not in layers]
    if not layers:
        return TargetResult(target, UNMEASURED, "P-T/P-T or RI-T/RI-T pair missing")
    # CKA cannot exceed 1: a layer where every pair, the least alike included, is within the
    # floor of 1 (e.g. the first convolution of one-channel images) cannot tell pairs apart.
    saturated = [n for n in layers if _saturated(e, n)]
    if len(saturated) == len(layers):
        return TargetResult(
            target,
            INCONCLUSIVE,
            f"every pair's CKA is within {CKA_FLOOR:g} of 1 at every layer",
            decide="no layer can tell the pairs apart: more seeds would not decide it",
        )
    layers = [n for n in layers if n not in saturated]

    def layer(name: str, baselines: Sequence[str]) -> rules.GroupOutcome:
        return rules.group_rule(
            e, lambda p: p["cka"].get(name), +1, "pairs", baselines, data,
            needs_learned=True, seeds=data.seeds, floor=CKA_FLOOR,
        )  # fmt: skip

    def outcome(baselines: Sequence[str]) -> rules.GroupOutcome:
        return rules.combine_outcomes([(name, layer(name, baselines)) for name in layers])

    result = rules.pairs_claim(
        target, data, outcome, why="CKA with a model that learned nothing means nothing"
    )
    if not saturated:
        return result
    note = f"; left out (every pair within {CKA_FLOOR:g} of CKA 1): {', '.join(saturated)}"
    controlled = result.controlled
    if controlled is not None:
        controlled = replace(controlled, measured=controlled.measured + note)
    return replace(result, measured=result.measured + note, controlled=controlled)


def _saturated(e: SimilarityEntry, layer: str) -> bool:
    """Whether every measured pair's CKA at ``layer`` is within the floor of 1."""
    values = [v for v in (p.cka.get(layer) for p in _ok(e)) if v is not None and finite(v)]
    return bool(values) and min(values) >= 1 - CKA_FLOOR


# ----------------------------------------------------------------------------------------------
# report


def _layers(pairs: list[SimilarityPair]) -> list[str]:
    """The layers of ``pairs`` from input to output."""
    layers: list[str] = []
    for p in pairs:
        layers += [n for n in p.cka if n not in layers]
    return rules.depth_order(layers) or layers


def cka_lines(e: SimilarityEntry, title: str) -> Figure | None:
    """Linear CKA per layer, one line per pair of models."""
    from transferscope.unitkit import figures as F

    pairs = [p for p in _ok(e) if p.cka]
    if not pairs:
        return None
    layers = _layers(pairs)
    fig, ax = F.subplots(figsize=(5.0, 3.2))
    x = np.arange(len(layers))
    for p in pairs:
        color, ls = F.pair_style(p.pair)
        y = [p.cka.get(n) if finite(p.cka.get(n)) else np.nan for n in layers]
        ax.plot(x, y, color=color, linestyle=ls, marker="o", markersize=3, label=p.pair)
    ax.set_xticks(x, layers, rotation=30, ha="right")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel("linear CKA (0 = unrelated, 1 = identical)")
    ax.set_title(title)
    F.legend_once(ax, outside=True)
    return fig


# ----------------------------------------------------------------------------------------------
# the unit


@register
class Similarity(Analysis, name="similarity", version=2, section=sections.SIMILARITY):
    """Feature similarity: linear CKA per layer (§3.2)."""

    claims = (C4,)

    def tables(self, result: SimilarityResult | None) -> dict[str, Table]:
        """``cka``: CKA per pair and layer (§3.2), layers input to output."""

        def values(pair: SimilarityPair) -> list[tuple[Any, ...]]:
            # Input to output: the JSON stores layers in key order ("stem" after "stages.3").
            layers = [(n, pair.layers[n]) for n in rules.depth_order(pair.layers)]
            return [(n, v.cka, v.estimator, v.examples) for n, v in layers]

        return {"cka": pair_table(result, ("layer", "cka", "estimator", "examples"), values)}

    def work(self, options: SimilarityOptions, target: TargetSize) -> Work:
        # Per pair of _pairs (four without a plan): both models over the shared test subset, and
        # each layer's CKA (most of the time: n x n Gram matrices of flattened conv maps).
        n = target.cap(options.max_examples, target.test)
        pairs = 4 if target.study is None else len(_pairs(target.study, target.label))
        per_pair = Work(forwards=2 * n, models=2)
        if target.model is not None and target.image_shape is not None:
            seen = facts(target.model, target.image_shape)
            for path in resolve_layers(target.model, target.model, options.layers).values():
                p = seen.features(path, options.pooled)
                minibatch = exact_state_bytes(p, p, n) > options.max_exact_bytes
                adds = cka_multiply_adds(p, p, n, minibatch, options.batch_size)
                per_pair += Work(multiply_adds=adds)
        return per_pair * pairs

    def compute(self, ctx: StudyContext, options: SimilarityOptions) -> SimilarityResult:
        plan: list[tuple[DataSpec, list]] = [(t, _pairs(ctx, t.label)) for t in ctx.cfg.targets]
        total, done = sum(len(p) for _, p in plan), 0
        targets: dict[str, Any] = {}
        for spec, pairs in plan:
            subset, drawn = _subset(ctx.cache.get(spec).test, options)
            entries = []
            for pair in pairs:
                ctx.progress(done, total, f"{spec.label}: {pair[0]}")
                done += 1
                entries.append(_pair(ctx, options, pair, subset, drawn))
            targets[spec.label] = {"status": "ok", "pairs": entries, "subset": drawn}
        ctx.progress(total, total, "done")
        return SimilarityResult.model_validate(
            {
                "targets": targets,
                "split": "test",
                "pooled": options.pooled,
                "max_examples": options.max_examples,
            }
        )

    def render(self, page: Page, target: str, e: SimilarityEntry) -> str:
        from transferscope.unitkit.page import esc, table

        pairs = _ok(e)
        layers = _layers(pairs)
        rows = [(p.pair, ", ".join(p.runs), *[fmt(p.cka.get(n)) for n in layers]) for p in pairs]
        out = table(("pair", "runs", *layers), rows, numeric=tuple(range(2, 2 + len(layers))))
        s = e.subset
        how = "stratified by class" if s.stratified else "uniformly"
        out += (
            f'<p class="small">Every pair is compared on the same {esc(s.examples)}'
            f" of {esc(s.of)} test examples, drawn {how} with seed {esc(s.seed)}.</p>"
        )
        estimators: dict[str, str] = {}
        for p in pairs:
            for name, layer in p.layers.items():
                estimators.setdefault(name, layer.estimator)
                if layer.error:
                    out += f'<p class="notrun">{esc(p.pair)} at {esc(name)}: {esc(layer.error)}</p>'
        if estimators:
            out += (
                '<p class="small">Estimator per layer: '
                + esc(", ".join(f"{n}: {e}" for n, e in estimators.items()))
                + ".</p>"
            )
        out += "".join(
            f'<p class="small">{esc(p.pair)} skipped: {esc(p.reason)}</p>'
            for p in e.pairs
            if not isinstance(p, SimilarityPair)
        )
        return out + page.figure(
            cka_lines(e, f"Feature similarity, target {target}"),
            f"cka-{target}",
            f"Linear CKA per layer for every pair of models on {target}.",
        )


__all__ = ["Similarity", "SimilarityEntry", "SimilarityOptions", "SimilarityResult", "cka_lines"]
