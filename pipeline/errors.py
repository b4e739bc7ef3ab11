"""The errors a pipeline step raises. Exit statuses and the one-line formatter are the project's one
convention for every entry point (:mod:`rasterizer.cliargs`, :func:`rasterizer.errors.one_line`)."""
from __future__ import annotations

from rasterizer.cliargs import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED
from rasterizer.errors import one_line

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "BadInput", "StepError", "one_line"]


class StepError(Exception):
    """A step cannot go on (exit status 1); the message is the one line the user sees."""


class BadInput(StepError):
    """The job's inputs are missing or unreadable (exit status 2); the message names the file and the problem."""
