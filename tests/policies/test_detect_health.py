"""Health detectors: ICD-10-CM, drugs, labs, procedures, sensitive categories, provider ids."""

from __future__ import annotations

import dataclasses
import re

import pytest

from policies.detect import Finding, ScanContext, health, scan_segment
from policies.detect.base import lower_same_length, near, starts_token
from policies.detect.health import icd_category
from policies.detect.lexicon import drug_names, icd10cm_codes
from policies.detect.provider import dea_valid, npi_valid
from policies.extract import Segment


def scan(text: str, header: str = "") -> list[Finding]:
    seg = Segment("body/1 text/plain", text, "body", bool(header))
    return scan_segment(seg, ctx=ScanContext(header=header.lower()))


def cats(text: str) -> set[str]:
    return {f.category for f in scan(text)}


def test_dictionaries_load() -> None:
    assert {"E119", "I10", "G20", "A380", "F329", "Z21"} <= icd10cm_codes()
    assert "E11.9" not in icd10cm_codes()  # stored without the dot
    assert drug_names()["metformin"] == 1
    assert "today" not in drug_names()


@pytest.mark.parametrize("text", ["Dx E11.9 today", "coded as J45.909", "S72.001A fracture"])
def test_dotted_icd_codes_alone(text: str) -> None:
    assert "icd10" in cats(text)


@pytest.mark.parametrize("text", ["ICD-10: I10", "diagnosis G20", "dx A380", "Dx: E119"])
def test_undotted_icd_codes_need_a_keyword(text: str) -> None:
    assert "icd10" in cats(text)


@pytest.mark.parametrize(
    "text",
    [
        "take the I10 highway",  # undotted without keyword
        "room G20 is free",
        "U99.9 is not a real code",  # shape of a code, not in the code set
        "vitamin B12 supplements",
        "ABE11.9",  # inside a token
    ],
)
def test_icd_lookalikes_rejected(text: str) -> None:
    found = [f for f in scan(text) if f.rule == "icd10cm"]
    assert found == []


def test_icd_sensitive_chapters() -> None:
    assert icd_category("F1120") == "substance-use"
    assert icd_category("F329") == "mental-health"
    assert icd_category("B20") == "hiv"
    assert icd_category("Z3A20") == "reproductive"
    assert icd_category("Z1501") == "genetic"
    assert icd_category("E119") == "icd10"
    found = [f for f in scan("Dx F32.9") if f.rule == "icd10cm"]
    assert found[0].kind == "sensitive" and found[0].masked == "F**.*"


def test_drugs_with_dose_weigh_more() -> None:
    plain = [f for f in scan("she mentioned metformin") if f.category == "drug"]
    dosed = [f for f in scan("metformin 500 mg twice daily") if f.category == "drug"]
    assert plain and dosed
    assert dosed[0].weight > plain[0].weight


def test_lab_results() -> None:
    assert "lab-result" in cats("A1c 9.2%")
    assert "lab-result" in cats("LDL 160 mg/dL, creatinine 1.4 mg/dL")
    assert "lab-result" in cats("BP 150/95")
    assert "lab-result" in cats("her A1c came back at 8.4")
    assert "lab-result" not in cats("sales up 20% this quarter")


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("history of opioid use disorder, on buprenorphine", "substance-use"),
        ("42 CFR Part 2 protected record", "substance-use"),
        ("HIV positive, viral load undetectable", "hiv"),
        ("started on Biktarvy", "hiv"),
        ("diagnosed with bipolar disorder", "mental-health"),
        ("sertraline 50 mg", "mental-health"),
        ("BRCA1 genetic testing was positive", "genetic"),
        ("scheduled pregnancy termination", "reproductive"),
        ("treated for chlamydia", "reproductive"),
        ("AIDS diagnosis", "hiv"),
    ],
)
def test_sensitive_terms(text: str, category: str) -> None:
    found = [f for f in scan(text) if f.category == category]
    assert found and found[0].kind == "sensitive"


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("hearing aids and visual aids", "hiv"),  # only "AIDS" in capitals
        ("a tropical depression formed", "mental-health"),
        ("meal prep on Sunday", "hiv"),
    ],
)
def test_sensitive_lookalikes(text: str, category: str) -> None:
    assert category not in cats(text)


def test_procedures_and_diagnoses() -> None:
    assert "procedure" in cats("scheduled for a colonoscopy and an MRI")
    assert "procedure" in cats("s/p appendectomy")
    assert "diagnosis" in cats("acute bronchitis")
    assert "diagnosis" in cats("heart failure with reduced EF")
    assert "diagnosis" not in cats("we built it with anatomy and dichotomy in mind")


def test_patient_context() -> None:
    assert "patient-context" in cats("67-year-old male with chest pain")
    assert "patient-context" in cats("45 y/o F")
    found = [f for f in scan("a 93-year-old woman") if f.category == "age"]
    assert found and found[0].kind == "identifier"


def test_npi_and_dea_are_provider_context() -> None:
    assert npi_valid("1234567893")
    assert not npi_valid("1234567890")
    assert dea_valid("1234563")
    found = scan("NPI 1234567893, DEA AB1234563")
    assert {f.category for f in found} == {"npi", "dea"}
    assert all(f.kind == "provider" for f in found)
    assert all(f.masked.startswith("*") for f in found)
    assert [f for f in scan("NPI 1234567890")] == []  # bad check digit


def test_findings_never_carry_the_text() -> None:
    text = "Patient: John Smith, MRN 00123456, metformin 500 mg, HIV, E11.9"
    for f in scan(text):
        assert "Smith" not in f.masked and "metformin" not in f.masked
        assert "00123456" not in f.masked and "HIV" not in f.masked


# --- condition names from ICD-10-CM, conditions at a body site -----------------------


def _diagnoses(text: str) -> list[tuple[str, float]]:
    found = scan(text)
    return [(text[f.start : f.end], f.weight) for f in found if f.rule == "health-terms"]


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("treated for peptic ulcer", "peptic ulcer"),
        ("history of diphtheria", "diphtheria"),
        ("new onset meniere's disease", "meniere's disease"),
        ("seen for gastro-esophageal reflux disease", "gastro-esophageal reflux disease"),
        ("referral for low back pain", "low back pain"),
    ],
)
def test_condition_names_from_icd10cm(text: str, term: str) -> None:
    assert (term, 1.0) in _diagnoses(text)


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("closed fracture of the left distal radius", "fracture of the left distal radius"),
        ("a sprain of the right ankle", "sprain of the right ankle"),
        ("his wrist fracture", "wrist fracture"),
        ("fracture of the neck of the femur", "fracture of the neck"),
        ("disease of the liver", "disease of the liver"),
    ],
)
def test_a_condition_at_a_body_site_is_a_diagnosis(text: str, term: str) -> None:
    assert (term, 1.0) in _diagnoses(text)


@pytest.mark.parametrize(
    "text",
    [
        "the fracture of the back office wall",
        "the strain of the hand dryer",
        "the injury of the neck of the bottle",
        "a breakdown of the head count",
    ],
)
def test_body_words_in_everyday_senses_are_no_site(text: str) -> None:
    assert all(weight < 1.0 for _, weight in _diagnoses(text))


def test_a_name_keeps_the_sensitive_category_of_its_words() -> None:
    found = [f for f in scan("evaluation for female infertility") if f.rule == "health-terms"]
    assert [f.category for f in found] == ["reproductive"]


# --- fast paths agree with the plain forms they stand for ------------------------------


def _segment(text: str) -> tuple[Segment, str]:
    return Segment("attachment 1 (.csv)/row 1", text, "attachment", True), text.lower()


@pytest.mark.parametrize(
    "text",
    [
        "a 45-year-old male, a 7 yo f and 30 y/o, 91 y.o. female",
        "5 yo at the start; 1234 yo too long; a45 yo inside a word; 12 45 yo",
        "x 7 yrs old 8 yo, 45yo, 45 years-old man, year-old 3 yo",
        "you, yolanda, myrna, yr 2024, 99 yrs, 7 yrs  old",
        "\u0663\u0664 yo (Arabic-Indic digits), \u00b25 yo (a superscript), 4\u0663 yo",
        "130 year old and 12-year-old girl and 0 yo",
    ],
)
def test_ages_found_from_their_unit_are_every_match(text: str) -> None:
    low = text.lower()
    assert [m.span() for m in health._ages(low)] == [
        m.span() for m in health._AGE_SEX_RE.finditer(low)
    ]


# The dotted pattern the detector finds from the dot.
_ICD_DOTTED = re.compile(r"([A-Z]\d[0-9A-Z])\.([0-9A-Z]{1,4})(?![A-Za-z0-9])")


def _icd_reference(text: str, header: str = "") -> list[tuple[int, int, str, str]]:
    """(start, end, category, masked) of the ICD findings, by the plain regex passes."""
    codes, low, out = icd10cm_codes(), text.lower(), []
    for m in _ICD_DOTTED.finditer(text):
        code = m.group(1) + m.group(2)
        if starts_token(text, m.start(), ".") and code in codes:
            out.append((m.start(), m.end(), code))
    header_kw = bool(header and health._ICD_KW_RE.search(header))
    for m in health._ICD_BARE_RE.finditer(text):
        code = m.group(1)
        if code in codes and starts_token(text, m.start(), ".-/"):
            if header_kw or near(low, m.start(), m.end(), health._ICD_KW_RE, 60, 15):
                out.append((m.start(), m.end(), code))
    return [
        (s, e, health.icd_category(c), c[0] + "**" + (".*" if len(c) > 3 else ""))
        for s, e, c in out
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Diagnosis: J44.9 | Dx: I10 | J44.9 again | F32.9, F10.20 and E11.65.",
        "J44.A1B.5 / xJ44.9 / .J44.9 / J44.9.1 / E11.9x / E1165 dx / -I10 dx / I10.5 dx",
        "dx: I10-3, I10/4, I10.x, A0B1C2D3 I1, Z3A.20 O09.90 B20",
        "J44.9 at the start, and at the end dx I10",
    ],
)
@pytest.mark.parametrize("tail", ["", " caf\u00e9 \u0663"])  # the second takes the non-ASCII path
@pytest.mark.parametrize("header", ["", "diagnosis code"])
def test_icd_fast_paths_agree_with_the_plain_regexes(text: str, tail: str, header: str) -> None:
    text += tail
    seg, low = _segment(text)
    found = list(health.IcdDetector().scan(seg, low, ScanContext(header=header)))
    got = [(f.start, f.end, f.category, f.masked) for f in found]
    assert got == _icd_reference(text, header)
    # One code, one key, however often and wherever it occurs.
    keys = {(f.category, f.masked, text[f.start : f.end].replace(".", "")): f.key for f in found}
    assert len(set(keys.values())) == len(keys)
    assert all(f.score == f.weight == 1.0 and f.location == seg.location for f in found)


@pytest.mark.parametrize(
    "text",
    [
        "covid-19 a--b 2024abc x'y o'neil' caf\u00e9 na\u00efve \u0130stanbul ABC a/b/ hiv/aids",
        "name: fitzgerald | dob: 07/17/1967 | phone: (419) 555-0142 | diagnosis: j44.9\n" * 80,
        "s/p cabg, c/o cp; pt's hx-of htn--dm; '-' \u00e9a1c A1C\u2003ldl\u00a0160",
    ],
)
def test_tokens_of_chunks_are_the_tokens_of_the_text(text: str) -> None:
    low = lower_same_length(text * (1 + health._CHUNKED_FROM // len(text)))
    assert len(low) >= health._CHUNKED_FROM
    assert health._tokens(low) == set(health._TOKEN_RE.findall(low))


def test_leads_of_joined_tokens_in_one_pass() -> None:
    tokens = {
        "pancreatitis", "colectomy", "patient's", "covid-19", "a-b-c", "hiv/aids", "o'neil",
        "itis", "plain", "sarcomas", "x-ray", "s/p", "hx-of", "melanoma's", "a1c", "b12-x",
    }  # fmt: skip
    leads = set(health._LEAD_RE.findall("\n".join(tokens)))
    joined = {w for w in tokens if any(j in w for j in "'/-")}
    assert leads == {health._SECOND_WORD.match(w).group() for w in joined}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "er visit; the ER; other; her; er's; /er; er-; -er; er/; ER\nER",
        "icu\nicu-2; hx, Hx: s/p, c/o",
    ],
)
def test_short_words_found_from_their_first_letter(text: str) -> None:
    low = text.lower()
    for word in ("er", "icu", "hx", "s/p", "c/o"):
        plain = re.compile(r"(?<![\w'/\-])" + re.escape(word) + health._WORD_END)
        assert [m.span() for m in health._short_word_re(word).finditer(low)] == [
            m.span() for m in plain.finditer(low)
        ]


@pytest.mark.parametrize(
    "text",
    [
        "%", "mg/dL", "5 mmol/L", "x/u", "/\u00b5l", "/\u03bcl", "120 mm Hg", "mmHg", "bpm",
        "flu", "sec", "nothing here 12/04", "m/m", "mm h g",
    ],
)  # fmt: skip
def test_unit_hints_in_fewer_passes(text: str) -> None:
    low = text.lower()
    assert health._has_unit_hint(low) == any(u in low for u in health._UNIT_HINTS)


@pytest.mark.parametrize(
    "text",
    [
        # The same word in contexts that change its finding: case, the word before,
        # a phrase it starts, a body site after it. Each row repeats them.
        "AIDS | hearing aids | tropical depression | depression | a stroke | stroke"
        " | fracture of the left radius | fracture | diagnosis | Diagnosis | hypertension",
        "chronic kidney disease | kidney | ER | er | hx | Hx of asthma | asthma's",
    ],
)
def test_words_whose_finding_is_made_once_agree_with_the_full_path(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = "\n".join([text] * 5)
    seg, low = _segment(rows)
    fast = list(health.TermDetector().scan(seg, low))
    index = health._index()
    assert "diagnosis" in index.plain and "aids" not in index.plain
    assert "depression" not in index.plain and "stroke" not in index.plain
    slow_index = dataclasses.replace(index, plain={})
    monkeypatch.setattr(health, "_index", lambda: slow_index)
    slow = list(health.TermDetector().scan(seg, low))
    assert fast == slow
    assert len(fast) >= 5 * 5
