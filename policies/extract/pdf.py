"""PDF text with pypdf: page text, form field values, annotations, properties, embedded files.

pypdf is pure Python (a malformed file cannot corrupt memory) and has its own
decompression limits, which are tightened here to our part budget. Page text
comes from `pdftext`, which reads content streams several times faster and
gives pypdf's text, and from pypdf itself for the pages `pdftext` leaves to it. A password
that only restricts printing or copying still lets us read (empty user
password); anything else is `encrypted-pdf`. A page with no text layer but
with images is `image-only` (we do no OCR).
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any

from pypdf import PasswordType, PdfReader, apply_configuration

from policies.extract.context import Context, LimitExceeded, Nested
from policies.extract.location import embedded
from policies.extract.model import SegmentKind
from policies.extract.pdfobject import QuickReader
from policies.extract.pdftext import FontCache, Unsupported, page_text

# pypdf's warnings quote bytes of the file being read, which here is patient
# data; no log record of theirs may reach the gateway's log.
_PYPDF_LOG = logging.getLogger("pypdf")
_PYPDF_LOG.setLevel(logging.CRITICAL + 1)
_PYPDF_LOG.propagate = False

_MAX_XOBJECT_DEPTH = 3
_PAINT_XOBJECT = re.compile(rb"\sDo\b")
_INLINE_BEGIN = re.compile(rb"\bBI\s")
_INLINE_DATA = re.compile(rb"\sID\s")
# Text-showing operators (Tj, TJ, ', ") right after their string or array operand.
_SHOW_TEXT = re.compile(rb"[)\]>]\s*(?:Tj|TJ|'|\")")


def _resolve(obj: Any) -> Any:
    """Follow an indirect reference (pypdf returns them lazily)."""
    getter = getattr(obj, "get_object", None)
    return getter() if getter is not None else obj


def _has_images(resources: Any, depth: int = 0) -> bool:
    """Whether a page's resources draw an image, directly or inside a form XObject."""
    resources = _resolve(resources)
    if not hasattr(resources, "get") or depth > _MAX_XOBJECT_DEPTH:
        return False
    xobjects = _resolve(resources.get("/XObject"))
    if not hasattr(xobjects, "values"):
        return False
    for ref in xobjects.values():
        xobject = _resolve(ref)
        if not hasattr(xobject, "get"):
            continue
        subtype = xobject.get("/Subtype")
        if subtype == "/Image":
            return True
        if subtype == "/Form" and _has_images(xobject.get("/Resources"), depth + 1):
            return True
    return False


def _operators(page: Any) -> bytes | None:
    """The page's decoded content stream: empty when it has none, None when it is broken."""
    contents = page.get_contents()
    if contents is None:
        # A /Contents entry that resolves to nothing is a dangling reference.
        return None if page.get("/Contents") is not None else b""
    return bytes(contents.get_data())


def _draws_image(page: Any, operators: bytes) -> bool:
    """Whether a page paints an image (resources alone prove nothing: pages share them)."""
    if _INLINE_BEGIN.search(operators) and _INLINE_DATA.search(operators):
        return True
    return _PAINT_XOBJECT.search(operators) is not None and _has_images(page.get("/Resources"))


def _annotations(page: Any) -> list[str]:
    """Comment text of a page's annotations (sticky notes, free text boxes)."""
    out = []
    annots = _resolve(page.get("/Annots"))
    if isinstance(annots, list):
        for ref in annots:
            annot = _resolve(ref)
            if hasattr(annot, "get"):
                contents = annot.get("/Contents")
                if contents:
                    out.append(str(contents))
    return out


def _properties(reader: PdfReader) -> list[str]:
    """Document information: title, subject, author, keywords."""
    info = reader.metadata
    if info is None:
        return []
    lines = []
    for key in ("/Title", "/Subject", "/Author", "/Keywords"):
        value = info.get(key)
        if value:
            lines.append(f"{key[1:]}: {value}")
    return lines


def _page_text(page: Any, fonts: FontCache) -> str:
    """The page's text: our reading of the content stream, or pypdf's when that needs it."""
    try:
        return page_text(page, fonts)
    except Unsupported:
        return str(page.extract_text())


def _read(
    reader: PdfReader, location: str, kind: SegmentKind, ctx: Context, nested: Nested
) -> None:
    if reader.is_encrypted:
        try:
            readable = reader.decrypt("") != PasswordType.NOT_DECRYPTED
        except Exception:
            readable = False
        if not readable:
            ctx.skip(location, "encrypted-pdf")
            return
    accounted = False  # some page gave text or was reported unscannable
    drawn = False  # some page paints something (paths) without text or images
    fonts = FontCache()
    for number, page in enumerate(reader.pages, 1):
        ctx.check_time()
        where = f"{location}/page {number}"
        try:
            text = _page_text(page, fonts)
            operators = None if text.strip() else _operators(page)
        except LimitExceeded:
            raise
        except Exception:
            ctx.skip(where, "parse-error")
            accounted = True
            continue
        if text.strip():
            ctx.text(where, text, kind)
            accounted = True
        elif operators is None or _SHOW_TEXT.search(operators):
            # The page draws text we could not decode (broken font or stream).
            ctx.skip(where, "parse-error")
            accounted = True
        elif _draws_image(page, operators):
            ctx.skip(where, "image-only")
            accounted = True
        else:
            drawn = drawn or bool(operators.strip())
        notes = _annotations(page)
        if notes:
            ctx.text(f"{where}/annotations", "\n".join(notes), kind)
    if not accounted:
        # No page gave text: a document of blank pages does not travel by mail.
        # Either its text is drawn as outlines (nothing to read without OCR) or
        # the page tree is broken and the real pages were never reached.
        ctx.skip(location, "image-only" if drawn else "parse-error")
    fields = reader.get_form_text_fields() or {}
    values = [f"{name}: {value}" for name, value in fields.items() if value]
    ctx.text(f"{location}/form", "\n".join(values), kind)
    ctx.text(f"{location}/properties", "\n".join(_properties(reader)), kind)
    number = 0
    for name, contents in reader.attachments.items():
        for content in contents:
            number += 1
            ctx.charge_bytes(len(content))
            nested(content, embedded(location, number, name), name, "")


def extract_pdf(
    data: bytes, location: str, kind: SegmentKind, ctx: Context, nested: Nested
) -> None:
    """Emit page text (`location/page N`), form values, annotations and embedded files."""
    cap = ctx.limits.max_part_bytes
    with apply_configuration(
        maximum_declared_stream_length=cap,
        array_based_stream_maximum_output_length=cap,
        jbig2_maximum_output_length=cap,
        lzw_maximum_output_length=cap,
        run_length_maximum_output_length=cap,
        zlib_maximum_output_length=cap,
        brotli_maximum_output_length=cap,
        image_maximum_buffer_size=cap,
        # Never start an external decoder for a hostile image.
        jbig2dec_binary=None,
    ):
        reader = QuickReader(data, io.BytesIO(data), strict=False)
        _read(reader, location, kind, ctx, nested)
