"""Whether the sender already encrypted a message end to end (OpenPGP or S/MIME).

Such a message leaves as it is: a second layer of encryption would only keep
its recipient from reading it. What the headers claim is checked against the
body, cheaply, so that a mislabelled plaintext message is not waved through:

- PGP/MIME (RFC 3156 section 4): multipart/encrypted with
  protocol="application/pgp-encrypted", a first part of that type and a second
  part that is one ASCII-armoured PGP MESSAGE.
- S/MIME (RFC 8551 section 3.3): application/pkcs7-mime (or x-pkcs7-mime) with
  smime-type enveloped-data or authEnveloped-data (or no smime-type and a .p7m
  name), whose whole body is a CMS ContentInfo of that content type.
- Inline PGP: a text/plain message whose whole body is one PGP MESSAGE block.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import quopri
import re
from email.message import Message
from typing import Literal

from asn1crypto import cms  # type: ignore[import-untyped]

Sealed = Literal["pgp", "smime"]

_PKCS7_MIME = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_SMIME_ENCRYPTED = ("enveloped-data", "authenveloped-data")
# id-envelopedData (RFC 5652) and id-ct-authEnvelopedData (RFC 5083).
_ENVELOPED_OIDS = ("1.2.840.113549.1.7.3", "1.2.840.113549.1.9.16.1.23")
_PGP_BEGIN = b"-----BEGIN PGP MESSAGE-----"
_PGP_END = b"-----END PGP MESSAGE-----"
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def already_encrypted(data: bytes) -> Sealed | None:
    """How the sender encrypted the whole message ("pgp" or "smime"), or None."""
    head, body = _split(data)
    headers = _headers(head)
    ctype = headers.get_content_type()
    if ctype == "multipart/encrypted":
        protocol = _param(headers, "protocol")
        if protocol == "application/pgp-encrypted" and _pgp_mime(body, headers.get_boundary()):
            return "pgp"
        return None
    if ctype in _PKCS7_MIME:
        kind = _param(headers, "smime-type")
        name = str(headers.get_filename() or headers.get_param("name") or "").lower()
        if kind in _SMIME_ENCRYPTED or (not kind and name.endswith(".p7m")):
            return "smime" if _cms_enveloped(headers, body) else None
        return None
    if ctype == "text/plain" and _starts_armoured(headers, body):
        return "pgp" if _armoured(_decoded(headers, body)) else None
    return None


def _starts_armoured(headers: Message, body: bytes) -> bool:
    """A cheap look at the start of the body, so that ordinary text is never decoded whole."""
    cte = str(headers.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        head = re.sub(rb"\s+", b"", body[:512])[:64]
        head = head[: len(head) - len(head) % 4]
        try:
            return base64.b64decode(head).lstrip().startswith(_PGP_BEGIN)
        except (binascii.Error, ValueError):
            return False
    return body.lstrip().startswith(_PGP_BEGIN)


def _split(entity: bytes) -> tuple[bytes, bytes]:
    if entity.startswith((b"\r\n", b"\n")):
        return b"", entity[2 if entity.startswith(b"\r\n") else 1 :]
    m = _HEADER_END.search(entity)
    if m is None:
        return entity, b""
    return entity[: m.start()], entity[m.end() :]


def _headers(head: bytes) -> Message:
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head + b"\r\n")


def _param(headers: Message, name: str) -> str:
    value = headers.get_param(name, "", header="content-type")
    return str(value if isinstance(value, str) else "").strip().lower()


def _parts(body: bytes, boundary: str | None) -> list[bytes] | None:
    """The body parts of a complete multipart body (RFC 2046 section 5.1.1), else None."""
    if not boundary or not boundary.isascii():
        return None
    pattern = re.compile(
        rb"(?:^|\r?\n)--" + re.escape(boundary.encode("ascii")) + rb"(--)?[ \t]*(?:\r?\n|$)"
    )
    parts: list[bytes] = []
    start: int | None = None
    for m in pattern.finditer(body):
        if start is not None:
            parts.append(body[start : m.start()])
        if m.group(1):
            return parts
        start = m.end()
    return None  # no close delimiter: truncated or not MIME


def _pgp_mime(body: bytes, boundary: str | None) -> bool:
    parts = _parts(body, boundary)
    if parts is None or len(parts) != 2:
        return False
    control_head, _ = _split(parts[0])
    if _headers(control_head).get_content_type() != "application/pgp-encrypted":
        return False
    data_head, data_body = _split(parts[1])
    return _armoured(_decoded(_headers(data_head), data_body))


def _decoded(headers: Message, body: bytes) -> bytes:
    cte = str(headers.get("Content-Transfer-Encoding", "")).strip().lower()
    try:
        if cte == "base64":
            return base64.b64decode(re.sub(rb"\s+", b"", body), validate=True)
        if cte == "quoted-printable":
            return quopri.decodestring(body)
    except (binascii.Error, ValueError):
        return b""
    return body


def _armoured(text: bytes) -> bool:
    """Whether text is exactly one ASCII-armoured PGP MESSAGE and nothing else."""
    text = text.strip()
    return (
        text.startswith(_PGP_BEGIN)
        and text.endswith(_PGP_END)
        and text.count(b"-----BEGIN PGP") == 1
        and text.count(b"-----END PGP") == 1
    )


def _cms_enveloped(headers: Message, body: bytes) -> bool:
    """Whether the whole body is a CMS EnvelopedData or AuthEnvelopedData structure."""
    cte = str(headers.get("Content-Transfer-Encoding", "")).strip().lower()
    der = _decoded(headers, body) if cte == "base64" else body
    if not der:
        return False
    try:
        info = cms.ContentInfo.load(der, strict=True)
        return info["content_type"].dotted in _ENVELOPED_OIDS
    except (ValueError, TypeError, KeyError):
        return False
