"""The code passes the project's linter and type checker (ruff and mypy, both configured in pyproject.toml and
pinned in the test extra): unused names, unsorted imports, bare excepts, undefined names and calls that do not match
their annotations fail the suite rather than a reviewer's patience."""
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


def test_mypy_finds_nothing(tmp_path):
    """The package ships ``py.typed``: its annotations are checked (configuration in pyproject.toml)."""
    pytest.importorskip("mypy", reason="mypy is not installed (it comes with the test extra: pip install -e '.[test]')")
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"),
                           "rasterizer", "pipeline", "runner", "run.py"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
