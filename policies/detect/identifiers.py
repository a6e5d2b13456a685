"""Identifiers of individuals: SSN, Medicare MBI and HICN, keyword-anchored record
numbers, birth and encounter dates, phone/fax, e-mail and postal addresses.

Each detector validates what it finds (SSA number rules, CMS character
positions, calendar dates) so that look-alikes in ordinary mail do not count.
Weights say how strongly a hit identifies one person: 1.0 alone makes a
message `pii`; contact details weigh little because every signature has them.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from bisect import bisect_right
from collections.abc import Iterator

from policies.detect.base import (
    NO_CONTEXT,
    ZERO_DIGITS,
    Finding,
    ScanContext,
    SegmentLike,
    digits,
    finditer_rough,
    mask_token,
    near,
    starts_token,
    value_key,
)
from policies.detect.dates import DATE_PATTERN, DATE_RE, iso_date, parse_date

# Finding's own constructor, minus its Python-level argument handling: dense
# tables make thousands of findings per detector.
_new = tuple.__new__

# Below this length the copy costs more than the plain search it would speed up.
_SHADOW_MIN = 2000


# A separator inside an identifier: a dash (maybe with spaces or a line break
# after it), a line break, or up to three spaces. Mail clients and PDF text
# extraction break long numbers at any of these.
_SEP = r"(?:[ \t]*-[ \t]*(?:\r?\n[ \t]*)?|[ \t]*\r?\n[ \t]*|[ \t]{1,3})"

# --- SSN and legacy Medicare HICN ------------------------------------------------------

# An SSN's shape: both separators present. The same pass finds separated HICNs
# (an SSN followed by a beneficiary code), so digits are scanned once for both.
_SSN_SHAPE_RE = re.compile(rf"(\d\d\d)({_SEP})(\d{{2}})({_SEP})(\d{{4}})")
_SSN_TAIL_RE = re.compile(r"(?![\w]|-\d|\.\d)")
_SSN_BARE_RE = re.compile(r"(\d\d\d)(\.?)(\d{2})\.?(\d{4})(?![\w-]|\.\d)")
# Where those two match an ASCII text, these match its shadow where every digit
# is "0" and every character of a separator "~" (and maybe elsewhere, but seldom:
# a table's dates and phone numbers fail at once).
_SSN_SHADOW = str.maketrans({**dict.fromkeys(string.digits, "0"), **dict.fromkeys(" \t\r\n-", "~")})
_SSN_SHAPE_ROUGH_RE = re.compile(r"000~+00~+0000")
_SSN_BARE_ROUGH_RE = re.compile(r"000\.?00\.?0000")
_SSN_KW_RE = re.compile(
    r"\b(?:ssn|ss#|ss ?no|soc(?:ial)?\.? ?sec(?:urity)?|social security|ssa number|tin/ssn)"
)
# Every SSN keyword contains one of these: without them no bare number can count.
_SSN_KW_HINTS = ("ssn", "ss#", "ss no", "ssno", "soc", "ssa number")
# Labels of other numbers written like SSNs (purchase orders, tickets, parts).
_NOT_SSN_LABEL_RE = re.compile(
    r"(?:\b(?:p\.?\s?o|purchase order|order|invoice|inv|ref|reference|tracking|confirmation"
    r"|conf|part|sku|item|model|serial|ticket|case|quote|contract|account|acct|claim|routing"
    r"|phone|tel|fax|lot|batch)(?:\s*(?:#|no\.?|num(?:ber)?))?|#)[\s:.\-]*$"
)
# Numbers the SSA never issued or that were published as examples.
_SSN_SAMPLES = frozenset({"078051120", "219099999", "123456789", "457555462", "987654321"})

_HICN_CODE = (
    r"(A|B[1-9A-Z]?|C[1-9A-Z]|D[1-9A-Z]?|E[1-9A-Z]?|F[1-8]|J[1-4]|K[1-9A-Z]?|M1?|T[A-Z]?|W[1-9A-Z]?)"
    r"(?![A-Za-z0-9])"
)
_HICN_SUFFIX_RE = re.compile(r"[ -]?" + _HICN_CODE)
_HICN_RE = re.compile(rf"(\d\d\d)({_SEP}|)(\d{{2}})({_SEP}|)(\d{{4}})[ -]?" + _HICN_CODE)
_MEDICARE_KW_RE = re.compile(r"\b(?:mbi|medicare|beneficiary|hicn?|cms)\b")
# Every Medicare keyword contains one of these.
_MEDICARE_KW_HINTS = ("mbi", "medicare", "beneficiary", "hic", "cms")


def _after_number(text: str, i: int) -> bool:
    """True for "1.219-45-6781": the digits continue a decimal or version number."""
    return i >= 2 and text[i - 1] == "." and text[i - 2].isdigit()


def _hinted(low: str, hints: tuple[str, ...]) -> bool:
    """Whether any of the literal hints occurs (a substring search, far cheaper than a regex)."""
    return any(h in low for h in hints)


def ssn_valid(number: str) -> bool:
    """SSA rules: area not 000/666/9xx, group not 00, serial not 0000, no known samples."""
    if len(number) != 9 or number in _SSN_SAMPLES or len(set(number)) == 1:
        return False
    area, group, serial = number[:3], number[3:5], number[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _hicn_finding(
    seg: SegmentLike, start: int, end: int, number: str, code: str, keyword: bool
) -> Finding:
    return Finding(
        HicnDetector.id,
        HicnDetector.version,
        "hicn",
        "identifier",
        seg.location,
        f"***-**-{number[5:]}{code}",
        1.0 if keyword else 0.85,
        start,
        end,
        1.0,
        value_key("ssn", number),
    )


class SsnDetector:
    """US Social Security numbers: dashed or spaced anywhere, bare only beside a keyword.

    Also reports separated HICNs (an SSN plus a beneficiary code), found by the
    same pass; `HicnDetector` adds the ones written without separators.
    """

    id = "us-ssn"
    version = 2

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        if not ctx.digits:
            return
        text = seg.text
        if text.isascii():
            shadow = text.translate(_SSN_SHADOW)
            shapes = finditer_rough(_SSN_SHAPE_RE, text, _SSN_SHAPE_ROUGH_RE, shadow)
        else:
            shadow = ""
            shapes = _SSN_SHAPE_RE.finditer(text)
        keyword_in_header = bool(ctx.header and _SSN_KW_RE.search(ctx.header))
        medicare = None  # computed when a HICN needs it
        seen: set[int] = set()
        for m in shapes:
            start, end = m.span()
            if not starts_token(text, start, "-"):
                continue
            number = m.group(1) + m.group(3) + m.group(5)
            if not ssn_valid(number):
                continue
            hicn = _HICN_SUFFIX_RE.match(text, end)
            if hicn is not None:
                if medicare is None:
                    medicare = _hinted(low, _MEDICARE_KW_HINTS)
                keyword = medicare and near(low, start, hicn.end(), _MEDICARE_KW_RE, 60, 20)
                yield _hicn_finding(seg, start, hicn.end(), number, hicn.group(1), keyword)
            if _after_number(text, start) or not _SSN_TAIL_RE.match(text, end):
                continue
            keyword = keyword_in_header or near(low, start, end, _SSN_KW_RE, 60, 25)
            if not keyword and _NOT_SSN_LABEL_RE.search(low, max(0, start - 30), start):
                continue  # "PO# 152-78-7116": order and reference numbers share the shape
            dashed = "-" in m.group(2) and "-" in m.group(4)
            score = 1.0 if keyword else 0.9 if dashed else 0.7
            seen.add(start)
            yield self._finding(seg, m, number, score)
        if not (keyword_in_header or _hinted(low, _SSN_KW_HINTS)):
            return  # a bare nine-digit number counts only beside a keyword
        if shadow:
            bare = finditer_rough(_SSN_BARE_RE, text, _SSN_BARE_ROUGH_RE, shadow)
        else:
            bare = _SSN_BARE_RE.finditer(text)
        for m in bare:
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
            self.id,
            self.version,
            "ssn",
            "identifier",
            seg.location,
            f"***-**-{number[5:]}",
            score,
            m.start(),
            m.end(),
            1.0,
            value_key("ssn", number),
        )


# --- Medicare MBI ---------------------------------------------------------------

# CMS MBI format: C A AN N A AN N A A N N, where letters exclude S L O I B Z.
_A = "[AC-HJKMNP-RT-Y]"
_AN = "[AC-HJKMNP-RT-Y0-9]"
_MBI_RE = re.compile(
    rf"([1-9]{_A}{_AN}[0-9])-?({_A}{_AN}[0-9])-?({_A}{_A}[0-9]{{2}})(?![A-Za-z0-9])"
)
# The same pattern on a shadow where each of its classes is one literal: "1" for
# 1-9, "0" for 0, "A" for a letter of _A. Every class it asks about is ASCII, so
# the two agree on any text; the shadow's starts with the literal "1A".
_MBI_SHADOW = str.maketrans(
    {**dict.fromkeys("123456789", "1"), **dict.fromkeys("ACDEFGHJKMNPQRTUVWXY", "A")}
)
_MBI_SHADOW_RE = re.compile(r"(1A[A01][01])-?(A[A01][01])-?(AA[01]{2})(?![A-Za-z0-9])")


class MbiDetector:
    """Medicare Beneficiary Identifiers (CMS format, dashes optional)."""

    id = "us-mbi"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        if not ctx.digits:
            return
        text = seg.text
        medicare = None
        if len(text) < _SHADOW_MIN:
            matches = _MBI_RE.finditer(text)
        else:
            matches = _MBI_SHADOW_RE.finditer(text.translate(_MBI_SHADOW))
        for m in matches:
            start, end = m.span()
            if not starts_token(text, start, "-"):
                continue
            value = text[start : m.end(1)] + text[m.start(2) : m.end(2)] + text[m.start(3) : end]
            # A run of digits with two letters is rarely anything else, but
            # the keyword makes it certain.
            if medicare is None:
                medicare = _hinted(low, _MEDICARE_KW_HINTS)
            keyword = (medicare and near(low, start, end, _MEDICARE_KW_RE, 60, 20)) or bool(
                ctx.header and _MEDICARE_KW_RE.search(ctx.header)
            )
            yield Finding(
                self.id,
                self.version,
                "mbi",
                "identifier",
                seg.location,
                "*******" + value[-4:],
                1.0 if keyword else 0.85,
                start,
                end,
                1.0,
                value_key("mbi", value),
            )


class HicnDetector:
    """Health Insurance Claim Numbers written without separators, next to a Medicare keyword.

    Separated ones ("219-45-6781A") need no keyword and come from `SsnDetector`.
    """

    id = "us-hicn"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        if not ctx.digits or not _hinted(low, _MEDICARE_KW_HINTS):
            return
        for m in _HICN_RE.finditer(seg.text):
            if m.group(2) and m.group(4):
                continue  # separated: SsnDetector's
            if not starts_token(seg.text, m.start(), "-"):
                continue
            number = m.group(1) + m.group(3) + m.group(5)
            if not ssn_valid(number):
                continue
            if near(low, m.start(), m.end(), _MEDICARE_KW_RE, 60, 20):
                yield _hicn_finding(seg, m.start(), m.end(), number, m.group(6), True)


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
# Any keyword, found in the few characters before a candidate number; only where
# one starts is the full pattern above tried (searching it across the window
# would try every alternative at every position).
_ID_KEYWORD_RE = re.compile("|".join(keywords for *_, keywords in _ID_FAMILIES))
_ID_WINDOW = 50  # keyword start to value
_ID_GAP = 30  # keyword end to value: "#", "no.", "number", ":" and spaces
# Keywords specific enough to be followed directly by the number ("MRN 00123").
_BARE_OK = ("mrn", "medical record", "med", "medicaid", "subscriber", "csn", "emr", "ehr")
# "Patient account" numbers belong to one patient; a bare "account" may be a vendor's.
_PATIENT_ACCOUNT_RE = re.compile(r"patient|guarantor|mrn")
# A token (ids are at most 20 long) with three digits in a row, after separators
# that follow a letter: every keyword phrase ends in a letter ("MRN", "no", "id",
# "is") and separators, so phone numbers and dates in tables are passed over in C.
_ID_CANDIDATE_RE = re.compile(
    r"[\s:#=.\u2013](?<=[a-z][\s:#=.\u2013])[\s:#=.\-\u2013]*([a-z0-9-]{0,17}?\d\d\d)"
)
_TOKEN_HEAD_RE = re.compile(r"[a-z0-9-]+")
_NO_DIGITS = str.maketrans("", "", "0123456789")
_PHRASE_SEPARATORS = frozenset(":#=.-\u2013")
# The last word of every keyword in _ID_FAMILIES (a test keeps the two in step).
_KEYWORD_ENDS = (
    "mrn", "mr", "record", "number", "rec", "chart", "patient", "id", "emr", "ehr",
    "encounter", "csn", "hospital", "unit", "member", "subscriber", "insurance", "medicaid",
    "beneficiary", "plan", "holder", "card", "recipient", "enrollee", "acct", "account",
    "claim", "icn", "auth", "authorization", "policy", "license", "licence", "dl", "passport",
)  # fmt: skip
_SUFFIX_WORDS = ("", "no", "num", "number", "id", "identifier")
_PHRASE_ENDS = (*_KEYWORD_ENDS, *_SUFFIX_WORDS[1:], "is", "of")
_LONGEST_END = len("identifier") + len("is") + max(map(len, _KEYWORD_ENDS))
_LETTERS_RE = re.compile(r"[a-z]+")


def _keyword_before(low: str, start: int) -> re.Match[str] | None:
    """The keyword phrase ending right at `start` ("MRN #: "), leftmost first, or None."""
    lo = max(0, start - _ID_WINDOW)
    # Every phrase ends in a letter (of the keyword, "no", "number", "id", "is")
    # and separators: "(419) 555-0142" and "1/2/1960" are turned away here.
    i = start - 1
    while i >= lo and (low[i] in _PHRASE_SEPARATORS or low[i].isspace()):
        i -= 1
    if i < lo or not ("a" <= low[i] <= "z"):
        return None
    # A keyword phrase ends in one of _KEYWORD_ENDS, followed at most by a suffix
    # word ("no", "id"...) and "is"/"of", maybe without a space between: one of
    # the last three words must end so. Most numbers in prose fail this at once,
    # before the search of every keyword.
    words = _LETTERS_RE.findall(low, max(0, start - _ID_GAP - _LONGEST_END), start)
    if not any(_may_end_phrase(w) for w in words[-3:]):
        return None
    return _keyword_search(low, lo, start)


def _may_end_phrase(word: str) -> bool:
    """Whether a keyword phrase may end with this run of letters (a superset)."""
    if not word.endswith(_PHRASE_ENDS):
        return False
    for tail in ("", "is", "of"):
        if not word.endswith(tail):
            continue
        rest = word[: len(word) - len(tail)]
        for suffix in _SUFFIX_WORDS:
            if rest.endswith(suffix) and rest[: len(rest) - len(suffix)].endswith(_KEYWORD_ENDS):
                return True
    return False


def _keyword_search(low: str, lo: int, start: int) -> re.Match[str] | None:
    """The first keyword phrase in low[lo:start] that ends right at `start`, or None."""
    for k in _ID_KEYWORD_RE.finditer(low, lo, start):
        if k.end() < start - _ID_GAP:
            continue
        m = _ID_KEYWORD_BEFORE_RE.match(low, k.start(), start)
        if m is not None:
            return m
    return None


# _ID_CANDIDATE_RE for the shadow of an ASCII text where every letter is "a",
# every digit "0", every separator " " and every other character "X" ("-" and
# "'" stay): the same matches, but a pattern that starts with the literal "a " is
# skipped to far faster. It takes the letter before the separator (never part of
# the previous match, which ends in a digit); the possessive run and the
# look-ahead for a "0" only turn away sooner what could not match; the second
# group is the rest of the token.
_ID_SHADOW = str.maketrans(
    {
        **dict.fromkeys(map(chr, range(128)), "X"),
        **dict.fromkeys(string.ascii_lowercase, "a"),
        **dict.fromkeys(string.digits, "0"),
        # Every ASCII character \s matches, and the other separators.
        **dict.fromkeys([c for c in map(chr, range(128)) if c.isspace()] + list(":#=."), " "),
        "-": "-",
        "'": "'",
    }
)
_ID_SHADOW_CANDIDATE_RE = re.compile(r"a [ -]*+(?=[a-]*+0)([a0-]{0,17}?000)(?=([a0-]*))")


# _ID_CANDIDATE_RE, with the rest of the token (what _TOKEN_HEAD_RE reads) as a
# second group, as the shadow pattern has it.
_ID_CANDIDATE_TAIL_RE = re.compile(_ID_CANDIDATE_RE.pattern + r"(?=([a-z0-9-]*))")


# The text the keyword phrase before a value can depend on: _keyword_before reads
# at most this far back. The phrase patterns match only letters, spaces and the
# separators below; so does every test _keyword_before makes on the way, so none
# reaches across another character (a digit, "|", "/"...). The phrase of a value
# is therefore a function of the text from the last such character before it:
# in a table, the column label ("| MRN: ") that every row repeats. In the
# shadow of an ASCII text these characters are the "0"s and "X"s.
_PHRASE_REACH = _ID_GAP + _LONGEST_END
_LAST_HARD_RE = re.compile(r".*[^a-z'.#:=\-\u2013\s]", re.DOTALL)
# (back, keyword_back, rule, category, weight, key_prefix): a value at `start` has
# its phrase from start - back, its keyword ending at start - keyword_back; its
# key is value_key(category, value.upper()), computed from key_prefix.
_Phrase = tuple[int, int, str, str, float, str]
_UNSEEN: _Phrase = (0, 0, "", "", 0.0, "")  # not looked up yet (None: no phrase)


def _last_hard(low: str, lo: int, start: int) -> int:
    """Index of the last character of low[lo:start] no keyword phrase holds, or -1."""
    m = _LAST_HARD_RE.match(low, lo, start)
    return m.end() - 1 if m is not None else -1


def _phrase(context: str) -> _Phrase | None:
    """The keyword phrase at the end of a _phrase_context, if one may precede an id."""
    start = len(context)
    m = _keyword_before(context, start)
    if m is None or not starts_token(context, m.start()):
        return None
    group = next(g for g in _ID_FAMILY if m.group(g) is not None)
    sep = m.group("sep")
    marked = m.group("suf") or ":" in sep or "#" in sep or "=" in sep
    if not marked and not m.group(group).startswith(_BARE_OK):
        return None
    rule, category, weight = _ID_FAMILY[group]
    return start - m.start(), start - m.end(group), rule, category, weight, category + "\x00"


class KeywordIdDetector:
    """Record, member, account, claim, policy and licence numbers next to their keywords."""

    id = "keyword-id"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> list[Finding]:
        """Findings in one segment."""
        if not ctx.digits:
            return []  # every candidate, and every id cell, holds digits
        text = seg.text
        location = seg.location
        version = self.version
        out: list[Finding] = []
        append = out.append
        # Starts of the values found, for _table_ids (only a table row has a header).
        taken: set[int] | None = set() if ctx.header else None
        # Anchored on numbers (rare in prose) rather than on keywords ("patient",
        # "member" are everywhere in healthcare mail): each candidate is a token
        # with three digits in a row where a keyword phrase may end before it.
        if low.isascii():
            shadow = low.translate(_ID_SHADOW)
            candidates = _ID_SHADOW_CANDIDATE_RE.finditer(shadow)
            count, rfind = shadow.count, shadow.rfind
        else:
            shadow = ""
            candidates = _ID_CANDIDATE_TAIL_RE.finditer(low)
        # The phrase before each value, by the text it depends on (a table repeats
        # it on every row). Local to this call: it holds text of the message.
        phrases: dict[str, _Phrase | None] = {}
        for cand in candidates:
            start = cand.start(1)
            end = cand.end(2)
            if low[start] == "-" or low[end - 1] == "-":
                token = low[start:end].strip("-")
                start = low.index(token, start)
                end = start + len(token)
            if not 3 <= end - start <= 20:
                continue
            # Dates next to "visit" or "member since" are not ids. A token has no
            # "/", "." or space: only a date written with "-" can be one. (Tried
            # before the phrase: a table's ISO dates are turned away sooner.)
            if low.find("-", start, end) >= 0 and DATE_RE.fullmatch(low, start, end):
                continue
            lo = start - _PHRASE_REACH if start > _PHRASE_REACH else 0
            if shadow:
                if count("0", start, end) < 4:
                    continue
                hard = rfind("0", lo, start)
                if (x := rfind("X", lo, start)) > hard:
                    hard = x
            else:
                if end - start - len(low[start:end].translate(_NO_DIGITS)) < 4:
                    continue
                hard = _last_hard(low, lo, start)
            context = low[hard if hard >= 0 else lo : start]
            phrase = phrases.get(context, _UNSEEN)
            if phrase is _UNSEEN:
                phrase = phrases[context] = _phrase(context)
            if phrase is None:
                continue
            back, keyword_back, rule, category, weight, key_prefix = phrase
            if category == "account" and _PATIENT_ACCOUNT_RE.search(
                low, max(0, start - back - 20), start - keyword_back
            ):
                weight = 1.0
            value = text[start:end]
            if taken is not None:
                taken.add(start)
            # _mask_id(value) and value_key(category, value.upper()), inlined for
            # plain values (tests check both).
            n = end - start
            if not value.isalnum():
                masked = _mask_id(value)
            elif n >= 8:
                masked = "*" * (n - 4) + value[-4:]
            else:
                masked = "*" * n if n <= 4 else "*" * (n - 2) + value[-2:]
            append(_new(Finding, (rule, version, category, "identifier", location, masked, 0.9,
                                    start - back, end, weight,
                                    f"{hash(key_prefix + value.upper()):x}")))  # fmt: skip
        if taken is not None:
            out.extend(self._table_ids(seg, text, ctx, taken))
        return out

    def _table_ids(
        self, seg: SegmentLike, text: str, ctx: ScanContext, taken: set[int]
    ) -> Iterator[Finding]:
        """In a row whose table has an MRN/member column, id-like cells are those ids."""
        lowered = ""  # text.lower(), once a cell needs it
        for category, header_re in _HEADER_IDS:
            if not header_re.search(ctx.header):
                continue
            for m in _ID_CELL_RE.finditer(text):
                if m.start() in taken:
                    continue
                lowered = lowered or text.lower()
                if DATE_RE.fullmatch(lowered, m.start(), m.end()):
                    continue
                value = m.group(0)
                if len(digits(value)) < 5:
                    continue
                taken.add(m.start())
                yield Finding(
                    "keyword-id-column",
                    self.version,
                    category,
                    "identifier",
                    seg.location,
                    mask_token(value, 2),
                    0.7,
                    m.start(),
                    m.end(),
                    1.0,
                    value_key(category, value.upper()),
                )
                break


def _mask_id(value: str) -> str:
    """mask_token(value, 4 if len(value) >= 8 else 2), without its cost on plain values."""
    n = len(value)
    keep = 4 if n >= 8 else 2
    if not value.isalnum():
        return mask_token(value, keep)
    return "*" * n if n <= keep + 2 else "*" * (n - keep) + value[-keep:]


_HEADER_IDS = (
    ("mrn", re.compile(r"\b(?:mrn|medical record|chart (?:no|#|number)|patient id)")),
    ("member-id", re.compile(r"\b(?:member|subscriber|medicaid) ?(?:id|#|no|number)")),
)
_ID_CELL_RE = re.compile(r"(?<![\w/.-])[A-Za-z]{0,3}\d[\dA-Za-z-]{4,14}(?![\w/.-])")

# --- Birth and encounter dates ------------------------------------------------------

_DOB_KEYWORDS = r"dob\b|d\.o\.b\b\.?|date of birth\b|birth ?date\b|birthday\b|born(?: on)?\b"
_DOB_TAIL = rf"[\s:#=\-\u2013(]{{0,6}}(?:is\s+|was\s+)?{DATE_PATTERN}"
_DOB_RE = re.compile(f"(?:{_DOB_KEYWORDS}){_DOB_TAIL}")
# _DOB_RE's first alternative alone ("DOB" labels every row of a patient list).
# It starts with a literal, which the regex engine skips to at once; at a "dob"
# no other keyword can start, so where it matches, _DOB_RE matches alike; and no
# match holds another "dob", so its finditer finds every such match.
_DOB_LED_RE = re.compile(rf"dob\b{_DOB_TAIL}")
_ENCOUNTER_RE = re.compile(
    r"(?:admi(?:tted|ssion)(?: date| on)?|admit date|date of (?:admission|discharge|service"
    r"|death|visit|surgery|procedure|injury)|discharged?(?: date| on)?|dos|d\.o\.s\.?|dod"
    r"|visit date|service date|seen (?:on|in clinic on)|surgery date|expired on|died on)"
    rf"\b[\s:#=\-\u2013(]{{0,6}}{DATE_PATTERN}"
)
_DOB_HEADER_RE = re.compile(r"\b(?:dob|d\.o\.b|date of birth|birth ?date|birthday)\b")
# Where the keywords of the two patterns above may start, found from a literal
# each contains: a search for several keyword alternatives at once, or for each
# keyword on its own, costs several times a search for one literal first
# character (which the regex engine skips to quickly). "dob" itself is left to
# _DOB_LED_RE. Each anchor pattern captures what follows its first letter;
# _ANCHOR_TAILS maps that to the pass (0: DOB, 1: encounter) and the distances
# from the keyword's start to the anchor ("visit date", "died on"...).
_D_ANCHOR_RE = re.compile(r"d(?=(\.o\.[bs]|ate|ischarge|o[sd]| on|mi))")
_B_ANCHOR_RE = re.compile(r"b(?=(irth|orn))")
_ANCHOR_TAILS = {
    ".o.b": (0, (0,)),
    "irth": (0, (0, len("date of "))),
    "orn": (0, (0,)),
    ".o.s": (1, (0,)),
    "ate": (1, (0, len("visit "), len("service "), len("surgery "))),
    "ischarge": (1, (0,)),
    "os": (1, (0,)),
    "od": (1, (0,)),
    " on": (1, (len("die"), len("expire"))),
    "mi": (1, (len("a"),)),
}


def _date_keyword_starts(low: str) -> tuple[list[int], list[int]]:
    """Where a keyword of _DOB_RE other than "dob", and of _ENCOUNTER_RE, may start.

    Two supersets, in order.
    """
    dob: list[int] = []
    encounter: list[int] = []
    lists = (dob, encounter)
    for anchor_re in (_D_ANCHOR_RE, _B_ANCHOR_RE):
        for m in anchor_re.finditer(low):
            which, backs = _ANCHOR_TAILS[m.group(1)]
            i = m.start()
            lists[which].extend([i - back for back in backs if back <= i])
    find = low.find
    i = find("seen")
    while i >= 0:
        encounter.append(i)
        i = find("seen", i + 1)
    return sorted(set(dob)), sorted(set(encounter))


def _finds(low: str, literal: str) -> list[int]:
    """Every position where literal occurs in low, in order."""
    found = []
    find = low.find
    i = find(literal)
    while i >= 0:
        found.append(i)
        i = find(literal, i + 1)
    return found


def _matches_at(pattern: re.Pattern[str], low: str, starts: list[int]) -> Iterator[re.Match[str]]:
    """pattern.finditer(low), given every position (in order) where a match may start."""
    pos = 0
    match = pattern.match
    for k in starts:
        if k >= pos and (m := match(low, k)) is not None:
            yield m
            pos = m.end()  # never empty


def _merged(
    starts: list[int], ends: list[int], found: list[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    """The spans (starts, ends) and found together, sorted (none overlap)."""
    spans = sorted([*zip(starts, ends, strict=True), *found])
    return [a for a, _ in spans], [b for _, b in spans]


def _covered(starts: list[int], ends: list[int], pos: int) -> bool:
    """Whether pos lies inside one of the spans (sorted, not overlapping)."""
    i = bisect_right(starts, pos) - 1
    return i >= 0 and pos < ends[i]


# (category, weight) of the two passes, in order: _DOB_RE's, then _ENCOUNTER_RE's.
# Each pattern has DATE_PATTERN's groups and no others (a test checks), so that
# match.groups() reads them all at once.
_DATE_CATEGORIES = (("dob", 1.0), ("encounter-date", 0.6))


class DateDetector:
    """Dates of birth, admission, discharge, service and death next to their keywords."""

    id = "dates"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> list[Finding]:
        """Findings in one segment."""
        out: list[Finding] = []
        if not ctx.digits:
            return out
        this_year = dt.date.today().year
        location = seg.location
        version = self.version
        # Spans of the dates found so far: a DOB is not also an encounter date.
        starts: list[int] = []
        ends: list[int] = []
        found: list[tuple[int, int]] = []  # spans of the last pass, not yet merged
        other_dobs, encounters = _date_keyword_starts(low)
        for category, weight in _DATE_CATEGORIES:
            if category == "dob":
                if other_dobs:
                    dobs = sorted(other_dobs + _finds(low, "dob"))
                    matches = _matches_at(_DOB_RE, low, dobs)
                elif "dob" in low:
                    matches = _DOB_LED_RE.finditer(low)
                else:
                    continue
            elif encounters:
                matches = _matches_at(_ENCOUNTER_RE, low, encounters)
            else:
                continue
            if found:
                starts, ends = _merged(starts, ends, found)
                found = []
            prefix = category + "\x00"
            for m in matches:
                start, end = m.span()
                if start and ((c := low[start - 1]).isalnum() or c == "_"):
                    continue  # not at the start of a token (starts_token)
                iso = iso_date(m.groups(), this_year)
                if iso is None or (
                    starts and (_covered(starts, ends, start) or _covered(starts, ends, end - 1))
                ):
                    continue
                found.append((start, end))
                # The key is value_key(category, iso), inlined (a test checks).
                out.append(_new(Finding, (category, version, category, "identifier", location,
                                          "**/**/****", 0.95, start, end, weight,
                                          f"{hash(prefix + iso):x}")))  # fmt: skip
        if ctx.header and _DOB_HEADER_RE.search(ctx.header):
            if found:
                starts, ends = _merged(starts, ends, found)
            # One date per row is the birth date when the table has a DOB column;
            # the earliest date is the likeliest.
            dates = [
                (d, m) for m in DATE_RE.finditer(low) if (d := parse_date(m, this_year)) is not None
            ]
            if dates:
                date, m = min(dates, key=lambda dm: dm[0])
                if not _covered(starts, ends, m.start()):
                    out.append(self._finding(seg, m.start(), m.end(), "dob", 1.0, date.isoformat()))
        return out

    def _finding(
        self, seg: SegmentLike, start: int, end: int, category: str, weight: float, iso: str
    ) -> Finding:
        return Finding(
            "dob" if category == "dob" else "encounter-date",
            self.version,
            category,
            "identifier",
            seg.location,
            "**/**/****",
            0.95,
            start,
            end,
            weight,
            value_key(category, iso),
        )


# --- Phone and fax numbers -------------------------------------------------------------

# Two patterns, each starting with one plain character class: that lets the
# regex engine skip ahead quickly (an alternation or a repeat up front does not).
_PHONE_RES = (
    re.compile(r"\(([2-9]\d\d)\) ?([2-9]\d\d)[ .-](\d{4})(?![\w/-]|\.\d)"),
    re.compile(r"([2-9]\d\d)[ .-]([2-9]\d\d)[ .-](\d{4})(?![\w/-]|\.\d)"),
)
# Where the second matches an ASCII text at i, this matches its _PHONE_SHADOW at
# i + 2 (and maybe elsewhere, but seldom: a "(" phone number fails on the ")"):
# found with a quick skip to "0~" rather than a try at every digit.
_PHONE_SHADOW = str.maketrans({**dict.fromkeys(string.digits, "0"), **dict.fromkeys(" .-", "~")})
_PHONE_ROUGH_RE = re.compile(r"0~000~0000")
_FAX_RE = re.compile(r"\bfax\b|\bf:")
# Every fax label holds one of these: without them no number is a fax (one
# search for both, quickly skipping to each "f").
_FAX_HINT_RE = re.compile(r"f(?:ax|:)")
_PHONE_KEY = "phone\x00"  # value_key's prefix for phone numbers


def _bare_phones(text: str) -> Iterator[re.Match[str]]:
    """_PHONE_RES[1].finditer(text) for an ASCII text, tried only where its shadow may match."""
    return finditer_rough(_PHONE_RES[1], text, _PHONE_ROUGH_RE, text.translate(_PHONE_SHADOW), 2)


class PhoneDetector:
    """North American phone and fax numbers written with separators."""

    id = "phone"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> list[Finding]:
        """Findings in one segment."""
        out: list[Finding] = []
        if not ctx.digits:
            return out
        text = seg.text
        matches = list(_PHONE_RES[0].finditer(text))
        if len(text) >= _SHADOW_MIN and text.isascii():
            bare = _bare_phones(text)
        else:
            bare = _PHONE_RES[1].finditer(text)
        more = list(bare)
        if more:
            # One starts with "(", the other with a digit: no two start alike.
            matches = sorted(matches + more, key=lambda m: m.start())
        if not matches:
            return out
        location = seg.location
        version = self.version
        append = out.append
        faxes = _FAX_HINT_RE.search(low) is not None
        for m in matches:
            start, end = m.span()
            if start and ((c := text[start - 1]).isalnum() or c in "_/.-"):
                continue  # not at the start of a token (starts_token)
            area, exchange, line = m.groups()
            rule = "fax" if faxes and near(low, start, end, _FAX_RE, 15, 0) else "phone"
            # The key is value_key("phone", digits), inlined (a test checks).
            append(_new(Finding, (rule, version, rule, "identifier", location, "***-***-" + line,
                                  0.8, start, end, 0.25,
                                  f"{hash(_PHONE_KEY + area + exchange + line):x}")))  # fmt: skip
        return out


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
                self.id,
                self.version,
                "email",
                "identifier",
                seg.location,
                f"***@***.{tld}",
                0.9,
                i,
                m.end(),
                0.25,
                value_key("email", low[i : m.end()]),
            )


# --- US postal addresses ---------------------------------------------------------------

# The look-behind after the first digit (not before it, which would stop the
# regex engine from skipping to digits) rejects digits inside a token at once.
_STREET_SUFFIX = (
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl"
    r"|terrace|ter|circle|cir|highway|hwy|parkway|pkwy|square|sq|trail|trl|alley|loop|run)\b"
)
_STREET_RE = re.compile(
    r"\d(?<![\w-]\d)\d{0,5}[a-z]?\s+(?:[nsew]\.?\s+)?(?:[a-z0-9'.]+\s+){1,4}"
    + _STREET_SUFFIX
    + r"\.?"
)
# A street ends in one of its suffixes after a space: without one (a table of
# dates and numbers), the digit-by-digit search above is not worth running.
_STREET_SUFFIX_RE = re.compile(r"\s" + _STREET_SUFFIX)
_ZIP_RE = re.compile(r"\b[a-z]{2}\.?,?\s+(\d{5})(?:-\d{4})?(?!\d)|,\s*(\d{5})(?:-\d{4})?(?!\d)")
# Where _ZIP_RE matches an ASCII text, its five digits are in the ZERO_DIGITS
# shadow: after a space or a comma, and before no other digit.
_ZIP_ZERO_RE = re.compile(r"00000(?!0)(?<=[\s,]00000)")


class AddressDetector:
    """US street addresses followed by a state and ZIP code."""

    id = "us-address"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        if not ctx.digits:
            return
        # Every address ends in a ZIP code; on ASCII, a far quicker test than the
        # search for a street suffix.
        if (
            len(low) >= _SHADOW_MIN
            and low.isascii()
            and not _ZIP_ZERO_RE.search(low.translate(ZERO_DIGITS))
        ):
            return
        if not _STREET_SUFFIX_RE.search(low):
            return
        for m in _STREET_RE.finditer(low):
            z = _ZIP_RE.search(low, m.end(), min(len(low), m.end() + 80))
            if z is None:
                continue
            zipcode = z.group(1) or z.group(2)
            yield Finding(
                self.id,
                self.version,
                "address",
                "identifier",
                seg.location,
                f"*** ***, ** {zipcode[:3]}**",
                0.8,
                m.start(),
                z.end(),
                0.3,
                value_key("address", " ".join(low[m.start() : z.end()].split())),
            )
