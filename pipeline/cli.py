"""The command-line parser of every entry point: a bad flag or value is one line on stderr and exit status 2.

argparse's default is the whole usage block before the message; that stays for ``--help``.
"""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from .errors import EXIT_BAD_INPUT


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` (subcommand parsers included) whose errors are ``<prog>: <message>`` and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {' '.join(message.split())}\n")


def fail(prog: str, message: str, status: int = EXIT_BAD_INPUT) -> int:
    """Print ``<prog>: <message>`` as one line on stderr; return ``status`` for ``main`` to exit with."""
    print(f"{prog}: {' '.join(message.split())}", file=sys.stderr)
    return status
