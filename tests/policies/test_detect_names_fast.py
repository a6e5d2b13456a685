"""The fast paths of the name detector agree with the plain forms they stand for."""

from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.detect.base import lower_same_length, value_key
from policies.detect.names import (
    _AFTER_SEP,
    _CUE_ENDS,
    _POSSESSIVE_RE,
    _PROVIDER_BEFORE,
    _SPLIT_LABELS,
    _STRONG_AFTER_CUES,
    _WEAK_AFTER_CUES,
    _WORD_CUES,
    PatientNameDetector,
    _mask_and_key,
    _split_names,
    _tokens,
)
from policies.extract import Segment

# --- plain forms -------------------------------------------------------------------

# The cues after a name as nested groups tried at every position.
_SEP_CUES_PLAIN = re.compile(
    rf"(?:\)|{_AFTER_SEP}(?:(?<=[^\W\d_]{_AFTER_SEP})|(?<=\){_AFTER_SEP})))"
    rf"{_AFTER_SEP}*"
    r"(?:(?=\d)(?P<dcue>\d\d?\d?(?:(?P<age>\s*(?:y/?o|yrs?|years?)\b| ?[mf]\b)"
    r"|/\d\d?/(?:19\d\d|20[01]\d|\d\d)\b))"
    r"|(?P<cue>(?P<strong>"
    + "|".join(p for p in _STRONG_AFTER_CUES if not p.startswith(("\\d", "'s")))
    + ")|"
    + "|".join(p for p in _WEAK_AFTER_CUES if not p.startswith("\\d"))
    + "))"
)
# The colons of cue labels, searched forwards.
_COLON_CUE_LABEL_PLAIN = re.compile(
    "(?:"
    + "|".join(
        "name" + "".join(f"(?<!{re.escape(label)})" for label in _SPLIT_LABELS)
        if e == "name"
        else re.escape(e)
        for e in sorted(_CUE_ENDS, key=len, reverse=True)
    )
    + r")\s*:"
)
# Names split over two labelled cells, searched from the start of each label.
_SPLIT_NAME_PLAIN = re.compile(
    r"last[ _]?name:[ \t]*(?P<l1>[a-z'-]+)[ \t]*\|[ \t]*first[ _]?name:[ \t]*(?P<f1>[a-z'-]+)"
    r"|first[ _]?name:[ \t]*(?P<f2>[a-z'-]+)[ \t]*\|[ \t]*last[ _]?name:[ \t]*(?P<l2>[a-z'-]+)"
)
# The finders of the word cues without the blank after them.
_PLAIN_FINDERS = (r"p(?:atient|t)", None, None, r"re(?:garding|ferring)", r"member")


def cues_after_plain(low: str) -> list[tuple[int, float]]:
    out = []
    if "'s" in low:
        out += [(found.start("cue"), 1.0) for found in _POSSESSIVE_RE.finditer(low)]
    for found in _SEP_CUES_PLAIN.finditer(low):
        if found.group("dcue") is not None:
            out.append((found.start("dcue"), 1.0 if found.group("age") else 0.6))
        else:
            out.append((found.start("cue"), 1.0 if found.group("strong") is not None else 0.6))
    return out


def mask_and_key_plain(name: str) -> tuple[str, str]:
    toks = _tokens(name)
    masked = " ".join(t[0] + "***" for t in toks)
    return masked, value_key("name", " ".join(sorted(t.lower() for t in toks if len(t) > 1)))


# --- texts that crowd the edge cases -------------------------------------------------

PIECES = (
    "Jane", "Doe", "JANE", "O'Neil", "Mary-Jane", "Smith,", "J.", "é", "Ünal", "_", "x1",
    " ", "  ", "\t", "\n", ",", "(", ")", "|", "-", "\u2013", ":", " : ", ".", "'s", "'s labs",
    "1", "54", "3/4/1956", "12/03/90", "y/o", " yo", "yrs", "m", "F", "58F",
    "DOB", "dob", "d.o.b", "date of birth", "MRN", "born on 12/03/1990", "born jan 5",
    "age 54 yo", "age: 5", "is a 54-year", "was admitted", "was seen today", "is on", "reports",
    "denies", "needs a refill", "has been diagnosed", "presented with", "c/o", "s/p",
    "Patient", "patient", "pt", "Pt.", "patient's", "name", "Name", "last name", "First name",
    "firstname", "lastname", "last_name", "re", "Re", "regarding", "resident", "member",
    "beneficiary", "appointment", "for", "Mrs.", "Mr", "Ms", "Miss", "Mx.", "MRN", "Dr.",
    "provider", "nurse", "MD",
)  # fmt: skip


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(PIECES) for _ in range(n))


def test_sep_cues_match_the_plain_alternation() -> None:
    rng = random.Random(20240611)
    for _ in range(4000):
        low = lower_same_length(random_text(rng, rng.randrange(1, 30)))
        assert list(PatientNameDetector._cues_after(low)) == cues_after_plain(low), low


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=" \t,(|-\u2013)aZé_1:/dobmrnis", max_size=40))
def test_sep_cues_on_any_text(text: str) -> None:
    low = lower_same_length(text)
    assert list(PatientNameDetector._cues_after(low)) == cues_after_plain(low)


def test_sep_cues_at_the_start_of_the_text() -> None:
    # A separator that opens the text has no letter before it; ")" needs none.
    for text in (" DOB", "| 54 yo", "\u2013 dob", ") DOB", ")dob", "a DOB", "  DOB x DOB"):
        low = lower_same_length(text)
        assert list(PatientNameDetector._cues_after(low)) == cues_after_plain(low), text


def test_dense_colons_match_the_forward_search() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        # Colons every few characters: the table path.
        parts = [rng.choice(PIECES) + rng.choice(("", ":", " :", ":  ")) for _ in range(30)]
        low = lower_same_length("".join(parts))
        low += ":" * (len(low) // 39 + 1 - low.count(":"))
        assert low.count(":") * 40 > len(low)
        plain = [m.end() - 1 for m in _COLON_CUE_LABEL_PLAIN.finditer(low)]
        assert list(PatientNameDetector._colons(low)) == plain, low


def test_dense_colons_keep_split_labels_apart() -> None:
    low = "first name   : a:last name: b:lastname:c:name:d:x name  :e:re:f:pt.:g:patient's:"
    plain = [m.end() - 1 for m in _COLON_CUE_LABEL_PLAIN.finditer(low)]
    assert list(PatientNameDetector._colons(low)) == plain
    assert len(plain) == 5  # "name", "x name", "re", "pt.", "patient's"


def test_word_cue_finders_find_every_cue() -> None:
    rng = random.Random(11)
    for _ in range(3000):
        text = random_text(rng, rng.randrange(1, 20)) + " Jane Doe"
        low = lower_same_length(text)
        for (_, finder, cue_re), plain in zip(_WORD_CUES, _PLAIN_FINDERS, strict=True):
            if finder is None or plain is None:
                continue
            want = [cue_re.match(text, f.start()) for f in re.finditer(plain, low)]
            got = [cue_re.match(text, f.start()) for f in finder.finditer(low)]
            assert [m.span() for m in got if m] == [m.span() for m in want if m], text


def split_names_plain(low: str) -> list[tuple[int, int, str, str]]:
    return [
        (m.start(), m.end(), m.group("f1") or m.group("f2"), m.group("l1") or m.group("l2"))
        for m in _SPLIT_NAME_PLAIN.finditer(low)
    ]


SPLIT_PIECES = (
    "last name:", "last_name:", "lastname:", "first name:", "first_name:", "firstname:",
    "last", "first", "name:", " ", "\t", "|", " | ", "doe", "jane", "o'neil", "x", "-", ":",
    "\n", "blast", "xfirst",
)  # fmt: skip


def test_split_names_match_the_plain_pattern() -> None:
    rng = random.Random(3)
    for _ in range(6000):
        low = "".join(rng.choice(SPLIT_PIECES) for _ in range(rng.randrange(1, 24)))
        assert list(_split_names(low)) == split_names_plain(low), low


def test_split_names_label_inside_the_previous_value() -> None:
    # "janelast" is one value: the "last" in it opens no label, the next one may.
    for low in (
        "last name: doe | first name: janelast name: roe | first name: bob",
        "last name: doe | first name: janelast name: roe | first name: bob | last name: x",
        "first name: a | last name: blast_name: c | first name: d",
        "first name: a | last name: b | first name: c | last name: d",
        "last name:doe|first name:jane\nlastname: roe\t|\tfirstname: bob",
    ):
        assert list(_split_names(low)) == split_names_plain(low), low


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="drDRoctpvinuse .:\t\n", max_size=14))
def test_provider_cues_all_hold_an_r(window: str) -> None:
    # keep() skips the provider regex where the window before a name has no "r".
    if _PROVIDER_BEFORE.search(window):
        assert "r" in window


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="AbJ.,' -é", max_size=16))
def test_mask_and_key_matches_the_plain_form(name: str) -> None:
    assert _mask_and_key(name) == mask_and_key_plain(name)


def test_mask_and_key_common_shapes() -> None:
    names = (
        "Jane Doe", "Doe Jane", "Jane Jane", "Ann Li", "J Doe", "Jane D", "Smith, John A.",
        "J. Smith", "John A. Smith", "Mary-Jane O'Neil", "Jane  Doe", " Jane Doe", "Ab Ab",
    )  # fmt: skip
    for name in names:
        assert _mask_and_key(name) == mask_and_key_plain(name), name


def test_one_name_with_two_weights_keeps_each_score() -> None:
    # The masked form and key of a name are worked out once per scan: the score
    # of each finding still comes from its own context.
    text = (
        "Patient: Jane Doe\nRe: Jane Doe reports pain\nre Jane Doe\n"
        "Last name: Doe | First name: Jane"
    )
    seg = Segment("body/1 text/plain", text, "body", False)
    found = list(PatientNameDetector().scan(seg, lower_same_length(text)))
    assert [(f.start, f.score, f.weight) for f in found] == [
        (9, 0.9, 1.0),
        (22, 0.6, 0.6),
        (text.index("Last"), 0.6, 0.6),
    ]
    assert len({(f.masked, f.key) for f in found}) == 1
    assert found[0].key == mask_and_key_plain("Jane Doe")[1]
