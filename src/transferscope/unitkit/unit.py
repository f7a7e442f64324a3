"""An analysis unit: everything about one analysis of a study, declared in one place.

A unit says

- its **options** (a pydantic model, the config's ``analyses.<name>`` section),
- its **result** (a pydantic model of ``analyses/<name>.json``, see :mod:`.results`) and a
  ``version`` that changes whenever the result's meaning or layout changes,
- how the result is **computed** from a study (:meth:`Analysis.compute`, reading runs through a
  :class:`~transferscope.unitkit.context.StudyContext`; the math lives in
  :mod:`transferscope.measures` as functions on tensors and modules),
- how its report **section** is drawn from the result (:meth:`Analysis.render`),
- the **claims** it decides (:class:`Claim`: rule in words, and a judge per target; written
  with :func:`claim` on the judge function, so that the words stand next to the rule).

Registered once (:func:`transferscope.registry.register`), a unit appears in the
config, ``transferscope analyze --only``, the Ray tasks, the report and the findings table with
no other file touched. ``docs/extending.md`` walks through writing one.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from transferscope.errors import TransferscopeError
from transferscope.options import AnalysisOptions
from transferscope.unitkit.results import AnalysisResult, TargetEntry
from transferscope.unitkit.tables import Table

if TYPE_CHECKING:  # pragma: no cover
    from transferscope.unitkit.context import StudyContext
    from transferscope.unitkit.page import Page
    from transferscope.unitkit.rules import TargetResult
    from transferscope.unitkit.study_data import StudyData


@dataclass(frozen=True)
class ReportSection:
    """A section of the report: several units may share one (e.g. two basin analyses)."""

    id: str
    title: str


Judge = Callable[[Any, str, "StudyData"], "TargetResult"]
"""``judge(entry, target, data)``: a claim's verdict on one target's result."""


@dataclass(frozen=True)
class Claim:
    """One claim a unit decides.

    ``judge(entry, target, data)`` turns the unit's result for one target (an ``ok`` entry of
    its result model) into a :class:`~transferscope.report.findings.TargetResult` (the paper's
    comparison, and with a ``controlled`` rule the controlled verdict as its ``controlled``);
    the findings table applies it to every target and marks targets without a result "not
    measured".

    A claim about how results vary *between* targets (``across=True``) is judged once:
    ``judge(result, "across targets", data)`` gets the unit's whole result and returns one
    :class:`~transferscope.report.findings.TargetResult`, shown as one row with one verdict.
    """

    id: str
    claim: str
    rule: str
    judge: Judge
    order: float | None = None
    """Position in the findings table (claims sort by it); by default the number in the id,
    so that C2 comes before C10."""
    across: bool = False
    """Judge the whole result once, across targets, instead of once per target."""
    controlled: str | None = None
    """The rule of the claim's controlled verdict (is pre-training the cause?), which the judge
    returns as its result's ``controlled``; None for a claim without a control."""
    meaning: str = ""
    """One sentence: what it means for a study when the paper's comparison holds and the
    controlled one does not."""
    guards_chance: bool = False
    """The judge itself voids what needs a run that learned (naming the runs it needs,
    :func:`transferscope.unitkit.rules.voided`). Otherwise the findings table makes the verdict
    inconclusive whenever any run the entry names is at chance level."""
    short: str = ""
    """A few words for the verdict grid (the claim itself by default)."""

    def __post_init__(self) -> None:
        if self.order is None:
            digits = re.search(r"\d+", self.id)
            object.__setattr__(self, "order", float(digits[0]) if digits else 0.0)


def claim(
    id: str,
    claim: str,
    rule: str,
    *,
    controlled: str | None = None,
    meaning: str = "",
    order: float | None = None,
    across: bool = False,
    guards_chance: bool = False,
    short: str = "",
) -> Callable[[Judge], Claim]:
    """Decorator: the judge function below it becomes the :class:`Claim` ``id``, so that the
    claim and its rule in words stand next to the code that decides it::

        @claim("C3", "Two P-T models make fewer uncommon mistakes than two RI-T models.",
               "the fraction of uncommon mistakes ... ranges not overlapping.")
        def C3(e: MistakesEntry, target: str, data: StudyData) -> TargetResult: ...

    The name ``C3`` is then the Claim (its ``judge`` is the function), listed in the unit's
    ``claims = (C3,)``.
    """

    def make(judge: Judge) -> Claim:
        return Claim(
            id, claim, rule, judge, order, across, controlled, meaning, guards_chance, short
        )

    return make


@dataclass(frozen=True)
class Work:
    """What an analysis spends its time on, in units the runner times on the machine it runs on
    (:class:`~transferscope.study.estimate.AnalysisRates`): its estimate before it starts.

    Counts, not seconds: a unit counts them from its options and the study's plan and sizes
    (:meth:`Analysis.work`); the runner multiplies each by its measured seconds.
    """

    forwards: float = 0.0
    """Examples sent through a model in eval mode (no gradient), at full cost: a forward that
    replays the modules before the one probed counts only the fraction it computes."""
    train: float = 0.0
    """Examples through a training step (forward, backward, optimiser update)."""
    multiply_adds: float = 0.0
    """Float64 multiply-adds outside the model (CKA's Gram matrices and feature products)."""
    models: float = 0.0
    """Models built and weight files loaded into them."""
    aucs: float = 0.0
    """ROC AUCs computed over a multi-label target's test subset, one per label and evaluation
    (an evaluation of a multi-class target, its accuracy, costs nothing beside the forwards)."""
    calls: float = 0.0
    """Model calls on weights of their own (a point of a path, a perturbed module): building
    the state and swapping it in, per batch; what a small model's evaluations mostly cost."""
    lines: tuple[tuple[Hashable, Work], ...] = ()
    """Straight lines, each (what it depends on, its work): measured once per call, by whichever
    analysis asks first, so the runner counts a line shared with an analysis that runs earlier
    only there (:meth:`alone`)."""

    def __add__(self, other: Work) -> Work:
        return Work(
            self.forwards + other.forwards,
            self.train + other.train,
            self.multiply_adds + other.multiply_adds,
            self.models + other.models,
            self.aucs + other.aucs,
            self.calls + other.calls,
            self.lines + other.lines,
        )

    def __mul__(self, k: int) -> Work:
        """``k`` times this work (a whole number: its lines are repeated, not scaled)."""
        return Work(
            self.forwards * k,
            self.train * k,
            self.multiply_adds * k,
            self.models * k,
            self.aucs * k,
            self.calls * k,
            self.lines * int(k),
        )

    __rmul__ = __mul__

    def alone(self, measured: set[Hashable] | None = None) -> Work:
        """This work with its lines counted in: each distinct line once, and none already in
        ``measured`` (the lines of the analyses that run before; the new ones are added)."""
        total = replace(self, lines=())
        seen = set() if measured is None else measured
        for key, work in self.lines:
            if key not in seen:
                seen.add(key)
                total += work
        return total

    @property
    def passes(self) -> int:
        """Forward-pass equivalents (a training step counts 3) of the work alone: the size an
        estimate quotes."""
        work = self.alone() if self.lines else self
        return round(work.forwards + 3 * work.train)


@dataclass(frozen=True)
class TargetSize:
    """One target as a unit's cost estimate sees it (:meth:`Analysis.work`)."""

    label: str
    train: int
    """Training examples."""
    test: int
    """Test examples."""
    trajectory_runs: int = 0
    """P@k-T runs the plan has for the target."""
    model: Any = None
    """The study's architecture for the target (any weights), when the estimate has one: for
    units whose work grows with the model's modules."""
    image_shape: tuple[int, int, int] | None = None
    """(C, H, W) of the target's images, the input ``model`` takes."""
    study: Any = None
    """The plan's runs by role (a :class:`~transferscope.unitkit.context.StudyContext` that
    answers from the plan alone, without reading files): the pairs and paths a unit will
    measure, counted the way it picks them. None when the estimate has no plan."""
    eval_batch: int = 256
    """Examples per evaluation batch of the target's runs."""
    labels: int = 0
    """Labels of a multi-label target (each evaluation computes one AUC per label); 0 for a
    multi-class one."""

    def evaluations(self, n: float) -> Work:
        """The metric of ``n`` evaluations of the test subset: one AUC per label each for a
        multi-label target (nothing beyond the forwards for a multi-class one)."""
        return Work(aucs=n * self.labels)

    def batches(self, examples: int) -> int:
        """Evaluation batches of ``examples`` examples."""
        return -(-examples // max(self.eval_batch, 1))

    @staticmethod
    def cap(n: int | None, total: int) -> int:
        """``n`` examples of a split of ``total`` (None: all of them)."""
        return total if n is None else min(n, total)


class Analysis:
    """Base class of an analysis unit; subclass it, declaring the unit in the class statement,
    and register it::

        @register
        class Curves(Analysis, name="curves", version=2, section=sections.FEATURE_REUSE):
            '''Learning curves, speed to a common threshold, block shuffling (§3.1).'''

            claims = (C1, C2)  # each made by @claim(...) on its judge

            def compute(self, ctx: StudyContext, options: CurvesOptions) -> CurvesResult: ...

    - ``name``: the result file's and the config key's name (``analyses/<name>.json``);
    - ``version``: raise it whenever the result's meaning or layout changes (a result of an
      older version is recomputed);
    - ``section``: the report section the unit draws into;
    - the docstring's first line is the unit's ``title`` (one line for ``--help`` and docs);
    - ``Options`` and ``Result`` are the annotations of :meth:`compute`'s ``options`` and its
      return value;
    - ``claims``: the claims the unit decides.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    section: ClassVar[ReportSection]
    version: ClassVar[int] = 1
    Options: ClassVar[type[AnalysisOptions]] = AnalysisOptions
    Result: ClassVar[type[AnalysisResult]] = AnalysisResult
    claims: ClassVar[tuple[Claim, ...]] = ()

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        version: int | None = None,
        section: ReportSection | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        for attr, value in (("name", name), ("version", version), ("section", section)):
            if value is not None:
                setattr(cls, attr, value)
        if name is not None and cls.__doc__ and "title" not in vars(cls):
            cls.title = cls.__doc__.strip().splitlines()[0]
        if "compute" in vars(cls):
            cls.Options, cls.Result = _compute_types(cls)

    def compute(self, ctx: StudyContext, options: Any) -> AnalysisResult:
        """The result for the study ``ctx`` reads, with ``options`` (an instance of Options).

        Targets or pairs that cannot be measured get a skipped entry with the reason; runs the
        analysis needed but found unfinished are recorded through ``ctx.done``.
        """
        raise NotImplementedError

    def work(self, options: Any, target: TargetSize) -> Work:
        """What the unit spends its time on for one target (:class:`Work`): its time estimate
        before it starts and its share of ``transferscope estimate``. The default counts
        :meth:`forward_passes` as full forwards; nothing, for a unit that reads files only."""
        return Work(forwards=self.forward_passes(options, target))

    def forward_passes(self, options: Any, target: TargetSize) -> int:
        """Examples the unit sends through a model for one target (a forward pass each; a
        training step counts 3), for a unit that counts no finer than that (:meth:`work`
        counts each kind of work apart). 0, the default, for a unit that reads files only."""
        return 0

    @classmethod
    def estimates_work(cls) -> bool:
        """Whether the unit says what it costs (it overrides :meth:`work` or
        :meth:`forward_passes`); a unit that reads files only does not."""
        return cls.work is not Analysis.work or cls.forward_passes is not Analysis.forward_passes

    def has_results(self, result: AnalysisResult) -> bool:
        """Whether ``result`` measured anything (else the JSON's status is 'skipped')."""
        return any(_entry_ok(entry) for entry in result.targets.values())

    def tables(self, result: Any) -> dict[str, Table]:
        """The notebook's tables of ``result`` (:meth:`transferscope.notebook.Study.table`):
        ``{name: Table}``, one row per measured number; none by default. Units that name the
        same table add their rows to it."""
        return {}

    def render(self, page: Page, target: str, entry: Any) -> str:
        """HTML of one target's ``ok`` entry (figures through ``page.figure``)."""
        raise NotImplementedError

    def render_section(self, page: Page, result: AnalysisResult | None) -> str:
        """The unit's part of its report section: by default one sub-section per target."""
        return page.per_target(self.name, result, self.render)


def _compute_types(cls: type[Analysis]) -> tuple[type[AnalysisOptions], type[AnalysisResult]]:
    """The ``options`` and return annotations of ``cls.compute``: the unit's Options and Result."""
    try:
        hints = typing.get_type_hints(cls.compute)
    except NameError as e:
        raise TransferscopeError(
            f"analysis unit {cls.__name__}: the annotations of compute() cannot be resolved ({e}); "
            "import the types it names at run time, not under TYPE_CHECKING"
        ) from None
    options, result = hints.get("options"), hints.get("return")
    for what, value, base in (
        ("options", options, AnalysisOptions),
        ("return", result, AnalysisResult),
    ):
        if not (isinstance(value, type) and issubclass(value, base)):
            raise TransferscopeError(
                f"analysis unit {cls.__name__}: compute() must annotate its {what} with a "
                f"subclass of {base.__name__} (got {value!r})"
            )
    return options, result  # type: ignore[return-value]


def _entry_ok(entry: TargetEntry) -> bool:
    # Entries made of pairs count when any pair was measured: an 'ok' entry whose pairs were all
    # skipped measured nothing.
    pairs = getattr(entry, "pairs", None)
    if entry.status == "ok" and pairs is None:
        return True
    return any(getattr(p, "status", None) == "ok" for p in pairs or [])


__all__ = ["Analysis", "Claim", "ReportSection", "TargetSize", "Work", "claim"]
