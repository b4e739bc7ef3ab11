"""Every secret the node holds, and the one scrubber that removes them from anything it writes or sends.

A secret can reach an output by any route: a server that echoes the bearer in an error body, an exception message,
a child's output. So the node does not try to keep secrets out of each message; every sink (each log handler,
progress, events, receipts, error excerpts) passes its text through ``SECRETS.scrub``, which knows the
registration secret, the wallet key (any case, with or without ``0x``) and every DMS and Domain token seen so far.
Only the node registers secrets (``Node``, the token manager, the task session), so importing the runner's modules
elsewhere changes nothing.
"""
from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import quote

MARK = "[REDACTED]"
#: shorter values are not treated as secrets: scrubbing a 3-letter value would mangle every message
MIN_SECRET_LEN = 6
_HEX = re.compile(r"[0-9a-fA-F]{32,}")


class Secrets:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str | None) -> None:
        """Register a secret (and its URL-encoded form; a hex key with and without ``0x``)."""
        if not value or len(value.strip()) < MIN_SECRET_LEN:
            return
        v = value.strip()
        forms = {v, quote(v, safe="")}
        if v[:2].lower() == "0x":
            forms.add(v[2:])
        elif _HEX.fullmatch(v):
            forms.add("0x" + v)
        with self._lock:
            if forms <= self._values:
                return
            self._values |= forms
            alternatives = sorted(self._values, key=len, reverse=True)  # longest first: no partial leftovers
            self._pattern = re.compile("|".join(map(re.escape, alternatives)), re.IGNORECASE)

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None else pattern.sub(MARK, text)

    def scrub_json(self, value: Any) -> Any:
        """A copy of a JSON value with every string (keys included) scrubbed."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(str(k)): self.scrub_json(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub_json(v) for v in value]
        return value


#: the process's secrets
SECRETS = Secrets()
