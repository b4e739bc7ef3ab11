"""``splatter-node`` / ``python -m runner``: ``serve [--once]`` runs the node, ``run-local --job-root DIR`` runs the
pipeline on an existing job root and lists what would be uploaded (no network).

Configuration problems end the process with one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from dotenv import load_dotenv

from . import __version__
from .config import Config, ConfigError
from .pyproc import ChildCancelled, child_env, run_python
from .splatter import pipeline_command, planned_artifacts, suffixed

EXIT_CONFIG = 2


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level, logging.INFO))
    for noisy in ("httpx", "httpcore"):  # one line per event: our own logs already name each call that matters
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splatter-node", description="posemesh splatter compute node")
    p.add_argument("--version", action="version", version=f"splatter-node {__version__}")
    p.add_argument("--env-file", type=Path, default=None,
                   help="dotenv file to load (default: ./.env when present); real env variables win")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="sign in, lease /splatter/colmap/v1 tasks and run them")
    s.add_argument("--once", action="store_true", help="handle at most one task, then exit")
    r = sub.add_parser("run-local", help="run run.py on an existing job root and list the artifacts (no network)")
    r.add_argument("--job-root", type=Path, required=True)
    r.add_argument("--run-py", type=Path, default=None, help="pipeline script (default: $SPLATTER_RUN_PY or ./run.py)")
    r.add_argument("--suffix", default=None, help="refined manifest suffix for the artifact names, e.g. _2024-...")
    r.add_argument("--json", action="store_true", help="print the artifact list as JSON")
    return p


def _config_error(msg: str) -> int:
    print(f"splatter-node: {msg}", file=sys.stderr)
    return EXIT_CONFIG


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env_file = args.env_file
    if env_file is not None and not env_file.is_file():
        return _config_error(f"--env-file {env_file} not found")
    load_dotenv(env_file or Path(".env"), override=False)
    if args.command == "run-local":
        return _run_local(args)
    try:
        cfg = Config.from_env()
    except ConfigError as exc:
        return _config_error(str(exc))
    if not cfg.run_py.is_file():
        return _config_error(f"pipeline script {cfg.run_py} not found (set SPLATTER_RUN_PY)")
    setup_logging(cfg.log_level, cfg.log_format)
    from .node import Node  # imported late: eth_account is only needed by the node

    try:
        node = Node(cfg)
    except OSError as exc:
        return _config_error(f"cannot start node: {exc}")
    try:
        return node.serve(once=args.once)
    except OSError as exc:  # e.g. HEALTH_PORT already in use
        return _config_error(f"cannot serve: {exc}")


def _run_local(args: argparse.Namespace) -> int:
    setup_logging(os.environ.get("LOG_LEVEL", "INFO").upper(), "text")
    job_root: Path = args.job_root
    if not job_root.is_dir():
        return _config_error(f"--job-root {job_root} is not a directory")
    run_py = (args.run_py or Path(os.environ.get("SPLATTER_RUN_PY") or "run.py")).resolve()
    if not run_py.is_file():
        return _config_error(f"pipeline script {run_py} not found (use --run-py or SPLATTER_RUN_PY)")
    python = os.environ.get("SPLATTER_PYTHON") or "python3"
    cmd = pipeline_command(python, run_py, "local", "local", job_root.resolve())
    try:
        result = run_python(cmd, run_py.parent, child_env())
    except (ChildCancelled, KeyboardInterrupt):
        print("splatter-node: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        return _config_error(f"cannot start {python}: {exc}")
    if result.returncode != 0:
        print(f"splatter-node: run.py failed with status {result.returncode}", file=sys.stderr)
        return 1
    artifacts = planned_artifacts(job_root, args.suffix)
    if args.json:
        print(json.dumps([{"name": n, "data_type": dt, "path": str(p), "size": p.stat().st_size}
                          for n, dt, p in artifacts], indent=2))
    else:
        for name, dt, path in artifacts:
            print(f"{name}\t{dt}\t{path}\t{path.stat().st_size}")
    if not any(dt == "splat_data" for _, dt, _ in artifacts):
        print(f"splatter-node: required output missing: "
              f"{job_root / 'refined' / 'splatter' / 'splat_rot.splat'} (would upload as "
              f"{suffixed('refined_splat', args.suffix)})", file=sys.stderr)
        return 1
    return 0
