"""MIME plumbing that never raises: parsing, header decoding, facts about a part.

The email package is asked for structure only; header values are decoded here
from their raw form (RFC 2047 words, raw 8-bit UTF-8, unknown charsets), since
the structured header parser can raise on hostile input and is slow on long
address lists.
"""

from __future__ import annotations

import binascii
import quopri
import re
from dataclasses import dataclass
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser

from policies.extract.normalize import decode_bytes

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_RAW_CTYPE = re.compile(r"^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+)")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]+")


def parse(raw: bytes) -> Message:
    """Parse a message; structural defects are recorded by the email package, not raised.

    The compat32 policy builds the same tree without running the structured
    header parser on every header of every part, which took most of the time
    of small messages; header values are decoded here, from their raw form.
    """
    return BytesParser(policy=policy.compat32).parsebytes(raw)


def _unescape_8bit(value: str) -> str:
    """Undo the parser's surrogateescape of raw 8-bit header bytes (SMTPUTF8 or sloppy clients)."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    return decode_bytes(value.encode("utf-8", "surrogateescape"))


def decode_value(raw: str) -> str:
    """Decode a raw header value: unfold, RFC 2047 words in any charset, 8-bit bytes."""
    value = _unescape_8bit(_FOLD.sub("", raw))
    if "=?" not in value:
        return value
    try:
        chunks = decode_header(value)
    except (HeaderParseError, ValueError, LookupError):
        return value
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        elif charset is None:
            # decode_header re-encodes plain runs with raw-unicode-escape.
            out.append(chunk.decode("raw-unicode-escape", "replace"))
        else:
            out.append(decode_bytes(chunk, charset))
    return "".join(out)


def raw_headers(message: Message) -> list[tuple[str, str]]:
    """Header (name, raw value) pairs without invoking the structured header parser."""
    try:
        return [(str(name), str(value)) for name, value in message.raw_items()]
    except Exception:
        return []


@dataclass(frozen=True)
class PartFacts:
    """What the headers of one MIME entity say about it."""

    content_type: str
    charset: str | None
    filename: str
    disposition: str
    flowed: bool
    delsp: bool
    smime_type: str


def _raw_content_type(part: Message) -> str:
    for name, value in raw_headers(part):
        if name.lower() == "content-type":
            match = _RAW_CTYPE.match(value)
            if match:
                return match.group(1).lower()
    return "application/octet-stream"


def _param(part: Message, name: str) -> str:
    try:
        value = part.get_param(name)
    except Exception:
        return ""
    if isinstance(value, tuple):  # RFC 2231 (charset, language, value)
        value = value[2]
    return str(value) if value else ""


def facts(part: Message) -> PartFacts:
    """Content type, charset, filename and disposition of one entity, with safe fallbacks."""
    try:
        content_type = part.get_content_type()
    except Exception:
        content_type = _raw_content_type(part)
    if not _RAW_CTYPE.fullmatch(content_type):
        # compat32 keeps a comment ("text/html (generated)") in the type.
        content_type = _raw_content_type(part)
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    try:
        filename = part.get_filename() or ""
    except Exception:
        filename = ""
    if "=?" in filename:
        # Outlook and others put RFC 2047 words inside quoted parameters.
        filename = decode_value(filename)
    try:
        disposition = part.get_content_disposition() or ""
    except Exception:
        disposition = ""
    return PartFacts(
        content_type=content_type,
        charset=charset,
        filename=filename,
        disposition=disposition,
        flowed=_param(part, "format").lower() == "flowed",
        delsp=_param(part, "delsp").lower() == "yes",
        smime_type=_param(part, "smime-type"),
    )


def transfer_encoding(part: Message) -> str:
    """The part's Content-Transfer-Encoding, lowercased ("" when absent)."""
    for name, value in raw_headers(part):
        if name.lower() == "content-transfer-encoding":
            return value.strip().lower()
    return ""


def decode_transfer(text: bytes, encoding: str) -> bytes:
    """Decode base64 (ignoring stray characters) or quoted-printable bytes."""
    if encoding == "base64":
        return binascii.a2b_base64(_NOT_BASE64.sub(b"", text) + b"==")
    return quopri.decodestring(text)


def serialized_size(message: Message) -> int:
    """The size of a parsed message as bytes, or 0 when it cannot be serialised."""
    try:
        return len(message.as_bytes())
    except Exception:
        return 0
