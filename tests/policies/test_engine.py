"""evaluate(): raw message bytes through extraction, detectors, verdict and the default policy."""

from __future__ import annotations

import json

import pytest

from policies.decision import Decision, RequireEncryption, StripSubjectTag
from policies.engine import evaluate
from policies.rules import Ruleset
from tests.policies.fixtures.build import (
    make_docx,
    make_message,
    make_pdf,
    make_xlsx,
    make_zip,
    mark_encrypted,
)

SENDER = "alice@clinic.example"
RCPT = ["bob@elsewhere.example"]
NOTE = "Patient: John Smith\nDOB: 03/14/1962\nMRN: 00123456\nAssessment: type 2 diabetes, E11.9."


@pytest.fixture(scope="module")
def rules() -> Ruleset:
    return Ruleset.default()


def run(raw: bytes, rules: Ruleset, rcpt: list[str] = RCPT) -> Decision:
    return evaluate(raw, SENDER, rcpt, rules)


def test_phi_body_requires_verified_tls(rules: Ruleset) -> None:
    d = run(make_message(NOTE, subject="Clinic note"), rules)
    assert d.verdict == "phi"
    assert d.actions == (RequireEncryption("tls-verified"),)
    assert d.matched_rules == ("phi",)
    assert d.policy == "default"


def test_sensitive_requires_message_level_except_for_partners() -> None:
    body = "Client: Jane Doe\nDOB 01/02/1970\nDx: opioid use disorder, on buprenorphine."
    rules = Ruleset.from_yaml(_default_with_partner("partner.example"))
    d = run(make_message(body), rules)
    assert d.verdict == "sensitive"
    assert d.min_strength == "message-level"
    d = run(make_message(body), rules, ["x@partner.example"])
    assert d.min_strength == "tls-verified"
    assert d.matched_rules == ("sensitive-to-partner",)


def _default_with_partner(domain: str) -> str:
    from policies.rules import DEFAULT_POLICY

    text = DEFAULT_POLICY.read_text()
    assert "baa_partners: []" in text
    return text.replace("baa_partners: []", f"baa_partners: [{domain}]")


def test_phi_in_subject_is_rejected_with_an_explanation(rules: Ruleset) -> None:
    d = run(make_message("His A1c is 9.4% and BP 160/100.", subject="Re: Mark Johnson"), rules)
    assert d.verdict == "phi"
    assert d.phi_in_subject
    assert d.action == "reject"
    assert d.reject_reason and "subject" in d.reject_reason
    assert "Johnson" not in d.reject_reason


def test_none_and_pii(rules: Ruleset) -> None:
    d = run(make_message("Lunch on Friday? Call me at (555) 234-5678."), rules)
    assert (d.verdict, d.action, d.findings) == ("none", "deliver", ())
    d = run(make_message("New hire paperwork: SSN 219-45-6781."), rules)
    assert d.verdict == "pii"
    assert d.matched_rules == ("government-ids",)
    assert d.min_strength == "tls-verified"


def test_subject_tag(rules: Ruleset) -> None:
    d = run(make_message("see attached", subject="[secure] contract"), rules)
    assert d.min_strength == "message-level"
    assert StripSubjectTag(("[secure]", "[encrypt]")) in d.actions


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Sensitivity", "Company-Confidential"),
        ("Sensitivity", "Private"),
        ("msip_labels", "MSIP_Label_abc_Enabled=true; MSIP_Label_abc_Name=Confidential;"),
    ],
)
def test_outlook_sensitivity_and_labels(rules: Ruleset, header: str, value: str) -> None:
    d = run(make_message("quarterly numbers", headers={header: value}), rules)
    assert d.verdict == "none"
    assert d.action == "require_encryption"


def test_pdf_attachment(rules: Ruleset) -> None:
    pdf = make_pdf(["Lab report", NOTE + "\nHbA1c 9.1 %"])
    d = run(
        make_message("Results attached.", attachments=[("labs.pdf", pdf, "application/pdf")]), rules
    )
    assert d.verdict == "phi"
    assert any(f.location.startswith("attachment 2 (.pdf)") for f in d.findings)


def test_attachment_names_never_reach_the_decision(rules: Ruleset) -> None:
    """File, member and sheet names are often about the patient: locations leave them out."""
    pdf = make_pdf(["Lab report", NOTE + "\nHbA1c 9.1 %"])
    sheet = make_xlsx(
        {"Harold Finch 1960-07-04": [["Patient Name", "DOB"], ["Jane Roe", "1980-01-02"]]}
    )
    archive = make_zip(
        {"Walter_Bishop_SSN_521-44-9012/Olivia_Dunham.csv": "Name,DOB\nJo Ann,1/2/1990\n"}
    )
    locked = mark_encrypted(make_zip({"x.csv": "x"}))
    attachments = [
        ("John_Smith_MRN44812.pdf", pdf, "application/pdf"),
        ("PO_333-02-9162.pdf", pdf, "application/pdf"),
        ("Harold Finch.xlsx", sheet, "application/octet-stream"),
        ("bishop.zip", archive, "application/zip"),
        ("Peter_Bishop_DOB_1978-09-26.zip", locked, "application/zip"),
        ("Mary Major.smith", b"Patient: Mary Major", "application/octet-stream"),
    ]
    d = run(make_message("Records attached.", attachments=attachments), rules)
    assert d.verdict == "phi"
    assert {f.location.split("/")[0] for f in d.findings} >= {
        "attachment 2 (.pdf)",
        "attachment 3 (.pdf)",
        "attachment 6 (.zip)",  # encrypted: unscannable
    }
    assert any(f.location.startswith("attachment 4 (.xlsx)/sheet 1/row ") for f in d.findings)
    dumped = json.dumps(d.to_json()).lower()
    for part in (
        "john_smith", "smith_mrn", "44812", "333-02", "9162", "finch", "harold", "1960-07",
        "walter", "bishop", "521-44", "9012", "olivia", "dunham", "peter", "1978", "mary major",
        ".smith",
    ):  # fmt: skip
        assert part not in dumped, part


def test_spreadsheet_of_patients(rules: Ruleset) -> None:
    rows: list[list[object]] = [["Patient Name", "DOB", "Phone"]]
    for first, last, year in [("John", "Smith", 1950), ("Maria", "Garcia", 1961),
                              ("Robert", "Lee", 1972), ("Linda", "Nguyen", 1983),
                              ("James", "Brown", 1994), ("Susan", "Clark", 1945)]:  # fmt: skip
        rows.append([f"{first} {last}", f"{year}-04-0{len(first) % 9 + 1}", "555-234-5678"])
    xlsx = make_xlsx({"Sheet1": rows})
    ctype = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    d = run(make_message("List attached.", attachments=[("pts.xlsx", xlsx, ctype)]), rules)
    assert d.verdict == "phi"
    assert "bulk-rows" in d.reasons or "bulk-dob" in d.reasons


def test_docx_and_html(rules: Ruleset) -> None:
    docx = make_docx([NOTE])
    ctype = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    d = run(make_message("Note attached.", attachments=[("note.docx", docx, ctype)]), rules)
    assert d.verdict == "phi"
    html = "<p>Patient: <b>John Smith</b><br>DOB: 03/14/1962</p><p>Dx: COPD, on albuterol.</p>"
    d = run(make_message(None, html=html), rules)
    assert d.verdict == "phi"


def test_unscannable_attachment_requires_encryption(rules: Ruleset) -> None:
    archive = mark_encrypted(make_zip({"notes.txt": "secret"}))
    d = run(make_message("see zip", attachments=[("x.zip", archive, "application/zip")]), rules)
    assert d.verdict == "none"
    assert d.matched_rules == ("unscannable",)
    assert d.action == "require_encryption"
    assert any(f.kind == "unscannable" for f in d.findings)


def test_own_npis_are_ignored() -> None:
    text = _default_with_partner("partner.example").replace(
        "own_npis: []", "own_npis: ['1234567893']"
    )
    rules = Ruleset.from_yaml(text)
    body = "Please refill metformin 500 mg.\n--\nDr. Lee, NPI 1234567893"
    d = run(make_message(body), rules)
    assert not any(f.category == "npi" for f in d.findings)


def test_decision_json_never_holds_matched_text(rules: Ruleset) -> None:
    body = NOTE + "\nSSN 219-45-6781, HIV positive, metformin 500 mg, jane@home.example"
    d = run(make_message(body, subject="Clinic note"), rules)
    assert d.verdict == "sensitive"
    dumped = json.dumps(d.to_json())
    for secret in ("Smith", "John", "00123456", "219-45", "6781-", "HIV", "metformin", "jane@"):
        assert secret not in dumped
    assert Decision.from_json(json.loads(dumped)) == d


def test_segments_scanned_together_get_their_own_findings() -> None:
    """Pages are scanned as one text for speed; no match may reach across a page break."""
    from policies.detect import default_detectors, scan_segment
    from policies.engine import _SEGMENT_JOIN, Joined, _scan_together, placed
    from policies.extract import Segment

    pages = [
        "Summary for the patient. SSN",
        "219-45-6781 was given in error. Congestive heart",
        "failure is not mentioned. Patient: John",
        "Smith DOB 03/14/1962, MRN 00123456, type 2 diabetes.",
        "Jim Beam",
        "03/04/1956 potassium 5.9 mmol/L",
    ]
    segs = [Segment(f"attachment 2 (.pdf)/page {i}", t, "attachment") for i, t in enumerate(pages)]
    joined: dict[str, Joined] = {}
    together = _scan_together(segs, default_detectors(), _SEGMENT_JOIN, joined)
    for seg, scanned in zip(segs, together, strict=True):
        alone = scan_segment(seg)
        assert [placed(f, joined) for f in scanned.findings] == alone, seg.location
