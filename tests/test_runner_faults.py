"""The node under hostile or failing conditions, as a real process against the fake DDS/DMS/domain server: an
expiring Domain token, servers echoing secrets, names built to forge log lines, failed downloads, a cancel on the
way to the uploads; and the node's command line."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from runner_support.fake_posemesh import FakePosemesh
from runner_support.harness import (
    FAKE_RUN,
    OUTPUTS,
    PRIVHEX,
    REG_SECRET,
    REPO,
    SOG,
    SPLAT,
    SUFFIX,
    WALLET,
    NodeProcess,
    assert_no_secrets,
    dom_token,
    manifest_cid,
    node_env,
    report,
    seed_domain,
)

from pipeline.layout import JobLayout
from runner.redact import MARK, Secrets

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")
NO_DATASETS = "runner failed: no datasets downloaded; expected at least one dmt_recording_* input"


@pytest.fixture
def fake():
    f = FakePosemesh(WALLET, REG_SECRET).start()
    yield f
    f.stop()


def log_records(log: str, fmt: str) -> list[str]:
    """The node's log as records, checking that every physical line is one whole record."""
    lines = log.splitlines()
    assert lines and "\x00" not in log and "\x1b" not in log and "\u2028" not in log
    if fmt == "json":
        return [json.loads(line)["msg"] for line in lines]
    bad = [line for line in lines if not TEXT_LINE.match(line)]
    assert not bad, f"lines that are not log records: {bad[:3]}"
    return lines


# --------------------------------------------------------------------------- the Domain token expires

def test_a_domain_401_fetches_a_fresh_token_by_heartbeat_and_resends_once(fake, tmp_path):
    """The Domain token expires four times: on a recording download, on the look-up before the splat upload, on
    the splat upload itself and on the first preview. Each time the node heartbeats at once, takes the token the
    answer carries and sends the refused request once more; every artifact arrives, with the token in force."""
    sc = seed_domain(fake)
    tokens = [dom_token() for _ in range(5)]
    task_id = fake.add_task([manifest_cid(fake, sc)], access_token=tokens[0])["task"]["id"]
    fake.add_fault("GET", r"raw=true", "expire_token", token=tokens[1])
    fake.add_fault("GET", rf"name=refined_splat{SUFFIX}&", "expire_token", token=tokens[2])
    fake.add_fault("POST", r"/data$", "expire_token", token=tokens[3], skip=1)   # the splat (the SOG goes first)
    fake.add_fault("POST", r"/data$", "expire_token", token=tokens[4], skip=2)   # the first preview
    node = NodeProcess(node_env(fake, tmp_path, FAKE_RUN_EXPECT_COLMAP="1"), tmp_path)
    assert node.wait() == 0, node.log()
    assert [f.fired for f in fake.faults] == [1, 1, 1, 1]
    (receipt,) = fake.receipts[task_id]
    assert receipt[0] == "complete", receipt
    assert [a["name"] for a in receipt[1]["meta"]["artifacts"]] == [name for name, _, _ in OUTPUTS]
    for name, _, _ in OUTPUTS:
        assert len(fake.items_named(name)) == 1, name
    # each refusal: a heartbeat, then the same request again with the fresh token
    domain = fake.find(None, r"^/domain/api/v1/domains/")
    refused = [i for i, r in enumerate(domain) if r.status == 401]
    assert len(refused) == 4
    heartbeats = fake.find("POST", r"/heartbeat$")
    for i, fresh in zip(refused, tokens[1:]):
        r, again = domain[i], domain[i + 1]
        assert (again.method, again.target) == (r.method, r.target)
        assert again.headers["authorization"] == f"Bearer {fresh}" and again.status == 200
        assert any(r.t < hb.t < again.t for hb in heartbeats)
    # the previews after the last refusal all went out with the last token
    posts = [r for r in domain if r.method == "POST" and r.path.endswith("/data") and r.status == 200]
    assert [r.headers["authorization"] for r in posts[-3:]] == [f"Bearer {tokens[4]}"] * 3
    assert_no_secrets(fake, node.log(), tokens)


# --------------------------------------------------------------------------- echoed secrets

@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_echoed_by_servers_are_redacted_everywhere(fake, tmp_path, fmt):
    """Servers echo the bearer (DMS's and the domain's), REG_SECRET and the wallet key in error bodies and
    headers: on a lease, a heartbeat, the best-effort SOG upload and the required splat upload (which fails the
    task). None of it reaches the log (at DEBUG), progress, events or the fail receipt."""
    sc = seed_domain(fake, with_colmap=False, derived_scan=False)
    tok = dom_token()
    task_id = fake.add_task([manifest_cid(fake, sc)], access_token=tok)["task"]["id"]
    echo = f"reg={REG_SECRET} key=0x{PRIVHEX.upper()} raw={PRIVHEX}"
    fake.add_fault("GET", r"^/dms/v1/tasks$", "status", status=500, echo=echo)
    fake.add_fault("POST", r"/heartbeat$", "status", status=502, echo=echo, skip=2)
    fake.add_fault("POST", r"/data$", "status", status=400, echo=echo)            # the SOG: best effort
    fake.add_fault("POST", r"/data$", "status", status=403, echo=echo)            # the splat: the task fails
    node = NodeProcess(node_env(fake, tmp_path, LOG_LEVEL="DEBUG", LOG_FORMAT=fmt), tmp_path)
    assert node.wait() == 0, node.log()
    log = node.log()
    assert [f.fired for f in fake.faults] == [1, 1, 1, 1]
    assert_no_secrets(fake, log, [tok])
    records = log_records(log, fmt)
    assert sum(MARK in r for r in records) >= 4, "the echoes were not logged at all: nothing proven"
    (kind, body), = fake.receipts[task_id]
    assert kind == "fail" and body["reason"].startswith(f"runner failed: create {SPLAT}: HTTP 403: ")
    assert f"Bearer {MARK} reg={MARK} key={MARK} raw={MARK}" in body["reason"]
    (event,) = [e for e in fake.events(task_id) if e.get("stage") == "runner"]
    assert MARK in event["message"] and event["message"] == body["reason"].removeprefix("runner failed: ")


def test_the_secret_scrubber():
    s = Secrets()
    s.add("0x" + PRIVHEX)
    s.add("tok/en+with=chars")
    s.add("short")  # under 6 characters: not a secret worth mangling every message for
    text = f"a 0x{PRIVHEX} b {PRIVHEX.upper()} c tok%2Fen%2Bwith%3Dchars d tok/en+with=chars e short"
    assert s.scrub(text) == f"a {MARK} b {MARK} c {MARK} d {MARK} e short"
    assert s.scrub_json({"k": [f"x{PRIVHEX}", 3, None], PRIVHEX: True}) == {"k": [f"x{MARK}", 3, None], MARK: True}


# --------------------------------------------------------------------------- names built to forge log lines

@pytest.mark.parametrize("fmt", ["text", "json"])
def test_names_from_the_domain_cannot_forge_log_lines(fake, tmp_path, fmt):
    forged = "2026-01-01 00:00:00,000 ERROR runner.node: task forged"
    hostile = [f"dmt_recording_a\n{forged}", "dmt_recording_b\r\x00\x00nul", "dmt_recording_c\x1b[2J\x1b[31mred",
               "dmt_recording_d\u2028sep\x85next"]
    ids = [fake.add_item(n, "dmt_recording_mp4", os.urandom(500)) for n in hostile]
    manifest = fake.add_item("refined_manifest_x", "refined_manifest_json",
                             json.dumps({"dataIDs": [*ids, f"refined_scan_s\n{forged}"]}).encode())
    cid = f"{fake.domain_url}/api/v1/domains/{fake.domain_id}/data/{manifest}"
    task_id = fake.add_task([cid], job_id="job\x1b[31m\nforged")["task"]["id"]
    node = NodeProcess(node_env(fake, tmp_path, FAKE_RUN_NO_PREVIEWS="1", LOG_FORMAT=fmt), tmp_path)
    assert node.wait() == 0, node.log()
    records = log_records(node.log(), fmt)
    assert not any(r.startswith(forged) or f"\n{forged}" in r for r in records)
    if fmt == "text":
        assert any("\\n2026-01-01 00:00:00,000 ERROR" in r for r in records)  # there, escaped
        assert any("\\x1b[2J" in r for r in records) and any("\\x00\\x00nul" in r for r in records)
    assert fake.receipts[task_id][0][0] == "complete"
    assert len(report(tmp_path)["datasets"]) == 4


# --------------------------------------------------------------------------- failed downloads

def test_failed_recording_downloads_fail_the_task_with_the_documented_reason(fake, tmp_path):
    """Every recording download fails: no empty datasets/<scan>/ is left to fool the check, run.py never starts,
    and the receipt says why."""
    sc = seed_domain(fake, with_colmap=False)
    task_id = fake.add_task([manifest_cid(fake, sc)])["task"]["id"]
    fake.add_fault("GET", r"raw=true", "status", status=404, count=99, skip=1)  # the manifest itself arrives
    node = NodeProcess(node_env(fake, tmp_path, DISABLE_TASKS_CLEANUP="1"), tmp_path)
    assert node.wait() == 0, node.log()
    (kind, body), = fake.receipts[task_id]
    assert kind == "fail" and body["reason"] == NO_DATASETS
    assert not (tmp_path / "run_report.json").exists()  # run.py never ran
    assert list((tmp_path / "tasks" / task_id / "datasets").iterdir()) == []


def test_a_failed_recording_and_a_broken_colmap_model_leave_nothing_half_made(fake, tmp_path):
    """One of two recordings and one COLMAP binary fail: run.py sees the good recording only, and no COLMAP
    model at all rather than four fifths of one."""
    sc = seed_domain(fake)
    bad_recording = sc.data_ids[0]
    images_bin = fake.items_named(f"colmap_images_bin{SUFFIX}")[0].id
    task_id = fake.add_task([manifest_cid(fake, sc)])["task"]["id"]
    fake.add_fault("GET", rf"/data/{bad_recording}\?raw=true", "status", status=500, count=99)
    fake.add_fault("GET", rf"/data/{images_bin}\?raw=true", "status", status=404, count=99)
    node = NodeProcess(node_env(fake, tmp_path, FAKE_RUN_NO_PREVIEWS="1"), tmp_path)
    assert node.wait() == 0, node.log()
    rep = report(tmp_path)
    assert sorted(rep["datasets"]) == rep["dataset_folders"] == ["2024-01-02_03-30-00"] and rep["colmap"] == {}
    assert not any(f.startswith(("datasets/2024-01-02_03-00-00", "refined/global")) for f in rep["all_files"])
    inputs = next(p for p in fake.progress_values(task_id) if p.get("stage") == "inputs")
    assert (inputs["datasets"], inputs["recording_failures"], inputs["colmap_downloaded"],
            inputs["colmap_failed"]) == (1, 1, 0, 5)
    assert fake.receipts[task_id][0][0] == "complete"


# --------------------------------------------------------------------------- cancel before the uploads

def test_a_cancel_in_the_answer_to_upload_starting_stops_before_any_upload(fake, tmp_path):
    sc = seed_domain(fake, with_colmap=False, derived_scan=False)
    task_id = fake.add_task([manifest_cid(fake, sc)])["task"]["id"]
    fake.cancel_when[task_id] = lambda p: p.get("stage") == "upload" and p.get("status") == "starting"
    node = NodeProcess(node_env(fake, tmp_path), tmp_path)
    assert node.wait() == 0, node.log()
    starting = next(r for r in fake.find("POST", r"/heartbeat$") if r.json()["progress"].get("pct") == 85)
    assert [r.target for r in fake.find(None, r"^/domain/") if r.t > starting.t] == []  # no look-up, /info, POST
    assert task_id not in fake.receipts
    assert fake.progress_values(task_id)[-1] == {"stage": "cancelled", "status": "cancelled"}
    (warn,) = [e for e in fake.events(task_id) if e.get("stage") == "cancelled"]
    assert warn["message"].startswith(f"task cancelled: before uploading {SOG}")


# --------------------------------------------------------------------------- the interpreter and the command line

def test_run_py_runs_in_the_nodes_own_interpreter_by_default(fake, tmp_path):
    """No SPLATTER_PYTHON and no python3 on PATH: run.py still starts, with the node's interpreter."""
    sc = seed_domain(fake, with_colmap=False, derived_scan=False)
    task_id = fake.add_task([manifest_cid(fake, sc)])["task"]["id"]
    env = node_env(fake, tmp_path, PATH=str(tmp_path / "no-python-here"))
    del env["SPLATTER_PYTHON"]
    node = NodeProcess(env, tmp_path)
    assert node.wait() == 0, node.log()
    assert report(tmp_path)["executable"] == sys.executable
    assert fake.receipts[task_id][0][0] == "complete"


def runner_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**keep, "PYTHONPATH": str(REPO), **env})


@pytest.mark.parametrize("args, needle", [
    (["serve", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "the following arguments are required: command"),
    (["run-local"], "the following arguments are required: --job-root"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_flags_are_one_line_and_exit_2(tmp_path, args, needle):
    r = runner_cli(args, tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and "usage:" not in r.stderr


def test_run_local_runs_a_slice_of_the_real_pipeline(tmp_path):
    """``run-local --from-step rotate --to-step convert`` on a job holding a trained splat (no nerfstudio):
    the real run.py rotates and converts, and the node lists the splat as it would upload it."""
    import run
    root = tmp_path / "job"
    run.build_demo_job(JobLayout(root))
    r = runner_cli(["run-local", "--job-root", str(root), "--run-py", str(REPO / "run.py"), "--from-step", "rotate",
                    "--to-step", "convert", "--suffix", "_S"], tmp_path)
    assert r.returncode == 0, r.stderr
    splat = root / "refined/splatter/splat_rot.splat"
    assert r.stdout.splitlines() == [f"refined_splat_S\tsplat_data\t{splat}\t{splat.stat().st_size}"]
    assert "step 2/2 convert: start" in r.stderr and "step convert: done" in r.stderr
    r = runner_cli(["run-local", "--job-root", str(root), "--run-py", str(FAKE_RUN), "--from-step", "x"], tmp_path)
    assert r.returncode == 2  # the stand-in refuses the unknown flag: run.py's status is passed on
