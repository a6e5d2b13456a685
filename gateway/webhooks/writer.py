"""The outbox writer: listens to this process's events and adds webhook rows to the store.

Every process of the gateway runs one (the main process, the delivery process,
the portal, the API). The listener only maps the event to a small PHI-free
payload; gateway.store.batchwriter writes the rows from a thread of its own,
in batches, and keeps them in memory while the database fails.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway import log
from gateway.config import Config, WebhookEndpoint
from gateway.store.base import Store
from gateway.store.batchwriter import (
    FLUSH_INTERVAL,
    MAX_PENDING,
    BatchWriter,
    Opener,
    default_opener,
)
from gateway.webhooks import outbox
from gateway.webhooks.events import to_webhook

BATCH = 500


class OutboxWriter(BatchWriter[outbox.OutboxItem]):
    """Turns gateway events into outbox rows, written from a background thread."""

    thread_name = "webhook-outbox"

    def __init__(
        self,
        cfg: Config,
        *,
        opener: Opener | None = None,
        flush_interval: float = FLUSH_INTERVAL,
        max_pending: int = MAX_PENDING,
    ) -> None:
        super().__init__(
            opener or default_opener(cfg), flush_interval=flush_interval, max_pending=max_pending
        )
        self._endpoints: tuple[WebhookEndpoint, ...] = tuple(cfg.webhooks.endpoints)

    def listen(self, name: str, level: int, fields: dict[str, Any]) -> None:
        """A gateway.log listener: queue the rows for a mapped event."""
        event = to_webhook(name, fields)
        if event is None:
            return
        for item in outbox.items_for(event, self._endpoints):
            self.add(item)

    async def flush(self, store: Store) -> None:
        """Add the pending rows to the outbox; say how many the memory bound dropped."""
        if self._lost:
            lost, self._lost = self._lost, 0
            self._lost_since = None
            log.event("webhook_events_lost", level=logging.ERROR, count=lost)
        while self.pending:
            taken = self.take(BATCH)
            try:
                await outbox.add(store, taken)
            except BaseException:
                self.put_back(taken)
                raise

    def report_failure(self, exc: Exception) -> None:
        """Writing the outbox fails (logged once per outage)."""
        log.event(
            "webhook_outbox_write_failed",
            level=logging.ERROR,
            error=type(exc).__name__,
            reason=str(exc) or type(exc).__name__,
            queued=self.pending,
        )

    def report_recovered(self) -> None:
        """Writing works again."""
        log.event("webhook_outbox_write_recovered")

    def report_unwritten(self, count: int) -> None:
        """Stopped with rows not in the outbox."""
        log.event("webhook_outbox_write_failed", level=logging.ERROR, unwritten=count)
