"""The one error type users see (a bad input named with its problem) and how an error becomes one line.

CLIs print ``error: <message>`` as a single line on stderr and exit with code 2 for a
:class:`SceneError`; nothing else about a bad file should ever reach the user as a traceback.
"""
from __future__ import annotations

import os


class SceneError(Exception):
    """Bad input (scene file, camera path, option): the message names the file and the problem."""


class BackendUnavailable(SceneError):
    """The requested render backend cannot run on this machine (e.g. ``gpu`` without CUDA)."""


def one_line(e: BaseException | str | os.PathLike) -> str:
    """An exception (or a message) as one printable line: whitespace runs collapse to one space,
    other control characters (and undecodable bytes of file names) are written as escapes."""
    text = " ".join(str(e).split()) or (type(e).__name__ if isinstance(e, BaseException) else "")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
