"""Common and uncommon mistakes of two models (Neyshabur et al. 2020, §3.2): claim C3.

Per target and pair of final models (P-T/P-T, RI-T/RI-T, the same-init RI-T pair, the control
pair P@0-T/P@0-T, and P-T/RI-T across seeds): on the saved test outputs, the fraction of test
examples both get right, exactly one gets wrong (A only, B only: *uncommon* mistakes) and both
get wrong. Multi-label targets count (example, label) decisions. The test images behind the first
P-T/RI-T pair's uncommon cells are saved for the report's image grids. The math is in
:mod:`transferscope.measures.mistakes`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from transferscope import atomic, paths
from transferscope.errors import TransferscopeError
from transferscope.measures.mistakes import compare_mistakes
from transferscope.names import name_problem
from transferscope.options import AnalysisOptions
from transferscope.registry import register
from transferscope.unitkit import rules, sections
from transferscope.unitkit.context import StudyContext, skipped
from transferscope.unitkit.pairs import Pair, PairName, Pairs, SkippedPair, pair_entry, study_pairs
from transferscope.unitkit.results import AnalysisResult, Entry, Model, TargetEntry
from transferscope.unitkit.rules import TargetResult, fmt
from transferscope.unitkit.unit import Analysis, claim

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from transferscope.studydir.plan import PlannedRun
    from transferscope.unitkit.page import Page
    from transferscope.unitkit.study_data import StudyData

# How many example indices of each cell go into the JSON (the counts are always full).
MAX_INDICES = 64
# Images saved per cell for the report's grids.
EXAMPLES_PER_CELL = 32
# The report's image grids: cell of analyses/mistakes/<target>.npz -> its title.
MISTAKE_CELLS = {
    "pt_wrong_rit_right": "P-T wrong, RI-T right",
    "rit_wrong_pt_right": "RI-T wrong, P-T right",
}


class MistakesOptions(AnalysisOptions):
    pass


# ----------------------------------------------------------------------------------------------
# result


class Counts(Model):
    """Examples per cell (multi-label: (example, label) decisions); the four cells sum to n."""

    both_correct: int
    only_a_wrong: int
    only_b_wrong: int
    both_wrong: int
    uncommon: int
    """only_a_wrong + only_b_wrong."""


class Fractions(Model):
    """:class:`Counts` divided by n (NaN for an empty test set)."""

    both_correct: float
    only_a_wrong: float
    only_b_wrong: float
    both_wrong: float
    uncommon: float


class Indices(Model):
    """The first test-set positions of each cell (at most ``max_indices_per_cell``); for
    multi-label cells a position is ``example * labels + label``."""

    both_correct: list[int]
    only_a_wrong: list[int]
    only_b_wrong: list[int]
    both_wrong: list[int]


class Cells(Model):
    """The four cells over n test examples (:meth:`~transferscope.measures.mistakes.MistakeCells.to_dict`)."""

    n: int
    counts: Counts
    fractions: Fractions
    indices: Indices


class MistakePair(Pair, Cells):
    """One measured pair: A is the first model of the pair's name, B the second."""

    status: Literal["ok"] = "ok"
    task: Literal["multiclass", "multilabel"]
    per_task: list[Cells] | None = None
    """Multi-label only: the cells of each label over the n examples."""


class MistakesEntry(TargetEntry):
    pairs: Pairs[MistakePair, SkippedPair] = Field(default_factory=list)


class MistakesResult(AnalysisResult):
    targets: dict[str, Entry[MistakesEntry]] = Field(default_factory=dict)
    max_indices_per_cell: int | None = None


# ----------------------------------------------------------------------------------------------
# computing


def _pair(
    ctx: StudyContext, name: PairName, a: PlannedRun, b: PlannedRun
) -> tuple[dict[str, Any], tuple[Any, int] | None]:
    """A pair's entry, and when measured its cells over every decision with the number of
    labels per example (1 for multiclass), for the saved example images."""
    start = pair_entry(name, a, b)
    reason = ctx.unfinished([a, b])
    if reason:
        return {**start, **skipped(reason)}, None
    try:
        out_a, y_a = ctx.predictions(a)
        out_b, y_b = ctx.predictions(b)
    except TransferscopeError as e:
        return {**start, **skipped(str(e))}, None
    if y_a.shape != y_b.shape or not np.array_equal(y_a, y_b):
        return {**start, **skipped("the two runs were tested on other examples")}, None
    result = compare_mistakes(out_a, out_b, y_a)
    tasks = out_a.shape[1] if y_a.ndim == 2 else 1
    return {**start, "status": "ok", **result.to_dict(MAX_INDICES)}, (result.cells, tasks)


def _write_examples(ctx: StudyContext, pt: PlannedRun, cells: Any, tasks: int) -> None:
    """Save the test images behind "P-T wrong, RI-T right" and the reverse for the report's grids.

    ``analyses/mistakes/<target>.npz`` holds ``pt_wrong_rit_right`` (N, C, H, W) float32 images as
    fed to the model, with ``..._indices`` (N,); likewise ``rit_wrong_pt_right``. Multi-label cells
    count (example, task) pairs, so an example index is the flat index // tasks.
    """
    test = ctx.cache.get(pt.spec.data).test
    arrays: dict[str, np.ndarray] = {}
    for cell, idx in (
        ("pt_wrong_rit_right", cells.only_a_wrong),
        ("rit_wrong_pt_right", cells.only_b_wrong),
    ):
        examples = np.unique(np.asarray(idx) // tasks)[:EXAMPLES_PER_CELL]
        if len(examples) == 0:
            continue  # the report shows nothing for an empty cell
        arrays[cell] = np.stack([np.asarray(test[int(i)][0], dtype=np.float32) for i in examples])
        arrays[f"{cell}_indices"] = examples.astype(np.int64)
    buffer = io.BytesIO()
    # numpy's default, spelt out: numpy's stubs would otherwise match **arrays against it.
    np.savez_compressed(buffer, allow_pickle=True, **arrays)
    atomic.write_bytes(paths.mistake_examples_path(ctx.store.root, pt.target), buffer.getvalue())


# ----------------------------------------------------------------------------------------------
# claim


@claim(
    "C3",
    "Two P-T models make fewer uncommon mistakes than two RI-T models.",
    "the fraction of uncommon mistakes (exactly one model wrong) of P-T/P-T pairs is below "
    "that of RI-T/RI-T pairs from independent inits, by more than the pair spread and twice "
    "the binomial error, ranges not overlapping; pairs holding a run at chance level are left "
    "out (its mistakes are guesses).",
    **rules.PAIRS_CLAIM,
    short="P-T pairs make fewer uncommon mistakes",
)
def C3(e: MistakesEntry, target: str, data: StudyData) -> TargetResult:
    measured = [rules.plain(p) for p in e.pairs if isinstance(p, MistakePair)]
    floor = rules.fraction_floor(measured)

    def outcome(baselines: Sequence[str]) -> rules.GroupOutcome:
        return rules.group_rule(
            e, lambda p: p["fractions"]["uncommon"], -1, "pairs", baselines, data,
            needs_learned=True, seeds=data.seeds, floor=floor,
        )  # fmt: skip

    return rules.pairs_claim(
        target,
        data,
        outcome,
        "uncommon mistakes ",
        "the mistakes of a model that learned nothing are guesses",
    )


# ----------------------------------------------------------------------------------------------
# report


def image_grid(
    images: np.ndarray, title: str, captions: Sequence[str] | None = None, columns: int = 8
) -> Figure | None:
    """Test images (N, C, H, W) or (N, H, W), each min-max scaled to [0, 1] on its own.

    The mistakes analysis stores normalised tensors; per-image min-max scaling makes them viewable
    without knowing the dataset's normalisation.
    """
    from transferscope.unitkit import figures as F

    arr = np.asarray(images, dtype=float)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[0] == 0:
        return None
    arr = arr[:32]
    n, _, h, w = arr.shape
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    rgb = arr.shape[1] >= 3
    # One montage in one axes: drawing 32 small axes took most of the report's time.
    gap, band = max(1, h // 14), (max(4, h // 3) if captions is not None else 0)
    cell_h, cell_w = band + h + gap, w + gap
    canvas = np.ones((rows * cell_h, cols * cell_w, 3))
    for i in range(n):
        img = arr[i, :3] if rgb else arr[i, :1]
        lo, hi = np.nanmin(img), np.nanmax(img)
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        tile = np.transpose(img, (1, 2, 0)) if rgb else np.repeat(img[0][:, :, None], 3, axis=2)
        r, c = divmod(i, cols)
        canvas[r * cell_h + band : r * cell_h + band + h, c * cell_w : c * cell_w + w] = tile
    fig, ax = F.subplots(figsize=(1.1 * cols, 1.25 * rows))
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    if captions is not None:
        for i, caption in enumerate(captions[:n]):
            r, c = divmod(i, cols)
            ax.text(
                c * cell_w + w / 2, r * cell_h + band - 1, caption,
                ha="center", va="bottom", fontsize=7,
            )  # fmt: skip
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def mistake_examples(page: Page, target: str, e: MistakesEntry) -> str:
    """Image grids from analyses/mistakes/<target>.npz, or the example indices."""
    from transferscope.unitkit.page import esc, not_run, table

    path = None
    if name_problem(target) is None:  # a study written before ids were checked may hold others
        path = paths.mistake_examples_path(page.data.root, target)
    out = []
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as err:
            return not_run(f"{path.name} could not be read: {err}")
        for cell, title in MISTAKE_CELLS.items():
            if cell not in arrays:
                continue
            idx = arrays.get(f"{cell}_indices")
            captions = [f"#{int(i)}" for i in idx] if idx is not None else None
            out.append(
                page.figure(
                    image_grid(arrays[cell], f"{title} ({target})", captions),
                    f"mistakes-{target}-{cell}",
                    f"Test examples {title.lower()} on {target} (each image min-max scaled).",
                )
            )
        if out:
            return "<h4>Examples</h4>" + "".join(out)
    pair = next((p for p in e.pairs if isinstance(p, MistakePair) and p.pair == "P-T/RI-T"), None)
    if pair is None:
        return ""
    # In a P-T/RI-T pair A is P-T and B is RI-T.
    rows = [
        ("P-T wrong, RI-T right", " ".join(str(i) for i in pair.indices.only_a_wrong) or "none"),
        ("RI-T wrong, P-T right", " ".join(str(i) for i in pair.indices.only_b_wrong) or "none"),
    ]
    return (
        f"<h4>Examples (test-set indices, runs {esc(' / '.join(pair.runs))})</h4>"
        + table(("cell", "test indices (first ones)"), rows)
        + '<p class="small">No example images saved for this target '
        f"(analyses/{paths.MISTAKE_EXAMPLES}/&lt;target&gt;.npz).</p>"
    )


# ----------------------------------------------------------------------------------------------
# the unit


@register
class Mistakes(Analysis, name="mistakes", version=2, section=sections.MISTAKES):
    """Common and uncommon mistakes of two models (§3.2)."""

    claims = (C3,)

    def compute(self, ctx: StudyContext, options: MistakesOptions) -> MistakesResult:
        plan = {
            t.label: study_pairs(ctx, t.label, same_init=True, every_p_t_ri_t=True)
            for t in ctx.cfg.targets
        }
        total, done = sum(len(p) for p in plan.values()), 0
        targets: dict[str, Any] = {}
        for target, pairs in plan.items():
            entries = []
            examples_written = False
            for name, a, b in pairs:
                ctx.progress(done, total, f"{target}: {name} {a.id} / {b.id}")
                done += 1
                pair, measured = _pair(ctx, name, a, b)
                entries.append(pair)
                if measured is not None and name == "P-T/RI-T" and not examples_written:
                    _write_examples(ctx, a, *measured)
                    examples_written = True
            targets[target] = {"status": "ok", "pairs": entries}
        ctx.progress(total, total, "done")
        return MistakesResult.model_validate(
            {"targets": targets, "max_indices_per_cell": MAX_INDICES}
        )

    def render(self, page: Page, target: str, e: MistakesEntry) -> str:
        from transferscope.unitkit.page import Raw, esc, table

        rows: list[tuple[object, ...]] = []
        for p in e.pairs:
            if not isinstance(p, MistakePair):
                skip = Raw(f"<em>skipped: {esc(p.reason)}</em>")
                rows.append((p.pair, ", ".join(p.runs), "-", "-", "-", "-", "-", skip))
                continue
            f = p.fractions
            rows.append(
                (
                    p.pair,
                    ", ".join(p.runs),
                    p.n,
                    fmt(f.both_correct),
                    fmt(f.only_a_wrong),
                    fmt(f.only_b_wrong),
                    fmt(f.both_wrong),
                    fmt(f.uncommon),
                )
            )
        out = table(
            (
                "pair (A/B)",
                "runs",
                "n",
                "both correct",
                "only A wrong",
                "only B wrong",
                "both wrong",
                "uncommon",
            ),
            rows,
            numeric=(2, 3, 4, 5, 6, 7),
        )
        if any(isinstance(p, MistakePair) and p.task == "multilabel" for p in e.pairs):
            out += (
                '<p class="small">Multi-label target: cells count (example, label) decisions.</p>'
            )
        return out + mistake_examples(page, target, e)

    def render_section(self, page: Page, result: AnalysisResult | None) -> str:
        return (
            '<p class="small">Fractions of the test set. Uncommon mistakes: exactly one of the two '
            "models is wrong.</p>" + page.per_target(self.name, result, self.render)
        )


__all__ = ["Mistakes", "MistakesEntry", "MistakesOptions", "MistakesResult", "image_grid"]
