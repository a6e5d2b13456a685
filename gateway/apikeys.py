"""API keys for the HTTP API: made once, stored hashed, scoped, revocable.

A key reads `sgk_<key id>_<secret>`: the key id is public (listings, logs,
audit records, `sealgate apikey revoke`), the secret is 256 random bits. Only
SHA-256 of the whole key is stored. A slow password hash (argon2) protects
guessable human passwords against a stolen database; a 256-bit random secret
cannot be guessed, so one SHA-256 is as safe and keeps each request's check to
microseconds instead of an argon2 run per call. Keys live in the shared store,
so every API node sees a revocation at the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from gateway.config import SenderPattern
from gateway.inbound.relay import sender_matches
from gateway.store.base import Row, Store

Scope = Literal["send", "status", "quarantine", "portal", "queue"]
SCOPES: tuple[Scope, ...] = ("send", "status", "quarantine", "portal", "queue")
PREFIX = "sgk_"
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_ID_LEN = 12
_KEY_RE = re.compile(r"^sgk_([0-9a-hjkmnp-tv-z]{12})_([A-Za-z0-9_-]{43})$")
_ID_RE = re.compile(r"^(?:sgk_)?([0-9a-hjkmnp-tv-z]{12})$")
_SENDER = TypeAdapter(SenderPattern)
# last_used_at is written at most this often per key: not a database write per request.
TOUCH_INTERVAL = 60.0


class ApiKeyError(Exception):
    """A key cannot be made or changed as asked; the message says why."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    name: str
    scopes: frozenset[str]
    senders: tuple[str, ...]
    created_at: float
    created_by: str
    revoked_at: float | None = None
    revoked_by: str | None = None
    last_used_at: float | None = None

    def allows(self, scope: Scope) -> bool:
        """True when the key carries scope."""
        return scope in self.scopes

    def may_send_as(self, address: str) -> bool:
        """True when the key may use address as the envelope sender."""
        return sender_matches(self.senders, address)

    def sees(self, sender: str | None) -> bool:
        """True when the key may see a message from sender (keys without patterns see all)."""
        if not self.senders or "*" in self.senders:
            return True
        return sender is not None and sender_matches(self.senders, sender)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (listings); never the secret."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "senders": list(self.senders),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
            "revoked_by": self.revoked_by,
            "last_used_at": self.last_used_at,
        }

    @classmethod
    def from_row(cls, row: Row) -> ApiKey:
        """An ApiKey from an api_keys row."""
        senders = json.loads(str(row["senders"]))
        return cls(
            key_id=str(row["key_id"]),
            name=str(row["name"]),
            scopes=frozenset(s for s in str(row["scopes"]).split(",") if s),
            senders=tuple(str(s) for s in senders),
            created_at=float(row["created_at"]),
            created_by=str(row["created_by"]),
            revoked_at=_opt_float(row["revoked_at"]),
            revoked_by=None if row["revoked_by"] is None else str(row["revoked_by"]),
            last_used_at=_opt_float(row["last_used_at"]),
        )


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def key_hash(key: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def parse_key(text: str) -> str | None:
    """The key id of a well-formed key, else None."""
    m = _KEY_RE.match(text)
    return m.group(1) if m else None


def parse_key_id(text: str) -> str:
    """A key id as typed (with or without the sgk_ prefix); ApiKeyError if malformed."""
    m = _ID_RE.match(text.strip().lower())
    if not m:
        raise ApiKeyError(f"{text!r} is not a key id (12 characters, as `apikey list` shows)")
    return m.group(1)


def parse_scopes(items: Iterable[str]) -> frozenset[Scope]:
    """Scopes from "send,status" style words; ApiKeyError names an unknown one."""
    out: set[Scope] = set()
    for item in items:
        for word in item.split(","):
            word = word.strip().lower()
            if not word:
                continue
            scope = next((s for s in SCOPES if s == word), None)
            if scope is None:
                raise ApiKeyError(f"unknown scope {word!r}; choose from {', '.join(SCOPES)}")
            out.add(scope)
    if not out:
        raise ApiKeyError(f"give at least one scope: {', '.join(SCOPES)}")
    return frozenset(out)


def parse_senders(items: Iterable[str]) -> tuple[str, ...]:
    """Validated sender patterns ("user@domain", "@domain", "*")."""
    out: list[str] = []
    for item in items:
        try:
            out.append(_SENDER.validate_python(item))
        except ValidationError:
            raise ApiKeyError(
                f'{item!r} is not a sender pattern: "user@domain", "@domain" or "*"'
            ) from None
    return tuple(dict.fromkeys(out))


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LEN))


async def create(
    store: Store,
    name: str,
    scopes: Iterable[Scope],
    senders: Sequence[str],
    actor: str,
    *,
    now: float | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key; returns it and the full key text, which exists nowhere else."""
    name = name.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise ApiKeyError("give a name of 1 to 200 printable characters")
    scope_set = frozenset(scopes)
    if not scope_set:
        raise ApiKeyError(f"give at least one scope: {', '.join(SCOPES)}")
    if "send" in scope_set and not senders:
        raise ApiKeyError('a key with scope send needs --sender (e.g. "@clinic.example" or "*")')
    key_id = _new_id()
    secret = secrets.token_urlsafe(32)  # 256 bits, 43 characters
    text = f"{PREFIX}{key_id}_{secret}"
    at = time.time() if now is None else now
    await store.execute(
        "INSERT INTO api_keys (key_id, name, key_hash, scopes, senders, created_at, "
        "created_by, revoked_at, revoked_by, last_used_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
        (
            key_id,
            name,
            key_hash(text),
            ",".join(sorted(scope_set)),
            json.dumps(list(senders)),
            at,
            actor,
        ),
    )
    key = ApiKey(key_id, name, scope_set, tuple(senders), at, actor)
    return key, text


_COLUMNS = (
    "key_id, name, scopes, senders, created_at, created_by, revoked_at, revoked_by, last_used_at"
)


async def list_keys(store: Store) -> list[ApiKey]:
    """Every key, revoked ones too, oldest first."""
    rows = await store.fetchall(
        f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id"  # noqa: S608 - constant
    )
    return [ApiKey.from_row(r) for r in rows]


async def revoke(store: Store, key_id: str, actor: str, *, now: float | None = None) -> bool | None:
    """Revoke a key: True if revoked now, False if it already was, None if there is none."""
    at = time.time() if now is None else now
    changed = await store.execute(
        "UPDATE api_keys SET revoked_at = ?, revoked_by = ? "
        "WHERE key_id = ? AND revoked_at IS NULL",
        (at, actor, key_id),
    )
    if changed:
        return True
    row = await store.fetchone("SELECT key_id FROM api_keys WHERE key_id = ?", (key_id,))
    return None if row is None else False


async def authenticate(store: Store, presented: str) -> ApiKey | None:
    """The live key matching presented, or None (malformed, unknown, revoked or wrong secret)."""
    key_id = parse_key(presented)
    if key_id is None:
        return None
    row = await store.fetchone(
        f"SELECT {_COLUMNS}, key_hash FROM api_keys WHERE key_id = ?",  # noqa: S608 - constant
        (key_id,),
    )
    if row is None or row["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(str(row["key_hash"]), key_hash(presented)):
        return None
    return ApiKey.from_row(row)


async def touch(store: Store, key: ApiKey, *, now: float | None = None) -> None:
    """Record that key was used (at most once per TOUCH_INTERVAL)."""
    at = time.time() if now is None else now
    if key.last_used_at is not None and at - key.last_used_at < TOUCH_INTERVAL:
        return
    await store.execute("UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", (at, key.key_id))
