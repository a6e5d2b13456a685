"""Provider identifiers: NPI and DEA registration numbers.

They identify clinicians and organisations, not patients: a hit is clinical
context only and never makes a message PHI on its own. The organisation's
own NPIs (in every signature) can be allow-listed so they count for nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from policies.detect.base import (
    NO_CONTEXT,
    ZERO_DIGITS,
    Finding,
    ScanContext,
    SegmentLike,
    finditer_rough,
    luhn_ok,
    near,
    starts_token,
    value_key,
)

_NPI_RE = re.compile(r"([12]\d{9})(?![\d-])")
_NPI_KW_RE = re.compile(r"\bnpi\b|national provider")
_DEA_RE = re.compile(r"([ABCDEFGHJKLMPRSTUX][A-Z9])(\d{7})(?![A-Za-z0-9])")
# Both patterns start with a character class, which the regex engine tries at
# every such character of a table full of digits and capitals: on ASCII text
# they are looked for on the ZERO_DIGITS shadow (see base.finditer_rough).
_TEN_DIGITS_RE = re.compile("0" * 10)
_DIGIT_RUN_RE = re.compile("0000000" + "0*")  # a literal start the engine skips to


def _npi_matches(text: str) -> Iterator[re.Match[str]]:
    """_NPI_RE.finditer(text), tried only where ten digits begin."""
    if not text.isascii():
        yield from _NPI_RE.finditer(text)
        return
    yield from finditer_rough(_NPI_RE, text, _TEN_DIGITS_RE, text.translate(ZERO_DIGITS))


def _dea_matches(text: str) -> Iterator[re.Match[str]]:
    """_DEA_RE.finditer(text), tried only where a run of 7 or 8 digits ends.

    A match's seven digits end a run of digits (no letter or digit may follow)
    that began right after its first letter or, when its second character is a
    9, one earlier: so it starts exactly nine characters before the run's end.
    """
    if not text.isascii():
        yield from _DEA_RE.finditer(text)
        return
    for run in _DIGIT_RUN_RE.finditer(text.translate(ZERO_DIGITS)):
        start = run.end() - 9
        if run.end() - run.start() <= 8 and start >= 0:
            m = _DEA_RE.match(text, start)
            if m is not None:
                yield m


def npi_valid(npi: str) -> bool:
    """NPI check digit: Luhn over the number prefixed with the card issuer code 80840."""
    return len(npi) == 10 and npi.isdigit() and luhn_ok("80840" + npi)


def npi_key(npi: str) -> str:
    """The finding key an NPI produces (for allow-lists)."""
    return value_key("npi", npi)


def dea_valid(number: str) -> bool:
    """DEA check digit: (d1+d3+d5) + 2*(d2+d4+d6), last digit equals d7."""
    d = [ord(c) - 48 for c in number]
    total = d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])
    return total % 10 == d[6]


class NpiDetector:
    """National Provider Identifiers (10 digits with a valid check digit)."""

    id = "npi"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        if not ctx.digits:
            return
        for m in _npi_matches(seg.text):
            npi = m.group(1)
            if not npi_valid(npi) or not starts_token(seg.text, m.start(), "-"):
                continue
            keyword = near(low, m.start(), m.end(), _NPI_KW_RE, 30, 0) or "npi" in ctx.header
            yield Finding(
                self.id,
                self.version,
                "npi",
                "provider",
                seg.location,
                "******" + npi[-4:],
                1.0 if keyword else 0.6,
                m.start(),
                m.end(),
                0.3,
                npi_key(npi),
            )


class DeaDetector:
    """DEA registration numbers (two letters, seven digits, check digit)."""

    id = "dea"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        if not ctx.digits:
            return
        for m in _dea_matches(seg.text):
            if not dea_valid(m.group(2)) or not starts_token(seg.text, m.start()):
                continue
            yield Finding(
                self.id,
                self.version,
                "dea",
                "provider",
                seg.location,
                "**" + "*****" + m.group(2)[-2:],
                0.9,
                m.start(),
                m.end(),
                0.3,
                value_key("dea", m.group(0)),
            )
