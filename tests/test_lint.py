"""The code passes the project's linter (ruff, configured in pyproject.toml): unused names, unsorted imports,
bare excepts, mutable defaults and undefined names fail the suite rather than a reviewer's patience."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bench.scenes import REPO


def test_ruff_finds_nothing():
    pytest.importorskip("ruff", reason="ruff is not installed (it comes with the test extra: pip install -e '.[test]')")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
