"""``splatter-node`` / ``python -m runner``: ``serve [--once]`` runs the node, ``run-local --job-root DIR`` runs the
pipeline on an existing job root and lists what would be uploaded (no network).

A bad flag or bad configuration ends the process with one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from dotenv import load_dotenv

from pipeline import logsafe
from pipeline.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, one_line
from pipeline.layout import SPLAT, JobLayout
from rasterizer.cliargs import ArgumentParser, nonempty_path, print_error

from . import __version__
from .config import Config, ConfigError, log_level
from .pyproc import ChildCancelled, child_env, run_python
from .redact import SECRETS
from .splatter import pipeline_command, planned_artifacts

PROG = "splatter-node"


def fail(message: str, status: int = EXIT_BAD_INPUT) -> int:
    """``error: <message>`` as one line on stderr (the one convention of every entry point); ``status``
    for ``main`` to exit with."""
    print_error(message)
    return status


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Every record one line on stderr (text or JSON), control characters escaped, known secrets scrubbed."""
    logsafe.configure(logging.getLevelName(level), json_lines=fmt == "json", scrub=SECRETS.scrub)
    for noisy in ("httpx", "httpcore"):  # one line per event: our own logs already name each call that matters
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parser() -> ArgumentParser:
    # the step names are run.py's; run.py itself reports a wrong one (one line, exit 2)
    p = ArgumentParser(prog=PROG, description="posemesh splatter compute node")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    p.add_argument("--env-file", type=nonempty_path, default=None,
                   help="dotenv file to load (default: ./.env when present); real env variables win")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="sign in, lease /splatter/colmap/v1 tasks and run them")
    s.add_argument("--once", action="store_true", help="handle at most one task, then exit")
    r = sub.add_parser("run-local", help="run run.py on an existing job root and list the artifacts (no network)")
    r.add_argument("--job-root", type=nonempty_path, required=True)
    r.add_argument("--run-py", type=nonempty_path, default=None,
                   help="pipeline script (default: $SPLATTER_RUN_PY or ./run.py)")
    r.add_argument("--from-step", metavar="STEP", help="first step of run.py to run (python3 run.py --steps)")
    r.add_argument("--to-step", metavar="STEP", help="last step of run.py to run")
    r.add_argument("--suffix", default=None, help="refined manifest suffix for the artifact names, e.g. _2024-...")
    r.add_argument("--json", action="store_true", help="print the artifact list as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env_file = args.env_file
    if env_file is not None and not env_file.is_file():
        return fail(f"--env-file {env_file} not found")
    try:
        load_dotenv(env_file or Path(".env"), override=False)
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"{env_file or Path('.env')}: cannot read it as a dotenv file ({type(exc).__name__})")
    if args.command == "run-local":
        try:
            level = log_level(os.environ.get("LOG_LEVEL"))
        except ConfigError as exc:
            return fail(str(exc))
        return _run_local(args, level)
    try:
        cfg = Config.from_env()
    except ConfigError as exc:
        return fail(str(exc))
    if not cfg.run_py.is_file():
        return fail(f"pipeline script {cfg.run_py} not found (set SPLATTER_RUN_PY)")
    setup_logging(cfg.log_level, cfg.log_format)
    from .auth import InvalidKey
    from .node import Node  # imported late: eth_account is only needed by the node

    try:
        node = Node(cfg)
    except InvalidKey as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot start node: {one_line(exc)}")
    try:
        return node.serve(once=args.once)
    except OSError as exc:  # e.g. HEALTH_PORT already in use
        return fail(f"cannot serve: {one_line(exc)}")


def _run_local(args, level: str) -> int:
    setup_logging(level, "text")
    job_root: Path = args.job_root
    if not job_root.is_dir():
        return fail(f"--job-root {job_root} is not a directory")
    run_py = (args.run_py or Path(os.environ.get("SPLATTER_RUN_PY") or "run.py")).resolve()
    if not run_py.is_file():
        return fail(f"pipeline script {run_py} not found (use --run-py or SPLATTER_RUN_PY)")
    python = os.environ.get("SPLATTER_PYTHON") or sys.executable
    steps = [a for flag, value in (("--from-step", args.from_step), ("--to-step", args.to_step)) if value
             for a in (flag, value)]
    cmd = pipeline_command(python, run_py, "local", "local", job_root.resolve(), steps)
    try:
        result = run_python(cmd, run_py.parent, child_env())
    except (ChildCancelled, KeyboardInterrupt):
        return fail("interrupted", EXIT_INTERRUPTED)
    except OSError as exc:
        return fail(f"cannot start {python}: {one_line(exc)}")
    if result.returncode != 0:
        # run.py's own status: 2 for bad input or a bad step name, 1 for a failed step
        return fail(f"run.py failed with status {result.returncode}", result.returncode or EXIT_FAILED)
    artifacts = planned_artifacts(job_root)
    if args.json:
        print(json.dumps([{"name": a.name(args.suffix), "data_type": a.data_type, "path": str(p),
                           "size": p.stat().st_size} for a, p in artifacts], indent=2))
    else:
        for a, p in artifacts:
            print(f"{a.name(args.suffix)}\t{a.data_type}\t{p}\t{p.stat().st_size}")
    if not any(a.required for a, _ in artifacts):
        return fail(f"required output missing: {JobLayout(job_root).artifact(SPLAT)} "
                          f"(would upload as {SPLAT.name(args.suffix)})", EXIT_FAILED)
    return 0
