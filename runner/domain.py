"""Client for the domain data server (``{base}/api/v1/...``): metadata, raw downloads, uploads.

Bodies are streamed to and from disk, because recordings can be gigabytes. Create/update use the protocol's
hand-built multipart framing (literal boundary ``boundary`` and a custom ``data-type`` disposition parameter),
which no form encoder produces. Every call is retried on transient failures; uploads are made safe to retry by
checking, before repeating a create, whether the previous attempt already created the item. A 401 means the Domain
access token expired: the client asks for a fresh one (the task session heartbeats DMS, whose answer carries it) and
sends the request once more.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from .config import RetryPolicy
from .httputil import HttpError, Interrupted, check, doubling, retry, with_policy

log = logging.getLogger(__name__)

BOUNDARY = "boundary"
MULTIPART_CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
CLOSING = f"--{BOUNDARY}--\r\n".encode()
CHUNK = 1 << 20
INFO_TTL_S = 60.0
MULTIPART_FALLBACK_STATUSES = (404, 405, 501)
DEFAULT_PART_SIZE = 8 << 20

_info_cache: dict[str, tuple[float, ServerInfo | None]] = {}
_info_lock = threading.Lock()


@dataclass(frozen=True)
class DomainDataMetadata:
    id: str
    domain_id: str
    name: str
    data_type: str
    size: int = 0
    created_at: str = ""
    updated_at: str = ""

    @staticmethod
    def from_json(d: dict) -> DomainDataMetadata:
        return DomainDataMetadata(
            id=str(d.get("id", "")), domain_id=str(d.get("domain_id", "")), name=str(d.get("name", "")),
            data_type=str(d.get("data_type", "")), size=int(d.get("size") or 0),
            created_at=str(d.get("created_at", "")), updated_at=str(d.get("updated_at", "")))


@dataclass(frozen=True)
class ServerInfo:
    request_max_bytes: int
    multipart_enabled: bool


def _disposition_value(value: str, what: str) -> str:
    """Refuse characters that would break out of a quoted disposition parameter (header injection)."""
    if any(c in value for c in '"\r\n\x00'):
        raise ValueError(f"{what} contains a quote, newline or NUL and cannot be framed: {value!r}")
    return value


def create_part_header(name: str, data_type: str) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n"
            f'Content-Disposition: form-data; name="{_disposition_value(name, "name")}"; '
            f'data-type="{_disposition_value(data_type, "data_type")}"\r\n\r\n').encode()


def update_part_header(existing_id: str) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n"
            f'Content-Disposition: form-data; id="{_disposition_value(existing_id, "id")}"\r\n\r\n').encode()


class DomainClient:
    """One domain server. ``token`` is called for every request so a token swapped in by a heartbeat is used by
    the very next call; after a 401, ``refresh(refused_token)`` is asked for a new one (True when the token in
    use changed) and the request is sent once more. ``cancelled`` is polled while bodies stream so a cancel
    stops a long transfer."""

    def __init__(self, base_url: str, token: Callable[[], str], client_id: str, timeout_s: float,
                 retry: RetryPolicy, cancelled: Callable[[], bool] | None = None,
                 refresh: Callable[[str], bool] | None = None):
        self.base = base_url.rstrip("/")
        self._token = token
        self._refresh = refresh or (lambda _stale: False)
        self.client_id = client_id
        self.retry = retry
        self.timeout_s = timeout_s
        self._cancelled = cancelled or (lambda: False)
        self.http = httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> DomainClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- helpers
    def _data_url(self, domain_id: str, suffix: str = "") -> str:
        return f"{self.base}/api/v1/domains/{quote(domain_id, safe='')}/data{suffix}"

    def _send(self, method: str, url: str, client_id: bool, headers: dict[str, str] | None = None,
              content: Callable[[], Any] | None = None, json: Any = None, stream: bool = False) -> httpx.Response:
        """One authenticated request (``posemesh-client-id`` too when ``client_id``); ``content`` makes the body,
        afresh for a resend. On 401 a fresh token is fetched and the request sent once more; the 401 itself is
        returned when no fresh token comes. With ``stream`` the caller closes the response."""
        for resend in (False, True):
            token = self._token()
            h = {"Authorization": f"Bearer {token}", **(headers or {})}
            if client_id:
                h["posemesh-client-id"] = self.client_id
            request = self.http.build_request(method, url, headers=h, json=json,
                                              content=content() if content else None)
            resp = self.http.send(request, stream=stream)
            if resp.status_code != 401 or resend:
                return resp
            log.info("domain answered 401 to %s %s: the access token expired; asking for a fresh one", method,
                     url.split("?", 1)[0])
            if not self._refresh(token):
                log.warning("no fresh domain access token came; %s %s stays refused", method, url.split("?", 1)[0])
                return resp
            resp.close()
        raise AssertionError("unreachable")

    def _retry(self, what: str, fn: Callable[[int], Any]):
        return with_policy(self.retry, what, fn)

    def _file_chunks(self, path: Path, offset: int = 0, length: int | None = None,
                     head: bytes = b"", tail: bytes = b"") -> Iterator[bytes]:
        """Yield ``head``, then ``length`` bytes of ``path`` from ``offset`` in 1 MiB reads, then ``tail``."""
        if head:
            yield head
        remaining = (path.stat().st_size - offset) if length is None else length
        with open(path, "rb") as f:
            f.seek(offset)
            while remaining > 0:
                if self._cancelled():
                    raise Interrupted("upload cancelled")
                block = f.read(min(CHUNK, remaining))
                if not block:
                    raise OSError(f"{path} shrank while uploading")
                remaining -= len(block)
                yield block
        if tail:
            yield tail

    # ---------------------------------------------------------------- info
    def info(self) -> ServerInfo | None:
        """``GET /api/v1/info``, cached 60 s per base URL; None means unknown (404 or unparsable)."""
        now = time.monotonic()
        with _info_lock:
            hit = _info_cache.get(self.base)
            if hit and now - hit[0] < INFO_TTL_S:
                return hit[1]

        def attempt(_: int) -> ServerInfo | None:
            resp = self.http.get(f"{self.base}/api/v1/info", headers={"Accept": "application/json"})
            if resp.status_code == 404:
                return None
            check(resp, "GET /api/v1/info")
            try:
                up = resp.json()["upload"]
                return ServerInfo(int(up.get("request_max_bytes") or 0),
                                  bool((up.get("multipart") or {}).get("enabled", False)))
            except (ValueError, KeyError, TypeError, AttributeError):
                return None

        try:
            result = self._retry("GET /api/v1/info", attempt)
        except (HttpError, httpx.HTTPError) as exc:
            log.warning("domain info unavailable: %s", exc)
            return None
        with _info_lock:
            _info_cache[self.base] = (time.monotonic(), result)
        return result

    # ---------------------------------------------------------------- metadata
    def list_metadata(self, domain_id: str, ids: Sequence[str] = (), name: str | None = None,
                      data_type: str | None = None) -> list[DomainDataMetadata]:
        """``GET .../data`` with ``ids`` comma-joined verbatim (each id escaped so it cannot add parameters) and
        ``name``/``data_type`` as encoded params. 404 means nothing matched."""
        parts = []
        if ids:
            parts.append("ids=" + ",".join(quote(i, safe="-_.~") for i in ids))
        enc = urlencode([(k, v) for k, v in (("name", name), ("data_type", data_type)) if v is not None])
        if enc:
            parts.append(enc)
        url = self._data_url(domain_id) + ("?" + "&".join(parts) if parts else "")

        def attempt(_: int) -> list[DomainDataMetadata]:
            resp = self._send("GET", url, True, {"Accept": "application/json"})
            if resp.status_code == 404:
                return []
            check(resp, "list domain data")
            return [DomainDataMetadata.from_json(d) for d in (resp.json().get("data") or [])]

        return self._retry("list domain data", attempt)

    def find(self, domain_id: str, name: str, data_type: str) -> DomainDataMetadata | None:
        """The item whose name AND data_type match exactly (the server may match loosely)."""
        for m in self.list_metadata(domain_id, name=name, data_type=data_type):
            if m.name == name and m.data_type == data_type:
                return m
        return None

    # ---------------------------------------------------------------- download
    def download_by_id(self, domain_id: str, data_id: str, dest: Path) -> int:
        """``GET .../data/{id}?raw=true`` streamed into ``dest`` (via a ``.part`` file, renamed when complete, so
        a half-written file never looks like an input). Returns the byte count. A failed download leaves nothing
        behind, not even the folders it made for ``dest``."""
        url = self._data_url(domain_id, "/" + quote(data_id, safe="")) + "?raw=true"
        made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")

        def attempt(_: int) -> int:
            n = 0
            resp = self._send("GET", url, True, stream=True)
            try:
                check(resp, f"download {data_id}")
                with open(tmp, "wb") as f:
                    for block in resp.iter_bytes(CHUNK):
                        if self._cancelled():
                            raise Interrupted("download cancelled")
                        f.write(block)
                        n += len(block)
            finally:
                resp.close()
            os.replace(tmp, dest)
            return n

        try:
            return self._retry(f"download {data_id}", attempt)
        except BaseException:
            for folder in made:  # innermost first; rmdir refuses a folder something else filled meanwhile
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise
        finally:
            tmp.unlink(missing_ok=True)

    # ---------------------------------------------------------------- single-request upload
    def _send_single(self, method: str, domain_id: str, head: bytes, path: Path, what: str) -> DomainDataMetadata:
        size = path.stat().st_size
        length = len(head) + size + 2 + len(CLOSING)
        resp = self._send(method, self._data_url(domain_id), False,
                          {"Content-Type": MULTIPART_CONTENT_TYPE, "Content-Length": str(length)},
                          content=lambda: self._file_chunks(path, head=head, tail=b"\r\n" + CLOSING))
        check(resp, what)
        data = resp.json().get("data") or []
        if not data:
            raise HttpError(what, resp.status_code, "response carried no data item")
        return DomainDataMetadata.from_json(data[0])

    def create(self, domain_id: str, name: str, data_type: str, path: Path) -> DomainDataMetadata:
        """POST one new item (single attempt; see ``upload_file`` for the retry-safe path)."""
        return self._send_single("POST", domain_id, create_part_header(name, data_type), path, f"create {name}")

    def update(self, domain_id: str, existing_id: str, path: Path) -> DomainDataMetadata:
        """PUT new bytes for an existing id. Idempotent, so it can be repeated freely."""
        return self._send_single("PUT", domain_id, update_part_header(existing_id), path, f"update {existing_id}")

    def _upload_single(self, domain_id: str, name: str, data_type: str, path: Path,
                       existing_id: str | None) -> DomainDataMetadata:
        """One-request upload, retried without ever creating a duplicate.

        A POST whose answer was lost may still have taken effect, so every retry of a create first looks the
        item up and, if it is there, replaces it by id (PUT is idempotent). After a read timeout the server
        may even still be working on the request, so the lookup is repeated for up to one request timeout
        before a new POST is risked.
        """
        last_error: BaseException | None = None

        def attempt(n: int) -> DomainDataMetadata:
            nonlocal last_error
            eid = existing_id
            if eid is None and n > 1:
                settle = self.timeout_s if isinstance(last_error, httpx.ReadTimeout) else 0.0
                found = self._lookup_settled(domain_id, name, data_type, settle)
                if found is not None:
                    log.info("earlier create of %s took effect (id %s); replacing by id", name, found.id)
                    eid = found.id
            try:
                if eid:
                    return self.update(domain_id, eid, path)
                return self.create(domain_id, name, data_type, path)
            except Exception as exc:
                last_error = exc
                raise

        return self._retry(f"upload {name}", attempt)

    def _lookup_settled(self, domain_id: str, name: str, data_type: str, settle_s: float) -> DomainDataMetadata | None:
        """``find`` now, and keep polling (50 ms, doubling to 1 s) until ``settle_s`` has passed while nothing
        shows up."""
        return retry(lambda _: self.find(domain_id, name, data_type), f"look up {name}", doubling(0.05, 1.0),
                     deadline_s=settle_s, retry_on=lambda _exc: False, until=lambda found: found is not None,
                     cancelled=self._cancelled)

    # ---------------------------------------------------------------- multipart upload
    def _multipart_url(self, domain_id: str, query: str) -> str:
        return self._data_url(domain_id, "/multipart") + "?" + query

    def _upload_multipart(self, domain_id: str, name: str, data_type: str, path: Path,
                          existing_id: str | None, fallback_part_size: int) -> DomainDataMetadata | None:
        """Initiate / parts / complete; returns None when the server has no multipart endpoint (404/405/501
        at initiate) so the caller falls back to one request. Any later error aborts the upload."""
        size = path.stat().st_size
        body = {"name": "" if existing_id else name, "data_type": "" if existing_id else data_type,
                "size": size, "content_type": "application/octet-stream", "existing_id": existing_id}

        def initiate(_: int) -> dict | None:
            resp = self._send("POST", self._multipart_url(domain_id, "uploads"), True, json=body)
            if resp.status_code in MULTIPART_FALLBACK_STATUSES:
                return None
            check(resp, f"initiate multipart upload of {name}")
            return resp.json()

        init = self._retry(f"initiate multipart upload of {name}", initiate)
        if init is None:
            log.info("multipart upload not supported by %s; sending %s in one request", self.base, name)
            return None
        upload_id = str(init.get("upload_id") or "")
        if not upload_id:
            raise HttpError(f"initiate multipart upload of {name}", 200, "response has no upload_id")
        part_size = int(init.get("part_size") or 0) or fallback_part_size
        uid = quote(upload_id, safe="")
        try:
            parts = []
            for number, offset in enumerate(range(0, size, part_size), start=1):
                length = min(part_size, size - offset)

                def put_part(_: int, number: int = number, offset: int = offset, length: int = length) -> str:
                    resp = self._send(
                        "PUT", self._multipart_url(domain_id, f"uploadId={uid}&partNumber={number}"), True,
                        {"Content-Type": "application/octet-stream", "Content-Length": str(length)},
                        content=lambda: self._file_chunks(path, offset, length))
                    check(resp, f"upload part {number} of {name}")
                    return str(resp.json().get("etag", ""))

                parts.append({"part_number": number,
                              "etag": self._retry(f"upload part {number} of {name}", put_part)})

            def complete(n: int) -> DomainDataMetadata:
                resp = self._send("POST", self._multipart_url(domain_id, f"uploadId={uid}"), True,
                                  json={"parts": parts})
                if resp.status_code == 404 and n > 1:
                    # The previous complete may have succeeded and retired the upload id: look for the result.
                    done = self._find_uploaded(domain_id, name, data_type, existing_id, size)
                    if done is not None:
                        log.info("earlier completion of %s took effect (id %s)", name, done.id)
                        return done
                check(resp, f"complete multipart upload of {name}")
                return DomainDataMetadata.from_json(resp.json())

            return self._retry(f"complete multipart upload of {name}", complete)
        except BaseException:
            self._abort(domain_id, uid, name)
            raise

    def _find_uploaded(self, domain_id: str, name: str, data_type: str, existing_id: str | None,
                       size: int) -> DomainDataMetadata | None:
        if existing_id:
            found = next((m for m in self.list_metadata(domain_id, ids=[existing_id]) if m.id == existing_id), None)
        else:
            found = self.find(domain_id, name, data_type)
        return found if found is not None and found.size == size else None

    def _abort(self, domain_id: str, uid: str, name: str) -> None:
        try:
            resp = self._send("DELETE", self._multipart_url(domain_id, f"uploadId={uid}"), True)
            log.warning("aborted multipart upload of %s (HTTP %d)", name, resp.status_code)
        except httpx.HTTPError as exc:
            log.warning("could not abort multipart upload of %s: %s", name, type(exc).__name__)

    # ---------------------------------------------------------------- public upload
    def upload_file(self, domain_id: str, name: str, data_type: str, path: Path,
                    existing_id: str | None = None) -> DomainDataMetadata:
        """Upload ``path`` as ``name``/``data_type`` (or replace ``existing_id``), exactly once in effect.

        Multipart is used when ``/info`` says it is enabled and the one-request body would exceed
        ``request_max_bytes``, and also when ``/info`` is unknown (the compute-node's file path always tries it
        first); a 404/405/501 at initiate falls back to one streamed request. Empty files are refused.
        """
        size = path.stat().st_size
        if size == 0:
            raise ValueError(f"refusing to upload empty file {path}")
        head = update_part_header(existing_id) if existing_id else create_part_header(name, data_type)
        single_len = len(head) + size + 2 + len(CLOSING)
        info = self.info()
        if info is None:
            use_multipart, fallback_part = True, DEFAULT_PART_SIZE
        else:
            use_multipart = info.multipart_enabled and 0 < info.request_max_bytes < single_len
            fallback_part = max(1, min(DEFAULT_PART_SIZE, info.request_max_bytes)) if info.request_max_bytes > 0 \
                else DEFAULT_PART_SIZE
        if use_multipart:
            meta = self._upload_multipart(domain_id, name, data_type, path, existing_id, fallback_part)
            if meta is not None:
                return meta
        return self._upload_single(domain_id, name, data_type, path, existing_id)

