"""Identifiers of individuals: SSN, Medicare MBI and HICN, keyword-anchored record
numbers, birth and encounter dates, phone/fax, e-mail and postal addresses.

Each detector validates what it finds (SSA number rules, CMS character
positions, calendar dates) so that look-alikes in ordinary mail do not count.
Weights say how strongly a hit identifies one person: 1.0 alone makes a
message `pii`; contact details weigh little because every signature has them.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator

from policies.detect.base import (
    NO_CONTEXT,
    Finding,
    ScanContext,
    SegmentLike,
    digits,
    mask_token,
    near,
    starts_token,
    value_key,
)
from policies.detect.dates import DATE_PATTERN, DATE_RE, parse_date

# A separator inside an identifier: a dash (maybe with spaces or a line break
# after it), a line break, or up to three spaces. Mail clients and PDF text
# extraction break long numbers at any of these.
_SEP = r"(?:[ \t]*-[ \t]*(?:\r?\n[ \t]*)?|[ \t]*\r?\n[ \t]*|[ \t]{1,3})"

# --- SSN ---------------------------------------------------------------------

_SSN_RE = re.compile(rf"(\d\d\d)({_SEP})(\d{{2}})({_SEP})(\d{{4}})(?![\w]|-\d|\.\d)")
_SSN_BARE_RE = re.compile(r"(\d\d\d)(\.?)(\d{2})\.?(\d{4})(?![\w-]|\.\d)")
_SSN_KW_RE = re.compile(
    r"\b(?:ssn|ss#|ss ?no|soc(?:ial)?\.? ?sec(?:urity)?|social security|ssa number|tin/ssn)"
)
# Labels of other numbers written like SSNs (purchase orders, tickets, parts).
_NOT_SSN_LABEL_RE = re.compile(
    r"(?:\b(?:p\.?\s?o|purchase order|order|invoice|inv|ref|reference|tracking|confirmation"
    r"|conf|part|sku|item|model|serial|ticket|case|quote|contract|account|acct|claim|routing"
    r"|phone|tel|fax|lot|batch)(?:\s*(?:#|no\.?|num(?:ber)?))?|#)[\s:.\-]*$"
)
# Numbers the SSA never issued or that were published as examples.
_SSN_SAMPLES = frozenset({"078051120", "219099999", "123456789", "457555462", "987654321"})


def _after_number(text: str, i: int) -> bool:
    """True for "1.219-45-6781": the digits continue a decimal or version number."""
    return i >= 2 and text[i - 1] == "." and text[i - 2].isdigit()


def ssn_valid(number: str) -> bool:
    """SSA rules: area not 000/666/9xx, group not 00, serial not 0000, no known samples."""
    if len(number) != 9 or number in _SSN_SAMPLES or len(set(number)) == 1:
        return False
    area, group, serial = number[:3], number[3:5], number[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


class SsnDetector:
    """US Social Security numbers: dashed or spaced anywhere, bare only beside a keyword."""

    id = "us-ssn"
    version = 2

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        text = seg.text
        keyword_in_header = bool(ctx.header and _SSN_KW_RE.search(ctx.header))
        seen: set[int] = set()
        for m in _SSN_RE.finditer(text):
            if not starts_token(text, m.start(), "-") or _after_number(text, m.start()):
                continue
            number = m.group(1) + m.group(3) + m.group(5)
            if not ssn_valid(number):
                continue
            keyword = keyword_in_header or near(low, m.start(), m.end(), _SSN_KW_RE, 60, 25)
            if not keyword and _NOT_SSN_LABEL_RE.search(low, max(0, m.start() - 30), m.start()):
                continue  # "PO# 152-78-7116": order and reference numbers share the shape
            dashed = "-" in m.group(2) and "-" in m.group(4)
            score = 1.0 if keyword else 0.9 if dashed else 0.7
            seen.add(m.start())
            yield self._finding(seg, m, number, score)
        for m in _SSN_BARE_RE.finditer(text):
            if (
                m.start() in seen
                or not starts_token(text, m.start(), "-")
                or _after_number(text, m.start())
            ):
                continue
            number = m.group(1) + m.group(3) + m.group(4)
            if not ssn_valid(number):
                continue
            if keyword_in_header or near(low, m.start(), m.end(), _SSN_KW_RE, 40, 0):
                yield self._finding(seg, m, number, 0.9)

    def _finding(self, seg: SegmentLike, m: re.Match[str], number: str, score: float) -> Finding:
        return Finding(
            rule=self.id,
            version=self.version,
            category="ssn",
            kind="identifier",
            location=seg.location,
            masked=f"***-**-{number[5:]}",
            score=score,
            start=m.start(),
            end=m.end(),
            weight=1.0,
            key=value_key("ssn", number),
        )


# --- Medicare MBI ---------------------------------------------------------------

# CMS MBI format: C A AN N A AN N A A N N, where letters exclude S L O I B Z.
_A = "[AC-HJKMNP-RT-Y]"
_AN = "[AC-HJKMNP-RT-Y0-9]"
_MBI_RE = re.compile(
    rf"([1-9]{_A}{_AN}[0-9])-?({_A}{_AN}[0-9])-?({_A}{_A}[0-9]{{2}})(?![A-Za-z0-9])"
)
_MEDICARE_KW_RE = re.compile(r"\b(?:mbi|medicare|beneficiary|hicn?|cms)\b")


class MbiDetector:
    """Medicare Beneficiary Identifiers (CMS format, dashes optional)."""

    id = "us-mbi"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        for m in _MBI_RE.finditer(seg.text):
            if not starts_token(seg.text, m.start(), "-"):
                continue
            value = m.group(1) + m.group(2) + m.group(3)
            # A run of digits with two letters is rarely anything else, but
            # the keyword makes it certain.
            keyword = near(low, m.start(), m.end(), _MEDICARE_KW_RE, 60, 20) or bool(
                ctx.header and _MEDICARE_KW_RE.search(ctx.header)
            )
            yield Finding(
                rule=self.id,
                version=self.version,
                category="mbi",
                kind="identifier",
                location=seg.location,
                masked="*******" + value[-4:],
                score=1.0 if keyword else 0.85,
                start=m.start(),
                end=m.end(),
                weight=1.0,
                key=value_key("mbi", value),
            )


# --- Legacy Medicare HICN --------------------------------------------------------

_HICN_RE = re.compile(
    rf"(\d\d\d)({_SEP}|)(\d{{2}})({_SEP}|)(\d{{4}})[ -]?"
    r"(A|B[1-9A-Z]?|C[1-9A-Z]|D[1-9A-Z]?|E[1-9A-Z]?|F[1-8]|J[1-4]|K[1-9A-Z]?|M1?|T[A-Z]?|W[1-9A-Z]?)"
    r"(?![A-Za-z0-9])"
)


class HicnDetector:
    """Health Insurance Claim Numbers: an SSN followed by a beneficiary identification code."""

    id = "us-hicn"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        for m in _HICN_RE.finditer(seg.text):
            if not starts_token(seg.text, m.start(), "-"):
                continue
            number = m.group(1) + m.group(3) + m.group(5)
            if not ssn_valid(number):
                continue
            separated = bool(m.group(2)) and bool(m.group(4))
            keyword = near(low, m.start(), m.end(), _MEDICARE_KW_RE, 60, 20)
            if not (separated or keyword):
                continue
            yield Finding(
                rule=self.id,
                version=self.version,
                category="hicn",
                kind="identifier",
                location=seg.location,
                masked=f"***-**-{number[5:]}{m.group(6)}",
                score=1.0 if keyword else 0.85,
                start=m.start(),
                end=m.end(),
                weight=1.0,
                key=value_key("ssn", number),
            )


# --- Record, member, account, claim and policy numbers -------------------------------

# Families of keyword-anchored numbers: (group, rule, category, weight, keywords).
# Keywords that are ordinary words ("member", "account", "claim") need "#",
# "no.", "number", "id" or a colon before the value.
_ID_FAMILIES: tuple[tuple[str, str, str, float, str], ...] = (
    (
        "mrn",
        "mrn",
        "mrn",
        1.0,
        r"mrn|mr|medical record(?: number)?|med\.? ?rec(?:ord)?|chart|patient(?: id)?"
        r"|pt\.? ?id|emr|ehr|encounter|csn|hospital|unit",
    ),
    (
        "member",
        "member-id",
        "member-id",
        1.0,
        r"member|subscriber|insurance|medicaid|beneficiary|health plan"
        r"|policy ?holder|id card|recipient|enrollee",
    ),
    ("account", "account-number", "account", 0.6, r"patient acc(?:oun)?t|acc(?:oun)?t|acct"),
    ("claim", "claim-number", "claim", 0.6, r"claim|icn|prior auth(?:orization)?"),
    ("policy", "policy-number", "policy", 0.6, r"policy"),
    ("license", "drivers-license", "license", 1.0, r"driver'?s? licen[cs]e|dl|passport|state id"),
)
# Read backwards from a number: keyword, optional "#"/"no."/"number", separators.
_ID_KEYWORD_BEFORE_RE = re.compile(
    "(?:"
    + "|".join(f"(?P<{group}>{keywords})" for group, _, _, _, keywords in _ID_FAMILIES)
    + r")(?P<suf>\s*(?:#|no\b\.?|num(?:ber)?\b|id\b|identifier\b))?"
    r"(?P<sep>[\s:#=.\-\u2013]{0,4})(?:is\s+|of\s+)?$"
)
_ID_FAMILY = {group: (rule, category, weight) for group, rule, category, weight, _ in _ID_FAMILIES}
# Where any keyword ends: found in one pass, so each number only checks its window
# with the full pattern when a keyword is actually near.
_ID_KEYWORD_RE = re.compile("|".join(keywords for *_, keywords in _ID_FAMILIES))
_ID_WINDOW = 50  # keyword start to value
_ID_GAP = 30  # keyword end to value: "#", "no.", "number", ":" and spaces
# Keywords specific enough to be followed directly by the number ("MRN 00123").
_BARE_OK = ("mrn", "medical record", "med", "medicaid", "subscriber", "csn", "emr", "ehr")
# "Patient account" numbers belong to one patient; a bare "account" may be a vendor's.
_PATIENT_ACCOUNT_RE = re.compile(r"patient|guarantor|mrn")
_DIGIT_RUN_RE = re.compile(r"\d\d\d+")
_TOKEN_TAIL_RE = re.compile(r"[a-z0-9-]+$")
_TOKEN_HEAD_RE = re.compile(r"[a-z0-9-]+")
_NO_DIGITS = str.maketrans("", "", "0123456789")


class KeywordIdDetector:
    """Record, member, account, claim, policy and licence numbers next to their keywords."""

    id = "keyword-id"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        text = seg.text
        taken: set[int] = set()
        token_end = -1
        keyword_ends: list[int] | None = None
        # Anchored on digit runs (rare in prose) rather than on keywords
        # ("patient", "member" are everywhere in healthcare mail).
        for d in _DIGIT_RUN_RE.finditer(low):
            if d.start() < token_end:
                continue
            # The whole token around the digits: "ab-1234-x" (ids are at most 20 long).
            head = _TOKEN_TAIL_RE.search(low, max(0, d.start() - 21), d.start())
            start = head.start() if head is not None else d.start()
            tail = _TOKEN_HEAD_RE.match(low, d.end())
            end = tail.end() if tail is not None else d.end()
            token_end = end
            token = low[start:end].strip("-")
            if token:
                start = low.index(token, start)
                end = start + len(token)
            if not 3 <= len(token) <= 20 or len(token) - len(token.translate(_NO_DIGITS)) < 4:
                continue
            if keyword_ends is None:
                keyword_ends = [k.end() for k in _ID_KEYWORD_RE.finditer(low)]
            i = bisect_right(keyword_ends, start)
            if i == 0 or keyword_ends[i - 1] < start - _ID_GAP:
                continue
            m = _ID_KEYWORD_BEFORE_RE.search(low, max(0, start - _ID_WINDOW), start)
            if m is None or not starts_token(low, m.start()):
                continue
            # Dates next to "visit" or "member since" are not ids.
            if DATE_RE.fullmatch(low, start, end):
                continue
            group = next(g for g in _ID_FAMILY if m.group(g) is not None)
            keyword = m.group(group)
            marked = m.group("suf") or any(c in m.group("sep") for c in ":#=")
            if not marked and not keyword.startswith(_BARE_OK):
                continue
            rule, category, weight = _ID_FAMILY[group]
            if category == "account" and _PATIENT_ACCOUNT_RE.search(
                low, max(0, m.start() - 20), m.end(group)
            ):
                weight = 1.0
            value = text[start:end]
            taken.add(start)
            yield Finding(
                rule=rule,
                version=self.version,
                category=category,
                kind="identifier",
                location=seg.location,
                masked=mask_token(value, 4 if len(value) >= 8 else 2),
                score=0.9,
                start=m.start(),
                end=end,
                weight=weight,
                key=value_key(category, value.upper()),
            )
        if ctx.header:
            yield from self._table_ids(seg, text, ctx, taken)

    def _table_ids(
        self, seg: SegmentLike, text: str, ctx: ScanContext, taken: set[int]
    ) -> Iterator[Finding]:
        """In a row whose table has an MRN/member column, id-like cells are those ids."""
        for category, header_re in _HEADER_IDS:
            if not header_re.search(ctx.header):
                continue
            for m in _ID_CELL_RE.finditer(text):
                if m.start() in taken or DATE_RE.fullmatch(text.lower(), m.start(), m.end()):
                    continue
                value = m.group(0)
                if len(digits(value)) < 5:
                    continue
                taken.add(m.start())
                yield Finding(
                    rule="keyword-id-column",
                    version=self.version,
                    category=category,
                    kind="identifier",
                    location=seg.location,
                    masked=mask_token(value, 2),
                    score=0.7,
                    start=m.start(),
                    end=m.end(),
                    weight=1.0,
                    key=value_key(category, value.upper()),
                )
                break


_HEADER_IDS = (
    ("mrn", re.compile(r"\b(?:mrn|medical record|chart (?:no|#|number)|patient id)")),
    ("member-id", re.compile(r"\b(?:member|subscriber|medicaid) ?(?:id|#|no|number)")),
)
_ID_CELL_RE = re.compile(r"(?<![\w/.-])[A-Za-z]{0,3}\d[\dA-Za-z-]{4,14}(?![\w/.-])")

# --- Birth and encounter dates ------------------------------------------------------

_DOB_RE = re.compile(
    r"(?:dob\b|d\.o\.b\b\.?|date of birth\b|birth ?date\b|birthday\b|born(?: on)?\b)"
    rf"[\s:#=\-\u2013(]{{0,6}}(?:is\s+|was\s+)?{DATE_PATTERN}"
)
_ENCOUNTER_RE = re.compile(
    r"(?:admi(?:tted|ssion)(?: date| on)?|admit date|date of (?:admission|discharge|service"
    r"|death|visit|surgery|procedure|injury)|discharged?(?: date| on)?|dos|d\.o\.s\.?|dod"
    r"|visit date|service date|seen (?:on|in clinic on)|surgery date|expired on|died on)"
    rf"\b[\s:#=\-\u2013(]{{0,6}}{DATE_PATTERN}"
)
_DOB_HEADER_RE = re.compile(r"\b(?:dob|d\.o\.b|date of birth|birth ?date|birthday)\b")


class DateDetector:
    """Dates of birth, admission, discharge, service and death next to their keywords."""

    id = "dates"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        # Positions already inside a date finding: a DOB is not also an encounter date.
        covered: set[int] = set()
        for pattern, category, weight in (
            (_DOB_RE, "dob", 1.0),
            (_ENCOUNTER_RE, "encounter-date", 0.6),
        ):
            for m in pattern.finditer(low):
                if not starts_token(low, m.start()):
                    continue
                date = parse_date(m)
                if date is None or m.start() in covered or m.end() - 1 in covered:
                    continue
                covered.update(range(m.start(), m.end()))
                yield self._finding(seg, m.start(), m.end(), category, weight, date.isoformat())
        if ctx.header and _DOB_HEADER_RE.search(ctx.header):
            # One date per row is the birth date when the table has a DOB column;
            # the earliest date is the likeliest.
            dates = [(d, m) for m in DATE_RE.finditer(low) if (d := parse_date(m)) is not None]
            if dates:
                date, m = min(dates, key=lambda dm: dm[0])
                if m.start() not in covered:
                    yield self._finding(seg, m.start(), m.end(), "dob", 1.0, date.isoformat())

    def _finding(
        self, seg: SegmentLike, start: int, end: int, category: str, weight: float, iso: str
    ) -> Finding:
        return Finding(
            rule="dob" if category == "dob" else "encounter-date",
            version=self.version,
            category=category,
            kind="identifier",
            location=seg.location,
            masked="**/**/****",
            score=0.95,
            start=start,
            end=end,
            weight=weight,
            key=value_key(category, iso),
        )


# --- Phone and fax numbers -------------------------------------------------------------

# Two patterns, each starting with one plain character class: that lets the
# regex engine skip ahead quickly (an alternation or a repeat up front does not).
_PHONE_RES = (
    re.compile(r"\(([2-9]\d\d)\) ?([2-9]\d\d)[ .-](\d{4})(?![\w/-]|\.\d)"),
    re.compile(r"([2-9]\d\d)[ .-]([2-9]\d\d)[ .-](\d{4})(?![\w/-]|\.\d)"),
)
_FAX_RE = re.compile(r"\bfax\b|\bf:")


class PhoneDetector:
    """North American phone and fax numbers written with separators."""

    id = "phone"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        matches = [m for r in _PHONE_RES for m in r.finditer(seg.text)]
        for m in sorted(matches, key=lambda m: m.start()):
            if not starts_token(seg.text, m.start(), "/.-"):
                continue
            number = m.group(1) + m.group(2) + m.group(3)
            fax = near(low, m.start(), m.end(), _FAX_RE, 15, 0)
            yield Finding(
                rule="fax" if fax else "phone",
                version=self.version,
                category="fax" if fax else "phone",
                kind="identifier",
                location=seg.location,
                masked="***-***-" + number[-4:],
                score=0.8,
                start=m.start(),
                end=m.end(),
                weight=0.25,
                key=value_key("phone", number),
            )


# --- E-mail addresses ---------------------------------------------------------------

# Anchored on "@" and scanned backwards by hand: a regex starting with the
# local part would re-scan long runs of letters at every position.
_EMAIL_DOMAIN_RE = re.compile(r"@([a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)*\.[a-z]{2,24})\b")
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._%+-")


class EmailDetector:
    """E-mail addresses in text (headers are the envelope's business, not this detector's)."""

    id = "email"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        if seg.kind == "header":
            return
        for m in _EMAIL_DOMAIN_RE.finditer(low):
            i = m.start()
            floor = max(0, i - 64)
            while i > floor and low[i - 1] in _LOCAL_CHARS:
                i -= 1
            if i == m.start():
                continue
            tld = m.group(1).rsplit(".", 1)[1]
            yield Finding(
                rule=self.id,
                version=self.version,
                category="email",
                kind="identifier",
                location=seg.location,
                masked=f"***@***.{tld}",
                score=0.9,
                start=i,
                end=m.end(),
                weight=0.25,
                key=value_key("email", low[i : m.end()]),
            )


# --- US postal addresses ---------------------------------------------------------------

_STREET_RE = re.compile(
    r"\d\d{0,5}[a-z]?\s+(?:[nsew]\.?\s+)?(?:[a-z0-9'.]+\s+){1,4}"
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl"
    r"|terrace|ter|circle|cir|highway|hwy|parkway|pkwy|square|sq|trail|trl|alley|loop|run)\b\.?"
)
_ZIP_RE = re.compile(r"\b[a-z]{2}\.?,?\s+(\d{5})(?:-\d{4})?(?!\d)|,\s*(\d{5})(?:-\d{4})?(?!\d)")


class AddressDetector:
    """US street addresses followed by a state and ZIP code."""

    id = "us-address"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        for m in _STREET_RE.finditer(low):
            if not starts_token(low, m.start(), "-"):
                continue
            z = _ZIP_RE.search(low, m.end(), min(len(low), m.end() + 80))
            if z is None:
                continue
            zipcode = z.group(1) or z.group(2)
            yield Finding(
                rule=self.id,
                version=self.version,
                category="address",
                kind="identifier",
                location=seg.location,
                masked=f"*** ***, ** {zipcode[:3]}**",
                score=0.8,
                start=m.start(),
                end=z.end(),
                weight=0.3,
                key=value_key("address", " ".join(low[m.start() : z.end()].split())),
            )
