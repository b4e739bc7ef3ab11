"""The one error type users see: a bad input named with its problem.

CLIs print ``str(err)`` as a single line on stderr and exit with code 2; nothing else
about a bad file should ever reach the user as a traceback.
"""


class SceneError(Exception):
    """Bad input (scene file, camera path, option): the message names the file and the problem."""


class BackendUnavailable(SceneError):
    """The requested render backend cannot run on this machine (e.g. ``gpu`` without CUDA)."""
