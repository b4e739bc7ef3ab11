"""DMS task API: lease, heartbeat, complete, fail (``{DMS}/tasks...``), authenticated with the DDS token.

A 401 means the DMS token went stale early: sign in again and resend once. Transient failures are retried with
backoff; a receipt that meets 409 on a retry is taken as already delivered by the earlier attempt.
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx

from .auth import TokenManager
from .config import Config
from .httputil import HttpError, check, with_policy

log = logging.getLogger(__name__)

MAX_BODY = 2 << 20  # the SDK caps DMS response bodies at 2 MiB


class DmsClient:
    def __init__(self, cfg: Config, tokens: TokenManager):
        self.cfg = cfg
        self.base = cfg.dms_base_url
        self.tokens = tokens
        self.http = httpx.Client(timeout=httpx.Timeout(cfg.request_timeout_s))

    def _send(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """One request with the bearer; on 401 refresh the token and resend exactly once."""
        for fresh in (False, True):
            token = self.tokens.get()
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            resp = self.http.request(method, self.base + path, headers=headers,
                                     **({"json": body} if body is not None else {}))
            if resp.status_code != 401 or fresh:
                return resp
            log.info("DMS answered 401 to %s %s; signing in again", method, path.split("/")[1])
            self.tokens.invalidate(token)
        raise AssertionError("unreachable")

    @staticmethod
    def _json(resp: httpx.Response, what: str) -> dict:
        if len(resp.content) > MAX_BODY:
            raise HttpError(what, resp.status_code, "response body over 2 MiB")
        if not resp.content.strip():
            return {}
        data = resp.json()
        if not isinstance(data, dict):
            raise HttpError(what, resp.status_code, "response is not a JSON object")
        return data

    def lease(self) -> dict | None:
        """``GET /tasks``: a LeaseEnvelope, or None for 204 (no work) and 409 (busy)."""
        resp = self._send("GET", "/tasks")
        if resp.status_code in (204, 409):
            return None
        check(resp, "DMS lease")
        lease = self._json(resp, "DMS lease")
        if not isinstance(lease.get("task"), dict):
            raise HttpError("DMS lease", resp.status_code, "lease has no task")
        return lease

    def heartbeat(self, task_id: str, progress: Any, events: list) -> dict:
        what = "DMS heartbeat"

        def attempt(_: int) -> dict:
            resp = self._send("POST", f"/tasks/{quote(task_id, safe='')}/heartbeat",
                              {"progress": progress, "events": events})
            return self._json(check(resp, what), what)

        return with_policy(self.cfg.retry, what, attempt)

    def _receipt(self, task_id: str, kind: str, body: dict) -> None:
        what = f"DMS {kind}"

        def attempt(n: int) -> None:
            resp = self._send("POST", f"/tasks/{quote(task_id, safe='')}/{kind}", body)
            if resp.status_code == 409 and n > 1:
                log.info("%s answered 409 on a retry: the earlier attempt was recorded", what)
                return
            check(resp, what)

        with_policy(self.cfg.retry, what, attempt)

    def complete(self, task_id: str, body: dict) -> None:
        self._receipt(task_id, "complete", body)

    def fail(self, task_id: str, body: dict) -> None:
        self._receipt(task_id, "fail", body)
