"""Names of patients: a person's name counts only in patient context.

Names are everywhere in mail (greetings, signatures, newsletters); what makes
one PHI is that the text is about that person as a patient. Context comes
from a cue before the name ("Patient:", "Pt name", "Re:", "Mrs."), a cue right
after it ("DOB", "MRN", "was diagnosed", "is a 54-year-old", "'s labs") or a
table whose header has a name column. Weak cues ("Re:", "Mrs.") yield a
lighter weight that needs stronger health evidence to make PHI.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from policies.detect.base import (
    NO_CONTEXT,
    Finding,
    ScanContext,
    SegmentLike,
    starts_token,
    value_key,
)
from policies.detect.lexicon import first_names, last_names

# Form labels written in capitals are no part of a name ("Jane Doe DOB 1/2/60").
_LABELS = (
    r"(?!(?:DOB|Dob|MRN|Mrn|SSN|ID|Patient|PATIENT|Pt|PT|Re|RE|Dear|DEAR|Name|NAME|Mr|Mrs|Ms"
    r"|Miss|Dr|DR|The|THE|Hi|Hello|Date|DATE|Age|AGE|Sex|SEX)\b)"
)
_TOKEN = rf"{_LABELS}(?:[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?|[A-Z]{{2,}}(?:[-'][A-Z]{{2,}})?)"
# "John Smith", "John A. Smith", "Mary-Jane O'Neil", "SMITH, JOHN", "Smith, John A."
_NAME = (
    rf"(?P<name>{_TOKEN},[ ]?{_TOKEN}(?:[ ][A-Z]\.?)?(?![\w])"
    rf"|{_TOKEN}(?:[ ][A-Z]\.?)?(?:[ ]{_TOKEN}){{1,2}}(?![\w])"
    rf"|[A-Z]\.[ ]?{_TOKEN}(?![\w]))"
)
_NAME_RE = re.compile(_NAME)

# Written right after a name, these make it a patient's: a birth date, record
# number, age or a clinical verb. Weak ones ("reports", "is on") are also
# said of colleagues, so they only lend the lighter weight.
_STRONG_AFTER_CUES = (
    r"dob\b|d\.o\.b",
    r"date of birth",
    r"mrn\b",
    r"born (?:on )?(?:\d\d?[/.-]\d|[a-z]{3,9}\.? \d)",
    r"age[:\s]+\d",
    r"\d\d{0,2}\s*(?:y/?o|yrs?|years?)\b",
    r"\d\d?\d? ?[mf]\b",
    r"is an? \d{1,3}[- ](?:year|yr|month)",
    r"(?:was|is|has been|had been|were) (?:diagnosed|admitted|seen (?:in|by|for|today)|prescribed"
    r"|started on|discharged|referred|treated|tested|evaluated|transferred|hospitali[sz]ed"
    r"|placed on|put on|being treated|pregnant|intubated|scheduled for (?:surgery|a|an|her|his))",
    r"has (?:been diagnosed|a (?:history|hx|diagnosis)|tested)",
    r"present(?:ed|s) (?:with|to|for)",
    r"tested (?:positive|negative)",
    r"underwent\b",
    r"complain(?:s|ed|ing) of",
    r"c/o\b",
    r"s/p\b",
    r"'s (?:labs?|results?|diagnosis|biopsy|scan|mri|ct|a1c|medications?|meds|prescriptions?"
    r"|blood|tests?|condition|treatment|surgery|therapy|symptoms|chart|records?|insurance"
    r"|pathology|imaging|x-ray|prognosis|care plan|discharge|admission|appointment)",
)
_WEAK_AFTER_CUES = (
    r"(?:reports|reported|denies|denied|takes|took|came in|is on|needs? (?:a )?refill)\b",
    r"(?:was|is|has been) (?:given|seen|started|taking|on)\b",
    # "Jim Beam 03/04/1956": a name and then a date, as lab reports list patients
    r"\d\d?/\d\d?/(?:19\d\d|20[01]\d|\d\d)\b",
)
_STRONG_AFTER = re.compile(
    r"[\s,(|\-\u2013]*(?:" + "|".join(_STRONG_AFTER_CUES) + ")", re.IGNORECASE
)
# Names of clinicians are provider context, not patients.
# (Both read the lower-cased text.)
_PROVIDER_BEFORE = re.compile(r"(?:\bdr\.?|\bdoctor|\bprovider:?|\bnurse)\s*$")
_PROVIDER_AFTER = re.compile(
    r",?\s*(?:md|m\.d\.|do|rn|np|pa-c|pa|phd|dds|dmd|lcsw|fnp|dnp|arnp|aprn|lpn|pharmd|rph"
    r"|facp|mph|crna|cnm|msw)\b"
)
# Capitalised words that start lines in forms and letters, never a name.
_NOT_NAMES = frozenset(
    """
    the and for with from date name dob mrn id sex age male female patient pt dear hello hi
    information info care plan note notes report results result summary diagnosis history
    phone fax email address city state zip medical record number insurance member account
    subject re fw fwd meeting update request follow up new old our your this that please
    thank thanks regards best sincerely department clinic hospital health center services
    unknown none test sample n/a na dr mr mrs ms miss primary secondary admission discharge
    """.split()
)
# "Last Name: Doe | First Name: Jane" in a labelled table row. The pattern opens
# with the "name:" of the first label, a literal the regex engine skips to in C
# (a pattern opening with "last" or "first" is tried at every "l" and "f"); the
# rest of that label is checked behind it, and `_split_names` works out its start.
_SPLIT_NAME_RE = re.compile(
    r"name:(?:"
    r"(?:(?<=last[ _]name:)|(?<=lastname:))"
    r"[ \t]*(?P<l1>[a-z'-]+)[ \t]*\|[ \t]*first[ _]?name:[ \t]*(?P<f1>[a-z'-]+)"
    r"|(?:(?<=first[ _]name:)|(?<=firstname:))"
    r"[ \t]*(?P<f2>[a-z'-]+)[ \t]*\|[ \t]*last[ _]?name:[ \t]*(?P<l2>[a-z'-]+)"
    r")"
)
_NAME_HEADER_RE = re.compile(r"\b(?:name|patient|pt|member|first|last|surname|resident)\b")


_NAME_SPLIT_RE = re.compile(r"[ ,]+")
_INITIAL_RE = re.compile(r"[A-Z]\.")


def _tokens(name: str) -> list[str]:
    return [t for t in _NAME_SPLIT_RE.split(name) if t and not (len(t) <= 2 and t.endswith("."))]


def _plausible(name: str, strict: bool) -> bool:
    """Does the candidate read as a personal name? strict: given name must be known."""
    toks = [t for t in _tokens(name) if len(t) > 1]
    if any(t.lower() in _NOT_NAMES for t in toks):
        return False
    firsts, lasts = first_names(), last_names()
    if len(toks) == 1 and _INITIAL_RE.match(name):
        return toks[0].lower() in lasts  # "J. Smith"
    if len(toks) < 2:
        return False
    if "," in name:
        surname, given = toks[0].lower(), toks[1].lower()
    else:
        given, surname = toks[0].lower(), toks[-1].lower()
    given_known = given in firsts
    if not strict:
        return given_known or surname in lasts
    if not given_known:
        return False
    # "Grace Period", "Will Update": a given name that is also an everyday word
    # needs a known surname beside it.
    return not firsts[given] or surname in lasts


# Cues before a name are found from their ":" (cheap to find) or from a
# literal word, never with one big alternation tried at every position.
_COLON_RE = re.compile(r":[ \t]*")
_COLON_CUE_RE = re.compile(
    r"(?:(?P<strong>(?:patient|pt|resident|client|decedent|insured|subscriber|member|beneficiary)"
    r"(?:'s)?(?: full)?(?: name)?|name of (?:patient|pt)|re:[ \t]*(?:patient|pt)\.?)"
    r"|(?P<re>re)|(?P<label>name|regarding))[ \t]*$"
)
_FOR_CUES = frozenset(
    "results labs records referral prescription refill chart report appointment orders"
    " paperwork authorization claim bill patient".split()
)
# Every colon cue ends with one of these: a cheap test before the regex.
_CUE_ENDS = (
    "patient", "pt", "pt.", "resident", "client", "decedent", "insured", "subscriber", "member",
    "beneficiary", "name", "re", "regarding", "patient's",
)  # fmt: skip
# Labels of a name split over two cells, handled by _SPLIT_NAME_RE instead.
_SPLIT_LABELS = ("last name", "first name", "last_name", "first_name", "lastname", "firstname")
# (kind, finder, cue): the finder looks for a lower-case literal in the
# lower-cased text, which the regex engine skips to quickly; the cue pattern
# then checks the case-sensitive original at that spot. A finder also wants the
# blank the cue ends with, so "appointment" in every row of a table is no hit.
_WORD_CUES: tuple[tuple[str, re.Pattern[str] | None, re.Pattern[str]], ...] = (
    (
        "strong",
        re.compile(r"p(?:atient,?|t\.?)[ \t]"),
        re.compile(r"[Pp](?:atient,?|t\.?(?=[ \t]+[A-Z][a-z]))[ \t]+(?=[A-Z])"),
    ),
    ("weak", None, re.compile(r"M(?:rs?|s|iss|x)\.?[ \t]+(?=[A-Z])")),
    ("for", None, re.compile(r"for[ \t]+(?=[A-Z])")),
    (
        "weak",
        re.compile(r"re(?:garding|ferring)[ \t]"),
        re.compile(r"[Rr]e(?:garding|ferring)[ \t]+(?=[A-Z])"),
    ),
    ("weak", re.compile(r"member,?[ \t]"), re.compile(r"[Mm]ember,?[ \t]+(?=[A-Z])")),
)
# A table of labelled cells has a colon every few words: there, finding the cue
# labels with one regex beats looking at every colon. The regex reads the text
# reversed, so that each match opens with its ":", a literal the regex engine
# skips to in C (forwards, it would try the labels at every letter they start with).
_COLON_CUE_LABEL_REV_RE = re.compile(
    r":\s*+(?:"
    + "|".join(
        # "Last name:" and "First name:" are _SPLIT_LABELS: not looked at.
        "eman" + "".join(f"(?!{re.escape(label[::-1][4:])})" for label in _SPLIT_LABELS)
        if e == "name"
        else re.escape(e[::-1])
        for e in sorted(_CUE_ENDS, key=len, reverse=True)
    )
    + ")"
)
_DENSE_COLONS = 40  # characters per colon below which the text counts as a table
# Cues after a name are searched first; the name is then read backwards.
_AFTER_SEP_CHARS = r" \t,(|\-\u2013"
_AFTER_SEP = f"[{_AFTER_SEP_CHARS}]"  # what may separate a name from its cue
_SEPARATORS = frozenset(" \t,(|-\u2013")  # the same characters, for `in`
# "Jane Doe's labs": the one cue written right after the name, without a separator.
_POSSESSIVE_CUE = next(p for p in _STRONG_AFTER_CUES if p.startswith("'s"))
_POSSESSIVE_RE = re.compile(f"(?P<cue>{_POSSESSIVE_CUE})")


# Every other cue ("DOB", "58F", "3/4/1956", "was admitted", "reports") in one
# pass, and only where a letter or the ")" of an aside comes before it and its
# separators, where a name may end: the dates and numbers of a table are passed
# over in C. Strong cues come first, so the heavier weight wins where a strong
# and a weak cue start at the same place; the empty group "strong" is set after
# a strong cue and "age" after an age or sex (both weigh 1.0).
# The pattern opens with one character class, so that the regex engine skips in
# C to the separators and ")"s; a separator counts only after a letter (one
# negative look-behind; a separator that opens the text is passed over by
# starting the search after it). A separator after ")" need not count: the
# match starts at that ")". Cues never begin with a separator, so the run of
# them is taken possessively, without backtracking. The cues are one flat
# alternation, which the engine passes over at the first character that differs.
def _sep_cues_re(separators: str, not_letter: str) -> re.Pattern[str]:
    """The cue pattern for texts whose separators and non-letters are these classes."""
    return re.compile(
        rf"[{separators})](?<!{not_letter}[{separators}])"
        rf"[{separators}]*+"
        r"(?P<cue>\d\d?\d?(?:(?P<age>\s*(?:y/?o|yrs?|years?)\b| ?[mf]\b)"
        r"|/\d\d?/(?:19\d\d|20[01]\d|\d\d)\b)"
        r"|(?:"
        + "|".join(p for p in _STRONG_AFTER_CUES if not p.startswith(("\\d", "'s")))
        + ")(?P<strong>)|"
        + "|".join(p for p in _WEAK_AFTER_CUES if not p.startswith("\\d"))
        + ")"
    )


_SEP_CUES_RE = _sep_cues_re(_AFTER_SEP_CHARS, r"[\W\d_]")
# The same for ASCII text (most mail), which holds no "\u2013" and no other
# letters than a-z: classes the regex engine tests several times faster.
_SEP_CUES_ASCII_RE = _sep_cues_re(_AFTER_SEP_CHARS.replace("\\u2013", ""), "[^a-zA-Z]")
# The name may be followed by a short aside: "Tom Hanks (ID W123), was seen ..."
_NAME_BEFORE_RE = re.compile(_NAME + r"[ \t,]*(?:\([^()\n]{0,40}\))?[ \t,(|\-\u2013]*$")


class PatientNameDetector:
    """Personal names in patient context."""

    id = "patient-name"
    version = 2

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> list[Finding]:
        """Findings in one segment."""
        text = seg.text
        # Only names next to a cue are looked at: scanning every capitalised
        # pair in a long document would cost more than all other detectors.
        best: dict[int, tuple[int, str, float]] = {}
        find_in_low = low.find

        def keep(start: int, end: int, name: str, weight: float) -> None:
            before = start - 12 if start > 12 else 0
            # Every provider cue before a name holds an "r" ("dr", "doctor",
            # "provider", "nurse"): without one the regex need not run.
            if (
                find_in_low("r", before, start) >= 0 and _PROVIDER_BEFORE.search(low, before, start)
            ) or _PROVIDER_AFTER.match(low, end):
                return
            kept = best.get(start)
            if kept is None or weight > kept[2]:
                best[start] = (end, name, weight)

        for kind, pos in self._cues_before(text, low):
            m = _NAME_RE.match(text, pos)
            if m is None:
                continue
            name = m.group("name")
            if kind == "strong":
                if _plausible(name, strict=False):
                    keep(m.start(), m.end(), name, 1.0)
            elif _plausible(name, strict=True):
                after = _STRONG_AFTER.match(text, m.end()) is not None
                keep(m.start(), m.end(), name, 1.0 if after else 0.6)
        for cue, weight in self._cues_after(low):
            # A name ends in a letter, maybe followed by an aside in brackets.
            window = cue - 60 if cue > 60 else 0
            before = text[window:cue].rstrip(" \t,(|-\u2013")
            if not before:
                continue
            end_char = before[-1]
            if not (end_char.isalpha() or end_char == ")"):
                continue
            words = before.rsplit(None, 2)
            if len(words) < 2:
                continue
            initial = words[-1][0]
            if not (initial.isupper() or initial == "("):
                continue  # a name is two or more capitalised words
            if end_char != ")":
                initial = words[-2][0]
                if not (initial.isupper() or initial == "("):
                    continue  # "First name: Maria": one capitalised word is no name
            m = _NAME_BEFORE_RE.search(text, window, cue)
            if m is not None and _plausible(m.group("name"), strict=True):
                keep(m.start("name"), m.end("name"), m.group("name"), weight)
        if ctx.header and _NAME_HEADER_RE.search(ctx.header):
            weight = 1.0 if "patient" in ctx.header or "dob" in ctx.header else 0.6
            for m in _NAME_RE.finditer(text):
                if _plausible(m.group("name"), strict=True):
                    keep(m.start(), m.end(), m.group("name"), weight)
        if "name:" in low:
            # Labelled table rows: "Last name: Doe | First name: Jane"
            firsts, lasts = first_names(), last_names()
            for start, end, first, last in _split_names(low):
                if first in firsts or last in lasts:
                    keep(start, end, f"{first} {last}".title(), 0.6)
        found = self._findings(seg, best) if best else []
        if "mr" in low or "ms" in low:
            found.extend(self._honorific_surnames(seg, text))
        return found

    def _findings(self, seg: SegmentLike, best: dict[int, tuple[int, str, float]]) -> list[Finding]:
        """The kept names as findings, in text order."""
        rule, version, location = self.id, self.version, seg.location
        new = tuple.__new__  # Finding's own constructor, minus its argument handling
        # A list names the same patients again and again: each distinct name is
        # masked and hashed once. Local to this call, so no name outlives the scan.
        masked_keys: dict[str, tuple[str, str]] = {}
        found: list[Finding] = []
        for start in sorted(best):
            end, name, weight = best[start]
            masked_key = masked_keys.get(name)
            if masked_key is None:
                masked_key = masked_keys[name] = _mask_and_key(name)
            found.append(
                new(
                    Finding,
                    (rule, version, "name", "identifier", location, masked_key[0],
                     0.9 if weight >= 1.0 else 0.6, start, end, weight, masked_key[1]),
                )
            )  # fmt: skip
        return found

    @staticmethod
    def _cues_after(low: str) -> list[tuple[int, float]]:
        """(where the cue starts, weight) for every cue that may follow a name."""
        cues: list[tuple[int, float]] = []
        if "'s" in low:
            cues = [(found.start("cue"), 1.0) for found in _POSSESSIVE_RE.finditer(low)]
        # A separator at 0 has no letter before it (the look-behind cannot tell).
        sep_cues = _SEP_CUES_ASCII_RE if low.isascii() else _SEP_CUES_RE
        for found in sep_cues.finditer(low, 1 if low[:1] in _SEPARATORS else 0):
            cue, age, strong = found.groups()
            # The cue runs to the end of the match.
            cues.append((found.end() - len(cue), 1.0 if age or strong is not None else 0.6))
        return cues

    @staticmethod
    def _colons(low: str) -> Iterator[int]:
        """Where every colon that may end a cue label is (a superset)."""
        if low.count(":") * _DENSE_COLONS > len(low):
            # A colon at i in low is at last - i in the reversed text.
            last = len(low) - 1
            found = [last - m.start() for m in _COLON_CUE_LABEL_REV_RE.finditer(low[::-1])]
            yield from reversed(found)
        else:
            for m in _COLON_RE.finditer(low):
                yield m.start()

    @staticmethod
    def _cues_before(text: str, low: str) -> Iterator[tuple[str, int]]:
        """("strong" | "weak", where a name would start) for every cue in the text."""
        for colon in PatientNameDetector._colons(low):
            label = low[max(0, colon - 12) : colon].rstrip()
            if not label.endswith(_CUE_ENDS) or label.endswith(_SPLIT_LABELS):
                continue
            cue = _COLON_CUE_RE.search(low, max(0, colon - 40), colon)
            if cue is None or not starts_token(low, cue.start()):
                continue
            if cue.group("re") is not None:
                # "Re:" counts at the start of a line (subjects, memo headers) only.
                line_start = text.rfind("\n", 0, cue.start()) + 1
                if text[line_start : cue.start()].strip():
                    continue
            after = _COLON_RE.match(low, colon)
            yield ("strong" if cue.group("strong") else "weak"), after.end() if after else colon + 1
        for kind, finder, cue_re in _WORD_CUES:
            if finder is None:
                found: Iterator[re.Match[str] | None] = cue_re.finditer(text)
            else:
                found = (cue_re.match(text, f.start()) for f in finder.finditer(low))
            for m in found:
                if m is None or not starts_token(text, m.start()):
                    continue
                if kind == "for":
                    # "Lab results for Jane Doe", "refill for John Smith"
                    before = low[max(0, m.start() - 16) : m.start()].split()
                    if not before or before[-1] not in _FOR_CUES:
                        continue
                    yield "weak", m.end()
                else:
                    yield kind, m.end()

    def _honorific_surnames(self, seg: SegmentLike, text: str) -> Iterator[Finding]:
        """ "Mrs. Garcia was admitted": a title and surname with a clinical verb after it."""
        for m in _HONORIFIC_RE.finditer(text):
            if not starts_token(text, m.start()):
                continue
            surname = m.group("surname")
            if surname.lower() not in last_names() or not _STRONG_AFTER.match(text, m.end()):
                continue
            yield self._finding(seg, m.start(), m.end(), surname, 1.0)

    def _finding(self, seg: SegmentLike, start: int, end: int, name: str, weight: float) -> Finding:
        masked, key = _mask_and_key(name)
        return Finding(
            self.id,
            self.version,
            "name",
            "identifier",
            seg.location,
            masked,
            0.9 if weight >= 1.0 else 0.6,
            start,
            end,
            weight,
            key,
        )


def _split_names(low: str) -> Iterator[tuple[int, int, str, str]]:
    """(start, end, first, last) of each "Last name: Doe | First name: Jane" in low.

    The matches, in order, of the plain pattern that opens with the label,
    `last[ _]?name:...|first[ _]?name:...`, run with finditer.
    """
    end = pos = 0
    search = _SPLIT_NAME_RE.search
    while (m := search(low, pos)) is not None:
        colon = m.start()  # where "name:" is
        last, first, first2, last2 = m.groups()
        # Back over "last" or "first" and the blank or "_" that may follow it.
        start = colon - (4 if last is not None else 5) - (low[colon - 1] in " _")
        if start < end:
            # The label begins inside the previous match, where the plain
            # pattern cannot start again; a later label still may.
            pos = colon + 1
            continue
        end = pos = m.end()
        yield start, end, first or first2, last or last2


def _mask_and_key(name: str) -> tuple[str, str]:
    """ "J*** D***" and the key of a name."""
    words = name.split(" ")
    if len(words) == 2 and "," not in name and "." not in name:
        # "Jane Doe", by far the most common shape, without the regex and sorting.
        given, surname = words
        if len(given) > 1 and len(surname) > 1:
            a, b = given.lower(), surname.lower()
            key = value_key("name", f"{a} {b}" if a <= b else f"{b} {a}")
            return f"{given[0]}*** {surname[0]}***", key
    toks = _tokens(name)
    masked = " ".join(t[0] + "***" for t in toks)
    return masked, value_key("name", " ".join(sorted(t.lower() for t in toks if len(t) > 1)))


_HONORIFIC_RE = re.compile(
    r"M(?:rs?|s|iss)\.?\s+(?P<surname>[A-Z][a-z]+(?:-[A-Z][a-z]+)?)(?!\s+[A-Z])"
)
