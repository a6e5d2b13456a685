"""Fuzzing extraction: random and mutated messages, PDFs and archives never raise or hang.

Each property keeps its example count small so the whole file runs in seconds;
pytest-timeout (configured globally) turns a hang into a failure. For a longer
campaign, multiply every count: SEALGATE_FUZZ_SCALE=20 pytest tests/policies/test_fuzz_extract.py
"""

from __future__ import annotations

import os
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.extract import Extraction, Limits, extract
from policies.extract.normalize import normalize
from tests.policies.fixtures.build import (
    make_docx,
    make_message,
    make_pdf,
    make_pptx,
    make_xlsx,
    make_zip,
)
from tests.policies.fixtures.look import ALLOWED_REASONS

_SCALE = int(os.environ.get("SEALGATE_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    """Hypothesis settings for one property: no deadline (CI machines vary), scaled count."""
    return settings(
        max_examples=examples * _SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Small budgets keep each example fast without hiding code paths.
LIMITS = Limits(max_part_bytes=4 << 20, max_total_bytes=16 << 20, timeout_s=10.0)
_KINDS = {"subject", "header", "body", "attachment"}


def check(result: Extraction) -> None:
    """What every extraction must satisfy, however broken the input."""
    assert isinstance(result, Extraction)
    for segment in result.segments:
        assert segment.kind in _KINDS
        assert segment.location and isinstance(segment.location, str)
        assert segment.text and normalize(segment.text) == segment.text
        assert "\u200b" not in segment.text and "\u00ad" not in segment.text
        segment.text.encode("utf-8")
    for item in result.unscannable:
        assert item.reason in ALLOWED_REASONS
        assert item.location
    for info in result.attachments:
        assert info.size >= 0
    locations = [info.location for info in result.attachments]
    assert len(locations) == len(set(locations))
    for name, value in result.headers.items():
        assert name == name.lower()
        value.encode("utf-8")


def _seeds() -> tuple[bytes, ...]:
    """Valid messages covering every format, for mutation."""
    pdf = make_pdf(["Patient Jane Roe", None], image_pages=[1], fields={"Name": "John"})
    docx = make_docx(["Body text"], table=[["Name", "MRN"], ["Jane", "448812"]], header="hdr")
    xlsx = make_xlsx({"S": [["Name", "DOB"], ["Jane", 1]]})
    pptx = make_pptx(["slide"], notes=["note"])
    archive = make_zip({"a.csv": "x,y\n1,2\n", "in.zip": make_zip({"t.txt": "deep"})})
    rtf = rb"{\rtf1\ansi{\fonttbl{\f0 Arial;}}\pard Hello \'e9\u8364?\par}"
    ics = b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:Visit\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    html = "<table><tr><th>Name</th><th>MRN</th></tr><tr><td>Jane</td><td>1</td></tr></table>"
    return (
        make_message("plain body =?utf-8?q?x?=", subject="=?utf-8?b?w6k=?= subject", html=html),
        make_message(
            "with files",
            attachments=[
                ("a.pdf", pdf, "application/pdf"),
                ("d.docx", docx, "application/octet-stream"),
                ("x.xlsx", xlsx, "application/octet-stream"),
                ("p.pptx", pptx, "application/octet-stream"),
                ("z.zip", archive, "application/zip"),
                ("r.rtf", rtf, "application/rtf"),
                ("i.ics", ics, "text/calendar"),
                ("fwd.eml", make_message("inner"), "message/rfc822"),
            ],
        ),
    )


@st.composite
def _mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """Apply a few random edits: byte flips, deletions, insertions, truncation, duplication."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "insert":
            data[at:at] = draw(
                st.sampled_from(
                    [
                        b"\r\n",
                        b"--",
                        b"\x00",
                        b"=?",
                        b"?=",
                        b"\r\n--boundary\r\n",
                        b"<",
                        b"{",
                        b"\xff",
                    ]
                )
            )
        elif op == "truncate":
            del data[at:]
        else:
            end = min(len(data), at + draw(st.integers(1, 256)))
            data[at:at] = data[at:end]
    return bytes(data)


def _mutations_of(seeds: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    return st.sampled_from(seeds).flatmap(_mutated)


@fuzz(150)
@given(st.binary(max_size=4096))
def test_random_bytes(raw: bytes) -> None:
    check(extract(raw, LIMITS))


# Seeds are built once, outside the strategies: the email package's boundaries use
# `random`, which Hypothesis (rightly) does not want called while it draws.
SEEDS = _seeds()


@fuzz(150)
@given(_mutations_of(SEEDS))
def test_mutated_messages(raw: bytes) -> None:
    check(extract(raw, LIMITS))


_HEADER_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=40,
)
_ENCODED_WORD = st.builds(
    lambda cs, enc, payload: f"=?{cs}?{enc}?{payload}?=",
    st.sampled_from(["utf-8", "iso-8859-1", "iso-2022-jp", "x-unknown", "zlib", ""]),
    st.sampled_from(["b", "q", "B", "x"]),
    st.text(alphabet="ABCDEFabcdef0123456789=_+/", max_size=20),
)


@st.composite
def _entity(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A random MIME entity: headers with odd encodings and a body or nested parts."""
    content_type = draw(
        st.sampled_from(
            [
                "text/plain",
                "text/html",
                "text/csv",
                "application/octet-stream",
                "application/pdf",
                "message/rfc822",
                "multipart/mixed",
                "multipart/alternative",
                "image/png",
                "text/calendar",
            ]
        )
    )
    charset = draw(st.sampled_from(["utf-8", "iso-8859-1", "utf-16", "bogus", "zlib", ""]))
    cte = draw(st.sampled_from(["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", ""]))
    headers = [
        f'Content-Type: {content_type}; charset={charset}; name="{draw(_HEADER_TEXT)}"',
        f"Content-Transfer-Encoding: {cte}",
        f"Subject: {draw(_HEADER_TEXT)} {draw(_ENCODED_WORD)}",
    ]
    if draw(st.booleans()):
        headers.append(f"Content-Disposition: attachment; filename*=utf-8''{draw(_HEADER_TEXT)}")
    head = "\r\n".join(headers).encode("utf-8", "surrogatepass") + b"\r\n\r\n"
    if content_type.startswith("multipart/") and depth < 4:
        boundary = draw(st.sampled_from(["b", "==x==", "", "a b", "-"])) + str(depth)
        head = head.replace(
            content_type.encode(), f'{content_type}; boundary="{boundary}"'.encode(), 1
        )
        children = draw(st.lists(_entity(depth + 1), max_size=3))
        body = b"".join(f"--{boundary}\r\n".encode() + child + b"\r\n" for child in children)
        if draw(st.booleans()):
            body += f"--{boundary}--\r\n".encode()
        return head + body
    if content_type == "message/rfc822" and depth < 4:
        return head + draw(_entity(depth + 1))
    return head + draw(st.binary(max_size=300))


@fuzz(150)
@given(_entity())
def test_random_mime_structures(raw: bytes) -> None:
    check(extract(raw, LIMITS))


PDF_SEED = make_pdf(
    ["Patient Jane Roe\nMRN 448812", "page two"], image_pages=[1], fields={"A": "b"}
)


@fuzz(100)
@given(_mutated(PDF_SEED))
def test_broken_pdfs(pdf: bytes) -> None:
    result = extract(make_message("x", attachments=[("f.pdf", pdf, "application/pdf")]), LIMITS)
    check(result)
    # Either some text came out or the file is listed as unscannable: never silence.
    scanned = any(s.location.startswith("attachment 2 (.pdf)") for s in result.segments)
    flagged = any(u.location.startswith("attachment 2 (.pdf)") for u in result.unscannable)
    assert scanned or flagged or not pdf.strip()


# zipfile cuts names at NUL and treats a trailing "/" as a folder.
_MEMBER_NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=30,
).filter(lambda n: not n.endswith("/"))


@fuzz(60)
@given(
    st.dictionaries(_MEMBER_NAMES, st.binary(max_size=200), max_size=5),
    st.integers(0, 3),
)
def test_random_zips(members: dict[str, bytes], mutations: int) -> None:
    archive = make_zip(members)
    data = bytearray(archive)
    for index in range(mutations):
        position = (index * 7919 + len(data) // 3) % max(len(data), 1)
        if data:
            data[position] ^= 0x5A
    result = extract(
        make_message("x", attachments=[("r.zip", bytes(data), "application/zip")]), LIMITS
    )
    check(result)


OFFICE_SEEDS = (
    make_docx(["Jane Roe"], table=[["a", "b"]], header="h", comment="c"),
    make_xlsx({"S": [["Name", "DOB"], ["Jane", 1]]}),
    make_pptx(["slide"], notes=["n"]),
)


@fuzz(100)
@given(_mutations_of(OFFICE_SEEDS))
def test_broken_office_documents(document: bytes) -> None:
    result = extract(
        make_message("x", attachments=[("doc.bin", document, "application/octet-stream")]), LIMITS
    )
    check(result)


@fuzz(300)
@given(st.text())
def test_normalize_is_idempotent_and_removes_invisibles(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert not any(unicodedata.category(ch) == "Cf" for ch in once)


_HTML_PIECES = st.sampled_from(
    [
        "<",
        ">",
        "</",
        "<!--",
        "-->",
        "<!",
        "<?",
        '"',
        "'",
        "=",
        " ",
        "&",
        "&#",
        ";",
        "<table>",
        "<tr>",
        "<td>",
        "<th>",
        "</tr>",
        "</table>",
        "<p>",
        "<br/>",
        "<style>",
        "</style>",
        "<script>",
        "</script>",
        '<img alt="',
        "<title>",
        "<!--[if mso]>",
        "<![endif]-->",
        "x",
        "MRN 448812",
        "\u200b",
        "\x00",
    ]
)


@fuzz(150)
@given(st.lists(_HTML_PIECES, max_size=60).map("".join))
def test_random_html(html: str) -> None:
    check(extract(make_message(None, html=html), LIMITS))
