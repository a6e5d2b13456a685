"""Quick ways through table rendering, date cells and segments give what the general ways give."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest

from policies.extract.context import BudgetExhausted, Context
from policies.extract.model import Limits, Segment
from policies.extract.office import _excel_date
from policies.extract.tabular import CELL_SEPARATOR, RowLabeler, _looks_like_header

_LINE_BREAKS = re.compile(r"\s*\n\s*")


class _Reference:
    """The row labelling as written before the quick path: cell by cell."""

    def __init__(self) -> None:
        self.header: list[str] | None = None
        self.seen_first = False

    def render(self, cells: Sequence[str]) -> str:
        flat = [_LINE_BREAKS.sub(" ", c).strip() if "\n" in c else c.strip() for c in cells]
        if not any(flat):
            return ""
        if not self.seen_first:
            self.seen_first = True
            if _looks_like_header(flat):
                self.header = flat
            return CELL_SEPARATOR.join(c for c in flat if c)
        if self.header is None:
            return CELL_SEPARATOR.join(c for c in flat if c)
        out = []
        for index, value in enumerate(flat):
            if not value:
                continue
            label = self.header[index] if index < len(self.header) else ""
            out.append(f"{label}: {value}" if label else value)
        return CELL_SEPARATOR.join(out)


HEADERS = [
    ["Name", "DOB", "MRN"],
    ["Name", "", "MRN"],  # an unlabelled column
    ["100% paid", "Rate %s", "Note %(x)s"],  # %-template characters in the labels
    [" Name ", "Date\nof birth", "MRN\r\n"],  # labels that need tidying themselves
    ["Name", "DOB", "MRN", ""],  # a trailing empty header cell
]
ROWS = [
    ["Jane Roe", "1980-02-01", "448812"],
    ["  Jane Roe ", "\t1980-02-01", "448812\u00a0"],  # stripped, Unicode spaces too
    ["Jane\nRoe", "1980-02-01", "448812"],  # a line break inside a cell
    ["Jane \n\n Roe", "x", "\n448812\n"],
    ["Jane Roe", "", "448812"],  # an empty cell
    ["Jane Roe", "   ", "448812"],  # a blank one
    ["Jane Roe", "1980-02-01"],  # fewer cells than labels
    ["Jane Roe", "1980-02-01", "448812", "extra"],  # more
    ["Jane Roe", "1980-02-01", "448812", ""],
    ["", "", ""],
    ["%s", "%%", "%(x)s"],  # format characters in values
    ["a | b", "c: d", "e"],
]


@pytest.mark.parametrize("header", HEADERS)
def test_the_row_template_renders_what_the_cell_by_cell_way_does(header: list[str]) -> None:
    quick, reference = RowLabeler(), _Reference()
    assert quick.render(header) == reference.render(header)
    for row in ROWS:
        assert quick.render(row) == reference.render(row), row


def test_a_table_without_a_header_row_is_not_labelled() -> None:
    quick, reference = RowLabeler(), _Reference()
    for row in [["", ""], ["12", "34"], *ROWS]:
        assert quick.render(row) == reference.render(row)


def _reference_date(serial: float, date1904: bool) -> str | None:
    if not 0 <= serial < 2958466:
        return None
    if date1904:
        base = datetime(1904, 1, 1)
    else:
        base = datetime(1899, 12, 30) if serial >= 61 else datetime(1899, 12, 31)
    moment = base + timedelta(days=serial)
    if moment.hour == moment.minute == moment.second == 0:
        return moment.date().isoformat()
    return moment.isoformat(sep=" ", timespec="seconds")


@pytest.mark.parametrize(
    "serial",
    [0.0, -0.0, 1.0, 59.0, 60.0, 60.5, 61.0, 35749.0, 35749.25, 35749.999999, 2957003.0,
     2957004.0, 2958465.0, 2958465.5, 2958466.0, -1.0, float("nan"), float("inf")],
)  # fmt: skip
@pytest.mark.parametrize("date1904", [False, True])
def test_whole_day_serials_read_as_the_datetime_arithmetic_does(
    serial: float, date1904: bool
) -> None:
    try:
        expected: str | type[Exception] | None = _reference_date(serial, date1904)
    except OverflowError:
        expected = OverflowError
    if expected is OverflowError:
        with pytest.raises(OverflowError):
            _excel_date(serial, date1904)
    else:
        assert _excel_date(serial, date1904) == expected


def test_segments_are_the_dataclass_they_always_were() -> None:
    ctx = Context(Limits())
    ctx.text("sheet 1/row 2", "Name:  Jane Roe ", "attachment", is_row=True)
    ctx.text("body/1 text/plain", "hello", "body")
    got = ctx.result().segments
    expected = (
        Segment("sheet 1/row 2", "Name: Jane Roe", "attachment", True),
        Segment("body/1 text/plain", "hello", "body", False),
    )
    assert got == expected
    assert [hash(s) for s in got] == [hash(s) for s in expected]
    assert [vars(s) for s in got] == [vars(s) for s in expected]
    with pytest.raises(AttributeError):
        got[0].text = "x"  # type: ignore[misc]


@pytest.mark.parametrize("budget", [1000, 30, 25, 12, 11, 5])
def test_a_row_is_kept_as_text_keeps_it_budget_included(budget: int) -> None:
    rows = ["Name:  Jane Roe ", "", "  ", "MRN: 448812\u00a0", "x\ty"]
    results = []
    for way in ("row", "text"):
        ctx = Context(Limits(max_text_chars=budget))
        try:
            for number, text in enumerate(rows, 1):
                if way == "row":
                    ctx.row(f"sheet 1/row {number}", text, "attachment")
                else:
                    ctx.text(f"sheet 1/row {number}", text, "attachment", is_row=True)
            error = None
        except BudgetExhausted as exc:
            error = str(exc)
        results.append((ctx.result().segments, ctx.text_chars, error))
    assert results[0] == results[1]
    assert [vars(s) for s in results[0][0]] == [vars(s) for s in results[1][0]]
