"""Office documents (OOXML: DOCX/XLSX/PPTX; OpenDocument) read straight from their XML.

Documents are ZIP archives of XML parts; members are read through `zipx` (so
bombs are bounded) and parsed with defusedxml (no DTDs, no entity expansion:
billion-laughs and external-entity tricks fail as parse errors). Element names
are matched by local name, so transitional and strict OOXML read the same way.

Locations: the main text is `<location>`, tables `<location>/table N/row M`,
spreadsheets `<location>/sheet S/row R` (S numbers the sheets in workbook order,
never by their names; R is the sheet's own row number), slides
`<location>/slide N`, plus `/header1`, `/comments`, `/properties`...
"""

from __future__ import annotations

import functools
import io
import posixpath
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import repeat
from typing import Any, Literal
from xml.etree import ElementTree
from xml.etree.ElementTree import Element
from xml.parsers import expat

from defusedxml.ElementTree import fromstring, iterparse

from policies.extract.context import Context
from policies.extract.model import SegmentKind
from policies.extract.tabular import RowLabeler
from policies.extract.zipx import read_named

_TIME_CHECK_EVERY = 4096


@functools.lru_cache(maxsize=1024)
def _local(tag: str) -> str:
    """An element's name without its namespace (documents use a few dozen names)."""
    return tag[tag.rfind("}") + 1 :]


_XML_ENCODING = re.compile(
    rb"""^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)"""
)
_Event = Literal["start", "end"]
_PLAIN_ENCODINGS = frozenset((b"utf-8", b"utf8", b"us-ascii", b"ascii"))


def _without_dtd(data: bytes) -> bool:
    """True when `data` provably declares no DTD, so no entity can be defined or expanded.

    Only then is the C-accelerated stdlib parser used (several times faster than
    defusedxml's Python-level handlers). The check is on bytes, so it insists on
    an ASCII-compatible encoding: a document declared in UTF-16 or EBCDIC could
    spell "<!DOCTYPE" in bytes we would not recognise, and goes the defused way.
    """
    head = data[:512]
    if b"\x00" in head or head.startswith((b"\xfe\xff", b"\xff\xfe")):
        return False
    declared = _XML_ENCODING.match(head)
    if declared is not None and declared.group(1).lower() not in _PLAIN_ENCODINGS:
        return False
    return b"<!DOCTYPE" not in data and b"<!ENTITY" not in data


def _events(data: bytes, events: tuple[_Event, ...] = ("end",)) -> Iterator[tuple[str, Any]]:
    """Parse untrusted XML incrementally; DTDs (and so entity expansion) are refused."""
    if _without_dtd(data):
        return ElementTree.iterparse(io.BytesIO(data), events=events)  # noqa: S314 - no DTD, see above
    return iterparse(io.BytesIO(data), events=events, forbid_dtd=True)


@dataclass(frozen=True)
class _Flow:
    """How one XML vocabulary spells paragraphs, tables and inline breaks."""

    paragraphs: frozenset[str]
    table: str
    row: str
    cell: str
    marks: Mapping[str, str]  # empty elements that stand for characters
    skip: frozenset[str] = frozenset()  # elements whose text is not document text


_WORD = _Flow(
    paragraphs=frozenset({"p"}),
    table="tbl",
    row="tr",
    cell="tc",
    marks={"tab": "\t", "br": "\n", "cr": "\n", "noBreakHyphen": "-"},
    # Field codes (HYPERLINK "...", MERGEFIELD x) and run/paragraph properties.
    skip=frozenset({"instrText", "rPr", "pPr"}),
)
_DRAWING = _Flow(
    paragraphs=frozenset({"p"}),
    table="tbl",
    row="tr",
    cell="tc",
    marks={"br": "\n", "tab": "\t"},
    skip=frozenset({"rPr", "pPr", "endParaRPr"}),
)
_ODF = _Flow(
    paragraphs=frozenset({"p", "h"}),
    table="table",
    row="table-row",
    cell="table-cell",
    marks={"s": " ", "tab": "\t", "line-break": "\n"},
)


def _inline_text(elem: Element, flow: _Flow) -> str:
    """Text of one paragraph, mixed content included, without recursion."""
    parts = [elem.text or ""]
    stack: list[tuple[Iterator[Element], Element | None]] = [(iter(elem), None)]
    while stack:
        children, owner = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            if owner is not None and owner.tail:
                parts.append(owner.tail)
            continue
        name = _local(child.tag)
        if name in flow.skip:
            if child.tail:
                parts.append(child.tail)
            continue
        mark = flow.marks.get(name)
        if mark:
            parts.append(mark)
        if child.text:
            parts.append(child.text)
        stack.append((iter(child), child))
    return "".join(parts)


@dataclass
class _Table:
    number: int
    labeler: RowLabeler = field(default_factory=RowLabeler)
    rows: int = 0
    row: list[str] | None = None
    cell: list[str] | None = None


def _flow_text(data: bytes, flow: _Flow, location: str, kind: SegmentKind, ctx: Context) -> None:
    """Emit a document part: running text at `location`, table rows below it."""
    body: list[str] = []
    tables: list[_Table] = []
    count = 0
    for number, (event, elem) in enumerate(_events(data, ("start", "end")), 1):
        if number % _TIME_CHECK_EVERY == 0:
            ctx.check_time()
        name = _local(elem.tag)
        if event == "start":
            if name == flow.table:
                count += 1
                tables.append(_Table(count))
            elif tables and name == flow.row:
                tables[-1].row = []
            elif tables and name == flow.cell:
                tables[-1].cell = []
            continue
        if name in flow.paragraphs:
            text = _inline_text(elem, flow)
            # Paragraphs nest (text boxes); clear this one so its parent does not
            # repeat it, but keep the tail, which belongs to the parent.
            tail = elem.tail
            elem.clear()
            elem.tail = tail
            table = tables[-1] if tables else None
            if table is not None and table.cell is not None:
                table.cell.append(text)
            else:
                body.append(text)
        elif not tables:
            continue
        elif name == flow.cell:
            table = tables[-1]
            if table.row is not None and table.cell is not None:
                table.row.append(" ".join(table.cell))
            table.cell = None
        elif name == flow.row:
            table = tables[-1]
            if table.row is not None:
                text = table.labeler.render(table.row)
                if text:
                    table.rows += 1
                    loc = f"{location}/table {table.number}/row {table.rows}"
                    ctx.row(loc, text, kind)
            table.row = None
            elem.clear()
        elif name == flow.table:
            tables.pop()
    ctx.text(location, "\n".join(body), kind)


def _all_text(data: bytes) -> str:
    """Every text node of a small XML part, paragraphs on their own lines."""
    root = fromstring(data, forbid_dtd=True)
    generic = _Flow(frozenset(), "", "", "", {"p": "\n", "br": "\n", "tab": "\t", "si": "\n"})
    return _inline_text(root, generic)


def _part(
    archive: zipfile.ZipFile,
    name: str,
    location: str,
    kind: SegmentKind,
    ctx: Context,
    flow: _Flow | None = None,
) -> None:
    """Emit one XML member if the archive has it."""
    data = read_named(archive, name, ctx)
    if data is None:
        return
    if flow is None:
        ctx.text(location, _all_text(data), kind)
    else:
        _flow_text(data, flow, location, kind, ctx)


def _numbered(archive: zipfile.ZipFile, pattern: str) -> list[tuple[int, str]]:
    """Members whose names match `pattern` (one number group), in numeric order."""
    regex = re.compile(pattern)
    found = []
    for name in archive.namelist():
        match = regex.fullmatch(name)
        if match:
            found.append((int(match.group(1) or 0), name))
    return sorted(found)


# Document properties people fill in (OOXML core.xml, OpenDocument meta.xml);
# timestamps and application names are left out.
_PROPERTY_NAMES = {
    "title": "Title",
    "subject": "Subject",
    "creator": "Author",
    "initial-creator": "Author",
    "lastModifiedBy": "Last modified by",
    "keywords": "Keywords",
    "keyword": "Keywords",
    "description": "Description",
    "category": "Category",
    "contentStatus": "Status",
}


def _properties(archive: zipfile.ZipFile, location: str, kind: SegmentKind, ctx: Context) -> None:
    """Document properties: title, subject, author, keywords, custom properties (labels)."""
    lines = []
    for name in ("docProps/core.xml", "meta.xml"):
        data = read_named(archive, name, ctx)
        if data is None:
            continue
        for elem in fromstring(data, forbid_dtd=True).iter():
            label = _PROPERTY_NAMES.get(_local(elem.tag))
            if label and elem.text and elem.text.strip():
                lines.append(f"{label}: {elem.text}")
    custom = read_named(archive, "docProps/custom.xml", ctx)
    if custom is not None:
        # Custom properties carry sensitivity labels (MSIP_Label_..._Name) and more.
        for prop in fromstring(custom, forbid_dtd=True):
            lines.append(f"{prop.get('name', '')}: {''.join(prop.itertext())}")
    ctx.text(f"{location}/properties", "\n".join(lines), kind)


def extract_docx(archive: zipfile.ZipFile, location: str, kind: SegmentKind, ctx: Context) -> None:
    """Word: body, tables, headers, footers, footnotes, endnotes, comments, properties."""
    _part(archive, "word/document.xml", location, kind, ctx, _WORD)
    for pattern in (r"word/(header)(\d*)\.xml", r"word/(footer)(\d*)\.xml"):
        for name in sorted(n for n in archive.namelist() if re.fullmatch(pattern, n)):
            stem = posixpath.splitext(posixpath.basename(name))[0]
            _part(archive, name, f"{location}/{stem}", kind, ctx, _WORD)
    for part in ("footnotes", "endnotes", "comments"):
        _part(archive, f"word/{part}.xml", f"{location}/{part}", kind, ctx, _WORD)
    _properties(archive, location, kind, ctx)


def extract_pptx(archive: zipfile.ZipFile, location: str, kind: SegmentKind, ctx: Context) -> None:
    """PowerPoint: each slide, speaker notes, comments, properties."""
    for number, name in _numbered(archive, r"ppt/slides/slide(\d+)\.xml"):
        _part(archive, name, f"{location}/slide {number}", kind, ctx, _DRAWING)
    for number, name in _numbered(archive, r"ppt/notesSlides/notesSlide(\d+)\.xml"):
        _part(archive, name, f"{location}/notes {number}", kind, ctx, _DRAWING)
    for number, name in _numbered(archive, r"ppt/comments/\D*(\d*)\.xml"):
        _part(archive, name, f"{location}/comments {number}", kind, ctx)
    _properties(archive, location, kind, ctx)


def odf_encrypted(archive: zipfile.ZipFile, ctx: Context) -> bool:
    """An OpenDocument file saved with a password lists encryption data in its manifest."""
    manifest = read_named(archive, "META-INF/manifest.xml", ctx)
    return manifest is not None and b"encryption-data" in manifest


def extract_odf(archive: zipfile.ZipFile, location: str, kind: SegmentKind, ctx: Context) -> None:
    """OpenDocument text, spreadsheet or presentation: content, headers/footers, metadata."""
    _part(archive, "content.xml", location, kind, ctx, _ODF)
    _part(archive, "styles.xml", f"{location}/styles", kind, ctx, _ODF)
    _properties(archive, location, kind, ctx)


# --- XLSX -------------------------------------------------------------------

# Built-in number formats that display dates (ECMA-376 18.8.30 and the CJK ones).
_BUILTIN_DATE_FORMATS = frozenset([*range(14, 23), *range(27, 37), 45, 46, 47, *range(50, 59)])
_FORMAT_NOISE = re.compile(r'"[^"]*"|\[[^\]]*\]|\\.|_.|\*.')
_COLUMN = re.compile(r"([A-Za-z]{1,3})")
_MAX_DENSE_COLUMNS = 1024


def _is_date_format(code: str) -> bool:
    """Whether a custom number format shows a date (d, y, or m without h/s)."""
    code = _FORMAT_NOISE.sub("", code).lower()
    if "d" in code or "y" in code:
        return True
    return "m" in code and "h" not in code and "s" not in code


def _date_styles(data: bytes | None) -> frozenset[int]:
    """Indexes of the cell formats (cellXfs) that display a date."""
    if data is None:
        return frozenset()
    custom: dict[int, str] = {}
    formats: list[int] = []
    in_cell_xfs = False
    for event, elem in _events(data, ("start", "end")):
        name = _local(elem.tag)
        if name == "cellXfs":
            in_cell_xfs = event == "start"
        elif event == "end" and name == "numFmt":
            try:
                custom[int(elem.get("numFmtId", "-1"))] = elem.get("formatCode", "")
            except ValueError:
                pass
        elif event == "end" and name == "xf" and in_cell_xfs:
            try:
                formats.append(int(elem.get("numFmtId", "0")))
            except ValueError:
                formats.append(0)
    dates = set()
    for index, fmt in enumerate(formats):
        if fmt in custom:
            if _is_date_format(custom[fmt]):
                dates.add(index)
        elif fmt in _BUILTIN_DATE_FORMATS:
            dates.add(index)
    return frozenset(dates)


def _shared_strings(data: bytes | None, ctx: Context) -> list[str]:
    """The workbook's shared string table (phonetic guide runs left out)."""
    if data is None:
        return []
    strings: list[str] = []
    for number, (_, elem) in enumerate(_events(data), 1):
        if number % _TIME_CHECK_EVERY == 0:
            ctx.check_time()
        if _local(elem.tag) == "si":
            parts = []
            for node in elem.iter():
                name = _local(node.tag)
                if name == "rPh":
                    node.clear()
                elif name == "t" and node.text:
                    parts.append(node.text)
            strings.append("".join(parts))
            elem.clear()
    return strings


def _sheets(archive: zipfile.ZipFile, ctx: Context) -> tuple[list[tuple[str, str]], bool]:
    """(sheet name, member path) in workbook order, and whether dates count from 1904."""
    workbook = read_named(archive, "xl/workbook.xml", ctx)
    rels = read_named(archive, "xl/_rels/workbook.xml.rels", ctx)
    targets: dict[str, str] = {}
    if rels is not None:
        for _, elem in _events(rels):
            if _local(elem.tag) == "Relationship":
                target = elem.get("Target", "")
                path = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
                targets[elem.get("Id", "")] = posixpath.normpath(path)
    sheets: list[tuple[str, str]] = []
    date1904 = False
    if workbook is not None:
        for _, elem in _events(workbook):
            name = _local(elem.tag)
            if name == "workbookPr":
                date1904 = elem.get("date1904", "").lower() in ("1", "true")
            elif name == "sheet":
                rid = next((v for k, v in elem.attrib.items() if _local(k) == "id"), "")
                if rid in targets:
                    sheets.append((elem.get("name", rid), targets[rid]))
    if not sheets:
        # No usable workbook map: read whatever worksheets there are.
        for number, name in _numbered(archive, r"xl/worksheets/sheet(\d+)\.xml"):
            sheets.append((f"Sheet{number}", name))
    return sheets, date1904


# Day 0 of each date system as a proleptic Gregorian ordinal.
_BASE_1904 = date(1904, 1, 1).toordinal()
_BASE_1900 = date(1899, 12, 30).toordinal()
_MAX_ORDINAL = date.max.toordinal()


def _excel_date(serial: float, date1904: bool) -> str | None:
    """Render a date serial as ISO 8601 (None when out of Excel's range)."""
    if not 0 <= serial < 2958466:
        return None
    if date1904:
        base = _BASE_1904
    else:
        # Excel counts a 29 Feb 1900 that never was: serials from 61 on are one off.
        base = _BASE_1900 if serial >= 61 else _BASE_1900 + 1
    if serial.is_integer():
        # A whole day (the usual date cell): midnight, so the day alone, by ordinal.
        ordinal = base + int(serial)
        if ordinal > _MAX_ORDINAL:
            # Past 9999-12-31 (1904 system): fail as the datetime arithmetic below does.
            raise OverflowError("date value out of range")
        return date.fromordinal(ordinal).isoformat()
    moment = datetime.fromordinal(base) + timedelta(days=serial)
    if moment.hour == moment.minute == moment.second == 0:
        return moment.date().isoformat()
    return moment.isoformat(sep=" ", timespec="seconds")


def _number(raw: str) -> str:
    """Show a stored number as a person would read it (no 1.23E+8, no trailing .0)."""
    if "E" not in raw and "e" not in raw and not raw.endswith(".0"):
        return raw
    try:
        value = float(raw)
    except ValueError:
        return raw
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return raw


def _column(ref: str | None) -> int | None:
    """Zero-based column index of a cell reference such as "BC12"."""
    if not ref:
        return None
    letters = ref.rstrip("0123456789")
    if 0 < len(letters) <= 3 and letters.isascii() and letters.isalpha():
        # The common case, "BC12": a sheet has few distinct columns.
        return _letters_index(letters)
    match = _COLUMN.match(ref)
    if match is None:
        return None
    return _letters_index(match.group(1))


@functools.lru_cache(maxsize=4096)
def _letters_index(letters: str) -> int:
    index = 0
    for char in letters.upper():
        index = index * 26 + ord(char) - 64
    return index - 1


@dataclass
class _Workbook:
    shared: list[str]
    dates: frozenset[int]
    date1904: bool


def _cell_value(cell: Element, book: _Workbook) -> str:
    """The displayed value of one <c> element."""
    raw = None
    inline: list[str] = []
    for node in cell:
        name = _local(node.tag)
        if name == "v":
            raw = node.text or ""
        elif name == "is":
            for t in node.iter():
                if t.text and _local(t.tag) == "t":
                    inline.append(t.text)
    return _shown(cell.get("t", "n"), raw, inline, cell.get("s", "0"), book)


def _shown(
    kind: str, raw: str | None, inline: Sequence[str], style_attr: str, book: _Workbook
) -> str:
    """The displayed value of a cell of this type, stored value, inline text and style."""
    if kind == "inlineStr":
        return "".join(inline)
    if raw is None:
        return ""
    if kind == "s":
        try:
            return book.shared[int(raw)]
        except (ValueError, IndexError):
            return ""
    if kind == "b":
        return "TRUE" if raw.strip() == "1" else "FALSE"
    if kind in ("str", "e", "d"):
        return raw
    try:
        style = int(style_attr)
    except ValueError:
        style = 0
    if style in book.dates:
        try:
            shown = _excel_date(float(raw), book.date1904)
        except ValueError:
            shown = None
        if shown is not None:
            return shown
    return _number(raw)


# A worksheet's rows are by far the bulk of a spreadsheet. Building an element per
# cell costs several microseconds; reading the few constructs a worksheet uses
# with regular expressions is several times quicker. Only a document expat finds
# well-formed takes this way, and only when it uses none of what the expressions
# do not cover (prefixed names, comments, CDATA, DTDs, processing instructions,
# encodings other than UTF-8); any other goes through ElementTree as before.
# A ">" in a quoted attribute value, a <v> or <t> holding anything but text, or
# a tag with a prefix sends the sheet the slow way.
#
# Those checks need not read the cells in the common form (the first alternative
# of _FAST_TAG), nine tenths of a sheet: such a cell is a well-formed element by
# construction (its text holds no "<", "&", ">", "\r" nor a character XML
# forbids) and none of the unsupported constructs can start inside one. So the
# sheet is read first, and everything but those cells is kept in order as its
# residue, each run of common cells standing as an empty "<c/>" (two for a run of
# two or more, so that cells at the top level still make two roots). The residue
# is well-formed exactly when the sheet is, and holds every unsupported construct
# the sheet holds; the checks and expat then read the residue alone.
_FAST_UNSUPPORTED_TAG = re.compile(
    r"<(?:!|[A-Za-z_][\w.-]*:|\?(?!xml[\s?])|([vt])(?:\s[^>]*)?>[^<]*<(?!/\1>))"
)
_FAST_UNSUPPORTED_ATTR = re.compile(r"""=\s*(?:"[^"<]*>|'[^'<]*>)""")
# Cells as spreadsheet programs write them are read whole by the first alternative
# (column letters, style, type, then a value or an inline string); any other cell
# by the second, with its content up to the first </c> (none when it closes itself);
# row tags by the next two, and whatever else there is, up to the next "<", by the
# last. Matches never overlap and follow one another, so one finditer walks the
# whole sheet. Optional parts are spelled "(?:...|)": the same match as "(?:...)?",
# found with less work.
_FAST_TAG = re.compile(
    r'<c(?: r="([A-Z]{1,3})\d+"|)(?: s="(\d+)"|)(?: t="(\w+)"|)>'
    r"(?:<v>([^<&\r>\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]*)</v>"
    r'|<is><t(?: xml:space="preserve"|)>([^<&\r>\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]*)</t></is>)'
    r"</c>"
    r"|<c\b(?:([^>]*/)>|([^>]*)>(.*?)(?:</c>|\Z))"
    r"|<row\b([^>]*)>|</row>"
    r"|(<[^<]*|[^<]+)",
    re.S,
)
_FAST_ROW_REF = re.compile(r' r="([^"&\r]*)"')
_FAST_ATTR = re.compile(r"""([\w.:-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_FAST_V = re.compile(r"<v(?:\s[^>]*)?>([^<]*)</v>|<v(?:\s[^>]*)?/>")
_FAST_IS = re.compile(r"<is\b[^>]*>(.*?)</is>", re.S)
_FAST_T = re.compile(r"<t(?:\s[^>]*)?>([^<]*)</t>")
_FAST_REF = re.compile(r"&(?:#(\d+)|#x([0-9A-Fa-f]+)|(lt|gt|amp|quot|apos));")
_PREDEFINED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def _fast_ref(m: re.Match[str]) -> str:
    if m.group(3):
        return _PREDEFINED[m.group(3)]
    return chr(int(m.group(1)) if m.group(1) else int(m.group(2), 16))


def _fast_text(raw: str) -> str:
    """Character data as an XML parser reports it: line ends normalised, references resolved."""
    if "\r" in raw:
        raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    return _FAST_REF.sub(_fast_ref, raw) if "&" in raw else raw


def _fast_attrs(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in _FAST_ATTR.finditer(raw):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        out[m.group(1)] = _fast_text(value) if "&" in value or "\r" in value else value
    return out


_Rows = list[tuple[str | None, list[str]]]


def _fast_sheet(data: bytes, book: _Workbook) -> _Rows | None:
    """The worksheet's rows read the quick way (see above), or None: use ElementTree."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    declared = _XML_ENCODING.match(data)
    if declared is not None and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    residue: list[str] = []
    try:
        rows = list(_fast_rows(text, book, residue))
    except Exception:
        # A value the reader cannot show (a date past 9999, a bad character reference):
        # ElementTree's way emits the same rows before it and fails on it alike, or
        # reports the malformed sheet as it always has.
        return None
    rest = "".join(residue)
    if _FAST_UNSUPPORTED_TAG.search(rest) or _FAST_UNSUPPORTED_ATTR.search(rest):
        return None
    parser = expat.ParserCreate()
    try:
        parser.Parse(rest.encode("utf-8"), True)
    except expat.ExpatError:
        return None  # ElementTree reports it as it always has
    return rows


def _fast_rows(
    text: str, book: _Workbook, residue: list[str]
) -> Iterator[tuple[str | None, list[str]]]:
    """(the row's r attribute, its values) of every row, as _element_rows and _dense read them.

    Appends the sheet's residue (see above) to `residue` as it goes.
    """
    # While a row's cells come column after column from A (as they usually do), their
    # values go straight into the list _dense would make; the first cell out of that
    # order turns the row into a column -> value map, as _element_rows keeps it.
    values: list[str] = []
    cells: dict[int, str] | None = None
    next_column = 0
    row_ref: str | None = None
    letters_index = _letters_index
    shown = _shown
    keep = residue.append
    run = 0  # cells in the common form since the last piece of residue
    # Date cells (a style that shows a date, a whole number of days, as most dates
    # of birth are) read straight from their day number: _shown's result, with less
    # work. Any other form, and any serial _excel_date refuses, go through _shown.
    date_styles = {str(index) for index in book.dates}
    day0, first_day = (_BASE_1904, 0) if book.date1904 else (_BASE_1900, 61)
    last_day = min(2958465, _MAX_ORDINAL - day0)
    from_ordinal = date.fromordinal
    for m in _FAST_TAG.finditer(text):
        # One call for all the groups: most tags are cells, and group() per field adds up.
        letters, style, kind, raw, inline, closed, attrs_raw, inner, row_attrs, other = m.groups()
        if raw is not None or inline is not None:  # a cell in the common form
            run += 1
            column = letters_index(letters) if letters else next_column
            if kind == "inlineStr":
                value = inline or ""  # what _shown makes of its one text, if any
            elif (
                style in date_styles
                and (kind is None or kind == "n")
                and raw  # not None: not an inline string
                and len(raw) <= 7
                and raw.isdigit()
                and raw.isascii()
                and first_day <= int(raw) <= last_day
            ):
                value = from_ordinal(day0 + int(raw)).isoformat()
            else:
                value = shown(kind or "n", raw, (), style or "0", book)
            if column == next_column and cells is None:
                values.append(value)
            else:
                if cells is None:
                    cells = {index: value for index, value in enumerate(values) if value}
                if value:
                    cells[column] = value
            next_column = column + 1
            continue
        if run:
            keep("<c/>" if run == 1 else "<c/><c/>")
            run = 0
        if other is not None:  # text between tags, or any other tag
            keep(other)
            continue
        keep(m.group())
        if attrs_raw is not None or closed is not None:  # any other cell
            attrs = _fast_attrs(closed if closed is not None else attrs_raw)
            found = _column(attrs.get("r"))
            column = found if found is not None else next_column
            next_column = column + 1
            if cells is None:
                cells = {index: value for index, value in enumerate(values) if value}
            raw = None
            texts: list[str] = []
            if inner is not None:
                if "<v" in inner:
                    for v in _FAST_V.finditer(inner):
                        raw = _fast_text(v.group(1) or "")
                if "<is" in inner:
                    for block in _FAST_IS.finditer(inner):
                        texts.extend(_fast_text(t) for t in _FAST_T.findall(block.group(1)) if t)
            value = shown(attrs.get("t", "n"), raw, texts, attrs.get("s", "0"), book)
            if value:
                cells[column] = value
            continue
        if row_attrs is not None:  # <row ...>
            # Usually r comes first and plain; attribute names are unique (expat checked).
            plain = _FAST_ROW_REF.match(row_attrs)
            row_ref = plain.group(1) if plain else _fast_attrs(row_attrs).get("r")
            if not row_attrs.endswith("/"):
                continue  # its cells follow
        # </row>, or a row that closes itself
        if cells is None:
            while values and not values[-1]:
                values.pop()
            if len(values) > _MAX_DENSE_COLUMNS:
                values = [value for value in values if value]
            yield row_ref, values
        else:
            yield row_ref, _dense(cells)
        values = []
        cells = None
        next_column = 0
        row_ref = None
    if run:
        keep("<c/>" if run == 1 else "<c/><c/>")


def _dense(cells: dict[int, str]) -> list[str]:
    """A row's values in column order, "" for the empty columns up to the last filled one."""
    if not cells:
        return []
    width = max(cells) + 1
    if width <= _MAX_DENSE_COLUMNS:
        return list(map(cells.get, range(width), repeat("", width)))
    return [cells[i] for i in sorted(cells)]


def _sheet_rows(
    data: bytes, book: _Workbook, location: str, kind: SegmentKind, ctx: Context
) -> None:
    """Emit each non-empty row of one worksheet as a row segment."""
    labeler = RowLabeler()
    row_counter = 0
    rows: Iterable[tuple[str | None, list[str]]] | None = _fast_sheet(data, book)
    if rows is None:
        rows = ((ref, _dense(cells)) for ref, cells in _element_rows(data, book))
    for ref, values in rows:
        ctx.check_time()
        row_counter += 1
        try:
            row_number = int(ref if ref is not None else row_counter)
        except ValueError:
            row_number = row_counter
        row_counter = row_number
        if values:
            text_ = labeler.render(values)
            if text_:
                ctx.row(f"{location}/row {row_number}", text_, kind)


def _element_rows(data: bytes, book: _Workbook) -> Iterator[tuple[str | None, dict[int, str]]]:
    """(the row's r attribute, column -> value) of every row, read with ElementTree."""
    cells: dict[int, str] = {}
    next_column = 0
    for _, elem in _events(data):
        tag = _local(elem.tag)
        if tag == "c":
            column = _column(elem.get("r"))
            if column is None:
                column = next_column
            next_column = column + 1
            value = _cell_value(elem, book)
            if value:
                cells[column] = value
            elem.clear()
        elif tag == "row":
            yield elem.get("r"), cells
            cells = {}
            next_column = 0
            elem.clear()


def extract_xlsx(archive: zipfile.ZipFile, location: str, kind: SegmentKind, ctx: Context) -> None:
    """Excel: every sheet (hidden ones too), row by row; comments; properties."""
    book = _Workbook(
        shared=_shared_strings(read_named(archive, "xl/sharedStrings.xml", ctx), ctx),
        dates=_date_styles(read_named(archive, "xl/styles.xml", ctx)),
        date1904=False,
    )
    sheets, book.date1904 = _sheets(archive, ctx)
    for number, (_, path) in enumerate(sheets, 1):
        data = read_named(archive, path, ctx)
        if data is not None:
            # By number: a sheet may be named after a patient.
            _sheet_rows(data, book, f"{location}/sheet {number}", kind, ctx)
    for number, name in _numbered(archive, r"xl/comments(\d*)\.xml"):
        _part(archive, name, f"{location}/comments {number}", kind, ctx)
    for number, name in _numbered(archive, r"xl/threadedComments/threadedComment(\d*)\.xml"):
        _part(archive, name, f"{location}/threaded comments {number}", kind, ctx)
    for number, name in _numbered(archive, r"xl/drawings/drawing(\d*)\.xml"):
        # Text boxes and shapes drawn over the cells.
        _part(archive, name, f"{location}/drawing {number}", kind, ctx, _DRAWING)
    _properties(archive, location, kind, ctx)


def office_kind(names: set[str]) -> str | None:
    """Which office format a ZIP archive is, from its member names (None: a plain archive)."""
    if "word/document.xml" in names:
        return "docx"
    if "xl/workbook.xml" in names:
        return "xlsx"
    if "ppt/presentation.xml" in names:
        return "pptx"
    if "mimetype" in names and "content.xml" in names:
        return "odf"
    return None
