"""The NPI and DEA searches on a digit shadow find exactly what the plain patterns find."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.detect.provider import _DEA_RE, _NPI_RE, _dea_matches, _npi_matches

_PIECES = (
    "1", "2", "9", "0", "12", "1234567890", "2345678901", "AB", "A9", "X", "ab", "-", " ",
    "\n", "|", "NPI ", "DEA: ", "BJ1234563", "AB12345678", "9", "Z", "Q", "1111111111111",
)  # fmt: skip


def _spans(matches: object) -> list[tuple[int, int]]:
    return [m.span() for m in matches]  # type: ignore[attr-defined]


def _same(text: str) -> None:
    assert _spans(_npi_matches(text)) == _spans(_NPI_RE.finditer(text)), text
    assert _spans(_dea_matches(text)) == _spans(_DEA_RE.finditer(text)), text


def test_random_texts_from_fragments() -> None:
    """Digit runs of every length around letters, separators and real numbers."""
    rng = random.Random(5)
    for _ in range(3000):
        _same("".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 14))))


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789ABJX9a -\n|\u0663", max_size=40))
def test_any_text(text: str) -> None:
    """Including non-ASCII digits, which take the plain patterns."""
    _same(text)
