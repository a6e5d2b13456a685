"""Writing what a process's event listener collects into the shared store, off its event loop.

The audit trail and the webhook outbox both listen to every event of the
process they run in and must never make that process wait on the database.
A writer keeps the listener cheap (it only queues), writes the queue from a
thread with its own event loop and store connection every flush interval and
once more when stopped, and survives a failing database: items wait in memory
up to a bound (beyond it they are counted as lost, for the subclass to
report), the failure is reported once, and writing is retried with growing
delays.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from gateway import log
from gateway.config import Config
from gateway.store.base import Store

T = TypeVar("T")
Opener = Callable[[], Awaitable[Store]]

FLUSH_INTERVAL = 0.2
MAX_PENDING = 100_000
STOP_TIMEOUT = 15.0
# Waits between attempts while the database fails, growing to the last.
_RETRY_DELAYS = (0.2, 1.0, 2.0, 5.0, 10.0)


def default_opener(cfg: Config) -> Opener:
    """Opens the configured shared store (SQLite under data_dir, or PostgreSQL)."""

    async def open_() -> Store:
        from gateway.store import open_store

        return await open_store(cfg.storage, cfg.data_dir)

    return open_


class BatchWriter(abc.ABC, Generic[T]):
    """Queues items from any thread; a background thread writes them to the store in batches."""

    thread_name = "store-writer"

    def __init__(
        self,
        opener: Opener,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._opener = opener
        self._interval = flush_interval
        self._max_pending = max_pending
        self._pending: collections.deque[T] = collections.deque()
        self._lost = 0
        self._lost_since: float | None = None
        self._failing = False
        self._last_error: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # The writer thread's loop and the event that cuts its wait short on stop().
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    # --- what a subclass says ---------------------------------------------------------

    @abc.abstractmethod
    def listen(self, name: str, level: int, fields: dict[str, Any]) -> None:
        """A gateway.log listener: add() what this writer keeps of the event."""

    @abc.abstractmethod
    async def flush(self, store: Store) -> None:
        """Write what is pending (and report what was lost); on failure leave it pending."""

    async def after_flush(self, store: Store, stopping: bool) -> None:
        """Periodic work once a flush has succeeded (e.g. purging old records)."""

    @abc.abstractmethod
    def report_failure(self, exc: Exception) -> None:
        """Log, once per outage, that writing fails."""

    @abc.abstractmethod
    def report_recovered(self) -> None:
        """Log that writing works again."""

    @abc.abstractmethod
    def report_unwritten(self, count: int) -> None:
        """Log that the writer stopped with items it could not write."""

    # --- queueing (any thread; must be quick) -----------------------------------------------

    def add(self, item: T) -> None:
        """Queue an item (counted as lost when the queue is full)."""
        if len(self._pending) >= self._max_pending:
            if self._lost == 0:
                self._lost_since = time.time()
            self._lost += 1
            return
        self._pending.append(item)

    def take(self, limit: int) -> list[T]:
        """Up to limit pending items, oldest first (give them back with put_back on failure)."""
        taken: list[T] = []
        pending = self._pending
        while pending and len(taken) < limit:
            taken.append(pending.popleft())
        return taken

    def put_back(self, items: list[T]) -> None:
        """Return items taken for a write that failed, in front and in order."""
        self._pending.extendleft(reversed(items))

    @property
    def pending(self) -> int:
        """How many items wait to be written."""
        return len(self._pending)

    @property
    def last_error(self) -> str | None:
        """Why the last write failed (None while writing works)."""
        return self._last_error

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start listening and the writer thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
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
            with contextlib.suppress(RuntimeError):  # the loop has just ended
                loop.call_soon_threadsafe(wake.set)
        thread.join(timeout)
        self._thread = None
        unwritten = len(self._pending) + self._lost
        if thread.is_alive() or unwritten:
            self.report_unwritten(unwritten)
        return unwritten

    async def close(self) -> None:
        """stop() without blocking the event loop (a daemon closer)."""
        await asyncio.to_thread(self.stop)

    # --- the writer thread ---------------------------------------------------------------

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
                await self.flush(store)
                await self.after_flush(store, stopping)
            except Exception as exc:
                failures += 1
                next_try = time.monotonic() + _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS)) - 1]
                self._last_error = str(exc) or type(exc).__name__
                if not self._failing:
                    self._failing = True
                    self.report_failure(exc)
                if store is not None:
                    await _close_quietly(store)
                    store = None
            else:
                failures = 0
                self._last_error = None
                if self._failing:
                    self._failing = False
                    self.report_recovered()
            if stopping:
                break
        if store is not None:
            await _close_quietly(store)


async def _close_quietly(store: Store) -> None:
    try:
        await store.close()
    except Exception as exc:
        log.event("store_close_failed", level=logging.WARNING, error=type(exc).__name__)
