"""Health information: ICD-10-CM codes, drugs, lab results, procedures, diagnoses,
sensitive categories and patient context ("54-year-old female").

Dictionary terms are found by tokenising each segment once and looking words
up in sets (no big regex alternations), which keeps scanning linear in the
text size.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from policies.detect import terms
from policies.detect.base import (
    NO_CONTEXT,
    Finding,
    Kind,
    ScanContext,
    SegmentLike,
    near,
    starts_token,
    value_key,
)
from policies.detect.lexicon import drug_names, icd10cm_codes

_SENSITIVE = frozenset(terms.SENSITIVE_CATEGORIES)


def _kind(category: str) -> Kind:
    return "sensitive" if category in _SENSITIVE else "health"


def _health(
    rule: str, version: int, category: str, seg: SegmentLike, start: int, end: int,
    weight: float, key: str, masked: str = "",
) -> Finding:  # fmt: skip
    return Finding(
        rule=rule,
        version=version,
        category=category,
        kind=_kind(category),
        location=seg.location,
        masked=masked or f"[{category}]",
        score=min(1.0, 0.5 + weight / 2),
        start=start,
        end=end,
        weight=weight,
        key=value_key(category, key),
    )


# --- dictionary terms -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    term: str
    category: str
    weight: float


@dataclass(frozen=True, slots=True)
class _Index:
    singles: dict[str, _Entry]
    # first word → (remaining words, entry), longest phrases first
    phrases: dict[str, tuple[tuple[tuple[str, ...], _Entry], ...]]


@cache
def _index() -> _Index:
    tables: list[tuple[str, dict[str, float]]] = [
        ("diagnosis", terms.DIAGNOSES),
        ("procedure", terms.PROCEDURES),
        ("lab", terms.LAB_WORDS),
        ("clinical-context", terms.CLINICAL_CONTEXT),
    ]
    # Sensitive tables last: a term listed twice ends up in its sensitive category.
    tables += list(terms.SENSITIVE.items())
    singles: dict[str, _Entry] = {}
    phrases: dict[str, list[tuple[tuple[str, ...], _Entry]]] = {}
    for category, table in tables:
        for term, weight in table.items():
            entry = _Entry(term, category, weight)
            words = tuple(term.split(" "))
            if len(words) == 1:
                singles[term] = entry
            else:
                phrases.setdefault(words[0], []).append((words[1:], entry))
    ordered = {
        head: tuple(sorted(items, key=lambda it: -len(it[0]))) for head, items in phrases.items()
    }
    return _Index(singles, ordered)


_TOKEN_RE = re.compile(r"[a-z][a-z0-9]*(?:['/\-][a-z0-9]+)*")
_DOSE_RE = re.compile(
    r"[ \t]{0,3}(?:\([a-z ]{1,20}\)[ \t]*)?\d+(?:\.\d+)?[ \t]?(?:mg|mcg|µg|ug|g|ml|units?|iu|meq"
    r"|tabs?|tablets?|caps?|capsules?|puffs?|patch)\b"
)
_SIG_RE = re.compile(r"\b(?:daily|bid|b\.i\.d|tid|qid|qhs|qd|prn|po|twice a day|every \d+ hours)\b")

_PROC_SUFFIXES = ("ectomy", "ectomies", "otomy", "ostomy", "oscopy", "plasty", "centesis")
_DIAG_SUFFIXES = (
    "itis",
    "emia",
    "opathy",
    "plegia",
    "carcinoma",
    "sarcoma",
    "lymphoma",
    "blastoma",
    "myeloma",
    "adenoma",
    "glioma",
    "melanoma",
)
_SUFFIXES = _PROC_SUFFIXES + _DIAG_SUFFIXES
# Nouns that name a condition together with the word before them.
_CONDITION_HEADS = frozenset({"disease", "disorder", "syndrome", "deficiency", "insufficiency"})
_WORD_BEFORE_RE = re.compile(r"([a-z][a-z'-]{2,})[ \t]+$")
_NOT_CONDITIONS = frozenset(
    "for of the and or any this that your their his her its with without rare common chronic"
    " infectious personality control prevention centers center national american society"
    " association foundation institute information awareness".split()
)
_SUFFIX_EXCEPTIONS = frozenset(
    {
        "dichotomy",
        "anatomy",
        "microscopy",
        "spectroscopy",
        "stereoscopy",
        "academia",
        "homeopathy",
        "naturopathy",
        "osteopathy",
        "senioritis",
        "otomy",
    }
)


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex alternation of words shaped as a trie, so matching never backtracks far."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        alts = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:
            return f"(?:{body})?"
        return body

    return emit(trie)


@lru_cache(maxsize=512)
def _finder(words: frozenset[str]) -> re.Pattern[str]:
    """A regex finding these whole words (messages of one kind share word sets)."""
    return re.compile(_trie_pattern(sorted(words)) + _WORD_END)


@cache
def _phrase_rest(rest: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("".join(r"\s+" + re.escape(w) for w in rest) + r"(?![a-z0-9])")


_WORD_END = r"(?![a-z0-9]|['/\-][a-z0-9])"


class TermDetector:
    """Diagnoses, procedures, lab words, drugs and sensitive-category terms."""

    id = "health-terms"
    version = 2

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        index = _index()
        drugs = drug_names()
        # Tokenise in C (findall), intersect with the dictionaries, and only
        # then locate the few words that matter.
        distinct = set(_TOKEN_RE.findall(low))
        wanted = {w for w in distinct if w in index.singles or w in index.phrases or w in drugs}
        wanted |= distinct & _CONDITION_HEADS
        for w in distinct:
            if w.endswith("'s") and w[:-2] in index.singles:
                wanted.add(w)
            elif (
                "-" in w
                and w not in wanted
                and any(p in drugs or p in index.singles for p in w.split("-") if len(p) > 3)
            ):
                wanted.add(w)  # "amoxicillin-clavulanate", "hiv-1"
            elif len(w) >= 7 and w.endswith(_SUFFIXES) and w not in _SUFFIX_EXCEPTIONS:
                wanted.add(w)
        if not wanted:
            return
        finder = _finder(frozenset(wanted))
        text = seg.text
        skip_to = 0
        for m in finder.finditer(low):
            start, end = m.span()
            if start < skip_to or not starts_token(low, start, "'/-"):
                continue
            word = m.group()
            heads = index.phrases.get(word)
            if heads is not None:
                for rest, entry in heads:
                    pm = _phrase_rest(rest).match(low, end)
                    if pm is not None:
                        skip_to = pm.end()
                        if self._allowed(entry, text, low, start, pm.end()):
                            yield self._term(seg, entry, start, pm.end())
                        break
                if skip_to > start:
                    continue
            single = index.singles.get(word)
            if single is None and word.endswith("'s"):
                single = index.singles.get(word[:-2])
            if single is not None:
                if self._allowed(single, text, low, start, end):
                    yield self._term(seg, single, start, end)
                continue
            tier = drugs.get(word)
            if tier is not None:
                yield self._drug(seg, low, word, tier, start, end)
            elif "-" in word and word not in _CONDITION_HEADS:
                yield from self._compound(seg, text, low, word, start, end)
            elif word in _CONDITION_HEADS:
                # "reflux disease", "panic disorder", "Down syndrome": named by the word before
                before = _WORD_BEFORE_RE.search(low, max(0, start - 30), start)
                if before is not None and before.group(1) not in _NOT_CONDITIONS:
                    yield _health(
                        self.id, self.version, "diagnosis", seg, before.start(1), end, 0.8,
                        f"{before.group(1)} {word}",
                    )  # fmt: skip
            elif word.endswith(_PROC_SUFFIXES):
                yield _health(self.id, self.version, "procedure", seg, start, end, 0.8, word)
            elif word.endswith(_DIAG_SUFFIXES):
                yield _health(self.id, self.version, "diagnosis", seg, start, end, 0.8, word)

    def _compound(
        self, seg: SegmentLike, text: str, low: str, word: str, start: int, end: int
    ) -> Iterator[Finding]:
        """The dictionary words inside a hyphenated compound, at their own offsets."""
        index, drugs = _index(), drug_names()
        pos = start
        for part in word.split("-"):
            p_start, p_end = pos, pos + len(part)
            pos = p_end + 1
            if len(part) <= 3:
                continue
            entry = index.singles.get(part)
            if entry is not None and self._allowed(entry, text, low, p_start, p_end):
                yield self._term(seg, entry, p_start, p_end)
            elif part in drugs:
                yield self._drug(seg, low, part, drugs[part], p_start, p_end)

    @staticmethod
    def _allowed(entry: _Entry, text: str, low: str, start: int, end: int) -> bool:
        written = terms.CASE_SENSITIVE.get(entry.term)
        if written is not None and text[start:end] != written:
            return False
        blockers = terms.NOT_AFTER.get(entry.term)
        if blockers:
            before = low[max(0, start - 12) : start].split()
            if before and before[-1] in blockers:
                return False
        return True

    def _term(self, seg: SegmentLike, entry: _Entry, start: int, end: int) -> Finding:
        return _health(
            self.id, self.version, entry.category, seg, start, end, entry.weight, entry.term
        )

    def _drug(
        self, seg: SegmentLike, low: str, word: str, tier: int, start: int, end: int
    ) -> Finding:
        dosed = bool(_DOSE_RE.match(low, end)) or bool(
            _SIG_RE.search(low, end, min(len(low), end + 30))
        )
        weight = 1.0 if dosed else 0.8 if tier == 1 else 0.4
        return _health("drug-names", self.version, "drug", seg, start, end, weight, word)


# --- ICD-10-CM codes -----------------------------------------------------------------

_ICD_DOTTED_RE = re.compile(r"([A-Z]\d[0-9A-Z])\.([0-9A-Z]{1,4})(?![A-Za-z0-9])")
_ICD_BARE_RE = re.compile(r"([A-Z]\d[0-9A-Z]{1,5})(?![A-Za-z0-9\-/]|\.\d)")
_ICD_KW_RE = re.compile(r"\b(?:icd(?:-?10)?(?:-?cm)?|dx|diagnos[ie]s|diag|diagnosis codes?)\b")


def icd_category(code: str) -> str:
    """Our category for an ICD-10-CM code (undotted): a sensitive one or "icd10"."""
    letter, num = code[0], code[1:3]
    head = code[:3]
    if letter == "F":
        return "substance-use" if "10" <= num <= "19" else "mental-health"
    if head in ("B20", "Z21", "R75") or code.startswith("O987"):
        return "hiv"
    if letter == "O" or head in ("Z30", "Z31", "Z32", "Z33", "Z3A", "Z37", "Z39"):
        return "reproductive"
    if letter == "A" and "50" <= num <= "64":
        return "reproductive"
    if head in ("Z14", "Z15") or code.startswith(("Z137", "Z3143", "Z3144", "Z8481")):
        return "genetic"
    return "icd10"


class IcdDetector:
    """ICD-10-CM codes checked against the code set; undotted ones need a keyword."""

    id = "icd10cm"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        codes = icd10cm_codes()
        text = seg.text
        for m in _ICD_DOTTED_RE.finditer(text):
            if not starts_token(text, m.start(), "."):
                continue
            code = m.group(1) + m.group(2)
            if code in codes:
                yield self._finding(seg, code, m.start(), m.end(), 1.0)
        header_kw = bool(ctx.header and _ICD_KW_RE.search(ctx.header))
        for m in _ICD_BARE_RE.finditer(text):
            code = m.group(1)
            if code not in codes or not starts_token(text, m.start(), ".-/"):
                continue
            if header_kw or near(low, m.start(), m.end(), _ICD_KW_RE, 60, 15):
                yield self._finding(seg, code, m.start(), m.end(), 1.0)

    def _finding(self, seg: SegmentLike, code: str, start: int, end: int, weight: float) -> Finding:
        masked = code[0] + "**" + (".*" if len(code) > 3 else "")
        return _health(
            self.id, self.version, icd_category(code), seg, start, end, weight, code, masked
        )


# --- Lab results ---------------------------------------------------------------------

_LAB_VALUE_RE = re.compile(
    r"\d\d{0,3}(?:\.\d{1,3})?[ \t]?(?:%|mg/dl|mmol/l|g/dl|meq/l|u/l|iu/l|miu/l|miu/ml"
    r"|[uµμ]iu/ml|ng/ml|ng/dl|pg/ml|mcg/dl|[uµμ]g/dl|cells/mm3|cells/[uµμ]l|copies/ml|k/[uµμ]l"
    r"|x ?10\^?\d+/l|mm ?hg|bpm|kg/m2|ml/min(?:/1\.73 ?m2)?|mg/l|fl|sec)(?![\w/])"
)
_LAB_NAMES = [
    *(
    "a1c hba1c glucose ldl hdl cholesterol triglycerides creatinine gfr egfr bun tsh t4 t3 psa"
    " inr wbc rbc platelet platelets plt hgb hemoglobin hematocrit hct potassium sodium chloride"
    " calcium magnesium alt ast bilirubin albumin troponin bnp crp esr ferritin b12 folate cd4"
    " microalbumin bp pulse spo2 bmi lipase amylase lactate ammonia hcg estradiol testosterone"
    " cortisol ige ef pt ptt anc neutrophils lymphocytes"
    ).split(),
    "hemoglobin a1c", "blood sugar", "free t4", "alk phos", "alkaline phos", "vitamin d",
    "viral load", "blood pressure", "heart rate", "o2 sat", "oxygen saturation", "uric acid",
    "ejection fraction",
]  # fmt: skip
# A trie-shaped alternation: one pass over the text stays cheap.
_LAB_NAME_RE = re.compile(_trie_pattern(_LAB_NAMES) + r"(?![a-z0-9])")
_LAB_GAP = 30  # characters allowed between a test name and its value, on one line
_BP_RE = re.compile(r"(?:bp|blood pressure)[\s:=]{0,4}(?:of |was |is )?\d{2,3}/\d{2,3}\b")
_A1C_RE = re.compile(r"a1c\b[^\d\n]{0,25}\d{1,2}\.\d\b")
# "sugar was 320", "glucose 212": values without a unit, as clinicians write them
_GLUCOSE_RE = re.compile(r"(?:sugars?|glucose|bg|fsbs|cbg)\b[^\d\n]{0,15}\d\d\d?\b(?![./%])")


def _lab_name_before(low: str, names: list[tuple[int, int, str]], pos: int) -> str | None:
    """The test name ending at most _LAB_GAP characters before pos on the same line."""
    i = bisect_right(names, (pos, pos, "")) - 1
    while i >= 0:
        end, _, name = names[i]
        if end <= pos:
            if end < pos - _LAB_GAP or "\n" in low[end:pos]:
                return None
            return name
        i -= 1
    return None


class LabResultDetector:
    """A lab test name with a value and unit ("A1c 9.2%", "LDL 160 mg/dL", "BP 150/95")."""

    id = "lab-result"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        names: list[tuple[int, int, str]] | None = None
        for m in _LAB_VALUE_RE.finditer(low):
            if not starts_token(low, m.start(), "."):
                continue
            if names is None:
                names = [
                    (n.end(), n.start(), n.group())
                    for n in _LAB_NAME_RE.finditer(low)
                    if starts_token(low, n.start())
                ]
            test = _lab_name_before(low, names, m.start())
            if test is None and ctx.header:
                header_name = _LAB_NAME_RE.search(ctx.header)
                test = header_name.group() if header_name else None
            if test is None:
                continue
            yield _health(self.id, self.version, "lab-result", seg, m.start(), m.end(), 1.0, test)
        for pattern in (_BP_RE, _A1C_RE, _GLUCOSE_RE):
            for m in pattern.finditer(low):
                if not starts_token(low, m.start()) and not low.endswith("hb", 0, m.start()):
                    continue
                yield _health(
                    self.id, self.version, "lab-result", seg, m.start(), m.end(), 1.0,
                    m.group(0)[:3],
                )  # fmt: skip


# --- Patient context, CPT codes, 42 CFR Part 2 notices --------------------------------------

_AGE_SEX_RE = re.compile(
    r"(\d\d{0,2})(?:[- ]?(?:year|yr)s?[- ]old\b(?:[ ,]+(?:white |black |hispanic |asian )?"
    r"(?:male|female|man|woman|boy|girl|patient|pt|gentleman|lady|m|f)\b)?"
    r"|(?P<short> ?(?:yo|y/o|y\.o\.))(?: ?(?:m|f|male|female)\b)?)"
)
_CPT_RE = re.compile(r"cpt(?: codes?)?[\s:#]{0,4}(\d{4}[0-9ft])\b")
_PART2_RE = re.compile(r"42\s*c\.?\s?f\.?\s?r\.?\s*(?:part\s*|§\s*)?2\b")


class ClinicalContextDetector:
    """Patient ages ("67-year-old male"), CPT codes and 42 CFR Part 2 notices."""

    id = "clinical-context"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        for m in _AGE_SEX_RE.finditer(low):
            if not starts_token(low, m.start()):
                continue
            age = int(m.group(1))
            described = m.group(0).rstrip().endswith(("male", "man", "patient", "pt", "m", "f"))
            if age > 120 or not (described or m.group("short")):
                continue
            yield _health(
                "patient-age", self.version, "patient-context", seg, m.start(), m.end(), 0.6,
                "age",
            )  # fmt: skip
            if age > 89:
                # HIPAA counts ages over 89 as an identifier on their own.
                yield Finding(
                    rule="age-over-89",
                    version=self.version,
                    category="age",
                    kind="identifier",
                    location=seg.location,
                    masked="90+",
                    score=0.8,
                    start=m.start(),
                    end=m.end(),
                    weight=0.6,
                    key=value_key("age", str(age)),
                )
        for m in _CPT_RE.finditer(low):
            yield _health(
                "cpt", self.version, "procedure", seg, m.start(), m.end(), 0.8, m.group(1),
                "[cpt *****]",
            )  # fmt: skip
        for m in _PART2_RE.finditer(low):
            yield _health(
                "42cfr-part2", self.version, "substance-use", seg, m.start(), m.end(), 1.0,
                "part2",
            )  # fmt: skip
