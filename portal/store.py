"""The portal's own state in the shared store: sessions, one-time codes, rate limits.

Everything here lives in the database (gateway/store), not in a process's
memory, so several portal nodes behind a load balancer share sign-ins, code
attempts and lock-outs. Secrets are stored only as SHA-256 digests: the
session cookie's id and the one-time code (salted with its own random id).
Recipients' password hashes and TOTP secrets are columns of
portal_recipients (migration 1).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.store import Executor, Store

SESSION_BYTES = 32
CODE_DIGITS = 6


def digest(value: str) -> bytes:
    """The SHA-256 digest a secret is stored as."""
    return hashlib.sha256(value.encode("utf-8")).digest()


def _code_hash(code_id: str, code: str) -> bytes:
    return hashlib.sha256(f"{code_id}:{code}".encode()).digest()


@dataclass(frozen=True)
class Session:
    """One browser's session: its CSRF token and who signed in (if anyone)."""

    key: bytes  # the digest of the cookie value
    csrf: str
    address: str | None
    pending_address: str | None  # password checked, second factor still to come
    created_at: float
    seen_at: float
    signed_in_at: float | None


@dataclass(frozen=True)
class Recipient:
    """A portal recipient's sign-in settings."""

    address: str
    password_hash: str | None
    totp_secret: bytes | None  # sealed under the master key (see portal/auth.py)
    totp_enabled: bool


class CodeResult:
    """Outcomes of checking a one-time code."""

    OK = "ok"
    WRONG = "wrong"
    EXHAUSTED = "exhausted"  # too many wrong entries: the code is void
    NONE = "none"  # no live code for this session


class PortalStore:
    """Sessions, codes, rate limits and recipients' credentials."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    @property
    def store(self) -> Store:
        """The underlying shared store."""
        return self._store

    # --- sessions ----------------------------------------------------------------------

    async def new_session(self) -> tuple[str, Session]:
        """A fresh anonymous session; returns the cookie value (never stored) and the row."""
        cookie = secrets.token_urlsafe(SESSION_BYTES)
        now = self._clock()
        session = Session(digest(cookie), secrets.token_urlsafe(32), None, None, now, now, None)
        await self._store.execute(
            "INSERT INTO portal_sessions (id, csrf, created_at, seen_at) VALUES (?, ?, ?, ?)",
            (session.key, session.csrf, now, now),
        )
        return cookie, session

    async def session(self, cookie: str, idle: float, absolute: float) -> Session | None:
        """The live session for a cookie, touched; None when unknown or timed out."""
        if not cookie or len(cookie) > 128:
            return None
        key = digest(cookie)
        row = await self._store.fetchone(
            "SELECT csrf, address, pending_address, created_at, seen_at, signed_in_at "
            "FROM portal_sessions WHERE id = ?",
            (key,),
        )
        if row is None:
            return None
        now = self._clock()
        started = float(row["signed_in_at"] or row["created_at"])
        if now - float(row["seen_at"]) > idle or now - started > absolute:
            await self._store.execute("DELETE FROM portal_sessions WHERE id = ?", (key,))
            return None
        await self._store.execute("UPDATE portal_sessions SET seen_at = ? WHERE id = ?", (now, key))
        return Session(
            key,
            str(row["csrf"]),
            row["address"],
            row["pending_address"],
            float(row["created_at"]),
            now,
            None if row["signed_in_at"] is None else float(row["signed_in_at"]),
        )

    async def sign_in(self, old: Session, address: str) -> tuple[str, Session]:
        """Replace the session with a signed-in one under a new id (no session fixation)."""
        cookie = secrets.token_urlsafe(SESSION_BYTES)
        now = self._clock()
        new = Session(digest(cookie), secrets.token_urlsafe(32), address, None, now, now, now)
        async with self._store.transaction() as tx:
            await tx.execute("DELETE FROM portal_sessions WHERE id = ?", (old.key,))
            await tx.execute(
                "INSERT INTO portal_sessions (id, csrf, address, created_at, seen_at, "
                "signed_in_at) VALUES (?, ?, ?, ?, ?, ?)",
                (new.key, new.csrf, address, now, now, now),
            )
            await tx.execute("DELETE FROM portal_codes WHERE session_id = ?", (old.key,))
        return cookie, new

    async def set_pending(self, session: Session, address: str | None) -> None:
        """Remember that the password was right and the TOTP code is still due."""
        await self._store.execute(
            "UPDATE portal_sessions SET pending_address = ? WHERE id = ?", (address, session.key)
        )

    async def end_session(self, session: Session) -> None:
        """Sign out: the session row goes."""
        await self._store.execute("DELETE FROM portal_sessions WHERE id = ?", (session.key,))

    async def purge(self, idle: float, absolute: float) -> None:
        """Drop timed-out sessions, dead codes and old rate-limit counters."""
        now = self._clock()
        await self._store.execute(
            "DELETE FROM portal_sessions WHERE seen_at < ? OR created_at < ?",
            (now - idle, now - max(absolute, idle) - 86400),
        )
        await self._store.execute("DELETE FROM portal_codes WHERE expires_at < ?", (now,))
        await self._store.execute("DELETE FROM portal_hits WHERE at < ?", (now - 86400,))
        await self._store.execute("DELETE FROM portal_lockouts WHERE locked_until < ?", (now,))

    # --- one-time codes --------------------------------------------------------------------

    async def new_code(self, session: Session, address: str, lifetime: float) -> str:
        """A fresh code for address, usable once in this session; earlier ones are void."""
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        code_id = secrets.token_hex(16)
        now = self._clock()
        async with self._store.transaction() as tx:
            await tx.execute("DELETE FROM portal_codes WHERE session_id = ?", (session.key,))
            await tx.execute(
                "INSERT INTO portal_codes (id, address, session_id, code_hash, created_at, "
                "expires_at, attempts) VALUES (?, ?, ?, ?, ?, ?, 0)",
                (code_id, address, session.key, _code_hash(code_id, code), now, now + lifetime),
            )
        return code

    async def check_code(self, session: Session, address: str, code: str, max_attempts: int) -> str:
        """Check a code entered in this session for address (a CodeResult value)."""
        now = self._clock()
        async with self._store.transaction() as tx:
            row = await tx.fetchone(
                "SELECT id, code_hash, attempts FROM portal_codes WHERE session_id = ? "
                "AND address = ? AND used_at IS NULL AND expires_at > ? "
                "ORDER BY created_at DESC",
                (session.key, address, now),
            )
            if row is None:
                return CodeResult.NONE
            code_id = str(row["id"])
            attempts = int(row["attempts"])
            if attempts >= max_attempts:
                return CodeResult.EXHAUSTED
            clean = "".join(c for c in code if c.isdigit())[: CODE_DIGITS + 2]
            if hmac.compare_digest(_code_hash(code_id, clean), bytes(row["code_hash"])):
                await tx.execute("UPDATE portal_codes SET used_at = ? WHERE id = ?", (now, code_id))
                return CodeResult.OK
            await tx.execute(
                "UPDATE portal_codes SET attempts = attempts + 1 WHERE id = ?", (code_id,)
            )
            return CodeResult.EXHAUSTED if attempts + 1 >= max_attempts else CodeResult.WRONG

    # --- rate limits and lock-outs ------------------------------------------------------

    async def hit(self, subject: str, kind: str) -> None:
        """Count one event (a code sent, a failed sign-in) against subject."""
        await self._store.execute(
            "INSERT INTO portal_hits (subject, kind, at) VALUES (?, ?, ?)",
            (subject, kind, self._clock()),
        )

    async def hits(self, subject: str, kind: str, window: float) -> int:
        """How many such events subject had within the last window seconds."""
        row = await self._store.fetchone(
            "SELECT COUNT(*) AS n FROM portal_hits WHERE subject = ? AND kind = ? AND at > ?",
            (subject, kind, self._clock() - window),
        )
        return int(row["n"]) if row else 0

    async def lock(self, subject: str, duration: float) -> None:
        """Lock subject out until now + duration."""
        until = self._clock() + duration
        await self._store.execute(
            "INSERT INTO portal_lockouts (subject, locked_until) VALUES (?, ?) "
            "ON CONFLICT (subject) DO UPDATE SET locked_until = excluded.locked_until",
            (subject, until),
        )

    async def locked(self, subject: str) -> bool:
        """Whether subject is locked out right now."""
        row = await self._store.fetchone(
            "SELECT locked_until FROM portal_lockouts WHERE subject = ?", (subject,)
        )
        return row is not None and float(row["locked_until"]) > self._clock()

    async def clear_failures(self, subject: str) -> None:
        """Forget subject's failed sign-ins (after a successful one)."""
        await self._store.execute(
            "DELETE FROM portal_hits WHERE subject = ? AND kind = ?", (subject, "failure")
        )

    # --- recipients' credentials --------------------------------------------------------

    async def recipient(self, address: str) -> Recipient | None:
        """Sign-in settings of a portal recipient, or None for an unknown address."""
        row = await self._store.fetchone(
            "SELECT address, password_hash, totp_secret, totp_enabled_at "
            "FROM portal_recipients WHERE address = ?",
            (address,),
        )
        if row is None:
            return None
        secret = row["totp_secret"]
        return Recipient(
            address=str(row["address"]),
            password_hash=row["password_hash"],
            totp_secret=bytes(secret) if secret is not None else None,
            totp_enabled=row["totp_enabled_at"] is not None,
        )

    async def set_password(self, address: str, password_hash: str | None) -> None:
        """Set (or clear) a recipient's password hash."""
        await self._store.execute(
            "UPDATE portal_recipients SET password_hash = ? WHERE address = ?",
            (password_hash, address),
        )

    async def set_totp(self, address: str, secret: bytes | None, enabled: bool) -> None:
        """Store a TOTP secret (enabled once confirmed with a first code), or remove it."""
        await self._store.execute(
            "UPDATE portal_recipients SET totp_secret = ?, totp_enabled_at = ? WHERE address = ?",
            (
                secret,
                self._clock() if enabled and secret is not None else None,
                address,
            ),
        )

    async def touch_login(self, address: str) -> None:
        """Record a successful sign-in."""
        await self._store.execute(
            "UPDATE portal_recipients SET last_login_at = ? WHERE address = ?",
            (self._clock(), address),
        )

    async def mark_read_notified(self, message_id: str, tx: Executor | None = None) -> bool:
        """Claim the one read notification of a message; False if it was sent already."""
        runner = tx or self._store
        changed = await runner.execute(
            "UPDATE portal_messages SET read_notified_at = ? "
            "WHERE id = ? AND read_notified_at IS NULL",
            (self._clock(), message_id),
        )
        return changed > 0

    async def release_read_notified(self, message_id: str) -> None:
        """Give the claim back after the notification could not be sent."""
        await self._store.execute(
            "UPDATE portal_messages SET read_notified_at = NULL WHERE id = ?", (message_id,)
        )
