"""Identifier detectors: SSN, MBI, HICN, keyword ids, dates, phone, e-mail, address, names."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.detect import Detector, Finding, ScanContext, scan_segment
from policies.detect import identifiers as ids
from policies.detect.base import lower_same_length, mask_token, starts_token, value_key
from policies.detect.dates import DATE_GROUPS, DATE_RE, date_groups, iso_date, parse_date
from policies.detect.identifiers import (
    AddressDetector,
    DateDetector,
    HicnDetector,
    KeywordIdDetector,
    MbiDetector,
    PhoneDetector,
    SsnDetector,
    ssn_valid,
)
from policies.extract import Segment


def scan(text: str, *, kind: str = "body", header: str = "", is_row: bool = False) -> list[Finding]:
    seg = Segment("body/1 text/plain", text, kind, is_row)  # type: ignore[arg-type]
    return scan_segment(seg, ctx=ScanContext(header=header.lower()))


def of(findings: list[Finding], category: str) -> list[Finding]:
    return [f for f in findings if f.category == category]


# --- SSN ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "SSN 219-45-6781 on file",
        "number 219 45 6781 on file",
        "ssn: 219456781",
        "Social Security Number: 219.45.6781",
        "the number 219-45-\n6781 was split by the mail client",
        "219-\n45-6781",
        "(219-45-6781)",
    ],
)
def test_ssn_found(text: str) -> None:
    found = of(scan(text), "ssn")
    assert len(found) == 1
    assert found[0].masked == "***-**-6781"
    assert found[0].weight == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "reference 219456781 in the ledger",  # bare nine digits need a keyword
        "SSN 000-12-3456",  # area 000
        "SSN 666-12-3456",  # area 666
        "SSN 912-12-3456",  # 9xx areas are never issued
        "SSN 219-00-3456",  # group 00
        "SSN 219-45-0000",  # serial 0000
        "SSN 078-05-1120",  # the Woolworth wallet card
        "SSN 123-45-6789",  # advertising sample
        "SSN 219-09-9999",  # SSA pamphlet sample
        "SSN 111-11-1111",  # one repeated digit
        "part 12219-45-67811",  # inside a longer number
        "version 1.219-45-6781",
    ],
)
def test_ssn_rejected(text: str) -> None:
    assert of(scan(text), "ssn") == []


def test_ssn_rules() -> None:
    assert ssn_valid("219456781")
    assert not ssn_valid("219456781"[:8])


@settings(max_examples=200, deadline=None)
@given(
    area=st.integers(1, 899).filter(lambda a: a != 666),
    group=st.integers(1, 99),
    serial=st.integers(1, 9999),
    sep=st.sampled_from(["-", " ", "-\n", " - "]),
)
def test_ssn_masked_never_shows_the_number(area: int, group: int, serial: int, sep: str) -> None:
    number = f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"
    found = of(scan(f"SSN {number}."), "ssn")
    plain = f"{area:03d}{group:02d}{serial:04d}"
    if not ssn_valid(plain):
        assert found == []
        return
    assert len(found) == 1
    assert found[0].masked == f"***-**-{serial:04d}"


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_detectors_accept_any_text(text: str) -> None:
    for f in scan(text):
        assert 0 <= f.start <= f.end <= len(text)
        assert 0.0 <= f.score <= 1.0


# --- Medicare ------------------------------------------------------------------------


@pytest.mark.parametrize("mbi", ["1EG4-TE5-MK73", "1EG4TE5MK73", "9AA0AA0AA00"])
def test_mbi_found(mbi: str) -> None:
    found = of(scan(f"Medicare MBI {mbi}"), "mbi")
    assert len(found) == 1 and found[0].masked.endswith(mbi[-4:])


@pytest.mark.parametrize(
    "text",
    [
        "1SG4TE5MK73",  # S is excluded
        "1EG4TE5MO73",  # O is excluded
        "0EG4TE5MK73",  # position 1 is 1-9
        "1EG4TE5MK7",  # too short
        "X1EG4TE5MK73",  # part of a longer token
    ],
)
def test_mbi_rejected(text: str) -> None:
    assert of(scan(text), "mbi") == []


def test_hicn_needs_separators_or_keyword() -> None:
    assert of(scan("Medicare claim number 219456781A"), "hicn")
    assert of(scan("HIC 219-45-6781 C1"), "hicn")
    assert of(scan("part 219456781A"), "hicn") == []


# --- keyword ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "category", "weight"),
    [
        ("MRN: 00123456", "mrn", 1.0),
        ("MRN 00123456", "mrn", 1.0),
        ("MR# 00123456", "mrn", 1.0),
        ("Medical record number 4456-7788", "mrn", 1.0),
        ("Patient ID: A1234567", "mrn", 1.0),
        ("Member ID: XYZ123456789", "member-id", 1.0),
        ("Subscriber 88776655", "member-id", 1.0),
        ("Medicaid ID 123456789012", "member-id", 1.0),
        ("Patient account #: 55443322", "account", 1.0),
        ("Account number: 55443322", "account", 0.6),
        ("Claim #2023-000123", "claim", 0.6),
        ("Policy number: HO-445566", "policy", 0.6),
        ("Driver's license number: D1234567", "license", 1.0),
    ],
)
def test_keyword_ids(text: str, category: str, weight: float) -> None:
    found = of(scan(text), category)
    assert len(found) == 1, scan(text)
    assert found[0].weight == weight
    assert found[0].masked.startswith("*")


@pytest.mark.parametrize(
    "text",
    [
        "member since 2019",  # no digits run of four... a year is a date-ish word
        "patient 12345 was late",  # "patient" alone needs "#", "id" or a colon
        "insurance 2024 renewal",
        "account 123",  # too short
        "chart: 3/4/2020",  # a date, not an id
    ],
)
def test_keyword_ids_rejected(text: str) -> None:
    found = [f for f in scan(text) if f.rule in ("mrn", "member-id", "account-number")]
    assert found == []


def test_table_column_ids() -> None:
    found = scan("0012345 | Jane Doe", header="MRN | Name", is_row=True)
    assert of(found, "mrn")


# --- dates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "DOB: 03/14/1962",
        "DOB 3/14/62",
        "D.O.B. 1962-03-14",
        "date of birth: March 14, 1962",
        "born on 14 March 1962",
        "DOB 14-Mar-1962",
        "Birthdate: 03.14.1962",
    ],
)
def test_dob(text: str) -> None:
    found = of(scan(text), "dob")
    assert len(found) == 1
    assert found[0].masked == "**/**/****"


def test_invalid_dates_are_not_dobs() -> None:
    assert of(scan("DOB: 13/45/1962"), "dob") == []
    assert of(scan("DOB: 02/30/1962"), "dob") == []


def test_encounter_dates() -> None:
    found = of(scan("Admitted on 4/2/2023, discharged 4/9/2023"), "encounter-date")
    assert len(found) == 2
    assert found[0].weight < 1.0


def test_dob_column() -> None:
    found = scan("Jane Doe | 1980-02-01 | 2024-05-06", header="Name | DOB | Visit", is_row=True)
    assert len(of(found, "dob")) == 1


# --- contact details ------------------------------------------------------------------------


def test_phone_and_fax() -> None:
    found = scan("Tel (555) 234-5678, fax: 555.234.5679")
    assert [f.category for f in found if f.kind == "identifier"] == ["phone", "fax"]
    assert found[0].masked == "***-***-5678"
    assert all(f.weight < 0.5 for f in found)


def test_email_and_address() -> None:
    found = scan("Write to jane.doe@example.org or 123 Main Street, Springfield, IL 62704.")
    email = of(found, "email")
    assert email and email[0].masked == "***@***.org"
    address = of(found, "address")
    assert address and "Main" not in address[0].masked


def test_long_runs_stay_linear() -> None:
    # A base64-like blob must not make the e-mail or name scanners quadratic.
    blob = "Ab" * 200_000 + "@" + "x" * 10
    scan(blob)


# --- patient names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "weight"),
    [
        ("Patient: John Smith", 1.0),
        ("Pt name: SMITH, JOHN", 1.0),
        ("Patient name: Maria Garcia-Lopez", 1.0),
        ("the patient John Smith", 1.0),
        ("Pt: J. Smith", 1.0),
        ("Jane Doe DOB 01/02/1960", 1.0),
        ("Jane Doe was diagnosed with asthma", 1.0),
        ("Jane Doe's labs are back", 1.0),
        ("Mrs. Garcia was admitted last night", 1.0),
        ("Re: Mark Johnson", 0.6),
        ("Lab results for Jane Doe", 0.6),
        ("Name: Jane Doe", 0.6),
        ("Jane Doe reports feeling better", 0.6),
    ],
)
def test_patient_names(text: str, weight: float) -> None:
    found = of(scan(text), "name")
    assert found, text
    assert max(f.weight for f in found) == weight
    assert all("***" in f.masked for f in found)


@pytest.mark.parametrize(
    "text",
    [
        "Dear John Smith, thanks for your order.",
        "Dr. John Smith was diagnosed",  # clinicians are not patients
        "John Smith, MD presented the results",
        "Re: Grace Period for renewals",  # an everyday word and no known surname
        "Re: Budget Meeting",
        "Thanks, John Smith",
        "Patient: Information Sheet",
        "Please see Mr. Smith in accounting",
    ],
)
def test_names_without_patient_context(text: str) -> None:
    assert of(scan(text), "name") == []


def test_labelled_name_columns() -> None:
    found = of(scan("Last name: Doe | First name: Jane | DOB: 1980-02-01", is_row=True), "name")
    assert found and found[0].masked == "J*** D***"


# --- fast paths agree with the plain ones ------------------------------------------------
#
# Several detectors search an ASCII text through a "shadow" copy (one literal per
# character class) and KeywordIdDetector memoises the keyword phrase before a
# value by the text it depends on. These tests hold them to the plain search.

FRAGMENTS = (
    "MRN", "mrn: ", "MRN #", "Patient account #: ", "account #: ", "acct no ", "member id ",
    "Medical record number ", "Policy number: ", "claim ", "xmrn: ", "Re: ", "chart: ", "dl ",
    "| ", " | ", "/", "(", ")", ",", "'", "x", "Ab", "the ", "is ", "of ", "no. ", "id ",
    "123", "4567", "0589068", "LCA7937164", "2023-000123", "-", "--", "000", "9", " ", "  ",
    "\n", "\t", "\r\n", ":", ".", "#", "=", "SSN ", "ssn: ", "219-45-6781", "219 45 6781",
    "219456781", "219-45-\n6781", "219-45-6781A", "219456781A", "Medicare claim number ",
    "HIC ", "Medicare ", "(419) 555-0142",
    "419.555.0142", "419-555-0142 ", "fax: ", "1EG4-TE5-MK73", "1EG4TE5MK73", "DOB: ",
    "07/17/1967", "1997-11-15", "3/4/62", "Admitted on ", "visit date ", "died on ",
    "123 Main Street, Springfield, IL 62704", "12 Oak Ave ", "62704", ", 02139-1234",
)  # fmt: skip


def random_texts(seed: int, count: int, longest: int = 30) -> list[str]:
    rng = random.Random(seed)
    return [
        "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, longest))) for _ in range(count)
    ]


def findings_of(detector: Detector, text: str) -> list[tuple[object, ...]]:
    seg = Segment("body/1 text/plain", text, "body", False)  # type: ignore[arg-type]
    return [tuple(f) for f in detector.scan(seg, lower_same_length(text))]


@pytest.mark.parametrize(
    "detector",
    [
        SsnDetector(), MbiDetector(), HicnDetector(), KeywordIdDetector(), DateDetector(),
        PhoneDetector(), AddressDetector(),
    ],
    ids=lambda d: type(d).__name__,
)  # fmt: skip
def test_ascii_fast_paths_agree_with_the_plain_search(detector: Detector) -> None:
    # A non-ASCII character far past the end sends the same text down the plain
    # path; inert padding makes it long enough for every fast path.
    for text in random_texts(1, 400):
        padded = "\x00" * ids._SHADOW_MIN + text
        plain = findings_of(detector, padded + " " * 100 + "\u00e9")
        assert findings_of(detector, padded) == plain, text


def _reference_keyword_ids(text: str) -> list[tuple[object, ...]]:
    """KeywordIdDetector's findings worked out for each value on its own, unmemoised."""
    low = lower_same_length(text)
    out: list[tuple[object, ...]] = []
    for cand in ids._ID_CANDIDATE_RE.finditer(low):
        start = cand.start(1)
        tail = ids._TOKEN_HEAD_RE.match(low, cand.end(1))
        end = tail.end() if tail is not None else cand.end(1)
        token = low[start:end]
        if token[0] == "-" or token[-1] == "-":
            token = token.strip("-")
            start = low.index(token, start)
            end = start + len(token)
        if not 3 <= len(token) <= 20 or len(token) - len(token.translate(ids._NO_DIGITS)) < 4:
            continue
        m = ids._keyword_before(low, start)
        if m is None or not starts_token(low, m.start()) or DATE_RE.fullmatch(low, start, end):
            continue
        group = next(g for g in ids._ID_FAMILY if m.group(g) is not None)
        sep = m.group("sep")
        marked = m.group("suf") or ":" in sep or "#" in sep or "=" in sep
        if not marked and not m.group(group).startswith(ids._BARE_OK):
            continue
        rule, category, weight = ids._ID_FAMILY[group]
        if category == "account" and ids._PATIENT_ACCOUNT_RE.search(
            low, max(0, m.start() - 20), m.end(group)
        ):
            weight = 1.0
        value = text[start:end]
        masked = mask_token(value, 4 if len(value) >= 8 else 2)
        key = value_key(category, value.upper())
        out.append((rule, 1, category, "identifier", "body/1 text/plain", masked, 0.9, m.start(),
                    end, weight, key))  # fmt: skip
    return out


@pytest.mark.parametrize(
    "text",
    [
        # One label after different text: each value gets the phrase of its own row.
        "Patient account #: 55443322 | account #: 55443323 | account #: 55443324",
        "patient x account #: 55443322\nguarantor account #: 55443323\naccount #: 1234567",
        "| mrn: 0589068 | xmrn: 0589069 | mrn: 0589070 |mrn: 0589071",
        "Re: the  chart: 1234567 | 9 chart: 1234568 | a chart: 1234569",
        "member id 12345678 / member id: 12345679 / subscriber id 12345670",
        # A phrase longer than the reach, and values at the very start.
        "a " * 40 + "medical record number: 00123456",
        "1234567 mrn 7654321",
        "mrn 1234-5678 chart: 03-04-2020 claim #2023-000123 claim #-2023-000124-",
    ],
)
def test_keyword_phrase_memo_agrees_with_each_value_alone(text: str) -> None:
    assert findings_of(KeywordIdDetector(), text) == _reference_keyword_ids(text)


def test_keyword_phrase_memo_on_random_texts() -> None:
    for text in random_texts(2, 600, longest=40):
        assert findings_of(KeywordIdDetector(), text) == _reference_keyword_ids(text), text


@given(st.text(alphabet="am0 -:|#.'\n", max_size=60))
@settings(max_examples=400, deadline=None)
def test_shadow_candidates_agree(text: str) -> None:
    low = "mrn " + text + " 1234"
    shadow = low.translate(ids._ID_SHADOW)
    fast = [(*m.span(1), m.end(2)) for m in ids._ID_SHADOW_CANDIDATE_RE.finditer(shadow)]
    plain = [(*m.span(1), m.end(2)) for m in ids._ID_CANDIDATE_TAIL_RE.finditer(low)]
    assert fast == plain


def test_shadows_keep_the_classes_their_patterns_ask_about() -> None:
    for c in map(chr, range(128)):
        id_shadow = c.translate(ids._ID_SHADOW)
        assert (id_shadow == "a") == ("a" <= c <= "z")
        assert (id_shadow == "0") == c.isdigit()
        assert (id_shadow == " ") == (c.isspace() or c in ":#=.")
        # The characters no keyword phrase holds are the "0"s and "X"s.
        hard = re.fullmatch(r"[^a-z'.#:=\-\u2013\s]", c) is not None
        assert hard == (id_shadow in "0X")
        # The SSN shadow only has to keep every match (a rough search): a "~" of
        # the text itself may pass for a separator there.
        if c in " \t\r\n-" or c.isdigit():
            assert c.translate(ids._SSN_SHADOW) == ("0" if c.isdigit() else "~")
        mbi = c.translate(ids._MBI_SHADOW)
        assert (mbi == "1") == (c in "123456789")
        assert (mbi == "A") == (re.fullmatch(ids._A, c) is not None)


@pytest.mark.parametrize("pattern", [ids._DOB_RE, ids._ENCOUNTER_RE, DATE_RE])
def test_date_patterns_hold_only_the_date_groups(pattern: re.Pattern[str]) -> None:
    # DateDetector reads a match's groups() as DATE_GROUPS.
    assert pattern.groupindex == {g: i for i, g in enumerate(DATE_GROUPS, 1)}
    assert pattern.groups == len(DATE_GROUPS)


@pytest.mark.parametrize(
    "written",
    ["07/17/1967", "7/4/62", "25/12/1970", "13/45/1962", "02/29/2001", "1997-11-15",
     "march 14, 1962", "sept 3rd 2001", "14 mar 1962", "3rd-jun-99", "01/02/2099"],
)  # fmt: skip
def test_date_groups_reads_as_parse_date(written: str) -> None:
    m = DATE_RE.fullmatch(written)
    assert m is not None
    assert date_groups(m.groups(), 2024) == parse_date(m, 2024)


DOB_KEYWORDS = ["dob", "d.o.b", "d.o.b.", "date of birth", "birth date", "birthdate", "birthday",
                "born", "born on"]  # fmt: skip
ENCOUNTER_KEYWORDS = [
    "admitted", "admission", "admission date", "admitted on", "admit date", "date of admission",
    "date of discharge", "date of service", "date of death", "date of visit", "date of surgery",
    "date of procedure", "date of injury", "discharge", "discharged", "discharge date",
    "discharged on", "dos", "d.o.s", "dod", "visit date", "service date", "seen on",
    "seen in clinic on", "surgery date", "expired on", "died on",
]  # fmt: skip


@pytest.mark.parametrize("before", ["", "x ", "the patient's ", "12 | "])
def test_date_keyword_anchors_cover_every_keyword(before: str) -> None:
    # DateDetector tries its patterns only where _date_keyword_starts (or, for
    # "dob", _DOB_LED_RE) says a keyword may start.
    at = len(before)
    for keyword in DOB_KEYWORDS:
        text = f"{before}{keyword} 01/02/2020"
        m = ids._DOB_RE.search(text)
        assert m is not None and m.start() == at, keyword
        if keyword == "dob":
            led = ids._DOB_LED_RE.search(text)
            assert led is not None and led.regs == m.regs
        else:
            assert at in ids._date_keyword_starts(text)[0], keyword
    for keyword in ENCOUNTER_KEYWORDS:
        text = f"{before}{keyword} 01/02/2020"
        m = ids._ENCOUNTER_RE.search(text)
        assert m is not None and m.start() == at, keyword
        assert at in ids._date_keyword_starts(text)[1], keyword


def _reference_dates(text: str, this_year: int, header: str = "") -> list[tuple[object, ...]]:
    """DateDetector's findings from plain searches of its patterns and the general parser."""
    low = lower_same_length(text)
    out: list[tuple[object, ...]] = []
    spans: list[tuple[int, int]] = []
    for pattern, category, weight in (
        (ids._DOB_RE, "dob", 1.0),
        (ids._ENCOUNTER_RE, "encounter-date", 0.6),
    ):
        found = []
        for m in pattern.finditer(low):
            date = parse_date(m, this_year)
            inside = any(a <= m.start() < b or a <= m.end() - 1 < b for a, b in spans)
            if not starts_token(low, m.start()) or date is None or inside:
                continue
            found.append(m.span())
            key = value_key(category, date.isoformat())
            out.append((category, 1, category, "identifier", "body/1 text/plain", "**/**/****",
                        0.95, *m.span(), weight, key))  # fmt: skip
        spans += found
    if header and ids._DOB_HEADER_RE.search(header):
        dates = [
            (d, m) for m in DATE_RE.finditer(low) if (d := parse_date(m, this_year)) is not None
        ]
        if dates:
            date, m = min(dates, key=lambda dm: dm[0])
            if not any(a <= m.start() < b for a, b in spans):
                out.append(("dob", 1, "dob", "identifier", "body/1 text/plain", "**/**/****",
                            0.95, *m.span(), 1.0, value_key("dob", date.isoformat())))  # fmt: skip
    return out


DATE_FRAGMENTS = (
    *(f"{k} " for k in DOB_KEYWORDS + ENCOUNTER_KEYWORDS), "DOB: ", "dob is ", "was ", "xdob ",
    "dobutamine ", "_dob ", "| ", ": ", "-", "(", "\n", "07/17/1967", "7/4/1962", "13/05/1970",
    "13/13/1970", "00/10/1970", "02/29/2000", "02/29/1900", "02/29/2001", "1880-01-01",
    "1879-12-31", "2025-02-03", "2026-02-03", "1997-11-15", "1997-1-5", "3/4/62", "3/4/24",
    "March 14, 1962", "14 mar 1962", "3rd-jun-99", "07/17/1\u0669\u0666\u0667", "12", "/",
)  # fmt: skip


def test_dates_agree_with_the_plain_search() -> None:
    year = ids.dt.date.today().year
    # Years either side of the last one a date may have.
    edges = tuple(f"{year + k}-02-03" for k in (-1, 0, 1, 2))
    rng = random.Random(3)
    for _ in range(3000):
        text = "".join(rng.choice(DATE_FRAGMENTS + edges) for _ in range(rng.randint(1, 12)))
        for header in ("", "last name | dob"):
            seg = Segment("body/1 text/plain", text, "body", True)  # type: ignore[arg-type]
            ctx = ScanContext(header=header)
            found = [tuple(f) for f in DateDetector().scan(seg, lower_same_length(text), ctx)]
            assert found == _reference_dates(text, year, header), text


def test_iso_date_agrees_with_the_general_parser() -> None:
    numbers = [*map(str, range(100)), *(f"{n:02d}" for n in range(10)), "\u0661", "1\u0662"]
    for year in ("1879", "1880", "1900", "1996", "2000", "2024", "2025", "2026", "62", "20", "2",
                 "1\u0669\u0666\u0667"):  # fmt: skip
        for month in numbers:
            for day in numbers:
                for groups in (
                    (month, day, year, None, None, None, *[None] * 6),
                    (None, None, None, year, month, day, *[None] * 6),
                ):
                    date = date_groups(groups, 2024)
                    expected = None if date is None else date.isoformat()
                    assert iso_date(groups, 2024) == expected, groups


@given(st.text(alphabet="1290AEKSBZa-x ", max_size=40))
@settings(max_examples=400, deadline=None)
def test_mbi_shadow_agrees(text: str) -> None:
    for probe in (text, "1EG4-TE5-MK73 " + text, text + "9AA0AA0AA00"):
        shadow = probe.translate(ids._MBI_SHADOW)
        fast = [m.regs for m in ids._MBI_SHADOW_RE.finditer(shadow)]
        assert fast == [m.regs for m in ids._MBI_RE.finditer(probe)]


@given(st.text(alphabet="0259 .-()/x\n", max_size=40))
@settings(max_examples=400, deadline=None)
def test_bare_phone_shadow_agrees(text: str) -> None:
    for probe in (text, "212 555 0142" + text, text + "(212) 555-0142 212.555.0142"):
        fast = [m.regs for m in ids._bare_phones(probe)]
        assert fast == [m.regs for m in ids._PHONE_RES[1].finditer(probe)]


def test_inlined_keys_are_value_keys() -> None:
    text = "DOB: 07/17/1967, admitted on 1997-11-15 | Phone: (419) 555-0142 | fax 212.555.0143"
    seg = Segment("body/1 text/plain", text, "body", False)  # type: ignore[arg-type]
    low = lower_same_length(text)
    dates = list(DateDetector().scan(seg, low))
    assert [f.key for f in dates] == [
        value_key("dob", "1967-07-17"),
        value_key("encounter-date", "1997-11-15"),
    ]
    phones = list(PhoneDetector().scan(seg, low))
    assert [(f.rule, f.key) for f in phones] == [
        ("phone", value_key("phone", "4195550142")),
        ("fax", value_key("phone", "2125550143")),
    ]
