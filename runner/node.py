"""The node loop: sign in, lease one task at a time, run it, send the receipt.

Receipts follow the node-host contract: ``complete`` lists every uploaded artifact; ``fail`` carries
``runner failed: <error>`` cut to 4096 bytes; a cancelled task or a lost lease gets no receipt at all (DMS
already knows, or will hand the task to someone else when the lease runs out). Receipts are scrubbed of every
known secret before they are sent.
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import signal
import threading
from collections.abc import Callable

from pipeline.errors import one_line

from . import splatter
from .auth import DdsClient, TokenManager, Wallet
from .config import Config
from .dms import DmsClient
from .domain import DomainClient
from .health import HealthServer
from .httputil import Interrupted
from .redact import SECRETS
from .session import TaskCancelled, TaskSession
from .storage import ArtifactOutput

log = logging.getLogger(__name__)

MAX_REASON_BYTES = 4096
MAX_DETAILS_BYTES = 256 << 10

Runner = Callable[[splatter.TaskContext], None]
RUNNERS: dict[str, Runner] = {splatter.CAPABILITY: splatter.run}


def truncate_utf8(text: str, limit: int) -> str:
    """At most ``limit`` UTF-8 bytes, never cutting a character in half."""
    raw = text.encode("utf-8")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore")


def domain_server_url(lease: dict) -> str | None:
    """From the lease, else ``task.meta.domain_server_url``, else ``task.meta.legacy.domain_server_url``."""
    meta = (lease.get("task") or {}).get("meta") or {}
    legacy = meta.get("legacy") if isinstance(meta, dict) else None
    for v in (lease.get("domain_server_url"), meta.get("domain_server_url") if isinstance(meta, dict) else None,
              legacy.get("domain_server_url") if isinstance(legacy, dict) else None):
        if isinstance(v, str) and v.strip():
            return v.strip().rstrip("/")
    return None


class Node:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        SECRETS.add(cfg.reg_secret)
        SECRETS.add(cfg.privhex)
        self.stop = threading.Event()        # first signal: no more leasing
        self.interrupt = threading.Event()   # second signal: abandon the running task
        self.wallet = Wallet(cfg.privhex)
        self.dds = DdsClient(cfg, self.wallet, self.stop)
        self.tokens = TokenManager(cfg, self.dds, self.stop)
        self.dms = DmsClient(cfg, self.tokens)
        self.tasks_handled = 0

    # ------------------------------------------------------------ signals
    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if not self.stop.is_set():
            log.warning("%s received: no more leasing; finishing the current task (send again to abort it)", name)
            self.stop.set()
        elif not self.interrupt.is_set():
            log.warning("%s received again: interrupting the running task", name)
            self.interrupt.set()

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)

    # ------------------------------------------------------------ loop
    def serve(self, once: bool = False) -> int:
        self.install_signal_handlers()
        health = HealthServer(self.cfg.health_port).start() if self.cfg.health_port else None
        log.info("splatter node %s starting: wallet %s, client %s, DMS %s, DDS %s", self.cfg.node_version,
                 self.wallet.address, self.cfg.client_id, self.cfg.dms_base_url, self.cfg.dds_base_url)
        try:
            self.remove_stale_workspaces()
            while not self.stop.is_set():
                try:
                    lease = self.dms.lease()
                except Interrupted:
                    break
                except Exception as exc:  # noqa: BLE001 - DMS/DDS trouble: wait and poll again
                    log.warning("lease request failed: %s", one_line(exc))
                    lease = None
                if lease is not None:
                    self.handle(lease)
                    self.tasks_handled += 1
                    if once:
                        break
                    continue  # poll again at once after a task
                delay = random.uniform(self.cfg.poll_backoff_ms_min, self.cfg.poll_backoff_ms_max) / 1000.0
                self.stop.wait(delay)
        finally:
            if health:
                health.stop()
        log.info("node stopped after %d task(s)", self.tasks_handled)
        return 0

    def remove_stale_workspaces(self) -> None:
        """Workspaces left by a crashed run; only folders carrying our marker file are touched, so a
        mis-set TASKS_ROOT cannot wipe unrelated data."""
        root = self.cfg.tasks_root
        if self.cfg.disable_tasks_cleanup or not root.is_dir():
            return
        for child in root.iterdir():
            if child.is_dir() and not child.is_symlink() and (child / splatter.TASK_MARKER).is_file():
                log.info("removing stale task workspace %s", child)
                shutil.rmtree(child, ignore_errors=True)

    # ------------------------------------------------------------ one task
    def handle(self, lease: dict) -> None:
        task = lease["task"]
        task_id = str(task.get("id") or "")
        capability = str(task.get("capability") or "")
        job = {"task_id": task_id, "job_id": task.get("job_id"), "domain_id": lease.get("domain_id"),
               "capability": capability}
        if not task_id:
            log.error("lease without a task id; ignoring it")
            return
        log.info("leased task %r (%r, job %r)", task_id, capability, task.get("job_id"))
        if lease.get("cancel") is True:
            log.warning("task %r was cancelled in the lease itself; not running it", task_id)
            return
        runner = RUNNERS.get(capability)
        if runner is None:
            self._fail(task_id, f"no runner registered for capability: {capability}",
                       {"job": job, "artifacts": []}, prefix=False)
            return
        base, domain_id = domain_server_url(lease), lease.get("domain_id")
        if not base or not domain_id:
            self._fail(task_id, "node_setup_failed",
                       {"stage": "build_ports", "error": "lease lacks domain_server_url or domain_id"}, prefix=False)
            return
        session = TaskSession(self.cfg, self.dms, lease, self.interrupt)
        try:
            session.start()
        except Exception as exc:  # noqa: BLE001
            log.error("task %r: initial heartbeat failed: %s", task_id, one_line(exc))
            self._fail(task_id, "node_setup_failed", {"stage": "initial_heartbeat", "error": one_line(exc)},
                       prefix=False)
            return
        domain = DomainClient(base, session.domain_token.get, self.cfg.posemesh_client_id,
                              self.cfg.request_timeout_s, self.cfg.retry, cancelled=session.is_cancelled,
                              refresh=session.refresh_domain_token)
        output = ArtifactOutput(domain, str(domain_id), task.get("outputs_prefix"))
        ctx = splatter.TaskContext(cfg=self.cfg, session=session, domain=domain, output=output,
                                   domain_id=str(domain_id), domain_server_url=base)
        error: Exception | None = None
        try:
            runner(ctx)
        except Exception as exc:  # noqa: BLE001 - turned into a receipt below
            error = exc
        finally:
            session.finish()
            domain.close()
        artifacts = [u.to_json() for u in output.uploads]
        if session.is_cancelled() or isinstance(error, TaskCancelled):
            log.warning("task %r stopped (%s): no receipt sent", task_id,
                        session.cancel_reason() or one_line(error or "cancelled"))
            return
        if error is not None:
            log.error("task %r failed: %s", task_id, one_line(error))
            self._fail(task_id, one_line(error), {"job": job, "artifacts": artifacts})
            return
        body = SECRETS.scrub_json({"output_cids": output.output_cids(), "meta": {"job": job, "artifacts": artifacts}})
        try:
            self.dms.complete(task_id, body)
            log.info("task %r completed with %d artifact(s)", task_id, len(artifacts))
        except Exception as exc:  # noqa: BLE001
            log.error("task %r: complete receipt not accepted: %s", task_id, one_line(exc))

    def _fail(self, task_id: str, reason: str, details: dict | None, prefix: bool = True) -> None:
        # scrubbed before it is cut, so a cut cannot leave part of a secret behind
        reason = truncate_utf8(SECRETS.scrub(("runner failed: " + reason) if prefix else reason), MAX_REASON_BYTES)
        details = SECRETS.scrub_json(details)
        if details is not None and len(json.dumps(details).encode()) > MAX_DETAILS_BYTES:
            details = None
        try:
            self.dms.fail(task_id, {"reason": reason, "details": details})
        except Exception as exc:  # noqa: BLE001
            status = getattr(exc, "status", None)
            if details is None or status is None or not 400 <= status < 500:
                log.error("task %r: fail receipt not accepted: %s", task_id, one_line(exc))
                return
            log.warning("task %r: fail receipt refused (%s); retrying without details", task_id, one_line(exc))
            try:
                self.dms.fail(task_id, {"reason": reason, "details": None})
            except Exception as exc2:  # noqa: BLE001
                log.error("task %r: fail receipt not accepted: %s", task_id, one_line(exc2))
        else:
            log.info("task %r: fail receipt sent", task_id)
