"""The errors a pipeline step raises, and the one formatter that turns any exception into one line."""
from __future__ import annotations

#: exit statuses of every entry point (run.py, python -m runner)
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class StepError(Exception):
    """A step cannot go on (exit status 1); the message is the one line the user sees."""


class BadInput(StepError):
    """The job's inputs are missing or unreadable (exit status 2); the message names the file and the problem."""


def one_line(e: BaseException) -> str:
    """``str(e)`` on one line (whitespace runs, newlines included, become one space), or the exception's type
    name when it has no message."""
    return " ".join(str(e).split()) or type(e).__name__
