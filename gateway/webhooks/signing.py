"""The X-Sealgate-Signature header: HMAC-SHA256 over the timestamp and the body.

`t=TIMESTAMP,v1=HEX` where HEX is HMAC-SHA256(secret, f"{t}.{body}"). The
timestamp lets a receiver refuse replays older than a few minutes; the body
is signed exactly as sent (bytes), so receivers must verify before parsing.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Sealgate-Signature"
# A receiver's default tolerance for the signed timestamp.
TOLERANCE = 300.0


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The header value for a body sent at timestamp (Unix seconds)."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: bytes,
    header: str,
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> bool:
    """True when header is a valid signature of body made within tolerance of now."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    stamps = parts.get("t", [])
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).rpartition("v1=")[2]
    # Any v1 may match: a receiver sees two while a secret is being rotated.
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))
