"""Decide how to read a blob: content signatures first, then the declared type and filename.

Senders' labels lie (a PDF sent as text/plain, a spreadsheet as
application/octet-stream), so magic bytes win over Content-Type; the label only
decides among formats that have no signature (HTML, CSV, calendar, text).
"""

from __future__ import annotations

import enum
import posixpath

from policies.extract.normalize import looks_like_text


class Format(enum.Enum):
    """What a blob is, as far as extraction cares."""

    EMPTY = "empty"
    TEXT = "text"
    HTML = "html"
    CSV = "csv"
    TSV = "tsv"
    CALENDAR = "calendar"
    RTF = "rtf"
    PDF = "pdf"
    ZIP = "zip"
    GZIP = "gzip"
    MESSAGE = "message"
    IMAGE = "image"
    ENCRYPTED = "encrypted"  # PGP/S-MIME encrypted data, password-protected Office files
    SIGNATURE = "signature"  # detached signatures: no content of their own
    UNSUPPORTED = "unsupported"


_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_TNEF = b"\x78\x9f\x3e\x22"
_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",
    b"MM\x00*",
    b"\x00\x00\x01\x00",  # .ico
)
_OTHER_ARCHIVES = (
    b"Rar!\x1a\x07",
    b"7z\xbc\xaf\x27\x1c",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"\x28\xb5\x2f\xfd",  # zstd
    b"MSCF",  # cabinet
)
_ISO_BMFF_IMAGES = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")
_ENCRYPTED_TEXT = (b"-----BEGIN PGP MESSAGE-----", b"-----BEGIN ENCRYPTED")

_BY_EXTENSION = {
    ".htm": Format.HTML,
    ".html": Format.HTML,
    ".xhtml": Format.HTML,
    ".csv": Format.CSV,
    ".tsv": Format.TSV,
    ".tab": Format.TSV,
    ".ics": Format.CALENDAR,
    ".ifb": Format.CALENDAR,
    ".rtf": Format.RTF,
    ".eml": Format.MESSAGE,
}
_BY_TYPE = {
    "text/html": Format.HTML,
    "application/xhtml+xml": Format.HTML,
    "text/csv": Format.CSV,
    "application/csv": Format.CSV,
    "text/comma-separated-values": Format.CSV,
    "text/tab-separated-values": Format.TSV,
    "text/calendar": Format.CALENDAR,
    "application/ics": Format.CALENDAR,
    "text/rtf": Format.RTF,
    "application/rtf": Format.RTF,
    "message/rfc822": Format.MESSAGE,
    "message/global": Format.MESSAGE,
}
_SIGNATURE_TYPES = frozenset(
    (
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
        "application/pgp-signature",
    )
)
_ENCRYPTED_TYPES = frozenset(("application/pgp-encrypted",))
_SMIME_TYPES = frozenset(("application/pkcs7-mime", "application/x-pkcs7-mime"))
_UNSUPPORTED_TYPES = frozenset(
    ("application/ms-tnef", "application/vnd.ms-tnef", "message/partial", "message/external-body")
)


def _plausible_signature(data: bytes) -> bool:
    """A detached signature is DER (a SEQUENCE) or ASCII-armoured, nothing else."""
    head = data.lstrip()[:64]
    return head.startswith(b"0\x82") or head.startswith(b"-----BEGIN PGP SIGNATURE")


def sniff(data: bytes, filename: str, content_type: str, smime_type: str = "") -> Format:
    """Classify a decoded part or archive member."""
    if not data.strip():
        return Format.EMPTY
    head = data[:1024]
    content_type = content_type.lower()
    extension = posixpath.splitext(filename.lower())[1]
    if head.startswith(b"%PDF-"):
        return Format.PDF
    if b"%PDF-" in head and (extension == ".pdf" or content_type == "application/pdf"):
        # Readers accept junk before the header; only trust that when it claims to be a PDF.
        return Format.PDF
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return Format.ZIP
    if head.startswith(b"\x1f\x8b"):
        return Format.GZIP
    if head.startswith(_OLE):
        # Password-protected OOXML files are OLE containers holding "EncryptionInfo".
        if "EncryptionInfo".encode("utf-16-le") in data[: 1 << 20]:
            return Format.ENCRYPTED
        return Format.UNSUPPORTED
    if head.startswith(_TNEF) or head.startswith(_OTHER_ARCHIVES):
        return Format.UNSUPPORTED
    if head.startswith(b"{\\rtf"):
        return Format.RTF
    if head.startswith(_IMAGE_MAGIC):
        return Format.IMAGE
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Format.IMAGE
    if head[4:8] == b"ftyp" and head[8:12] in _ISO_BMFF_IMAGES:
        return Format.IMAGE
    if head.lstrip().startswith(_ENCRYPTED_TEXT):
        return Format.ENCRYPTED

    if content_type in _SIGNATURE_TYPES and _plausible_signature(data):
        return Format.SIGNATURE
    if content_type in _SMIME_TYPES:
        # enveloped-data is encrypted; signed-data wraps content we cannot unpack.
        if "enveloped" in smime_type.lower():
            return Format.ENCRYPTED
        return Format.UNSUPPORTED
    if content_type in _ENCRYPTED_TYPES:
        # The "Version: 1" control part of PGP/MIME; the ciphertext is its sibling.
        return Format.EMPTY if data.strip().lower().startswith(b"version:") else Format.ENCRYPTED
    if content_type in _UNSUPPORTED_TYPES or filename.lower() == "winmail.dat":
        return Format.UNSUPPORTED
    declared = _BY_TYPE.get(content_type) or _BY_EXTENSION.get(extension)
    if declared is not None:
        return declared
    lowered = head.lstrip()[:64].lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return Format.HTML
    if lowered.startswith(b"begin:vcalendar"):
        return Format.CALENDAR
    if content_type.startswith("image/") and not content_type.startswith("image/svg"):
        return Format.IMAGE
    # A declared text type with no binary signature is read as text, whatever its
    # bytes look like (ISO-2022 escapes, UTF-16 without a BOM, odd control bytes).
    if content_type.startswith("text/") or looks_like_text(data):
        return Format.TEXT
    return Format.UNSUPPORTED


# Content types for archive members, by extension: informational only (what the
# sender would have declared), so a short table of what mail carries is enough.
# A fixed table rather than `mimetypes`, whose answers depend on the host's files.
_MEMBER_TYPES = {
    ".pdf": "application/pdf",
    ".txt": "text/plain",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".htm": "text/html",
    ".html": "text/html",
    ".xml": "application/xml",
    ".json": "application/json",
    ".rtf": "application/rtf",
    ".ics": "text/calendar",
    ".eml": "message/rfc822",
    ".zip": "application/zip",
    ".gz": "application/gzip",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
    ".doc": "application/msword",
    ".xls": "application/vnd.ms-excel",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


def guess_type(filename: str) -> str:
    """A content type for a file that came without one (archive members, embedded files)."""
    extension = posixpath.splitext(filename.lower())[1]
    return _MEMBER_TYPES.get(extension, "application/octet-stream")
