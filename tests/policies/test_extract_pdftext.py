"""pdftext reads page text as pypdf does: compared with pypdf on generated content streams."""

from __future__ import annotations

import io
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypdf import PdfReader

from policies.extract.pdftext import FontCache, Unsupported, page_text
from tests.policies.fixtures.build import PAGE_FONTS, make_pdf, make_pdf_page

logging.getLogger("pypdf").setLevel(logging.CRITICAL + 1)


def both(pdf: bytes) -> tuple[str | None, str]:
    """(our text or None when we hand the page to pypdf, pypdf's text)."""
    ours: str | None
    try:
        ours = page_text(PdfReader(io.BytesIO(pdf)).pages[0], FontCache())
    except Unsupported:
        ours = None
    return ours, PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


# --- generated content streams ------------------------------------------------------

_WORDS = [
    "Patient", "DOB 03/14/1962", "MRN: 00123456", "a\\(b\\)", "\\101\\102", "tab\\tnl\\n",
    "\\777", "x\\\ny", "caf\xe9", "", " ", "AVAWAY", "fi", "\\q", "(nested (deeper))",
]  # fmt: skip
_NUMBERS = st.sampled_from(
    ["0", "12", "14.4", "-0.001", ".5", "-.25", "-250", "-600", "50", "700", "-1000", "3.75"]
)


@st.composite
def _string(draw: st.DrawFn, font: str) -> str:
    if font == "F4":  # two bytes a character
        codes = draw(
            st.lists(st.sampled_from([0x41, 0x20, 0x100, 0x101, 0x102, 0x1234]), max_size=5)
        )
        return "<" + "".join(f"{c:04X}" for c in codes) + ">"
    if draw(st.booleans()):
        return "(" + draw(st.sampled_from(_WORDS)) + ")"
    raw = draw(st.binary(max_size=6))
    return "<" + raw.hex().upper() + ">"


@st.composite
def _operation(draw: st.DrawFn, font: str) -> str:
    kind = draw(st.integers(0, 21))
    num = lambda: draw(_NUMBERS)  # noqa: E731
    if kind == 0:
        return "BT"
    if kind == 1:
        return "ET"
    if kind == 2:
        size = draw(st.sampled_from(["10", "12", "7.5", "0", "24"]))
        return f"/{draw(st.sampled_from([*PAGE_FONTS, 'F9']))} {size} Tf"
    if kind in (3, 4):
        return f"{draw(_string(font))} Tj"
    if kind == 5:
        items = draw(st.lists(st.one_of(_string(font), _NUMBERS), max_size=6))
        return f"[{' '.join(items)}] TJ"
    if kind == 6:
        return f"{num()} {num()} Td"
    if kind == 7:
        return f"{num()} {num()} TD"
    if kind == 8:
        return "T*"
    if kind == 9:
        m = draw(st.sampled_from(["1 0 0 1", "0 1 -1 0", "-1 0 0 -1", "0 -1 1 0", "2 0 0 2"]))
        return f"{m} {num()} {num()} Tm"
    if kind == 10:
        m = draw(st.sampled_from(["1 0 0 1", "0 1 -1 0", "1 0 0 -1", "0.5 0 0 0.5"]))
        return f"{m} {num()} {num()} cm"
    if kind == 11:
        return draw(st.sampled_from(["q", "Q"]))
    if kind == 12:
        return f"{num()} {draw(st.sampled_from(['TL', 'Tc', 'Tw']))}"
    if kind == 13:
        return f"{draw(st.sampled_from(['50', '100', '150']))} Tz"
    if kind == 14:
        return f"{draw(_string(font))} '"
    if kind == 15:
        return f'{num()} {num()} {draw(_string(font))} "'
    if kind == 16:
        return "/Im1 Do"
    if kind == 17:
        return "/Span << /ActualText (x) /MCID 3 >> BDC"
    if kind == 18:
        return "EMC"
    if kind == 19:
        return "% a comment Tj\n"
    if kind == 20:
        return "0 0 m 100 100 l S 1 0 0 rg"
    return f"{draw(st.integers(0, 3))} Tr"


@st.composite
def _content(draw: st.DrawFn) -> bytes:
    font = draw(st.sampled_from(PAGE_FONTS))
    ops = draw(st.lists(_operation(font), min_size=1, max_size=30))
    return "\n".join(ops).encode("latin-1")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_content())
def test_same_text_as_pypdf(content: bytes) -> None:
    ours, theirs = both(make_pdf_page(content))
    assert ours is None or ours == theirs


def test_fixture_pdfs_read_the_same() -> None:
    pdf = make_pdf(["Patient: Jane Roe\nDOB 01/02/1980", "Page two MRN 448812", None])
    reader = PdfReader(io.BytesIO(pdf))
    fonts = FontCache()
    for page in reader.pages:
        assert page_text(page, fonts) == page.extract_text()


@pytest.mark.parametrize(
    "content",
    [
        b"BT /F1 12 Tf (text) Tj ET q BI /W 1 /H 1 /BPC 8 /CS /G ID \x80 EI Q",  # inline image
        b"BT /F1 12 Tf (text) Tj ET /Fm1 Do",  # a form may hold text of its own
        b"BT /F4 12 Tf <05D005D1> Tj ET",  # right-to-left script: pypdf reorders it
        b"BT /F1 12 Tf (unterminated Tj ET",
    ],
)
def test_what_only_pypdf_reads_goes_to_pypdf(content: bytes) -> None:
    with pytest.raises(Unsupported):
        page_text(PdfReader(io.BytesIO(make_pdf_page(content))).pages[0], FontCache())


def test_fonts_are_read_once_per_document() -> None:
    pdf = make_pdf(["one", "two", "three"])
    reader = PdfReader(io.BytesIO(pdf))
    fonts = FontCache()
    texts = [page_text(page, fonts) for page in reader.pages]
    assert [t.strip() for t in texts] == ["one", "two", "three"]
    assert len(fonts._by_object) == 1
