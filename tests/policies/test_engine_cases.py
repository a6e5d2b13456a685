"""Hand-written messages in the shapes clinical and business mail take: each pins one case.

Positives must come out `phi` or `sensitive`; negatives must not (most are `none`).
"""

from __future__ import annotations

import pytest

from policies.engine import evaluate
from policies.rules import Ruleset
from tests.policies.fixtures.build import make_message

POSITIVE = [
    (
        "Results",
        "Hi Dr. Patel, I'm forwarding the results for my patient, Sarah Connor (DOB "
        "5/12/1984). Her TSH is 8.2 mIU/L and free T4 0.6 ng/dL. Please advise on "
        "levothyroxine dosing.",
    ),
    (
        "Discharge",
        "Attached is the discharge summary for Michael Brown, MRN 4455667. He was treated for "
        "community-acquired pneumonia and discharged on amoxicillin.",
    ),
    (
        "Check",
        "Can you check on Mr. Robert Jones? He's 72, diabetic, and his sugar was 320 this morning.",
    ),
    (
        "FMLA",
        "Employee: Karen White, SSN 512-34-7788 - FMLA request due to her breast cancer treatment.",
    ),
    (
        "ER",
        "Our member, Tom Hanks (ID W123456789), was seen in the ER for chest pain on 10/02/2024.",
    ),
    (
        "Records",
        "Please fax the records for Lisa Wong, DOB 02/14/1975, to our office. Diagnosis: "
        "major depressive disorder (F33.1).",
    ),
    (
        "Note",
        "Pt is a 45 yo F with hx of HTN, DM2. Name: Angela Davis. Meds: lisinopril 10mg, "
        "metformin 1000mg bid.",
    ),
    (
        "Bloodwork",
        "Jim Beam 03/04/1956 - potassium 5.9 mmol/L, creatinine 2.1 mg/dL",
    ),
    (
        "Referral",
        "Referring Maria Lopez, 58F, for evaluation of a breast lump found on mammogram. "
        "Phone 555-321-4567.",
    ),
    (
        "Follow up",
        "Mr. Chen's biopsy came back positive for adenocarcinoma. Please call him at (555) "
        "777-1234 to schedule oncology.",
    ),
    (
        "Med list",
        "Patient Name: Jose Alvarez\nMedications: warfarin 5 mg daily, digoxin 0.125 "
        "mg\nAllergies: penicillin",
    ),
    (
        "Fwd: labs",
        "---------- Forwarded message ---------\nFrom: Quest\nPatient: DOE, JANE\nDOB: "
        "07/04/1980\nGlucose 212 mg/dL (H)",
    ),
    (
        "Insurance",
        "Subscriber ID: ZGP123456789\nPatient: Emily Stone\nCPT 99213, ICD-10 J02.9 (acute "
        "pharyngitis)",
    ),
    (
        "SSN+dx",
        "Re: disability claim\nClaimant SSN 401-22-3344 has chronic kidney disease stage 4 "
        "and is on dialysis.",
    ),
    # A letter to a member naming one condition and nothing else clinical: the
    # condition names come from ICD-10-CM, not from a list of the corpus's phrases.
    (
        "Your request",
        "Dear Keisha Thompson,\n\nWe approved the request related to your sprain of the "
        "right ankle.\n\nYour member ID is XHP672147649.",
    ),
    (
        "Your request",
        "Dear Raymond Castillo,\n\nWe reviewed the claim for your wrist fracture.\n\n"
        "Member ID: NGH825324679",
    ),
    (
        "Claim update",
        "Dear Ingrid Novak,\n\nYour claim for treatment of peptic ulcer was paid.\n\n"
        "Member ID W950963707",
    ),
    (
        "Claim update",
        "Dear Luis Patel,\n\nThe visit for your plantar fasciitis is covered in full.\n"
        "Your member ID is XHP445129144.",
    ),
]
NEGATIVE = [
    (
        "Pickup",
        "Dear valued customer, your prescription is ready for pickup at our pharmacy.",
    ),
    (
        "Appt",
        "Reminder: your appointment with Dr. Smith is on 5/3 at 10:00 AM. Call (555) 234-5678 "
        "to reschedule.",
    ),
    (
        "Study",
        "In a cohort of 500 patients with type 2 diabetes, metformin reduced A1c by 1.2% (p<0.01).",
    ),
    (
        "Promo",
        "John Smith has been promoted to VP of Sales. Congratulations John!",
    ),
    (
        "Portal",
        "The Patient Portal will be down Saturday for maintenance. Patient Safety Week starts "
        "Monday.",
    ),
    (
        "HR",
        "Please send your date of birth and SSN for the background check using the secure form.",
    ),
    (
        "Ad",
        "Ask your doctor about Ozempic for type 2 diabetes. Call 1-800-555-0199. Side effects "
        "include nausea.",
    ),
    (
        "Class",
        "Jane Doe, RN, Diabetes Educator\n555-234-5678 | jane.doe@clinic.org\nJoin our "
        "diabetes class on insulin pumps.",
    ),
    (
        "Case",
        "Dr. Alan Grant presented a case of a 45-year-old male with HIV and pneumocystis "
        "pneumonia at grand rounds.",
    ),
    (
        "EOB",
        "Your claim #12345678 has been processed. Amount billed $240.00, plan paid $190.00.",
    ),
    (
        "Vendor",
        "Invoice INV-2024-0012 for 500 boxes of nitrile gloves. PO 4500012345. Ship to 100 "
        "Hospital Drive, Boston, MA 02115.",
    ),
    (
        "Schedule",
        "On-call schedule: Dr. Kim (cardiology) Mon-Wed, Dr. Ortiz (oncology) Thu-Sun. Pager "
        "555-123-9876.",
    ),
    (
        "Newsletter",
        "Mental health matters: if you or a loved one struggles with depression or substance "
        "abuse, call the helpline 988.",
    ),
    (
        "IT",
        "Password reset for user jsmith. Ticket INC0012345. Employee ID 219456781.",
    ),
    (
        "Birthday",
        "Happy birthday to Maria Garcia (born 1985)! Cake in the break room at 3pm.",
    ),
    (
        "Coding",
        "Q: Should I code E11.65 or E11.9 for uncontrolled diabetes? A: Use E11.65 when "
        "hyperglycemia is documented.",
    ),
]
# Body words in their everyday senses beside an identifier: at most `pii`.
EVERYDAY = [
    (
        "Facilities",
        "Invoice 8159834 covers the repair of the fracture of the back office wall. Member "
        "ID GYM2430759 for the loyalty program.",
    ),
    (
        "Gym",
        "Your gym membership (member ID GYM7096942) renews soon. We apologise for the injury "
        "of the neck of the bottle display and the strain of the hand dryer.",
    ),
    (
        "Engineering",
        "Account 4471209: stress fracture testing of the beam is booked for Monday.",
    ),
]


@pytest.fixture(scope="module")
def rules() -> Ruleset:
    return Ruleset.default()


@pytest.mark.parametrize(("subject", "body"), POSITIVE, ids=[p[0] for p in POSITIVE])
def test_positive(rules: Ruleset, subject: str, body: str) -> None:
    d = evaluate(make_message(body, subject=subject), "a@clinic.example", ["b@x.example"], rules)
    assert d.verdict in ("phi", "sensitive"), d.to_json()
    assert d.action in ("require_encryption", "reject")


@pytest.mark.parametrize(("subject", "body"), NEGATIVE, ids=[n[0] for n in NEGATIVE])
def test_negative(rules: Ruleset, subject: str, body: str) -> None:
    d = evaluate(make_message(body, subject=subject), "a@clinic.example", ["b@x.example"], rules)
    assert d.verdict == "none", d.to_json()
    assert d.action == "deliver"


@pytest.mark.parametrize(("subject", "body"), EVERYDAY, ids=[n[0] for n in EVERYDAY])
def test_everyday_words_beside_an_identifier(rules: Ruleset, subject: str, body: str) -> None:
    d = evaluate(make_message(body, subject=subject), "a@clinic.example", ["b@x.example"], rules)
    assert d.verdict in ("none", "pii"), d.to_json()
