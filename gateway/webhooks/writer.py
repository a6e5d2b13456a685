"""The outbox writer: listens to this process's events and adds webhook rows to the store.

Every process of the gateway runs one (the main process, the delivery process,
the portal). As the audit recorder does, it keeps the listener cheap (a dict
look-up and a small payload) and writes from a thread with its own event loop
and store connection, in batches, so the process's event loop never waits on
the database. While the database fails, rows wait in memory (up to
MAX_PENDING; beyond that they are counted and logged as lost) and the thread
keeps retrying.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import log
from gateway.config import Config, WebhookEndpoint
from gateway.store.base import Store
from gateway.webhooks import outbox
from gateway.webhooks.events import to_webhook

FLUSH_INTERVAL = 0.2
MAX_PENDING = 100_000
BATCH = 500
_RETRY_DELAYS = (0.2, 1.0, 2.0, 5.0, 10.0)
STOP_TIMEOUT = 15.0

Opener = Callable[[], Awaitable[Store]]


class OutboxWriter:
    """Turns gateway events into outbox rows, written from a background thread."""

    def __init__(
        self,
        cfg: Config,
        *,
        opener: Opener | None = None,
        flush_interval: float = FLUSH_INTERVAL,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._endpoints: tuple[WebhookEndpoint, ...] = tuple(cfg.webhooks.endpoints)
        self._opener = opener or _default_opener(cfg)
        self._interval = flush_interval
        self._max_pending = max_pending
        self._pending: collections.deque[outbox.OutboxItem] = collections.deque()
        self._lost = 0
        self._failing = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def listen(self, name: str, level: int, fields: dict[str, Any]) -> None:
        """A gateway.log listener: queue the rows for a mapped event."""
        event = to_webhook(name, fields)
        if event is None:
            return
        for item in outbox.items_for(event, self._endpoints):
            if len(self._pending) >= self._max_pending:
                self._lost += 1
            else:
                self._pending.append(item)

    def start(self) -> None:
        """Start listening and the writer thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="webhook-outbox", daemon=True)
        log.add_listener(self.listen)
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Stop listening, write what is queued, end the thread; return how many went unwritten."""
        log.remove_listener(self.listen)
        thread = self._thread
        if thread is None:
            return 0
        self._stopping.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)
        thread.join(timeout)
        self._thread = None
        unwritten = len(self._pending) + self._lost
        if thread.is_alive() or unwritten:
            log.event("webhook_outbox_write_failed", level=logging.ERROR, unwritten=unwritten)
        return unwritten

    async def close(self) -> None:
        """stop() without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    def _run(self) -> None:
        with asyncio.Runner() as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        store: Store | None = None
        failures = 0
        next_try = 0.0
        while True:
            if not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._wake.wait()
            stopping = self._stopping.is_set()
            if time.monotonic() < next_try and not stopping:
                continue
            try:
                if store is None:
                    store = await self._opener()
                await self._flush(store)
            except Exception as exc:
                failures += 1
                next_try = time.monotonic() + _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS)) - 1]
                if not self._failing:
                    self._failing = True
                    log.event(
                        "webhook_outbox_write_failed",
                        level=logging.ERROR,
                        error=type(exc).__name__,
                        reason=str(exc) or type(exc).__name__,
                        queued=len(self._pending),
                    )
                if store is not None:
                    with contextlib.suppress(Exception):
                        await store.close()
                    store = None
            else:
                failures = 0
                if self._failing:
                    self._failing = False
                    log.event("webhook_outbox_write_recovered")
            if stopping:
                break
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()

    async def _flush(self, store: Store) -> None:
        pending = self._pending
        if self._lost:
            lost, self._lost = self._lost, 0
            log.event("webhook_events_lost", level=logging.ERROR, count=lost)
        while pending:
            taken: list[outbox.OutboxItem] = []
            while pending and len(taken) < BATCH:
                taken.append(pending.popleft())
            try:
                await outbox.add(store, taken)
            except BaseException:
                pending.extendleft(reversed(taken))
                raise


def _default_opener(cfg: Config) -> Opener:
    async def open_() -> Store:
        from gateway.store import open_store

        return await open_store(cfg.storage, cfg.data_dir)

    return open_
