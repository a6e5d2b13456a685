"""PGP/MIME (RFC 3156) around an original message: what goes inside the encryption and out.

Inside: the original message's MIME entity (its Content-* fields and body, byte
for byte) with the original Subject, From, To, Cc, Date, ... as protected
headers (draft-autocrypt-lamps-protected-headers, "v1"), so a reader's client
shows the real subject after decryption.

Outside: the original header fields except the content fields, Bcc and
DKIM-Signature (the body it covers changes), with a neutral Subject when the
caller gives one, and a multipart/encrypted body (RFC 3156 section 4).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from email.header import Header

# Fields copied into the encrypted part so that they survive decryption intact.
_PROTECTED = (
    "subject",
    "from",
    "to",
    "cc",
    "date",
    "message-id",
    "reply-to",
    "in-reply-to",
    "references",
)
# Never shown outside: Bcc would reveal the other blind recipients (RFC 5322 3.6.3).
_DROPPED_OUTSIDE = ("content-", "mime-version", "bcc", "dkim-signature")
_DEFAULT_TYPE = b'Content-Type: text/plain; charset=us-ascii; protected-headers="v1"\r\n'
_PREAMBLE = b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156).\r\n"
_LINE_END = re.compile(rb"\r?\n")


@dataclass(frozen=True)
class Field:
    """One header field as it was sent: lower-cased name and raw bytes (CRLF-terminated)."""

    name: str
    raw: bytes


def _crlf(data: bytes) -> bytes:
    return _LINE_END.sub(b"\r\n", data)


def split_message(data: bytes) -> tuple[list[Field], bytes]:
    """The header fields (folding kept) and the body of a message, with CRLF line ends."""
    data = _crlf(data)
    if data.startswith(b"\r\n"):
        head, body = b"", data[2:]
    else:
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            head, body = data.removesuffix(b"\r\n"), b""
        head += b"\r\n"
    fields: list[Field] = []
    for line in head.split(b"\r\n")[:-1]:
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            last = fields[-1]
            fields[-1] = Field(last.name, last.raw + line + b"\r\n")
            continue
        name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        fields.append(Field(name, line + b"\r\n"))
    return fields, body


def _subject_field(subject: str) -> bytes:
    text = " ".join(subject.split())
    if text.isascii():
        return f"Subject: {text}\r\n".encode("ascii")
    encoded = Header(text, "utf-8", header_name="Subject").encode(linesep="\r\n")
    return f"Subject: {encoded}\r\n".encode("ascii")


def _mark_protected(content_type: bytes) -> bytes:
    if b"protected-headers" in content_type.lower():
        return content_type
    return content_type.removesuffix(b"\r\n") + b';\r\n protected-headers="v1"\r\n'


def inner_entity(data: bytes) -> bytes:
    """What gets encrypted: the original MIME entity plus the protected header fields."""
    fields, body = split_message(data)
    content = [f for f in fields if f.name.startswith("content-")]
    types = [f for f in content if f.name == "content-type"]
    out = bytearray()
    if types:
        out += _mark_protected(types[0].raw)
    else:
        out += _DEFAULT_TYPE  # RFC 2045 section 5.2: what a message without one is
    for f in content:
        if f.name != "content-type":
            out += f.raw
    for f in fields:
        if f.name in _PROTECTED:
            out += f.raw
    out += b"\r\n" + body
    return bytes(out)


def outer_message(data: bytes, armored: bytes, subject: str | None) -> bytes:
    """The multipart/encrypted message carrying armored (the encrypted inner entity)."""
    fields, _ = split_message(data)
    boundary = "sg-pgp-" + secrets.token_hex(12)
    out = bytearray()
    subject_done = False
    for f in fields:
        if f.name.startswith(_DROPPED_OUTSIDE):
            continue
        if f.name == "subject" and subject is not None:
            if not subject_done:
                out += _subject_field(subject)
                subject_done = True
            continue
        out += f.raw
    if subject is not None and not subject_done:
        out += _subject_field(subject)
    out += b"MIME-Version: 1.0\r\n"
    out += (
        f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        f' boundary="{boundary}"\r\n\r\n'
    ).encode("ascii")
    out += _PREAMBLE
    delimiter = f"--{boundary}\r\n".encode("ascii")
    out += delimiter
    out += b"Content-Type: application/pgp-encrypted\r\n"
    out += b"Content-Description: PGP/MIME version identification\r\n\r\n"
    out += b"Version: 1\r\n\r\n"
    out += delimiter
    out += b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
    out += b"Content-Description: OpenPGP encrypted message\r\n"
    out += b'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n'
    out += _crlf(armored).rstrip(b"\r\n")
    out += f"\r\n--{boundary}--\r\n".encode("ascii")
    return bytes(out)
