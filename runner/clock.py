"""RFC 3339 timestamps from DDS/DMS, parsed without extra dependencies (3.10's fromisoformat rejects ``Z`` and
nanosecond fractions, both of which Go and Rust servers emit)."""
from __future__ import annotations

import re
from datetime import datetime, timezone

_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_rfc3339(value: object) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    s = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    s = _FRACTION.sub(lambda m: m.group(1), s, count=1)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def seconds_until(value: object) -> float | None:
    dt = parse_rfc3339(value)
    return None if dt is None else (dt - datetime.now(timezone.utc)).total_seconds()
