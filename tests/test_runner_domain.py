"""The domain data client against the fake domain server over real HTTP: exact framing, multipart uploads,
upsert, streaming downloads, and exactly-once uploads through injected faults."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from runner_support.fake_posemesh import FakePosemesh
from runner_support.harness import REG_SECRET, REPO, WALLET

from runner.config import RetryPolicy
from runner.domain import DomainClient
from runner.httputil import HttpError
from runner.storage import ArtifactOutput

FAST = RetryPolicy(attempts=5, base_s=0.01, max_s=0.05)
TOKEN = "dom-token-xyz"


@pytest.fixture
def fake():
    f = FakePosemesh(WALLET, REG_SECRET).start()
    f.domain_tokens.add(TOKEN)
    yield f
    f.stop()


def client(fake: FakePosemesh, timeout: float = 2.0, retry: RetryPolicy = FAST, **kw) -> DomainClient:
    return DomainClient(fake.domain_url, lambda: TOKEN, "test-client", timeout, retry, **kw)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_create_body_is_the_hand_built_framing_byte_for_byte(fake, tmp_path):
    data = os.urandom(777)
    path = write(tmp_path, "a.splat", data)
    with client(fake) as c:
        meta = c.create(fake.domain_id, "refined_splat_x", "splat_data", path)
    (req,) = fake.find("POST", r"/data$")
    assert req.headers["content-type"] == "multipart/form-data; boundary=boundary"
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert "posemesh-client-id" not in req.headers  # create/update send only the bearer
    assert req.body == (b'--boundary\r\nContent-Type: application/octet-stream\r\n'
                        b'Content-Disposition: form-data; name="refined_splat_x"; data-type="splat_data"\r\n\r\n'
                        + data + b"\r\n--boundary--\r\n")
    assert int(req.headers["content-length"]) == len(req.body)
    assert "transfer-encoding" not in req.headers
    assert fake.items[meta.id].data == data and meta.name == "refined_splat_x" and meta.size == 777


def test_update_by_id_uses_put_with_id_disposition(fake, tmp_path):
    existing = fake.add_item("refined_splat", "splat_data", b"old")
    path = write(tmp_path, "b", b"new bytes")
    with client(fake) as c:
        meta = c.update(fake.domain_id, existing, path)
    (req,) = fake.find("PUT", r"/data$")
    assert req.body == (b'--boundary\r\nContent-Type: application/octet-stream\r\n'
                        + f'Content-Disposition: form-data; id="{existing}"\r\n\r\n'.encode()
                        + b"new bytes\r\n--boundary--\r\n")
    assert meta.id == existing and fake.items[existing].data == b"new bytes"


def test_upsert_replaces_an_existing_artifact_by_id(fake, tmp_path):
    """put_domain_artifact finds name+data_type on the domain and PUTs by id instead of creating a twin."""
    existing = fake.add_item("refined_splat_s", "splat_data", b"previous run")
    fake.add_item("refined_splat_s", "splat_preview_top", b"same name, other type")
    path = write(tmp_path, "c", b"fresh")
    with client(fake) as c:
        out = ArtifactOutput(c, fake.domain_id, "/out/")
        new_id = out.put_domain_artifact("refined_splat_s", "refined_splat_s", "splat_data", path)
        # a second upload under the same logical path reuses the id from this task, no lookup needed
        n_lookups = len(fake.find("GET", r"name="))
        again = out.put_domain_artifact("refined_splat_s", "refined_splat_s", "splat_data", path)
    assert new_id == existing == again
    assert len(fake.find("GET", r"name=")) == n_lookups
    assert fake.creates == [] and fake.updates == [existing, existing]
    assert any(f'id="{existing}"'.encode() in r.body for r in fake.find("PUT", r"/data$"))
    assert [u.to_json() for u in out.uploads] == [{"logical_path": "out/refined_splat_s", "name": "refined_splat_s",
                                                   "data_type": "splat_data", "id": existing}]


def test_list_metadata_query_forms_and_client_id(fake):
    ids = [fake.add_item(f"n{i}", "t", b"x") for i in range(3)]
    with client(fake) as c:
        got = c.list_metadata(fake.domain_id, ids=ids)
        named = c.list_metadata(fake.domain_id, name="n1 &x=y", data_type="t")
    assert sorted(m.id for m in got) == sorted(ids) and named == []
    r_ids, r_named = fake.find("GET", r"/data\?")
    assert r_ids.query == "ids=" + ",".join(ids)  # comma-joined verbatim
    assert r_named.query == "name=n1+%26x%3Dy&data_type=t"  # encoded: cannot smuggle parameters
    for r in (r_ids, r_named):
        assert r.headers["accept"] == "application/json"
        assert r.headers["posemesh-client-id"] == "test-client"


def test_download_streams_to_disk_and_survives_dropped_connections(fake, tmp_path):
    data = os.urandom(3 << 20)
    item = fake.add_item("dmt_recording_x", "dmt_recording_mp4", data)
    fake.add_fault("GET", r"raw=true", "drop_before", count=1)
    fake.add_fault("GET", r"raw=true", "status", status=502, count=1)
    dest = tmp_path / "datasets" / "x" / "Frames.mp4"
    with client(fake) as c:
        n = c.download_by_id(fake.domain_id, item, dest)
    assert n == len(data) and hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert not list(dest.parent.glob("*.part"))
    (last,) = fake.find("GET", r"raw=true")[-1:]
    assert last.headers["posemesh-client-id"] == "test-client"


def test_4xx_is_not_retried_5xx_and_429_are(fake, tmp_path):
    fake.add_fault("GET", r"/data\?", "status", status=403, count=1)
    with client(fake) as c:
        with pytest.raises(HttpError) as ei:
            c.list_metadata(fake.domain_id, name="a")
        assert ei.value.status == 403
        assert len(fake.find("GET", r"name=a")) == 1
        fake.add_fault("GET", r"name=b", "status", status=503, count=2)
        fake.add_fault("GET", r"name=b", "status", status=429, count=1)
        assert c.list_metadata(fake.domain_id, name="b") == []
        assert len(fake.find("GET", r"name=b")) == 4
        fake.add_fault("GET", r"name=c", "status", status=500, count=99)
        with pytest.raises(HttpError):
            c.list_metadata(fake.domain_id, name="c")
        assert len(fake.find("GET", r"name=c")) == FAST.attempts


@pytest.mark.parametrize("action", ["drop_after", "status", "slow"])
def test_create_is_exactly_once_when_the_server_processed_it_but_the_answer_was_lost(fake, tmp_path, action):
    """The POST took effect, but the client saw a dropped connection / a 5xx / a timeout (the slow server
    only creates the item after the client gave up). The retry must find the item and replace it by id,
    never create a second one."""
    fake.info = {"upload": {"request_max_bytes": 1 << 20}}  # known, no multipart: single-request uploads
    data = os.urandom(2048)
    path = write(tmp_path, "s", data)
    if action == "status":  # a 5xx after processing: emulate by processing on a drop, then a 500 on the next
        fake.add_fault("POST", r"/data$", "drop_after", count=1)
        fake.add_fault("GET", r"name=", "status", status=500, count=1, skip=1)
    else:
        fake.add_fault("POST", r"/data$", action, count=1, seconds=0.8)
    with client(fake, timeout=0.4) as c:
        out = ArtifactOutput(c, fake.domain_id, "out")
        art_id = out.put_domain_artifact("refined_splat", "refined_splat", "splat_data", path)
    items = fake.items_named("refined_splat")
    assert len(items) == 1, [i.meta() for i in items]
    assert items[0].id == art_id and items[0].data == data
    assert fake.creates == ["refined_splat"]


def test_multipart_upload_of_a_file_larger_than_request_max_bytes(fake, tmp_path):
    fake.info = {"upload": {"request_max_bytes": 4096, "multipart": {"enabled": True}}}
    fake.part_size = 1500
    data = os.urandom(10_000)
    path = write(tmp_path, "big.splat", data)
    fake.add_fault("PUT", r"partNumber=3", "drop_after", count=1)   # part stored, answer lost: PUT again
    fake.add_fault("PUT", r"partNumber=5", "status", status=503, count=2)
    fake.add_fault("POST", r"uploadId=", "drop_after", count=1)     # completed, answer lost
    with client(fake) as c:
        meta = c.upload_file(fake.domain_id, "refined_splat_big", "splat_data", path)
    assert fake.items[meta.id].data == data and fake.creates == ["refined_splat_big"]
    init = fake.find("POST", r"/multipart\?uploads$")
    assert len(init) == 1 and init[0].json() == {"name": "refined_splat_big", "data_type": "splat_data",
                                                 "size": 10_000, "content_type": "application/octet-stream",
                                                 "existing_id": None}
    parts = fake.find("PUT", r"partNumber=")
    numbers = sorted({int(re.search(r"partNumber=(\d+)", r.query).group(1)) for r in parts})
    assert numbers == list(range(1, 8))  # ceil(10000 / 1500)
    assert all(len(r.body) <= 1500 and r.headers["content-type"] == "application/octet-stream" for r in parts)
    assert all(len(r.body) <= 4096 for r in fake.requests)
    assert not fake.uploads  # nothing left open on the server


def test_multipart_update_and_abort_on_error(fake, tmp_path):
    fake.info = {"upload": {"request_max_bytes": 4096, "multipart": {"enabled": True}}}
    existing = fake.add_item("refined_splat", "splat_data", b"old")
    path = write(tmp_path, "big", os.urandom(5000))
    with client(fake) as c:
        c.upload_file(fake.domain_id, "refined_splat", "splat_data", path, existing_id=existing)
        init = fake.find("POST", r"/multipart\?uploads$")[-1].json()
        assert init["existing_id"] == existing and init["name"] == "" and init["data_type"] == ""
        assert fake.items[existing].data == path.read_bytes() and fake.creates == []
        fake.add_fault("PUT", r"partNumber=2", "status", status=400, count=1)
        with pytest.raises(HttpError):
            c.upload_file(fake.domain_id, "other", "splat_data", path)
    aborts = fake.find("DELETE", r"/multipart\?uploadId=")
    assert len(aborts) == 1 and not fake.uploads and fake.items_named("other") == []


def test_multipart_falls_back_to_one_request_on_404_405_501(fake, tmp_path):
    path = write(tmp_path, "f", os.urandom(3000))
    with client(fake) as c:
        for status in (405, 501):
            fake.add_fault("POST", r"/multipart\?uploads$", "status", status=status, count=1)
            c.upload_file(fake.domain_id, f"fb{status}", "splat_data", path)
        c.upload_file(fake.domain_id, "fb404", "splat_data", path)  # /info unknown, multipart route absent
    assert sorted(fake.creates) == ["fb404", "fb405", "fb501"]
    assert len(fake.find("GET", r"/api/v1/info$")) == 1  # cached for 60 s


def test_info_decides_single_request_when_small_or_multipart_disabled(fake, tmp_path):
    fake.info = {"upload": {"domain_data_max_bytes": 67108864, "request_max_bytes": 134217728}}
    path = write(tmp_path, "f", b"x" * 100)
    with client(fake) as c:
        c.upload_file(fake.domain_id, "small", "splat_data", path)
    assert fake.find("POST", r"/multipart") == [] and fake.creates == ["small"]


def test_refuses_empty_files_and_header_injection(fake, tmp_path):
    empty = write(tmp_path, "e", b"")
    full = write(tmp_path, "f", b"abc")
    with client(fake) as c:
        with pytest.raises(ValueError):
            c.upload_file(fake.domain_id, "x", "splat_data", empty)
        for bad in ('a"; data-type="evil', "a\r\nX: y", "a\x00b"):
            with pytest.raises(ValueError):
                c.upload_file(fake.domain_id, bad, "splat_data", full)
    assert fake.creates == []


def test_large_upload_streams_from_disk(fake, tmp_path):
    """A 96 MiB upload from a separate client process: its peak RSS (VmHWM) stays far below the file size,
    so the body is streamed from disk rather than assembled in memory."""
    fake.info = {"upload": {"request_max_bytes": 1 << 30}}
    path = tmp_path / "huge"
    with open(path, "wb") as f:
        f.truncate(96 << 20)
    script = (
        "import sys, re\n"
        "from pathlib import Path\n"
        "from runner.config import RetryPolicy\n"
        "from runner.domain import DomainClient\n"
        f"c = DomainClient({fake.domain_url!r}, lambda: {TOKEN!r}, 'cid', 30, RetryPolicy(2, 0.01, 0.02))\n"
        f"m = c.upload_file({fake.domain_id!r}, 'huge', 'splat_data', Path({str(path)!r}))\n"
        "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1))\n"
        "print(m.size, hwm)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    size, hwm_kib = map(int, out.stdout.split())
    assert size == 96 << 20
    assert hwm_kib < 80 * 1024, f"client peak RSS {hwm_kib} KiB: body not streamed"
