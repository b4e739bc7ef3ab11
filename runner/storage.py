"""Task-level storage ports: materialize an input CID into the workspace, and upsert output artifacts.

Everything the domain names (items, data types) becomes a path only through ``paths.sanitize_component``, and a
CID may only point into the lease's own domain on the lease's own server: following a CID elsewhere would hand
the Domain access token to whoever wrote the CID.
"""
from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from .domain import DomainClient, DomainDataMetadata
from .paths import contained, sanitize_component

log = logging.getLogger(__name__)

_DATA_PATH = re.compile(r"/domains/([^/]+)/data(?:/([^/]+))?/?$")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[_-]\d{2}-\d{2}-\d{2}")


class CidRefused(Exception):
    """The CID names another domain or another server than the lease's."""


@dataclass(frozen=True)
class CidRef:
    domain_id: str
    ids: tuple[str, ...] = ()
    name: str | None = None
    data_type: str | None = None


def _origin(url: str) -> tuple[str, str, int | None, str]:
    u = urlsplit(url)
    default = {"http": 80, "https": 443}.get(u.scheme)
    return (u.scheme.lower(), (u.hostname or "").lower(), u.port or default, u.path.rstrip("/"))


def parse_cid(cid: str, lease_base: str, lease_domain: str) -> CidRef:
    """Accept a bare data id, an absolute URL, or a ``/``-path joined to the lease's domain server, of the form
    ``…/api/v1/domains/{d}/data[/{id}][?ids=a,b&name=&data_type=]`` (the path id overrides ``ids``)."""
    cid = cid.strip()
    if not cid:
        raise ValueError("empty cid")
    if cid.startswith(("http://", "https://")):
        url = cid
    elif cid.startswith("/"):
        url = lease_base.rstrip("/") + cid
    else:
        return CidRef(domain_id=lease_domain, ids=(cid,))
    parts = urlsplit(url)
    head, sep, _ = url.partition("/api/v1/domains/")
    if not sep:
        raise ValueError(f"cid is not a domain data URL: {cid}")
    if _origin(head) != _origin(lease_base):
        raise CidRefused(f"cid points at another domain server than the lease's: {cid}")
    m = _DATA_PATH.search(parts.path)
    if not m:
        raise ValueError(f"cid is not a domain data URL: {cid}")
    domain_id = unquote(m.group(1))
    if domain_id != lease_domain:
        raise CidRefused(f"cid points at domain {domain_id}, not the lease's domain {lease_domain}")
    q = parse_qs(parts.query, keep_blank_values=False)
    if m.group(2):
        ids: tuple[str, ...] = (unquote(m.group(2)),)
    else:
        ids = tuple(i for v in q.get("ids", []) for i in v.split(",") if i)
    return CidRef(domain_id=domain_id, ids=ids, name=next(iter(q.get("name") or ()), None),
                  data_type=next(iter(q.get("data_type") or ()), None))


@dataclass(frozen=True)
class MaterializedInput:
    """The CID's first item: where it landed and what the domain calls it (the other items land beside it)."""
    path: Path
    data_id: str
    name: str
    data_type: str


def item_path(root: Path, name: str, data_type: str) -> Path:
    """``<root>/datasets/<timestamp in name, or sanitized name>/<sanitized name>.<sanitized data_type>``."""
    ts = _TIMESTAMP.search(name)
    folder = contained(root, "datasets", ts.group(0) if ts else name)
    return folder / f"{sanitize_component(name)}.{sanitize_component(data_type)}"


def materialize_cid(domain: DomainClient, cid: str, lease_base: str, lease_domain: str,
                    workspace: Path) -> MaterializedInput:
    """List the CID's items and download each raw into a fresh ``domain-input-<uuid>`` folder in the workspace."""
    ref = parse_cid(cid, lease_base, lease_domain)
    metas: list[DomainDataMetadata] = domain.list_metadata(ref.domain_id, ids=ref.ids, name=ref.name,
                                                           data_type=ref.data_type)
    if not metas:
        raise FileNotFoundError(f"domain response missing data for {cid}")
    root = workspace / "inputs" / f"domain-input-{uuid.uuid4()}"
    paths = []
    for meta in metas:
        dest = item_path(root, meta.name, meta.data_type)
        n = domain.download_by_id(ref.domain_id, meta.id, dest)
        log.info("materialized %r (%r, %d bytes) to %s", meta.name, meta.data_type, n, dest)
        paths.append(dest)
    first = metas[0]
    return MaterializedInput(path=paths[0], data_id=first.id, name=first.name, data_type=first.data_type)


@dataclass(frozen=True)
class UploadRecord:
    logical_path: str
    name: str
    data_type: str
    id: str

    def to_json(self) -> dict:
        return {"logical_path": self.logical_path, "name": self.name, "data_type": self.data_type, "id": self.id}


class ArtifactOutput:
    """``put_domain_artifact``: upsert by explicit id, by an id uploaded earlier under the same logical path in
    this task, or by an exact name+data_type lookup; every upload is recorded for the receipt."""

    def __init__(self, domain: DomainClient, domain_id: str, outputs_prefix: str | None):
        self.domain = domain
        self.domain_id = domain_id
        self.prefix = (outputs_prefix or "").strip("/")
        self.uploads: list[UploadRecord] = []

    def logical_path(self, rel_path: str) -> str:
        rel = rel_path.lstrip("/")
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def put_domain_artifact(self, rel_path: str, name: str, data_type: str, path: Path,
                            existing_id: str | None = None) -> str:
        logical = self.logical_path(rel_path)
        eid = existing_id or next((u.id for u in reversed(self.uploads) if u.logical_path == logical), None)
        if eid is None:
            found = self.domain.find(self.domain_id, name, data_type)
            eid = found.id if found else None
        meta = self.domain.upload_file(self.domain_id, name, data_type, path, existing_id=eid)
        log.info("uploaded %s as %r (%r, id %r, %s)", path.name, name, data_type, meta.id,
                 "replaced" if eid else "created")
        record = UploadRecord(logical, name, data_type, meta.id)
        self.uploads = [u for u in self.uploads if u.logical_path != logical] + [record]
        return meta.id

    def output_cids(self) -> list[str]:
        return [u.id for u in self.uploads]
