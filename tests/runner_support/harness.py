"""Helpers for the runner tests: a wallet, a seeded domain, and the node started as a real subprocess."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account

from pipeline.layout import COLMAP_INPUTS

from .fake_posemesh import FakePosemesh

REPO = Path(__file__).resolve().parents[2]
FAKE_RUN = Path(__file__).resolve().parent / "fake_run.py"
PRIVHEX = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
WALLET = Account.from_key("0x" + PRIVHEX).address
REG_SECRET = "reg-secret-5f1e0c9b7a"
SUFFIX = "_2024-01-02_03-04-05"
# the artifacts' domain names for SUFFIX, spelt out (pipeline.layout must agree)
PREVIEWS = [f"refined_splat_preview_top{SUFFIX}", f"refined_splat_preview_angle{SUFFIX}"]
VIDEO = f"refined_splat_preview_video{SUFFIX}"
SPLAT = f"refined_splat{SUFFIX}"
SOG = f"refined_splat_sog{SUFFIX}"
# the upload order: the SOG first (best effort), then the splat (required), the previews and the video
OUTPUTS = [(SOG, "splat_data_sog", "splat_rot.sog"), (SPLAT, "splat_data", "splat_rot.splat"),
           (PREVIEWS[0], "splat_preview_top", "preview_top.jpg"),
           (PREVIEWS[1], "splat_preview_angle", "preview_angle.jpg"), (VIDEO, "splat_preview_video", "preview.mp4")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a container's PID 1 may never reap orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Scenario:
    """What the fake domain holds for one splatter job."""
    manifest_id: str
    manifest_name: str
    recordings: dict[str, bytes]      # scan folder -> bytes
    colmap: dict[str, bytes]          # target file name -> bytes
    data_ids: list[str]


def seed_domain(fake: FakePosemesh, suffix: str = SUFFIX, with_colmap: bool = True,
                derived_scan: bool = True) -> Scenario:
    """A manifest listing one recording by id (plus an unrelated item) and, optionally, one by a derived
    ``refined_scan_<scan>`` name; the five COLMAP binaries for the suffix."""
    rec_a = os.urandom(3000)
    rec_b = os.urandom(2000)
    ida = fake.add_item("dmt_recording_2024-01-02_03-00-00", "dmt_recording_mp4", rec_a)
    other = fake.add_item("dmt_arposes_2024-01-02_03-00-00", "dmt_arposes_csv", b"t,x,y,z\n")
    data_ids = [ida, other]
    recordings = {"2024-01-02_03-00-00": rec_a}
    if derived_scan:
        fake.add_item("dmt_recording_2024-01-02_03-30-00.mp4", "dmt_recording_mp4", rec_b)
        data_ids.append("refined_scan_2024-01-02_03-30-00")
        recordings["2024-01-02_03-30-00"] = rec_b
    colmap = {}
    if with_colmap:
        for c in COLMAP_INPUTS:
            data = os.urandom(100) + c.prefix.encode()
            fake.add_item(c.prefix + suffix, c.prefix, data)
            colmap[c.file] = data
    name = "refined_manifest" + suffix
    manifest_id = fake.add_item(name, "refined_manifest_json", json.dumps({"dataIDs": data_ids}).encode())
    return Scenario(manifest_id, name, recordings, colmap, data_ids)


def manifest_cid(fake: FakePosemesh, sc: Scenario) -> str:
    return f"{fake.domain_url}/api/v1/domains/{fake.domain_id}/data/{sc.manifest_id}"


def node_env(fake: FakePosemesh, tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FAKE_RUN_", "DMS_", "DDS_", "POLL_", "HTTP_RETRY_", "HEARTBEAT_", "TOKEN_"))
           and k not in ("DISABLE_TASKS_CLEANUP", "TASKS_ROOT", "SPLATTER_RUN_PY", "HEALTH_PORT", "CLIENT_ID",
                         "POSEMESH_CLIENT_ID", "REG_SECRET", "SECP256K1_PRIVHEX", "LOG_FORMAT", "LOG_LEVEL")}
    env.update({
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        "DMS_BASE_URL": fake.dms_url, "DDS_BASE_URL": fake.dds_url,
        "REG_SECRET": REG_SECRET, "SECP256K1_PRIVHEX": PRIVHEX,
        "REQUEST_TIMEOUT_SECS": "2", "REGISTER_INTERVAL_SECS": "0.1",
        "POLL_BACKOFF_MS_MIN": "20", "POLL_BACKOFF_MS_MAX": "50",
        "HTTP_RETRY_ATTEMPTS": "6", "HTTP_RETRY_BASE_MS": "20", "HTTP_RETRY_MAX_MS": "200",
        "TOKEN_REAUTH_JITTER_MS": "20",
        "TASKS_ROOT": str(tmp / "tasks"), "SPLATTER_RUN_PY": str(FAKE_RUN), "SPLATTER_PYTHON": sys.executable,
        "HEALTH_PORT": "0", "FAKE_RUN_REPORT": str(tmp / "run_report.json"),
    })
    env.update(extra)
    return env


class NodeProcess:
    """``python -m runner serve [--once]`` in ``tmp`` with its stderr (the log) captured to a file."""

    def __init__(self, env: dict[str, str], tmp: Path, once: bool = True):
        self.log_path = tmp / "node.log"
        self._log = open(self.log_path, "wb")
        args = [sys.executable, "-m", "runner", "serve"] + (["--once"] if once else [])
        self.proc = subprocess.Popen(args, cwd=tmp, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"node did not exit in {timeout}s; log:\n{self.log()}") from None
        finally:
            self._log.close()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def dom_token() -> str:
    return f"dom-tok-{uuid.uuid4().hex}"


def report(tmp_path: Path) -> dict:
    """What the stand-in run.py saw and wrote (FAKE_RUN_REPORT)."""
    return json.loads((tmp_path / "run_report.json").read_text())


def dedupe(values: list) -> list:
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def assert_no_secrets(fake: FakePosemesh, log: str, domain_tokens: list[str]) -> None:
    """Keys and tokens never reach the log, nor any request body (progress, events, receipts, uploads);
    REG_SECRET only travels in the register-wallet body it is meant for."""
    tokens = fake.issued_dms_tokens + domain_tokens
    assert fake.issued_dms_tokens and all(tokens)
    for secret in [PRIVHEX, PRIVHEX.upper(), REG_SECRET, *tokens]:
        assert secret not in log, f"secret leaked into the node log: {secret[:12]}..."
    for r in fake.requests:
        body = r.body.decode("latin-1")
        for secret in [PRIVHEX, PRIVHEX.upper(), *tokens]:
            assert secret not in body, f"secret in the body of {r.method} {r.path}"
        if not r.path.endswith("/register-wallet"):
            assert REG_SECRET not in body, f"REG_SECRET in the body of {r.method} {r.path}"
