"""What every entry point shares: one-line errors, the option parsers, and how a command ends.

The convention (``python -m rasterizer``, ``run.py``, ``python -m runner``): bad input prints ONE
line ``error: <what is wrong>`` on stderr and exits with code 2 (a bad flag too: argparse's usage
dump is kept for ``--help``); a failure of the work itself exits 1 with one line; Ctrl-C exits
130 with one line; a closed pipe on stdout (``info | head -1``) ends quietly.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from .camera import image_size_problem
from .errors import SceneError, one_line

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def print_error(message) -> None:
    """``error: <message>`` as one line on stderr (the message escaped to one printable line)."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) and options whose value may start with ``-``.

    ``add_argument(..., dash_value=True)`` lets ``--up -y`` mean ``--up=-y`` (argparse alone takes
    ``-y`` for an option and says "expected one argument"). Abbreviated long options are off, so
    that what a script says is what runs.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._dash_value_options: set[str] = set()

    def add_argument(self, *args, dash_value: bool = False, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if dash_value:
            self._dash_value_options.update(action.option_strings)
        return action

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"error: {one_line(message)} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else [os.fspath(a) for a in args]
        options = self._all_dash_value_options()
        glued, i = [], 0
        while i < len(args):
            if args[i] in options and i + 1 < len(args) and args[i + 1] != "--":
                glued.append(f"{args[i]}={args[i + 1]}")
                i += 2
            else:
                glued.append(args[i])
                i += 1
        return super().parse_known_args(glued, namespace)

    def _all_dash_value_options(self) -> set[str]:
        found = set(self._dash_value_options)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    if isinstance(sub, ArgumentParser):
                        found |= sub._all_dash_value_options()
        return found


# --------------------------------------------------------------------------- option values
# Each raises argparse.ArgumentTypeError, so that argparse names the option in its one-line error.

def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` (e.g. ``1280x720``) → (width, height), within what the renderer will allocate."""
    m = re.fullmatch(r"\s*([0-9]{1,30})\s*[xX]\s*([0-9]{1,30})\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 1280x720, got {one_line(repr(text))[:60]}")
    w, h = int(m.group(1)), int(m.group(2))
    problem = image_size_problem(w, h)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return w, h


def parse_color(text: str) -> tuple[float, float, float]:
    """``R,G,B`` with each in 0..1 (e.g. ``0.1,0.2,0.3``)."""
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or not all(0.0 <= v <= 1.0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected three numbers in 0..1 like 0.1,0.2,0.3; "
                                         f"got {one_line(repr(text))[:60]}")
    return vals


def int_range(lo: int, hi: int):
    """An argparse type: an integer in ``lo..hi``."""
    def parse(text: str) -> int:
        s = str(text).strip()
        if not (re.fullmatch(r"[+-]?[0-9]{1,12}", s) and lo <= int(s) <= hi):
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {one_line(repr(text))[:40]}")
        return int(s)
    parse.__name__ = f"integer in {lo}..{hi}"
    return parse


def nonempty(text: str) -> str:
    """A file or folder name: an explicit empty argument is an error, not "the default"."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("an empty name is not a file")
    return text


def nonempty_path(text: str) -> Path:
    """:func:`nonempty` as a :class:`~pathlib.Path` (``Path("")`` would be the current folder)."""
    return Path(nonempty(text))


# --------------------------------------------------------------------------- running a command

class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})

Scrub = Callable[[str], str]


def escape_controls(text: str) -> str:
    """Control characters (C0, DEL, C1, Unicode line/paragraph separators) as ``repr``-style escapes."""
    return text.translate(_ESCAPES)


class LineFormatter(logging.Formatter):
    """``TEXT_FORMAT``, passed through ``scrub`` (the node's secret redactor; none here), with control
    characters escaped: one line per record, whatever a file name or a server put in it."""

    def __init__(self, scrub: Scrub | None = None):
        super().__init__(TEXT_FORMAT)
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return escape_controls(self.scrub(text) if self.scrub else text)


def setup_logging(verbose: bool = False) -> None:
    """One line per event on stderr: ``time LEVEL logger: message`` (DEBUG with ``verbose``), control
    characters escaped (:class:`LineFormatter`)."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(h)
    handler = _Stderr()
    handler.setFormatter(LineFormatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanup runs as for Ctrl-C."""


#: the signal (SIGINT or SIGTERM) received while the current command ran, if any. A signal that
#: lands while compiled code calls back into Python can come out as another exception (numba
#: turns it into a SystemError) and be swallowed by code that isolates failures (one preview view
#: failing must not cost the others): the record survives that.
_signalled: int | None = None


def raise_if_signalled() -> None:
    """Raise the interruption recorded during this command, if any: call it before committing output."""
    if _signalled == signal.SIGINT:
        raise KeyboardInterrupt
    if _signalled == signal.SIGTERM:
        raise Terminated


def _on_signal(signum, frame):
    global _signalled
    _signalled = signum
    raise_if_signalled()


def _catch_signals() -> dict:
    """Route SIGINT and SIGTERM through :func:`_on_signal` (main thread only); the old handlers."""
    global _signalled
    _signalled = None
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def run_command(parser: argparse.ArgumentParser, argv=None) -> int:
    """Parse ``argv``, set up logging, run ``args.func(args)`` and turn how it ended into an exit code.

    Bad input (:class:`SceneError`, an unusable file or folder) → one line, 2; any other failure →
    one line, 1 (the traceback with ``-v``); Ctrl-C or SIGTERM → one line, 130 or 143, whatever
    exception the signal came out as; a reader that closed stdout → quiet, 0. ``args.func`` cleans
    up after itself (``try``/``finally``) and calls :func:`raise_if_signalled` before committing.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad command line (2, its one line already printed)
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_BAD_INPUT)
    setup_logging(getattr(args, "verbose", False))
    previous = _catch_signals()
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at exit
        raise_if_signalled()
        return code
    except BaseException as e:  # noqa: BLE001 - every way a command ends becomes an exit code
        return _exit_code(e)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_code(e: BaseException) -> int:
    if _signalled is not None or isinstance(e, (KeyboardInterrupt, Terminated)):
        sig = _signalled or (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
        print_error("interrupted" if sig == signal.SIGINT else "terminated")
        return EXIT_INTERRUPTED if sig == signal.SIGINT else 128 + signal.SIGTERM
    if isinstance(e, SceneError):
        print_error(e)
        return EXIT_BAD_INPUT
    if isinstance(e, BrokenPipeError):
        _silence_stdout()
        return EXIT_OK
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
        print_error(f"{e.filename}: {e.strerror}" if e.filename else e)   # the machine failed, not the input
        return EXIT_FAILED
    if isinstance(e, OSError):
        print_error(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else e)
        return EXIT_BAD_INPUT
    if isinstance(e, MemoryError):
        print_error("out of memory")
        return EXIT_FAILED
    if isinstance(e, Exception):  # a bug or a failure of the work, not of the input
        log.debug("traceback", exc_info=e)
        print_error(f"{type(e).__name__}: {e} (run with -v for the traceback)")
        return EXIT_FAILED
    raise e  # SystemExit and the like: not ours to translate


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (captured): nothing left to flush
        pass
