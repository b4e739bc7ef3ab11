"""A real HTTP server on 127.0.0.1 that plays DDS, DMS and the domain server by the protocol document.

Routes: ``/dds/internal/v1/...`` (SIWE with signature recovery, registration), ``/dms/v1/tasks...`` (lease,
heartbeat, complete, fail) and ``/domain/api/v1/...`` (info, metadata, raw download, hand-framed multipart
create/update, S3-like multipart upload). Every request is recorded (method, path, query, headers, body), and
faults can be injected per route: error statuses, connections dropped before or after the request took effect,
and responses slower than the client's timeout. The server is strict about framing so client bugs show up as
failed requests rather than silently accepted bodies.
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

from eth_account import Account
from eth_account.messages import encode_defunct

CAPABILITY = "/splatter/colmap/v1"


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_plus(seconds: float) -> str:
    return rfc3339(datetime.now(timezone.utc) + timedelta(seconds=seconds))


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    t: float
    status: int | None = None  # what the fake answered; None when it dropped the connection

    @property
    def target(self) -> str:
        return self.path + ("?" + self.query if self.query else "")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Fault:
    """Applies to requests whose method matches and whose path+query matches ``pattern`` (regex search).
    ``skip`` matching requests pass first, then ``count`` are faulted. Actions: ``status`` (answer ``status``
    without processing; with ``echo``, a body and a header that repeat the request's Authorization header and
    ``echo`` itself, as a careless server does), ``drop_before`` (read the body, close without processing),
    ``drop_after`` (process, then close without answering), ``slow`` (wait ``seconds``, then process and answer),
    ``expire_token`` (the Domain token in use expires: 401 now, and the next heartbeat answer brings ``token``)."""

    method: str
    pattern: str
    action: str
    count: int = 1
    status: int = 503
    seconds: float = 0.0
    skip: int = 0
    echo: str | None = None
    token: str = ""
    seen: int = 0
    fired: int = 0

    def matches(self, method: str, target: str) -> bool:
        return self.method == method and re.search(self.pattern, target) is not None


@dataclass
class Item:
    id: str
    domain_id: str
    name: str
    data_type: str
    data: bytes
    created_at: str = field(default_factory=lambda: now_plus(0))
    updated_at: str = field(default_factory=lambda: now_plus(0))

    def meta(self) -> dict:
        return {"id": self.id, "domain_id": self.domain_id, "name": self.name, "data_type": self.data_type,
                "size": len(self.data), "created_at": self.created_at, "updated_at": self.updated_at}


class Drop(Exception):
    """Close the connection without an answer."""


class FakePosemesh:
    def __init__(self, wallet_address: str, reg_secret: str, domain_id: str | None = None):
        self.wallet = wallet_address
        self.reg_secret = reg_secret
        self.domain_id = domain_id or str(uuid.uuid4())
        self.lock = threading.RLock()
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        # DDS
        self.nonces: dict[str, dict] = {}
        self.registered = False
        self.dms_token_ttl = 3600.0
        self.dms_tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.issued_dms_tokens: list[str] = []
        # DMS
        self.task_queue: list[dict] = []
        self.leased: dict[str, dict] = {}
        self.heartbeats: dict[str, list[dict]] = {}
        self.receipts: dict[str, list[tuple[str, dict]]] = {}
        self.cancel_tasks: set[str] = set()
        self.lease_ttl = 3.0
        self.token_rotation: dict[str, tuple[int, str]] = {}  # task -> (after n-th heartbeat, new token)
        self.pending_domain_token: str | None = None  # brought by the next heartbeat answer (expire_token)
        self.cancel_when: dict[str, Any] = {}  # task -> predicate on a heartbeat's progress: cancel in its answer
        self.reject_fail_details = False
        # domain
        self.domain_tokens: set[str] = set()
        self.info: dict | None = None
        self.part_size = 1500
        self.items: dict[str, Item] = {}
        self.uploads: dict[str, dict] = {}
        self.creates: list[str] = []   # names of items created (by any route)
        self.updates: list[str] = []   # ids updated
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.dds_url = self.url + "/dds"
        self.dms_url = self.url + "/dms/v1"
        self.domain_url = self.url + "/domain"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> FakePosemesh:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakePosemesh:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ test API
    def add_item(self, name: str, data_type: str, data: bytes, domain_id: str | None = None,
                 item_id: str | None = None) -> str:
        with self.lock:
            item = Item(item_id or str(uuid.uuid4()), domain_id or self.domain_id, name, data_type, data)
            self.items[item.id] = item
            return item.id

    def items_named(self, name: str) -> list[Item]:
        with self.lock:
            return [i for i in self.items.values() if i.name == name]

    def add_task(self, inputs_cids: list[str], capability: str = CAPABILITY, task_id: str | None = None,
                 job_id: str | None = None, access_token: str = "dom-tok-A", **lease_extra: Any) -> dict:
        task_id = task_id or str(uuid.uuid4())
        lease = {"access_token": access_token, "access_token_expires_at": now_plus(600),
                 "lease_expires_at": now_plus(self.lease_ttl), "cancel": False, "status": "leased",
                 "domain_id": self.domain_id, "domain_server_url": self.domain_url,
                 "task": {"id": task_id, "job_id": job_id or str(uuid.uuid4()), "capability": capability,
                          "inputs_cids": inputs_cids, "outputs_prefix": "out", "status": "leased",
                          "meta": {}, "attempts": 1, "max_attempts": 1}}
        lease.update(lease_extra)
        with self.lock:
            self.domain_tokens.add(access_token)
            self.task_queue.append(lease)
        return lease

    def add_fault(self, method: str, pattern: str, action: str, **kw: Any) -> Fault:
        f = Fault(method, pattern, action, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def find(self, method: str | None = None, path_re: str = "") -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and re.search(path_re, r.target)]

    def progress_values(self, task_id: str) -> list[Any]:
        return [hb["progress"] for hb in self.heartbeats.get(task_id, [])]

    def events(self, task_id: str) -> list[dict]:
        return [e for hb in self.heartbeats.get(task_id, []) for e in hb["events"]]

    # ------------------------------------------------------------ HTTP plumbing
    def _handler_class(self) -> type:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # answer without Nagle delays: headers and body are separate writes
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *a: object) -> None:
                pass

            def _any(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        return Handler

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        path, _, query = h.path.partition("?")
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            self._answer(h, 411, {"error": "Content-Length required"})
            return
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        rec = Recorded(h.command, path, query, {k.lower(): v for k, v in h.headers.items()}, body, time.monotonic())
        with self.lock:
            self.requests.append(rec)
            fault = None
            for f in self.faults:
                if f.matches(h.command, rec.target):
                    f.seen += 1
                    if f.seen > f.skip and f.fired < f.count:
                        f.fired += 1
                        fault = f
                        break
        if fault and fault.action == "status":
            rec.status = fault.status
            if fault.echo is None:
                self._answer(h, fault.status, {"error": "injected fault"})
            else:
                said = f"{rec.headers.get('authorization', '')} {fault.echo}"
                self._answer(h, fault.status, {"error": f"refused: {said}"}, headers={"X-Debug-Auth": said})
            return
        if fault and fault.action == "expire_token":
            with self.lock:
                self.domain_tokens.clear()
                self.pending_domain_token = fault.token
            rec.status = 401
            self._answer(h, 401, {"error": "token expired"})
            return
        if fault and fault.action == "drop_before":
            self._drop(h)
            return
        if fault and fault.action == "slow":
            time.sleep(fault.seconds)
        try:
            status, payload, ctype = self._route(rec)
        except Drop:
            self._drop(h)
            return
        except Exception as exc:  # noqa: BLE001 - a server bug must show as a 500 in the test, not a hang
            status, payload, ctype = 500, {"error": f"fake server error: {exc!r}"}, "application/json"
        if fault and fault.action == "drop_after":
            self._drop(h)
            return
        rec.status = status
        self._answer(h, status, payload, ctype)

    @staticmethod
    def _drop(h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    @staticmethod
    def _answer(h: BaseHTTPRequestHandler, status: int, payload: Any, ctype: str = "application/json",
                headers: dict[str, str] | None = None) -> None:
        if payload is None:
            raw = b""
        elif isinstance(payload, (bytes, bytearray)):
            raw = bytes(payload)
        else:
            raw = json.dumps(payload).encode()
        try:
            h.send_response(status)
            if raw or status != 204:
                h.send_header("Content-Type", ctype)
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(raw)))
            h.end_headers()
            h.wfile.write(raw)
        except OSError:  # the client gave up (timeout): nothing to do
            h.close_connection = True

    # ------------------------------------------------------------ routing
    def _route(self, r: Recorded) -> tuple[int, Any, str]:
        p = r.path
        if p.startswith("/dds/"):
            return self._dds(r, p[len("/dds"):])
        if p.startswith("/dms/v1/"):
            return self._dms(r, p[len("/dms/v1"):])
        if p.startswith("/domain/api/v1/"):
            return self._domain(r, p[len("/domain/api/v1"):])
        return 404, {"error": "no route"}, "application/json"

    # ------------------------------------------------------------ DDS
    def _dds(self, r: Recorded, p: str) -> tuple[int, Any, str]:
        j = "application/json"
        if r.method != "POST":
            return 405, {"error": "method"}, j
        body = json.loads(r.body or b"{}")
        if p == "/internal/v1/auth/siwe/request":
            if body.get("wallet") != self.wallet:
                return 400, {"error": "unknown wallet"}, j
            nonce = uuid.uuid4().hex
            challenge = {"nonce": nonce, "domain": "dds.test.local", "uri": self.dds_url, "version": "1",
                         "chainId": 1, "issuedAt": now_plus(0)}
            with self.lock:
                self.nonces[nonce] = challenge
            return 200, challenge, j
        if p in ("/internal/v1/nodes/register-wallet", "/internal/v1/auth/siwe/verify"):
            err = self._check_siwe(body.get("message", ""), body.get("signature", ""))
            if err:
                return 401, {"error": err}, j
            if p.endswith("register-wallet"):
                if body.get("registration_credentials") != self.reg_secret:
                    return 401, {"error": "bad registration credentials"}, j
                if CAPABILITY not in (body.get("capabilities") or []) or not body.get("version"):
                    return 400, {"error": "capabilities/version"}, j
                with self.lock:
                    if self.registered:
                        return 409, {"error": "already registered"}, j
                    self.registered = True
                return 200, {"ok": True}, j
            if body.get("address") != self.wallet:
                return 400, {"error": "address mismatch"}, j
            if not self.registered:
                return 403, {"error": "not registered"}, j
            token = f"dms-tok-{uuid.uuid4().hex}"
            with self.lock:
                self.dms_tokens[token] = time.monotonic() + self.dms_token_ttl
                self.issued_dms_tokens.append(token)
            return 200, {"access_token": token, "access_expires_at": now_plus(self.dms_token_ttl)}, j
        return 404, {"error": "no route"}, j

    def _check_siwe(self, message: str, signature: str) -> str | None:
        m = re.search(r"\nNonce: ([0-9a-f]+)\n", message)
        if not m:
            return "no nonce"
        with self.lock:
            challenge = self.nonces.pop(m.group(1), None)  # single use
        if challenge is None:
            return "unknown or reused nonce"
        expected = (f"{challenge['domain']} wants you to sign in with your Ethereum account:\n{self.wallet}\n\n"
                    f"URI: {challenge['uri']}\nVersion: {challenge['version']}\nChain ID: {challenge['chainId']}\n"
                    f"Nonce: {challenge['nonce']}\nIssued At: {challenge['issuedAt']}")
        if message != expected:
            return "message format"
        if not re.fullmatch(r"0x[0-9a-f]{130}", signature or ""):
            return "signature format"
        if int(signature[-2:], 16) not in (27, 28):
            return "signature v"
        signer = Account.recover_message(encode_defunct(text=message), signature=signature)
        return None if signer == self.wallet else "signature does not recover to the wallet"

    # ------------------------------------------------------------ DMS
    def _dms(self, r: Recorded, p: str) -> tuple[int, Any, str]:
        j = "application/json"
        token = r.headers.get("authorization", "").removeprefix("Bearer ")
        with self.lock:
            exp = self.dms_tokens.get(token)
        if exp is None or exp < time.monotonic():
            return 401, {"error": "unauthorized"}, j
        if p == "/tasks" and r.method == "GET":
            with self.lock:
                if not self.task_queue:
                    return 204, None, j
                lease = self.task_queue.pop(0)
                lease["lease_expires_at"] = now_plus(self.lease_ttl)
                self.leased[lease["task"]["id"]] = lease
            return 200, lease, j
        m = re.fullmatch(r"/tasks/([^/]+)/(heartbeat|complete|fail)", p)
        if not m or r.method != "POST":
            return 404, {"error": "no route"}, j
        task_id, kind = unquote(m.group(1)), m.group(2)
        if r.headers.get("content-type") != "application/json":
            return 415, {"error": "json expected"}, j
        body = json.loads(r.body)
        with self.lock:
            if task_id not in self.leased:
                return 404, {"error": "unknown task"}, j
            if kind == "heartbeat":
                if set(body) != {"progress", "events"} or not isinstance(body["events"], list):
                    return 400, {"error": "heartbeat body"}, j
                hbs = self.heartbeats.setdefault(task_id, [])
                hbs.append(body)
                resp: dict[str, Any] = {"lease_expires_at": now_plus(self.lease_ttl), "status": "running"}
                rot = self.token_rotation.get(task_id)
                if rot and len(hbs) >= rot[0]:
                    resp["access_token"] = rot[1]
                    resp["access_token_expires_at"] = now_plus(600)
                    self.domain_tokens = {rot[1]}  # the old token stops working
                if self.pending_domain_token:
                    resp["access_token"] = self.pending_domain_token
                    resp["access_token_expires_at"] = now_plus(600)
                    self.domain_tokens = {self.pending_domain_token}
                    self.pending_domain_token = None
                when = self.cancel_when.get(task_id)
                if when is not None and when(body["progress"]):
                    self.cancel_tasks.add(task_id)
                if task_id in self.cancel_tasks:
                    resp["cancel"] = True
                return 200, resp, j
            if kind == "fail" and self.reject_fail_details and body.get("details") is not None:
                self.receipts.setdefault(task_id, []).append(("fail-rejected", body))
                return 413, {"error": "details too large"}, j
            if any(k in ("complete", "fail") for k, _ in self.receipts.get(task_id, [])):
                return 409, {"error": "task already finished"}, j
            if len(body.get("reason", "").encode()) > 4096:
                return 400, {"error": "reason too long"}, j
            self.receipts.setdefault(task_id, []).append((kind, body))
            return 200, {}, j

    # ------------------------------------------------------------ domain
    def _domain(self, r: Recorded, p: str) -> tuple[int, Any, str]:
        j = "application/json"
        if p == "/info" and r.method == "GET":
            return (404, {"error": "no info"}, j) if self.info is None else (200, self.info, j)
        token = r.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.domain_tokens:
            return 401, {"error": "bad domain token"}, j
        max_bytes = int(((self.info or {}).get("upload") or {}).get("request_max_bytes") or 0)
        if max_bytes and len(r.body) > max_bytes:
            return 413, {"error": "request too large"}, j
        m = re.fullmatch(r"/domains/([^/]+)/data(/multipart|/[^/]+)?", p)
        if not m:
            return 404, {"error": "no route"}, j
        domain_id, sub = unquote(m.group(1)), m.group(2)
        if domain_id != self.domain_id:
            return 404, {"error": "unknown domain"}, j
        q = parse_qs(r.query, keep_blank_values=True)
        if sub == "/multipart":
            return self._multipart(r, q)
        if sub:
            item_id = unquote(sub[1:])
            with self.lock:
                item = self.items.get(item_id)
            if r.method == "GET" and r.query == "raw=true":
                if item is None:
                    return 404, {"error": "not found"}, j
                return 200, item.data, "application/octet-stream"
            if r.method == "DELETE":
                with self.lock:
                    self.items.pop(item_id, None)
                return 204, None, j
            return 404, {"error": "no route"}, j
        if r.method == "GET":
            if r.headers.get("accept") != "application/json":
                return 406, {"error": "json only in this fake"}, j
            ids_raw = re.search(r"(?:^|&)ids=([^&]*)", r.query)
            ids = ids_raw.group(1).split(",") if ids_raw else None
            name = (q.get("name") or [None])[0]
            dtype = (q.get("data_type") or [None])[0]
            with self.lock:
                out = [i.meta() for i in self.items.values()
                       if (ids is None or i.id in ids) and (name is None or i.name == name)
                       and (dtype is None or i.data_type == dtype)]
            return 200, {"data": out}, j
        if r.method in ("POST", "PUT"):
            if r.headers.get("content-type") != "multipart/form-data; boundary=boundary":
                return 400, {"error": "content type"}, j
            try:
                parts = parse_hand_multipart(r.body)
            except ValueError as exc:
                return 400, {"error": f"framing: {exc}"}, j
            out = []
            with self.lock:
                for disp, data in parts:
                    if r.method == "POST":
                        mm = re.fullmatch(r'form-data; name="([^"]*)"; data-type="([^"]*)"', disp)
                        if not mm:
                            return 400, {"error": f"create disposition: {disp}"}, j
                        item = Item(str(uuid.uuid4()), domain_id, mm.group(1), mm.group(2), data)
                        self.items[item.id] = item
                        self.creates.append(item.name)
                    else:
                        mm = re.fullmatch(r'form-data; id="([^"]*)"', disp)
                        if not mm:
                            return 400, {"error": f"update disposition: {disp}"}, j
                        item = self.items.get(mm.group(1))
                        if item is None:
                            return 404, {"error": "unknown id"}, j
                        item.data, item.updated_at = data, now_plus(0)
                        self.updates.append(item.id)
                    out.append(item.meta())
            return 200, {"data": out}, j
        return 405, {"error": "method"}, j

    def _multipart(self, r: Recorded, q: dict) -> tuple[int, Any, str]:
        j = "application/json"
        if self.info is None or not (self.info.get("upload") or {}).get("multipart", {}).get("enabled"):
            return 404, {"error": "multipart disabled"}, j
        with self.lock:
            if r.method == "POST" and r.query == "uploads":
                body = json.loads(r.body)
                upload_id = uuid.uuid4().hex
                self.uploads[upload_id] = {"body": body, "parts": {}}
                return 200, {"upload_id": upload_id, "part_size": self.part_size}, j
            upload_id = (q.get("uploadId") or [""])[0]
            up = self.uploads.get(upload_id)
            if up is None:
                return 404, {"error": "unknown upload"}, j
            if r.method == "PUT" and "partNumber" in q:
                if r.headers.get("content-type") != "application/octet-stream":
                    return 400, {"error": "content type"}, j
                if len(r.body) > self.part_size:
                    return 400, {"error": "part too large"}, j
                etag = hashlib.md5(r.body).hexdigest()
                up["parts"][int(q["partNumber"][0])] = (etag, r.body)
                return 200, {"etag": etag}, j
            if r.method == "POST":
                listed = json.loads(r.body).get("parts") or []
                numbers = [p["part_number"] for p in listed]
                if numbers != list(range(1, len(up["parts"]) + 1)) or \
                        any(up["parts"][p["part_number"]][0] != p["etag"] for p in listed):
                    return 400, {"error": "parts mismatch"}, j
                data = b"".join(up["parts"][n][1] for n in numbers)
                b = up["body"]
                if b.get("size") is not None and b["size"] != len(data):
                    return 400, {"error": "size mismatch"}, j
                if b.get("existing_id"):
                    item = self.items[b["existing_id"]]
                    item.data = data
                    self.updates.append(item.id)
                else:
                    item = Item(str(uuid.uuid4()), self.domain_id, b["name"], b["data_type"], data)
                    self.items[item.id] = item
                    self.creates.append(item.name)
                del self.uploads[upload_id]
                return 200, item.meta(), j
            if r.method == "DELETE":
                del self.uploads[upload_id]
                return 204, None, j
        return 405, {"error": "method"}, j


def parse_hand_multipart(body: bytes) -> list[tuple[str, bytes]]:
    """Strict parser for the protocol's framing; returns (Content-Disposition value, bytes) per part."""
    pos, parts = 0, []
    while True:
        if body[pos:] == b"--boundary--\r\n":
            break
        if not body.startswith(b"--boundary\r\n", pos):
            raise ValueError(f"expected boundary at {pos}")
        pos += len(b"--boundary\r\n")
        end = body.index(b"\r\n\r\n", pos)
        lines = body[pos:end].decode().split("\r\n")
        if len(lines) != 2 or lines[0] != "Content-Type: application/octet-stream" \
                or not lines[1].startswith("Content-Disposition: "):
            raise ValueError(f"part headers {lines}")
        pos = end + 4
        nxt = body.index(b"\r\n--boundary", pos)
        parts.append((lines[1][len("Content-Disposition: "):], body[pos:nxt]))
        pos = nxt + 2
    if not parts:
        raise ValueError("no parts")
    return parts


