"""From findings to a verdict: co-occurrence windows, rows, the subject, bulk identifiers."""

from __future__ import annotations

from policies.detect import Finding, scan_segment
from policies.detect.verdict import Classification, ScannedSegment, Thresholds, classify
from policies.extract import Segment, SegmentKind


def seg(text: str, kind: SegmentKind = "body", location: str = "", is_row: bool = False) -> Segment:
    return Segment(location or f"{kind}/1", text, kind, is_row)


DEFAULT = Thresholds()


def verdict(*segments: Segment, t: Thresholds = DEFAULT) -> Classification:
    return classify([ScannedSegment(s, scan_segment(s)) for s in segments], t)


def test_identifier_with_health_is_phi() -> None:
    c = verdict(seg("SSN 219-45-6781. Diagnosis: type 2 diabetes."))
    assert c.verdict == "phi"
    assert {"ssn", "diagnosis"} <= {f.category for f in c.findings}
    assert c.reasons == ("co-occurrence",)


def test_identifier_alone_is_pii() -> None:
    c = verdict(seg("Please update the SSN to 219-45-6781 for payroll."))
    assert c.verdict == "pii"


def test_health_alone_is_none() -> None:
    assert verdict(
        seg("Type 2 diabetes and hypertension are common; metformin helps.")
    ).verdict == ("none")


def test_sensitive_lifts_phi() -> None:
    c = verdict(seg("Patient: John Smith, DOB 01/02/1960. HIV positive, on Biktarvy."))
    assert c.verdict == "sensitive"


def test_sensitive_without_identifier_is_none() -> None:
    assert verdict(seg("Our clinic offers HIV testing and PrEP counselling.")).verdict == "none"


def test_far_apart_is_not_phi() -> None:
    filler = " Lorem ipsum dolor sit amet." * 40
    c = verdict(seg("SSN 219-45-6781." + filler + " We treat diabetes."))
    assert c.verdict == "pii"
    assert verdict(
        seg("SSN 219-45-6781." + filler + " We treat diabetes."), t=Thresholds(window=5000)
    ).verdict == ("phi")


def test_contact_details_do_not_make_phi() -> None:
    text = (
        "Join our diabetes and hypertension seminar. Metformin 500 mg discussed.\n"
        "Jane, (555) 234-5678, fax (555) 234-5679, jane@clinic.example, "
        "123 Main Street, Springfield, IL 62704"
    )
    assert verdict(seg(text)).verdict == "none"


def test_provider_ids_are_not_patients() -> None:
    c = verdict(seg("Dr. Lee, NPI 1234567893, DEA AB1234563: metformin 500 mg, 90 tablets."))
    assert c.verdict == "none"


def test_row_is_one_window() -> None:
    row = seg(
        "Name: John Smith | DOB: 1960-01-02 | Notes: " + "x " * 400 + "| Dx: E11.9",
        "attachment",
        "attachment 2 (.csv)/row 2",
        is_row=True,
    )
    assert verdict(row).verdict == "phi"


def test_subject_joins_the_body() -> None:
    subject = seg("Re: Mark Johnson", "subject", "subject")
    body = seg("His A1c came back at 9.5% and LDL 190 mg/dL.")
    c = verdict(subject, body)
    assert c.verdict == "phi"
    assert c.phi_in_subject


def test_health_in_subject_is_not_phi_in_subject() -> None:
    subject = seg("HIV results", "subject", "subject")
    body = seg("Patient: John Smith, DOB 01/02/1960, viral load 200 copies/mL.")
    c = verdict(subject, body)
    assert c.verdict == "sensitive"
    assert not c.phi_in_subject


def test_bulk_ssns() -> None:
    ssns = " ".join(f"219-45-{6780 + i:04d}" for i in range(1, 7))
    c = verdict(seg("Payroll corrections: " + ssns))
    assert c.verdict == "phi"
    assert "bulk-ssn" in c.reasons
    assert verdict(
        seg("Payroll corrections: " + ssns), t=Thresholds(bulk_identifiers=10)
    ).verdict == ("pii")


def test_bulk_rows_of_people() -> None:
    rows = [
        seg(
            f"Name: {first} Smith | DOB: 19{60 + i}-01-02",
            "attachment",
            f"attachment 2 (.csv)/row {i + 2}",
            is_row=True,
        )
        for i, first in enumerate(["John", "Mary", "Robert", "Linda", "James", "Susan"])
    ]
    c = verdict(*rows)
    assert c.verdict == "phi"
    assert "bulk-rows" in c.reasons


def test_findings_are_capped() -> None:
    ssns = " ".join(f"219-45-{1000 + i:04d}" for i in range(300))
    c = verdict(seg(ssns))
    assert len(c.findings) == Thresholds().max_findings
    assert c.findings_total == 300


def test_medical_record_number_implies_a_patient() -> None:
    assert verdict(seg("Please merge MRN 00123456 into the new chart.")).verdict == "pii"
    c = verdict(seg("Jane Doe DOB 01/02/1960 MRN 00123456, please merge the charts."))
    assert c.verdict == "phi"
    # A member ID alone says nothing about health: gyms and airlines issue them too.
    c = verdict(seg("Member: John Smith, member ID 12345678, your membership renews soon."))
    assert c.verdict == "pii"


def test_day_first_dates_are_read() -> None:
    c = verdict(seg("DOB: 25/12/1970"))
    assert [f.category for f in c.findings] == ["dob"]


def test_colleague_in_subject_is_not_phi_in_subject() -> None:
    subject = seg("Re: Mark Johnson", "subject", "subject")
    body = seg("Patient: Jane Doe, DOB 01/02/1960, admitted with pneumonia.")
    c = verdict(subject, body)
    assert c.verdict == "phi"
    assert not c.phi_in_subject
    strong = seg("Jane Doe DOB 01/02/1960 - MRI results", "subject", "subject")
    c = verdict(strong, seg("Diagnosis I50.2, see chart."))
    assert c.phi_in_subject


def test_thresholds_hold_for_weights_summed_in_floating_point() -> None:
    """0.6 + 0.3 is 0.8999999999999999 in binary floating point: still enough for 0.9."""
    from policies.detect.base import Finding

    s = seg("x" * 100)
    findings = [
        Finding("member-id", 1, "member-id", "identifier", s.location, "****1234", 0.9, 0, 10, 1.0),
        Finding("health-terms", 2, "diagnosis", "health", s.location, "[d]", 0.8, 20, 28, 0.6, "a"),
        Finding(
            "health-terms",
            2,
            "clinical-context",
            "health",
            s.location,
            "[c]",
            0.65,
            30,
            40,
            0.3,
            "b",
        ),
    ]
    assert classify([ScannedSegment(s, findings)]).verdict == "phi"


def test_field_positions_match_finding() -> None:
    """classify reads findings by position: the positions must be Finding's fields."""
    from policies.detect import verdict

    fields = Finding._fields
    assert fields[verdict._CATEGORY] == "category"
    assert fields[verdict._KIND] == "kind"
    assert fields[verdict._WEIGHT_AT] == "weight"
    assert fields[verdict._KEY] == "key"
