"""The recorder: listens to the gateway's events and appends the audited ones.

It runs beside whatever process it serves (the gateway, its delivery process,
a CLI command) in a thread of its own with its own event loop and store
connection, so appending never waits on, or holds up, the process's event
loop. The listener only filters and queues (a dict look-up and a copy of a few
fields); the thread writes what piled up every FLUSH_INTERVAL and once more
when stopped.

A failing database does not stop mail: events wait in memory (up to
MAX_PENDING; beyond that they are counted, and the count is recorded as
`audit_events_lost` once writing works again), the failure is logged once,
and the thread keeps retrying.
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
from gateway.audit import trail
from gateway.audit.catalog import EventFilter
from gateway.audit.chain import iso_time, jsonable
from gateway.audit.trail import Entry
from gateway.config import Config
from gateway.store.base import Store

FLUSH_INTERVAL = 0.2
MAX_PENDING = 100_000
BATCH = 500
# Waits between attempts while the database fails, growing to the last.
_RETRY_DELAYS = (0.2, 1.0, 2.0, 5.0, 10.0)
# How often the process that purges looks for records past retention.
PURGE_INTERVAL = 6 * 3600.0
STOP_TIMEOUT = 15.0

Opener = Callable[[], Awaitable[Store]]


def default_opener(cfg: Config) -> Opener:
    """Opens the configured shared store (SQLite under data_dir, or PostgreSQL)."""

    async def open_() -> Store:
        from gateway.store import open_store

        return await open_store(cfg.storage, cfg.data_dir)

    return open_


class AuditRecorder:
    """Appends audited events to the trail from a background thread."""

    def __init__(
        self,
        cfg: Config,
        *,
        purge: bool = False,
        opener: Opener | None = None,
        flush_interval: float = FLUSH_INTERVAL,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._filter = EventFilter.from_config(cfg.audit.events)
        self._retention = cfg.audit.retention
        self._purge = purge and cfg.audit.retention > 0
        self._opener = opener or default_opener(cfg)
        self._interval = flush_interval
        self._max_pending = max_pending
        self._pending: collections.deque[Entry] = collections.deque()
        self._lost = 0
        self._lost_since: float | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._last_error: str | None = None
        # The writer thread's loop and the event that cuts its wait short on stop().
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    # --- the listener (any thread; must be quick) --------------------------------------

    def listen(self, name: str, level: int, fields: dict[str, Any]) -> None:
        """A gateway.log listener: queue the event if it is audited."""
        selected = self._filter.select(name, fields)
        if selected is None:
            return
        self.add(Entry(time.time(), name, jsonable(selected)))

    def add(self, entry: Entry) -> None:
        """Queue an entry for the trail (counted as lost when the queue is full)."""
        if len(self._pending) >= self._max_pending:
            if self._lost == 0:
                self._lost_since = entry.at
            self._lost += 1
            return
        self._pending.append(entry)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start listening and the writer thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
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
            log.event(
                "audit_write_failed",
                level=logging.ERROR,
                error="stopped before every event was written",
                unwritten=unwritten,
            )
        return unwritten

    async def close(self) -> None:
        """stop() without blocking the event loop (a daemon closer)."""
        await asyncio.to_thread(self.stop)

    @property
    def last_error(self) -> str | None:
        """Why the last write failed (None while writing works)."""
        return self._last_error

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
        next_purge = time.monotonic() + self._interval
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
                if self._purge and time.monotonic() >= next_purge and not stopping:
                    next_purge = time.monotonic() + PURGE_INTERVAL
                    await self._run_purge(store)
            except Exception as exc:
                failures += 1
                next_try = time.monotonic() + _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS)) - 1]
                self._report_failure(exc)
                if store is not None:
                    await _close_quietly(store)
                    store = None
            else:
                failures = 0
                self._last_error = None
                if self._failing:
                    self._failing = False
                    log.event("audit_write_recovered")
            if stopping:
                break
        if store is not None:
            await _close_quietly(store)

    async def _flush(self, store: Store) -> None:
        pending = self._pending
        while pending or self._lost:
            lost = self._lost
            batch: list[Entry] = []
            if lost:
                since = iso_time(self._lost_since or time.time())
                batch.append(
                    Entry(time.time(), "audit_events_lost", {"count": lost, "since": since})
                )
            taken: list[Entry] = []
            while pending and len(taken) < BATCH:
                taken.append(pending.popleft())
            try:
                await trail.append(store, batch + taken)
            except BaseException:
                # Back in front, in order: nothing is lost while the database is down.
                pending.extendleft(reversed(taken))
                raise
            if lost:
                self._lost -= lost
                if not self._lost:
                    self._lost_since = None

    async def _run_purge(self, store: Store) -> None:
        try:
            removed = await trail.purge(store, self._retention)
        except trail.AuditIntegrityError as exc:
            log.event("audit_purge_refused", level=logging.ERROR, reason=str(exc))
            return
        if removed:
            log.event("audit_purge", removed=removed)

    def _report_failure(self, exc: Exception) -> None:
        self._last_error = str(exc) or type(exc).__name__
        if self._failing:
            return
        self._failing = True
        # Store errors name the database and the failure, never record contents.
        log.event(
            "audit_write_failed",
            level=logging.ERROR,
            error=type(exc).__name__,
            reason=str(exc) or type(exc).__name__,
            queued=len(self._pending),
        )


async def _close_quietly(store: Store) -> None:
    try:
        await store.close()
    except Exception as exc:
        log.event("audit_store_close_failed", level=logging.WARNING, error=type(exc).__name__)


def start_recorder(cfg: Config, *, purge: bool) -> Callable[[], Awaitable[None]]:
    """Start recording this process's audited events; return the coroutine that stops it.

    The process that purges (one per node: the gateway's main process) also
    removes records past audit.retention every PURGE_INTERVAL.
    """
    if not cfg.audit.enabled:

        async def nothing() -> None:
            return None

        return nothing
    recorder = AuditRecorder(cfg, purge=purge)
    recorder.start()
    return recorder.close
