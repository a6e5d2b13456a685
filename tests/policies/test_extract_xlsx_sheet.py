"""The quick worksheet reader reads every sheet exactly as ElementTree does, or declines."""

from __future__ import annotations

from xml.parsers import expat

import pytest

from policies.extract import office
from policies.extract.office import _dense, _element_rows, _fast_sheet, _Workbook

NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
BOOK = _Workbook(shared=["Patient", "Jane Roe"], dates=frozenset({3}), date1904=False)


def sheet(rows: str) -> bytes:
    head = f'<?xml version="1.0" encoding="UTF-8"?>\n<worksheet {NS}><sheetData>'
    return f"{head}{rows}</sheetData></worksheet>".encode()


READABLE = [
    # the forms spreadsheet programs write
    '<row r="1"><c r="A1" t="s"><v>0</v></c>'
    '<c r="B1" s="1" t="inlineStr"><is><t>MRN</t></is></c></row>'
    '<row r="2"><c r="A2" t="s"><v>1</v></c><c r="C2" s="3"><v>21900</v></c>'
    '<c r="D2"><v>1.2345678E8</v></c><c r="E2" t="b"><v>1</v></c></row>',
    # attributes in another order, single quotes, spaces, no r at all
    "<row r='4' spans='1:3'><c t='s' r='B4'><v>1</v></c><c><v>7</v></c>"
    '<c  s = "3" ><v>40000</v></c></row>',
    # references, line ends, rich text and phonetic runs, preserved spaces
    '<row r="5"><c r="A5" t="inlineStr"><is><r><t>Jane </t></r>'
    "<r><rPr><b/></rPr><t>R&amp;oe &#233;&#xE9;</t>"
    '</r><rPh><t>ro</t></rPh></is></c><c r="B5" t="str"><f>A1</f><v>x\r\ny\rz</v></c>'
    '<c r="C5" t="inlineStr"><is><t xml:space="preserve">  a &lt;b&gt; </t></is></c></row>',
    # empty cells and rows, self-closing ones, a row with no r, cells outside rows
    '<row r="6"/><row r="7"><c r="A7"/><c r="B7" t="s"/><c r="C7"><v/></c></row>'
    "<row><c><v>3</v></c></row>"
    '<c r="Z9"><v>5</v></c><row r="10"></row>',
    # values that read as nothing, bad style and shared index
    '<row r="11"><c r="A11" t="s"><v>99</v></c><c r="B11" s="x"><v>2</v></c>'
    '<c r="C11" t="e"><v>#N/A</v></c>'
    '<c r="D11" t="d"><v>2024-01-02</v></c><c r="E11" t="inlineStr"><is><t></t></is></c></row>',
    # row references the quick way reads and those it leaves to the attribute reader
    '<row r="12" spans="1:2"><c r="A12"><v>1</v></c></row><row spans="1:2" r="13">'
    "<c r='A13'><v>2</v></c></row><row r='14'><c><v>3</v></c></row>"
    '<row r="1&#53;"><c><v>4</v></c></row><row r="x"><c><v>5</v></c></row>'
    '<row\tr="17"><c><v>6</v></c></row>',
    # a cell of another form right after one in the common form, and one that closes
    # itself between them; a value that is no number, booleans, 1904 and huge dates
    '<row r="20"><c r="A20" t="b"><v>1</v></c><c r="B20" t="b" s="3"><v>0</v></c>'
    '<c r="C20"/><c r="D20" s="3"><v>2958465</v></c><c r="E20" s="3"><v>abc</v></c>'
    '<c r="F20" s="3"><v>36526.5</v></c><c r="G20" t="b"><v></v></c>'
    '<c r="H20" t="inlineStr"><v>7</v></c><c r="I20" t="n"><is><t>8</t></is></c></row>',
    # text with characters the common form leaves to the general reader
    '<row r="21"><c r="A21" t="inlineStr"><is><t>a &amp; b</t></is></c>'
    '<c r="B21" t="str"><v>x\r\ny</v></c><c r="C21" t="inlineStr"><is><t>d</t></is></c></row>',
]


@pytest.mark.parametrize("rows", READABLE)
def test_the_quick_reader_agrees_with_elementtree(rows: str) -> None:
    data = sheet(rows)
    slow = list(_element_rows(data, BOOK))
    assert _fast_sheet(data, BOOK) == [(ref, _dense(cells)) for ref, cells in slow]
    assert any(cells for _, cells in slow)


@pytest.mark.parametrize(
    "data",
    [
        sheet('<row r="1"><c r="A1"><v>1</v></c></row>').replace(b"UTF-8", b"ISO-8859-1"),
        sheet('<row r="1"><x:c r="A1" xmlns:x="urn:x"><x:v>1</x:v></x:c></row>'),
        sheet('<row r="1"><c r="A1"><v>1<!-- hidden --></v></c></row>'),
        sheet('<row r="1"><c r="A1" t="str"><v><![CDATA[123-45-6789]]></v></c></row>'),
        sheet('<row r="1"><c r="A1" t="str"><v>1<b/>2</v></c></row>'),
        sheet('<row r="1"><c r="A1" t="inlineStr"><is><t>a<b/>c</t></is></c></row>'),
        sheet('<row r="1"><c r="A1"><v>1</v></c></row>').replace(b"</sheetData>", b""),
        b'<!DOCTYPE x [<!ENTITY a "b">]>' + sheet("<row/>"),
        sheet('<row r="1"><c r="A1" t="str"><v>&nbsp;</v></c></row>'),
        sheet('<row r="1"><?pi x?><c r="A1"><v>1</v></c></row>'),
        sheet('<row r="12"><c r="A12" foo="a>b" t="s"><v>1</v></c></row>'),
        "<worksheet><sheetData><row><c t='str'><v>é</v></c></row></sheetData></worksheet>".encode(
            "utf-16"
        ),
    ],
)
def test_whatever_the_quick_reader_does_not_cover_goes_the_slow_way(data: bytes) -> None:
    assert _fast_sheet(data, BOOK) is None


def _whole_sheet_checks_pass(data: bytes) -> bool:
    """The checks as they were before the residue: over the whole sheet, and expat on all of it."""
    text = data.decode("utf-8")
    if office._FAST_UNSUPPORTED_TAG.search(text) or office._FAST_UNSUPPORTED_ATTR.search(text):
        return False
    parser = expat.ParserCreate()
    try:
        parser.Parse(data, True)
    except expat.ExpatError:
        return False
    return True


# Sheets whose cells the common form reads or leaves to the residue, at the edges of
# what the residue argument needs: text that looks like markup, characters XML
# forbids, cells outside any row or element, and values only the general way reads.
EDGES = [
    sheet('<row r="1"><c r="A1" t="inlineStr"><is><t>a=">b</t></is></c></row>'),
    sheet('<row r="1"><c r="A1" t="inlineStr"><is><t>BP > 140</t></is></c></row>'),
    sheet('<row r="1"><c r="A1" t="inlineStr"><is><t>x]]>y</t></is></c></row>'),
    sheet('<row r="1"><c r="A1" t="inlineStr"><is><t>a\x01b</t></is></c></row>'),
    sheet('<row r="1"><c r="A1" t="inlineStr"><is><t>a\uffffb</t></is></c></row>'),
    sheet('<row r="1"><c r="A1" t="inlineStr"><is><t>tab\there</t></is></c></row>'),
    sheet('<row r="1"><v><c r="A1"><v>1</v></c></v></row>'),
    sheet('<row r="1"><t>x<c r="A1"><v>1</v></c></t></row>'),
    sheet('<row r="1"><c r="A1"><v>1</v></c><!-- <c r="B1"><v>2</v></c> --></row>'),
    b'<c r="A1"><v>1</v></c>',
    b'<c r="A1"><v>1</v></c><c r="B1"><v>2</v></c>',
    b'<c r="A1"><v>1</v></c><worksheet/>',
    b'<?xml version="1.0"?><c r="A1"><v>1</v></c>',
    sheet('<row r="1" a=">"><c r="A1"><v>1</v></c></row>'),
    sheet('<row r="1"><c r="A1"><v>1</v></c><c r="A1"><v>2</v></c></row>'),
    sheet('<row r="1"><c r="A1"><v>1</v></c></row></sheetData><sheetData>'),
    sheet('<row r="1"><c r="A1"><v>1</v></c></row><row r="1" r="2"></row>'),
]


@pytest.mark.parametrize("data", EDGES)
def test_the_residue_takes_no_sheet_the_whole_sheet_checks_refuse(data: bytes) -> None:
    rows = _fast_sheet(data, BOOK)
    if rows is None:
        return
    assert _whole_sheet_checks_pass(data)
    assert rows == [(ref, _dense(cells)) for ref, cells in _element_rows(data, BOOK)]


def test_the_residue_still_takes_the_usual_sheets() -> None:
    for rows in READABLE:
        assert _whole_sheet_checks_pass(sheet(rows))
    for data in (EDGES[1], EDGES[5], EDGES[9]):
        assert _fast_sheet(data, BOOK) is not None


DATES = _Workbook(shared=[], dates=frozenset({3}), date1904=False)
DATES_1904 = _Workbook(shared=[], dates=frozenset({3}), date1904=True)


@pytest.mark.parametrize("book", [DATES, DATES_1904])
@pytest.mark.parametrize(
    "cell",
    [
        '<c r="A1" s="3"><v>0</v></c>', '<c r="A1" s="3"><v>1</v></c>',
        '<c r="A1" s="3"><v>60</v></c>', '<c r="A1" s="3"><v>61</v></c>',
        '<c r="A1" s="3"><v>035749</v></c>', '<c r="A1" s="3" t="n"><v>35749</v></c>',
        '<c r="A1" s="3"><v>2957003</v></c>', '<c r="A1" s="3"><v>2958466</v></c>',
        '<c r="A1" s="3"><v>99999999</v></c>', '<c r="A1" s="3"><v>\u0661\u0662</v></c>',
        '<c r="A1" s="03"><v>35749</v></c>', '<c r="A1" s="3" t="s"><v>0</v></c>',
        '<c r="A1" s="3" t="str"><v>35749</v></c>', '<c r="A1" s="3"><v>35749.5</v></c>',
        '<c r="A1" s="3"><v>-1</v></c>', '<c r="A1" s="3"><v></v></c>',
    ],
)  # fmt: skip
def test_date_cells_read_by_their_day_number_as_shown_reads_them(
    cell: str, book: _Workbook
) -> None:
    data = sheet(f'<row r="1">{cell}</row>')
    try:
        slow: object = [(ref, _dense(cells)) for ref, cells in _element_rows(data, book)]
    except OverflowError:
        slow = None  # past 9999 in the 1904 system: the slow way fails, the quick one declines
    assert _fast_sheet(data, book) == slow


def test_a_date_past_9999_fails_the_slow_way_after_the_rows_before_it() -> None:
    data = sheet(
        '<row r="1"><c r="A1"><v>1</v></c></row><row r="2"><c s="3"><v>2958465</v></c></row>'
    )
    assert _fast_sheet(data, DATES_1904) is None
    rows = _element_rows(data, DATES_1904)
    assert next(rows) == ("1", {0: "1"})
    with pytest.raises(OverflowError):
        next(rows)


@pytest.mark.parametrize(
    "cells",
    [
        '<c r="B1"><v>1</v></c><c r="A1"><v>2</v></c>',  # out of order
        '<c r="A1"><v>1</v></c><c r="C1"><v>3</v></c>',  # a gap
        '<c r="A1"><v>1</v></c><c r="A1"><v>2</v></c><c r="A1"><v></v></c>',  # the same again
        '<c r="A1"><v>1</v></c><c r="B1"><v></v></c><c r="C1" t="s"><v>9</v></c>',  # empty tail
        '<c><v>1</v></c><c r="C1"><v>3</v></c><c><v>4</v></c>',  # no r after an r
        '<c r="A1"><v>1</v></c><c r="B1"><v>a&amp;b</v></c><c r="C1"><v>3</v></c>',
        "".join(f"<c><v>{n}</v></c>" for n in range(1030)) + "<c><v></v></c>",  # wide
        "".join(f"<c><v>{n % 2 or ''}</v></c>" for n in range(1030)),
        '<c r="A1"><v>1</v></c><c r="AMK1"><v>2</v></c>',  # past the dense width
    ],
)
def test_rows_read_in_column_order_give_what_the_column_map_gives(cells: str) -> None:
    data = sheet(f'<row r="1">{cells}</row><row r="2"/>')
    slow = [(ref, _dense(found)) for ref, found in _element_rows(data, BOOK)]
    assert _fast_sheet(data, BOOK) == slow
