"""The audit trail in the shared store: append, read, check, purge, legal holds.

Every writer (the gateway, its delivery process, CLI commands, other nodes)
appends inside `store.exclusive()`: it reads the head (last seq and hash), then
inserts its batch as seq+1, seq+2... each chained to the one before. Readers
(verify, export) page through records by seq without a lock; appends only ever
add at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.audit.chain import (
    GENESIS,
    PURGE_EVENT,
    ChainChecker,
    Problem,
    Record,
    Report,
    dumps,
    iso_time,
)
from gateway.store.base import Executor, Param, Row, Store

PAGE = 2000
# Records purged per transaction: a first purge after years must not hold the
# writers' lock for minutes, nor read millions of rows at once.
PURGE_CHUNK = 5000
# Rows per INSERT statement (8 parameters each; SQLite allows 32766 per statement).
INSERT_ROWS = 200
_ANCHOR = "anchor"


class AuditIntegrityError(Exception):
    """The trail is damaged where an operation needs it intact (a purge refuses to run)."""


@dataclass(frozen=True)
class Entry:
    """An event waiting to be appended: when it happened, its name and allowed fields."""

    at: float
    event: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Hold:
    """A legal hold on a message id."""

    message_id: str
    created_at: float
    created_by: str
    reason: str | None


def record_from_row(row: Row) -> Record:
    """A Record from an audit_records row (fields that are not JSON stay visible as text)."""
    try:
        fields = json.loads(row["fields"])
    except (TypeError, ValueError):
        fields = {"(unreadable)": str(row["fields"])}
    if not isinstance(fields, dict):
        fields = {"(unreadable)": str(row["fields"])}
    return Record(
        seq=int(row["seq"]),
        at=float(row["at"]),
        event=str(row["event"]),
        fields=fields,
        prev_hash=str(row["prev_hash"]),
        hash=str(row["hash"]),
        message_id=row["message_id"],
        related_id=row["related_id"],
    )


async def anchor(tx: Executor) -> tuple[int, str]:
    """The purge anchor: seq and hash the remaining chain starts from (0 and zeros if none)."""
    row = await tx.fetchone("SELECT seq, hash FROM audit_state WHERE name = ?", (_ANCHOR,))
    if row is None:
        return 0, GENESIS
    return int(row["seq"]), str(row["hash"])


async def head(tx: Executor) -> tuple[int, str]:
    """The last record's seq and hash (the anchor when every record was purged)."""
    row = await tx.fetchone("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1")
    base = await anchor(tx)
    if row is None or int(row["seq"]) <= base[0]:
        return base
    return int(row["seq"]), str(row["hash"])


async def append_locked(tx: Executor, entries: Sequence[Entry]) -> list[Record]:
    """Append entries after the head; the caller holds store.exclusive()."""
    seq, prev = await head(tx)
    out: list[Record] = []
    for entry in entries:
        seq += 1
        record = Record.make(prev, seq, entry.at, entry.event, entry.fields)
        prev = record.hash
        out.append(record)
    # Many rows per statement: one round trip to the database thread or server per
    # INSERT_ROWS records, not one per record.
    for start in range(0, len(out), INSERT_ROWS):
        rows = out[start : start + INSERT_ROWS]
        params: list[Param] = []
        for r in rows:
            params += [r.seq, r.at, r.event, r.message_id, r.related_id, dumps(r.fields)]
            params += [r.prev_hash, r.hash]
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows))
        await tx.execute(
            "INSERT INTO audit_records (seq, at, event, message_id, related_id, fields, "  # noqa: S608 - placeholders only
            f"prev_hash, hash) VALUES {values}",
            params,
        )
    return out


async def append(store: Store, entries: Sequence[Entry]) -> list[Record]:
    """Append entries in one exclusive transaction (serialised across processes and nodes)."""
    if not entries:
        return []
    async with store.exclusive() as tx:
        return await append_locked(tx, entries)


async def records(
    store: Store,
    *,
    since: float | None = None,
    until: float | None = None,
    after_seq: int = 0,
    message_id: str | None = None,
) -> AsyncIterator[Record]:
    """Records in seq order, optionally from `since` (inclusive) to `until` (exclusive)."""
    where = ["seq > ?"]
    params: list[str | float | int] = []
    if since is not None:
        where.append("at >= ?")
        params.append(since)
    if until is not None:
        where.append("at < ?")
        params.append(until)
    if message_id is not None:
        where.append("(message_id = ? OR related_id = ?)")
        params += [message_id, message_id]
    # Only the fixed conditions above are joined in; every value is a parameter.
    sql = (
        "SELECT seq, at, event, message_id, related_id, fields, prev_hash, hash "  # noqa: S608
        f"FROM audit_records WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
    )
    last = after_seq
    while True:
        rows = await store.fetchall(sql, (last, *params, PAGE))
        for row in rows:
            yield record_from_row(row)
        if len(rows) < PAGE:
            return
        last = int(rows[-1]["seq"])


async def verify(store: Store, expect_head: tuple[int, str] | None = None) -> Report:
    """Check the whole trail: every hash, every link, the purge anchor, the checkpoint."""
    for attempt in range(3):
        start = await anchor(store)
        checker = ChainChecker(*start, expect_head=expect_head)
        async for record in records(store):
            checker.feed(record)
        report = checker.finish()
        # A purge that ran meanwhile moves the anchor and removes what was read:
        # read again rather than report its work as tampering.
        if report.ok or await anchor(store) == start or attempt == 2:
            return report
    raise AssertionError("unreachable")


async def purge(store: Store, retention: float, *, now: float | None = None) -> int:
    """Remove records older than retention (except legal holds); return how many went.

    The chain stays checkable: each step checks the part it removes, moves the
    anchor to the last removed record and appends an `audit_purged` record naming
    the anchor and every older record kept under hold. A damaged part is not
    removed (AuditIntegrityError): the evidence stays for `audit verify`.
    """
    cutoff = (time.time() if now is None else now) - retention
    total = 0
    while True:
        removed, more = await _purge_step(store, cutoff)
        total += removed
        if not more:
            return total


async def _purge_due(store: Store, cutoff: float) -> bool:
    """Whether a purge has anything to do (read without the writers' lock)."""
    anchor_seq, _ = await anchor(store)
    first = await store.fetchone(
        "SELECT at FROM audit_records WHERE seq > ? ORDER BY seq LIMIT 1", (anchor_seq,)
    )
    if first is not None and float(first["at"]) < cutoff:
        return True
    released = await store.fetchone(
        "SELECT seq FROM audit_records WHERE seq <= ? "
        "AND (message_id IS NULL OR message_id NOT IN (SELECT message_id FROM audit_holds)) "
        "AND (related_id IS NULL OR related_id NOT IN (SELECT message_id FROM audit_holds)) "
        "LIMIT 1",
        (anchor_seq,),
    )
    return released is not None


async def _purge_step(store: Store, cutoff: float) -> tuple[int, bool]:
    # Most runs find nothing due: find out without taking the writers' lock.
    if not await _purge_due(store, cutoff):
        return 0, False
    async with store.exclusive() as tx:
        anchor_seq, anchor_hash = await anchor(tx)
        rows = await tx.fetchall(
            "SELECT seq, at, event, message_id, related_id, fields, prev_hash, hash "
            "FROM audit_records WHERE seq > ? ORDER BY seq LIMIT ?",
            (anchor_seq, PURGE_CHUNK),
        )
        segment: list[Record] = []
        for row in rows:
            if float(row["at"]) >= cutoff:
                break
            segment.append(record_from_row(row))
        checker = ChainChecker(anchor_seq, anchor_hash)
        for record in segment:
            checker.feed(record)
        problems = [p for p in checker.report.problems if p.seq is not None]
        if problems:
            raise AuditIntegrityError(f"the audit trail is damaged, not purging: {problems[0]}")
        if segment:
            anchor_seq, anchor_hash = segment[-1].seq, segment[-1].hash
        # Also removes records kept earlier whose hold has been released since.
        removed = await tx.execute(
            "DELETE FROM audit_records WHERE seq <= ? "
            "AND (message_id IS NULL OR message_id NOT IN (SELECT message_id FROM audit_holds)) "
            "AND (related_id IS NULL OR related_id NOT IN (SELECT message_id FROM audit_holds))",
            (anchor_seq,),
        )
        if not segment and removed == 0:
            return 0, False
        await tx.execute(
            "INSERT INTO audit_state (name, seq, hash, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
            "updated_at = excluded.updated_at",
            (_ANCHOR, anchor_seq, anchor_hash, time.time()),
        )
        kept = await tx.fetchall(
            "SELECT seq, hash FROM audit_records WHERE seq <= ? ORDER BY seq", (anchor_seq,)
        )
        fields = {
            "anchor_seq": anchor_seq,
            "anchor_hash": anchor_hash,
            "purged": removed,
            "before": iso_time(cutoff),
            "held": [[int(r["seq"]), str(r["hash"])] for r in kept],
        }
        await append_locked(tx, [Entry(time.time(), PURGE_EVENT, fields)])
        return removed, len(rows) == PURGE_CHUNK and len(segment) == len(rows)


async def add_hold(store: Store, message_id: str, actor: str, reason: str | None) -> bool:
    """Put a message id under legal hold (recorded in the trail); False if it already was."""
    async with store.exclusive() as tx:
        row = await tx.fetchone(
            "SELECT message_id FROM audit_holds WHERE message_id = ?", (message_id,)
        )
        if row is not None:
            return False
        await tx.execute(
            "INSERT INTO audit_holds (message_id, created_at, created_by, reason) "
            "VALUES (?, ?, ?, ?)",
            (message_id, time.time(), actor, reason),
        )
        fields: dict[str, Any] = {"message_id": message_id, "actor": actor}
        if reason:
            fields["reason"] = reason
        await append_locked(tx, [Entry(time.time(), "audit_hold", fields)])
        return True


async def release_hold(store: Store, message_id: str, actor: str) -> bool:
    """Lift a legal hold (recorded in the trail); False if there was none."""
    async with store.exclusive() as tx:
        removed = await tx.execute("DELETE FROM audit_holds WHERE message_id = ?", (message_id,))
        if not removed:
            return False
        entry = Entry(
            time.time(), "audit_hold_released", {"message_id": message_id, "actor": actor}
        )
        await append_locked(tx, [entry])
        return True


async def holds(store: Store) -> list[Hold]:
    """Every legal hold, oldest first."""
    rows = await store.fetchall(
        "SELECT message_id, created_at, created_by, reason FROM audit_holds ORDER BY created_at"
    )
    return [
        Hold(str(r["message_id"]), float(r["created_at"]), str(r["created_by"]), r["reason"])
        for r in rows
    ]


__all__ = [
    "AuditIntegrityError",
    "Entry",
    "Hold",
    "Problem",
    "Record",
    "Report",
    "add_hold",
    "anchor",
    "append",
    "append_locked",
    "head",
    "holds",
    "purge",
    "record_from_row",
    "records",
    "release_hold",
    "verify",
]
