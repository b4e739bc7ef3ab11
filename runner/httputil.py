"""HTTP plumbing shared by the DDS, DMS and domain clients: errors, and the node's one retry helper (tenacity).

Requests are retried on connection errors, timeouts, 5xx and 429 and never on other 4xx: a 4xx is the server
telling us the request itself is wrong, and sending it again cannot help.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
)
from tenacity.retry import retry_base
from tenacity.stop import stop_base

from pipeline.errors import one_line

from .config import RetryPolicy
from .redact import SECRETS

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_EXCERPT = 300
Wait = Callable[[RetryCallState], float]


class HttpError(Exception):
    """A non-2xx answer. ``status`` drives the retry decision; the message carries a short excerpt of the body
    (servers' error texts), scrubbed of every known secret before it is cut, never request headers."""

    def __init__(self, what: str, status: int, body: bytes | str = b"", retry_after: float | None = None):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        text = " ".join(SECRETS.scrub(text).split())[:MAX_EXCERPT]
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


# ---------------------------------------------------------------- waits

def backoff(policy: RetryPolicy) -> Wait:
    """Exponential from ``base_s``, capped at ``max_s``, jittered to 50-100 % (many nodes must not retry in lock
    step), at least the server's Retry-After (itself capped, so a hostile server cannot park the node)."""
    def wait(state: RetryCallState) -> float:
        d = min(policy.max_s, policy.base_s * (2 ** (state.attempt_number - 1))) * random.uniform(0.5, 1.0)
        retry_after = getattr(state.outcome.exception(), "retry_after", None) if state.outcome else None
        return max(d, min(retry_after, policy.max_s)) if retry_after is not None else d
    return wait


def fixed(seconds: float) -> Wait:
    return lambda _state: seconds


def doubling(first_s: float, max_s: float) -> Wait:
    """``first_s``, twice that, … up to ``max_s`` (no jitter: a poll of our own state, not a crowd's)."""
    return lambda state: min(max_s, first_s * 2 ** (state.attempt_number - 1))


# ---------------------------------------------------------------- the helper

def retry(fn: Callable[[int], T], what: str, wait: Wait, *, attempts: int | None = None,
          deadline_s: float | None = None, retry_on: Callable[[BaseException], bool] = is_retryable,
          until: Callable[[T], bool] | None = None, stop_event: threading.Event | None = None,
          cancelled: Callable[[], bool] | None = None) -> T:
    """Call ``fn(attempt)`` (attempt counts from 1) until it returns, within ``attempts`` calls and/or
    ``deadline_s`` seconds (neither: no limit).

    An exception is retried when ``retry_on`` says so and raised as it is otherwise or when the limit is reached.
    With ``until``, a result that fails it is retried too, and the last result is returned at the limit (a poll).
    ``attempt`` lets a non-idempotent operation check, on a retry, whether the previous attempt took effect.
    The waits end early with Interrupted when ``stop_event`` is set or ``cancelled()`` turns true.
    """
    def sleep(seconds: float) -> None:
        if cancelled is not None and cancelled():
            raise Interrupted(f"{what}: cancelled")
        if stop_event is not None:
            if stop_event.wait(seconds):
                raise Interrupted(f"{what}: interrupted while waiting to retry")
        else:
            time.sleep(seconds)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            log.warning("%s failed (attempt %d%s): %s; retrying in %.2fs", what, state.attempt_number,
                        f"/{attempts}" if attempts else "", _describe(exc),
                        state.next_action.sleep if state.next_action else 0.0)

    limits: list[stop_base] = []
    if attempts is not None:
        limits.append(stop_after_attempt(attempts))
    if deadline_s is not None:
        limits.append(stop_after_delay(deadline_s))
    stop = stop_never if not limits else limits[0] if len(limits) == 1 else limits[0] | limits[1]
    condition: retry_base = retry_if_exception(retry_on)
    if until is not None:
        condition = condition | retry_if_result(lambda r: not until(r))
    retrying = Retrying(stop=stop, wait=wait, retry=condition, sleep=sleep, before_sleep=before_sleep,
                        reraise=True, retry_error_callback=_last_result if until else None)
    for attempt in retrying:
        with attempt:
            result = fn(attempt.retry_state.attempt_number)
        outcome = attempt.retry_state.outcome
        if outcome is not None and not outcome.failed:
            attempt.retry_state.set_result(result)
    return result


def with_policy(policy: RetryPolicy, what: str, fn: Callable[[int], T],
                stop_event: threading.Event | None = None) -> T:
    """``retry`` with the configured HTTP policy (HTTP_RETRY_ATTEMPTS, HTTP_RETRY_BASE_MS, HTTP_RETRY_MAX_MS)."""
    return retry(fn, what, backoff(policy), attempts=policy.attempts, stop_event=stop_event)


def _last_result(state: RetryCallState):
    """When ``until`` never held: the last attempt's result (or its exception), as the caller's answer."""
    assert state.outcome is not None  # tenacity calls this after an attempt
    return state.outcome.result()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TransportError):
        return f"{type(exc).__name__}: {one_line(exc)}" if str(exc) else type(exc).__name__
    return one_line(exc)
