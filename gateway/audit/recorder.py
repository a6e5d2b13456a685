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

import logging
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
from gateway.store.batchwriter import (
    FLUSH_INTERVAL,
    MAX_PENDING,
    BatchWriter,
    Opener,
    default_opener,
)

BATCH = 500
# How often the process that purges looks for records past retention.
PURGE_INTERVAL = 6 * 3600.0

__all__ = ["AuditRecorder", "Opener", "default_opener", "start_recorder"]


class AuditRecorder(BatchWriter[Entry]):
    """Appends audited events to the trail from a background thread."""

    thread_name = "audit"

    def __init__(
        self,
        cfg: Config,
        *,
        purge: bool = False,
        opener: Opener | None = None,
        flush_interval: float = FLUSH_INTERVAL,
        max_pending: int = MAX_PENDING,
    ) -> None:
        super().__init__(
            opener or default_opener(cfg), flush_interval=flush_interval, max_pending=max_pending
        )
        self._filter = EventFilter.from_config(cfg.audit.events)
        self._retention = cfg.audit.retention
        self._purge = purge and cfg.audit.retention > 0
        self._next_purge = time.monotonic() + flush_interval

    def listen(self, name: str, level: int, fields: dict[str, Any]) -> None:
        """A gateway.log listener: queue the event if it is audited."""
        selected = self._filter.select(name, fields)
        if selected is None:
            return
        self.add(Entry(time.time(), name, jsonable(selected)))

    async def flush(self, store: Store) -> None:
        """Append what is pending, after a record of any events lost to the memory bound."""
        while self.pending or self._lost:
            lost = self._lost
            batch: list[Entry] = []
            if lost:
                since = iso_time(self._lost_since or time.time())
                batch.append(
                    Entry(time.time(), "audit_events_lost", {"count": lost, "since": since})
                )
            taken = self.take(BATCH)
            try:
                await trail.append(store, batch + taken)
            except BaseException:
                # Back in front, in order: nothing is lost while the database is down.
                self.put_back(taken)
                raise
            if lost:
                self._lost -= lost
                if not self._lost:
                    self._lost_since = None

    async def after_flush(self, store: Store, stopping: bool) -> None:
        """Purge records past retention every PURGE_INTERVAL (in the purging process only)."""
        if self._purge and not stopping and time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + PURGE_INTERVAL
            await self._run_purge(store)

    def report_failure(self, exc: Exception) -> None:
        """Store errors name the database and the failure, never record contents."""
        log.event(
            "audit_write_failed",
            level=logging.ERROR,
            error=type(exc).__name__,
            reason=str(exc) or type(exc).__name__,
            queued=self.pending,
        )

    def report_recovered(self) -> None:
        """Writing works again."""
        log.event("audit_write_recovered")

    def report_unwritten(self, count: int) -> None:
        """Stopped with events not in the trail."""
        log.event(
            "audit_write_failed",
            level=logging.ERROR,
            error="stopped before every event was written",
            unwritten=count,
        )

    async def _run_purge(self, store: Store) -> None:
        try:
            removed = await trail.purge(store, self._retention)
        except trail.AuditIntegrityError as exc:
            log.event("audit_purge_refused", level=logging.ERROR, reason=str(exc))
            return
        if removed:
            log.event("audit_purge", removed=removed)


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
