"""The node end to end: ``python -m runner serve`` as a real process against the fake DDS/DMS/domain server,
with the stand-in run.py as the real child process."""
from __future__ import annotations

import hashlib
import json
import signal
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from runner_support.fake_posemesh import FakePosemesh
from runner_support.harness import (
    FAKE_RUN,
    OUTPUTS,
    PREVIEWS,
    REG_SECRET,
    SOG,
    SPLAT,
    VIDEO,
    WALLET,
    NodeProcess,
    assert_no_secrets,
    dedupe,
    dom_token,
    free_port,
    manifest_cid,
    node_env,
    pid_alive,
    report,
    seed_domain,
    wait_for,
)


@pytest.fixture
def fake():
    f = FakePosemesh(WALLET, REG_SECRET).start()
    yield f
    f.stop()


def test_full_task_flow(fake, tmp_path):
    """Sign-in, lease, inputs at the right paths, run.py, exact uploads, documented progress, complete
    receipt; the Domain token is rotated by a heartbeat and the old one stops working."""
    fake.dms_token_ttl = 1.2   # re-login proactively at 75 % (0.9 s), never running into a 401
    sc = seed_domain(fake)
    tok_a, tok_b = dom_token(), dom_token()
    lease = fake.add_task([manifest_cid(fake, sc)], access_token=tok_a)
    task_id, job_id = lease["task"]["id"], lease["task"]["job_id"]
    fake.token_rotation[task_id] = (2, tok_b)
    node = NodeProcess(node_env(fake, tmp_path, FAKE_RUN_EXPECT_COLMAP="1", FAKE_RUN_SLEEP="1.2",
                                POSEMESH_CLIENT_ID="client-under-test"), tmp_path)
    assert node.wait() == 0, node.log()
    log = node.log()

    # DDS: request, register, request, verify — signatures verified by the fake (a bad one is a 401)
    dds = [r.path.rsplit("/", 1)[1] for r in fake.find(None, r"^/dds/")]
    assert dds[:4] == ["request", "register-wallet", "request", "verify"]
    reg = fake.find("POST", r"/register-wallet$")[0].json()
    assert reg["capabilities"] == ["/splatter/colmap/v1"] and reg["version"] == "0.1.0"
    assert len(fake.find("POST", r"/verify$")) >= 2  # the short-lived DMS token was refreshed ...
    assert all(r.status != 401 for r in fake.find(None, r"^/dms/"))  # ... before it expired

    # heartbeats: the initial empty one, then the documented progress in order
    hbs = fake.heartbeats[task_id]
    assert hbs[0] == {"progress": {}, "events": []}
    job_root = str((tmp_path / "tasks" / task_id).resolve())
    progress = dedupe(fake.progress_values(task_id))
    keys = {"uploaded_sog": True, "uploaded_splat": SPLAT, "uploaded_previews": PREVIEWS,
            "uploaded_preview_video": VIDEO}
    expected = [
        {},
        {"pct": 5, "stage": "workspace", "status": "prepared", "job_root": str(tmp_path / "tasks" / task_id)},
        {"pct": 20, "stage": "inputs", "status": "materialized", "datasets": 2, "metadata_chunks": 1,
         "metadata_items": 2, "recording_failures": 0, "colmap_downloaded": 5, "colmap_failed": 0},
        {"pct": 35, "stage": "python", "status": "starting", "job_root_path": job_root, "script": str(FAKE_RUN)},
        "python-completed",
        {"pct": 85, "stage": "upload", "status": "starting"},
        {"pct": 92, "stage": "upload", "status": "splat_uploaded", "uploaded": SPLAT,
         "splat_path": str(tmp_path / "tasks" / task_id / "refined" / "splatter" / "splat_rot.splat")},
        {"pct": 95, "stage": "upload", "status": "completed", **keys},
        {"progress": 100, "stage": "complete", "status": "succeeded", **keys},
    ]
    assert len(progress) == len(expected), progress
    for got, want in zip(progress, expected):
        if want == "python-completed":
            assert set(got) == {"pct", "stage", "status", "duration_ms"} and got["pct"] == 80
            assert got["status"] == "completed" and got["duration_ms"] >= 1200
        else:
            assert got == want
    events = fake.events(task_id)
    assert [e["message"] for e in events] == ["workspace prepared", "inputs materialized",
                                              "python pipeline starting", "python pipeline completed",
                                              "all outputs uploaded"]  # each delivered exactly once
    assert events[0] == {"level": "info", "stage": "workspace", "message": "workspace prepared",
                         "task_id": task_id, "job_id": job_id}
    assert events[-1] == {"level": "info", "stage": "upload", "message": "all outputs uploaded", **keys}
    # the lease timer heartbeats while run.py works: same progress again, no new events
    py_start = next(i for i, hb in enumerate(hbs) if hb["progress"].get("status") == "starting"
                    and hb["progress"].get("stage") == "python")
    py_done = next(i for i, hb in enumerate(hbs) if hb["progress"].get("pct") == 80)
    timer_beats = [hb for hb in hbs[py_start + 2:py_done] if hb["events"] == []]
    assert timer_beats and all(hb["progress"] == hbs[py_start]["progress"] for hb in timer_beats)

    # inputs landed where run.py expects them, with the right bytes; run.py got the documented command line
    rep = report(tmp_path)
    assert rep["datasets"] == {k: hashlib.sha256(v).hexdigest() for k, v in sc.recordings.items()}
    assert rep["colmap"] == {k: hashlib.sha256(v).hexdigest() for k, v in sc.colmap.items()}
    assert rep["argv"] == ["--domain_id", fake.domain_id, "--job_id", job_id, "--job_root_path", job_root,
                           "--log_level", "info"]
    assert rep["cwd"] == str(FAKE_RUN.parent) and rep["unbuffered"] == "1" and rep["secrets_in_env"] == []

    # uploads: exact bodies, names and data types; every item exactly once
    domain_reqs = fake.find(None, r"^/domain/api/v1/domains/")
    creates = fake.find("POST", r"/data$")
    assert [c.body.split(b'name="')[1].split(b'"')[0].decode() for c in creates] == [o[0] for o in OUTPUTS]
    for (name, dtype, fname), req in zip(OUTPUTS, creates):
        (item,) = fake.items_named(name)
        assert item.data_type == dtype and hashlib.sha256(item.data).hexdigest() == rep["outputs"][fname]
        assert req.body == (b"--boundary\r\nContent-Type: application/octet-stream\r\n"
                            + f'Content-Disposition: form-data; name="{name}"; data-type="{dtype}"\r\n\r\n'.encode()
                            + item.data + b"\r\n--boundary--\r\n")
    assert len(fake.items_named(SPLAT)[0].data) == 64 * 32

    # token swap: after the rotating heartbeat every domain call carries the new token (the old is dead)
    rotated_at = fake.find("POST", r"/heartbeat$")[1].t
    assert all(r.headers["authorization"] == f"Bearer {tok_b}" for r in domain_reqs if r.t > rotated_at)
    assert all(r.status != 401 for r in domain_reqs)
    # client id on list/download/multipart calls, not on create/update
    for r in domain_reqs:
        if r.method == "GET" or "/multipart" in r.path:
            assert r.headers["posemesh-client-id"] == "client-under-test"
        else:
            assert "posemesh-client-id" not in r.headers

    # receipt
    (receipt,) = fake.receipts[task_id]
    ids = [fake.items_named(n)[0].id for n, _, _ in OUTPUTS]
    assert receipt == ("complete", {
        "output_cids": ids,
        "meta": {"job": {"task_id": task_id, "job_id": job_id, "domain_id": fake.domain_id,
                         "capability": "/splatter/colmap/v1"},
                 "artifacts": [{"logical_path": f"out/{n}", "name": n, "data_type": dt, "id": i}
                               for (n, dt, _), i in zip(OUTPUTS, ids)]}})
    assert not (tmp_path / "tasks" / task_id).exists()  # workspace cleaned up
    assert_no_secrets(fake, log, [tok_a, tok_b])


def test_cancel_mid_run_kills_the_child_and_sends_no_receipt(fake, tmp_path):
    sc = seed_domain(fake, with_colmap=False)
    tok = dom_token()
    task_id = fake.add_task([manifest_cid(fake, sc)], access_token=tok)["task"]["id"]
    pid_file = tmp_path / "pids"
    node = NodeProcess(node_env(fake, tmp_path, FAKE_RUN_SLEEP="30", FAKE_RUN_GRANDCHILD="1",
                                FAKE_RUN_PID_FILE=str(pid_file)), tmp_path)
    try:
        wait_for(pid_file.exists, what="run.py to start")
        pids = [int(p) for p in pid_file.read_text().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        t0 = time.monotonic()
        fake.cancel_tasks.add(task_id)
        rc = node.wait(timeout=15)
    finally:
        node.kill()
    assert rc == 0, node.log()
    assert time.monotonic() - t0 < 5
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=5, what="run.py and its child to be gone")
    assert task_id not in fake.receipts
    assert fake.find("POST", r"/data$") == []
    progress = fake.progress_values(task_id)
    assert progress[-1] == {"stage": "cancelled", "status": "cancelled"}
    warn = [e for e in fake.events(task_id) if e.get("stage") == "cancelled"]
    assert warn and warn[0]["level"] == "warn" and warn[0]["message"].startswith("task cancelled: python execution")
    assert not (tmp_path / "tasks" / task_id).exists()
    assert_no_secrets(fake, node.log(), [tok])


def test_missing_previews_still_complete(fake, tmp_path):
    sc = seed_domain(fake, with_colmap=False, derived_scan=False)
    task_id = fake.add_task([manifest_cid(fake, sc)])["task"]["id"]
    node = NodeProcess(node_env(fake, tmp_path, FAKE_RUN_NO_PREVIEWS="1", FAKE_RUN_NO_SOG="1"), tmp_path)
    assert node.wait() == 0, node.log()
    keys = {"uploaded_sog": False, "uploaded_splat": SPLAT, "uploaded_previews": [], "uploaded_preview_video": None}
    assert fake.progress_values(task_id)[-1] == {"progress": 100, "stage": "complete", "status": "succeeded", **keys}
    kind, body = fake.receipts[task_id][0]
    assert kind == "complete" and [a["name"] for a in body["meta"]["artifacts"]] == [SPLAT]
    assert "splat_rot.sog not produced; skipping 'refined_splat_sog" in node.log()
    assert "preview_top.jpg not produced; skipping 'refined_splat_preview_top" in node.log()
    inputs = next(p for p in fake.progress_values(task_id) if p.get("stage") == "inputs")
    assert inputs["datasets"] == 1 and inputs["colmap_failed"] == 5 and inputs["colmap_downloaded"] == 0


def test_faults_are_survived_and_every_artifact_is_uploaded_exactly_once(fake, tmp_path):
    """5xx bursts, dropped connections (before and after the server acted), a server slower than the client
    timeout, a 401 from DMS, a refused preview upload; an existing video artifact is replaced by id."""
    fake.info = {"upload": {"request_max_bytes": 1 << 20, "multipart": {"enabled": False}}}
    sc = seed_domain(fake)
    existing_video = fake.add_item(VIDEO, "splat_preview_video", b"video of an earlier run")
    tok = dom_token()
    task_id = fake.add_task([manifest_cid(fake, sc)], access_token=tok)["task"]["id"]
    fake.add_fault("GET", r"^/dms/v1/tasks$", "status", status=401, count=1)
    fake.add_fault("GET", r"/data\?ids=", "status", status=503, count=3)
    fake.add_fault("GET", r"raw=true", "drop_before", count=2)
    fake.add_fault("POST", r"/heartbeat$", "status", status=502, count=1, skip=3)
    fake.add_fault("POST", r"/data$", "drop_after", count=1)                      # the splat create
    fake.add_fault("GET", r"name=refined_splat_2", "status", status=500, count=2, skip=1)
    fake.add_fault("POST", r"/data$", "status", status=400, count=1)              # preview_top refused
    fake.add_fault("POST", r"/data$", "slow", seconds=1.5, count=1)               # preview_angle: too slow
    fake.add_fault("PUT", r"/data$", "status", status=503, count=2)               # video replace
    fake.add_fault("POST", r"/complete$", "drop_after", count=1)
    node = NodeProcess(node_env(fake, tmp_path, REQUEST_TIMEOUT_SECS="1", FAKE_RUN_EXPECT_COLMAP="1",
                                FAKE_RUN_NO_SOG="1"), tmp_path)
    assert node.wait(timeout=40) == 0, node.log()
    rep = report(tmp_path)
    assert len(rep["datasets"]) == 2 and len(rep["colmap"]) == 5
    for name, _, fname in OUTPUTS:
        items = fake.items_named(name)
        if name in (PREVIEWS[0], SOG):
            assert items == []
            continue
        assert len(items) == 1, name
        assert hashlib.sha256(items[0].data).hexdigest() == rep["outputs"][fname]
    assert fake.items_named(VIDEO)[0].id == existing_video
    assert any(f'id="{existing_video}"'.encode() in r.body for r in fake.find("PUT", r"/data$"))
    receipts = fake.receipts[task_id]
    assert [k for k, _ in receipts] == ["complete"]  # the retried complete met 409 and stopped
    body = receipts[0][1]
    names = [a["name"] for a in body["meta"]["artifacts"]]
    assert names == [SPLAT, PREVIEWS[1], VIDEO]
    assert body["output_cids"] == [fake.items_named(n)[0].id for n in names]
    final = fake.progress_values(task_id)[-1]
    assert final["uploaded_previews"] == [PREVIEWS[1]] and final["uploaded_preview_video"] == VIDEO
    assert len(fake.find("POST", r"/verify$")) == 2  # the 401 from DMS forced one re-login
    assert [f.fired for f in fake.faults] == [f.count for f in fake.faults]  # every fault really happened
    assert_no_secrets(fake, node.log(), [tok])


def test_multipart_upload_end_to_end(fake, tmp_path):
    fake.info = {"upload": {"request_max_bytes": 4096, "multipart": {"enabled": True}}}
    fake.part_size = 1500
    sc = seed_domain(fake, with_colmap=False, derived_scan=False)
    task_id = fake.add_task([manifest_cid(fake, sc)])["task"]["id"]
    fake.add_fault("PUT", r"partNumber=2", "drop_after", count=1)
    node = NodeProcess(node_env(fake, tmp_path, FAKE_RUN_GAUSSIANS="300", FAKE_RUN_NO_PREVIEWS="1",
                                FAKE_RUN_NO_SOG="1"), tmp_path)
    assert node.wait() == 0, node.log()
    (item,) = fake.items_named(SPLAT)
    assert len(item.data) == 300 * 32 > 4096
    assert len({r.query for r in fake.find("PUT", r"partNumber=")}) == 7  # ceil(9600 / 1500) parts
    assert fake.find("POST", r"/data$") == [] and all(len(r.body) <= 4096 for r in fake.requests)
    assert fake.receipts[task_id][0][1]["output_cids"] == [item.id]
    assert fake.faults[0].fired == 1


def test_python_failure_sends_a_fail_receipt_with_the_tail(fake, tmp_path):
    sc = seed_domain(fake, with_colmap=False, derived_scan=False)
    lease = fake.add_task([manifest_cid(fake, sc)])
    task_id = lease["task"]["id"]
    node = NodeProcess(node_env(fake, tmp_path, FAKE_RUN_EXIT="3", DISABLE_TASKS_CLEANUP="yes"), tmp_path)
    assert node.wait() == 0, node.log()
    (receipt,) = fake.receipts[task_id]
    assert receipt == ("fail", {"reason": "runner failed: python job failed: status=Some(3)",
                                "details": {"job": {"task_id": task_id, "job_id": lease["task"]["job_id"],
                                                    "domain_id": fake.domain_id,
                                                    "capability": "/splatter/colmap/v1"},
                                            "artifacts": []}})
    assert {"pct": 35, "stage": "python", "status": "failed"} in fake.progress_values(task_id)
    (ev,) = [e for e in fake.events(task_id) if e.get("message") == "python job failed"]
    assert ev["level"] == "error" and ev["stage"] == "python" and ev["status"] == 3
    assert ev["stdout_lines"] == 251 and ev["stderr_lines"] == 2
    # stdout and stderr are two pipes read concurrently, so where the stderr line lands among
    # the stdout lines is up to the readers; the 200-line tail keeps both streams' last lines
    assert len(ev["tail"]) == 200 and "stderr: fatal: training failed" in ev["tail"]
    # both stderr lines may land after the last stdout line: compare each stream's own order
    assert [t for t in ev["tail"] if t.startswith("stdout: ")][-1] == "stdout: training step 249 diverged"
    assert [t for t in ev["tail"] if t.startswith("stderr: ")][-2:] == ["stderr: fake run.py: a warning line on stderr",
                                                                       "stderr: fatal: training failed"]
    runner_ev = [e for e in fake.events(task_id) if e.get("stage") == "runner"]
    assert runner_ev == [{"level": "error", "stage": "runner", "message": "python job failed: status=Some(3)"}]
    assert (tmp_path / "tasks" / task_id / "datasets").is_dir()  # DISABLE_TASKS_CLEANUP keeps it


def test_cid_in_another_domain_is_refused_and_long_reasons_are_cut(fake, tmp_path):
    """The CID names a foreign domain (with a very long id, so the reason exceeds 4096 bytes); DMS refuses
    the details, so the node sends the fail again with details null."""
    fake.reject_fail_details = True
    foreign = "é" * 3000  # 6000 UTF-8 bytes
    cid = f"{fake.domain_url}/api/v1/domains/{foreign}/data/{uuid.uuid4()}"
    task_id = fake.add_task([cid])["task"]["id"]
    node = NodeProcess(node_env(fake, tmp_path), tmp_path)
    assert node.wait() == 0, node.log()
    kinds = [k for k, _ in fake.receipts[task_id]]
    assert kinds == ["fail-rejected", "fail"]
    reason = fake.receipts[task_id][1][1]["reason"]
    assert reason.startswith("runner failed: cid points at domain éé")
    assert len(reason.encode()) <= 4096 and len(reason.encode()) > 4090  # cut on a character boundary
    assert fake.receipts[task_id][1][1]["details"] is None
    assert fake.find(None, r"/api/v1/domains/") == []  # nothing was fetched


def _stamp(path: Path):
    """(size, mtime) of a file or folder, None when there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def test_crafted_names_cannot_write_outside_the_workspace(fake, tmp_path):
    hostile = ["dmt_recording_../../../../escape", "dmt_recording_/etc/passwd", "dmt_recording_a\x00b",
               "dmt_recording_" + "x" * 5000, "dmt_recording_..", "dmt_recording_"]
    ids = [fake.add_item(n, "dmt_recording_mp4", b"frames " + n[:40].encode("unicode_escape")) for n in hostile]
    manifest = fake.add_item("../../refined_manifest/../../x", "../json",
                             json.dumps({"dataIDs": ids + ["refined_scan_../../up"]}).encode())
    fake.add_item("dmt_recording_../../up", "dmt_recording_mp4", b"derived")
    cid = f"{fake.domain_url}/api/v1/domains/{fake.domain_id}/data/{manifest}"
    task_id = fake.add_task([cid])["task"]["id"]
    # where the crafted names would land if they escaped; a file already there (another program's
    # /tmp/x) only counts if the node created or changed it
    targets = [d / bad for d in (tmp_path, *list(tmp_path.parents)[:4]) if d != Path("/")
               for bad in ("escape", "up", "x", "etc/passwd/Frames.mp4")]
    before = {t: _stamp(t) for t in targets}
    node = NodeProcess(node_env(fake, tmp_path, DISABLE_TASKS_CLEANUP="1", FAKE_RUN_NO_PREVIEWS="1"), tmp_path)
    assert node.wait() == 0, node.log()
    root = (tmp_path / "tasks" / task_id).resolve()
    files = [p.resolve() for p in tmp_path.rglob("*") if p.is_file()]
    outside = [p for p in files if root not in p.parents and p.parent != tmp_path.resolve()]
    assert outside == []
    assert [t for t in targets if _stamp(t) != before[t]] == []
    folders = sorted(report(tmp_path)["datasets"])
    assert len(folders) == 7 and all(len(f) <= 100 for f in folders)
    for f in folders:
        assert all(c.isalnum() or c in "_-" for c in f), f
    assert "____________escape" in folders and "_etc_passwd" in folders and "a_b" in folders
    assert fake.receipts[task_id][0][0] == "complete"


def test_first_sigterm_finishes_the_task_and_stops_leasing(fake, tmp_path):
    sc = seed_domain(fake, with_colmap=False, derived_scan=False)
    task_id = fake.add_task([manifest_cid(fake, sc)])["task"]["id"]
    port = free_port()
    pid_file = tmp_path / "pids"
    node = NodeProcess(node_env(fake, tmp_path, HEALTH_PORT=str(port), FAKE_RUN_SLEEP="1",
                                FAKE_RUN_PID_FILE=str(pid_file)), tmp_path, once=False)
    try:
        wait_for(pid_file.exists, what="run.py to start")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert resp.status == 200 and json.loads(resp.read()) == {"status": "ok"}
        node.signal(signal.SIGTERM)
        rc = node.wait(timeout=20)
    finally:
        node.kill()
    assert rc == 0, node.log()
    assert fake.receipts[task_id][0][0] == "complete"
    complete_t = fake.find("POST", r"/complete$")[0].t
    assert all(r.t < complete_t for r in fake.find("GET", r"^/dms/v1/tasks$"))  # no lease after the signal
    assert "no more leasing" in node.log()


def test_second_sigterm_interrupts_the_running_task(fake, tmp_path):
    sc = seed_domain(fake, with_colmap=False, derived_scan=False)
    task_id = fake.add_task([manifest_cid(fake, sc)])["task"]["id"]
    pid_file = tmp_path / "pids"
    node = NodeProcess(node_env(fake, tmp_path, FAKE_RUN_SLEEP="30", FAKE_RUN_PID_FILE=str(pid_file)), tmp_path,
                       once=False)
    try:
        wait_for(pid_file.exists, what="run.py to start")
        (pid,) = [int(p) for p in pid_file.read_text().split()]
        node.signal(signal.SIGTERM)
        time.sleep(0.3)
        assert pid_alive(pid)  # the first signal lets the task run on
        node.signal(signal.SIGTERM)
        rc = node.wait(timeout=10)
    finally:
        node.kill()
    assert rc == 0, node.log()
    wait_for(lambda: not pid_alive(pid), timeout=5, what="run.py to be killed")
    assert task_id not in fake.receipts


def test_cancelled_lease_unknown_capability_and_incomplete_lease(fake, tmp_path):
    sc = seed_domain(fake, with_colmap=False, derived_scan=False)
    cancelled = fake.add_task([manifest_cid(fake, sc)], cancel=True)["task"]["id"]
    unknown = fake.add_task([manifest_cid(fake, sc)], capability="/splatter/local/v1")["task"]["id"]
    no_url = fake.add_task([manifest_cid(fake, sc)], domain_server_url=None)["task"]["id"]
    no_hb = fake.add_task([manifest_cid(fake, sc)])["task"]["id"]
    fake.add_fault("POST", f"/tasks/{no_hb}/heartbeat$", "status", status=400, count=1)
    node = NodeProcess(node_env(fake, tmp_path), tmp_path, once=False)
    try:
        wait_for(lambda: len(fake.find("GET", r"^/dms/v1/tasks$")) >= 6, what="the queue to drain")
        node.signal(signal.SIGTERM)
        rc = node.wait(timeout=10)
    finally:
        node.kill()
    assert rc == 0, node.log()
    assert cancelled not in fake.receipts and cancelled not in fake.heartbeats  # skipped without a word
    assert fake.receipts[unknown] == [("fail", {"reason": "no runner registered for capability: /splatter/local/v1",
                                                "details": {"job": {"task_id": unknown,
                                                                    "job_id": fake.leased[unknown]["task"]["job_id"],
                                                                    "domain_id": fake.domain_id,
                                                                    "capability": "/splatter/local/v1"},
                                                            "artifacts": []}})]
    assert fake.receipts[no_url] == [("fail", {"reason": "node_setup_failed", "details": {
        "stage": "build_ports", "error": "lease lacks domain_server_url or domain_id"}})]
    (kind, body), = fake.receipts[no_hb]
    assert kind == "fail" and body["reason"] == "node_setup_failed"
    assert body["details"]["stage"] == "initial_heartbeat" and "HTTP 400" in body["details"]["error"]
    assert not (tmp_path / "tasks" / no_hb).exists()


def test_lost_lease_kills_the_child_and_sends_no_receipt(fake, tmp_path):
    sc = seed_domain(fake, with_colmap=False, derived_scan=False)
    task_id = fake.add_task([manifest_cid(fake, sc)])["task"]["id"]
    pid_file = tmp_path / "pids"
    node = NodeProcess(node_env(fake, tmp_path, FAKE_RUN_SLEEP="30", FAKE_RUN_PID_FILE=str(pid_file)), tmp_path)
    try:
        wait_for(pid_file.exists, what="run.py to start")
        (pid,) = [int(p) for p in pid_file.read_text().split()]
        fake.add_fault("POST", r"/heartbeat$", "status", status=500, count=1000)  # DMS gone for good
        rc = node.wait(timeout=15)
    finally:
        node.kill()
    assert rc == 0, node.log()
    wait_for(lambda: not pid_alive(pid), timeout=5, what="run.py to be killed")
    assert task_id not in fake.receipts and fake.find("POST", r"/(complete|fail)$") == []
    assert "lease lost" in node.log()


def test_domain_url_from_task_meta_reregistration_and_stale_workspaces(fake, tmp_path):
    """The domain URL comes from task.meta.legacy; an already registered wallet (409) is fine; a 403 from
    verify re-arms registration; stale workspaces (ours only, by marker) are removed at startup."""
    sc = seed_domain(fake, with_colmap=False, derived_scan=False)
    lease = fake.add_task([manifest_cid(fake, sc)], domain_server_url=None)
    lease["task"]["meta"] = {"legacy": {"domain_server_url": fake.domain_url + "/"}}
    fake.registered = True
    fake.add_fault("POST", r"/verify$", "status", status=403, count=1)
    stale, foreign = tmp_path / "tasks" / "old-task", tmp_path / "tasks" / "not-ours"
    for d in (stale, foreign):
        (d / "datasets").mkdir(parents=True)
    (stale / ".splatter-task").touch()
    node = NodeProcess(node_env(fake, tmp_path, FAKE_RUN_NO_PREVIEWS="1"), tmp_path)
    assert node.wait() == 0, node.log()
    assert fake.receipts[lease["task"]["id"]][0][0] == "complete"
    dds = [(r.path.rsplit("/", 1)[1], r.status) for r in fake.find("POST", r"^/dds/") if "request" not in r.path]
    assert dds == [("register-wallet", 409), ("verify", 403), ("register-wallet", 409), ("verify", 200)]
    assert not stale.exists() and foreign.is_dir()


def test_missing_pipeline_script_is_a_config_error(fake, tmp_path):
    node = NodeProcess(node_env(fake, tmp_path, SPLATTER_RUN_PY=str(tmp_path / "nope.py")), tmp_path)
    assert node.wait() == 2
    assert node.log().strip().splitlines() == [f"error: pipeline script {tmp_path / 'nope.py'} not found "
                                               "(set SPLATTER_RUN_PY)"]
    assert fake.requests == []
