"""The one exception type for mistakes a user can make (bad config, bad data, bad checkpoint).

The CLI prints its message as one line, without a traceback, and exits non-zero. Messages name the
offending file, key or value and say how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TransferscopeError(Exception):
    """A problem with the user's input that the user can fix; the message says how."""


class DamagedRunError(TransferscopeError):
    """A finished run's files no longer match its DONE: everything that reads it must stop and
    say so (a rerun retrains it), rather than analyse damaged weights."""


class DiskFullError(TransferscopeError):
    """The disk ran out of space while writing a study file. The study stops (every run after
    would fail alike); nothing finished is lost, and a rerun resumes once there is space."""


class TransferscopeWarning(UserWarning):
    """Something in the user's input that transferscope works around but the user should know
    (e.g. a file in an image folder that is not an image); the CLI prints it as one line."""


def nearest(name: str, choices: Iterable[str]) -> str | None:
    """The closest valid spelling of ``name`` among ``choices`` (None if nothing is close)."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix for error messages, or '' when nothing is close."""
    match = nearest(name, choices)
    return f" (did you mean '{match}'?)" if match else ""


def unknown_name(what: str, name: str, choices: Iterable[str]) -> TransferscopeError:
    """Error for an unknown registry name: names the value, the nearest match and the valid set."""
    choices = sorted(choices)
    return TransferscopeError(
        f"unknown {what} '{name}'{did_you_mean(name, choices)}; valid: {', '.join(choices)}"
    )


def check_option_names(owner: str, options: Iterable[str], valid: Iterable[str]) -> None:
    """Raise for the first of ``options`` that ``owner`` (e.g. "model 'resnet18'") does not
    accept, with the nearest valid option and the valid set."""
    valid = list(valid)
    for key in options:
        if key not in valid:
            raise TransferscopeError(
                f"{owner} has no option '{key}'{did_you_mean(key, valid)}; "
                f"valid options: {', '.join(valid) or '(none)'}"
            )
