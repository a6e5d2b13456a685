"""The signer's fast paths agree with the library code they stand in for.

Relaxed header canonicalization is checked against dkimpy's, and the quick
reading of common From: fields against email.utils.getaddresses.
"""

from __future__ import annotations

import email.utils
import re

from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dkim import _from_domain, _relaxed_header, ascii_domain

_HEADER_BYTES = st.lists(
    st.sampled_from(
        [b"a", b"B", b" ", b"  ", b"\t", b"\r\n ", b"\r\n\t", b"\n ", b"\r", b"\x0b", b":", b"=?"]
    ),
    max_size=20,
).map(b"".join)


@settings(max_examples=800, deadline=None)
@given(name=st.sampled_from([b"From", b"SUBJECT", b"to ", b"Date\t"]), value=_HEADER_BYTES)
def test_relaxed_header_matches_dkimpy(name: bytes, value: bytes) -> None:
    assert _relaxed_header(name, value) == Relaxed.canonicalize_headers([(name, value)])[0]


def _library_from_domain(value: bytes) -> str | None:
    text = re.sub(r"\r?\n", "", value.decode("utf-8", "replace"))
    for _display, addr in email.utils.getaddresses([text]):
        if "@" in addr:
            return ascii_domain(addr.rpartition("@")[2])
    return None


_FROM_PIECES = st.sampled_from(
    [" ", "\t", "Front", "desk", "Dr.", '"Q, R"', "<", ">", "doctor", "@", "clinic.example",
     "Clinic.Example", ".", "..", "x-y", "(c)", ",", "=?utf-8?q?=C3=A9?=", "é", "\r\n "]
)  # fmt: skip


@settings(max_examples=1200, deadline=None)
@given(st.lists(_FROM_PIECES, max_size=10).map("".join))
def test_from_domain_matches_email_utils(text: str) -> None:
    value = text.encode()
    assert _from_domain([(b"From", value)]) == _library_from_domain(value)


def test_common_from_fields() -> None:
    for value in (
        b" <desk@clinic.example>",
        b" Front desk <desk@Clinic.Example>",
        b" desk@clinic.example",
        b' "Desk, Front" <desk@clinic.example>',
        b" Dr. Who <who@clinic.example>",
    ):
        assert _from_domain([(b"From", value)]) == "clinic.example"
