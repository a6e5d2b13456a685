"""Recipients' passwords (argon2id) and TOTP second factors (RFC 6238, via pyotp).

Hashing is deliberately slow, so it runs in a thread, never on the event loop.
TOTP secrets are sealed under the master key before they reach the database.
"""

from __future__ import annotations

import asyncio

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.sealing import MasterKey, SealError

MIN_PASSWORD = 10
MAX_PASSWORD = 1024

_HASHER = PasswordHasher()
_TOTP_AAD = b"sealgate portal totp\n"


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable, in plain words; None when it is."""
    if len(password) < MIN_PASSWORD:
        return f"Use at least {MIN_PASSWORD} characters."
    if len(password) > MAX_PASSWORD:
        return "That password is too long."
    if len(set(password)) < 4:
        return "Use a password that is harder to guess."
    return None


async def hash_password(password: str) -> str:
    """An argon2id hash of password."""
    return await asyncio.to_thread(_HASHER.hash, password)


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def check_password(stored: str | None, password: str) -> bool:
    """Whether password matches the stored hash (always spends the hashing time)."""
    if stored is None or len(password) > MAX_PASSWORD:
        # Same cost as a real check, so timing does not tell who has a password.
        await asyncio.to_thread(_verify, _DUMMY_HASH, password[:MAX_PASSWORD])
        return False
    return await asyncio.to_thread(_verify, stored, password)


_DUMMY_HASH = _HASHER.hash("sealgate portal: no password set")


def new_totp_secret() -> str:
    """A fresh base32 TOTP secret."""
    return pyotp.random_base32()


def totp_uri(secret: str, address: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app reads (shown as text to type in)."""
    return pyotp.TOTP(secret).provisioning_uri(name=address, issuer_name=issuer)


def check_totp(secret: str, code: str) -> bool:
    """Whether code is the current TOTP code (one step of clock drift either way)."""
    clean = "".join(c for c in code if c.isdigit())
    if len(clean) != 6:
        return False
    return pyotp.TOTP(secret).verify(clean, valid_window=1)


def seal_totp(master: MasterKey, address: str, secret: str) -> bytes:
    """The TOTP secret sealed for storage, bound to the address."""
    return master.seal(secret.encode("ascii"), _TOTP_AAD + address.encode("utf-8"))


def open_totp(master: MasterKey, address: str, sealed: bytes) -> str | None:
    """The stored TOTP secret, or None when it cannot be opened."""
    try:
        return master.unseal(sealed, _TOTP_AAD + address.encode("utf-8")).decode("ascii")
    except (SealError, UnicodeDecodeError):
        return None
