"""Health detectors: ICD-10-CM, drugs, labs, procedures, sensitive categories, provider ids."""

from __future__ import annotations

import pytest

from policies.detect import Finding, ScanContext, scan_segment
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
