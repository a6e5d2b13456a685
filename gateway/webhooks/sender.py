"""The webhook sender: POSTs due outbox rows, signed, with retries and backoff.

One runs in each gateway node's main process. It claims due rows with a lease
(gateway/webhooks/outbox.py), POSTs each to its endpoint, and records the
result: a 2xx answer delivers the row; anything else (an error status, a
refused connection, a timeout) schedules another attempt after a delay that
doubles from `webhooks.retry_first` up to `webhooks.retry_max`, until
`webhooks.lifetime` has passed since the event, when the row is given up and
logged (`sealgate webhooks retry` puts it back in line). Redirects are not
followed. Outbox rows are written by every process, so the sender polls
(`webhooks.poll_interval`) rather than waiting to be told.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import stat
import time
import uuid
from dataclasses import dataclass

import httpx

from gateway import log
from gateway.config import WebhookEndpoint, WebhooksConfig
from gateway.store.base import Store
from gateway.webhooks import outbox
from gateway.webhooks.signing import HEADER, signature

# A claimed row stays leased this long beyond the endpoint's timeout.
_LEASE_MARGIN = 60.0
PURGE_INTERVAL = 3600.0
USER_AGENT = "Sealgate-Webhooks/1"


class WebhookSetupError(Exception):
    """An endpoint cannot be used (unreadable secret or CA file); the message says why."""


@dataclass(frozen=True)
class Attempt:
    """What one POST came to: a status (None without an answer) and an error text."""

    ok: bool
    status: int | None
    error: str


def read_secret(endpoint: WebhookEndpoint) -> bytes:
    """The endpoint's HMAC key, from the config or its file (warning when others can read it)."""
    if endpoint.secret is not None:
        return endpoint.secret.encode("utf-8")
    assert endpoint.secret_file is not None
    path = endpoint.secret_file
    try:
        data = path.read_bytes().strip()
        mode = path.stat().st_mode
    except OSError as exc:
        raise WebhookSetupError(
            f"webhooks endpoint {endpoint.name}: cannot read secret_file {path}: "
            f"{exc.strerror or exc}"
        ) from None
    if len(data) < 16:
        raise WebhookSetupError(
            f"webhooks endpoint {endpoint.name}: secret_file {path} holds fewer than 16 bytes"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.event(
            "webhook_secret_permissions",
            level=logging.WARNING,
            endpoint=endpoint.name,
            file=str(path),
            mode=oct(stat.S_IMODE(mode)),
        )
    return data


def client_for(endpoint: WebhookEndpoint) -> httpx.AsyncClient:
    """An HTTP client for one endpoint: its timeout and CA, no redirects, no proxies."""
    verify: ssl.SSLContext | bool = True
    if endpoint.ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(endpoint.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise WebhookSetupError(
                f"webhooks endpoint {endpoint.name}: cannot load ca_file {endpoint.ca_file}: {exc}"
            ) from None
    return httpx.AsyncClient(
        timeout=endpoint.timeout, verify=verify, follow_redirects=False, trust_env=False
    )


async def post(
    client: httpx.AsyncClient,
    endpoint: WebhookEndpoint,
    secret: bytes,
    *,
    delivery: str,
    event: str,
    body: bytes,
    attempt: int,
) -> Attempt:
    """POST one signed body; never raises for network or HTTP errors."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Sealgate-Event": event,
        "X-Sealgate-Delivery": delivery,
        "X-Sealgate-Attempt": str(attempt),
        HEADER: signature(secret, int(time.time()), body),
    }
    try:
        # The answer's body is never read: the status is all that counts.
        async with client.stream("POST", endpoint.url, content=body, headers=headers) as resp:
            status = resp.status_code
    except httpx.HTTPError as exc:
        # Names the failure, never the URL (it may hold credentials).
        return Attempt(False, None, f"{type(exc).__name__}: {exc}"[:300])
    if 200 <= status < 300:
        return Attempt(True, status, "")
    return Attempt(False, status, f"HTTP {status}")


class WebhookSender:
    """Sends the outbox's due rows until closed."""

    def __init__(self, cfg: WebhooksConfig, store: Store) -> None:
        self._cfg = cfg
        self._store = store
        self._owner = process_owner()
        self._endpoints = {e.name: e for e in cfg.endpoints}
        self._secrets: dict[str, bytes] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(cfg.concurrency)

    async def start(self) -> None:
        """Read secrets and CA files (WebhookSetupError if one fails), then start sending."""
        # Per-connection traces would drown the event log (as for aiosmtpd in gateway.log).
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        for endpoint in self._cfg.endpoints:
            self._secrets[endpoint.name] = await asyncio.to_thread(read_secret, endpoint)
        for endpoint in self._cfg.endpoints:
            self._clients[endpoint.name] = await asyncio.to_thread(client_for, endpoint)
        self._task = asyncio.create_task(self._run(), name="webhook-sender")

    def wake(self) -> None:
        """Look for due rows now rather than at the next poll."""
        self._wake.set()

    async def close(self) -> None:
        """Stop sending (a POST under way is abandoned; its row is sent again later)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            try:
                await outbox.release(self._store, self._owner)
            except Exception as exc:
                # The leases run out by themselves; this only saves the wait.
                log.event("webhook_store_failed", level=logging.WARNING, error=type(exc).__name__)
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        self._clients.clear()

    async def _run(self) -> None:
        failing = False
        next_purge = time.monotonic()
        while True:
            busy = False
            try:
                busy = await self.run_once()
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_INTERVAL
                    removed = await outbox.purge(self._store, time.time() - self._cfg.keep)
                    if removed:
                        log.event("webhook_outbox_purged", removed=removed)
                if failing:
                    failing = False
                    log.event("webhook_store_recovered")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    failing = True
                    log.event(
                        "webhook_store_failed",
                        level=logging.ERROR,
                        error=type(exc).__name__,
                        reason=str(exc) or type(exc).__name__,
                    )
            if busy:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._cfg.poll_interval):
                    await self._wake.wait()

    async def run_once(self) -> bool:
        """Send one batch of due rows; True when there may be more due right now."""
        now = time.time()
        lease = max(e.timeout for e in self._cfg.endpoints) + _LEASE_MARGIN
        batch = self._cfg.concurrency * 4
        rows = await outbox.claim(self._store, self._owner, now, lease, batch)
        if rows:
            await asyncio.gather(*(self._send(row) for row in rows))
        return len(rows) == batch

    async def _send(self, row: outbox.Claimed) -> None:
        endpoint = self._endpoints.get(row.endpoint)
        client = self._clients.get(row.endpoint)
        attempt_no = row.attempts + 1
        if endpoint is None or client is None:
            result = Attempt(False, None, "endpoint no longer configured")
        else:
            async with self._limit:
                result = await post(
                    client,
                    endpoint,
                    self._secrets[endpoint.name],
                    delivery=row.id,
                    event=row.event,
                    body=row.body.encode("utf-8"),
                    attempt=attempt_no,
                )
        now = time.time()
        if result.ok:
            assert result.status is not None
            await outbox.mark_delivered(self._store, row.id, self._owner, result.status, now)
            log.event(
                "webhook_delivered",
                endpoint=row.endpoint,
                delivery=row.id,
                event_type=row.event,
                status=result.status,
                attempts=attempt_no,
            )
            return
        delay = min(self._cfg.retry_first * 2 ** min(row.attempts, 32), self._cfg.retry_max)
        give_up = endpoint is None or now + delay > row.created_at + self._cfg.lifetime
        await outbox.mark_failed_attempt(
            self._store,
            row.id,
            self._owner,
            status=result.status,
            error=result.error,
            next_attempt=None if give_up else now + delay,
            now=now,
        )
        log.event(
            "webhook_failed" if give_up else "webhook_deferred",
            level=logging.ERROR if give_up else logging.WARNING,
            endpoint=row.endpoint,
            delivery=row.id,
            event_type=row.event,
            status=result.status,
            error=result.error,
            attempts=attempt_no,
            next_attempt=None if give_up else round(now + delay, 3),
        )


def process_owner() -> str:
    """A lease owner id naming this process (for logs and debugging)."""
    return f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
