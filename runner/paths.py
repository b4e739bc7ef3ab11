"""Turning names that come from the network into file-system names that cannot escape the task workspace.

Domain item names, data types and task ids are chosen by whoever wrote them to the domain or DMS, so they are
untrusted: ``../../etc``, absolute paths, NUL bytes and 10 kB names must all land inside the workspace.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

MAX_COMPONENT = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def sanitize_component(name: str, max_len: int = MAX_COMPONENT) -> str:
    """Map ``name`` to ``[A-Za-z0-9_-]+`` (anything else becomes ``_``; empty becomes ``part``).

    Names longer than ``max_len`` are cut and given a short hash of the full name, so two long names that share
    a prefix still get different folders.
    """
    clean = _UNSAFE.sub("_", name)
    if not clean:
        return "part"
    if len(clean) > max_len:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        clean = clean[: max_len - len(digest) - 1] + "_" + digest
    return clean


def contained(root: Path, *components: str) -> Path:
    """``root / c1 / c2 ...`` with every component sanitized, checked to resolve inside ``root``.

    The sanitizing alone already guarantees containment; the resolve check is a second lock on the door in case
    a caller passes an unsanitized path by mistake.
    """
    path = root.joinpath(*(sanitize_component(c) for c in components))
    root_r = root.resolve()
    if root_r != path.resolve() and root_r not in path.resolve().parents:
        raise ValueError(f"refusing path outside the workspace: {path}")
    return path
