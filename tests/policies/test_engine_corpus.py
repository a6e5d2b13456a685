"""Message-level accuracy on a generated corpus: PHI found, ordinary mail left alone.

The corpus is built from templates with random (fake) people, so it pins
down behaviour rather than proving real-world accuracy; each template is a
shape of message seen in clinical or business mail. Goals from the design:
recall >= 99.5% on messages that need encryption, false positives <= 1% on
ordinary mail and <= 3% on hard negatives.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from policies.engine import evaluate
from policies.rules import Ruleset
from tests.policies.fixtures.build import make_message

FIRST = (
    "John Maria Robert Linda James Patricia David Susan Carlos Aisha Wei Fatima Michael "
    "Jennifer Thomas Olga Kevin Nancy"
).split()
LAST = (
    "Smith Garcia Johnson Nguyen Williams Brown Martinez Lee Anderson Patel Okafor Kowalski "
    "Thompson Rivera Clark Lewis"
).split()
DIAGNOSES = [
    "type 2 diabetes", "hypertension", "COPD", "congestive heart failure", "asthma", "pneumonia",
    "chronic kidney disease", "atrial fibrillation", "osteoarthritis", "breast cancer",
    "hypothyroidism", "rheumatoid arthritis",
]  # fmt: skip
DRUGS = [
    "metformin", "lisinopril", "atorvastatin", "amlodipine", "levothyroxine", "albuterol",
    "warfarin", "apixaban", "furosemide", "insulin glargine", "prednisone", "omeprazole",
]  # fmt: skip
ICD = [
    "E11.9", "I10", "J44.9", "I50.9", "J45.909", "J18.9", "N18.3", "I48.91", "M17.11", "C50.911",
    "E03.9", "M06.9",
]  # fmt: skip
SENSITIVE = ["HIV", "opioid use disorder", "major depressive disorder", "bipolar disorder",
             "BRCA1 genetic testing", "pregnancy termination", "schizophrenia"]  # fmt: skip


class Faker:
    """Deterministic fake patients."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def name(self) -> str:
        return f"{self.r.choice(FIRST)} {self.r.choice(LAST)}"

    def dob(self) -> str:
        y, m, d = self.r.randint(1930, 2015), self.r.randint(1, 12), self.r.randint(1, 28)
        return self.r.choice([f"{m:02d}/{d:02d}/{y}", f"{y}-{m:02d}-{d:02d}", f"{m}/{d}/{y}"])

    def ssn(self) -> str:
        a = self.r.choice([n for n in range(1, 900) if n != 666])
        return f"{a:03d}-{self.r.randint(1, 99):02d}-{self.r.randint(1, 9999):04d}"

    def mrn(self) -> str:
        return str(self.r.randint(100000, 99999999))

    def mbi(self) -> str:
        letters = "ACDEFGHJKMNPQRTUVWXY"
        c = self.r.choice
        return (
            f"{self.r.randint(1, 9)}{c(letters)}{c(letters + '0123456789')}{self.r.randint(0, 9)}"
            f"{c(letters)}{c(letters + '0123456789')}{self.r.randint(0, 9)}"
            f"{c(letters)}{c(letters)}{self.r.randint(0, 9)}{self.r.randint(0, 9)}"
        )

    def pick(self, xs: list[str]) -> str:
        return self.r.choice(xs)

    def phone(self) -> str:
        return (
            f"({self.r.randint(201, 989)}) {self.r.randint(201, 989)}-{self.r.randint(0, 9999):04d}"
        )


Template = Callable[[Faker], tuple[str, str]]  # (subject, body)

POSITIVE: list[Template] = [
    lambda f: (
        "Clinic note",
        f"Patient: {f.name()}\nDOB: {f.dob()}\nMRN: {f.mrn()}\n"
        f"Assessment: {f.pick(DIAGNOSES)}. Plan: continue {f.pick(DRUGS)} 20 mg daily.",
    ),
    lambda f: (
        "Referral",
        f"RE: {f.name()} (DOB {f.dob()})\n\nDear Dr. {f.pick(LAST)},\nI am referring this "
        f"{f.r.randint(30, 85)}-year-old female with {f.pick(DIAGNOSES)} for evaluation.",
    ),
    lambda f: (
        "Update",
        f"Hi team,\n{f.name()} was diagnosed with {f.pick(DIAGNOSES)} last week and started "
        f"on {f.pick(DRUGS)} 10 mg. Please schedule a follow-up.",
    ),
    lambda f: (
        "Lab results",
        f"Results for {f.name()}, MRN {f.mrn()}: A1c {f.r.randint(60, 120) / 10}%, "
        f"LDL {f.r.randint(90, 220)} mg/dL, creatinine 1.{f.r.randint(0, 9)} mg/dL.",
    ),
    lambda f: (
        "Claim question",
        f"Member ID: {f.pick(['W', 'XYZ', 'H'])}{f.mrn()}\nPatient name: {f.name()}\n"
        f"Date of birth: {f.dob()}\nDiagnosis code {f.pick(ICD)} was denied.",
    ),
    lambda f: (
        "Eligibility",
        f"Beneficiary {f.name()}, MBI {f.mbi()}, seen for {f.pick(DIAGNOSES)} (ICD-10 "
        f"{f.pick(ICD)}).",
    ),
    lambda f: (
        "Payroll fix",
        f"The employee's SSN is {f.ssn()}. She is on leave for {f.pick(DIAGNOSES)} treatment "
        f"and takes {f.pick(DRUGS)}.",
    ),
    lambda f: (
        "Admission",
        f"Mrs. {f.pick(LAST)} was admitted on {f.dob()} with {f.pick(DIAGNOSES)}; "
        f"chest x-ray showed infiltrates.",
    ),
    lambda f: (
        "Confidential",
        f"Client: {f.name()}\nDOB {f.dob()}\nDx: {f.pick(SENSITIVE)}. Continue treatment; next "
        f"visit in two weeks.",
    ),
    lambda f: (
        f"Re: {f.name()}",
        f"Her A1c came back at {f.r.randint(80, 120) / 10}% and BP 152/96. Increase "
        f"{f.pick(DRUGS)} to 1000 mg twice daily.",
    ),
    lambda f: (
        "Forms",
        f"SSN {f.ssn()[:7]}\n{f.r.randint(1000, 9999)}\nDiagnosis: {f.pick(DIAGNOSES)} "
        f"({f.pick(ICD)})",
    ),
    lambda f: (
        "Discharge",
        f"{f.name()}, {f.r.randint(20, 89)} y/o M, discharged on {f.dob()} after treatment for "
        f"{f.pick(DIAGNOSES)}. Home meds: {f.pick(DRUGS)} 5 mg PO daily.",
    ),
    lambda f: (
        "Quick question",
        f"Can you call {f.name()} at {f.phone()}? DOB {f.dob()}. She has questions about "
        f"her {f.pick(DRUGS)} prescription for {f.pick(DIAGNOSES)}.",
    ),
]

ORDINARY: list[Template] = [
    lambda f: (
        "Team lunch",
        f"Hi all,\nLunch is Friday at 12:30 in room 4B. Reply by Wednesday.\nThanks,\n"
        f"{f.name()}\nOffice Manager\n{f.phone()}",
    ),
    lambda f: (
        "Invoice 2024-0113",
        f"Dear customer,\nAccount number: {f.mrn()}\nAmount due: $1,245.00 by 03/15/2025.\n"
        f"Questions? Call {f.phone()}.",
    ),
    lambda f: (
        "Your order has shipped",
        f"Order #{f.mrn()} shipped via UPS, tracking 1Z999AA1012345678{f.r.randint(0, 9)}. "
        "Delivery expected Tuesday.",
    ),
    lambda f: (
        "Quarterly report",
        "Revenue grew 12% year over year; operating margin was 8.4%. The board meets on "
        f"4/22/2025 at 10:00. Contact {f.name()} with questions.",
    ),
    lambda f: (
        "IT maintenance",
        "Servers will reboot Saturday 2:00-4:00 AM. VPN version 10.2.1 is required. Ticket "
        f"#{f.mrn()}.",
    ),
    lambda f: (
        "Welcome",
        f"Please welcome {f.name()} to the billing team. She starts Monday, 123 Main Street, "
        f"Springfield, IL 62704, desk 12.",
    ),
    lambda f: (
        "Parking",
        "The north lot is closed for repaving next week. Please use the garage on 5th Avenue.",
    ),
    lambda f: (
        "Policy renewal",
        f"Your policy number: HO-{f.mrn()} renews on 6/1/2025. Premium $842.",
    ),
    lambda f: (
        "Re: contract",
        f"Hi {f.pick(FIRST)},\nAttached is the signed contract. Case #{f.mrn()}.\nBest,\n"
        f"{f.name()}\n{f.phone()} | fax {f.phone()}",
    ),
]

HARD_NEGATIVE: list[Template] = [
    lambda f: (
        "Supply order",
        f"Please ship 200 tablets of {f.pick(DRUGS)} 500 mg to Dr. {f.name()}, NPI 1234567893, "
        "DEA AB1234563. Call the pharmacy at (555) 234-5678.",
    ),
    lambda f: (
        "Diabetes awareness month",
        "Join our free webinar on type 2 diabetes, insulin and A1c targets below 7%. Register "
        "at our website. Hypertension screening is also available.",
    ),
    lambda f: (
        "Coding tip",
        f"Reminder: {f.pick(ICD)} and E11.9 must be coded to the highest specificity. See the "
        "ICD-10-CM guidelines for hypertension (I10).",
    ),
    lambda f: (
        "Security training",
        "Never share numbers like 123-45-6789 or 078-05-1120 by email; those are samples.",
    ),
    lambda f: (
        "Benefits enrollment",
        f"Open enrollment ends Friday. Our health plan covers mental health services and "
        f"physical therapy. Questions: {f.name()}, {f.phone()}.",
    ),
    lambda f: (
        "Grand rounds",
        f"Dr. {f.name()}, MD will present on heart failure management and new SGLT2 "
        f"inhibitors. Lunch provided. Contact {f.phone()}.",
    ),
    lambda f: (
        "Weather",
        "A tropical depression may bring heavy rain; the clinic may close early. Staff with "
        "AIDS walk shirts can pick them up at reception.",
    ),
    lambda f: (
        "Re: Grace Period",
        "The grace period for the vendor contract ends May 3. Flu shot clinic for staff is on "
        "Tuesday in the cafeteria.",
    ),
    lambda f: (
        "Staff flu clinic",
        f"Call {f.name()} at {f.phone()} to book your flu shot. Bring your badge.",
    ),
    lambda f: (
        "Pharmacy formulary",
        f"{f.pick(DRUGS).title()} 10 mg replaces {f.pick(DRUGS)} 20 mg on the formulary from "
        "July 1. Prior authorization no longer needed.",
    ),
]


def _verdicts(templates: list[Template], n: int, seed: int) -> list[tuple[str, str, str]]:
    f = Faker(seed)
    rules = Ruleset.default()
    out: list[tuple[str, str, str]] = []
    for i in range(n):
        subject, body = templates[i % len(templates)](f)
        raw = make_message(body, subject=subject)
        d = evaluate(raw, "alice@clinic.example", ["bob@partner.example"], rules)
        out.append((d.verdict, subject, body))
    return out


@pytest.mark.slow
def test_recall_on_messages_that_need_encryption() -> None:
    results = _verdicts(POSITIVE, 400, seed=1)
    missed = [(s, b) for v, s, b in results if v not in ("phi", "sensitive")]
    assert len(missed) / len(results) <= 0.005, missed[:5]


@pytest.mark.slow
def test_false_positives_on_ordinary_mail() -> None:
    results = _verdicts(ORDINARY, 300, seed=2)
    flagged = [(v, s, b) for v, s, b in results if v in ("phi", "sensitive")]
    assert len(flagged) / len(results) <= 0.01, flagged[:5]
    # Ordinary mail is not even "pii": contact details and invoice numbers are not identifiers.
    pii = [(v, s, b) for v, s, b in results if v != "none"]
    assert len(pii) / len(results) <= 0.01, pii[:5]


@pytest.mark.slow
def test_false_positives_on_hard_negatives() -> None:
    results = _verdicts(HARD_NEGATIVE, 300, seed=3)
    flagged = [(v, s, b) for v, s, b in results if v in ("phi", "sensitive")]
    assert len(flagged) / len(results) <= 0.03, flagged[:5]


def test_sensitive_templates_are_sensitive() -> None:
    f = Faker(4)
    rules = Ruleset.default()
    for term in SENSITIVE:
        body = f"Patient: {f.name()}\nDOB: {f.dob()}\nAssessment: {term}."
        d = evaluate(make_message(body), "a@clinic.example", ["b@x.example"], rules)
        assert d.verdict == "sensitive", term
