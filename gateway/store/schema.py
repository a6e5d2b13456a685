"""Versioned schema migrations, applied when a store is opened.

Each migration has a version number and a list of statements in the SQL both
backends accept. `migrate` runs the missing ones in one exclusive transaction
(SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so two nodes starting
at the same moment apply each migration once, and a failure leaves the schema
as it was. Versions are never edited once released: a change is a new
migration appended to MIGRATIONS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.store.base import Executor, SchemaTooNew, Store


@dataclass(frozen=True)
class Migration:
    """One step of the schema: its version, a short name and its statements."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "portal messages and recipients",
        (
            # A portal recipient is an address that has (had) messages waiting. The
            # portal signs them in with one-time codes, and optionally password + TOTP.
            """CREATE TABLE portal_recipients (
                address TEXT PRIMARY KEY,
                created_at DOUBLE PRECISION NOT NULL,
                password_hash TEXT,
                totp_secret BYTEA,
                totp_enabled_at DOUBLE PRECISION,
                last_login_at DOUBLE PRECISION
            )""",
            # One row per (queue message, recipient). The body is sealed: under the
            # master key, or (sealed_link = 1) under a key that only the link holds.
            # token_hash is SHA-256 of the link token; the token itself is never stored.
            """CREATE TABLE portal_messages (
                id TEXT PRIMARY KEY,
                queue_id TEXT NOT NULL,
                recipient TEXT NOT NULL REFERENCES portal_recipients (address),
                sender TEXT NOT NULL,
                token_hash BYTEA NOT NULL UNIQUE,
                sealed_link BIGINT NOT NULL,
                body BYTEA NOT NULL,
                size BIGINT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                token_issued_at DOUBLE PRECISION NOT NULL,
                revoked_at DOUBLE PRECISION,
                revoked_by TEXT,
                purged_at DOUBLE PRECISION,
                first_viewed_at DOUBLE PRECISION,
                read_notified_at DOUBLE PRECISION,
                UNIQUE (queue_id, recipient)
            )""",
            "CREATE INDEX portal_messages_recipient ON portal_messages (recipient, created_at)",
            "CREATE INDEX portal_messages_expires ON portal_messages (expires_at)",
        ),
    ),
    Migration(
        2,
        "portal sign-in: sessions, one-time codes, rate limits",
        (
            # Server-side sessions; the cookie holds a random id, the table its SHA-256.
            """CREATE TABLE portal_sessions (
                id BYTEA PRIMARY KEY,
                csrf TEXT NOT NULL,
                address TEXT,
                pending_address TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                seen_at DOUBLE PRECISION NOT NULL,
                signed_in_at DOUBLE PRECISION
            )""",
            "CREATE INDEX portal_sessions_seen ON portal_sessions (seen_at)",
            # One-time codes, hashed; valid once, for one session, a few attempts.
            """CREATE TABLE portal_codes (
                id TEXT PRIMARY KEY,
                address TEXT NOT NULL,
                session_id BYTEA NOT NULL,
                code_hash BYTEA NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                attempts BIGINT NOT NULL,
                used_at DOUBLE PRECISION
            )""",
            "CREATE INDEX portal_codes_session ON portal_codes (session_id, created_at)",
            # Rate-limit counters shared by every portal node (codes sent, failed sign-ins).
            """CREATE TABLE portal_hits (
                subject TEXT NOT NULL,
                kind TEXT NOT NULL,
                at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX portal_hits_subject ON portal_hits (subject, kind, at)",
            """CREATE TABLE portal_lockouts (
                subject TEXT PRIMARY KEY,
                locked_until DOUBLE PRECISION NOT NULL
            )""",
        ),
    ),
    Migration(
        3,
        "audit trail",
        (
            # The hash-chained audit trail (gateway/audit/chain.py): hash covers prev_hash
            # and the canonical (seq, time, event, fields). message_id and related_id
            # repeat ids from fields for legal holds and look-ups; verify checks them.
            """CREATE TABLE audit_records (
                seq BIGINT PRIMARY KEY,
                at DOUBLE PRECISION NOT NULL,
                event TEXT NOT NULL,
                message_id TEXT,
                related_id TEXT,
                fields TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )""",
            "CREATE INDEX audit_records_at ON audit_records (at)",
            "CREATE INDEX audit_records_message ON audit_records (message_id)",
            "CREATE INDEX audit_records_related ON audit_records (related_id)",
            # The purge anchor: the last purged record's seq and hash (one row, name 'anchor').
            """CREATE TABLE audit_state (
                name TEXT PRIMARY KEY,
                seq BIGINT NOT NULL,
                hash TEXT NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            # Message ids under legal hold: their records survive purges.
            """CREATE TABLE audit_holds (
                message_id TEXT PRIMARY KEY,
                created_at DOUBLE PRECISION NOT NULL,
                created_by TEXT NOT NULL,
                reason TEXT
            )""",
        ),
    ),
    Migration(
        4,
        "webhook outbox",
        (
            # One row per (event, endpoint): written by every process that sees the
            # event, sent by the main processes. id is the X-Sealgate-Delivery value.
            # A sender claims a row by setting lease_until (a conditional UPDATE), so
            # several nodes never POST the same row at once; state is pending,
            # delivered or failed (given up after webhooks.lifetime).
            """CREATE TABLE webhook_outbox (
                id TEXT PRIMARY KEY,
                endpoint TEXT NOT NULL,
                event TEXT NOT NULL,
                body TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                state TEXT NOT NULL,
                attempts BIGINT NOT NULL,
                next_attempt DOUBLE PRECISION NOT NULL,
                lease_until DOUBLE PRECISION NOT NULL,
                lease_owner TEXT,
                last_status BIGINT,
                last_error TEXT,
                finished_at DOUBLE PRECISION
            )""",
            "CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_attempt)",
            "CREATE INDEX webhook_outbox_finished ON webhook_outbox (finished_at)",
        ),
    ),
    Migration(
        5,
        "api keys",
        (
            # Keys for the HTTP API (gateway/apikeys.py): only the SHA-256 of the
            # 256-bit secret is kept; key_id is the public part, shown in listings.
            """CREATE TABLE api_keys (
                key_id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                key_hash TEXT NOT NULL,
                scopes TEXT NOT NULL,
                senders TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                created_by TEXT NOT NULL,
                revoked_at DOUBLE PRECISION,
                revoked_by TEXT,
                last_used_at DOUBLE PRECISION
            )""",
        ),
    ),
)

LATEST = MIGRATIONS[-1].version


async def current_version(store: Store) -> int:
    """The schema version the database is at (0 for an empty database)."""
    async with store.exclusive() as tx:
        return await _version(tx)


async def _version(tx: Executor) -> int:
    await tx.execute(
        """CREATE TABLE IF NOT EXISTS sealgate_schema (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at DOUBLE PRECISION NOT NULL
        )"""
    )
    row = await tx.fetchone("SELECT MAX(version) AS version FROM sealgate_schema")
    return int(row["version"]) if row and row["version"] is not None else 0


async def migrate(store: Store, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Bring the schema up to date; return the versions applied now (often none)."""
    applied: list[int] = []
    async with store.exclusive() as tx:
        current = await _version(tx)
        latest = migrations[-1].version if migrations else 0
        if current > latest:
            raise SchemaTooNew(
                f"{store.describe()}: the database schema is at version {current}, newer than "
                f"this Sealgate knows ({latest}); upgrade Sealgate on this node"
            )
        for m in migrations:
            if m.version <= current:
                continue
            for statement in m.statements:
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO sealgate_schema (version, name, applied_at) VALUES (?, ?, ?)",
                (m.version, m.name, time.time()),
            )
            applied.append(m.version)
    return applied
