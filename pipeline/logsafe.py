"""Log output that stays one event per line whatever the strings in it, and never shows a known secret.

Names, error bodies and tool output come from the network or from files; a newline in one would forge a log line,
a NUL or an ANSI escape would reach the terminal. The text formatter (:class:`rasterizer.cliargs.LineFormatter`,
the one the rasterizer CLI uses too) and the JSON one here escape every control character of the finished line
(``\\n``, ``\\x00``, ``\\x1b``, as ``repr`` writes them; a traceback becomes one line too) and pass the text
through ``scrub`` first, the node's secret redactor.
"""
from __future__ import annotations

import json
import logging
import sys
import time

from rasterizer.cliargs import LineFormatter, Scrub


def _same(text: str) -> str:
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` (and ``exc``), scrubbed."""

    def __init__(self, scrub: Scrub | None = None):
        super().__init__()
        self.scrub = scrub or _same

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "msg": self.scrub(record.getMessage())}
        if record.exc_info:
            out["exc"] = self.scrub(self.formatException(record.exc_info))
        return json.dumps(out)  # ensure_ascii: every control character and separator is escaped


def configure(level: str | int, *, json_lines: bool = False, scrub: Scrub | None = None,
              split_errors: bool = False) -> None:
    """Replace the root logger's handlers. By default everything goes to stderr; with ``split_errors``
    records below ERROR go to stdout and errors to stderr (run.py: its one error line is the stderr)."""
    formatter = JsonFormatter(scrub) if json_lines else LineFormatter(scrub)
    if split_errors:
        out = logging.StreamHandler(sys.stdout)
        out.addFilter(lambda r: r.levelno < logging.ERROR)
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.ERROR)
        handlers = [out, err]
    else:
        handlers = [logging.StreamHandler(sys.stderr)]
    root = logging.getLogger()
    root.handlers[:] = []
    for h in handlers:
        h.setFormatter(formatter)
        root.addHandler(h)
    root.setLevel(level)
