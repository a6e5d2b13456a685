"""Keys that senders hand out in their mail: Autocrypt headers and keys attached to signed mail.

Pure parsing, no gpg: gateway.pgp.directory decides what to trust.

Autocrypt Level 1 (section 2.1): one `Autocrypt:` header whose addr matches
the From address; attributes addr and keydata are required, prefer-encrypt
is optional, other names are ignored when they start with "_" and make the
header invalid otherwise; more than one valid header means none is used.

A signed message (RFC 3156 multipart/signed) that carries an
application/pgp-keys part inside what is signed yields that key together with
the signed bytes and the signature, so the caller can check that the key made
the signature.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from email import policy as email_policy
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses

_KNOWN = {"addr", "keydata", "prefer-encrypt"}
_MAX_KEYDATA = 256 * 1024


@dataclass(frozen=True)
class AutocryptKey:
    """The key an Autocrypt header offers for the sender's address."""

    address: str
    keydata: bytes


@dataclass(frozen=True)
class AttachedKey:
    """Key data attached inside a signed message, with what it should have signed."""

    address: str
    keydata: bytes
    signed: bytes
    signature: bytes


def _split(data: bytes) -> tuple[bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, body = data.partition(sep)
        if found:
            return head + sep, body
    return data, b""


def _headers(head: bytes) -> Message:
    return BytesHeaderParser(policy=email_policy.compat32).parsebytes(head)


def sender(msg: Message) -> str | None:
    """The one From address, lower-cased; None when there is not exactly one."""
    values = msg.get_all("From") or []
    if len(values) != 1:
        return None
    addrs = [a for _, a in getaddresses([str(values[0])]) if a]
    if len(addrs) != 1 or "@" not in addrs[0]:
        return None
    return addrs[0].strip().lower()


def parse_autocrypt(value: str) -> tuple[str, bytes] | None:
    """(addr, keydata) of one Autocrypt header value, or None when it is not valid."""
    attrs: dict[str, str] = {}
    for item in "".join(value.splitlines()).split(";"):
        name, sep, val = item.strip().partition("=")
        name = name.strip().lower()
        if not sep or not name:
            return None
        if name in attrs:
            return None
        attrs[name] = val.strip()
    if any(n not in _KNOWN and not n.startswith("_") for n in attrs):
        return None
    addr = attrs.get("addr", "").strip().lower()
    keydata = "".join(attrs.get("keydata", "").split())
    if not addr or "@" not in addr or not keydata or len(keydata) > _MAX_KEYDATA * 4 // 3:
        return None
    try:
        raw = base64.b64decode(keydata, validate=True)
    except (binascii.Error, ValueError):
        return None
    return (addr, raw) if raw else None


def autocrypt_key(data: bytes) -> AutocryptKey | None:
    """The key the message's single valid Autocrypt header offers for its From address."""
    head, _ = _split(data)
    msg = _headers(head)
    if msg.get_content_type() == "multipart/report":
        return None  # Autocrypt section 2.3: not from delivery reports
    address = sender(msg)
    if address is None:
        return None
    valid = [p for p in (parse_autocrypt(str(v)) for v in msg.get_all("Autocrypt") or []) if p]
    if len(valid) != 1:
        return None
    addr, keydata = valid[0]
    if addr != address:
        return None
    return AutocryptKey(address, keydata)


def attached_keys(data: bytes) -> list[AttachedKey]:
    """Keys in application/pgp-keys parts inside the signed part of a multipart/signed message."""
    head, body = _split(data)
    msg = _headers(head)
    if msg.get_content_type() != "multipart/signed":
        return []
    if str(msg.get_param("protocol", "")).lower() != "application/pgp-signature":
        return []
    address = sender(msg)
    boundary = msg.get_boundary()
    if address is None or not boundary:
        return []
    parts = _body_parts(body, boundary.encode("ascii", "replace"))
    if len(parts) != 2:
        return []
    signed, sig_part = parts
    sig_msg = BytesParser(policy=email_policy.compat32).parsebytes(sig_part)
    if sig_msg.get_content_type() != "application/pgp-signature":
        return []
    signature = sig_msg.get_payload(decode=True)
    if not isinstance(signature, bytes) or not signature:
        return []
    inner = BytesParser(policy=email_policy.compat32).parsebytes(signed)
    out: list[AttachedKey] = []
    for part in inner.walk():
        if part.get_content_type() != "application/pgp-keys":
            continue
        keydata = part.get_payload(decode=True)
        if isinstance(keydata, bytes) and keydata and len(keydata) <= _MAX_KEYDATA:
            out.append(AttachedKey(address, keydata, signed, signature))
    return out


def _body_parts(body: bytes, boundary: bytes) -> list[bytes]:
    """The body parts of a multipart body, exactly as sent (RFC 2046 section 5.1.1).

    The CRLF before each delimiter belongs to the delimiter, so the bytes a
    signature covers are everything between the delimiter line and that CRLF.
    """
    text = b"\r\n" + body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    delimiter = b"\r\n--" + boundary
    pieces = text.split(delimiter)
    parts: list[bytes] = []
    closed = False
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            closed = True
            break
        _, crlf, content = piece.partition(b"\r\n")
        if not crlf:
            return []
        parts.append(content)
    return parts if closed else []
