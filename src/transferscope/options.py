"""Base classes of config sections, shared by the study config and the analysis units' options.

Kept apart from :mod:`transferscope.config` so that an analysis unit can declare its options
without importing the whole study config (which in turn collects the units' options).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, model_validator

SEED_MAX = 2**32 - 1
"""Largest seed a config takes: numpy's and every library's seed range (0..2^32-1)."""


def _seed_in_range(value: int) -> int:
    if not 0 <= value <= SEED_MAX:
        raise ValueError(f"a seed is an integer from 0 to {SEED_MAX} (2^32 - 1)")
    return value


Seed = Annotated[int, AfterValidator(_seed_in_range)]
"""A seed of a config: an integer in 0..2^32-1, checked when the config is read."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AnalysisOptions(Section):
    """Options every analysis has: whether it runs, and a cap on the examples it reads."""

    enabled: bool = True
    max_examples: int | None = Field(default=None, ge=1)


def _renamed_fraction(data: object) -> object:
    if isinstance(data, dict) and "fraction_of_final" in data:
        raise ValueError(
            "'fraction_of_final' is gone: speed is now measured to one threshold common to the "
            "runs compared, 'threshold_fraction' of the way from chance to the lower final "
            "metric; remove the key or set threshold_fraction"
        )
    return data


class SpeedOptions(AnalysisOptions):
    """Options of analyses that measure training speed (curves, trajectory)."""

    threshold_fraction: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="speed = training time to reach chance + this × (lower final − chance)",
    )

    _no_old_fraction = model_validator(mode="before")(_renamed_fraction)


Granularity = Literal["auto", "blocks", "layers"]
GRANULARITY_HELP = (
    "modules of the depth trend: residual blocks, weight layers, or auto (blocks when the model "
    "has 6 or more with the stem, else layers)"
)


__all__ = [
    "GRANULARITY_HELP",
    "SEED_MAX",
    "AnalysisOptions",
    "Granularity",
    "PositiveInt",
    "Section",
    "Seed",
    "SpeedOptions",
]
