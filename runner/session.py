"""One leased task's control channel: progress, events, heartbeats, token swap, cancel.

Progress and events are pushed to DMS synchronously (each call sends a heartbeat), so every documented progress
stage reaches DMS in order; a timer thread additionally heartbeats after a random 25-35 % of the lease's
remaining time. Any heartbeat failure means the lease is lost: the task is cancelled and no receipt is sent.
Progress and events are scrubbed of every known secret before they are kept, whatever their source.
"""
from __future__ import annotations

import copy
import logging
import random
import threading
from typing import Any

from .clock import seconds_until
from .config import Config
from .dms import DmsClient
from .redact import SECRETS

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 60.0  # when DMS gives no lease_expires_at, heartbeat as if a minute were left


class TaskCancelled(Exception):
    """The task must stop: DMS cancelled it, the lease was lost, or the node is shutting down."""


class TokenRef:
    """The Domain access token, swapped in place when a heartbeat brings a new one."""

    def __init__(self, token: str):
        SECRETS.add(token)
        self._token = token
        self._lock = threading.Lock()

    def get(self) -> str:
        with self._lock:
            return self._token

    def set(self, token: str) -> None:
        SECRETS.add(token)
        with self._lock:
            self._token = token


class TaskSession:
    def __init__(self, cfg: Config, dms: DmsClient, lease: dict, interrupt: threading.Event):
        self.cfg = cfg
        self.dms = dms
        self.lease = copy.deepcopy(lease)
        self.task: dict = self.lease["task"]
        self.task_id = str(self.task.get("id"))
        self.domain_token = TokenRef(str(lease.get("access_token") or ""))
        self._interrupt = interrupt
        self._progress: Any = {}
        self._events: list = []
        self._state_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._stop_timer = threading.Event()
        self._timer: threading.Thread | None = None
        self.cancelled_by_dms = False
        self.lost = False

    # ------------------------------------------------------------ state
    def is_cancelled(self) -> bool:
        return self.cancelled_by_dms or self.lost or self._interrupt.is_set()

    def cancel_reason(self) -> str:
        if self.lost:
            return "lease lost"
        if self.cancelled_by_dms:
            return "cancelled by DMS"
        return "node shutting down" if self._interrupt.is_set() else ""

    def checkpoint(self, where: str) -> None:
        """Raise TaskCancelled (``task cancelled: <where>``) if the task must stop."""
        if self.is_cancelled():
            raise TaskCancelled(f"task cancelled: {where} ({self.cancel_reason()})")

    # ------------------------------------------------------------ runner API
    def progress(self, value: Any) -> None:
        """Replace the progress value and heartbeat now; raises TaskCancelled if the lease is gone."""
        with self._state_lock:
            self._progress = SECRETS.scrub_json(value)
        self.heartbeat()
        if self.lost:
            raise TaskCancelled("task cancelled: lease lost")

    def log_event(self, event: Any) -> None:
        """Buffer an event and heartbeat now; events leave the buffer once DMS acknowledged them."""
        with self._state_lock:
            self._events.append(SECRETS.scrub_json(event))
        self.heartbeat()

    def refresh_domain_token(self, refused: str) -> bool:
        """The domain answered 401 to ``refused``: heartbeat now, whose answer carries a fresh Domain token
        (unless another heartbeat already brought one). True when the token in use is no longer ``refused``."""
        if self.domain_token.get() == refused:
            log.info("task %s: the domain refused the access token; heartbeating DMS for a fresh one", self.task_id)
            self.heartbeat()
        return self.domain_token.get() != refused

    # ------------------------------------------------------------ heartbeats
    def heartbeat(self) -> bool:
        if self.lost:
            return False
        with self._send_lock:
            if self.lost:
                return False
            with self._state_lock:
                progress, events = copy.deepcopy(self._progress), list(self._events)
            try:
                resp = self.dms.heartbeat(self.task_id, progress, events)
            except Exception as exc:  # noqa: BLE001 - any heartbeat failure is a lost lease
                self.lost = True
                log.warning("task %s: heartbeat failed, lease lost: %s", self.task_id, exc)
                return False
            with self._state_lock:
                del self._events[: len(events)]
            self._apply(resp)
            return True

    def _apply(self, resp: dict) -> None:
        """Merge a HeartbeatResponse into the cached lease; swap the Domain token; note a cancel."""
        for key, value in resp.items():
            if value is None or key == "task":
                continue
            if key == "access_token":
                if isinstance(value, str) and value and value != self.domain_token.get():
                    self.domain_token.set(value)
                    log.info("task %s: domain access token refreshed by heartbeat", self.task_id)
                continue
            self.lease[key] = value
        if isinstance(resp.get("task"), dict):
            self.task.update({k: v for k, v in resp["task"].items() if v is not None})
        if resp.get("cancel") is True and not self.cancelled_by_dms:
            self.cancelled_by_dms = True
            log.warning("task %s: cancelled by DMS", self.task_id)

    def _next_delay(self) -> float:
        left = seconds_until(self.lease.get("lease_expires_at") or self.task.get("lease_expires_at"))
        if left is None:
            left = DEFAULT_LEASE_S
        ratio = random.uniform(self.cfg.heartbeat_min_ratio, self.cfg.heartbeat_max_ratio)
        return max(0.05, left * ratio)

    def _timer_loop(self) -> None:
        while not self._stop_timer.wait(self._next_delay()):
            if not self.heartbeat():
                return

    def start(self) -> None:
        """The initial ``{"progress":{},"events":[]}`` heartbeat (raises on failure), then the lease timer."""
        resp = self.dms.heartbeat(self.task_id, {}, [])
        self._apply(resp)
        self._timer = threading.Thread(target=self._timer_loop, name=f"heartbeat-{self.task_id}", daemon=True)
        self._timer.start()

    def finish(self) -> None:
        """Send the final progress and buffered events once more, then stop the timer."""
        self.heartbeat()
        self._stop_timer.wait(0.2)
        self._stop_timer.set()
        if self._timer is not None:
            self._timer.join(timeout=self.cfg.request_timeout_s + 1)
