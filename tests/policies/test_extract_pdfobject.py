"""The quick object reader gives every object exactly as pypdf's parser gives it."""

from __future__ import annotations

import io
import zlib
from typing import Any

import pytest
from pypdf import PdfReader
from pypdf.generic import IndirectObject, StreamObject

import policies.extract.pdf  # noqa: F401 - keeps pypdf's warnings out of the test log
from policies.extract.pdfobject import QuickReader

CONTENT = zlib.compress(b"BT /F1 12 Tf 72 720 Td (Patient: Jane Roe) Tj ET")

# Object bodies, numbered from 5 (1-4 are the catalog, page tree, page and font).
BODIES = [
    b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(CONTENT) + CONTENT + b"\nendstream",
    b"<< /Length %d /Filter /FlateDecode >>\r\nstream\r\n" % len(CONTENT)
    + CONTENT
    + b"\r\nendstream",
    b"<</Length 3>>stream  \rabc endstream",  # spaces, then a lone CR
    b"<< /Length 5 >>\nstream\nabc\nendstream",  # a length past the data
    b"<< /Length 2 >>\nstream\nabc\nendstream",  # short of it
    b"<< /Length 30 0 R >>\nstream\nabc\nendstream",  # an indirect length
    b"<< /Length -1 >>\nstream\nabc\nendstream",
    b"<< /A [1 2.5 -3 +4 .5 5. 0 0 R 12 0 R] /B << /C /D /E [[/F] << >>] >> /G 1 0 R >>",
    b"<< /A 1  0   R /B 2\n0\nR /C 12345678901 0 R /D 1 0 Rx >>",  # references pypdf reads or not
    b"<< /N#20x /A 1 >>",  # a name with an escape
    b"<< /A (a string) /B <414243> /C true /D null >>",
    b"<< /A 1 /A 2 >>",  # a repeated key
    b"<< /A 1 % a comment\n /B 2 >>",
    b"<< /A\x0b1 >>",  # vertical tab
    b"<< /A [1\x0b2] /B\x001 >>",
    b"<< /A 1 >\n",  # a dictionary never closed
    b"<< /A 1-2 /B +-.5 /C 1.2.3 >>",  # numbers pypdf reads its own way
    b"<< /A 1 >>\nstreamx\n",
    b"<< /A 123456789012345678901234 >>",
    b"[1 2 3]",
    b"42",
    b"(text)",
    b"<< /Type /XObject /Subtype /Image /Width 1 /Height 1 /Length 1 >>stream\n\x00\nendstream",
]


def build(bodies: list[bytes], header_noise: bytes = b"") -> bytes:
    """A PDF with the usual first four objects and `bodies`, and a correct xref table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 5 0 R "
        b"/Resources << /Font << /F1 4 0 R >> >> >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        *bodies,
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += header_noise + b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def same(a: Any, b: Any) -> bool:
    """Equal values of the same pypdf types, references compared by number."""
    if type(a) is not type(b):
        return False
    if isinstance(a, IndirectObject):
        return (a.idnum, a.generation) == (b.idnum, b.generation)
    if isinstance(a, StreamObject) and a._data != b._data:
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(
            type(k) is type(j) and same(dict.__getitem__(a, k), dict.__getitem__(b, j))
            for k, j in zip(a, b, strict=True)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(
            same(x, y) for x, y in zip(list.__iter__(a), list.__iter__(b), strict=True)
        )
    return bool(a == b) and repr(a) == repr(b)


def objects(reader: PdfReader) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for number in sorted(reader.xref[0]):
        try:
            out[number] = reader.get_object(IndirectObject(number, 0, reader))
        except Exception as exc:  # the failure itself is compared
            out[number] = type(exc)
    return out


@pytest.mark.parametrize("index", range(len(BODIES)))
@pytest.mark.parametrize("noise", [b"", b"\n", b" \x00\r\n"])
def test_each_object_reads_as_pypdf_reads_it(index: int, noise: bytes) -> None:
    data = build([BODIES[0], BODIES[index]], noise)
    slow = objects(PdfReader(io.BytesIO(data), strict=False))
    quick_reader = QuickReader(data, io.BytesIO(data), strict=False)
    quick = objects(quick_reader)
    assert slow.keys() == quick.keys()
    for number, value in slow.items():
        assert same(value, quick[number]), (number, value, quick[number])
    assert quick_reader.pages[0].extract_text() == "Patient: Jane Roe"


def test_whole_documents_read_the_same() -> None:
    data = build(BODIES)
    slow, quick = PdfReader(io.BytesIO(data)), QuickReader(data, io.BytesIO(data))
    assert [p.extract_text() for p in slow.pages] == [p.extract_text() for p in quick.pages]
    slow_objects, quick_objects = objects(slow), objects(quick)
    assert all(same(v, quick_objects[k]) for k, v in slow_objects.items())


def test_plain_objects_do_take_the_quick_way() -> None:
    data = build(BODIES)
    reader = QuickReader(data, io.BytesIO(data))
    assert reader._quick(4, 0) is not None  # the font dictionary
    assert reader._quick(5, 0) is not None  # a content stream
    assert reader._quick(15, 0) is None  # strings: pypdf's
