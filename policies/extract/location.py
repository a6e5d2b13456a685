"""Locations name attachments by position and type, never by their file names.

A file name is often about the patient ("John_Smith_MRN44812.pdf"), and
locations leave the engine: decisions, logs, audit records, `sealgate scan`.
So an attachment is `attachment 3 (.pdf)` (the message's third MIME part, a
PDF), an archive member `member 2 (.csv)`, a file inside a PDF or an Office
document `embedded 1 (.xlsx)`, a spreadsheet's sheet `sheet 2`; the structure
below them is kept (`/page 4`, `/sheet 1/row 12`, `/body/1 text/plain`). The
type comes from a fixed list of known extensions, so nothing the sender wrote
is copied: an unknown extension is simply left out.
"""

from __future__ import annotations

import mimetypes
import posixpath

# Extensions worth showing, beyond the standard library's table.
_EXTRA = (
    ".docx", ".xlsx", ".pptx", ".docm", ".xlsm", ".odt", ".ods", ".odp", ".rtf", ".csv", ".tsv",
    ".eml", ".msg", ".mbox", ".ics", ".vcf", ".zip", ".gz", ".tgz", ".7z", ".rar", ".tar", ".p7m",
    ".p7s", ".asc", ".gpg", ".pgp", ".heic", ".dcm", ".md", ".log", ".json", ".xml", ".htm",
    ".dat",
)  # fmt: skip
_KNOWN = frozenset(mimetypes.types_map) | frozenset(mimetypes.common_types) | frozenset(_EXTRA)


def file_type(filename: str, content_type: str = "") -> str:
    """ " (.pdf)" for a known extension (or, without one, a known content type), else ""."""
    ext = posixpath.splitext(filename.replace("\\", "/").rstrip(". "))[1].lower()
    if not ext and content_type:
        ext = mimetypes.guess_extension(content_type.lower(), strict=False) or ""
    return f" ({ext})" if ext in _KNOWN else ""


def attachment(prefix: str, number: int, filename: str, content_type: str = "") -> str:
    """`attachment 3 (.pdf)`: the message's part `number`, below `prefix` ("" or "x/")."""
    return f"{prefix}attachment {number}{file_type(filename, content_type)}"


def member(container: str, number: int, filename: str) -> str:
    """`<container>/member 2 (.csv)`: a file in an archive."""
    return f"{container}/member {number}{file_type(filename)}"


def embedded(container: str, number: int, filename: str) -> str:
    """`<container>/embedded 1 (.xlsx)`: a file inside a PDF or an Office document."""
    return f"{container}/embedded {number}{file_type(filename)}"
