"""SMTP AUTH: decoding PLAIN and LOGIN, checking argon2 hashes off the event loop."""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import secrets
import time
from base64 import b64decode
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError

from gateway.config import SmtpUser

# RFC 4954 §6 / RFC 3463 X.7.8.
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
BAD_BASE64 = "501 5.5.2 Cannot decode response"
BAD_PLAIN = "501 5.5.2 Malformed PLAIN response"

# The LOGIN mechanism's conventional prompts (draft-murchison-sasl-login).
_LOGIN_USER_PROMPT = "Username:"
_LOGIN_PASSWORD_PROMPT = "Password:"  # noqa: S105 - a prompt, not a secret


class Authenticator:
    """Checks account passwords against their argon2 hashes.

    argon2 is deliberately slow, so verification runs in a worker thread. Clients
    that open many connections with one account (applications, benchmarks) would
    pay that cost every time, so recent successes are remembered for a while as a
    keyed hash of (account, password): the plain password is never kept.
    """

    def __init__(
        self,
        users: Sequence[SmtpUser],
        *,
        cache_size: int = 256,
        cache_ttl: float = 300.0,
    ) -> None:
        self._hashes = {u.username: u.password_hash for u in users}
        self._hasher = PasswordHasher()
        # Unknown accounts are checked against a throwaway hash so that a failed
        # login takes as long whether or not the account exists.
        self._decoy = self._hasher.hash(secrets.token_urlsafe(16))
        self._cache_key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl

    @property
    def enabled(self) -> bool:
        """True when there is at least one account to log in to."""
        return bool(self._hashes)

    def _token(self, username: str, password: bytes) -> bytes:
        h = hmac.new(self._cache_key, username.encode(), hashlib.sha256)
        h.update(b"\0")
        h.update(password)
        return h.digest()

    def _cached(self, token: bytes) -> bool:
        expires = self._cache.get(token)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._cache[token]
            return False
        self._cache.move_to_end(token)
        return True

    def _remember(self, token: bytes) -> None:
        self._cache[token] = time.monotonic() + self._cache_ttl
        self._cache.move_to_end(token)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _verify_sync(self, stored: str, password: bytes) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (Argon2Error, InvalidHashError):
            return False

    async def verify(self, username: str, password: bytes) -> bool:
        """True when the password is right for the account."""
        stored = self._hashes.get(username)
        token = self._token(username, password)
        if stored is not None and self._cached(token):
            return True
        ok = await asyncio.to_thread(self._verify_sync, stored or self._decoy, password)
        ok = ok and stored is not None
        if ok:
            self._remember(token)
        return ok


class Credentials:
    """A decoded username and password; the password never appears in repr()."""

    __slots__ = ("password", "username")

    def __init__(self, username: str, password: bytes) -> None:
        self.username = username
        self.password = password

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=...)"


def _b64(text: str | bytes) -> bytes | None:
    try:
        return b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


async def _challenge(server: Any, prompt: str) -> bytes | None:
    """Send a 334 challenge and decode the answer; None after replying with an error."""
    answer = await server.challenge_auth(prompt)
    # aiosmtpd answers "*" and bad base64 itself and returns its MISSING marker.
    return answer if isinstance(answer, bytes) else None


async def _initial_response(server: Any, args: list[str], prompt: str) -> bytes | None:
    """The initial response given with AUTH, else the answer to a challenge."""
    if len(args) < 2:
        return await _challenge(server, prompt)
    if args[1] == "=":  # RFC 4954 §4: "=" is an empty initial response
        return b""
    decoded = _b64(args[1])
    if decoded is None:
        await server.push(BAD_BASE64)
    return decoded


async def read_plain(server: Any, args: list[str]) -> Credentials | None:
    """Decode AUTH PLAIN (RFC 4616); None when a reply has already been sent."""
    decoded = await _initial_response(server, args, "")
    if decoded is None:
        return None
    parts = decoded.split(b"\0")
    if len(parts) != 3:
        await server.push(BAD_PLAIN)
        return None
    authzid, authcid, password = parts
    try:
        username = authcid.decode("utf-8")
        # Acting on behalf of another identity (authzid) is not supported.
        if authzid and authzid.decode("utf-8") != username:
            return Credentials("", b"")
    except UnicodeDecodeError:
        return Credentials("", b"")
    return Credentials(username, password)


async def read_login(server: Any, args: list[str]) -> Credentials | None:
    """Decode AUTH LOGIN; None when a reply has already been sent."""
    user_raw = await _initial_response(server, args, _LOGIN_USER_PROMPT)
    if user_raw is None:
        return None
    password = await _challenge(server, _LOGIN_PASSWORD_PROMPT)
    if password is None:
        return None
    try:
        username = user_raw.decode("utf-8")
    except UnicodeDecodeError:
        return Credentials("", b"")
    return Credentials(username, password)


def hash_password(password: str) -> str:
    """An argon2id hash for smtp.users[].password_hash (argon2-cffi's current defaults)."""
    return PasswordHasher().hash(password)
