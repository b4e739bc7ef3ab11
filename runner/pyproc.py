"""Running ``run.py`` as a child process: output streamed to the log, a 200-line tail kept, cancel honoured.

The child gets its own session (process group) so that a cancel can kill it together with everything it
started (trainers, renderers, ffmpeg) and so that a Ctrl-C on the node's terminal reaches the node first.
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger("runner.python")

TAIL_LINES = 200
CANCEL_POLL_S = 0.5
KILL_GRACE_S = 2.0
MAX_LINE = 4000
# The child never needs the node's credentials; keep them out of its environment.
SECRET_ENV = ("SECP256K1_PRIVHEX", "REG_SECRET")


class ChildCancelled(Exception):
    """The cancel predicate became true while the child ran; the child has been killed."""


@dataclass
class PythonResult:
    returncode: int | None
    duration_ms: int
    stdout_lines: int
    stderr_lines: int
    tail: list[str] = field(default_factory=list)


def last_lines(lines: dict[str, deque], limit: int = TAIL_LINES) -> list[str]:
    """The last ``limit`` lines of both streams in the order they were read, as ``<stream>: <line>``; when there
    are more, stdout's oldest go first. The two pipes are read by two threads, so a failing child's final stderr
    line may be read before a burst of stdout written earlier: it must not be crowded out of the tail by them."""
    merged = sorted((seq, tag, text) for tag, q in lines.items() for seq, text in q)
    excess = len(merged) - limit
    if excess > 0:
        drop = {seq for seq, tag, _ in merged if tag == "stdout"}
        drop = set(sorted(drop)[:excess])
        merged = [m for m in merged if m[0] not in drop][-limit:]
    return [f"{tag}: {text}" for _, tag, text in merged]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _pump(stream: IO[bytes], tag: str, q: queue.Queue[tuple[str, str | None]]) -> None:
    try:
        for raw in iter(stream.readline, b""):
            q.put((tag, raw.decode("utf-8", "replace").rstrip("\r\n")))
    finally:
        q.put((tag, None))


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group, SIGKILL it after a short grace, and reap the child."""
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue


def run_python(cmd: Sequence[str], cwd: Path, env: Mapping[str, str],
               cancelled: Callable[[], bool] = lambda: False) -> PythonResult:
    """Run ``cmd``; every stdout line is logged at INFO and every stderr line at WARNING. Raises ChildCancelled
    (after killing the process group) when ``cancelled()`` turns true; it is polled every 500 ms."""
    start = time.monotonic()
    proc = subprocess.Popen(list(cmd), cwd=str(cwd), env=dict(env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    log.info("started %s (pid %d)", " ".join(cmd), proc.pid)
    q: queue.Queue[tuple[str, str | None]] = queue.Queue()
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, "stdout", q), daemon=True),
             threading.Thread(target=_pump, args=(proc.stderr, "stderr", q), daemon=True)]
    for t in pumps:
        t.start()
    kept: dict[str, deque[tuple[int, str]]] = {"stdout": deque(maxlen=TAIL_LINES), "stderr": deque(maxlen=TAIL_LINES)}
    counts = {"stdout": 0, "stderr": 0}
    open_streams = 2
    next_check = time.monotonic()
    try:
        while open_streams:
            now = time.monotonic()
            if now >= next_check:
                if cancelled():
                    kill_group(proc)
                    raise ChildCancelled("python execution")
                next_check = now + CANCEL_POLL_S
            try:
                tag, line = q.get(timeout=max(0.0, next_check - time.monotonic()))
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
                continue
            counts[tag] += 1
            line = line[:MAX_LINE]
            kept[tag].append((counts["stdout"] + counts["stderr"], line))
            (log.info if tag == "stdout" else log.warning)("python %s: %s", tag, line)
        while True:
            try:
                returncode = proc.wait(timeout=CANCEL_POLL_S)
                break
            except subprocess.TimeoutExpired:
                if cancelled():
                    kill_group(proc)
                    raise ChildCancelled("python execution") from None
    finally:
        kill_group(proc)  # no-op when it already exited; guarantees no orphan on any error path
        for s in (proc.stdout, proc.stderr):
            if s is not None:
                s.close()
    return PythonResult(returncode=returncode if returncode >= 0 else None,
                        duration_ms=int((time.monotonic() - start) * 1000),
                        stdout_lines=counts["stdout"], stderr_lines=counts["stderr"], tail=last_lines(kept))
