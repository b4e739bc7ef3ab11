"""Small pieces of the runner on their own: names to paths, CIDs, SIWE, config, receipts, the child process."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from runner_support.harness import FAKE_RUN, PRIVHEX, REPO, WALLET, pid_alive, wait_for

from pipeline.layout import suffixed
from runner.auth import Wallet, siwe_message
from runner.clock import parse_rfc3339
from runner.config import Config, ConfigError
from runner.node import domain_server_url, truncate_utf8
from runner.paths import contained, sanitize_component
from runner.pyproc import ChildCancelled, run_python
from runner.splatter import derived_scan_id, planned_artifacts
from runner.storage import CidRefused, item_path, parse_cid

BASE = "https://domain.example.com"
DOM = "d-1"


@pytest.mark.parametrize("name, want", [
    ("dmt_recording_2024-01-02", "dmt_recording_2024-01-02"),
    ("../../etc/passwd", "______etc_passwd"),
    ("/abs/path", "_abs_path"),
    ("a\x00b", "a_b"),
    ("", "part"),
    ("..", "__"),
    ("ünïcode name.mp4", "_n_code_name_mp4"),
])
def test_sanitize_component(name, want):
    assert sanitize_component(name) == want


def test_long_names_are_capped_and_stay_distinct():
    a, b = sanitize_component("x" * 5000 + "a"), sanitize_component("x" * 5000 + "b")
    assert len(a) == len(b) == 100 and a != b


@pytest.mark.parametrize("name", ["../../../../escape", "/etc/passwd", "a\x00b", "y" * 10_000, "..", "", ".",
                                  "C:\\windows", "~root"])
def test_item_paths_stay_inside_the_root(tmp_path, name):
    p = item_path(tmp_path, name, "../" + name)
    assert tmp_path.resolve() in p.resolve().parents
    assert len(p.name) < 255
    assert contained(tmp_path, name).resolve().parent == tmp_path.resolve()


def test_item_path_uses_the_timestamp_folder(tmp_path):
    p = item_path(tmp_path, "dmt_manifest_2024-01-02_03-04-05", "dmt_manifest_json")
    assert p == tmp_path / "datasets" / "2024-01-02_03-04-05" / "dmt_manifest_2024-01-02_03-04-05.dmt_manifest_json"


def test_parse_cid_forms():
    assert parse_cid("abc-123", BASE, DOM).ids == ("abc-123",)
    ref = parse_cid(f"{BASE}/api/v1/domains/{DOM}/data/item-9?ids=x,y&name=n&name=m", BASE, DOM)
    assert ref.ids == ("item-9",) and ref.name == "n"  # path id overrides ids; first name wins
    ref = parse_cid(f"/api/v1/domains/{DOM}/data?ids=a,b&data_type=t", BASE + "/", DOM)
    assert ref.ids == ("a", "b") and ref.data_type == "t" and ref.domain_id == DOM
    assert parse_cid(f"https://DOMAIN.example.com:443/api/v1/domains/{DOM}/data/z", BASE, DOM).ids == ("z",)


@pytest.mark.parametrize("cid", [
    f"{BASE}/api/v1/domains/other-domain/data/x",        # another domain on the same server
    f"https://evil.example.net/api/v1/domains/{DOM}/data/x",  # the lease's domain id on another host
    f"http://domain.example.com/api/v1/domains/{DOM}/data/x",  # downgraded scheme
])
def test_cids_outside_the_lease_domain_are_refused(cid):
    with pytest.raises(CidRefused):
        parse_cid(cid, BASE, DOM)


def test_suffix_and_scan_rules():
    assert suffixed("refined_splat", "_2024") == "refined_splat_2024"
    assert suffixed("refined_splat", "2024") == "refined_splat_2024"
    assert suffixed("refined_splat", None) == suffixed("refined_splat", "") == "refined_splat"
    assert derived_scan_id("refined_scan_S1") == "S1"
    assert derived_scan_id("dmt_recording_S2.mp4") == "S2"
    assert derived_scan_id("3f2b8c9e-0000-4000-8000-000000000000") is None
    assert derived_scan_id("https://x/y") is None
    assert derived_scan_id("plain_scan") == "plain_scan"


def test_siwe_message_and_signature_recover_the_wallet():
    challenge = {"domain": "dds.auki", "uri": "https://dds.auki", "version": "1", "chainId": 1, "nonce": "n0",
                 "issuedAt": "2026-01-01T00:00:00Z"}
    w = Wallet(PRIVHEX)
    msg = siwe_message(challenge, w.address)
    assert msg == ("dds.auki wants you to sign in with your Ethereum account:\n" + WALLET +
                   "\n\nURI: https://dds.auki\nVersion: 1\nChain ID: 1\nNonce: n0\nIssued At: 2026-01-01T00:00:00Z")
    sig = w.sign(msg)
    assert sig.startswith("0x") and len(sig) == 132 and int(sig[-2:], 16) in (27, 28)
    assert Account.recover_message(encode_defunct(text=msg), signature=sig) == WALLET
    assert PRIVHEX not in repr(w)


def test_truncate_utf8_never_splits_a_character():
    s = "runner failed: " + "é" * 5000
    t = truncate_utf8(s, 4096)
    assert len(t.encode()) <= 4096 and t.encode().decode() == t and s.startswith(t)
    assert truncate_utf8("short", 4096) == "short"


def test_domain_server_url_fallbacks():
    assert domain_server_url({"domain_server_url": "https://a/", "task": {}}) == "https://a"
    assert domain_server_url({"task": {"meta": {"domain_server_url": "https://b"}}}) == "https://b"
    assert domain_server_url({"task": {"meta": {"legacy": {"domain_server_url": "https://c"}}}}) == "https://c"
    assert domain_server_url({"task": {"meta": None}}) is None


def test_rfc3339_parsing():
    assert parse_rfc3339("2026-01-02T03:04:05.123456789Z").microsecond == 123456
    assert parse_rfc3339("2026-01-02T03:04:05+02:00").utcoffset().total_seconds() == 7200
    assert parse_rfc3339("nonsense") is None and parse_rfc3339(None) is None


BASE_ENV = {"REG_SECRET": "s", "SECP256K1_PRIVHEX": PRIVHEX}


def test_config_defaults():
    c = Config.from_env(BASE_ENV)
    assert c.dms_base_url == "https://dms.auki.network/v1" and c.dds_base_url == "https://dds.auki.network"
    assert c.request_timeout_s == 60 and c.poll_backoff_ms_min == 1000 and c.poll_backoff_ms_max == 30000
    assert c.health_port == 8080 and c.posemesh_client_id == "splatter-runner"
    assert c.client_id.startswith("splatter-node/") and c.token_safety_ratio == 0.75
    assert c.tasks_root == Path("tasks") and not c.disable_tasks_cleanup
    assert PRIVHEX not in repr(c) and "'s'" not in repr(c)
    for v in ("1", "true", "YES", "on"):
        assert Config.from_env({**BASE_ENV, "DISABLE_TASKS_CLEANUP": v}).disable_tasks_cleanup


@pytest.mark.parametrize("env, fragment", [
    ({"SECP256K1_PRIVHEX": PRIVHEX}, "REG_SECRET is required"),
    ({"REG_SECRET": "s"}, "SECP256K1_PRIVHEX is required"),
    ({**BASE_ENV, "SECP256K1_PRIVHEX": "xyz"}, "64 hex digits"),
    ({**BASE_ENV, "REQUEST_TIMEOUT_SECS": "0"}, "REQUEST_TIMEOUT_SECS must be in 1..300"),
    ({**BASE_ENV, "REQUEST_TIMEOUT_SECS": "301"}, "REQUEST_TIMEOUT_SECS must be in 1..300"),
    ({**BASE_ENV, "REQUEST_TIMEOUT_SECS": "soon"}, "must be a number"),
    ({**BASE_ENV, "POLL_BACKOFF_MS_MIN": "50", "POLL_BACKOFF_MS_MAX": "10"}, "POLL_BACKOFF_MS_MAX"),
    ({**BASE_ENV, "HEALTH_PORT": "70000"}, "HEALTH_PORT"),
    ({**BASE_ENV, "DMS_BASE_URL": "ftp://x"}, "DMS_BASE_URL"),
    ({**BASE_ENV, "LOG_LEVEL": "BASIC_FORMAT"}, "LOG_LEVEL must be one of"),
    ({**BASE_ENV, "LOG_LEVEL": "bogus"}, "LOG_LEVEL must be one of"),
])
def test_config_errors(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Config.from_env(env)


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=30, env={**keep, "PYTHONPATH": str(REPO), **env})


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    r = _cli(["serve", "--once"], {"SECP256K1_PRIVHEX": PRIVHEX + "deadbeef", "REG_SECRET": "topsecret"}, tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: SECP256K1_PRIVHEX must be 64 hex digits "
                                             "(optionally 0x-prefixed)"]
    assert "topsecret" not in r.stderr and PRIVHEX not in r.stderr
    r = _cli(["serve"], {"SECP256K1_PRIVHEX": PRIVHEX}, tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "REG_SECRET" in r.stderr


@pytest.mark.parametrize("key", ["ff" * 32, "00" * 32,
                                 "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141"])  # 2^256-1, 0, n
def test_a_key_outside_the_curve_is_one_line_and_never_printed(tmp_path, key):
    """64 hex digits, but no secp256k1 private key: eth_keys' own messages print it (hex or decimal)."""
    r = _cli(["serve", "--once"], {"SECP256K1_PRIVHEX": key, "REG_SECRET": "topsecret", "HEALTH_PORT": "0"},
             tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["error: SECP256K1_PRIVHEX is not a valid secp256k1 private key "
                                             "(it must lie in 1 .. n-1, n the curve order)"]
    assert key.lower() not in (r.stdout + r.stderr).lower() and str(int(key, 16)) not in r.stderr


def test_unreadable_config_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "bin.env").write_bytes(bytes(range(128, 256)) * 2)
    r = _cli(["--env-file", str(tmp_path / "bin.env"), "serve"], {}, tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'bin.env'}: cannot read it as a dotenv file (UnicodeDecodeError)"]
    r = _cli(["run-local", "--job-root", str(tmp_path)], {"LOG_LEVEL": "BASIC_FORMAT"}, tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'BASIC_FORMAT'"]
    r = _cli(["run-local", "--job-root", ""], {}, tmp_path)      # "" is not "the current folder"
    assert r.returncode == 2 and "--job-root: an empty name is not a file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_dotenv_file_is_read_and_env_wins(tmp_path):
    (tmp_path / ".env").write_text(f"REG_SECRET=from-dotenv\nSECP256K1_PRIVHEX={PRIVHEX}\nREQUEST_TIMEOUT_SECS=999\n")
    r = _cli(["serve", "--once"], {}, tmp_path)
    assert r.returncode == 2 and "REQUEST_TIMEOUT_SECS must be in 1..300, got 999" in r.stderr
    r = _cli(["serve", "--once"], {"REQUEST_TIMEOUT_SECS": "0.5"}, tmp_path)
    assert r.returncode == 2 and "got 0.5" in r.stderr


def test_run_local_lists_the_artifacts(tmp_path):
    job = tmp_path / "job"
    (job / "datasets" / "scan1").mkdir(parents=True)
    (job / "datasets" / "scan1" / "Frames.mp4").write_bytes(b"frames")
    r = _cli(["run-local", "--job-root", str(job), "--run-py", str(FAKE_RUN), "--suffix", "_S"],
             {"SPLATTER_PYTHON": sys.executable}, tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.strip().splitlines()]
    out = job / "refined" / "splatter"
    assert rows == [
        ["refined_splat_sog_S", "splat_data_sog", str(out / "splat_rot.sog"),
         str((out / "splat_rot.sog").stat().st_size)],
        ["refined_splat_S", "splat_data", str(out / "splat_rot.splat"), str(64 * 32)],
        ["refined_splat_preview_top_S", "splat_preview_top", str(out / "preview_top.jpg"),
         str((out / "preview_top.jpg").stat().st_size)],
        ["refined_splat_preview_angle_S", "splat_preview_angle", str(out / "preview_angle.jpg"),
         str((out / "preview_angle.jpg").stat().st_size)],
        ["refined_splat_preview_video_S", "splat_preview_video", str(out / "preview.mp4"),
         str((out / "preview.mp4").stat().st_size)]]
    assert "fake run.py: done" in r.stderr  # the pipeline's output streamed to the log
    assert [a.name(None) for a, _ in planned_artifacts(job)] == [
        "refined_splat_sog", "refined_splat", "refined_splat_preview_top", "refined_splat_preview_angle",
        "refined_splat_preview_video"]
    r = _cli(["run-local", "--job-root", str(tmp_path / "missing"), "--run-py", str(FAKE_RUN)], {}, tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_run_python_cancel_kills_the_process_group(tmp_path):
    pid_file = tmp_path / "pids"
    env = {**os.environ, "FAKE_RUN_SLEEP": "30", "FAKE_RUN_GRANDCHILD": "1", "FAKE_RUN_PID_FILE": str(pid_file)}
    (tmp_path / "datasets" / "s").mkdir(parents=True)
    (tmp_path / "datasets" / "s" / "Frames.mp4").write_bytes(b"x")
    cancel_at = [float("inf")]

    def cancelled() -> bool:
        if pid_file.exists() and cancel_at[0] == float("inf"):
            cancel_at[0] = time.monotonic()
        return time.monotonic() >= cancel_at[0]

    cmd = [sys.executable, str(FAKE_RUN), "--domain_id", "d", "--job_id", "j", "--job_root_path", str(tmp_path),
           "--log_level", "info"]
    with pytest.raises(ChildCancelled):
        run_python(cmd, tmp_path, env, cancelled)
    assert time.monotonic() - cancel_at[0] < 1.5  # polled every 500 ms, SIGTERM honoured at once
    pids = [int(p) for p in pid_file.read_text().split()]
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=5, what="the group to die")


def test_the_tail_keeps_the_last_stderr_lines_whatever_order_the_pipes_were_read_in():
    from collections import deque

    from runner.pyproc import last_lines
    # the child wrote 300 stdout lines, then its error; the stderr reader happened to get it first
    kept = {"stdout": deque(((i + 2, f"out {i}") for i in range(300)), maxlen=200),
            "stderr": deque([(1, "fatal: training failed")], maxlen=200)}
    tail = last_lines(kept, 200)
    assert len(tail) == 200 and tail[0] == "stderr: fatal: training failed" and tail[-1] == "stdout: out 299"
    assert tail[1] == "stdout: out 101"  # stdout's oldest made room
    assert last_lines({"stdout": deque([(2, "b")]), "stderr": deque([(1, "a")])}) == ["stderr: a", "stdout: b"]
