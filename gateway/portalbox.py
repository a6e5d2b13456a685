"""Portal messages at rest: deposit, look up by link token, list, revoke, expire.

A portal message is one recipient's copy of a queued message, kept in the
shared store (gateway/store) so that every gateway and portal node sees it.
Bodies are sealed (gateway/sealing.py, AES-256-GCM) in one of two ways:

- under the master key: the portal can open the message for a recipient who
  signs in, from the link or from their inbox of all their portal messages;
- "sealed link": under a fresh random key that goes into the recipient's link
  (the URL fragment, which browsers never send to a server) and is stored
  nowhere, so neither a copy of the database nor an administrator can read it.

The link token (256 random bits) is stored only as its SHA-256 digest. A
delivery retried for the same (queue id, recipient) reuses that recipient's
row: the retry gets a fresh token (the earlier notification may never have
arrived, so its link is cancelled) and never makes a second copy.
Revoking or expiring a message erases its body at once; the row stays, so the
portal can tell a recipient the message was withdrawn or has expired.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gateway import log
from gateway.sealing import KEY_SIZE, MasterKey, SealError
from gateway.store import Row, Store, StoreError

TOKEN_BYTES = 32
# Reading refuses an expired message at once; the sweep only erases what is left.
EXPIRY_SWEEP_INTERVAL = 600.0
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_AAD_PREFIX = b"sealgate portal v1\n"
_COLUMNS = (
    "id, queue_id, recipient, sender, sealed_link, size, created_at, expires_at, "
    "token_issued_at, revoked_at, revoked_by, purged_at, first_viewed_at"
)

MessageState = Literal["active", "expired", "revoked"]


class PortalError(Exception):
    """A portal message cannot be stored or opened as asked."""


class RevokedError(PortalError):
    """The message was withdrawn: no new deposit, no reading."""


class GoneError(PortalError):
    """The message has expired (or its body was erased): nothing left to read."""


class KeyRequiredError(PortalError):
    """A sealed-link message opens only with the key from its link."""


@dataclass(frozen=True)
class PortalMessage:
    """What the store knows about one portal message (never its body)."""

    id: str
    queue_id: str
    recipient: str
    sender: str
    sealed_link: bool
    size: int
    created_at: float
    expires_at: float
    token_issued_at: float
    revoked_at: float | None = None
    revoked_by: str | None = None
    purged_at: float | None = None
    first_viewed_at: float | None = None

    def state(self, now: float | None = None) -> MessageState:
        """Revoked, expired (by time or erased), or active."""
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        if self.purged_at is not None or self.expires_at <= now:
            return "expired"
        return "active"

    @classmethod
    def from_row(cls, row: Row) -> PortalMessage:
        """Build from a database row with the _COLUMNS columns."""
        return cls(
            id=str(row["id"]),
            queue_id=str(row["queue_id"]),
            recipient=str(row["recipient"]),
            sender=str(row["sender"]),
            sealed_link=bool(row["sealed_link"]),
            size=int(row["size"]),
            created_at=float(row["created_at"]),
            expires_at=float(row["expires_at"]),
            token_issued_at=float(row["token_issued_at"]),
            revoked_at=_opt_float(row["revoked_at"]),
            revoked_by=row["revoked_by"],
            purged_at=_opt_float(row["purged_at"]),
            first_viewed_at=_opt_float(row["first_viewed_at"]),
        )


@dataclass(frozen=True)
class Deposit:
    """A stored message and the secrets for its link, which exist only here."""

    message: PortalMessage
    token: str
    key: str | None  # sealed-link mode: the body key (base64url); never stored
    reused: bool  # an earlier attempt's row for the same (queue id, recipient)

    def link(self, base_url: str) -> str:
        """The recipient's link: {base_url}/m/{token}, plus #{key} for a sealed link."""
        url = f"{base_url.rstrip('/')}/m/{self.token}"
        return f"{url}#{self.key}" if self.key else url


@dataclass(frozen=True)
class RevokeResult:
    """How many copies a queue id had, and how many this call withdrew."""

    found: int
    revoked: int


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def token_hash(token: str) -> bytes:
    """The digest stored in place of a link token."""
    return hashlib.sha256(token.encode("ascii")).digest()


def normalise_address(address: str) -> str:
    """The form addresses are stored and matched in (one inbox per mailbox, any case)."""
    return address.strip().lower()


def _aad(queue_id: str, recipient: str) -> bytes:
    # Bound to the (queue id, recipient) pair: a body copied into another row fails to open.
    return _AAD_PREFIX + queue_id.encode("utf-8") + b"\n" + recipient.encode("utf-8")


def _encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")


def _decode_key(text: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise KeyRequiredError("the link key is malformed") from None
    if len(key) != KEY_SIZE:
        raise KeyRequiredError("the link key is malformed")
    return key


class PortalBox:
    """Portal messages in the shared store; bodies sealed before they reach it."""

    def __init__(
        self,
        store: Store,
        master: MasterKey | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._master = master  # None: metadata only (listing, revoking)
        self._clock = clock

    # --- deposit -------------------------------------------------------------------------

    async def deposit(
        self,
        queue_id: str,
        recipient: str,
        sender: str,
        data: bytes,
        *,
        expires_in: float,
        sealed_link: bool = False,
    ) -> Deposit:
        """Store data for recipient (or reuse the earlier attempt's row) with a fresh token.

        Raises RevokedError when this copy was withdrawn, StoreError when the
        database fails, PortalError when there is no master key to seal with.
        """
        if expires_in <= 0:
            raise ValueError("expires_in must be positive")
        recipient = normalise_address(recipient)
        now = self._clock()
        token = secrets.token_urlsafe(TOKEN_BYTES)
        digest = token_hash(token)
        link_key: bytes | None = None
        if sealed_link:
            link_key = secrets.token_bytes(KEY_SIZE)
            sealer = MasterKey(link_key)
        elif self._master is None:
            raise PortalError("no master key to seal portal messages with")
        else:
            sealer = self._master
        # Sealing is CPU work on up to the message size limit: off the event loop,
        # and before the transaction so no database lock is held meanwhile.
        body = await asyncio.to_thread(sealer.seal, data, _aad(queue_id, recipient))
        message_id = secrets.token_hex(16)
        async with self._store.transaction() as tx:
            await tx.execute(
                "INSERT INTO portal_recipients (address, created_at) VALUES (?, ?) "
                "ON CONFLICT (address) DO NOTHING",
                (recipient, now),
            )
            inserted = await tx.execute(
                "INSERT INTO portal_messages (id, queue_id, recipient, sender, token_hash, "
                "sealed_link, body, size, created_at, expires_at, token_issued_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (queue_id, recipient) DO NOTHING",
                (
                    message_id,
                    queue_id,
                    recipient,
                    sender,
                    digest,
                    int(sealed_link),
                    body,
                    len(data),
                    now,
                    now + expires_in,
                    now,
                ),
            )
            reused = inserted == 0
            if reused:
                row = await tx.fetchone(
                    "SELECT expires_at, revoked_at, purged_at FROM portal_messages "
                    "WHERE queue_id = ? AND recipient = ?",
                    (queue_id, recipient),
                )
                if row is None:  # pragma: no cover - the conflicting row cannot vanish
                    raise PortalError("portal message vanished during deposit")
                if row["revoked_at"] is not None:
                    raise RevokedError(f"portal message {queue_id} was revoked")
                # An expired copy comes back for the recipient who was never told of it.
                expires_at = float(row["expires_at"])
                if row["purged_at"] is not None or expires_at <= now:
                    expires_at = now + expires_in
                # The body is rewritten too: a sealed link's key is new with each token.
                await tx.execute(
                    "UPDATE portal_messages SET token_hash = ?, token_issued_at = ?, body = ?, "
                    "sealed_link = ?, size = ?, expires_at = ?, purged_at = NULL "
                    "WHERE queue_id = ? AND recipient = ?",
                    (
                        digest,
                        now,
                        body,
                        int(sealed_link),
                        len(data),
                        expires_at,
                        queue_id,
                        recipient,
                    ),
                )
            stored = await tx.fetchone(
                f"SELECT {_COLUMNS} FROM portal_messages WHERE queue_id = ? AND recipient = ?",  # noqa: S608
                (queue_id, recipient),
            )
        assert stored is not None
        return Deposit(
            message=PortalMessage.from_row(stored),
            token=token,
            key=_encode_key(link_key) if link_key is not None else None,
            reused=reused,
        )

    # --- lookups ---------------------------------------------------------------------------

    async def by_token(self, token: str) -> PortalMessage | None:
        """The message a link token opens, or None (unknown, replaced or malformed)."""
        if not _TOKEN_RE.fullmatch(token):
            return None
        return await self.by_token_hash(token_hash(token))

    async def by_token_hash(self, digest: bytes) -> PortalMessage | None:
        """The message whose current token has this SHA-256 digest."""
        row = await self._store.fetchone(
            f"SELECT {_COLUMNS} FROM portal_messages WHERE token_hash = ?",  # noqa: S608
            (digest,),
        )
        return PortalMessage.from_row(row) if row else None

    async def get(self, message_id: str) -> PortalMessage | None:
        """One message by its portal id."""
        row = await self._store.fetchone(
            f"SELECT {_COLUMNS} FROM portal_messages WHERE id = ?",  # noqa: S608
            (message_id,),
        )
        return PortalMessage.from_row(row) if row else None

    async def list_messages(
        self, *, queue_id: str | None = None, recipient: str | None = None
    ) -> list[PortalMessage]:
        """Messages, oldest first; only one queue id's or one recipient's when given."""
        where: list[str] = []
        params: list[str] = []
        if queue_id is not None:
            where.append("queue_id = ?")
            params.append(queue_id)
        if recipient is not None:
            where.append("recipient = ?")
            params.append(normalise_address(recipient))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS} FROM portal_messages{clause} ORDER BY created_at, id",  # noqa: S608
            params,
        )
        return [PortalMessage.from_row(r) for r in rows]

    async def for_recipient(self, address: str) -> list[PortalMessage]:
        """A recipient's inbox: every message stored for the address, oldest first."""
        return await self.list_messages(recipient=address)

    async def read_body(self, message: PortalMessage, key: str | None = None) -> bytes:
        """The original message bytes; a sealed-link message needs its link's key."""
        row = await self._store.fetchone(
            "SELECT body, revoked_at, purged_at, expires_at FROM portal_messages WHERE id = ?",
            (message.id,),
        )
        if row is None:
            raise GoneError("no such portal message")
        if row["revoked_at"] is not None:
            raise RevokedError("the message was withdrawn")
        if row["purged_at"] is not None or float(row["expires_at"]) <= self._clock():
            raise GoneError("the message has expired")
        if message.sealed_link:
            if not key:
                raise KeyRequiredError("this message opens only with the key in its link")
            opener = MasterKey(_decode_key(key))
        elif self._master is None:
            raise PortalError("no master key to open portal messages with")
        else:
            opener = self._master
        body = bytes(row["body"])
        aad = _aad(message.queue_id, message.recipient)
        try:
            return await asyncio.to_thread(opener.unseal, body, aad)
        except SealError:
            if message.sealed_link:
                raise KeyRequiredError("the link key does not open this message") from None
            raise

    async def mark_viewed(self, message_id: str) -> bool:
        """Record the first time the recipient opened the message; False if already seen."""
        changed = await self._store.execute(
            "UPDATE portal_messages SET first_viewed_at = ? "
            "WHERE id = ? AND first_viewed_at IS NULL",
            (self._clock(), message_id),
        )
        return changed > 0

    # --- withdrawal --------------------------------------------------------------------

    async def revoke(self, queue_id: str, by: str, *, recipient: str | None = None) -> RevokeResult:
        """Withdraw every recipient's copy of a queued message (or one recipient's)."""
        where = "queue_id = ?"
        params: list[str] = [queue_id]
        if recipient is not None:
            where += " AND recipient = ?"
            params.append(normalise_address(recipient))
        now = self._clock()
        async with self._store.transaction() as tx:
            row = await tx.fetchone(
                f"SELECT COUNT(*) AS n FROM portal_messages WHERE {where}",  # noqa: S608
                params,
            )
            found = int(row["n"]) if row else 0
            update = (
                "UPDATE portal_messages SET revoked_at = ?, revoked_by = ?, body = ?, "  # noqa: S608
                f"purged_at = ? WHERE {where} AND revoked_at IS NULL RETURNING id, recipient"
            )
            rows = await tx.fetchall(update, (now, by, b"", now, *params))
        for r in rows:
            log.event(
                "portal_revoked", id=r["id"], queue_id=queue_id, recipient=r["recipient"], actor=by
            )
        return RevokeResult(found=found, revoked=len(rows))

    async def expire(self) -> int:
        """Erase the bodies of messages past their expiry; return how many."""
        now = self._clock()
        rows = await self._store.fetchall(
            "UPDATE portal_messages SET body = ?, purged_at = ? "
            "WHERE expires_at <= ? AND purged_at IS NULL RETURNING id, queue_id, recipient",
            (b"", now, now),
        )
        for r in rows:
            log.event(
                "portal_expired", id=r["id"], queue_id=r["queue_id"], recipient=r["recipient"]
            )
        return len(rows)


async def expire_periodically(box: PortalBox, interval: float = EXPIRY_SWEEP_INTERVAL) -> None:
    """Erase expired bodies every interval until cancelled; a failing store is retried."""
    while True:
        try:
            await box.expire()
        except StoreError as exc:
            log.event("portal_expiry_sweep_failed", error=str(exc))
        await asyncio.sleep(interval)
