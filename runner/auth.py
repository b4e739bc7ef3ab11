"""DDS sign-in: SIWE (EIP-4361 style message, EIP-191 signature), node registration and the DMS token.

The wallet key only ever lives in the ``Wallet`` object and the REG_SECRET only in the register body; neither
is logged. The DMS bearer is reused until ``TOKEN_SAFETY_RATIO`` of its lifetime has passed, then refreshed.
"""
from __future__ import annotations

import logging
import random
import threading
import time

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from tenacity import RetryCallState

from .clock import seconds_until
from .config import Config
from .httputil import HttpError, check, fixed, is_retryable, retry, with_policy
from .redact import SECRETS

log = logging.getLogger(__name__)

CAPABILITIES = ["/splatter/colmap/v1"]


class InvalidKey(ValueError):
    """The wallet key is 64 hex digits but no secp256k1 private key (0, or not below the curve order).
    Its message never holds the key."""


class Wallet:
    """The node identity. ``repr`` shows the address only."""

    def __init__(self, privhex: str):
        try:
            self._account = Account.from_key(privhex if privhex.startswith("0x") else "0x" + privhex)
        except Exception:   # noqa: BLE001 -- eth_keys' messages (and their tracebacks) print the key itself
            raise InvalidKey("SECP256K1_PRIVHEX is not a valid secp256k1 private key (it must lie in "
                             "1 .. n-1, n the curve order)") from None
        self.address: str = self._account.address

    def sign(self, message: str) -> str:
        """EIP-191 personal_sign: ``0x`` + hex(r‖s‖v) with v = recid + 27."""
        signed = self._account.sign_message(encode_defunct(text=message))
        return "0x" + bytes(signed.signature).hex()

    def __repr__(self) -> str:
        return f"Wallet({self.address})"


def siwe_message(challenge: dict, address: str) -> str:
    """The exact message DDS expects, built from its ``/siwe/request`` answer."""
    return (f"{challenge['domain']} wants you to sign in with your Ethereum account:\n{address}\n\n"
            f"URI: {challenge['uri']}\nVersion: {challenge['version']}\nChain ID: {challenge['chainId']}\n"
            f"Nonce: {challenge['nonce']}\nIssued At: {challenge['issuedAt']}")


class RegistrationInvalid(Exception):
    """DDS answered 403/404 to verify: the node must register again."""


class DdsClient:
    def __init__(self, cfg: Config, wallet: Wallet, stop: threading.Event | None = None):
        self.cfg = cfg
        self.wallet = wallet
        self.base = cfg.dds_base_url
        self.stop = stop
        self.http = httpx.Client(timeout=httpx.Timeout(cfg.request_timeout_s))

    def _signed_challenge(self) -> tuple[str, str]:
        """A fresh nonce per attempt (DDS consumes nonces), returned as (message, signature)."""
        def attempt(_: int) -> dict:
            resp = self.http.post(f"{self.base}/internal/v1/auth/siwe/request", json={"wallet": self.wallet.address})
            return check(resp, "DDS siwe/request").json()

        challenge = with_policy(self.cfg.retry, "DDS siwe/request", attempt, self.stop)
        message = siwe_message(challenge, self.wallet.address)
        return message, self.wallet.sign(message)

    def register_once(self) -> None:
        """One registration attempt; 2xx or 409 (already registered) is success, anything else raises."""
        message, signature = self._signed_challenge()
        body = {"message": message, "signature": signature, "registration_credentials": self.cfg.reg_secret,
                "capabilities": CAPABILITIES, "version": self.cfg.node_version}
        resp = self.http.post(f"{self.base}/internal/v1/nodes/register-wallet", json=body)
        if resp.status_code == 409:
            log.info("node wallet %s already registered", self.wallet.address)
            return
        check(resp, "DDS register-wallet")
        log.info("registered node wallet %s with capabilities %s", self.wallet.address, CAPABILITIES)

    def verify(self) -> tuple[str, float | None]:
        """Sign in; returns (access token, seconds until it expires or None)."""
        message, signature = self._signed_challenge()
        resp = self.http.post(f"{self.base}/internal/v1/auth/siwe/verify",
                              json={"address": self.wallet.address, "message": message, "signature": signature})
        if resp.status_code in (403, 404):
            raise RegistrationInvalid(f"DDS siwe/verify: HTTP {resp.status_code}")
        data = check(resp, "DDS siwe/verify").json()
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise HttpError("DDS siwe/verify", resp.status_code, "response has no access_token")
        return token, seconds_until(data.get("access_expires_at") or data.get("expires_at"))


class TokenManager:
    """Holds the DMS bearer; thread-safe, because heartbeats run beside the task."""

    def __init__(self, cfg: Config, dds: DdsClient, stop: threading.Event):
        self.cfg = cfg
        self.dds = dds
        self.stop = stop
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._registered = False

    def get(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._refresh_at:
                self._login()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """Drop ``token`` after a 401 (only if nobody replaced it meanwhile)."""
        with self._lock:
            if self._token == token:
                self._token = None

    def _ensure_registered(self) -> None:
        """Register until DDS accepts (or already knows) the wallet, every REGISTER_INTERVAL_SECS, for as long
        as it takes; a shutdown ends the wait with Interrupted."""
        if self._registered:
            return

        def attempt(_: int) -> None:
            self.dds.register_once()
            self._registered = True

        retry(attempt, "node registration", fixed(self.cfg.register_interval_s),
              retry_on=lambda exc: isinstance(exc, (HttpError, httpx.HTTPError)), stop_event=self.stop)

    def _login(self) -> None:
        """Sign in: TOKEN_REAUTH_MAX_RETRIES more tries after the first on transient errors, each after a jitter
        of up to TOKEN_REAUTH_JITTER_MS; a verify answering 403/404 re-arms registration and tries again at once."""
        def attempt(_: int) -> tuple[str, float | None]:
            self._ensure_registered()
            try:
                return self.dds.verify()
            except RegistrationInvalid as exc:
                log.warning("%s: registration no longer valid, registering again", exc)
                self._registered = False
                raise

        def wait(state: RetryCallState) -> float:
            if state.outcome is not None and isinstance(state.outcome.exception(), RegistrationInvalid):
                return 0.0
            return random.uniform(0, self.cfg.token_reauth_jitter_ms / 1000.0) + 0.05

        token, ttl = retry(attempt, "DDS sign-in", wait, attempts=self.cfg.token_reauth_max_retries + 1,
                           retry_on=lambda exc: isinstance(exc, RegistrationInvalid) or is_retryable(exc),
                           stop_event=self.stop)
        SECRETS.add(token)
        self._token = token
        if ttl is None or ttl <= 0:
            self._refresh_at = float("inf") if ttl is None else time.monotonic()
        else:
            self._refresh_at = time.monotonic() + self.cfg.token_safety_ratio * ttl
        log.info("signed in to DDS as %s (token lifetime %s)", self.dds.wallet.address,
                 "unknown" if ttl is None else f"{ttl:.0f}s")
