"""headstart's error hierarchy.

Every error a user can cause is raised as a :class:`HeadstartError` whose message is one paragraph
saying what went wrong, where, the value seen, what was expected and how to fix it. The CLI prints
that paragraph without a stack trace; the Python API raises it as a normal exception.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "HeadstartError",
    "LayerMapError",
    "RunDirError",
    "RunInterrupted",
    "did_you_mean",
    "format_choices",
]


class HeadstartError(Exception):
    """Base class of every error headstart raises on purpose (bad input, not a bug)."""


class ConfigError(HeadstartError, ValueError):
    """A config value or key is invalid."""


class DataError(HeadstartError, ValueError):
    """A data file, column, label or split is unusable."""


class CheckpointError(HeadstartError):
    """A checkpoint cannot be read or does not fit the model."""


class LayerMapError(ConfigError):
    """A block range, block name or adapter target does not exist in the backbone's layer map."""


class RunDirError(HeadstartError):
    """The run directory cannot be used (exists already, or is not a run directory)."""


class RunInterrupted(HeadstartError):
    """SIGINT / SIGTERM stopped a run at a safe point; ``exit_code`` is 130 (SIGINT) or 143 (SIGTERM).

    The message says what was saved and the command that resumes the run.
    """

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def did_you_mean(value: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean 'x'?' for the closest candidates, or '' when none is close."""
    close = difflib.get_close_matches(str(value), [str(c) for c in candidates], n=n, cutoff=0.55)
    if not close:
        return ""
    if len(close) == 1:
        return f" Did you mean '{close[0]}'?"
    return " Did you mean one of " + ", ".join(f"'{c}'" for c in close) + "?"


def format_choices(candidates: Iterable[str], limit: int = 30) -> str:
    """Comma-separated, quoted list of candidates, truncated with a count when long."""
    items = [str(c) for c in candidates]
    shown = ", ".join(f"'{c}'" for c in items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items) - limit} more)"
    return shown
