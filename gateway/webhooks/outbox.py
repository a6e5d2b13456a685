"""The webhook outbox in the shared store: add events, claim due rows, record results.

One row per (event, endpoint), so each receiver has its own retries. Rows are
claimed with a lease (a conditional UPDATE in a transaction), so senders on
several nodes never POST the same row at the same time; a sender that dies
leaves its rows to be claimed again once the lease runs out. Delivery is
at-least-once: the row id travels as X-Sealgate-Delivery for receivers to
drop repeats.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.config import WebhookEndpoint
from gateway.store.base import Store
from gateway.webhooks.events import WebhookEvent

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


@dataclass(frozen=True)
class OutboxItem:
    """A row to add: one event for one endpoint."""

    id: str
    endpoint: str
    event: str
    body: str
    created_at: float


@dataclass(frozen=True)
class Claimed:
    """A row a sender holds the lease on."""

    id: str
    endpoint: str
    event: str
    body: str
    created_at: float
    attempts: int


def subscribed(endpoint: WebhookEndpoint, event_type: str) -> bool:
    """Whether the endpoint wants events of this type."""
    return "*" in endpoint.events or event_type in endpoint.events


def items_for(event: WebhookEvent, endpoints: Iterable[WebhookEndpoint]) -> list[OutboxItem]:
    """The rows an event makes: one per subscribed endpoint, all with the same body."""
    body = json.dumps(event.payload(), separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return [
        OutboxItem(uuid.uuid4().hex, e.name, event.type, body, event.at)
        for e in endpoints
        if subscribed(e, event.type)
    ]


async def add(store: Store, items: Sequence[OutboxItem]) -> None:
    """Insert rows, all or none."""
    if not items:
        return
    async with store.transaction() as tx:
        for item in items:
            await tx.execute(
                "INSERT INTO webhook_outbox (id, endpoint, event, body, created_at, state,"
                " attempts, next_attempt, lease_until) VALUES (?, ?, ?, ?, ?, ?, 0, ?, 0)",
                (item.id, item.endpoint, item.event, item.body, item.created_at, PENDING,
                 item.created_at),
            )  # fmt: skip


async def claim(store: Store, owner: str, now: float, lease: float, limit: int) -> list[Claimed]:
    """Take the lease on up to limit due rows, oldest first."""
    rows = await store.fetchall(
        "SELECT id FROM webhook_outbox WHERE state = ? AND next_attempt <= ? AND lease_until <= ?"
        " ORDER BY next_attempt, created_at LIMIT ?",
        (PENDING, now, now, limit),
    )
    if not rows:
        return []
    out: list[Claimed] = []
    async with store.transaction() as tx:
        for row in rows:
            # Re-checked in the UPDATE: another node may have claimed it since the SELECT.
            got = await tx.fetchone(
                "UPDATE webhook_outbox SET lease_until = ?, lease_owner = ?"
                " WHERE id = ? AND state = ? AND lease_until <= ?"
                " RETURNING id, endpoint, event, body, created_at, attempts",
                (now + lease, owner, row["id"], PENDING, now),
            )
            if got is not None:
                out.append(
                    Claimed(
                        str(got["id"]),
                        str(got["endpoint"]),
                        str(got["event"]),
                        str(got["body"]),
                        float(got["created_at"]),
                        int(got["attempts"]),
                    )
                )
    return out


async def mark_delivered(store: Store, row_id: str, owner: str, status: int, now: float) -> None:
    """Record a 2xx answer."""
    await store.execute(
        "UPDATE webhook_outbox SET state = ?, attempts = attempts + 1, last_status = ?,"
        " last_error = NULL, finished_at = ?, lease_until = 0 WHERE id = ? AND lease_owner = ?",
        (DELIVERED, status, now, row_id, owner),
    )


async def mark_failed_attempt(
    store: Store,
    row_id: str,
    owner: str,
    *,
    status: int | None,
    error: str,
    next_attempt: float | None,
    now: float,
) -> None:
    """Record a failed attempt: try again at next_attempt, or give up (None)."""
    state = PENDING if next_attempt is not None else FAILED
    await store.execute(
        "UPDATE webhook_outbox SET state = ?, attempts = attempts + 1, last_status = ?,"
        " last_error = ?, next_attempt = ?, finished_at = ?, lease_until = 0"
        " WHERE id = ? AND lease_owner = ?",
        (state, status, error[:500], next_attempt if next_attempt is not None else now,
         None if next_attempt is not None else now, row_id, owner),
    )  # fmt: skip


async def release(store: Store, owner: str) -> int:
    """Give up the leases a stopping sender holds, so the rows go out again without waiting."""
    return await store.execute(
        "UPDATE webhook_outbox SET lease_until = 0 WHERE lease_owner = ? AND state = ?",
        (owner, PENDING),
    )


async def purge(store: Store, before: float) -> int:
    """Remove delivered and given-up rows finished before the given time."""
    return await store.execute(
        "DELETE FROM webhook_outbox WHERE state <> ? AND finished_at < ?", (PENDING, before)
    )


async def retry_failed(store: Store, now: float, endpoint: str | None = None) -> int:
    """Put given-up rows back in line, with a fresh lifetime; return how many."""
    sql = (
        "UPDATE webhook_outbox SET state = ?, attempts = 0, next_attempt = ?, created_at = ?,"
        " finished_at = NULL, lease_until = 0 WHERE state = ?"
    )
    params: list[str | float] = [PENDING, now, now, FAILED]
    if endpoint is not None:
        sql += " AND endpoint = ?"
        params.append(endpoint)
    return await store.execute(sql, params)


async def counts(store: Store) -> dict[tuple[str, str], int]:
    """How many rows each endpoint has in each state."""
    rows = await store.fetchall(
        "SELECT endpoint, state, COUNT(*) AS n FROM webhook_outbox GROUP BY endpoint, state"
    )
    return {(str(r["endpoint"]), str(r["state"])): int(r["n"]) for r in rows}
