"""The S/MIME enveloped form of a message (RFC 8551 section 3.3): CMS EnvelopedData, AES.

The encrypted content is the original message's MIME entity: its content
headers and body byte for byte, in canonical form (CRLF line ends), with the
original Subject, From, To, Cc and Date repeated inside, so that the real
subject travels only inside the encryption when the outside shows a neutral
one. The outer message keeps the original's other header fields.
"""

from __future__ import annotations

import base64
import re
from email.header import Header
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

Cipher = Literal["aes256", "aes128"]  # as encryption.smime.cipher
_CIPHERS: dict[str, pkcs7.ContentEncryptionAlgorithm] = {
    "aes256": algorithms.AES256,
    "aes128": algorithms.AES128,
}
# Header fields that describe the original body; they go inside with it.
_CONTENT_PREFIX = b"content-"
_DROPPED_OUTSIDE = {b"mime-version", b"bcc"}
# Copied inside as well, so the recipient's client shows the real ones (RFC 7508 spirit).
_COPIED_INSIDE = (b"subject", b"from", b"to", b"cc", b"date")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_FIELD_START = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def split_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """Header fields as (lowercase name, raw field bytes with folding and line end)."""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
            continue
        m = _FIELD_START.match(line)
        if m is None:
            continue  # not a header field (a stray line); it has no place in either entity
        fields.append((m.group(1).lower(), line))
    return [(name, _crlf(raw if raw.endswith(b"\n") else raw + b"\r\n")) for name, raw in fields]


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """Header block (with its last line end) and body of a message."""
    if data.startswith((b"\r\n", b"\n")):
        return b"", data[2 if data.startswith(b"\r\n") else 1 :]
    m = _HEADER_END.search(data)
    if m is None:
        return data, b""
    # Keep the line end of the last field with the header block.
    end = m.start() + (2 if data[m.start() : m.start() + 2] == b"\r\n" else 1)
    return data[:end], data[m.end() :]


def _crlf(data: bytes) -> bytes:
    return _BARE_LF.sub(b"\r\n", data)


def _subject_field(subject: str) -> bytes:
    """A Subject field for a subject from the configuration (encoded when not ASCII)."""
    subject = " ".join(subject.split())  # no line breaks can reach the header
    if subject.isascii():
        return f"Subject: {subject}\r\n".encode("ascii")
    return b"Subject: " + Header(subject, "utf-8").encode(linesep="\r\n").encode("ascii") + b"\r\n"


def inner_entity(data: bytes) -> bytes:
    """The MIME entity to encrypt: content headers, copied fields, body, all CRLF."""
    head, body = split_message(data)
    fields = split_fields(head)
    inner = [raw for name, raw in fields if name.startswith(_CONTENT_PREFIX)]
    if not any(name == b"content-type" for name, _ in fields):
        inner.insert(0, b"Content-Type: text/plain; charset=us-ascii\r\n")
    inner.extend(raw for name, raw in fields if name in _COPIED_INSIDE)
    return b"".join(inner) + b"\r\n" + _crlf(body)


def outer_fields(data: bytes, subject: str | None) -> bytes:
    """The original's header fields that stay outside, with the neutral subject if given."""
    head, _ = split_message(data)
    out: list[bytes] = []
    replaced = False
    for name, raw in split_fields(head):
        if name.startswith(_CONTENT_PREFIX) or name in _DROPPED_OUTSIDE:
            continue
        if name == b"subject" and subject is not None:
            if not replaced:
                out.append(_subject_field(subject))
                replaced = True
            continue
        out.append(raw)
    if subject is not None and not replaced:
        out.append(_subject_field(subject))
    return b"".join(out)


def encrypt(content: bytes, cert: x509.Certificate, cipher: Cipher) -> bytes:
    """CMS EnvelopedData (DER) of content for one recipient certificate."""
    builder = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(content)
        .add_recipient(cert)
        .set_content_encryption_algorithm(_CIPHERS[cipher])
    )
    # Binary: the content is already canonical MIME; the builder must not rewrite it.
    return builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


def envelope(data: bytes, cert: x509.Certificate, cipher: Cipher, subject: str | None) -> bytes:
    """The outgoing message: outer header fields and the base64 application/pkcs7-mime body."""
    der = encrypt(inner_entity(data), cert, cipher)
    b64 = base64.encodebytes(der).replace(b"\n", b"\r\n")
    return (
        outer_fields(data, subject)
        + b"MIME-Version: 1.0\r\n"
        + b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
        + b"Content-Transfer-Encoding: base64\r\n"
        + b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        + b"Content-Description: S/MIME Encrypted Message\r\n"
        + b"\r\n"
        + b64
    )
