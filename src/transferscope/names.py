"""Names that become file names: target ids, run ids and the files built from them.

A target's id is part of every run directory and result file of that target
(``runs/PT-<id>-<hash>``, ``analyses/mistakes/<id>.npz``). It is a name, never a path: letters,
digits, ``-``, ``_`` and ``.``, starting with a letter or digit, at most :data:`MAX_LENGTH`
characters, so that a config can neither write outside the study directory (``x/../../y``) nor
make a file name the file system refuses.
"""

from __future__ import annotations

import re

from transferscope.errors import TransferscopeError

MAX_LENGTH = 64
"""Longest id: a run directory adds a kind and a 10-digit hash (under 80 characters in all)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RULE = (
    f"letters, digits, '-', '_' and '.' only, starting with a letter or digit, at most "
    f"{MAX_LENGTH} characters"
)


def name_problem(value: str, max_length: int = MAX_LENGTH) -> str | None:
    """Why ``value`` cannot be used as a file name (None: it can)."""
    if not value:
        return "it is empty"
    if len(value) > max_length:
        return f"it has {len(value)} characters (at most {max_length})"
    if not _NAME.fullmatch(value):
        bad = sorted({c for c in value if not re.fullmatch(r"[A-Za-z0-9._-]", c)})
        if bad:
            shown = " ".join(repr(c) for c in bad[:5])
            return f"it holds {shown}, which a name may not"
        return "it starts with '.', '-' or '_'"
    return None


def check_name(value: str, what: str, max_length: int = MAX_LENGTH) -> str:
    """``value`` when it is a name; else a :class:`TransferscopeError` naming ``what``."""
    problem = name_problem(value, max_length)
    if problem is not None:
        raise TransferscopeError(f"{what} {value!r} is not a name: {problem} ({RULE})")
    return value


__all__ = ["MAX_LENGTH", "RULE", "check_name", "name_problem"]
