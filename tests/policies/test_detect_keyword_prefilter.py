"""The cheap test before the keyword search of record numbers never turns a keyword away."""

from __future__ import annotations

import random
from pathlib import Path

from policies.detect.identifiers import _ID_WINDOW, _keyword_before, _keyword_search
from policies.extract import extract

CORPUS = Path(__file__).parent / "corpus"

# Every keyword of every family, spelt in each way its pattern allows, with each
# suffix and separator, and words that merely look alike.
KEYWORDS = (
    "mrn", "mr", "medical record", "medical record number", "med rec", "med. record",
    "medrec", "chart", "patient", "patient id", "pt id", "pt. id", "ptid", "emr", "ehr",
    "encounter", "csn", "hospital", "unit", "member", "subscriber", "insurance", "medicaid",
    "beneficiary", "health plan", "policy holder", "policyholder", "id card", "recipient",
    "enrollee", "patient acct", "patient account", "acct", "account", "acount", "claim",
    "icn", "prior auth", "prior authorization", "policy", "driver's license",
    "drivers licence", "driver license", "dl", "passport", "state id", "xmrn", "units",
    "community", "dog", "the", "is", "of", "no",
)  # fmt: skip
SUFFIXES = ("", " #", "#", " no", " no.", " num", " number", " id", " identifier", " nos")
SEPARATORS = ("", " ", ": ", ":", " - ", " #: ", "=", ". ", " \u2013 ", "   :  ")
TAILS = ("", "is ", "of ", "is  ", "was ")


def phrases() -> list[str]:
    rng = random.Random(5)
    out = []
    for keyword in KEYWORDS:
        for suffix in SUFFIXES:
            for sep in SEPARATORS:
                tail = rng.choice(TAILS)
                lead = rng.choice(("", "the ", "x", "Re: ", "a " * rng.randint(0, 30)))
                out.append(f"{lead}{keyword}{suffix}{sep}{tail}".lower())
    return out


def agree(low: str, start: int) -> None:
    reference = _keyword_search(low, max(0, start - _ID_WINDOW), start)
    found = _keyword_before(low, start)
    if found is None:
        # Turned away: by the letter test (as before) or the new word test, and
        # the full search finds nothing either, or nothing at a letter.
        assert reference is None or not low[: reference.end()].rstrip(" :#=.-\u2013\t\n")
    else:
        assert reference is not None and found.span() == reference.span()


def test_every_keyword_phrase_passes_the_word_test() -> None:
    for phrase in phrases():
        low = phrase + "00482913"
        agree(low, len(phrase))


def test_the_corpus_texts_get_the_same_keywords() -> None:
    for path in sorted(CORPUS.glob("*.eml"))[::3]:
        for seg in extract(path.read_bytes()).segments:
            low = seg.text.lower()
            for start in range(1, len(low)):
                if low[start].isalnum() and not low[start - 1].isalnum():
                    agree(low, start)
