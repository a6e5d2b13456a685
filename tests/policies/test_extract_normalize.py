"""Normalisation: what detectors can rely on in every segment's text."""

from __future__ import annotations

import sys
import unicodedata

from policies.extract.normalize import decode_bytes, looks_like_text, normalize


def test_nfkc_turns_lookalike_digits_into_ascii() -> None:
    assert (
        normalize(
            "\uff33\uff33\uff2e \uff11\uff12\uff13\uff0d\uff14\uff15\uff0d\uff16\uff17\uff18\uff19"
        )
        == "SSN 123-45-6789"
    )
    assert normalize("MRN\u00a0\u2009448812") == "MRN 448812"


def test_invisible_characters_are_removed() -> None:
    hidden = "1\u200b2\u200c3\u200d-\u206045\ufeff-67\u00ad89\u2062"
    assert normalize(hidden) == "123-45-6789"
    assert normalize("12\x0034\x0156") == "123456"
    assert normalize("Pa\u202etient") == "Patient"


def test_every_format_character_is_covered() -> None:
    format_chars = [
        chr(cp) for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Cf"
    ]
    leftovers = [f"U+{ord(c):04X}" for c in format_chars if normalize(f"a{c}b") != "ab"]
    assert leftovers == []


def test_whitespace_runs_collapse_but_lines_stay() -> None:
    text = "  Name:\t\tJane   Roe  \r\n\r\n\r\n\r\nDOB:  01/02/1980 \rnext\u2028line "
    assert normalize(text) == "Name: Jane Roe\n\nDOB: 01/02/1980\nnext\nline"


def test_normalised_text_is_a_fixed_point() -> None:
    for text in ("a\u200b b\n\n\nc", "\uff21\uff22\t\tc\r\nd", "x \n y", "\ufb01le"):
        once = normalize(text)
        assert normalize(once) == once


def test_lone_surrogates_do_not_survive() -> None:
    cleaned = normalize("abc\udc80def")
    cleaned.encode("utf-8")
    assert cleaned == "abcdef"


def test_decode_bytes_fallbacks() -> None:
    assert decode_bytes("héllo".encode("utf-16")) == "héllo"
    assert decode_bytes("héllo".encode("utf-16-le")) == "héllo"
    assert decode_bytes(b"\xef\xbb\xbfbom") == "bom"
    assert decode_bytes("café".encode("cp1252")) == "café"
    assert decode_bytes("café".encode("latin-1"), "iso-8859-1") == "café"
    assert decode_bytes(b"\x93quoted\x94", "us-ascii") == "\u201cquoted\u201d"
    assert decode_bytes("café".encode(), "no-such-charset") == "café"
    assert decode_bytes(b"abc", "base64") == "abc"


def test_looks_like_text() -> None:
    assert looks_like_text(b"plain text\r\n")
    assert looks_like_text(b"ISO-2022 \x1b$B\x1b(B")
    assert looks_like_text("utf-16 text".encode("utf-16"))
    assert not looks_like_text(bytes(range(256)) * 4)
