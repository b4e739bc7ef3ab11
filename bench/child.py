"""Measurements in a fresh Python process, the way a user's command runs: the benchmark's code runs
as ``python -c`` with the checkout first on ``sys.path``, reads its own peak memory from
``/proc/self/status`` and prints its figures as one JSON line, which :func:`run_child` returns."""
from __future__ import annotations

import json
import subprocess
import sys

from .scenes import REPO

PRELUDE = f"""
import json, sys, time
sys.path.insert(0, {str(REPO)!r})

def status(key):
    '''A /proc/self/status figure in bytes: VmRSS (resident now), VmHWM (the peak so far).'''
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1]) * 1024

def report(**figures):
    print(json.dumps(figures))
"""


def run_child(body: str, *args, timeout: float | None = None) -> dict:
    """Run ``body`` (Python that ends by calling ``report(...)``) with ``args`` as ``sys.argv[1:]``."""
    out = subprocess.run([sys.executable, "-c", PRELUDE + body, *map(str, args)], capture_output=True, text=True,
                         timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
