"""Table rows as co-occurrence units: header labelling shared by every table format, and CSV/TSV.

A spreadsheet row such as `John Smith | 1980-02-01 | 448812` says nothing on its
own; the meaning lives in the header row. When a table's first non-empty row
looks like column headers, later rows are rendered `Name: John Smith | DOB:
1980-02-01 | MRN: 448812`, so a detector that needs a label next to a value
finds one inside the row.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence

from policies.extract.context import Context
from policies.extract.model import SegmentKind
from policies.extract.normalize import decode_bytes

CELL_SEPARATOR = " | "
_MAX_HEADER_CELL = 60
_LETTER = re.compile(r"[^\W\d_]")
_NUMBERISH = re.compile(r"^[\d\s.,:/+\-()$%]+$")
_LINE_BREAKS = re.compile(r"\s*\n\s*")


def _looks_like_header(cells: Sequence[str]) -> bool:
    """A header row: at least two labels, each short, with letters and not a number or date."""
    filled = [c for c in cells if c]
    if len(filled) < 2:
        return False
    return all(
        len(c) <= _MAX_HEADER_CELL and _LETTER.search(c) and not _NUMBERISH.match(c) for c in filled
    )


class RowLabeler:
    """Render the rows of one table, labelling cells with the header row when there is one."""

    def __init__(self) -> None:
        """Start a table: the first non-empty row decides whether there is a header."""
        # "Label: " for each header cell ("" for an unlabelled column), made once per table.
        self._prefixes: list[str] | None = None
        self._template: str | None = None
        self._width = 0
        self._seen_first = False

    def render(self, cells: Sequence[str]) -> str:
        """Return the row's text ("" for an empty row)."""
        template = self._template
        if template is not None and len(cells) == self._width:
            # The usual row of a labelled table: every column filled, no line break
            # inside a cell (stripping first changes nothing for the general way
            # below, and labels hold no line break, so the text itself tells).
            stripped = tuple(map(str.strip, cells))
            if all(stripped):
                text = template % stripped
                if "\n" not in text:
                    return text
        flat = [_LINE_BREAKS.sub(" ", c).strip() if "\n" in c else c.strip() for c in cells]
        if not any(flat):
            return ""
        prefixes = self._prefixes
        if prefixes is None:
            if not self._seen_first:
                self._seen_first = True
                if _looks_like_header(flat):
                    self._prefixes = [f"{label}: " if label else "" for label in flat]
                    # The same for a full row, as one %-template: "Name: %s | DOB: %s".
                    self._template = CELL_SEPARATOR.join(
                        prefix.replace("%", "%%") + "%s" for prefix in self._prefixes
                    )
                    self._width = len(flat)
            return CELL_SEPARATOR.join([c for c in flat if c])
        # Cells past the header's width have no label; zip stops at the shorter.
        out = [prefix + value for prefix, value in zip(prefixes, flat, strict=False) if value]
        if len(flat) > len(prefixes):
            out += [value for value in flat[len(prefixes) :] if value]
        return CELL_SEPARATOR.join(out)


_SNIFF_LINES = 50
_DELIMITERS = ",;\t|"


def _delimiter(text: str, tab_default: bool) -> str:
    """Guess the delimiter: the candidate that appears equally often on most sample lines.

    Written out rather than csv.Sniffer, whose regular expressions take a third
    of a second on some 8 KB inputs; this is linear in the sample.
    """
    lines = [line for line in text[: 1 << 16].splitlines()[:_SNIFF_LINES] if line.strip()]
    best, best_score = ("\t" if tab_default else ","), (0, 0)
    for candidate in _DELIMITERS:
        counts = [line.count(candidate) for line in lines]
        positive = [c for c in counts if c]
        if not positive:
            continue
        mode = max(set(positive), key=positive.count)
        score = (counts.count(mode), mode)
        if score > best_score:
            best, best_score = candidate, score
    return best


def extract_csv(
    data: bytes,
    charset: str | None,
    location: str,
    kind: SegmentKind,
    ctx: Context,
    tab_default: bool = False,
) -> None:
    """Emit one row segment per CSV/TSV record, `location/row N` (N counts records from 1)."""
    text = decode_bytes(data, charset)
    labeler = RowLabeler()
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text, tab_default))
    number = 0
    try:
        for row in reader:
            number += 1
            if number % 256 == 0:
                ctx.check_time()
            rendered = labeler.render(row)
            if rendered:
                ctx.row(f"{location}/row {number}", rendered, kind)
    except csv.Error:
        # A field over the csv module's size limit or a stray NUL: the rest is
        # still text, so scan it line by line rather than give up on it.
        rest = text.splitlines()[max(0, reader.line_num - 1) :]
        for offset, line in enumerate(rest, number + 1):
            if offset % 256 == 0:
                ctx.check_time()
            ctx.row(f"{location}/row {offset}", line, kind)
