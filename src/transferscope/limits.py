"""Counts a user gives (threads, jobs, loader and figure workers) bounded by what the machine has.

A number one typo away from a sensible one (``--threads 10000`` for ``--threads 10``) would start
thousands of threads or processes, exhaust the machine's process limit for every user on it, and
then die with a MemoryError. Such a count is refused before anything starts: more than
:data:`PER_CORE` per CPU core this process may use (its affinity mask, which a job scheduler
sets, else every core) is refused with one line naming the value, the limit and the cores. Up to
that, oversubscription is the user's choice (it can pay off for work that waits on I/O).
"""

from __future__ import annotations

import os

from transferscope.errors import TransferscopeError

PER_CORE = 4
"""Threads or processes per usable CPU core at most."""


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity mask (set by SLURM, taskset, cgroups
    cpusets) where the OS has one, else every core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def limit() -> int:
    """The most threads or processes a count may ask for on this machine."""
    return PER_CORE * usable_cores()


def _too_many(what: str) -> TransferscopeError:
    cores = usable_cores()
    return TransferscopeError(
        f"{what} is more than this machine can run: at most {PER_CORE * cores} "
        f"({PER_CORE} per CPU core, and this process may use {cores} cores); give a smaller "
        "number"
    )


def check_count(name: str, value: int | None, minimum: int = 1, where: str = "") -> None:
    """``value`` of ``name`` ('--threads', 'num_threads') is None or within [``minimum``,
    :func:`limit`]; otherwise one line naming the value (``where`` it was given, e.g. ' in the
    study's config'), the limit and the cores."""
    if value is None:
        return
    if value < minimum:
        raise TransferscopeError(f"{name}{where} must be {minimum} or more, got {value}")
    if value > limit():
        raise _too_many(f"{name} {value}{where}")


def check_product(what: str, first: int, second: int) -> None:
    """``first`` × ``second`` threads or processes at once (jobs × threads per job), described
    by ``what`` ('4 jobs × 8 threads each'), within :func:`limit`."""
    if first * second > limit():
        raise _too_many(f"{what} = {first * second}")


__all__ = ["PER_CORE", "check_count", "check_product", "limit", "usable_cores"]
