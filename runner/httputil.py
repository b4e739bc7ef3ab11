"""HTTP plumbing shared by the DDS, DMS and domain clients: errors, retry with backoff and jitter.

Retries happen on connection errors, timeouts, 5xx and 429 and never on other 4xx: a 4xx is the server telling us
the request itself is wrong, and sending it again cannot help.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, TypeVar

import httpx

from .config import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")


class HttpError(Exception):
    """A non-2xx answer. ``status`` drives the retry decision; the message carries a short body excerpt (servers'
    error texts) but never request headers."""

    def __init__(self, what: str, status: int, body: bytes | str = b"", retry_after: float | None = None):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        text = " ".join(text.split())[:300]
        super().__init__(f"{what}: HTTP {status}" + (f": {text}" if text else ""))
        self.status = status
        self.retry_after = retry_after


class Interrupted(Exception):
    """Raised from a retry wait or a streamed body when the caller's stop condition became true."""


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):  # connect/read/write errors, timeouts, dropped connections
        return True
    if isinstance(exc, HttpError):
        return exc.status == 429 or exc.status >= 500
    return False


def check(resp: httpx.Response, what: str) -> httpx.Response:
    """Raise HttpError for a non-2xx response (reading at most a small body excerpt)."""
    if 200 <= resp.status_code < 300:
        return resp
    try:
        body = resp.read()[:1000]
    except httpx.HTTPError:
        body = b""
    retry_after = None
    ra = resp.headers.get("retry-after")
    if ra:
        try:
            retry_after = float(ra)
        except ValueError:
            retry_after = None
    raise HttpError(what, resp.status_code, body, retry_after)


def backoff_delay(policy: RetryPolicy, attempt: int, retry_after: float | None = None) -> float:
    """Delay before attempt ``attempt + 1``: exponential, capped, jittered to 50-100 %, at least Retry-After
    (itself capped, so a hostile server cannot park the node)."""
    d = min(policy.max_s, policy.base_s * (2 ** (attempt - 1))) * random.uniform(0.5, 1.0)
    if retry_after is not None:
        d = max(d, min(retry_after, policy.max_s))
    return d


def with_retry(
    policy: RetryPolicy,
    what: str,
    attempt_fn: Callable[[int], T],
    stop: threading.Event | None = None,
) -> T:
    """Call ``attempt_fn(attempt)`` (attempt counts from 1) until it succeeds, a non-retryable error is raised,
    or the attempts are used up. ``attempt`` lets non-idempotent operations check, on a retry, whether the
    previous attempt took effect before repeating it."""
    attempt = 1
    while True:
        try:
            return attempt_fn(attempt)
        except Exception as exc:  # noqa: BLE001 - classified right below
            if not is_retryable(exc) or attempt >= policy.attempts:
                raise
            delay = backoff_delay(policy, attempt, getattr(exc, "retry_after", None))
            log.warning("%s failed (attempt %d/%d): %s; retrying in %.2fs", what, attempt, policy.attempts,
                        _describe(exc), delay)
            if stop is not None:
                if stop.wait(delay):
                    raise Interrupted(f"{what}: interrupted while waiting to retry") from exc
            else:
                time.sleep(delay)
            attempt += 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TransportError):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return str(exc)
