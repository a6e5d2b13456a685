"""HTML to text, keeping everything a recipient could uncover.

Text hidden with CSS (display:none, white on white, 1px fonts) is still in the
message, so it is all kept: no CSS is applied. Alt/title text, comments and the
content of Outlook's conditional comments are kept too. Only <style> content is
dropped, since it is CSS, not prose.

Data tables become row segments: an innermost <tr> with at least two non-empty
cells is one row segment (labelled with its table's header row, see
`tabular`). Text in rows with fewer cells, as in layout tables, flows into the
body text. Each piece of text lands in exactly one segment.

The tokenizer is our own and linear by construction: every step moves forward,
and a construct that never ends (comment, tag, quoted attribute) ends the
markup, the rest being read as text. Measured alternatives were not: the
stdlib html.parser of Python 3.11 takes tens of seconds on 200 KB of "<!--",
lexbor (selectolax) minutes on deeply nested <div>s, and libxml2 (lxml) drops
everything nested deeper than 255 elements without a trace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import unescape

from policies.extract.context import Context
from policies.extract.model import SegmentKind
from policies.extract.tabular import RowLabeler

# Elements whose start or end separates lines of text.
_BLOCK = frozenset(
    "address article aside blockquote body br caption center dd div dl dt fieldset figcaption "
    "figure footer form h1 h2 h3 h4 h5 h6 head header hr html li main nav ol option p pre "
    "section select summary table tbody textarea tfoot thead title tr ul".split()
)
# Attributes whose values a reader sees (tooltips, image replacements, form values).
_TEXT_ATTR = re.compile(
    r"""(?:^|[\s/])(?:alt|title|aria-label|placeholder|value|label|summary)\s*+=\s*+"""
    r"""(?:"([^"]*+)"|'([^']*+)'|([^\s>"'][^\s>]*+))""",
    re.IGNORECASE,
)
_TAG_NAME = re.compile(r"[a-zA-Z][^\s/>]*+")
# The rest of a start tag, HTML5 attribute syntax, possessive so it never backtracks.
# A quote opens a value only after "="; an unterminated value makes the match fail.
_TAG_REST = re.compile(
    r"""(?:[\s/]++|[^\s/>="'][^\s/>="']*+(?:\s*+=\s*+(?:"[^"]*+"|'[^']*+'|[^\s>"']*+))?+)*+>"""
)
_END_TAG_NAME = re.compile(r"[a-zA-Z][^\s/>]*+")
_MARKUP = re.compile(r"<[^<>]*+>")
# Elements whose content is not markup (HTML5 raw text / RCDATA elements).
# <noscript> is left out: mail clients run no scripts, so its content is markup.
_RAW_TEXT = frozenset(("script", "style", "xmp", "iframe", "noembed", "noframes"))
_RCDATA = frozenset(("title", "textarea"))
_CLOSERS = {name: re.compile(rf"</{name}[\s/>]", re.IGNORECASE) for name in _RAW_TEXT | _RCDATA}
_TIME_CHECK_EVERY = 4096


@dataclass
class _Row:
    cells: list[list[str]] = field(default_factory=list)
    open_cell: list[str] | None = None
    has_table: bool = False


@dataclass
class _Table:
    number: int
    labeler: RowLabeler = field(default_factory=RowLabeler)
    rows: int = 0
    row: _Row | None = None


class _TextBuilder:
    """Turns tokenizer events into body text and row segments."""

    def __init__(self, location: str, kind: SegmentKind, ctx: Context) -> None:
        self._location = location
        self._kind = kind
        self._ctx = ctx
        self.body: list[str] = []
        self._tables: list[_Table] = []
        self._table_count = 0

    def sink(self) -> list[str]:
        """Where text goes now: the open cell of the innermost table, else the body."""
        if self._tables:
            row = self._tables[-1].row
            if row is not None and row.open_cell is not None:
                return row.open_cell
        return self.body

    def _close_cell(self, row: _Row) -> None:
        if row.open_cell is not None:
            row.cells.append(row.open_cell)
            row.open_cell = None

    def _close_row(self, table: _Table) -> None:
        row = table.row
        if row is None:
            return
        self._close_cell(row)
        table.row = None
        cells = ["".join(c) for c in row.cells]
        if not row.has_table and sum(1 for c in cells if c.strip()) >= 2:
            table.rows += 1
            text = table.labeler.render(cells)
            loc = f"{self._location}/table {table.number}/row {table.rows}"
            self._ctx.row(loc, text, self._kind)
        else:
            # Layout rows and rows wrapping other tables read as running text.
            sink = self.sink()
            for cell in cells:
                sink.append(cell)
                sink.append("\n")

    def start(self, tag: str, attributes: str) -> None:
        """A start tag: track tables and blocks, keep human-visible attribute text."""
        if tag == "table":
            outer_row = self._tables[-1].row if self._tables else None
            if outer_row is not None:
                outer_row.has_table = True
            self._table_count += 1
            self._tables.append(_Table(self._table_count))
        elif tag == "tr" and self._tables:
            table = self._tables[-1]
            self._close_row(table)
            table.row = _Row()
        elif tag in ("td", "th") and self._tables:
            table = self._tables[-1]
            if table.row is None:
                table.row = _Row()
            self._close_cell(table.row)
            table.row.open_cell = []
        elif tag in _BLOCK:
            self.sink().append("\n")
        elif tag in ("td", "th"):
            self.sink().append(" ")
        if attributes and "=" in attributes:
            sink = self.sink()
            for match in _TEXT_ATTR.finditer(attributes):
                value = match.group(1) or match.group(2) or match.group(3) or ""
                sink.append(f" {unescape(value)} ")

    def end(self, tag: str) -> None:
        """An end tag: close cells, rows and tables, tolerating omitted ones."""
        if tag == "table":
            if self._tables:
                table = self._tables.pop()
                self._close_row(table)
        elif tag == "tr":
            if self._tables:
                self._close_row(self._tables[-1])
        elif tag in ("td", "th"):
            open_row = self._tables[-1].row if self._tables else None
            if open_row is not None:
                self._close_cell(open_row)
        elif tag in _BLOCK:
            self.sink().append("\n")

    def comment(self, text: str) -> None:
        """Comments are hidden text; Outlook's conditional comments hold rendered HTML."""
        stripped = text.strip()
        if stripped.startswith("[if") and "]>" in stripped:
            stripped = stripped[stripped.index("]>") + 2 :]
            stripped = stripped.removesuffix("<![endif]")
        elif stripped.startswith("[") and stripped.endswith("]"):
            return  # <![endif]> and Word's <![if !supportLists]> markers
        if "<" in stripped:
            stripped = unescape(_MARKUP.sub(" ", stripped))
        self.sink().append(f"\n{stripped}\n")

    def finish(self) -> None:
        """Close whatever tables truncated markup left open."""
        while self._tables:
            table = self._tables.pop()
            self._close_row(table)


def _data(builder: _TextBuilder, text: str) -> None:
    if text:
        builder.sink().append(unescape(text) if "&" in text else text)


def _tokenize(html: str, builder: _TextBuilder, ctx: Context) -> None:
    """Feed `html` to `builder` as start/end tags, comments and text, in one forward pass."""
    position = 0
    end = len(html)
    steps = 0
    while position < end:
        steps += 1
        if steps % _TIME_CHECK_EVERY == 0:
            ctx.check_time()
        lt = html.find("<", position)
        if lt < 0:
            _data(builder, html[position:])
            return
        _data(builder, html[position:lt])
        following = html[lt + 1 : lt + 2]
        if html.startswith("<!--", lt):
            close = html.find("-->", lt + 4)
            if close < 0:
                builder.comment(html[lt + 4 :])
                return
            builder.comment(html[lt + 4 : close])
            position = close + 3
        elif html.startswith("<![CDATA[", lt):
            close = html.find("]]>", lt + 9)
            if close < 0:
                builder.sink().append(html[lt + 9 :])
                return
            builder.sink().append(html[lt + 9 : close])
            position = close + 3
        elif following in ("!", "?"):
            close = html.find(">", lt + 2)
            if close < 0:
                builder.comment(html[lt + 2 :])
                return
            inner = html[lt + 2 : close]
            if not inner[:7].lower().startswith("doctype"):
                builder.comment(inner)
            position = close + 1
        elif following == "/":
            close = html.find(">", lt + 2)
            if close < 0:
                _data(builder, html[lt:])
                return
            end_name = _END_TAG_NAME.match(html, lt + 2, close)
            if end_name is not None:
                builder.end(end_name.group(0).lower())
            position = close + 1
        elif following.isascii() and following.isalpha():
            name_match = _TAG_NAME.match(html, lt + 1)
            assert name_match is not None  # the first character is a letter
            rest = _TAG_REST.match(html, name_match.end())
            if rest is None:
                # A tag that never closes: browsers hide the rest; we read it.
                _data(builder, html[lt:])
                return
            name = name_match.group(0).lower()
            builder.start(name, html[name_match.end() : rest.end() - 1])
            position = rest.end()
            closer = _CLOSERS.get(name)
            if closer is not None and not html.startswith("/>", rest.end() - 2):
                position = _raw_text(html, position, name, closer, builder)
        else:
            _data(builder, "<")
            position = lt + 1


def _raw_text(
    html: str, start: int, name: str, closer: re.Pattern[str], builder: _TextBuilder
) -> int:
    """Consume the content of a raw-text element up to its end tag; return where to go on."""
    found = closer.search(html, start)
    stop = found.start() if found is not None else len(html)
    content = html[start:stop]
    if name in _RCDATA:
        _data(builder, content)
    elif name != "style":
        builder.sink().append(content)
    if found is None:
        return len(html)
    builder.end(name)
    close = html.find(">", found.start())
    return len(html) if close < 0 else close + 1


def extract_html(text: str, location: str, kind: SegmentKind, ctx: Context) -> None:
    """Emit the document's running text at `location` and data-table rows below it."""
    builder = _TextBuilder(location, kind, ctx)
    _tokenize(text, builder, ctx)
    builder.finish()
    ctx.text(location, "".join(builder.body), kind)
