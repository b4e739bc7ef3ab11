"""Node configuration from the environment (and a ``.env`` file), validated up front.

Bad configuration must stop the node before it signs in or leases work, with one readable line and exit code 2,
so every value is parsed and range-checked here rather than where it is used.

Protocol variables (defaults as documented): REG_SECRET and SECP256K1_PRIVHEX (required), DMS_BASE_URL,
DDS_BASE_URL, CLIENT_ID, REQUEST_TIMEOUT_SECS (60, 1..300), REGISTER_INTERVAL_SECS (120), POLL_BACKOFF_MS_MIN/MAX
(1000/30000), HEARTBEAT_MIN/MAX_RATIO (0.25/0.35), TOKEN_SAFETY_RATIO (0.75), TOKEN_REAUTH_MAX_RETRIES (3),
TOKEN_REAUTH_JITTER_MS (500), NODE_VERSION, LOG_FORMAT (text|json), TASKS_ROOT (tasks), DISABLE_TASKS_CLEANUP,
SPLATTER_RUN_PY (./run.py next to the package), POSEMESH_CLIENT_ID (splatter-runner), HEALTH_PORT (8080, 0 = off).
Our own additions: LOG_LEVEL (INFO), SPLATTER_PYTHON (the interpreter that runs run.py; default: the one the node
runs in, so run.py sees the node's packages and virtualenv), HTTP_RETRY_ATTEMPTS (5), HTTP_RETRY_BASE_MS (500),
HTTP_RETRY_MAX_MS (10000).
"""
from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__

TRUTHY = {"1", "true", "yes", "on"}
_HEX64 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message is one line, safe to print (never the value
    of a secret)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How HTTP calls are retried: ``attempts`` tries in all, exponential backoff from ``base_s`` capped at
    ``max_s``, each delay jittered to 50-100 % so that many nodes do not retry in lock step."""

    attempts: int = 5
    base_s: float = 0.5
    max_s: float = 10.0


@dataclass(frozen=True)
class Config:
    dms_base_url: str
    dds_base_url: str
    reg_secret: str = field(repr=False)
    privhex: str = field(repr=False)
    client_id: str
    posemesh_client_id: str
    node_version: str
    request_timeout_s: float
    register_interval_s: float
    poll_backoff_ms_min: int
    poll_backoff_ms_max: int
    heartbeat_min_ratio: float
    heartbeat_max_ratio: float
    token_safety_ratio: float
    token_reauth_max_retries: int
    token_reauth_jitter_ms: int
    tasks_root: Path
    disable_tasks_cleanup: bool
    run_py: Path
    python: str
    health_port: int
    log_format: str
    log_level: str
    retry: RetryPolicy

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> Config:
        """Read and validate every setting; raise ConfigError (one line) on the first problem."""
        e = dict(os.environ if env is None else env)
        reader = _Reader(e)
        reg_secret = e.get("REG_SECRET", "").strip()
        if not reg_secret:
            raise ConfigError("REG_SECRET is required (the compute-node registration secret from the Posemesh Console)")
        privhex = e.get("SECP256K1_PRIVHEX", "").strip()
        if not privhex:
            raise ConfigError("SECP256K1_PRIVHEX is required (the node wallet's 64-hex-digit secp256k1 key)")
        if not _HEX64.match(privhex):
            raise ConfigError("SECP256K1_PRIVHEX must be 64 hex digits (optionally 0x-prefixed)")
        pmin = reader.int("POLL_BACKOFF_MS_MIN", 1000, 0, 3_600_000)
        pmax = reader.int("POLL_BACKOFF_MS_MAX", 30000, 0, 3_600_000)
        if pmax < pmin:
            raise ConfigError(f"POLL_BACKOFF_MS_MAX ({pmax}) must be >= POLL_BACKOFF_MS_MIN ({pmin})")
        hmin = reader.float("HEARTBEAT_MIN_RATIO", 0.25, 0.01, 0.99)
        hmax = reader.float("HEARTBEAT_MAX_RATIO", 0.35, 0.01, 0.99)
        if hmax < hmin:
            raise ConfigError(f"HEARTBEAT_MAX_RATIO ({hmax}) must be >= HEARTBEAT_MIN_RATIO ({hmin})")
        log_format = e.get("LOG_FORMAT", "text").strip().lower() or "text"
        if log_format not in ("text", "json"):
            raise ConfigError(f"LOG_FORMAT must be text or json, got {log_format!r}")
        run_py = Path(e.get("SPLATTER_RUN_PY") or Path(__file__).resolve().parents[1] / "run.py")
        return Config(
            dms_base_url=reader.url("DMS_BASE_URL", "https://dms.auki.network/v1"),
            dds_base_url=reader.url("DDS_BASE_URL", "https://dds.auki.network"),
            reg_secret=reg_secret,
            privhex=privhex,
            client_id=e.get("CLIENT_ID") or f"splatter-node/{uuid.uuid4()}",
            posemesh_client_id=e.get("POSEMESH_CLIENT_ID") or "splatter-runner",
            node_version=(e.get("NODE_VERSION") or __version__).lstrip("v"),
            request_timeout_s=reader.float("REQUEST_TIMEOUT_SECS", 60.0, 1.0, 300.0),
            register_interval_s=reader.float("REGISTER_INTERVAL_SECS", 120.0, 0.0, 86400.0),
            poll_backoff_ms_min=pmin,
            poll_backoff_ms_max=pmax,
            heartbeat_min_ratio=hmin,
            heartbeat_max_ratio=hmax,
            token_safety_ratio=reader.float("TOKEN_SAFETY_RATIO", 0.75, 0.05, 1.0),
            token_reauth_max_retries=reader.int("TOKEN_REAUTH_MAX_RETRIES", 3, 0, 100),
            token_reauth_jitter_ms=reader.int("TOKEN_REAUTH_JITTER_MS", 500, 0, 60_000),
            tasks_root=Path(e.get("TASKS_ROOT") or "tasks"),
            disable_tasks_cleanup=e.get("DISABLE_TASKS_CLEANUP", "").strip().lower() in TRUTHY,
            run_py=run_py,
            python=e.get("SPLATTER_PYTHON") or sys.executable,
            health_port=reader.int("HEALTH_PORT", 8080, 0, 65535),
            log_format=log_format,
            log_level=log_level(e.get("LOG_LEVEL")),
            retry=RetryPolicy(
                attempts=reader.int("HTTP_RETRY_ATTEMPTS", 5, 1, 100),
                base_s=reader.int("HTTP_RETRY_BASE_MS", 500, 0, 600_000) / 1000.0,
                max_s=reader.int("HTTP_RETRY_MAX_MS", 10_000, 0, 3_600_000) / 1000.0,
            ),
        )


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(raw: str | None) -> str:
    """``$LOG_LEVEL`` (any case; unset or empty: INFO) as one of :data:`LOG_LEVELS`."""
    level = (raw or "").strip().upper() or "INFO"
    if level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level[:40]!r}")
    return level


class _Reader:
    """Typed access to env values with range checks; messages name the variable, never echo secrets."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def _raw(self, name: str) -> str | None:
        v = self.env.get(name)
        return v.strip() if v is not None and v.strip() != "" else None

    def int(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            v = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if not lo <= v <= hi:
            raise ConfigError(f"{name} must be in {lo}..{hi}, got {v}")
        return v

    def float(self, name: str, default: float, lo: float, hi: float) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            v = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not (lo <= v <= hi):
            raise ConfigError(f"{name} must be in {lo:g}..{hi:g}, got {raw}")
        return v

    def url(self, name: str, default: str) -> str:
        raw = self._raw(name) or default
        if not raw.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must be an http(s) URL, got {raw!r}")
        return raw.rstrip("/")
