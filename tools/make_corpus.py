"""Build the labelled policy corpus: synthetic but realistic mail in tests/policies/corpus/.

Every message is real MIME with real attachments (PDF, DOCX, XLSX, CSV, ZIP,
RTF, HTML, iCalendar); every person, number and organisation in it is made up.
The same seed always yields byte-identical files, so the committed corpus can
be checked against this generator and regenerated after an edit:

    python tools/make_corpus.py                 # writes tests/policies/corpus/
    python tools/make_corpus.py --out /tmp/c    # somewhere else

Needs openpyxl, python-docx and pypdf (the last only to self-check the PDFs).
`labels.json` says, per file, whether the message needs encryption under the
shipped policy, the verdict class a careful reader would give it, its group
and a short note.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import json
import random
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "policies" / "corpus"
DEFAULT_SEED = 20240311
# Every timestamp inside generated files: archives and documents carry dates,
# and fixed ones keep the output reproducible.
FIXED_TIME = dt.datetime(2024, 3, 4, 9, 30, 0)
BASE_DATE = dt.date(2024, 3, 11)

Verdict = Literal["none", "pii", "phi", "sensitive"]
T = TypeVar("T")

# --- made-up people, places and organisations -----------------------------------------

FIRST_NAMES = (
    "Maria", "James", "Aisha", "Robert", "Linda", "Wei", "Carlos", "Patricia", "Michael",
    "Fatima", "David", "Jennifer", "Thomas", "Olga", "Daniel", "Grace", "Samuel", "Priya",
    "Kevin", "Rosa", "Anthony", "Hannah", "Luis", "Emily", "George", "Mei", "Brian", "Naomi",
    "Ahmed", "Laura", "Victor", "Chloe", "Dennis", "Yolanda", "Marcus", "Ingrid", "Peter",
    "Sofia", "Harold", "Keisha", "Martin", "Elena", "Raymond", "Julia", "Tyrone", "Ruth",
)  # fmt: skip
LAST_NAMES = (
    "Lopez", "Johnson", "Okafor", "Whitaker", "Nguyen", "Chen", "Ramirez", "Kowalski",
    "Brennan", "Haddad", "Goldberg", "Patel", "Fitzgerald", "Ivanova", "Morales", "Sullivan",
    "Adeyemi", "Lindqvist", "Castillo", "Thompson", "Yamamoto", "Delgado", "Harrington",
    "Novak", "Abernathy", "Mensah", "Rossi", "Kaplan", "Osei", "Gallagher", "Petrov",
    "Santos", "McAllister", "Dubois", "Hughes", "Reyes", "Schneider", "Bianchi", "Moreau",
)  # fmt: skip
STREETS = (
    "Maple Avenue", "Oak Street", "Riverside Drive", "Elm Court", "Harbor View Road",
    "Lincoln Boulevard", "Cedar Lane", "Willow Way", "Hillcrest Road", "Pine Ridge Drive",
    "Main Street", "Orchard Lane", "Lakeshore Drive", "Birch Terrace", "Sycamore Place",
)  # fmt: skip
CITIES = (
    ("Springfield", "IL", "62704"), ("Riverton", "WY", "82501"), ("Fairview", "OR", "97024"),
    ("Greenville", "SC", "29601"), ("Madison", "WI", "53703"), ("Salem", "MA", "01970"),
    ("Franklin", "TN", "37064"), ("Clinton", "IA", "52732"), ("Georgetown", "TX", "78626"),
    ("Ashland", "OH", "44805"), ("Dover", "DE", "19901"), ("Burlington", "VT", "05401"),
)  # fmt: skip
AREA_CODES = ("217", "307", "503", "864", "608", "978", "615", "563", "512", "419", "302")


@dataclass(frozen=True)
class Org:
    """A made-up organisation: name, mail domain, postal address, phone."""

    name: str
    domain: str
    street: str
    city: str
    phone: str
    fax: str = ""


CLINICS = (
    Org("Riverside Family Medicine", "riverside-fm.example", "1200 Riverside Drive, Suite 300",
        "Springfield, IL 62704", "(217) 555-0142", "(217) 555-0143"),
    Org("Lakeview Cardiology Associates", "lakeviewcardio.example", "48 Lakeshore Drive",
        "Madison, WI 53703", "(608) 555-0118", "(608) 555-0119"),
    Org("Cedar Valley Hospital", "cedarvalleyhealth.example", "900 Cedar Lane",
        "Greenville, SC 29601", "(864) 555-0100", "(864) 555-0101"),
    Org("Summit Orthopedics & Sports Medicine", "summit-ortho.example", "77 Hillcrest Road",
        "Franklin, TN 37064", "(615) 555-0177", "(615) 555-0178"),
    Org("Northgate Pediatrics", "northgatepeds.example", "15 Orchard Lane",
        "Salem, MA 01970", "(978) 555-0163", "(978) 555-0164"),
)  # fmt: skip
LAB = Org("Summit Clinical Laboratories", "summitlabs.example", "3300 Pine Ridge Drive",
          "Fairview, OR 97024", "(503) 555-0190", "(503) 555-0191")  # fmt: skip
PLAN = Org("Northgate Health Plan", "northgatehp.example", "1 Plan Plaza",
           "Georgetown, TX 78626", "(512) 555-0155", "(512) 555-0156")  # fmt: skip
BILLING = Org("Meridian Medical Billing", "meridianbilling.example", "410 Main Street",
              "Ashland, OH 44805", "(419) 555-0126", "(419) 555-0127")  # fmt: skip
BEHAVIORAL = Org("Harbor Behavioral Health", "harborbh.example", "22 Harbor View Road",
                 "Dover, DE 19901", "(302) 555-0131", "(302) 555-0132")  # fmt: skip
RECOVERY = Org("Brightpath Recovery Center", "brightpath-recovery.example", "8 Willow Way",
               "Burlington, VT 05401", "(802) 555-0149", "(802) 555-0150")  # fmt: skip
VENDORS = (
    Org("Acme Office Supply", "acme-office.example", "500 Industrial Pkwy", "Clinton, IA 52732",
        "(563) 555-0111"),
    Org("Bluewave Logistics", "bluewave-logistics.example", "2 Dock Street",
        "Dover, DE 19901", "(302) 555-0122"),
    Org("Northwind Medical Supply", "northwind-supply.example", "61 Commerce Drive",
        "Franklin, TN 37064", "(615) 555-0133"),
    Org("Contoso Cloud Services", "contoso-cloud.example", "1 Microsoft Way",
        "Salem, MA 01970", "(978) 555-0144"),
    Org("Fabrikam Events", "fabrikam-events.example", "19 Convention Plaza",
        "Madison, WI 53703", "(608) 555-0155"),
    Org("Tailspin Printing", "tailspin-print.example", "330 Press Row", "Ashland, OH 44805",
        "(419) 555-0166"),
)  # fmt: skip
ALL_CLINICAL = (*CLINICS, LAB, PLAN, BILLING, BEHAVIORAL, RECOVERY)

CONDITIONS = (
    ("type 2 diabetes mellitus without complications", "E11.9"),
    ("essential (primary) hypertension", "I10"),
    ("hyperlipidemia, unspecified", "E78.5"),
    ("mild intermittent asthma", "J45.20"),
    ("chronic kidney disease, stage 3a", "N18.31"),
    ("hypothyroidism, unspecified", "E03.9"),
    ("paroxysmal atrial fibrillation", "I48.0"),
    ("chronic obstructive pulmonary disease", "J44.9"),
    ("primary osteoarthritis, right knee", "M17.11"),
    ("low back pain, unspecified", "M54.50"),
    ("pneumonia, unspecified organism", "J18.9"),
    ("iron deficiency anemia", "D50.9"),
    ("migraine without aura", "G43.009"),
    ("gastro-esophageal reflux disease", "K21.9"),
    ("urinary tract infection", "N39.0"),
    ("heart failure with reduced ejection fraction", "I50.2"),
    ("obstructive sleep apnea", "G47.33"),
    ("closed fracture of the left distal radius", "S52.502A"),
)
MEDICATIONS = (
    ("metformin", "500 mg by mouth twice daily"), ("lisinopril", "10 mg by mouth daily"),
    ("atorvastatin", "40 mg at bedtime"), ("levothyroxine", "75 mcg every morning"),
    ("apixaban", "5 mg twice daily"), ("albuterol HFA", "2 puffs every 4 hours as needed"),
    ("omeprazole", "20 mg daily before breakfast"), ("amlodipine", "5 mg daily"),
    ("furosemide", "20 mg daily"), ("sumatriptan", "50 mg at onset of headache"),
    ("amoxicillin-clavulanate", "875 mg twice daily for 7 days"),
    ("ferrous sulfate", "325 mg daily"), ("carvedilol", "12.5 mg twice daily"),
    ("tiotropium", "18 mcg inhaled daily"),
)  # fmt: skip
LAB_TESTS = (
    ("Hemoglobin A1c", "%", 5.1, 11.2, "4.0-5.6", 1),
    ("Glucose, fasting", "mg/dL", 68, 240, "70-99", 0),
    ("LDL cholesterol", "mg/dL", 58, 205, "<100", 0),
    ("Creatinine", "mg/dL", 0.6, 2.6, "0.57-1.00", 2),
    ("eGFR", "mL/min/1.73m2", 24, 112, ">59", 0),
    ("TSH", "mIU/L", 0.15, 9.8, "0.45-4.50", 2),
    ("Hemoglobin", "g/dL", 8.4, 16.1, "11.1-15.9", 1),
    ("Potassium", "mmol/L", 3.1, 5.9, "3.5-5.2", 1),
    ("WBC", "x10E3/uL", 3.1, 15.2, "3.4-10.8", 1),
    ("Sodium", "mmol/L", 128, 147, "134-144", 0),
    ("ALT (SGPT)", "IU/L", 9, 112, "0-32", 0),
    ("Vitamin D, 25-hydroxy", "ng/mL", 9, 61, "30.0-100.0", 1),
)  # fmt: skip
PROCEDURES = (
    "colonoscopy", "MRI of the lumbar spine without contrast", "transthoracic echocardiogram",
    "right knee arthroscopy", "cataract extraction, left eye", "upper endoscopy (EGD)",
    "CT of the chest with contrast", "screening mammogram", "exercise stress test",
    "overnight polysomnography", "carpal tunnel release", "cardiac catheterization",
)  # fmt: skip
# Procedures that have a pre-operative huddle.
SURGERIES = (
    "right knee arthroscopy", "cataract extraction, left eye", "carpal tunnel release",
    "cardiac catheterization", "laparoscopic cholecystectomy", "total hip arthroplasty",
)  # fmt: skip
CPT = (("99214", "Office visit, established, moderate"), ("93306", "Echocardiogram, complete"),
       ("45378", "Colonoscopy, diagnostic"), ("80053", "Comprehensive metabolic panel"),
       ("83036", "Hemoglobin A1c"), ("72148", "MRI lumbar spine w/o contrast"),
       ("99203", "Office visit, new patient"), ("36415", "Routine venipuncture"),
       ("71046", "Chest X-ray, 2 views"), ("97110", "Therapeutic exercise, 15 min"))  # fmt: skip
PROVIDER_SPECIALTIES = (
    "Family Medicine", "Cardiology", "Internal Medicine", "Orthopedic Surgery", "Pediatrics",
    "Psychiatry", "Addiction Medicine", "Infectious Disease", "Obstetrics & Gynecology",
    "Endocrinology", "Gastroenterology", "Nephrology", "Dermatology", "Medical Genetics",
)  # fmt: skip

# Sensitive categories: (condition text, ICD-10 code, treatment, extra clinical detail).
SENSITIVE = {
    "substance-use": (
        ("opioid use disorder, moderate", "F11.20", "buprenorphine/naloxone 8 mg/2 mg SL daily",
         "Urine drug screen on intake was positive for fentanyl; negative on last two visits."),
        ("alcohol use disorder, severe", "F10.20", "naltrexone 50 mg daily",
         "Completed 5-day medically supervised withdrawal; CIWA-Ar scores now below 8."),
        ("opioid use disorder, in early remission", "F11.21", "methadone 85 mg daily (OTP)",
         "Take-home doses approved for weekends after 90 days of negative toxicology."),
    ),
    "hiv": (
        ("HIV disease", "B20", "bictegravir/emtricitabine/tenofovir alafenamide (Biktarvy) daily",
         "HIV-1 RNA viral load undetectable (<20 copies/mL); CD4 count 612 cells/uL."),
        ("asymptomatic HIV infection", "Z21", "dolutegravir + lamivudine (Dovato) daily",
         "Newly diagnosed; baseline genotype pending. CD4 count 388 cells/uL."),
    ),
    "mental-health": (
        ("major depressive disorder, recurrent, moderate", "F33.1", "sertraline 100 mg daily",
         "PHQ-9 score 17 at intake, 11 today. Denies current suicidal ideation; safety plan "
         "reviewed."),
        ("bipolar I disorder, most recent episode manic", "F31.13", "lithium 600 mg twice daily",
         "Discharged from inpatient psychiatric unit after 9 days; lithium level 0.8 mmol/L."),
        ("generalized anxiety disorder", "F41.1", "escitalopram 10 mg daily",
         "GAD-7 score 15. Weekly cognitive behavioral therapy sessions continue."),
        ("post-traumatic stress disorder, chronic", "F43.12", "prazosin 2 mg at bedtime",
         "Nightmares reduced; continues trauma-focused psychotherapy (CPT) every week."),
    ),
    "genetic": (
        ("BRCA1 pathogenic variant carrier", "Z15.01", "referral to high-risk breast clinic",
         "Germline testing identified BRCA1 c.68_69delAG (pathogenic). Genetic counseling "
         "for first-degree relatives recommended."),
        ("Lynch syndrome (MLH1 pathogenic variant)", "Z15.09", "colonoscopy every 1-2 years",
         "Hereditary cancer panel: MLH1 c.1852_1854del identified; cascade testing offered."),
        ("cystic fibrosis carrier", "Z14.1", "partner carrier screening",
         "Expanded carrier screening found one CFTR F508del variant."),
    ),
    "reproductive": (
        ("supervision of pregnancy, first trimester", "Z34.01", "prenatal vitamins",
         "Positive pregnancy test; ultrasound shows intrauterine pregnancy at 8 weeks 2 days."),
        ("encounter for elective termination of pregnancy", "Z33.2",
         "mifepristone 200 mg followed by misoprostol 800 mcg",
         "Medication abortion at 7 weeks gestation; follow-up hCG in 1 week."),
        ("female infertility", "N97.9", "IVF cycle with frozen embryo transfer",
         "Retrieval yielded 11 oocytes; 4 blastocysts frozen. Transfer planned next cycle."),
    ),
}  # fmt: skip

# --- identifiers (valid-looking, synthetic) ---------------------------------------------

_SSN_SAMPLES = frozenset({"078051120", "219099999", "123456789", "987654321"})
_MBI_ALPHA = "ACDEFGHJKMNPQRTUVWXY"


def luhn_digit(payload: str) -> str:
    """The Luhn check digit for a string of digits."""
    total = 0
    for i, c in enumerate(reversed(payload)):
        d = int(c)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    """Does the whole digit string pass the Luhn check?"""
    return luhn_digit(number[:-1]) == number[-1]


class Gen:
    """Seeded source of every random choice, so the corpus is reproducible."""

    def __init__(self, seed: int) -> None:
        """One generator per corpus build."""
        self.rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
        self._used_ssns: set[str] = set()

    def pick(self, seq: Sequence[T]) -> T:
        """One element."""
        return seq[self.rng.randrange(len(seq))]

    def chance(self, p: float) -> bool:
        """True with probability p."""
        return self.rng.random() < p

    def digits(self, n: int) -> str:
        """n random digits (first one not 0)."""
        return str(self.rng.randint(1, 9)) + "".join(
            str(self.rng.randint(0, 9)) for _ in range(n - 1)
        )

    def ssn(self) -> str:
        """A dashed SSN that follows SSA issuing rules and is not a known sample."""
        while True:
            area = self.rng.randint(1, 899)
            if area == 666:
                continue
            s = f"{area:03d}{self.rng.randint(1, 99):02d}{self.rng.randint(1, 9999):04d}"
            if s not in _SSN_SAMPLES and s not in self._used_ssns:
                self._used_ssns.add(s)
                return f"{s[:3]}-{s[3:5]}-{s[5:]}"

    def ssn_shaped(self) -> str:
        """A number in SSN shape (ddd-dd-dddd) that a business uses for something else."""
        return self.ssn()

    def mrn(self) -> str:
        """A medical record number in one of a few EHR styles."""
        style = self.rng.randrange(3)
        if style == 0:
            return self.digits(8)
        if style == 1:
            return "0" + self.digits(6)
        return f"{self.pick(('RFM', 'CVH', 'LCA'))}{self.digits(7)}"

    def member_id(self) -> str:
        """A health plan member id."""
        return f"{self.pick(('NGH', 'XHP', 'W'))}{self.digits(9)}"

    def mbi(self, dashed: bool = True) -> str:
        """A Medicare Beneficiary Identifier in CMS format."""
        an = _MBI_ALPHA + "0123456789"
        r = self.rng
        chars = [
            str(r.randint(1, 9)), self.pick(_MBI_ALPHA), self.pick(an), str(r.randint(0, 9)),
            self.pick(_MBI_ALPHA), self.pick(an), str(r.randint(0, 9)),
            self.pick(_MBI_ALPHA), self.pick(_MBI_ALPHA), str(r.randint(0, 9)),
            str(r.randint(0, 9)),
        ]  # fmt: skip
        s = "".join(chars)
        return f"{s[:4]}-{s[4:7]}-{s[7:]}" if dashed else s

    def npi(self) -> str:
        """A 10-digit NPI with a valid check digit (Luhn over the 80840 prefix)."""
        body = self.pick("12") + "".join(str(self.rng.randint(0, 9)) for _ in range(8))
        return body + luhn_digit("80840" + body)

    def dea(self, last_name: str) -> str:
        """A DEA registration number with a valid check digit."""
        d = [self.rng.randint(0, 9) for _ in range(6)]
        check = (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10
        return self.pick("ABFM") + last_name[0].upper() + "".join(map(str, d)) + str(check)

    def luhn_order(self) -> str:
        """A 10-digit order number that passes Luhn (and looks like an NPI)."""
        body = self.pick("12") + "".join(str(self.rng.randint(0, 9)) for _ in range(8))
        if self.chance(0.5):
            return body + luhn_digit("80840" + body)
        return body + luhn_digit(body)

    def phone(self) -> str:
        """A phone number in the fictional 555-01xx range."""
        return f"({self.pick(AREA_CODES)}) 555-01{self.rng.randint(0, 99):02d}"

    def date(self, back: int = 60, ahead: int = 0) -> dt.date:
        """A date around the corpus' base date."""
        return BASE_DATE + dt.timedelta(days=self.rng.randint(-back, ahead))

    def dob(self, lo: int = 1938, hi: int = 2004) -> dt.date:
        """A birth date."""
        return dt.date(self.rng.randint(lo, hi), self.rng.randint(1, 12), self.rng.randint(1, 28))

    def money(self, lo: float, hi: float) -> str:
        """An amount such as 1,234.56."""
        return f"{self.rng.uniform(lo, hi):,.2f}"

    def person(self) -> Person:
        """A made-up patient or employee."""
        first, last = self.pick(FIRST_NAMES), self.pick(LAST_NAMES)
        city, state, zipc = self.pick(CITIES)
        return Person(
            first=first,
            last=last,
            dob=self.dob(),
            sex=self.pick(("F", "M")),
            ssn=self.ssn(),
            mrn=self.mrn(),
            member_id=self.member_id(),
            mbi=self.mbi(),
            phone=self.phone(),
            email=f"{first.lower()}.{last.lower()}{self.rng.randint(1, 99)}@mailbox.example",
            street=f"{self.rng.randint(10, 9899)} {self.pick(STREETS)}",
            city=f"{city}, {state} {zipc}",
        )

    def clinician(self) -> Clinician:
        """A made-up doctor or nurse practitioner."""
        last = self.pick(LAST_NAMES)
        return Clinician(
            name=f"{self.pick(FIRST_NAMES)} {last}",
            degree=self.pick(("MD", "MD", "DO", "NP", "PA-C")),
            specialty=self.pick(PROVIDER_SPECIALTIES),
            npi=self.npi(),
            dea=self.dea(last),
        )

    def lab_rows(self, n: int) -> list[tuple[str, str, str, str, str]]:
        """n lab results: (test, value, unit, reference range, flag)."""
        rows = []
        for name, unit, lo, hi, ref, places in self.rng.sample(LAB_TESTS, n):
            value = self.rng.uniform(lo, hi)
            shown = f"{value:.{places}f}"
            flag = self.pick(("", "", "H", "L")) if places else self.pick(("", "H"))
            rows.append((name, shown, unit, ref, flag))
        return rows

    def hexid(self, n: int = 16) -> str:
        """Lower-case hex digits."""
        return "".join(self.pick("0123456789abcdef") for _ in range(n))


@dataclass(frozen=True)
class Person:
    """A synthetic individual with every identifier a message might mention."""

    first: str
    last: str
    dob: dt.date
    sex: str
    ssn: str
    mrn: str
    member_id: str
    mbi: str
    phone: str
    email: str
    street: str
    city: str

    @property
    def name(self) -> str:
        """First and last name."""
        return f"{self.first} {self.last}"

    @property
    def dob_us(self) -> str:
        """Birth date as MM/DD/YYYY."""
        return us(self.dob)

    def age(self, on: dt.date = BASE_DATE) -> int:
        """Age in years on a date."""
        return on.year - self.dob.year - ((on.month, on.day) < (self.dob.month, self.dob.day))


@dataclass(frozen=True)
class Clinician:
    """A synthetic clinician."""

    name: str
    degree: str
    specialty: str
    npi: str
    dea: str

    @property
    def title(self) -> str:
        """Name with degree, e.g. "Sarah Kim, MD"."""
        return f"{self.name}, {self.degree}"


def us(d: dt.date) -> str:
    """MM/DD/YYYY."""
    return f"{d.month:02d}/{d.day:02d}/{d.year}"


def long_date(d: dt.date) -> str:
    """e.g. "Monday, March 11, 2024"."""
    return f"{d:%A}, {d:%B} {d.day}, {d.year}"


# --- file formats -------------------------------------------------------------------------


def png(width: int, height: int, rng: random.Random) -> bytes:
    """A small grey-scale PNG (logo or scanned page stand-in)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    raw = b"".join(
        b"\x00" + bytes(rng.randrange(180, 256) for _ in range(width)) for _ in range(height)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


# PDF ---------------------------------------------------------------------------------------

_PDF_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for b in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(b ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


class _PdfCrypt:
    """PDF standard security handler, revision 3 (128-bit RC4), as PDF 1.4 writers use."""

    PERMISSIONS = -3904  # print and copy allowed, nothing else

    def __init__(self, user_pw: bytes, owner_pw: bytes, file_id: bytes) -> None:
        """Derive O, U and the file key from the passwords and the file identifier."""
        user_pad = (user_pw + _PDF_PAD)[:32]
        h = _md5((owner_pw + _PDF_PAD)[:32])
        for _ in range(50):
            h = _md5(h)
        o = _rc4(h[:16], user_pad)
        for i in range(1, 20):
            o = _rc4(bytes(b ^ i for b in h[:16]), o)
        self.o = o
        key = _md5(user_pad + o + struct.pack("<i", self.PERMISSIONS) + file_id)
        for _ in range(50):
            key = _md5(key[:16])
        self.key = key[:16]
        u = _rc4(self.key, _md5(_PDF_PAD + file_id))
        for i in range(1, 20):
            u = _rc4(bytes(b ^ i for b in self.key), u)
        self.u = u + bytes(16)

    def object_key(self, num: int) -> bytes:
        """The RC4 key for strings and streams of one object (generation 0)."""
        return _md5(self.key + num.to_bytes(3, "little") + b"\x00\x00")[:16]

    def dictionary(self) -> bytes:
        """The /Encrypt dictionary."""
        return b"<< /Filter /Standard /V 2 /R 3 /Length 128 /P %d /O <%s> /U <%s> >>" % (
            self.PERMISSIONS,
            self.o.hex().encode(),
            self.u.hex().encode(),
        )


def _pdf_literal(text: str) -> bytes:
    raw = text.encode("cp1252", errors="replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _kerned(text: str, rng: random.Random) -> bytes:
    """A TJ array that splits words the way layout engines do (kerning between pieces)."""
    pieces: list[bytes] = []
    i = 0
    while i < len(text):
        n = rng.randint(2, 7)
        pieces.append(_pdf_literal(text[i : i + n]))
        i += n
        if i < len(text):
            pieces.append(str(-rng.randint(5, 30)).encode())
    return b"[" + b" ".join(pieces) + b"] TJ"


def pdf(
    pages: Sequence[Sequence[str]],
    rng: random.Random,
    *,
    title: str = "",
    producer: str = "Microsoft\xae Word for Microsoft 365",
    kerned: bool = False,
    image_only: bool = False,
    password: str | None = None,
) -> bytes:
    """A PDF whose pages hold the given lines (a heading first when it starts with '# ').

    image_only draws a raster image and no text (a scanned fax); password
    encrypts it with the standard security handler.
    """
    file_id = bytes(rng.randrange(256) for _ in range(16))
    crypt = _PdfCrypt(password.encode(), b"owner-" + file_id[:6].hex().encode(), file_id) if (
        password is not None
    ) else None  # fmt: skip
    objects: list[bytes] = []  # object n is objects[n - 1]

    def reserve() -> int:
        objects.append(b"")
        return len(objects)

    def stream(num: int, data: bytes, extra: bytes = b"") -> bytes:
        data = zlib.compress(data, 6)
        if crypt is not None:
            data = _rc4(crypt.object_key(num), data)
        return b"<< /Length %d /Filter /FlateDecode%s >>\nstream\n%s\nendstream" % (
            len(data),
            extra,
            data,
        )

    def string(num: int, text: str) -> bytes:
        raw = text.encode("cp1252", errors="replace")
        if crypt is not None:
            return b"<" + _rc4(crypt.object_key(num), raw).hex().encode() + b">"
        return _pdf_literal(text)

    catalog, pages_id, font, bold, info = (reserve() for _ in range(5))
    objects[font - 1] = (
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    )
    objects[bold - 1] = (
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>"
    )
    kids: list[int] = []
    for lines in pages:
        content, page = reserve(), reserve()
        if image_only:
            img = reserve()
            w, h = 48, 64
            pixels = bytes(rng.randrange(200, 256) for _ in range(w * h))
            objects[img - 1] = stream(
                img,
                pixels,
                b" /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray"
                b" /BitsPerComponent 8" % (w, h),
            )
            ops = b"q 540 0 0 720 36 36 cm /Im1 Do Q"
            resources = b"/XObject << /Im1 %d 0 R >>" % img
        else:
            out = [b"BT", b"/F1 10 Tf", b"13 TL", b"56 752 Td"]
            for line in lines:
                if line.startswith("# "):
                    out += [b"/F2 13 Tf", _pdf_literal(line[2:]) + b" Tj", b"T*", b"/F1 10 Tf"]
                elif kerned and line:
                    out += [_kerned(line, rng), b"T*"]
                else:
                    out += [_pdf_literal(line) + b" Tj", b"T*"]
            out.append(b"ET")
            ops = b"\n".join(out)
            resources = b"/Font << /F1 %d 0 R /F2 %d 0 R >>" % (font, bold)
        objects[content - 1] = stream(content, ops)
        objects[page - 1] = (
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << %s >> >>" % (pages_id, content, resources)
        )
        kids.append(page)
    objects[pages_id - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id
    objects[info - 1] = b"<< /Title %s /Producer %s /CreationDate %s >>" % (
        string(info, title),
        string(info, producer),
        string(info, "D:20240304093000-05'00'"),
    )
    encrypt = 0
    if crypt is not None:
        objects.append(crypt.dictionary())
        encrypt = len(objects)
    buf = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate(objects, start=1):
        offsets.append(len(buf))
        buf += b"%d 0 obj\n%s\nendobj\n" % (num, body)
    xref = len(buf)
    buf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        buf += b"%010d 00000 n \n" % off
    trailer = b"/Size %d /Root %d 0 R /Info %d 0 R /ID [<%s> <%s>]" % (
        len(objects) + 1,
        catalog,
        info,
        file_id.hex().encode(),
        file_id.hex().encode(),
    )
    if encrypt:
        trailer += b" /Encrypt %d 0 R" % encrypt
    buf += b"trailer\n<< %s >>\nstartxref\n%d\n%%%%EOF\n" % (trailer, xref)
    return bytes(buf)


# ZIP ---------------------------------------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if c & 1 else c >> 1
        table.append(c)
    return table


_CRC = _crc_table()


class _ZipCrypto:
    """Traditional PKWARE encryption, the kind every unzip tool prompts a password for."""

    def __init__(self, password: bytes) -> None:
        """Key the cipher with the password."""
        self.k0, self.k1, self.k2 = 0x12345678, 0x23456789, 0x34567890
        for b in password:
            self._update(b)

    def _update(self, b: int) -> None:
        self.k0 = (self.k0 >> 8) ^ _CRC[(self.k0 ^ b) & 0xFF]
        self.k1 = ((self.k1 + (self.k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        self.k2 = (self.k2 >> 8) ^ _CRC[(self.k2 ^ (self.k1 >> 24)) & 0xFF]

    def encrypt(self, data: bytes) -> bytes:
        """Encrypt bytes, advancing the cipher state."""
        out = bytearray()
        for b in data:
            k = (self.k2 | 2) & 0xFFFF
            out.append(b ^ (((k * (k ^ 1)) >> 8) & 0xFF))
            self._update(b)
        return bytes(out)


def zip_bytes(
    members: Sequence[tuple[str, bytes]],
    rng: random.Random,
    password: str | None = None,
) -> bytes:
    """A ZIP archive (deflated, fixed timestamps), optionally password-encrypted."""
    t = FIXED_TIME
    dos_time = (t.hour << 11) | (t.minute << 5) | (t.second // 2)
    dos_date = ((t.year - 1980) << 9) | (t.month << 5) | t.day
    out = bytearray()
    central = bytearray()
    for name, data in members:
        raw_name = name.encode("utf-8")
        flags = 0x800 if not name.isascii() else 0
        crc = zlib.crc32(data) & 0xFFFFFFFF
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = comp.compress(data) + comp.flush()
        if password is not None:
            flags |= 0x1
            header = bytes(rng.randrange(256) for _ in range(11)) + bytes([crc >> 24])
            body = _ZipCrypto(password.encode()).encrypt(header + body)
        fixed = struct.pack(
            "<HHHHHIIIH", 20, flags, 8, dos_time, dos_date, crc, len(body), len(data),
            len(raw_name),
        )  # fmt: skip
        offset = len(out)
        out += b"PK\x03\x04" + fixed + b"\x00\x00" + raw_name + body
        central += (
            b"PK\x01\x02"
            + struct.pack("<H", 0x0314)  # made by: Unix, spec 2.0
            + fixed
            + struct.pack("<HHHHII", 0, 0, 0, 0, 0o100644 << 16, offset)
            + raw_name
        )
    cd_offset = len(out)
    out += central
    out += b"PK\x05\x06" + struct.pack(
        "<HHHHIIH", 0, 0, len(members), len(members), len(central), cd_offset, 0
    )
    return bytes(out)


def restamp_zip(data: bytes, rng: random.Random) -> bytes:
    """Rewrite an Office file with fixed timestamps (the libraries stamp the current time)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = [(info.filename, z.read(info)) for info in z.infolist()]
    fixed = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    out = []
    for name, body in members:
        if name == "docProps/core.xml":
            for tag in (b"dcterms:created", b"dcterms:modified"):
                start = body.find(b"<" + tag)
                end = body.find(b"</" + tag + b">")
                if start >= 0 and end > start:
                    open_end = body.index(b">", start) + 1
                    body = body[:open_end] + fixed + body[end:]
        out.append((name, body))
    return zip_bytes(out, rng)


# Office, CSV, RTF, iCalendar, HTML ----------------------------------------------------------

Cell = str | int | float | dt.date | dt.datetime | None


def xlsx(sheets: Sequence[tuple[str, Sequence[Sequence[Cell]]]], rng: random.Random) -> bytes:
    """An XLSX workbook (openpyxl); the first row of each sheet is bold."""
    from openpyxl import Workbook  # type: ignore[import-untyped]
    from openpyxl.styles import Font  # type: ignore[import-untyped]

    wb = Workbook()
    wb.remove(wb.active)
    wb.properties.creator = "Microsoft Excel"
    wb.properties.created = FIXED_TIME
    for title, rows in sheets:
        ws = wb.create_sheet(title)
        for r in rows:
            ws.append(list(r))
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for row in ws.iter_rows():
            for cell in row:
                if isinstance(cell.value, dt.date):
                    cell.number_format = "mm/dd/yyyy"
    buf = io.BytesIO()
    wb.save(buf)
    return restamp_zip(buf.getvalue(), rng)


@dataclass
class Doc:
    """Content of a Word document: a title, paragraphs and an optional table."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    table: list[list[str]] = field(default_factory=list)
    after_table: list[str] = field(default_factory=list)
    author: str = "Front Desk"


def docx(doc: Doc, rng: random.Random) -> bytes:
    """A DOCX file (python-docx)."""
    import docx as python_docx

    d = python_docx.Document()
    props = d.core_properties
    props.author = doc.author
    props.last_modified_by = doc.author
    props.title = doc.title
    props.created = FIXED_TIME
    props.modified = FIXED_TIME
    props.revision = 1
    d.add_heading(doc.title, level=1)
    for p in doc.paragraphs:
        d.add_paragraph(p)
    if doc.table:
        table = d.add_table(rows=len(doc.table), cols=len(doc.table[0]))
        table.style = "Table Grid"
        for r, row in enumerate(doc.table):
            for c, value in enumerate(row):
                table.cell(r, c).text = value
    for p in doc.after_table:
        d.add_paragraph(p)
    buf = io.BytesIO()
    d.save(buf)
    return restamp_zip(buf.getvalue(), rng)


def csv_bytes(rows: Iterable[Sequence[Cell]]) -> bytes:
    """CSV as Excel writes it (CRLF, minimal quoting)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    for r in rows:
        w.writerow(["" if v is None else us(v) if isinstance(v, dt.date) else v for v in r])
    return buf.getvalue().encode("utf-8")


def _rtf_escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in "\\{}":
            out.append("\\" + ch)
        elif ord(ch) < 128:
            out.append(ch)
        else:
            try:
                out.append(f"\\'{ch.encode('cp1252')[0]:02x}")
            except UnicodeEncodeError:
                out.append(f"\\u{ord(ch)}?")
    return "".join(out)


def rtf(title: str, paragraphs: Sequence[str]) -> bytes:
    """An RTF document as WordPad writes it."""
    body = [
        r"{\rtf1\ansi\ansicpg1252\deff0\nouicompat\deflang1033{\fonttbl{\f0\fnil\fcharset0 "
        r"Calibri;}}",
        r"{\*\generator Riched20 10.0.19041}\viewkind4\uc1 ",
        r"\pard\sa200\sl276\slmult1\b\f0\fs28\lang9 " + _rtf_escape(title) + r"\b0\fs22\par",
    ]
    body += [_rtf_escape(p) + r"\par" for p in paragraphs]
    body.append("}")
    return ("\r\n".join(body) + "\r\n").encode("ascii")


def _ics_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _ics_fold(line: str) -> str:
    raw = line.encode("utf-8")
    if len(raw) <= 75:
        return line
    parts: list[str] = []
    while len(line.encode("utf-8")) > 75:
        cut = 75 if not parts else 74
        while len(line[:cut].encode("utf-8")) > (75 if not parts else 74):
            cut -= 1
        parts.append(line[:cut])
        line = line[cut:]
    parts.append(line)
    return "\r\n ".join(parts)


def ics(
    g: Gen,
    summary: str,
    start: dt.datetime,
    minutes: int,
    organizer: str,
    attendees: Sequence[str],
    location: str,
    description: str,
) -> str:
    """An Outlook-style iCalendar meeting request."""
    end = start + dt.timedelta(minutes=minutes)
    lines = [
        "BEGIN:VCALENDAR",
        "METHOD:REQUEST",
        "PRODID:Microsoft Exchange Server 2010",
        "VERSION:2.0",
        "BEGIN:VTIMEZONE",
        "TZID:Central Standard Time",
        "BEGIN:STANDARD",
        "DTSTART:16010101T020000",
        "TZOFFSETFROM:-0500",
        "TZOFFSETTO:-0600",
        "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=1SU;BYMONTH=11",
        "END:STANDARD",
        "BEGIN:DAYLIGHT",
        "DTSTART:16010101T020000",
        "TZOFFSETFROM:-0600",
        "TZOFFSETTO:-0500",
        "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=2SU;BYMONTH=3",
        "END:DAYLIGHT",
        "END:VTIMEZONE",
        "BEGIN:VEVENT",
        f"ORGANIZER;CN={organizer.split('@')[0]}:mailto:{organizer}",
        *(
            f"ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{a}"
            for a in attendees
        ),
        f"DESCRIPTION;LANGUAGE=en-US:{_ics_text(description)}",
        f"UID:040000008200E00074C5B7101A82E008000000{g.hexid(32).upper()}",
        f"SUMMARY;LANGUAGE=en-US:{_ics_text(summary)}",
        f"DTSTART;TZID=Central Standard Time:{start:%Y%m%dT%H%M%S}",
        f"DTEND;TZID=Central Standard Time:{end:%Y%m%dT%H%M%S}",
        "CLASS:PUBLIC",
        "PRIORITY:5",
        f"DTSTAMP:{FIXED_TIME:%Y%m%dT%H%M%SZ}",
        "TRANSP:OPAQUE",
        "STATUS:CONFIRMED",
        "SEQUENCE:0",
        f"LOCATION;LANGUAGE=en-US:{_ics_text(location)}",
        "BEGIN:VALARM",
        "ACTION:DISPLAY",
        "DESCRIPTION:REMINDER",
        "TRIGGER;RELATED=START:-PT15M",
        "END:VALARM",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(_ics_fold(line) for line in lines) + "\r\n"


def html_escape(text: str) -> str:
    """Escape text for HTML."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def html_page(
    paragraphs: Sequence[str], *, table: Sequence[Sequence[str]] = (), extra: str = ""
) -> str:
    """An HTML body the way Outlook/marketing tools write it (already-escaped text)."""
    parts = [
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">',
        "<style>p{margin:0 0 10px 0;font-family:Calibri,Arial,sans-serif;font-size:11pt}"
        "td{border:1px solid #ccc;padding:4px}</style></head><body>",
        '<div class="WordSection1">',
    ]
    for p in paragraphs:
        parts.append("<p>" + html_escape(p).replace("\n", "<br>\n") + "</p>")
    if table:
        parts.append('<table cellspacing="0" cellpadding="0" style="border-collapse:collapse">')
        for i, row in enumerate(table):
            tag = "th" if i == 0 else "td"
            parts.append(
                "<tr>" + "".join(f"<{tag}>{html_escape(c)}</{tag}>" for c in row) + "</tr>"
            )
        parts.append("</table>")
    parts.append(extra)
    parts.append("</div></body></html>")
    return "\n".join(parts)


# --- messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    """What the corpus expects for one message."""

    needs_encryption: bool
    verdict: Verdict
    group: str
    note: str


@dataclass(frozen=True)
class Att:
    """One attachment: bytes with a MIME type, text, or a whole message (forwarded)."""

    filename: str
    data: bytes | str | EmailMessage
    ctype: str = "application/octet-stream"


@dataclass(frozen=True)
class Sample:
    """A generated message, its label and a short slug for the file name."""

    slug: str
    message: EmailMessage
    label: Label
    crlf: bool = True


def addr(name: str, email: str) -> str:
    """ "Name" <email>."""
    return f"{name} <{email}>" if name.replace(" ", "").isalnum() else f'"{name}" <{email}>'


def mailbox(person_name: str, domain: str) -> str:
    """jsmith@domain for "John Smith"."""
    first, _, last = person_name.partition(" ")
    return f"{first[0].lower()}{last.lower().replace(' ', '').replace(chr(39), '')}@{domain}"


def staff(g: Gen, org: Org) -> tuple[str, str]:
    """A member of staff of org: (name, address)."""
    name = f"{g.pick(FIRST_NAMES)} {g.pick(LAST_NAMES)}"
    return name, mailbox(name, org.domain)


DISCLAIMER = (
    "CONFIDENTIALITY NOTICE: This e-mail, including any attachments, is for the sole use of "
    "the intended recipient(s) and may contain confidential and privileged information, "
    "including protected health information (PHI) protected by HIPAA. Any unauthorized "
    "review, use, disclosure or distribution is prohibited. If you are not the intended "
    "recipient, please contact the sender by reply e-mail and destroy all copies of the "
    "original message."
)


def signature(name: str, title: str, org: Org, disclaimer: bool = False) -> str:
    """An e-mail signature block."""
    lines = [name, title, org.name, org.street, org.city, f"Phone: {org.phone}"]
    if org.fax:
        lines.append(f"Fax: {org.fax}")
    text = "\n".join(lines)
    return text + ("\n\n" + DISCLAIMER if disclaimer else "")


def build(
    g: Gen,
    *,
    sender: str,
    to: Sequence[str],
    subject: str,
    text: str | None = None,
    html: str | None = None,
    atts: Sequence[Att] = (),
    cc: Sequence[str] = (),
    headers: Sequence[tuple[str, str]] = (),
    images: Sequence[tuple[str, bytes]] = (),
    calendar: str | None = None,
    cte: str | None = None,
    charset: str = "utf-8",
    when: dt.datetime | None = None,
) -> EmailMessage:
    """An RFC 5322 message the way common mail clients structure one."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    if when is None:
        day = g.date(back=20)
        when = dt.datetime(day.year, day.month, day.day, g.rng.randint(7, 18), g.rng.randint(0, 59))
    zone = dt.timezone(dt.timedelta(hours=g.pick((-5, -6, -4, -7))))
    msg["Date"] = format_datetime(when.replace(tzinfo=zone, second=g.rng.randint(0, 59)))
    domain = sender.rpartition("@")[2].rstrip(">")
    msg["Message-ID"] = f"<{g.hexid(24)}@{domain}>"
    for name, value in headers:
        msg[name] = value
    if text is not None:
        msg.set_content(text, charset=charset, cte=cte)
        if html is not None:
            msg.add_alternative(html, subtype="html", charset=charset, cte=cte)
    elif html is not None:
        msg.set_content(html, subtype="html", charset=charset, cte=cte)
    if calendar is not None:
        msg.add_alternative(calendar, subtype="calendar", params={"method": "REQUEST"})
    if images:
        payload = msg.get_payload()
        host = payload[1] if isinstance(payload, list) else msg
        assert isinstance(host, EmailMessage)
        for n, (cid, data) in enumerate(images, start=1):
            host.add_related(
                data, "image", "png", cid=f"<{cid}>", disposition="inline",
                filename=f"image{n:03d}.png",
            )  # fmt: skip
    for a in atts:
        if isinstance(a.data, EmailMessage):
            msg.add_attachment(a.data, filename=a.filename)
        elif isinstance(a.data, str):
            sub = a.ctype.partition("/")[2]
            msg.add_attachment(a.data, subtype=sub, filename=a.filename)
        else:
            main, _, sub = a.ctype.partition("/")
            msg.add_attachment(a.data, maintype=main, subtype=sub, filename=a.filename)
    return msg


def finalise(g: Gen, msg: EmailMessage) -> None:
    """Give every multipart a boundary from the seeded generator (the library picks randomly)."""
    for part in msg.walk():
        if part.is_multipart() and part.get_content_type().startswith("multipart/"):
            part.set_boundary(f"----=_NextPart_{g.hexid(4)}_{g.hexid(8)}.{g.hexid(8)}")


def serialise(sample: Sample) -> bytes:
    """The message bytes (CRLF like Outlook's .eml, or LF like a Unix mailbox)."""
    # SMTP policy: non-ASCII header text is RFC 2047-encoded, as clients send it.
    pol = SMTP if sample.crlf else SMTP.clone(linesep="\n")
    return sample.message.as_bytes(policy=pol)


MSIP_GENERAL = (
    "MSIP_Label_4f2a9c01-7d3e-4e0b-9a51-2c6b1f0d8e77_Enabled=true; "
    "MSIP_Label_4f2a9c01-7d3e-4e0b-9a51-2c6b1f0d8e77_SetDate=2024-03-04T15:02:11Z; "
    "MSIP_Label_4f2a9c01-7d3e-4e0b-9a51-2c6b1f0d8e77_Method=Standard; "
    "MSIP_Label_4f2a9c01-7d3e-4e0b-9a51-2c6b1f0d8e77_Name=General; "
    "MSIP_Label_4f2a9c01-7d3e-4e0b-9a51-2c6b1f0d8e77_SiteId=0b6f2a1e-93c4-4b0e-8a8e-5d1c2f3a4b5c;"
)


def outlook_headers(g: Gen, subject: str, attach: bool = False) -> list[tuple[str, str]]:
    """Headers Microsoft 365 adds to every message."""
    out = [
        ("Thread-Topic", subject),
        ("Thread-Index", "AQH" + g.hexid(20)),
        ("X-MS-Has-Attach", "yes" if attach else ""),
        ("Content-Language", "en-US"),
    ]
    if g.chance(0.4):
        out.append(("msip_labels", MSIP_GENERAL))
    return out


ScenarioFn = Callable[[Gen, int], Sample]


def ordinary(note: str) -> Label:
    """Ordinary business mail."""
    return Label(False, "none", "ordinary", note)


def hard_negative(note: str) -> Label:
    """Looks like PHI to a naive matcher, but is not."""
    return Label(False, "none", "hard_negative", note)


def phi(note: str, group: str = "phi") -> Label:
    """PHI: needs encryption."""
    return Label(True, "phi", group, note)


# --- ordinary mail ---------------------------------------------------------------------

PRODUCTS = (
    ("Ergonomic mesh task chair", 189.00), ("Sit-stand desk converter", 249.00),
    ("Recycled copy paper, 10 reams", 54.99), ("Nitrile exam gloves, M, 10 x 100", 89.50),
    ("Label printer LX-400", 129.00), ("Wireless keyboard and mouse set", 39.99),
    ("27-inch monitor, USB-C", 279.00), ("Hand sanitizer, 12 x 500 ml", 47.25),
    ("Toner cartridge TN-760, 2-pack", 119.00), ("Clipboard, letter size, 12-pack", 18.40),
    ("Disinfecting wipes, 6 canisters", 32.70), ("Waiting room chair, vinyl", 145.00),
)  # fmt: skip


def o_marketing(g: Gen, i: int) -> Sample:
    """Vendor promotion with an HTML product table, sometimes an inline logo."""
    v = g.pick(VENDORS)
    items = g.rng.sample(PRODUCTS, 4)
    pct = g.pick((10, 15, 20, 25, 30))
    code = f"SPRING{g.rng.randint(10, 99)}"
    subject = g.pick(
        (
            f"{pct}% off everything for your office this week",
            f"Your exclusive offer: {pct}% off with code {code}",
            f"New arrivals at {v.name} + free shipping over $99",
            "Last chance: spring savings end Friday",
        )
    )
    clinic = g.pick(CLINICS)
    intro = g.pick(
        (
            "Outfit your team for the busy season with our best-selling essentials.",
            "Our spring catalogue is here, and we picked a few favourites for you.",
            "Thanks for being a valued customer. Here are this week's deals.",
        )
    )
    table = [["Product", "Regular", "Sale"]] + [
        [n, f"${p:.2f}", f"${p * (100 - pct) / 100:.2f}"] for n, p in items
    ]
    footer = (
        f"You are receiving this because purchasing@{clinic.domain} subscribed at "
        f"{v.domain}. Unsubscribe: https://{v.domain}/u/{g.hexid(10)}\n"
        f"{v.name}, {v.street}, {v.city}"
    )
    text = "\n".join(
        [intro, "", *(f"- {r[0]}: {r[2]} (was {r[1]})" for r in table[1:]), "",
         f"Use code {code} at checkout.", "", footer]
    )  # fmt: skip
    images: list[tuple[str, bytes]] = []
    logo = ""
    if g.chance(0.3):
        cid = f"logo{g.hexid(6)}@{v.domain}"
        images.append((cid, png(40, 16, g.rng)))
        logo = f'<img src="cid:{cid}" alt="{html_escape(v.name)}" width="160">'
    html = html_page([intro, f"Use code {code} at checkout.", footer], table=table, extra=logo)
    html = html.replace('<div class="WordSection1">', '<div class="WordSection1">' + logo, 1)
    msg = build(
        g,
        sender=addr(v.name, f"offers@{v.domain}"),
        to=[f"purchasing@{clinic.domain}"],
        subject=subject,
        text=text,
        html=html,
        images=images,
        headers=[("List-Unsubscribe", f"<https://{v.domain}/u/{g.hexid(10)}>")],
    )
    note = "vendor promotion" + (" with inline logo image" if images else "")
    return Sample("marketing", msg, ordinary(note))


def invoice_lines(g: Gen, n: int) -> tuple[list[list[str]], float]:
    """Invoice rows and the total."""
    rows = [["Qty", "Description", "Unit price", "Amount"]]
    total = 0.0
    for name, price in g.rng.sample(PRODUCTS, n):
        q = g.rng.randint(1, 12)
        total += q * price
        rows.append([str(q), name, f"{price:,.2f}", f"{q * price:,.2f}"])
    return rows, total


def o_invoice(g: Gen, i: int) -> Sample:
    """Vendor invoice with a PDF (or XLSX) attachment."""
    v = g.pick(VENDORS)
    c = g.pick(CLINICS)
    inv = f"INV-{BASE_DATE.year}-{g.rng.randint(1000, 9999)}"
    po = f"PO-{g.rng.randint(40000, 49999)}"
    rows, total = invoice_lines(g, g.rng.randint(2, 5))
    due = g.date(back=0, ahead=45)
    routing = "0" + g.digits(8)
    account = g.digits(10)
    lines = [
        "# INVOICE",
        f"{v.name}",
        f"{v.street}, {v.city}",
        "",
        f"Invoice number: {inv}",
        f"Invoice date: {us(g.date(back=10))}",
        f"Customer PO: {po}",
        f"Payment terms: Net 30, due {us(due)}",
        "",
        "Bill to:",
        f"{c.name}, Attn: Accounts Payable",
        f"{c.street}, {c.city}",
        "",
        *("   ".join(r) for r in rows),
        "",
        f"Subtotal: {total:,.2f}",
        f"Sales tax (6.25%): {total * 0.0625:,.2f}",
        f"Total due (USD): {total * 1.0625:,.2f}",
        "",
        f"Remit by ACH: routing {routing}, account {account}",
        "Questions? billing@" + v.domain,
    ]
    att: Att
    if g.chance(0.75):
        att = Att(f"{inv}.pdf", pdf([lines], g.rng, title=f"Invoice {inv}"), "application/pdf")
    else:
        book = xlsx([("Invoice", [["Invoice", inv], ["PO", po], [], *rows])], g.rng)
        att = Att(f"{inv}.xlsx", book, "application/vnd.openxmlformats-officedocument"
                  ".spreadsheetml.sheet")  # fmt: skip
    name, email = staff(g, v)
    text = (
        f"Hello,\n\nPlease find attached invoice {inv} for your order {po}. "
        f"The amount of ${total * 1.0625:,.2f} is due on {us(due)}.\n\n"
        f"Thank you for your business.\n\n{name}\nAccounts Receivable\n{v.name}\n{v.phone}"
    )
    msg = build(
        g,
        sender=addr(name, email),
        to=[f"ap@{c.domain}"],
        subject=f"Invoice {inv} from {v.name}",
        text=text,
        atts=[att],
    )
    return Sample("invoice", msg, ordinary(f"vendor invoice ({att.filename.rsplit('.', 1)[1]})"))


def o_shipping(g: Gen, i: int) -> Sample:
    """Shipping notification with tracking and order numbers."""
    v = g.pick(VENDORS)
    c = g.pick(CLINICS)
    order = f"W{g.digits(9)}"
    if g.chance(0.5):
        tracking = "1Z" + "".join(g.pick("0123456789ABCDEFGHJKLMNPRTVWXY") for _ in range(6))
        tracking += g.digits(10)
        carrier = "UPS Ground"
    else:
        tracking, carrier = g.digits(12), "FedEx Express Saver"
    items = g.rng.sample(PRODUCTS, g.rng.randint(1, 3))
    eta = long_date(g.date(back=0, ahead=6))
    text = (
        f"Good news! Your order {order} has shipped.\n\n"
        f"Carrier: {carrier}\nTracking number: {tracking}\nEstimated delivery: {eta}\n\n"
        "Items in this shipment:\n"
        + "".join(f"  {g.rng.randint(1, 6)} x {n}\n" for n, _ in items)
        + f"\nShipping to:\n{c.name}\nReceiving Dock\n{c.street}\n{c.city}\n\n"
        f"Track your package: https://{v.domain}/track/{tracking}\n\n"
        f"{v.name} Customer Care, {v.phone}"
    )
    html = html_page(text.split("\n\n"))
    msg = build(
        g,
        sender=addr(f"{v.name} Orders", f"orders@{v.domain}"),
        to=[f"receiving@{c.domain}"],
        subject=g.pick((f"Your order {order} has shipped", f"Shipment confirmation: {order}")),
        text=text,
        html=html,
    )
    return Sample("shipping", msg, ordinary("shipping notice with tracking/order numbers"))


def o_newsletter(g: Gen, i: int) -> Sample:
    """Internal staff newsletter: people, events, facilities."""
    c = g.pick(CLINICS)
    new_hire = f"{g.pick(FIRST_NAMES)} {g.pick(LAST_NAMES)}"
    veteran = f"{g.pick(FIRST_NAMES)} {g.pick(LAST_NAMES)}"
    years = g.pick((5, 10, 15, 20, 25))
    day = long_date(g.date(back=0, ahead=20))
    sections = [
        f"{c.name} Staff Bulletin - {BASE_DATE:%B %Y}",
        f"Welcome aboard: please join us in welcoming {new_hire}, who joins the "
        f"{g.pick(('billing', 'front desk', 'IT', 'facilities', 'scheduling'))} team this month.",
        f"Milestones: congratulations to {veteran} on {years} years with {c.name}!",
        f"Parking: the north lot will be resurfaced on {day}. Please use the garage on "
        f"{g.pick(STREETS)} that day; validation tickets are at the front desk.",
        "Potluck: the spring potluck is back. Sign-up sheet is in the break room; vegetarian "
        "dishes especially welcome.",
        "Patient experience: our survey response rate rose to 41% last quarter. Thanks to "
        "everyone who handed out the feedback cards.",
        "Reminder: annual compliance training modules are due by the end of the month.",
    ]
    text = "\n\n".join(sections) + f"\n\n-- Communications Team, {c.name}"
    msg = build(
        g,
        sender=addr("Staff Communications", f"news@{c.domain}"),
        to=[f"allstaff@{c.domain}"],
        subject=f"Staff Bulletin: {BASE_DATE:%B} edition",
        text=text,
        html=html_page(sections),
    )
    return Sample("staff-newsletter", msg, ordinary("internal staff newsletter naming staff"))


IT_NOTICES = (
    ("Your password expires in 5 days",
     "Your network password will expire in 5 days. To change it, press Ctrl+Alt+Del and "
     "choose Change a password, or visit https://passwordreset.{d}. Passwords must be 14 "
     "characters long and may not reuse your last 10 passwords."),
    ("Planned maintenance: Saturday 22:00-02:00",
     "The EHR, e-mail and file shares will be unavailable on Saturday from 22:00 to 02:00 "
     "while we apply security updates to the data centre. Downtime procedures and paper "
     "forms are in the red binder at each nurse station. Ticket CHG{n} tracks the work."),
    ("Phishing alert: fake 'voicemail' messages",
     "We are seeing messages that claim you have a new voicemail and ask you to sign in. "
     "Do not click the link. Use the Report Phish button in Outlook. If you already entered "
     "your password, call the service desk at extension 4357 immediately."),
    ("Action required: enrol in multi-factor authentication",
     "Starting next month, remote access requires multi-factor authentication. Install the "
     "authenticator app and complete enrolment at https://aka.{d}/mfasetup before the 31st. "
     "Service desk ticket INC{n} has step-by-step instructions."),
    ("New printers on the second floor",
     "The second-floor printers have been replaced. Your print queue will update "
     "automatically at the next sign-in. Badge release is enabled: tap your badge on the "
     "reader to collect your jobs."),
    ("VPN client update",
     "A new VPN client (version 5.2) will be pushed to laptops tonight. Please leave your "
     "laptop powered on and connected. If you see a certificate warning tomorrow, restart "
     "once; if it persists, reply to incident INC{n}."),
)  # fmt: skip


def o_it_notice(g: Gen, i: int) -> Sample:
    """IT department announcement."""
    c = g.pick(CLINICS)
    subject, body = IT_NOTICES[i % len(IT_NOTICES)]
    body = body.format(d=c.domain, n=g.digits(7))
    text = f"Hello,\n\n{body}\n\nThank you,\nIT Service Desk\n{c.name}\nExt. 4357"
    msg = build(
        g,
        sender=addr("IT Service Desk", f"servicedesk@{c.domain}"),
        to=[f"allstaff@{c.domain}"],
        subject=subject,
        text=text,
        html=html_page(text.split("\n\n")) if g.chance(0.5) else None,
        headers=outlook_headers(g, subject),
    )
    return Sample("it-notice", msg, ordinary("IT notice"))


MEETINGS = (
    ("Q2 budget review", "Review departmental budgets against Q1 actuals; capital requests."),
    ("Clinic operations huddle", "Staffing for the spring schedule, supply levels, parking."),
    ("EHR upgrade training", "Hands-on session for the new scheduling screens. Bring your "
     "laptop; training logins will be handed out at the door."),
    ("Vendor demo: fax-to-EHR integration", "Demo of the integration and pricing discussion."),
    ("Compliance committee", "Policy review cycle, audit calendar, training completion."),
    ("1:1", "Weekly check-in."),
    ("Website redesign kickoff", "Goals, timeline and content owners for the new website."),
    ("Facilities walkthrough", "Walk the east wing with the contractor before the renovation."),
)  # fmt: skip


def o_meeting(g: Gen, i: int) -> Sample:
    """Meeting request (text/calendar alternative and an .ics attachment)."""
    c = g.pick(CLINICS)
    summary, desc = MEETINGS[i % len(MEETINGS)]
    oname, oaddr = staff(g, c)
    attendees = [staff(g, c)[1] for _ in range(g.rng.randint(1, 5))]
    day = g.date(back=0, ahead=21)
    start = dt.datetime(day.year, day.month, day.day, g.rng.randint(8, 16), g.pick((0, 30)))
    location = g.pick(
        ("Conference Room B", "Microsoft Teams Meeting", "Admin building, room 204", "Zoom")
    )
    cal = ics(g, summary, start, g.pick((30, 45, 60)), oaddr, attendees, location, desc)
    text = (
        f"{desc}\n\nWhen: {long_date(day)} {start:%H:%M}\nWhere: {location}\n\n"
        "________________________________________________________________________________\n"
        "Microsoft Teams meeting\nJoin on your computer, mobile app or room device\n"
        f"Meeting ID: {g.digits(3)} {g.digits(3)} {g.digits(3)} {g.digits(3)}\n"
        f"Passcode: {g.hexid(6)}\n"
    )
    atts = [Att("invite.ics", cal, "text/calendar")] if g.chance(0.5) else []
    msg = build(
        g,
        sender=addr(oname, oaddr),
        to=attendees,
        subject=summary,
        text=text,
        calendar=cal,
        atts=atts,
    )
    return Sample("meeting-invite", msg, ordinary("meeting request (.ics)"))


def o_hr(g: Gen, i: int) -> Sample:
    """HR announcements without personal data."""
    c = g.pick(CLINICS)
    variants = (
        ("2024 holiday schedule",
         "The clinic will be closed on Memorial Day, Independence Day, Labor Day, Thanksgiving "
         "and the day after, and Christmas Day. Holiday pay follows policy HR-114."),
        ("Open enrolment starts November 1",
         "Benefits open enrolment runs November 1-15. Log in to the benefits portal to review "
         "medical, dental and vision plans, flexible spending accounts and life insurance. "
         "Information sessions are on Tuesday and Thursday at noon."),
        ("Updated employee handbook",
         "The updated handbook is on the intranet. Changes: remote work section, bereavement "
         "leave extended to 5 days, new expense reimbursement limits."),
        ("Payroll calendar change",
         "Because of the bank holiday, pay day moves from Monday to the previous Friday. "
         "Timesheets are due by 10:00 on Wednesday."),
    )  # fmt: skip
    subject, body = variants[i % len(variants)]
    name, email = staff(g, c)
    text = f"Dear colleagues,\n\n{body}\n\nBest regards,\n{name}\nHuman Resources, {c.name}"
    msg = build(
        g,
        sender=addr(name, email),
        to=[f"allstaff@{c.domain}"],
        subject=subject,
        text=text,
        headers=outlook_headers(g, subject),
    )
    return Sample("hr-announcement", msg, ordinary("HR announcement, no personal data"))


def o_business(g: Gen, i: int) -> Sample:
    """Contract or project document for review (DOCX)."""
    c = g.pick(CLINICS)
    v = g.pick(VENDORS)
    fee = g.money(12000, 95000)
    doc = Doc(
        title=g.pick(("Master Services Agreement", "Statement of Work", "Project Charter")),
        paragraphs=[
            f"This agreement is entered into on {long_date(g.date())} between {c.name} "
            f"(\"Client\"), {c.street}, {c.city}, and {v.name} (\"Provider\"), {v.street}, "
            f"{v.city}.",
            "1. Services. Provider will deliver the services described in Exhibit A, including "
            "project management, installation and two days of on-site training.",
            f"2. Fees. Client will pay a fixed fee of USD {fee}, invoiced in three instalments "
            "on signature, delivery and acceptance.",
            "3. Term. This agreement starts on the effective date and runs for 24 months.",
            "4. Confidentiality. Each party keeps the other's confidential information secret "
            "and uses it only to perform this agreement.",
        ],
        table=[["Milestone", "Date", "Amount"],
               ["Signature", us(g.date(back=0, ahead=10)), "30%"],
               ["Delivery", us(g.date(back=0, ahead=60)), "40%"],
               ["Acceptance", us(g.date(back=0, ahead=90)), "30%"]],
        author=f"{g.pick(FIRST_NAMES)} {g.pick(LAST_NAMES)}",
    )  # fmt: skip
    name, email = staff(g, v)
    subject = f"{doc.title} - {c.name} - for review"
    text = (
        f"Hi,\n\nAttached is the draft {doc.title.lower()} with the changes we discussed on "
        "Tuesday. Track changes are accepted; open items are highlighted in section 2.\n\n"
        f"Could you send comments by Friday?\n\nThanks,\n{name}\n{v.name}"
    )
    msg = build(
        g,
        sender=addr(name, email),
        to=[staff(g, c)[1]],
        subject=subject,
        text=text,
        atts=[Att(f"{doc.title.replace(' ', '_')}_draft_v3.docx", docx(doc, g.rng),
                  "application/vnd.openxmlformats-officedocument.wordprocessingml.document")],
        headers=outlook_headers(g, subject, attach=True),
    )  # fmt: skip
    return Sample("contract-review", msg, ordinary("contract draft (.docx)"))


def o_finance(g: Gen, i: int) -> Sample:
    """Budget spreadsheet."""
    c = g.pick(CLINICS)
    depts = ("Front desk", "Nursing", "Billing", "IT", "Facilities", "Laboratory", "Pharmacy")
    rows: list[list[Cell]] = [["Department", "Budget", "Actual Q1", "Variance", "Owner"]]
    for d in depts:
        b = round(g.rng.uniform(20000, 400000), 2)
        a = round(b / 4 * g.rng.uniform(0.8, 1.2), 2)
        rows.append([d, b, a, round(b / 4 - a, 2), f"{g.pick(FIRST_NAMES)} {g.pick(LAST_NAMES)}"])
    book = xlsx([("Q1 actuals", rows), ("Notes", [["Note"], ["Figures in USD, unaudited"]])],
                g.rng)  # fmt: skip
    name, email = staff(g, c)
    subject = g.pick(("Q1 budget vs actuals", "Updated budget workbook", "FY24 forecast"))
    msg = build(
        g,
        sender=addr(name, email),
        to=[staff(g, c)[1], staff(g, c)[1]],
        subject=subject,
        text=f"Hi all,\n\nThe workbook is attached. Please check your department's line "
        f"before Thursday's meeting.\n\n{name}\nFinance",
        atts=[Att("Budget_Q1.xlsx", book,
                  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")],
    )  # fmt: skip
    return Sample("budget-xlsx", msg, ordinary("budget spreadsheet"))


def o_clinic_ops(g: Gen, i: int) -> Sample:
    """Clinic operations mail without patient information."""
    c = g.pick(CLINICS)
    name, email = staff(g, c)
    kind = i % 6
    disclaimer = g.chance(0.5)
    atts: list[Att] = []
    to = [f"clinicstaff@{c.domain}"]
    if kind == 0:
        subject = "Staff schedule for next week"
        rows: list[list[Cell]] = [["Name", "Role", "Mon", "Tue", "Wed", "Thu", "Fri"]]
        for _ in range(8):
            rows.append(
                [f"{g.pick(FIRST_NAMES)} {g.pick(LAST_NAMES)}", g.pick(("RN", "MA", "LPN", "NP")),
                 *(g.pick(("7-15", "11-19", "off", "7-19")) for _ in range(5))]
            )  # fmt: skip
        atts.append(
            Att(
                "schedule.xlsx",
                xlsx([("Week", rows)], g.rng),
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            )
        )
        body = "Attached is next week's schedule. Swap requests to me by Wednesday please."
    elif kind == 1:
        subject = "Supply order for exam rooms"
        body = (
            "Please order the following for exam rooms 1-6:\n"
            "- Nitrile gloves, M and L, 10 boxes each\n- Exam table paper, 12 rolls\n"
            "- 3 ml syringes with 23G needles, 2 cases\n- Alcohol prep pads, 4 boxes\n"
            "- Sharps containers, 1 gal, 6\n- Tongue depressors, 1 box\n"
            f"Charge to cost centre {g.digits(4)}."
        )
    elif kind == 2:
        day = long_date(g.date(back=0, ahead=14))
        subject = f"Clinic closed {day}"
        body = (
            f"The clinic will be closed on {day} for a staff training day. Patients with "
            "urgent needs should call the after-hours line or go to urgent care. Please "
            "reschedule affected appointments by Friday."
        )
    elif kind == 3:
        subject = "You have an upcoming appointment"
        to = [f"{g.pick(FIRST_NAMES).lower()}{g.rng.randint(1, 999)}@mailbox.example"]
        body = (
            f"You have an upcoming appointment at {c.name}. For your privacy, the details are "
            f"in the patient portal: https://portal.{c.domain}\n\nTo cancel or reschedule, "
            f"call {c.phone}. Please do not reply to this automated message."
        )
        disclaimer = False
    elif kind == 4:
        subject = "Flu vaccine inventory"
        body = (
            f"Current stock: {g.rng.randint(20, 200)} doses quadrivalent, "
            f"{g.rng.randint(5, 60)} high-dose. Next shipment arrives Tuesday. Please log "
            "every dose in the refrigerator temperature sheet as usual."
        )
    else:
        subject = "Autoclave maintenance Thursday"
        body = (
            "The autoclave in the sterile processing room is out of service Thursday morning "
            "for its annual service. Please use the backup unit in room 12."
        )
    text = f"Hi team,\n\n{body}\n\n" + signature(name, "Practice Manager", c, disclaimer)
    if kind == 3:
        text = body
        name = f"{c.name} Reminders"
        email = f"noreply@{c.domain}"
    msg = build(g, sender=addr(name, email), to=to, subject=subject, text=text, atts=atts)
    return Sample("clinic-ops", msg, ordinary(f"clinic operations: {subject.lower()}"))


def o_event(g: Gen, i: int) -> Sample:
    """Conference / continuing education announcement."""
    v = VENDORS[4]
    c = g.pick(CLINICS)
    topic = g.pick(("Revenue Cycle Summit", "Practice Management Forum",
                    "Healthcare IT Security Day", "Front Office Excellence Workshop"))  # fmt: skip
    day = long_date(g.date(back=0, ahead=90))
    text = (
        f"Join us for the {topic} on {day} at the Madison Convention Center.\n\n"
        "Sessions include: cutting claim denials, staffing the front desk, ransomware "
        "tabletop exercises, and patient-friendly billing statements.\n\n"
        f"Early-bird registration: $295 until the end of the month. Group discounts for 3+ "
        f"attendees. Register at https://{v.domain}/{topic.lower().replace(' ', '-')}\n\n"
        f"{v.name}, {v.street}, {v.city}. Unsubscribe at https://{v.domain}/unsubscribe"
    )
    msg = build(
        g,
        sender=addr(v.name, f"events@{v.domain}"),
        to=[f"office@{c.domain}"],
        subject=f"Registration open: {topic}",
        text=text,
        html=html_page(text.split("\n\n")),
    )
    return Sample("event", msg, ordinary("event announcement"))


def o_support(g: Gen, i: int) -> Sample:
    """Vendor support ticket reply."""
    v = VENDORS[3]
    c = g.pick(CLINICS)
    ticket = f"CS-{g.digits(6)}"
    name = f"{g.pick(FIRST_NAMES)} {g.pick(LAST_NAMES)}"
    issue = g.pick(
        (
            "sync errors on the shared mailbox",
            "slow sign-in on the kiosk PCs",
            "a licence that was not assigned",
            "the backup job that failed on Sunday",
        )
    )
    text = (
        f"Hello,\n\nThank you for contacting {v.name} support about {issue}. Your case "
        f"number is {ticket}.\n\nWe found the cause and applied a fix on our side at "
        f"{g.rng.randint(1, 12)}:{g.rng.randint(10, 59)} UTC. Please confirm the problem is "
        "resolved; the case closes automatically after 5 business days.\n\n"
        f"Kind regards,\n{name}\nSupport Engineer, {v.name}\n\n"
        f"----- Original message -----\nSubject: {issue}\nWe are seeing {issue} since "
        "yesterday. Can you help?"
    )
    msg = build(
        g,
        sender=addr(f"{v.name} Support", f"support@{v.domain}"),
        to=[f"it@{c.domain}"],
        subject=f"[{ticket}] RE: {issue}",
        text=text,
    )
    return Sample("support-ticket", msg, ordinary("support ticket reply"))


def o_inventory_csv(g: Gen, i: int) -> Sample:
    """Inventory export as CSV."""
    v = VENDORS[2]
    c = g.pick(CLINICS)
    rows: list[list[Cell]] = [["SKU", "Description", "On hand", "Reorder point", "Unit cost"]]
    for name, price in PRODUCTS:
        rows.append([f"NW-{g.digits(5)}", name, g.rng.randint(0, 300), g.rng.randint(10, 50),
                     f"{price:.2f}"])  # fmt: skip
    msg = build(
        g,
        sender=addr("Northwind Reports", f"reports@{v.domain}"),
        to=[f"materials@{c.domain}"],
        subject=f"Weekly inventory report {us(g.date())}",
        text="Your weekly inventory report is attached (CSV).\n\nNorthwind Medical Supply",
        atts=[Att("inventory.csv", csv_bytes(rows).decode(), "text/csv")],
    )
    return Sample("inventory-csv", msg, ordinary("inventory CSV"))


def o_travel(g: Gen, i: int) -> Sample:
    """Travel itinerary: flight numbers, aircraft types, record locators."""
    c = g.pick(CLINICS)
    name = f"{g.pick(FIRST_NAMES)} {g.pick(LAST_NAMES)}"
    loc = "".join(g.pick("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(6))
    day = g.date(back=0, ahead=40)
    aircraft = g.pick(("Airbus A320", "Boeing 737-800", "Airbus A321neo", "Embraer E175"))
    text = (
        f"Trip confirmation for {name}\nConfirmation code: {loc}\n\n"
        f"{long_date(day)}\nFlight UA {g.rng.randint(100, 2999)}  Chicago (ORD) 07:15 -> "
        f"Boston (BOS) 10:32\nAircraft: {aircraft}  Seat {g.rng.randint(8, 34)}"
        f"{g.pick('ACDF')}  Economy\n\n"
        f"Hotel: Harborside Inn, 2 nights, confirmation {g.digits(8)}\n\n"
        "Checked bags: 1 included. Arrive 2 hours before departure."
    )
    msg = build(
        g,
        sender=addr("Corporate Travel", "itinerary@travel-desk.example"),
        to=[mailbox(name, c.domain)],
        subject=f"Itinerary {loc}: Chicago to Boston",
        text=text,
    )
    return Sample("travel-itinerary", msg, ordinary("travel itinerary"))


def o_rtf_memo(g: Gen, i: int) -> Sample:
    """Memo as an RTF attachment."""
    c = g.pick(CLINICS)
    name, email = staff(g, c)
    paras = [
        f"To: All front desk staff\nFrom: {name}\nDate: {us(g.date())}",
        "Re: Check-in process changes",
        "From Monday, patients check in at the kiosk first. Front desk staff verify insurance "
        "cards only when the kiosk flags a problem. Copay collection stays at the desk.",
        "Please make sure the kiosk screens are wiped down every two hours.",
    ]
    msg = build(
        g,
        sender=addr(name, email),
        to=[f"frontdesk@{c.domain}"],
        subject="Memo: check-in process",
        text="Please read the attached memo.\n\n" + name,
        atts=[Att("memo.rtf", rtf("Memo", paras), "application/rtf")],
    )
    return Sample("memo-rtf", msg, ordinary("memo (.rtf)"))


def o_zip_assets(g: Gen, i: int) -> Sample:
    """A zip of ordinary files (press kit, report package)."""
    c = g.pick(CLINICS)
    v = VENDORS[5]
    members = [
        ("press-kit/README.txt", f"Press kit for {c.name}. Logo usage rules inside.".encode()),
        ("press-kit/contacts.csv", csv_bytes([["Role", "Name", "Phone"],
                                              ["Media", f"{g.pick(FIRST_NAMES)} "
                                               f"{g.pick(LAST_NAMES)}", c.phone]])),
        ("press-kit/fact-sheet.html", html_page([f"{c.name} opened in 1998 and has "
                                                 f"{g.rng.randint(40, 400)} employees."])
         .encode()),
    ]  # fmt: skip
    inner = zip_bytes([("brand/colors.txt", b"Primary #00558C\nSecondary #7FB800\n")], g.rng)
    members.append(("press-kit/brand.zip", inner))
    msg = build(
        g,
        sender=addr("Tailspin Printing", f"proofs@{v.domain}"),
        to=[f"marketing@{c.domain}"],
        subject="Press kit files",
        text="Attached are the press kit files for the brochure job.",
        atts=[Att("press-kit.zip", zip_bytes(members, g.rng), "application/zip")],
    )
    return Sample("zip-assets", msg, ordinary("zip with nested zip, no personal data"))


def o_forward(g: Gen, i: int) -> Sample:
    """An ordinary message forwarded as an attachment."""
    inner = o_support(g, i).message
    c = g.pick(CLINICS)
    name, email = staff(g, c)
    msg = build(
        g,
        sender=addr(name, email),
        to=[staff(g, c)[1]],
        subject="FW: support case",
        text="FYI - see the vendor's answer below. Can you check the kiosks tomorrow?\n\n" + name,
        atts=[Att("support case.eml", inner)],
    )
    return Sample("forwarded", msg, ordinary("forwarded message/rfc822 attachment"))


# --- hard negatives --------------------------------------------------------------------


def h_po_ssn(g: Gen, i: int) -> Sample:
    """Purchase orders whose numbers have the SSN shape ddd-dd-dddd."""
    c = g.pick(CLINICS)
    v = g.pick(VENDORS)
    po = g.ssn_shaped()
    rows, total = invoice_lines(g, g.rng.randint(2, 4))
    style = i % 3
    name, email = staff(g, c)
    if style == 0:
        text = (
            f"Hello,\n\nPlease process purchase order {po} for the items below and confirm "
            f"the delivery date.\n\n"
            + "\n".join("  ".join(r) for r in rows)
            + f"\n\nTotal: ${total:,.2f}\nShip to: {c.street}, {c.city}\n\n{name}\nPurchasing"
        )
        atts: list[Att] = []
    elif style == 1:
        text = f"PO# {po} attached. Please reference it on your invoice.\n\n{name}"
        lines = ["# PURCHASE ORDER", f"PO Number: {po}", f"Date: {us(g.date())}",
                 f"Vendor: {v.name}", "", *("   ".join(r) for r in rows), "",
                 f"Total: {total:,.2f}", "Authorized by: " + name]  # fmt: skip
        atts = [Att(f"PO_{po}.pdf", pdf([lines], g.rng, title="Purchase Order"),
                    "application/pdf")]  # fmt: skip
    else:
        text = (
            f"Hi,\n\nOur records show PO {po} and PO {g.ssn_shaped()} are still open. Could "
            f"you send the invoices, or let me know if they were cancelled?\n\nRef. vendor "
            f"account {g.digits(6)}.\n\n{name}\nAccounts Payable, {c.name}"
        )
        atts = []
    msg = build(g, sender=addr(name, email), to=[f"orders@{v.domain}"],
                subject=f"Purchase order {po}", text=text, atts=atts)  # fmt: skip
    return Sample("po-ssn-shaped", msg, hard_negative("purchase order numbers shaped like SSNs"))


def h_luhn_orders(g: Gen, i: int) -> Sample:
    """10-digit order and account numbers that pass Luhn (NPI look-alikes)."""
    v = g.pick(VENDORS)
    c = g.pick(CLINICS)
    orders = [g.luhn_order() for _ in range(g.rng.randint(1, 4))]
    assert all(luhn_valid(o) or luhn_valid("80840" + o) for o in orders)
    table = [["Order", "Placed", "Status", "Amount"]] + [
        [o, us(g.date()), g.pick(("Shipped", "Processing", "Delivered")), "$" + g.money(20, 900)]
        for o in orders
    ]
    text = (
        "Order status summary for your account "
        f"{g.luhn_order()}:\n\n"
        + "\n".join("  ".join(r) for r in table)
        + f"\n\nQuestions? Reply to this e-mail or call {v.phone}.\n{v.name}"
    )
    msg = build(g, sender=addr(v.name, f"orders@{v.domain}"), to=[f"ap@{c.domain}"],
                subject=f"Order status for account ending {orders[0][-4:]}", text=text,
                html=html_page(["Order status summary"], table=table))  # fmt: skip
    return Sample("luhn-order-numbers", msg, hard_negative("10-digit Luhn-valid order numbers"))


def intake_form_lines() -> list[str]:
    """A new-patient intake form with labels and no values."""
    return [
        "# New Patient Intake Form",
        "Patient name: ______________________________   Date of birth: ____/____/________",
        "Social Security No.: _____-____-_______   Sex:  [ ] F  [ ] M  [ ] X",
        "Address: _____________________________________________________________",
        "Phone: (_____) ______-________   E-mail: ____________________________",
        "Insurance carrier: ____________________  Member ID: ____________________",
        "Reason for today's visit: ______________________________________________",
        "Current medications and doses: _________________________________________",
        "Allergies: [ ] None known  [ ] Penicillin  [ ] Latex  [ ] Other: __________",
        "Have you ever been diagnosed with (check all that apply):",
        "[ ] Diabetes  [ ] High blood pressure  [ ] Asthma/COPD  [ ] Heart disease",
        "[ ] Cancer  [ ] HIV/AIDS  [ ] Depression or anxiety  [ ] Substance use disorder",
        "Pregnant or possibly pregnant?  [ ] Yes  [ ] No",
        "Emergency contact: ______________________  Relationship: __________",
        "Signature: _____________________________   Date: ____/____/________",
    ]


def h_blank_form(g: Gen, i: int) -> Sample:
    """Blank intake forms (labels without values) in several formats."""
    c = g.pick(CLINICS)
    name, email = staff(g, c)
    lines = intake_form_lines()
    fmt = i % 4
    if fmt == 0:
        att = Att("New_Patient_Intake.pdf", pdf([lines], g.rng, title="Intake form"),
                  "application/pdf")  # fmt: skip
    elif fmt == 1:
        doc = Doc(
            lines[0][2:],
            lines[1:9],
            [
                ["Condition", "Yes", "No"],
                ["Diabetes", "[ ]", "[ ]"],
                ["HIV/AIDS", "[ ]", "[ ]"],
                ["Depression", "[ ]", "[ ]"],
            ],
            lines[12:],
        )
        att = Att(
            "intake_form_2024.docx",
            docx(doc, g.rng),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        )
    elif fmt == 2:
        att = Att("intake.html", html_page(lines), "text/html")
    else:
        att = Att("intake.rtf", rtf(lines[0][2:], lines[1:]), "application/rtf")
    text = (
        "Hi,\n\nHere is the updated new patient intake form for the website and the front "
        "desk printers. Please replace the old version (rev. 2019) everywhere.\n\n"
        + signature(name, "Practice Manager", c, disclaimer=g.chance(0.5))
    )
    msg = build(g, sender=addr(name, email), to=[f"frontdesk@{c.domain}"],
                subject="Updated intake form", text=text, atts=[att])  # fmt: skip
    return Sample("blank-intake-form", msg, hard_negative(f"blank intake form ({att.filename})"))


def h_provider_directory(g: Gen, i: int) -> Sample:
    """Provider directories and credentialing lists: NPIs, DEA numbers, clinician names."""
    org = g.pick((PLAN, *CLINICS))
    docs = [g.clinician() for _ in range(g.rng.randint(6, 14))]
    header: list[Cell] = ["Provider", "Specialty", "NPI", "DEA", "Phone", "Accepting new patients"]
    rows: list[list[Cell]] = [header] + [
        [d.title, d.specialty, d.npi, d.dea, g.phone(), g.pick(("Yes", "No"))] for d in docs
    ]
    fmt = i % 4
    sender_name, sender = staff(g, org)
    if fmt == 0:
        atts = [
            Att(
                "provider_directory.xlsx",
                xlsx([("Directory", rows)], g.rng),
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            )
        ]
        text = "The updated in-network provider directory is attached."
    elif fmt == 1:
        atts = [Att("credentialing.csv", csv_bytes(rows).decode(), "text/csv")]
        text = "Credentialing roster for the quarterly re-attestation, as requested."
    elif fmt == 2:
        lines = ["# In-Network Provider Directory"] + [
            f"{r[0]} - {r[1]} - NPI {r[2]} - {r[4]}" for r in rows[1:]
        ]
        atts = [Att("directory.pdf", pdf([lines], g.rng, title="Directory"), "application/pdf")]
        text = "Attached is the printable directory for the waiting rooms."
    else:
        atts = []
        text = "Our new clinicians this quarter:\n\n" + "\n".join(
            f"{d.title}, {d.specialty}. NPI {d.npi}, DEA {d.dea}." for d in docs[:4]
        )
    msg = build(g, sender=addr(sender_name, sender), to=[f"referrals@{g.pick(CLINICS).domain}"],
                subject="Provider directory update", text=text + "\n\n" + sender_name,
                atts=atts)  # fmt: skip
    return Sample("provider-directory", msg, hard_negative("providers with NPI/DEA numbers"))


HEALTH_ARTICLES = (
    ("Flu season is here",
     "Influenza is still circulating. Adults 65 and older and people with diabetes, asthma or "
     "heart disease are at higher risk of complications. Walk-in flu shots are available "
     "Monday to Friday, no appointment needed. Common side effects are a sore arm and "
     "low-grade fever."),
    ("Know your numbers",
     "About 1 in 10 Americans has diabetes, and 1 in 3 adults has prediabetes. Ask your "
     "doctor whether you should be screened with a fasting glucose or hemoglobin A1c test. "
     "An A1c of 6.5% or higher usually means diabetes. Blood pressure above 130/80 mmHg is "
     "considered hypertension."),
    ("HIV testing day",
     "National HIV Testing Day is June 27. Free, confidential rapid HIV testing is offered at "
     "our main campus. Pre-exposure prophylaxis (PrEP) lowers the risk of HIV infection by "
     "about 99% when taken as prescribed. Ask about PrEP at your next visit."),
    ("May is Mental Health Awareness Month",
     "Depression and anxiety are common and treatable. If you feel down for more than two "
     "weeks, talk to your primary care provider. If you or someone you know is in crisis, "
     "call or text 988, the Suicide & Crisis Lifeline."),
    ("Colorectal cancer screening now starts at 45",
     "Guidelines now recommend screening from age 45. Options include colonoscopy every 10 "
     "years or a stool-based test every year. Call us to find out which test is right for "
     "you."),
    ("Safe disposal of unused opioids",
     "Unused prescription opioids are a leading source of misuse. Bring unused medication to "
     "the drop box in our pharmacy lobby. Naloxone is available without a prescription."),
)  # fmt: skip


def h_health_newsletter(g: Gen, i: int) -> Sample:
    """Patient newsletters about health topics that name no individual."""
    c = g.pick(CLINICS)
    arts = [HEALTH_ARTICLES[i % len(HEALTH_ARTICLES)], g.pick(HEALTH_ARTICLES)]
    doc = g.clinician()
    paras = [f"{c.name} Health Matters - {BASE_DATE:%B %Y}"]
    for title, body in arts:
        paras += [title, body]
    paras += [
        f"Meet our new provider: {doc.title}, {doc.specialty}, now accepting new patients.",
        f"{c.name} | {c.street}, {c.city} | {c.phone}\nUnsubscribe: "
        f"https://{c.domain}/newsletter/unsubscribe",
    ]
    images = [(f"banner@{c.domain}", png(60, 12, g.rng))] if g.chance(0.25) else []
    msg = build(
        g,
        sender=addr(c.name, f"newsletter@{c.domain}"),
        to=[f"{g.pick(FIRST_NAMES).lower()}.{g.pick(LAST_NAMES).lower()}@mailbox.example"],
        subject=f"Health Matters: {arts[0][0]}",
        text="\n\n".join(paras),
        html=html_page(paras),
        images=images,
    )
    note = "health newsletter, no individual" + (" (inline banner image)" if images else "")
    return Sample("health-newsletter", msg, hard_negative(note))


def h_sample_ssn(g: Gen, i: int) -> Sample:
    """The famous sample SSN 078-05-1120 in training and test-data notes."""
    c = g.pick((*CLINICS, BILLING))
    name, email = staff(g, c)
    variants = (
        "Reminder for the test environment: never load real SSNs. Use the sample numbers "
        "078-05-1120 and 219-09-9999, which the SSA never issued to a real person. The "
        "import script rejects anything else in the test tenant.",
        "Fun fact for the fraud awareness module: 078-05-1120 is the most misused SSN in "
        "history. It was printed on a sample card in wallets sold in 1938, and thousands of "
        "people used it as their own.",
        "QA note: the claims form validation accepted 078-05-1120 in the SSN field. It should "
        "be rejected as a known invalid number, same as 000-xx-xxxx and 666-xx-xxxx.",
        "Training slide 12 shows a sample card with SSN 078-05-1120 and name 'Hilda "
        "Whitcher'. Please keep that sample on the slide instead of making up numbers.",
    )
    text = f"Hi all,\n\n{variants[i % len(variants)]}\n\nThanks,\n{name}"
    msg = build(g, sender=addr(name, email), to=[f"team@{c.domain}"],
                subject=g.pick(("Test data reminder", "Training material", "QA finding")),
                text=text)  # fmt: skip
    return Sample("sample-ssn", msg, hard_negative("published sample SSN 078-05-1120"))


ICD_LIKE = (
    "Our delegation flies out on the A380 on Sunday and is back after the G20 summit closes.",
    "Traffic on the I10 highway was at a standstill, so the delivery truck arrived at 4pm.",
    "Please fill the pool cars with E85 only if the fuel cap says Flex Fuel.",
    "Meeting moved to room B12 on level 2; the C130 hangar tour is after lunch.",
    "The M25 roadworks mean the courier needs an extra hour; use postcode area N18 for the depot.",
    "Order the J45 brackets and the K21 hinges from the catalogue page F32, not the E11 "
    "model which is discontinued.",
)


def h_icd_like(g: Gen, i: int) -> Sample:
    """Tokens shaped like ICD-10 codes in non-medical text."""
    c = g.pick((*CLINICS, *VENDORS))
    name, email = staff(g, c)
    line = ICD_LIKE[i % len(ICD_LIKE)]
    text = f"Hi,\n\n{line}\n\nLet me know if that changes anything for Thursday.\n\n{name}"
    msg = build(g, sender=addr(name, email), to=[staff(g, c)[1]],
                subject=g.pick(("Logistics for Thursday", "Quick update", "Re: plans")),
                text=text)  # fmt: skip
    return Sample("icd-like-tokens", msg, hard_negative("ICD-like tokens outside medicine"))


def h_protocol(g: Gen, i: int) -> Sample:
    """Clinical protocols and process changes that concern no particular patient."""
    c = g.pick(CLINICS)
    doc = g.clinician()
    variants = (
        "Effective Monday, all patients with type 2 diabetes and an A1c above 9% should be "
        "offered a same-week visit with the diabetes educator. Order a urine "
        "albumin-to-creatinine ratio yearly and refer to ophthalmology for a retinal exam.",
        "Reminder of the sepsis protocol: lactate within 1 hour, blood cultures before "
        "antibiotics, 30 ml/kg crystalloid for hypotension. The updated order set is live.",
        "For patients on warfarin, INR checks move to the anticoagulation clinic on "
        "Tuesdays. Target INR 2.0-3.0 for atrial fibrillation unless documented otherwise.",
        "New standing order: nurses may administer the Tdap and influenza vaccines to adults "
        "without a separate provider order, following the screening checklist.",
        "The depression screening workflow changes: front desk hands out the PHQ-2 at every "
        "annual visit; a positive screen triggers the PHQ-9 before the provider enters.",
    )
    text = (
        f"Team,\n\n{variants[i % len(variants)]}\n\nQuestions to me or to the nurse "
        f"manager.\n\n{doc.title}\nMedical Director, {c.name}\n\n{DISCLAIMER}"
    )
    msg = build(
        g,
        sender=addr(doc.name, mailbox(doc.name, c.domain)),
        to=[f"clinicalstaff@{c.domain}"],
        subject="Protocol update",
        text=text,
    )
    return Sample("clinical-protocol", msg, hard_negative("clinical protocol, no patient"))


def h_benefits_info(g: Gen, i: int) -> Sample:
    """Benefits descriptions that talk about coverage for sensitive services."""
    c = g.pick(CLINICS)
    name, email = staff(g, c)
    text = (
        "Hi everyone,\n\nA few questions came up at the benefits session, so here is a "
        "summary of the 2024 medical plan:\n\n"
        "- Mental health and substance use disorder treatment are covered at the same "
        "level as medical care (no separate deductible).\n"
        "- HIV PrEP, contraception and prenatal visits are covered at 100% in network.\n"
        "- Fertility treatment (IVF) is covered up to a $15,000 lifetime maximum.\n"
        "- Genetic testing is covered when medically necessary with prior authorization.\n"
        "- The Employee Assistance Program offers 6 free counselling sessions per issue.\n\n"
        f"The summary of benefits and coverage is on the intranet.\n\n{name}\nBenefits Team"
    )
    msg = build(g, sender=addr(name, email), to=[f"allstaff@{c.domain}"],
                subject="Benefits Q&A follow-up", text=text,
                headers=outlook_headers(g, "Benefits Q&A follow-up"))  # fmt: skip
    return Sample("benefits-coverage", msg, hard_negative("benefit coverage of sensitive care"))


def h_wellness(g: Gen, i: int) -> Sample:
    """Workplace wellness events: flu shots, blood drives, screenings."""
    c = g.pick(CLINICS)
    day = long_date(g.date(back=0, ahead=30))
    variants = (
        f"The annual staff flu shot clinic is on {day}, 7am-3pm in the cafeteria. Bring your "
        "badge. If you have an egg allergy or had Guillain-Barre syndrome, see employee "
        "health first.",
        f"Blood drive on {day}! Donors must weigh at least 110 lb and feel well. Please eat "
        "iron-rich food beforehand. Sign up at the intranet link.",
        f"Free biometric screening on {day}: blood pressure, cholesterol and glucose. Results "
        "go only to you, never to HR.",
        f"Lunch and learn on {day}: 'Sleep and shift work'. Our sleep medicine team explains "
        "insomnia and sleep apnea and how night shifts affect them.",
    )
    text = f"{variants[i % len(variants)]}\n\nEmployee Health\n{c.name}"
    msg = build(
        g,
        sender=addr("Employee Health", f"employeehealth@{c.domain}"),
        to=[f"allstaff@{c.domain}"],
        subject="Employee wellness event",
        text=text,
    )
    return Sample("wellness-event", msg, hard_negative("staff wellness event"))


def h_pharma(g: Gen, i: int) -> Sample:
    """Pharmaceutical marketing to clinicians: drugs and dosing, no patient."""
    c = g.pick(CLINICS)
    drug, dose = g.pick(MEDICATIONS)
    cond, code = g.pick(CONDITIONS)
    text = (
        f"Dear Healthcare Provider,\n\nNew data presented this month show that {drug} "
        f"({dose}) reduced hospitalisation in adults with {cond} ({code}) by 18% versus "
        "placebo. The most common adverse events were nausea and dizziness.\n\n"
        "Request samples or a lunch presentation for your practice at the link below.\n\n"
        "Important Safety Information: see full prescribing information. Report adverse "
        "events to the FDA at 1-800-FDA-1088.\n\nUnsubscribe: https://pharma-news.example/u"
    )
    msg = build(g, sender=addr("Medical Information", "hcp@pharma-news.example"),
                to=[f"providers@{c.domain}"], subject=f"New outcomes data for {drug}",
                text=text, html=html_page(text.split("\n\n")))  # fmt: skip
    return Sample("pharma-marketing", msg, hard_negative("drug marketing to clinicians"))


def h_aggregate(g: Gen, i: int) -> Sample:
    """Quality reports with aggregate statistics per clinic."""
    c = g.pick(CLINICS)
    rows: list[list[Cell]] = [["Measure", "Numerator", "Denominator", "Rate", "Target"]]
    for m in (
        "Diabetes: A1c > 9% (poor control)",
        "Controlling high blood pressure",
        "Breast cancer screening",
        "Colorectal cancer screening",
        "Depression screening and follow-up",
        "Statin therapy for cardiovascular disease",
    ):
        den = g.rng.randint(120, 2400)
        num = g.rng.randint(den // 5, den)
        rows.append([m, num, den, f"{100 * num / den:.1f}%", g.pick(("75%", "80%", "<15%"))])
    name, email = staff(g, c)
    msg = build(
        g,
        sender=addr(name, email),
        to=[f"qualitycommittee@{c.domain}"],
        subject="HEDIS measures - Q1 dashboard",
        text=f"Attached are the Q1 quality measures for all sites (aggregate, no "
        f"patient-level data).\n\n{name}\nQuality Improvement",
        atts=[
            Att(
                "Q1_quality_measures.xlsx",
                xlsx([("Q1", rows)], g.rng),
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            )
        ],
    )
    return Sample("quality-aggregate", msg, hard_negative("aggregate quality statistics"))


def h_disclaimer(g: Gen, i: int) -> Sample:
    """Business mail from a clinic with the usual PHI confidentiality footer."""
    c = g.pick(CLINICS)
    name, email = staff(g, c)
    bodies = (
        "Thanks for the quick turnaround on the lobby furniture. Thursday delivery works.",
        "Can we move our call to 3pm? I have a conflict with the board meeting.",
        "Attached is the signed W-9 you asked for. Please update the remit address.",
        "The catering order for Friday is 25 sandwiches, 2 salads and coffee for 30.",
        "Please send the revised quote with the multi-year discount applied.",
    )
    text = f"Hi,\n\n{bodies[i % len(bodies)]}\n\n" + signature(name, "Office Manager", c, True)
    msg = build(g, sender=addr(name, email), to=[staff(g, g.pick(VENDORS))[1]],
                subject=g.pick(("Re: delivery", "Re: quote", "Friday", "Re: call")),
                text=text, headers=outlook_headers(g, "Re"))  # fmt: skip
    return Sample("phi-disclaimer-footer", msg, hard_negative("PHI/HIPAA disclaimer footer"))


# --- PHI -----------------------------------------------------------------------------

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def pronoun(p: Person) -> str:
    """He or She."""
    return "She" if p.sex == "F" else "He"


def sex_word(p: Person) -> str:
    """woman or man."""
    return "woman" if p.sex == "F" else "man"


def p_reminder(g: Gen, i: int) -> Sample:
    """Appointment reminders that name the patient and the care."""
    c = g.pick(CLINICS)
    p = g.person()
    doc = g.clinician()
    day = g.date(back=0, ahead=20)
    proc = g.pick(PROCEDURES)
    style = i % 3
    if style == 0:
        text = (
            f"APPOINTMENT REMINDER\n\nPatient: {p.name}\nDOB: {p.dob_us}\nMRN: {p.mrn}\n"
            f"Appointment: {proc}\nProvider: {doc.title}\nDate/time: {long_date(day)} at "
            f"{g.rng.randint(7, 15)}:{g.pick(('00', '15', '30', '45'))}\n\n"
            "Preparation: nothing to eat after midnight; take your usual morning medications "
            "with a sip of water except metformin.\n\n"
            f"To reschedule call {c.phone}."
        )
        html = None
    elif style == 1:
        drug, dose = g.pick(MEDICATIONS)
        text = (
            f"Dear {'Ms.' if p.sex == 'F' else 'Mr.'} {p.last},\n\n"
            f"This confirms your {proc} with {doc.title} on {long_date(day)}. "
            f"Please bring your current medication list (including {drug} {dose}) and your "
            f"insurance card (member ID {p.member_id}).\n\nSincerely,\n{c.name} Scheduling"
        )
        html = html_page(text.split("\n\n"))
    else:
        cond = g.pick(CONDITIONS)[0]
        text = (
            f"Hi {p.first},\n\nYour follow-up visit for {cond} is on {long_date(day)}. "
            f"Please have your fasting labs drawn 3 days before (lipid panel, A1c).\n\n"
            f"Patient: {p.name}, DOB {p.dob_us}\n\n{c.name}"
        )
        html = None
    msg = build(
        g,
        sender=addr(f"{c.name}", f"reminders@{c.domain}"),
        to=[p.email],
        subject=f"Appointment reminder from {c.name}",
        text=text,
        html=html,
    )
    return Sample("appointment-reminder-phi", msg, phi("appointment reminder naming patient+care"))


def referral_letter(g: Gen, p: Person, doc: Clinician, to_doc: Clinician, c: Org) -> list[str]:
    """Paragraphs of a referral letter."""
    cond, code = g.pick(CONDITIONS)
    drugs = g.rng.sample(MEDICATIONS, 3)
    labs = g.lab_rows(2)
    return [
        f"Dear Dr. {to_doc.name.split()[-1]},",
        f"Re: {p.name}   DOB: {p.dob_us}   MRN: {p.mrn}",
        f"Thank you for seeing {p.first}, a {p.age()}-year-old {sex_word(p)} with {cond} "
        f"({code}), for further evaluation and management. {pronoun(p)} reports worsening "
        "symptoms over the past three months despite medication adherence.",
        "Current medications: " + "; ".join(f"{d} {s}" for d, s in drugs) + ".",
        "Recent results: " + "; ".join(f"{n} {v} {u} (ref {r})" for n, v, u, r, _ in labs) + ".",
        f"Insurance: {PLAN.name}, member ID {p.member_id}. Phone: {p.phone}.",
        f"Sincerely,\n{doc.title}\n{c.name}\nNPI {doc.npi}",
    ]


def p_referral(g: Gen, i: int) -> Sample:
    """Referral letters, in the body or as a DOCX."""
    c = g.pick(CLINICS)
    p, doc, to_doc = g.person(), g.clinician(), g.clinician()
    paras = referral_letter(g, p, doc, to_doc, c)
    to_org = g.pick([o for o in CLINICS if o != c])
    if i % 2 == 0:
        text = "\n\n".join(paras)
        atts: list[Att] = []
    else:
        text = (
            f"Dr. {to_doc.name.split()[-1]},\n\nPlease find the referral letter attached. "
            f"Records will follow by fax.\n\n{doc.title}"
        )
        atts = [Att("referral_letter.docx", docx(Doc("Referral", paras), g.rng), DOCX_TYPE)]
    msg = build(
        g,
        sender=addr(doc.name, mailbox(doc.name, c.domain)),
        to=[mailbox(to_doc.name, to_org.domain)],
        subject="Referral",
        text=text,
        atts=atts,
        headers=outlook_headers(g, "Referral", bool(atts)),
    )
    where = "DOCX" if atts else "body"
    return Sample("referral-letter", msg, phi(f"referral letter ({where})"))


def discharge_lines(g: Gen, p: Person, doc: Clinician) -> list[list[str]]:
    """Two pages of a hospital discharge summary."""
    cond, code = g.pick(CONDITIONS)
    cond2, code2 = g.pick(CONDITIONS)
    adm = g.date(back=30)
    dis = adm + dt.timedelta(days=g.rng.randint(2, 9))
    meds = g.rng.sample(MEDICATIONS, 4)
    labs = g.lab_rows(3)
    page1 = [
        "# Cedar Valley Hospital - Discharge Summary",
        f"Patient: {p.last.upper()}, {p.first.upper()}     MRN: {p.mrn}",
        f"DOB: {p.dob_us}   Sex: {p.sex}   Admitted: {us(adm)}   Discharged: {us(dis)}",
        f"Attending: {doc.title}",
        "",
        f"Principal diagnosis: {cond} ({code})",
        f"Secondary diagnoses: {cond2} ({code2})",
        "",
        "Hospital course:",
        f"{p.first} was admitted through the emergency department with shortness of breath",
        "and fatigue. Treated with IV fluids and antibiotics; symptoms improved by day 3.",
        "Discharge labs: " + ", ".join(f"{n} {v} {u}" for n, v, u, _, _ in labs),
    ]
    page2 = [
        "Discharge medications:",
        *(f"  - {d} {s}" for d, s in meds),
        "",
        f"Follow-up: primary care within 7 days; {g.pick(PROCEDURES)} in 4 weeks.",
        "Condition at discharge: stable. Diet: cardiac. Activity: as tolerated.",
        f"Electronically signed by {doc.title} on {us(dis)}",
    ]
    return [page1, page2]


def p_discharge(g: Gen, i: int) -> Sample:
    """Discharge summaries as PDF attachments."""
    h = CLINICS[2]
    p, doc = g.person(), g.clinician()
    pcp = g.pick([o for o in CLINICS if o != h])
    data = pdf(discharge_lines(g, p, doc), g.rng, title="Discharge Summary", kerned=i % 2 == 1)
    text = (
        "Attached is the discharge summary for your patient who was discharged yesterday. "
        "Please schedule a transition-of-care visit within 7 days.\n\n"
        + signature("Care Transitions Team", "Case Management", h, True)
    )
    msg = build(
        g,
        sender=addr("Care Transitions", f"caretransitions@{h.domain}"),
        to=[f"referrals@{pcp.domain}"],
        subject="Discharge summary - action needed",
        text=text,
        atts=[Att("discharge_summary.pdf", data, "application/pdf")],
    )
    kind = "kerned TJ text" if i % 2 else "plain text layer"
    return Sample("discharge-summary-pdf", msg, phi(f"discharge summary PDF ({kind})"))


def p_claim(g: Gen, i: int) -> Sample:
    """Billing claims and denials with member ids, service dates, CPT and ICD codes."""
    p = g.person()
    c = g.pick(CLINICS)
    code, desc = g.pick(CPT)
    cond, icd = g.pick(CONDITIONS)
    claim = g.digits(13)
    dos = us(g.date())
    rows: list[list[Cell]] = [
        ["Claim #", "Patient", "DOB", "Member ID", "DOS", "CPT", "ICD-10", "Billed", "Status"],
        [claim, p.name, p.dob_us, p.member_id, dos, code, icd, g.money(90, 1900),
         g.pick(("Denied CO-16", "Denied CO-197", "Pending", "Paid"))],
    ]  # fmt: skip
    name, email = staff(g, BILLING)
    if i % 2 == 0:
        text = (
            f"Hi,\n\nClaim {claim} for {p.name} (DOB {p.dob_us}, member ID {p.member_id}) "
            f"was denied for missing prior authorization. Date of service {dos}, CPT {code} "
            f"({desc}), diagnosis {icd} {cond}. Can you send the auth number so we can "
            f"resubmit?\n\n{name}\n{BILLING.name}"
        )
        atts: list[Att] = []
    else:
        text = f"Attached is the denial worklist for {c.name}.\n\n{name}\n{BILLING.name}"
        atts = [Att("denials.csv", csv_bytes(rows).decode(), "text/csv")]
    msg = build(g, sender=addr(name, email), to=[f"billing@{c.domain}"],
                subject=f"Claim {claim} denied" if not atts else "Denial worklist",
                text=text, atts=atts)  # fmt: skip
    return Sample("billing-claim", msg, phi("claim with member id, CPT and ICD-10"))


def p_eob(g: Gen, i: int) -> Sample:
    """Explanation of benefits from the health plan (PDF)."""
    p = g.person()
    c = g.pick(CLINICS)
    code, desc = g.pick(CPT)
    billed = g.rng.uniform(200, 3000)
    allowed = billed * g.rng.uniform(0.3, 0.7)
    lines = [
        "# Explanation of Benefits - THIS IS NOT A BILL",
        f"Member: {p.name}    Member ID: {p.member_id}",
        f"Date of birth: {p.dob_us}",
        f"Claim number: {g.digits(12)}    Provider: {c.name}",
        f"Date of service: {us(g.date())}",
        f"Service: {desc} (CPT {code})",
        f"Billed: ${billed:,.2f}   Allowed: ${allowed:,.2f}   Plan paid: ${allowed * 0.8:,.2f}",
        f"Your responsibility (coinsurance): ${allowed * 0.2:,.2f}",
    ]
    msg = build(
        g,
        sender=addr(PLAN.name, f"eob@{PLAN.domain}"),
        to=[p.email],
        subject="Your Explanation of Benefits is ready",
        text=f"Dear {p.first},\n\nYour Explanation of Benefits is attached.\n\n"
        f"{PLAN.name} Member Services\n{PLAN.phone}",
        atts=[Att("EOB.pdf", pdf([lines], g.rng, title="EOB"), "application/pdf")],
    )
    return Sample("eob-pdf", msg, phi("explanation of benefits PDF"))


def lab_report_lines(g: Gen, p: Person, doc: Clinician) -> list[str]:
    """A lab report."""
    rows = g.lab_rows(g.rng.randint(4, 7))
    return [
        f"# {LAB.name} - Final Report",
        f"Patient: {p.name}   DOB: {p.dob_us}   Sex: {p.sex}",
        f"MRN: {p.mrn}   Accession: {g.digits(3)}-{g.digits(5)}",
        f"Ordering provider: {doc.title}   Collected: {us(g.date())} 07:42",
        "",
        f"{'Test':28}{'Result':>10} {'Flag':5}{'Units':16}Reference",
        *(f"{n:28}{v:>10} {f:5}{u:16}{r}" for n, v, u, r, f in rows),
    ]


def p_lab(g: Gen, i: int) -> Sample:
    """Lab results with values, units and patient identifiers."""
    p, doc = g.person(), g.clinician()
    c = g.pick(CLINICS)
    lines = lab_report_lines(g, p, doc)
    fmt = i % 3
    if fmt == 0:
        text = "\n".join(lines) + f"\n\nResults released to {doc.title}.\n{LAB.name}"
        atts: list[Att] = []
    elif fmt == 1:
        text = f"Final results attached for {doc.title}.\n\n{LAB.name} Client Services"
        # Lab systems name files after the patient: the name must never reach a decision.
        name = f"{p.last}_{p.first}_MRN{p.mrn}_results_{g.digits(6)}.pdf"
        atts = [Att(name, pdf([lines], g.rng, title="Lab report"), "application/pdf")]
    else:
        rows: list[list[Cell]] = [["Patient", "DOB", "MRN", "Test", "Result", "Units", "Flag"]]
        for n, v, u, _, f in g.lab_rows(4):
            rows.append([p.name, p.dob_us, p.mrn, n, v, u, f])
        text = "Results export attached (CSV)."
        atts = [Att("results.csv", csv_bytes(rows).decode(), "text/csv")]
    msg = build(g, sender=addr(LAB.name, f"results@{LAB.domain}"),
                to=[mailbox(doc.name, c.domain)], subject="Lab results available",
                text=text, atts=atts)  # fmt: skip
    return Sample("lab-results", msg, phi("lab results with values and patient identifiers"))


def p_plan(g: Gen, i: int) -> Sample:
    """Health plan member correspondence and prior authorizations."""
    p = g.person()
    doc = g.clinician()
    code, desc = g.pick(CPT)
    cond, icd = g.pick(CONDITIONS)
    pa = f"PA-{g.digits(8)}"
    decision = g.pick(("approved", "denied", "pended for additional information"))
    if i % 2 == 0:
        text = (
            f"Prior authorization {pa}\n\nMember: {p.name}\nMember ID: {p.member_id}\n"
            f"DOB: {p.dob_us}\nRequesting provider: {doc.title} (NPI {doc.npi})\n"
            f"Requested service: {desc} (CPT {code})\nDiagnosis: {icd} - {cond}\n"
            f"Decision: {decision}\n\nIf denied, the member or provider may appeal within 60 "
            f"days.\n\n{PLAN.name} Utilization Management"
        )
        to = [f"priorauth@{g.pick(CLINICS).domain}"]
    else:
        text = (
            f"Dear {p.first} {p.last},\n\nWe reviewed the request from {doc.title} for "
            f"{desc.lower()} related to your {cond}. The request was {decision}.\n\n"
            f"Your member ID is {p.member_id}. Call member services at {PLAN.phone} with "
            f"questions.\n\n{PLAN.name}"
        )
        to = [p.email]
    msg = build(g, sender=addr(PLAN.name, f"um@{PLAN.domain}"), to=to,
                subject=f"Prior authorization {pa}", text=text)  # fmt: skip
    return Sample("health-plan-prior-auth", msg, phi("health plan prior authorization"))


def p_attach_only(g: Gen, i: int) -> Sample:
    """PHI only in an attachment; the body says nothing identifying."""
    c = g.pick(CLINICS)
    p, doc = g.person(), g.clinician()
    paras = referral_letter(g, p, doc, g.clinician(), c)
    fmt = i % 5
    if fmt == 0:
        att = Att("scan0042.pdf", pdf([paras], g.rng, title="Letter"), "application/pdf")
    elif fmt == 1:
        att = Att("letter.docx", docx(Doc("Consultation", paras), g.rng), DOCX_TYPE)
    elif fmt == 2:
        rows: list[list[Cell]] = [["Name", "DOB", "MRN", "Diagnosis", "Medication"]]
        cond, code = g.pick(CONDITIONS)
        drug, dose = g.pick(MEDICATIONS)
        rows.append([p.name, p.dob, p.mrn, f"{cond} ({code})", f"{drug} {dose}"])
        att = Att("followup.xlsx", xlsx([("Sheet1", rows)], g.rng), XLSX_TYPE)
    elif fmt == 3:
        att = Att("note.rtf", rtf("Clinic note", paras), "application/rtf")
    else:
        att = Att("summary.html", html_page(paras), "text/html")
    name, email = staff(g, c)
    msg = build(g, sender=addr(name, email), to=[staff(g, g.pick(CLINICS))[1]],
                subject=g.pick(("Documents", "As requested", "FYI", "Scan")),
                text=g.pick(("Please see attached.", "Here you go.", "See attachment, thanks.")),
                atts=[att])  # fmt: skip
    return Sample(
        "phi-attachment-only", msg, phi(f"PHI only in attachment ({att.filename})", "hard_positive")
    )


def p_subject(g: Gen, i: int) -> Sample:
    """PHI in the subject line."""
    c = g.pick(CLINICS)
    p, doc = g.person(), g.clinician()
    cond, code = g.pick(CONDITIONS)
    subjects = (
        f"{p.name} DOB {p.dob_us} - MRI results",
        f"Lab results for {p.last}, {p.first} (MRN {p.mrn})",
        f"RE: pt {p.name} - A1c 9.4, needs insulin start",
        f"{p.name} {p.dob_us} {cond}",
    )
    if i % 4 == 2:  # the subject speaks of an A1c: the body's diagnosis should match
        code = "E11.65"
    text = (
        f"Hi,\n\nCan you look at this one before clinic tomorrow? {g.pick(('Results', 'Note'))}"
        f" uploaded to the chart. Diagnosis {code}.\n\nThanks,\n{doc.title}"
    )
    msg = build(
        g,
        sender=addr(doc.name, mailbox(doc.name, c.domain)),
        to=[mailbox(g.clinician().name, c.domain)],
        subject=subjects[i % 4],
        text=text,
    )
    return Sample("phi-in-subject", msg, phi("patient identifiers in the subject", "hard_positive"))


def p_split(g: Gen, i: int) -> Sample:
    """Identifiers broken across lines by hard wrapping."""
    c = g.pick(CLINICS)
    p = g.person()
    cond, code = g.pick(CONDITIONS)
    ssn = p.ssn
    variants = (
        f"Per our call, the patient {p.name} needs the pre-authorization resubmitted. SSN "
        f"{ssn[:7]}\n{ssn[7:]}, diagnosis {cond} ({code}), surgery planned for next month.",
        f"Patient name: {p.first}\n{p.last}\nDate of birth:\n{p.dob_us}\nMRN:\n{p.mrn}\n"
        f"Diagnosis:\n{cond}",
        f"Member {p.name}, social security number {ssn[:4]}\n{ssn[4:]}, was admitted on "
        f"{us(g.date())} for {cond}. Please update the eligibility file.",
    )
    name, email = staff(g, c)
    msg = build(
        g,
        sender=addr(name, email),
        to=[f"billing@{BILLING.domain}"],
        subject="Pre-auth follow up",
        text=variants[i % 3] + f"\n\n{name}",
    )
    return Sample(
        "identifiers-split-lines", msg, phi("identifiers split across lines", "hard_positive")
    )


def p_zero_width(g: Gen, i: int) -> Sample:
    """Zero-width and soft-hyphen characters inside identifiers."""
    c = g.pick(CLINICS)
    p = g.person()
    cond, code = g.pick(CONDITIONS)
    zw = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")
    ssn = "".join(ch + (g.pick(zw) if g.chance(0.5) else "") for ch in p.ssn)
    name = p.first + " " + p.last[:2] + "\u00ad" + p.last[2:]
    text = (
        f"Patient: {name}\nSSN: {ssn}\nDOB: {p.dob_us}\nDiagnosis: {cond} ({code})\n"
        f"Plan: continue current medications, recheck in 3 months."
    )
    msg = build(g, sender=addr("Front Desk", f"frontdesk@{c.domain}"),
                to=[f"intake@{BILLING.domain}"], subject="New patient registration",
                text=text, cte="quoted-printable" if i % 2 else "base64")  # fmt: skip
    return Sample(
        "zero-width-ssn", msg, phi("zero-width characters inside the SSN", "hard_positive")
    )


def p_hidden_html(g: Gen, i: int) -> Sample:
    """PHI in HTML text that a mail client does not show."""
    c = g.pick(CLINICS)
    p = g.person()
    cond, code = g.pick(CONDITIONS)
    styles = ("display:none", "font-size:0px;line-height:0", "color:#ffffff;background:#ffffff")
    hidden = (
        f'<div style="{styles[i % 3]}">Patient {p.name} DOB {p.dob_us} MRN {p.mrn} - '
        f"{cond} ({code}), started {g.pick(MEDICATIONS)[0]}.</div>"
    )
    html = html_page(["Hi,", "Schedule for tomorrow is updated in the shared calendar.",
                      "Thanks!"], extra=hidden)  # fmt: skip
    name, email = staff(g, c)
    msg = build(g, sender=addr(name, email), to=[staff(g, c)[1]], subject="Tomorrow",
                text="Hi,\n\nSchedule for tomorrow is updated in the shared calendar.\n\nThanks!",
                html=html)  # fmt: skip
    return Sample("hidden-html-phi", msg, phi("PHI in hidden HTML text", "hard_positive"))


def patient_rows(g: Gen, n: int, health: bool) -> list[list[Cell]]:
    """A patient list (bulk)."""
    head: list[Cell] = ["Last name", "First name", "DOB", "MRN", "Phone"]
    if health:
        head += ["Diagnosis", "Next appointment"]
    rows = [head]
    for _ in range(n):
        p = g.person()
        row: list[Cell] = [p.last, p.first, p.dob, p.mrn, p.phone]
        if health:
            code = g.pick(CONDITIONS)[1]
            row += [code, us(g.date(back=0, ahead=30))]
        rows.append(row)
    return rows


def p_bulk(g: Gen, i: int) -> Sample:
    """Spreadsheets and exports listing many patients."""
    c = g.pick(CLINICS)
    name, email = staff(g, c)
    rows = patient_rows(g, g.rng.randint(12, 40), health=i % 2 == 0)
    if i < 2:
        att = Att("patient_list.xlsx", xlsx([("Patients", rows)], g.rng), XLSX_TYPE)
    else:
        att = Att("recall_export.csv", csv_bytes(rows).decode(), "text/csv")
    msg = build(
        g,
        sender=addr(name, email),
        to=[f"outreach@{g.pick(VENDORS).domain}"],
        subject=g.pick(("Recall list", "Patient list for outreach", "Export")),
        text="List attached for this month's recall calls.\n\n" + name,
        atts=[att],
    )
    what = "with diagnoses" if i % 2 == 0 else "identifiers only"
    return Sample(
        "bulk-patient-list",
        msg,
        phi(f"spreadsheet of patients, {what} ({att.filename})", "hard_positive"),
    )


def p_nested_zip(g: Gen, i: int) -> Sample:
    """Patient data two archives deep."""
    c = g.pick(CLINICS)
    rows = patient_rows(g, 8, health=True)
    inner = zip_bytes([("export/patients.csv", csv_bytes(rows))], g.rng)
    outer = zip_bytes([("README.txt", b"Monthly export, see inner archive."),
                       ("2024-03/export.zip", inner)], g.rng)  # fmt: skip
    name, email = staff(g, c)
    msg = build(
        g,
        sender=addr(name, email),
        to=[f"data@{BILLING.domain}"],
        subject="March export",
        text="Export attached.",
        atts=[Att("march.zip", outer, "application/zip")],
    )
    return Sample("nested-zip-phi", msg, phi("patients CSV in a zip in a zip", "hard_positive"))


def p_forward(g: Gen, i: int) -> Sample:
    """A referral forwarded as an attached message."""
    inner = p_referral(g, 0).message
    c = g.pick(CLINICS)
    name, email = staff(g, c)
    msg = build(
        g,
        sender=addr(name, email),
        to=[staff(g, c)[1]],
        subject="FW: Referral",
        text="Can you get this patient scheduled?",
        atts=[Att("Referral.eml", inner)],
    )
    return Sample("forwarded-referral", msg, phi("PHI inside a forwarded .eml", "hard_positive"))


def p_charset(g: Gen, i: int) -> Sample:
    """Latin-1 / windows-1252 bodies with accented names."""
    c = g.pick(CLINICS)
    first, last = g.pick((("José", "Núñez"), ("Zoë", "Brontë"), ("André", "Müller")))
    p = g.person()
    cond, code = g.pick(CONDITIONS)
    text = (
        f"Patient: {first} {last}\nFecha de nacimiento / DOB: {p.dob_us}\nMRN: {p.mrn}\n"
        f"Diagnóstico: {cond} ({code})\nMedicación: {g.pick(MEDICATIONS)[0]}\n\n"
        "Por favor llame al paciente para programar la cita de seguimiento."
    )
    msg = build(g, sender=addr("Clínica", f"clinica@{c.domain}"), to=[f"intake@{c.domain}"],
                subject="Seguimiento", text=text,
                charset="iso-8859-1" if i == 0 else "windows-1252",
                cte="quoted-printable" if i == 0 else "base64")  # fmt: skip
    return Sample("latin1-body-phi", msg, phi("latin-1/cp1252 body", "hard_positive"))


def p_ics(g: Gen, i: int) -> Sample:
    """Surgery scheduling invites with patient details in the description."""
    c = CLINICS[3]
    p = g.person()
    proc = g.pick(SURGERIES)
    doc = g.clinician()
    day = g.date(back=0, ahead=14)
    start = dt.datetime(day.year, day.month, day.day, 7, 30)
    desc = (
        f"Pre-op huddle for {p.name} (MRN {p.mrn}, DOB {p.dob_us}). Procedure: {proc}. "
        f"Allergies: penicillin. Anticoagulation held since Monday."
    )
    organizer = mailbox(doc.name, c.domain)
    cal = ics(g, "Pre-op huddle", start, 15, organizer, [f"or-team@{c.domain}"], "OR 3", desc)
    msg = build(
        g,
        sender=addr(doc.name, organizer),
        to=[f"or-team@{c.domain}"],
        subject="Pre-op huddle",
        text=desc,
        calendar=cal,
    )
    return Sample("surgery-invite-ics", msg, phi("patient details in a meeting invite"))


def p_medicare(g: Gen, i: int) -> Sample:
    """Medicare beneficiary identifier with a diagnosis."""
    c = g.pick(CLINICS)
    p = g.person()
    cond, code = g.pick(CONDITIONS)
    text = (
        f"DME order for Medicare beneficiary {p.name}, MBI {p.mbi}, DOB {p.dob_us}.\n"
        f"Item: home oxygen concentrator, 2 L/min continuous. Qualifying diagnosis: {cond} "
        f"({code}). SpO2 on room air 86%.\n\nPlease confirm delivery date with the patient "
        f"at {p.phone}."
    )
    name, email = staff(g, c)
    msg = build(
        g,
        sender=addr(name, email),
        to=[f"orders@{VENDORS[2].domain}"],
        subject="DME order",
        text=text,
    )
    return Sample("medicare-mbi", msg, phi("Medicare MBI with diagnosis"))


# --- sensitive ---------------------------------------------------------------------------


def sensitive_sample(g: Gen, i: int, category: str) -> Sample:
    """A note about a sensitive condition for an identified patient."""
    cond, code, treatment, detail = g.pick(SENSITIVE[category])
    p, doc = g.person(), g.clinician()
    org = {"substance-use": RECOVERY, "mental-health": BEHAVIORAL}.get(category, g.pick(CLINICS))
    paras = [
        f"Patient: {p.name}    DOB: {p.dob_us}    MRN: {p.mrn}",
        f"Assessment: {cond} ({code}).",
        detail,
        f"Plan: {treatment}. Follow up in {g.pick(('1', '2', '4'))} weeks.",
        f"{doc.title}",
    ]
    if category == "substance-use":
        paras.append(
            "This information has been disclosed to you from records protected by federal "
            "confidentiality rules (42 CFR part 2)."
        )
    fmt = i % 3
    atts: list[Att] = []
    if fmt == 0:
        text = "\n\n".join(paras)
    elif fmt == 1:
        text = "Progress note attached, as discussed.\n\n" + doc.title
        atts = [Att("progress_note.pdf", pdf([paras], g.rng, title="Progress note"),
                    "application/pdf")]  # fmt: skip
    else:
        text = "Please see the attached letter for the coordination of care.\n\n" + doc.title
        atts = [Att("care_coordination.docx", docx(Doc("Care coordination", paras), g.rng),
                    DOCX_TYPE)]  # fmt: skip
    msg = build(g, sender=addr(doc.name, mailbox(doc.name, org.domain)),
                to=[mailbox(g.clinician().name, g.pick(CLINICS).domain)],
                subject=g.pick(("Care coordination", "Follow-up", "Consult note")), text=text,
                atts=atts)  # fmt: skip
    where = ("body", "PDF", "DOCX")[fmt]
    return Sample(
        f"sensitive-{category}", msg, Label(True, "sensitive", "sensitive", f"{category} ({where})")
    )


def s_sud(g: Gen, i: int) -> Sample:
    """Substance use treatment (42 CFR Part 2)."""
    return sensitive_sample(g, i, "substance-use")


def s_hiv(g: Gen, i: int) -> Sample:
    """HIV care."""
    return sensitive_sample(g, i, "hiv")


def s_mental(g: Gen, i: int) -> Sample:
    """Mental health."""
    return sensitive_sample(g, i, "mental-health")


def s_genetic(g: Gen, i: int) -> Sample:
    """Genetic testing."""
    return sensitive_sample(g, i, "genetic")


def s_repro(g: Gen, i: int) -> Sample:
    """Reproductive health."""
    return sensitive_sample(g, i, "reproductive")


# --- PII (identifiers without health information) --------------------------------------


def i_benefits(g: Gen, i: int) -> Sample:
    """Benefits enrolment with SSNs of the employee and dependants."""
    c = g.pick(CLINICS)
    e = g.person()
    deps = [g.person() for _ in range(g.rng.randint(0, 2))]
    lines = [
        f"Employee: {e.name}   SSN: {e.ssn}   Date of birth: {e.dob_us}",
        f"Address: {e.street}, {e.city}",
        "Coverage tier: " + ("Employee + family" if deps else "Employee only"),
        "Plans: Medical PPO 1500, Dental Basic, Vision",
    ] + [f"Dependent: {d.first} {e.last}, SSN {d.ssn}, DOB {d.dob_us}" for d in deps]
    fmt = i % 3
    name, email = staff(g, c)
    atts: list[Att] = []
    if fmt == 0:
        text = "Benefits enrolment change:\n\n" + "\n".join(lines) + f"\n\n{name}\nHR"
    elif fmt == 1:
        text = f"Enrolment form attached for {e.first}.\n\n{name}\nHR"
        atts = [Att("enrollment.pdf", pdf([["# Benefits Enrollment Form", *lines]], g.rng),
                    "application/pdf")]  # fmt: skip
    else:
        rows: list[list[Cell]] = [["Name", "SSN", "DOB", "Relationship"]]
        rows.append([e.name, e.ssn, e.dob, "Employee"])
        rows += [[f"{d.first} {e.last}", d.ssn, d.dob, "Dependent"] for d in deps]
        text = f"Enrolment spreadsheet attached.\n\n{name}\nHR"
        atts = [Att("enrollment.xlsx", xlsx([("Enrollment", rows)], g.rng), XLSX_TYPE)]
    msg = build(
        g,
        sender=addr(name, email),
        to=[f"enrollment@{PLAN.domain}"],
        subject="Benefits enrolment",
        text=text,
        atts=atts,
    )
    return Sample(
        "benefits-enrolment-ssn",
        msg,
        Label(True, "pii", "pii", "benefits enrolment with SSNs, no health data"),
    )


def i_payroll(g: Gen, i: int) -> Sample:
    """Payroll corrections and new-hire paperwork with an SSN."""
    c = g.pick((*CLINICS, *VENDORS))
    e = g.person()
    name, email = staff(g, c)
    variants = (
        f"Please correct the W-2 for {e.name}: SSN on file should be {e.ssn}, not the "
        f"number printed. Box 1 wages {g.money(30000, 90000)}.",
        f"New hire: {e.name}, start date {us(g.date(back=0, ahead=14))}, SSN {e.ssn}, DOB "
        f"{e.dob_us}, address {e.street}, {e.city}. I-9 documents verified.",
        f"Direct deposit change for {e.name} (SSN ending {e.ssn[-4:]}, full SSN {e.ssn}): "
        f"routing 0{g.digits(8)}, account {g.digits(9)}.",
        f"Garnishment order received for employee {e.name}, Social Security No. "
        f"{e.ssn.replace('-', '')}. Please withhold 15% from the next pay period.",
    )
    msg = build(g, sender=addr(name, email), to=[f"payroll@{c.domain}"],
                subject=g.pick(("Payroll correction", "New hire paperwork", "Payroll change")),
                text=variants[i % 4] + f"\n\n{name}")  # fmt: skip
    return Sample("payroll-ssn", msg, Label(True, "pii", "pii", "payroll/HR mail with an SSN"))


def i_bulk(g: Gen, i: int) -> Sample:
    """A payroll roster with many SSNs."""
    c = g.pick(CLINICS)
    rows: list[list[Cell]] = [["Employee", "SSN", "Department", "Hourly rate"]]
    for _ in range(g.rng.randint(8, 15)):
        e = g.person()
        rows.append([e.name, e.ssn, g.pick(("Billing", "Nursing", "IT", "Front desk")),
                     g.money(18, 60)])  # fmt: skip
    name, email = staff(g, c)
    msg = build(
        g,
        sender=addr(name, email),
        to=[f"payroll@{VENDORS[3].domain}"],
        subject="Roster for payroll migration",
        text="Roster attached.",
        atts=[Att("roster.csv", csv_bytes(rows).decode(), "text/csv")],
    )
    return Sample(
        "payroll-roster-ssns",
        msg,
        Label(True, "phi", "pii", "many SSNs: bulk identifiers count as phi"),
    )


# --- unscannable and labelled ------------------------------------------------------------


def u_encrypted_zip(g: Gen, i: int) -> Sample:
    """Password-protected zip (password sent separately)."""
    c = g.pick(CLINICS)
    rows = patient_rows(g, 10, health=True)
    data = zip_bytes(
        [("patients.xlsx", xlsx([("Sheet1", rows)], g.rng)), ("notes.txt", b"see sheet")],
        g.rng,
        password=f"Spring{g.digits(4)}!",
    )
    name, email = staff(g, c)
    msg = build(
        g,
        sender=addr(name, email),
        to=[staff(g, g.pick(CLINICS))[1]],
        subject="Files",
        text="Files attached; the password follows in a separate e-mail.\n\n" + name,
        atts=[Att("records.zip", data, "application/zip")],
    )
    return Sample(
        "encrypted-zip", msg, Label(True, "none", "unscannable", "password-protected zip")
    )


def u_encrypted_pdf(g: Gen, i: int) -> Sample:
    """Password-protected PDF."""
    c = g.pick(CLINICS)
    p, doc = g.person(), g.clinician()
    data = pdf(discharge_lines(g, p, doc), g.rng, title="Summary", password=f"{p.dob:%m%d%Y}")
    name, email = staff(g, c)
    msg = build(
        g,
        sender=addr(name, email),
        to=[p.email],
        subject="Your documents",
        text="The attached PDF is protected. The password is your date of birth (MMDDYYYY).",
        atts=[Att("documents.pdf", data, "application/pdf")],
    )
    return Sample(
        "encrypted-pdf", msg, Label(True, "none", "unscannable", "password-protected PDF")
    )


def u_scanned_fax(g: Gen, i: int) -> Sample:
    """A fax server's delivery: an image-only PDF."""
    c = g.pick(CLINICS)
    pages = g.rng.randint(1, 4)
    data = pdf([[] for _ in range(pages)], g.rng, title="Fax", image_only=True,
               producer="RightFax 16.6")  # fmt: skip
    sender = g.pick((*CLINICS, LAB)).fax or "(217) 555-0100"
    text = (
        f"You have received a {pages} page fax from {sender}.\nReceived: "
        f"{us(g.date())} {g.rng.randint(7, 18)}:{g.rng.randint(10, 59)}\nFax line: {c.fax}"
    )
    msg = build(g, sender=addr("Fax Server", f"fax@{c.domain}"), to=[f"medicalrecords@{c.domain}"],
                subject=f"Fax received from {sender}", text=text,
                atts=[Att(f"fax_{g.digits(6)}.pdf", data, "application/pdf")])  # fmt: skip
    return Sample(
        "scanned-fax", msg, Label(True, "none", "unscannable", "image-only PDF (scanned fax)")
    )


def l_confidential(g: Gen, i: int) -> Sample:
    """Business mail labelled confidential by the sender (Outlook / Purview)."""
    c = g.pick(CLINICS)
    name, email = staff(g, c)
    if i % 2 == 0:
        label = MSIP_GENERAL.replace("Name=General", "Name=Confidential")
        headers = [("msip_labels", label)]
        note = "Purview label Confidential"
    else:
        headers = [("Sensitivity", "Company-Confidential")]
        note = "Outlook sensitivity Company-Confidential"
    text = (
        "Board members,\n\nAttached are the draft minutes and the term sheet for the proposed "
        f"affiliation with {g.pick(VENDORS).name}. Please do not forward.\n\n{name}"
    )
    msg = build(
        g,
        sender=addr(name, email),
        to=[f"board@{c.domain}"],
        subject="Board materials",
        text=text,
        headers=headers,
    )
    return Sample("labelled-confidential", msg, Label(True, "none", "labelled", note))


# --- the corpus ----------------------------------------------------------------------------

SCENARIOS: tuple[tuple[ScenarioFn, int], ...] = (
    # ordinary: 132
    (o_marketing, 12), (o_invoice, 10), (o_shipping, 10), (o_newsletter, 8), (o_it_notice, 12),
    (o_meeting, 10), (o_hr, 8), (o_business, 10), (o_finance, 8), (o_clinic_ops, 12),
    (o_event, 6), (o_support, 8), (o_inventory_csv, 5), (o_travel, 5), (o_rtf_memo, 4),
    (o_zip_assets, 4), (o_forward, 4),
    # hard negatives: 74
    (h_po_ssn, 6), (h_luhn_orders, 6), (h_blank_form, 8), (h_provider_directory, 8),
    (h_health_newsletter, 8), (h_sample_ssn, 4), (h_icd_like, 6), (h_protocol, 5),
    (h_benefits_info, 4), (h_wellness, 4), (h_pharma, 4), (h_aggregate, 4), (h_disclaimer, 5),
    # phi: 80
    (p_reminder, 6), (p_referral, 6), (p_discharge, 6), (p_claim, 6), (p_eob, 4), (p_lab, 6),
    (p_plan, 6), (p_attach_only, 5), (p_subject, 4), (p_split, 3), (p_zero_width, 3),
    (p_hidden_html, 3), (p_bulk, 4), (p_nested_zip, 2), (p_forward, 2), (p_charset, 2),
    (p_ics, 2), (p_medicare, 2),
    # sensitive: 30
    (s_sud, 6), (s_hiv, 6), (s_mental, 6), (s_genetic, 6), (s_repro, 6),
    # pii: 18
    (i_benefits, 9), (i_payroll, 7), (i_bulk, 2),
    # unscannable and labelled: 14
    (u_encrypted_zip, 4), (u_encrypted_pdf, 4), (u_scanned_fax, 3), (l_confidential, 3),
)  # fmt: skip


def generate(seed: int) -> list[tuple[str, bytes, Label]]:
    """Every (file name, message bytes, label) of the corpus."""
    g = Gen(seed)
    out = []
    n = 0
    for fn, count in SCENARIOS:
        for i in range(count):
            n += 1
            sample = fn(g, i)
            finalise(g, sample.message)
            crlf = g.chance(0.75)
            data = serialise(Sample(sample.slug, sample.message, sample.label, crlf))
            out.append((f"{n:03d}-{sample.slug}.eml", data, sample.label))
    return out


def self_check(files: Sequence[tuple[str, bytes, Label]]) -> None:
    """Independent readers open what we wrote: pypdf for PDFs, zipfile for archives."""
    from email import message_from_bytes
    from email.policy import default

    from pypdf import PdfReader

    for name, data, _ in files:
        msg = message_from_bytes(data, policy=default)
        for part in msg.walk():
            fn = part.get_filename() or ""
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            if fn.endswith(".pdf"):
                reader = PdfReader(io.BytesIO(payload))
                if reader.is_encrypted:
                    assert "encrypted-pdf" in name, name
                    assert reader.decrypt("wrong") == 0, name
                elif "scanned-fax" not in name:
                    assert reader.pages[0].extract_text().strip(), name
            elif fn.endswith((".zip", ".xlsx", ".docx")):
                with zipfile.ZipFile(io.BytesIO(payload)) as z:
                    encrypted = any(info.flag_bits & 1 for info in z.infolist())
                    assert encrypted == ("encrypted-zip" in name), name
                    if not encrypted:
                        assert z.testzip() is None, name


def write(out: Path, seed: int) -> int:
    """Replace the corpus in `out`; returns the number of messages."""
    files = generate(seed)
    self_check(files)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.eml"):
        old.unlink()
    labels: dict[str, Any] = {}
    for name, data, label in files:
        (out / name).write_bytes(data)
        labels[name] = {
            "needs_encryption": label.needs_encryption,
            "verdict": label.verdict,
            "group": label.group,
            "note": label.note,
        }
    doc = {"generator": "tools/make_corpus.py", "seed": seed, "messages": labels}
    (out / "labels.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return len(files)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus directory")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = ap.parse_args(argv)
    n = write(args.out, args.seed)
    print(f"wrote {n} messages and labels.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
