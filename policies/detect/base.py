"""What every detector shares: the Finding it returns, the detector shape and text helpers.

A finding never carries the matched text: only the rule, where it was, a
masked rendering for people and an opaque key (a hash) so identical values
can be counted once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

Kind = Literal["identifier", "health", "sensitive", "provider", "unscannable"]


class SegmentLike(Protocol):
    """The part of policies.extract.Segment that detectors read."""

    @property
    def location(self) -> str:
        """Where the text came from, e.g. "body/1 text/plain"."""
        ...

    @property
    def text(self) -> str:
        """Normalised text."""
        ...

    @property
    def kind(self) -> str:
        """ "subject", "header", "body" or "attachment"."""
        ...

    @property
    def is_row(self) -> bool:
        """True when the segment is one table row."""
        ...


class Finding(NamedTuple):
    """One detector hit: rule, category, where, masked value, confidence and span.

    A named tuple rather than a frozen dataclass: dense tables produce tens of
    thousands of findings, and a frozen dataclass costs several times more to build.
    """

    rule: str  # detector id, e.g. "us-ssn"
    version: int
    category: str  # e.g. "ssn", "icd10", "hiv"
    kind: Kind
    location: str
    masked: str  # never the matched text
    score: float  # 0..1: how sure the detector is
    start: int = 0
    end: int = 0
    # Weight of this hit in the verdict (identifier strength or health weight).
    weight: float = 1.0
    # Hash of the normalised value: counts distinct people, matches allow-lists.
    key: str = ""


@dataclass(frozen=True, slots=True)
class ScanContext:
    """What a detector may know beyond the segment: the table header of a row, and
    facts about the text that `scan_segment` works out once for every detector."""

    header: str = ""  # lower-cased header row of the table this row belongs to
    # False when the text holds no ASCII digit: number detectors then skip it.
    digits: bool = True


NO_CONTEXT = ScanContext()


class Detector(Protocol):
    """A named, versioned rule that finds things in one segment."""

    id: str
    version: int

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterable[Finding]:
        """Findings in seg.text; low is lower_same_length(seg.text)."""
        ...


# Patterns that start with a character class (\d, [a-z]) make the regex engine
# try a match at every such character, which is slow on digit-heavy tables; one
# that starts with a literal is found by a far quicker skip. So several detectors
# search a same-length "shadow" of an ASCII text where each class their pattern
# asks about is one literal (on ASCII, \d is [0-9]), and confirm each hint on
# the text itself. This shadow turns every digit into "0".
ZERO_DIGITS = str.maketrans(dict.fromkeys("0123456789", "0"))


def finditer_rough(
    pattern: re.Pattern[str], text: str, rough: re.Pattern[str], shadow: str, lead: int = 0
) -> Iterator[re.Match[str]]:
    """pattern.finditer(text), tried only where `rough` matches `shadow` (same length).

    Wherever pattern matches the text at i, rough must match the shadow at i + lead.
    """
    pos = lead
    search, match = rough.search, pattern.match
    while (hint := search(shadow, pos)) is not None:
        m = match(text, hint.start() - lead)
        if m is None:
            pos = hint.start() + 1
        else:
            yield m
            pos = m.end() + lead  # never empty


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def lower_same_length(text: str) -> str:
    """text.lower() when that keeps every offset; else only ASCII is lowered."""
    low = text.lower()
    # A few characters ("İ") lower-case to two code points and would shift
    # every span after them.
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


def value_key(rule_family: str, normalised: str) -> str:
    """Opaque key for a normalised value (for distinct counts and allow-lists).

    Keys never leave the process that scanned the message (decisions carry no
    key), so Python's string hash serves: keyed with a secret drawn at process
    start, and several times cheaper than a cryptographic digest on tables with
    thousands of findings. Not cached: a cache would keep identifiers of past
    messages in memory.
    """
    return f"{hash(rule_family + chr(0) + normalised):x}"


def has_digit(text: str) -> bool:
    """Whether text holds an ASCII digit (ten substring searches: far quicker than a regex)."""
    return any(d in text for d in "0123456789")


def digits(s: str) -> str:
    """Only the ASCII digits of s."""
    return "".join(c for c in s if "0" <= c <= "9")


def mask_digits(value: str, keep: int = 4) -> str:
    """Replace every digit but the last `keep` with '*', keeping separators as '-'."""
    ds = digits(value)
    shown = len(ds) - keep
    out = []
    seen = 0
    for c in value:
        if "0" <= c <= "9":
            out.append(c if seen >= shown else "*")
            seen += 1
        elif c in "- .\t\r\n":
            if out and out[-1] != "-":
                out.append("-")
        elif c.isalpha():
            out.append("*")
    return "".join(out).strip("-")


def mask_token(value: str, keep: int = 2) -> str:
    """A masked rendering of an alphanumeric identifier: '*' for all but the last chars."""
    v = value if value.isalnum() else "".join(c for c in value if c.isalnum())
    if len(v) <= keep + 2:
        return "*" * len(v)
    return "*" * (len(v) - keep) + v[-keep:]


def near(low: str, start: int, end: int, pattern: re.Pattern[str], before: int, after: int) -> bool:
    """True when pattern occurs within `before` chars ahead of or `after` chars behind a span."""
    if before and pattern.search(low, max(0, start - before), start):
        return True
    return bool(after and pattern.search(low, end, min(len(low), end + after)))


def starts_token(text: str, i: int, also: str = "") -> bool:
    """True when index i begins a token: no letter, digit, '_' or one of `also` before it.

    Patterns check this in code rather than with a leading look-behind, which
    would stop the regex engine from skipping quickly to plausible first characters.
    """
    if i == 0:
        return True
    c = text[i - 1]
    return not (c.isalnum() or c == "_" or c in also)


def luhn_ok(number: str) -> bool:
    """Luhn checksum over a string of digits."""
    total = 0
    for i, c in enumerate(reversed(number)):
        d = ord(c) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0
