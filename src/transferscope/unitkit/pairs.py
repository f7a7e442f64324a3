"""The one catalogue of model pairs the analyses compare, with their names and what they mean.

Pair names are typed (:data:`PairName`): a result model that stores a pair name rejects one not
listed here, so every analysis, figure and claim spells a pair the same way.

=======================  ===================================================================
``P-T/P-T``              two fine-tunes of P with different seeds
``RI-T/RI-T``            two trainings from independent random inits
``RI-T/RI-T same init``  two trainings from one shared random init (different data order)
``P@0-T/P@0-T``          the control pair: two fine-tunes from P's untrained init (the same
                         start and recipe as P-T, without pre-training)
``P-T/RI-T``             a fine-tune and a training from random init
``P/P-T``, ``P-T/P``     P and a fine-tune of it (body only where the heads differ)
``RI-T/P``               a training from random init and P
``P@k/P-T``              the checkpoint P@k of pre-training and the final P-T
``P@k-T/P-T``            the fine-tune of P@k and the final P-T
=======================  ===================================================================
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, TypeVar, Union

from pydantic import Field

from transferscope.unitkit.results import Model

if TYPE_CHECKING:  # pragma: no cover
    from transferscope.studydir.plan import PlannedRun
    from transferscope.unitkit.context import StudyContext

PairName = Literal[
    "P-T/P-T",
    "RI-T/RI-T",
    "RI-T/RI-T same init",
    "P@0-T/P@0-T",
    "P-T/RI-T",
    "P/P-T",
    "P-T/P",
    "RI-T/P",
    "P@k/P-T",
    "P@k-T/P-T",
]
CONTROL_PAIR: PairName = "P@0-T/P@0-T"
SAME_INIT: PairName = "RI-T/RI-T same init"
BASELINES: tuple[PairName, ...] = ("RI-T/RI-T", SAME_INIT, CONTROL_PAIR)
"""What "P-T models are alike" is compared with: independent RI-T models, the RI-T pair from
one shared random init, and the control pair."""


def study_pairs(
    ctx: StudyContext, target: str, same_init: bool = False, every_p_t_ri_t: bool = False
) -> list[tuple[PairName, PlannedRun, PlannedRun]]:
    """P-T/P-T and RI-T/RI-T over seeds, P-T/RI-T at matching seeds (unshuffled runs).

    With ``same_init`` also the two baselines that tell pre-training from a merely shared
    starting point: :data:`SAME_INIT` and :data:`CONTROL_PAIR`. ``every_p_t_ri_t`` pairs P-T and
    RI-T across seeds too: cheap measures use the extra pairs to estimate how much one pair
    differs from another (the noise of the claims that compare pairs).
    """
    pts, rits = ctx.independent("P-T", target), ctx.independent("RI-T", target)
    out: list[tuple[PairName, PlannedRun, PlannedRun]] = [
        ("P-T/P-T", a, b) for a, b in itertools.combinations(pts, 2)
    ]
    out += [("RI-T/RI-T", a, b) for a, b in itertools.combinations(rits, 2)]
    out += [("P-T/RI-T", a, b) for a in pts for b in rits if every_p_t_ri_t or a.seed == b.seed]
    if same_init:
        by_id = ctx.plan.by_id()
        for r in ctx.runs(kind="RI-T", target=target, shuffle=None):
            if r.same_init_as and r.same_init_as in by_id:
                out.append((SAME_INIT, by_id[r.same_init_as], r))
        out += [(CONTROL_PAIR, a, b) for a, b in ctx.control_pairs(target)]
    return out


def pair_entry(name: PairName, a: PlannedRun, b: PlannedRun, **extra: Any) -> dict[str, Any]:
    """The start of a pair's result entry: its name, run ids and seeds."""
    return {"pair": name, "runs": [a.id, b.id], "seeds": [a.seed, b.seed], **extra}


class Pair(Model):
    """What every pair entry of a result starts with (:func:`pair_entry`)."""

    pair: PairName
    runs: list[str]
    """The run ids compared (a pair against P: P's run, or ``<run>@start`` for an external P)."""
    seeds: list[int] = Field(default_factory=list)
    """The seeds of the compared runs that have one (one seed for a pair against P)."""


class SkippedPair(Pair):
    """A pair that could not be measured (runs unfinished, a file missing), and why."""

    status: Literal["skipped", "failed"]
    reason: str = ""


def pairs_of(model: type[Pair], skipped: type[SkippedPair] = SkippedPair) -> Any:
    """The annotation of a list of pair entries: ``model`` when measured, else ``skipped``."""
    # A type built at run time for pydantic, which mypy cannot check.
    return list[Annotated[model | skipped, Field(discriminator="status")]]  # type: ignore[valid-type]


P = TypeVar("P", bound=Pair)
S = TypeVar("S", bound=SkippedPair)

if TYPE_CHECKING:
    # For the type checker: a field ``Pairs[M, S]`` is a list of M (measured) or S (not).
    Pairs: TypeAlias = list[Union[P, S]]  # noqa: UP007  (a generic alias needs Union)
else:

    class Pairs:
        """``Pairs[Model, SkippedModel]``: the annotation of a list of pair entries, ``Model``
        when measured, else ``SkippedModel`` (told apart by ``status``; :func:`pairs_of`)."""

        def __class_getitem__(cls, types: tuple[type[Pair], type[SkippedPair]]) -> Any:
            return pairs_of(*types)


__all__ = [
    "BASELINES",
    "CONTROL_PAIR",
    "SAME_INIT",
    "Pair",
    "PairName",
    "Pairs",
    "SkippedPair",
    "pair_entry",
    "pairs_of",
    "study_pairs",
]
