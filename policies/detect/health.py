"""Health information: ICD-10-CM codes, drugs, lab results, procedures, diagnoses,
sensitive categories and patient context ("54-year-old female").

Dictionary terms are found by tokenising each segment once and looking words
up in sets (no big regex alternations), which keeps scanning linear in the
text size.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
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
from policies.detect.lexicon import body_sites, condition_names, drug_names, icd10cm_codes

_SENSITIVE = frozenset(terms.SENSITIVE_CATEGORIES)


def _kind(category: str) -> Kind:
    return "sensitive" if category in _SENSITIVE else "health"


def _health(
    rule: str, version: int, category: str, seg: SegmentLike, start: int, end: int,
    weight: float, key: str, masked: str = "",
) -> Finding:  # fmt: skip
    return Finding(
        rule,
        version,
        category,
        _kind(category),
        seg.location,
        masked or f"[{category}]",
        min(1.0, 0.5 + weight / 2),
        start,
        end,
        weight,
        value_key(category, key),
    )


# --- dictionary terms -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    term: str
    category: str
    weight: float


# (remaining words, entry) of the phrases that start with one word and go on
# with another, longest first.
_Phrases = tuple[tuple[tuple[str, ...], _Entry], ...]


@dataclass(frozen=True, slots=True)
class _Index:
    singles: dict[str, _Entry]
    # first word -> the start of the second word (letters and digits) -> phrases
    phrases: dict[str, dict[str, _Phrases]]
    # every word worth locating: singles, phrase heads, drugs, condition heads, sited conditions
    vocabulary: frozenset[str]
    sites: frozenset[str]  # body sites, singular and plural
    sited: frozenset[str]  # conditions that name a site ("fracture of the ... radius")
    heads_only: frozenset[str]  # words located only as the start of a phrase
    # Singles whose finding depends on nothing but the word: no phrase starts with
    # them, their case and the word before them do not matter, and no body site
    # can weigh them up.
    plain: dict[str, _Entry]


_SECOND_WORD = re.compile(r"[a-z0-9]+")


@cache
def _index() -> _Index:
    tables: list[tuple[str, Mapping[str, float]]] = [
        ("diagnosis", terms.DIAGNOSES),
        ("procedure", terms.PROCEDURES),
        ("lab", terms.LAB_WORDS),
        ("clinical-context", terms.CLINICAL_CONTEXT),
    ]
    # Sensitive tables last: a term listed twice ends up in its sensitive category.
    tables += list(terms.SENSITIVE.items())
    singles: dict[str, _Entry] = {}
    phrases: dict[str, dict[str, list[tuple[tuple[str, ...], _Entry]]]] = {}

    def add(term: str, entry: _Entry) -> None:
        words = tuple(term.split(" "))
        if len(words) == 1:
            singles[term] = entry
            return
        second = _SECOND_WORD.match(words[1])
        if second is not None:
            by_second = phrases.setdefault(words[0], {})
            by_second.setdefault(second.group(), []).append((words[1:], entry))

    for category, table in tables:
        for term, weight in table.items():
            add(term, _Entry(term, category, weight))
    # The names of ICD-10-CM fill in what the hand-written tables do not weigh.
    listed = set(singles) | {
        " ".join((head, *rest)) for head, seconds in phrases.items()
        for items in seconds.values() for rest, _ in items
    }  # fmt: skip
    for name, (category, weight) in condition_names().items():
        if name in listed:
            continue
        if category not in _SENSITIVE:
            # "female infertility" stays as sensitive as "infertility" is.
            inner = next(
                (e for w in name.split(" ") if (e := singles.get(w)) and e.category in _SENSITIVE),
                None,
            )
            category = inner.category if inner is not None else category
        add(name, _Entry(name, category, weight))
    ordered = {
        head: {
            second: tuple(sorted(items, key=lambda it: -len(it[0])))
            for second, items in seconds.items()
        }
        for head, seconds in phrases.items()
    }
    sites, sited = body_sites()
    sites = sites | {f"{w}s" for w in sites}
    sited = sited | {f"{w}s" for w in sited}
    others = frozenset(singles) | frozenset(drug_names()) | sited | _CONDITION_HEADS
    heads_only = frozenset(ordered) - others
    plain = {
        word: entry
        for word, entry in singles.items()
        if word not in ordered
        and entry.term not in terms.CASE_SENSITIVE
        and not terms.NOT_AFTER.get(entry.term)
        and not (word in sited and entry.weight < 1.0)
    }
    return _Index(singles, ordered, others | frozenset(ordered), sites, sited, heads_only, plain)


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
# Endings of the words looked at beyond the dictionaries (with "-" compounds).
_SPECIAL_ENDS = ("'s", *_SUFFIXES)
# In tokens joined by "\n": the start of each token with a joiner, before it.
_LEAD_RE = re.compile(r"^[a-z0-9]+(?=['/\-])", re.MULTILINE)
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


_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_JOINERS = frozenset("'/-")


@lru_cache(maxsize=256)
def _short_word_re(word: str) -> re.Pattern[str]:
    """A whole short word: `find` would stop at every "er" inside "other"."""
    return re.compile(_whole_word(word))


def _whole_word(word: str) -> str:
    """A regex of the word as a whole token, as `_locate` finds it.

    The word comes first and the look-behind after it, so that the regex engine
    skips ahead to the word's first letters: a leading look-behind would have it
    try every position of the text ("(?<!x)er" as slow as "[^x]er" on "other").
    """
    w = re.escape(word)
    return w + r"(?<![\w'/\-]" + w + ")" + _WORD_END


def _locate(low: str, words: Iterable[str]) -> list[tuple[int, int, str]]:
    """(start, end, word) of every whole-token occurrence of the words, in text order."""
    out: list[tuple[int, int, str]] = []
    n = len(low)
    for w in words:
        size = len(w)
        if size <= 3:
            out.extend((m.start(), m.end(), w) for m in _short_word_re(w).finditer(low))
            continue
        i = low.find(w)
        while i >= 0:
            e = i + size
            c = low[i - 1] if i else " "  # starts_token(low, i, "'/-"), inline
            if not (c.isalnum() or c in "_'/-") and not (
                e < n
                and (
                    low[e] in _TOKEN_CHARS
                    or (low[e] in _JOINERS and e + 1 < n and low[e + 1] in _TOKEN_CHARS)
                )
            ):
                out.append((i, e, w))
            i = low.find(w, e)
    out.sort()
    return out


@cache
def _phrase_rest(rest: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("".join(r"\s+" + re.escape(w) for w in rest) + r"(?![a-z0-9])")


_WORD_END = r"(?![a-z0-9]|['/\-][a-z0-9])"
# The word after a phrase's first word, as far as the phrase index keys it.
_NEXT_WORD_RE = re.compile(r"\s+([a-z0-9]+)")
# What may follow a body site that ends its phrase: punctuation, or these words.
_AFTER_SITE_RE = re.compile(r"[ \t]+([a-z]+)")
_PHRASE_ENDS = frozenset(
    "and or with without in at on from after due which that was is are has had will for to"
    " since following during last this sustained".split()
)


def _heads_its_phrase(low: str, end: int, sites: frozenset[str]) -> bool:
    """Whether the body site ending at `end` is the head of its phrase, not a modifier
    ("back office", "hand dryer") or a part of something else ("neck of the bottle")."""
    nxt = _AFTER_SITE_RE.match(low, end)
    if nxt is None or nxt.group(1) in _PHRASE_ENDS:
        return True
    if nxt.group(1) == "of":  # "neck of the femur": a part of another site
        rest = _SITE_AFTER_RE.match(low, end)
        return rest is not None and any(
            w in sites for w in _SITE_WORD_RE.findall(low, rest.start(1), rest.end(1))
        )
    return False


# "of the left distal": up to four words after "of", among which the site.
_SITE_AFTER_RE = re.compile(r"[ \t]+of[ \t]+((?:[a-z]+[ \t-]+){0,3}[a-z]+)")
_SITE_WORD_RE = re.compile(r"[a-z]+")


# Shorter texts are tokenised by findall alone: their chunks repeat too little.
_CHUNKED_FROM = 4096


def _tokens(low: str) -> set[str]:
    """set(_TOKEN_RE.findall(low)), quicker on a long text.

    A token holds no whitespace and the pattern looks at nothing around it, so the
    tokens of a text are those of its whitespace-separated chunks, each tokenised
    alone. A table repeats most of its chunks ("name:", "diagnosis:"), and a chunk
    of small ASCII letters alone is its own token.
    """
    if len(low) < _CHUNKED_FROM:
        return set(_TOKEN_RE.findall(low))
    out: set[str] = set()
    for chunk in set(low.split()):
        if chunk.isalpha() and chunk.isascii() and chunk.islower():
            out.add(chunk)
        elif chunk.upper() != chunk:  # it holds a small letter, maybe one of a-z
            out.update(_TOKEN_RE.findall(chunk))
    return out


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
        distinct = _tokens(low)
        wanted = distinct & index.vocabulary
        # A word that only starts phrases ("march", "open") is worth locating only
        # when a word that may follow it occurs too ("fracture", "wound").
        heads_only = wanted & index.heads_only
        if heads_only:
            # The start of each token as a second word is keyed: the token itself,
            # or for "covid-19" its "covid" (a key holds no joiner, so it never
            # equals a token that does).
            leads = set(_LEAD_RE.findall("\n".join(distinct)))
            for head in heads_only:
                seconds = index.phrases[head].keys()
                if seconds.isdisjoint(distinct) and seconds.isdisjoint(leads):
                    wanted.discard(head)
        for w in distinct.difference(index.vocabulary):
            if not (w.endswith(_SPECIAL_ENDS) or "-" in w):
                continue
            if w.endswith("'s") and w[:-2] in index.singles:
                wanted.add(w)
            elif "-" in w and any(
                p in drugs or p in index.singles for p in w.split("-") if len(p) > 3
            ):
                wanted.add(w)  # "amoxicillin-clavulanate", "hiv-1"
            elif len(w) >= 7 and w.endswith(_SUFFIXES) and w not in _SUFFIX_EXCEPTIONS:
                wanted.add(w)
        if not wanted:
            return
        text = seg.text
        rule, version, location = self.id, self.version, seg.location
        new = tuple.__new__
        plain = index.plain
        # word -> what its finding says besides the span (the finding _term makes):
        # a table repeats its column labels on every row.
        made: dict[str, tuple[str, Kind, str, float, float, str]] = {}
        skip_to = 0
        for start, end, word in _locate(low, wanted):
            if start < skip_to:
                continue
            if word in plain:
                facts = made.get(word)
                if facts is None:
                    entry = plain[word]
                    category, weight = entry.category, entry.weight
                    facts = made[word] = (
                        category, _kind(category), f"[{category}]", min(1.0, 0.5 + weight / 2),
                        weight, value_key(category, entry.term),
                    )  # fmt: skip
                category, kind, masked, score, weight, key = facts
                yield new(
                    Finding,
                    (rule, version, category, kind, location, masked, score, start, end, weight,
                     key),
                )  # fmt: skip
                continue
            heads = index.phrases.get(word)
            if heads is not None:
                second = _NEXT_WORD_RE.match(low, end)
                for rest, entry in heads.get(second.group(1), ()) if second else ():
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
                    if word in index.sited and single.weight < 1.0:
                        sited = self._at_site(seg, low, word, start, end)
                        if sited is not None:
                            yield sited
                            continue
                    yield self._term(seg, single, start, end)
                continue
            if word in index.sited:
                sited = self._at_site(seg, low, word, start, end)
                if sited is not None:
                    yield sited
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

    def _at_site(
        self, seg: SegmentLike, low: str, word: str, start: int, end: int
    ) -> Finding | None:
        """ "fracture of the left distal radius", "wrist fracture": a condition at a body
        site is a documented diagnosis, whatever the condition word alone weighs."""
        sites = _index().sites
        after = _SITE_AFTER_RE.match(low, end)
        if after is not None:
            for site in _SITE_WORD_RE.finditer(low, after.start(1), after.end(1)):
                if site.group() in sites:
                    if not _heads_its_phrase(low, site.end(), sites):
                        return None  # "the back office", "the neck of the bottle"
                    key = f"{word.rstrip('s')} of {site.group()}"
                    return _health(
                        self.id, self.version, "diagnosis", seg, start, site.end(), 1.0, key
                    )
        before = _WORD_BEFORE_RE.search(low, max(0, start - 30), start)
        if before is not None and before.group(1) in sites:
            key = f"{word.rstrip('s')} of {before.group(1)}"
            return _health(self.id, self.version, "diagnosis", seg, before.start(1), end, 1.0, key)
        return None

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

# Dotted codes ("J44.9"), found from their dot: a literal first character lets the
# regex engine skip to the few dots of a text instead of trying at every capital
# letter. The match starts at the dot; the code's first three characters are the
# three before it.
_ICD_DOT_RE = re.compile(r"\.(?<=[A-Z]\d[0-9A-Z]\.)([0-9A-Z]{1,4})(?![A-Za-z0-9])")
_ICD_BARE_RE = re.compile(r"([A-Z]\d[0-9A-Z]{1,5})(?![A-Za-z0-9\-/]|\.\d)")
# The same regex over the shape of an ASCII text: capitals as "A", small letters as
# "a", digits as "0", "-", "/" and "." as themselves, anything else as " ". Its
# literal start lets the regex engine skip over the capitals that no digit follows,
# where _ICD_BARE_RE tries a match at every capital of a table.
_SHAPES = bytes(
    ord("A") if 65 <= b <= 90 else ord("a") if 97 <= b <= 122 else ord("0") if 48 <= b <= 57
    else b if b in b"-/." else ord(" ")
    for b in range(256)
)  # fmt: skip
_ICD_BARE_SHAPE_RE = re.compile(rb"A0[A0]{1,5}(?![Aa0\-/]|\.0)")
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


# What every finding of one ICD-10-CM code says: category, kind, masked, key.
_IcdFacts = tuple[str, Kind, str, str]


class IcdDetector:
    """ICD-10-CM codes checked against the code set; undotted ones need a keyword."""

    id = "icd10cm"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        if not ctx.digits:
            return
        codes = icd10cm_codes()
        text = seg.text
        location = seg.location
        new = tuple.__new__
        # code -> what its findings say: a table repeats a few codes on every row.
        # Local to this call, like everything it holds.
        known: dict[str, _IcdFacts] = {}
        # The same for a dotted code as written ("J44.9"), and what is written so
        # but is no code.
        dotted: dict[str, _IcdFacts] = {}
        rejected: set[str] = set()
        # A dotted match found from its dot is also found by finditer, but for one
        # that starts inside an earlier match (after its dot): that one starts after
        # a "." or an alphanumeric character, and the token check rejects it.
        for m in _ICD_DOT_RE.finditer(text):
            start = m.start() - 3
            if start:
                c = text[start - 1]
                if c.isalnum() or c == "_" or c == ".":  # starts_token(text, start, ".")
                    continue
            end = m.end()
            written = text[start:end]
            facts = dotted.get(written)
            if facts is None:
                if written in rejected:
                    continue
                code = written.replace(".", "")
                if code not in codes:
                    rejected.add(written)
                    continue
                facts = dotted[written] = self._facts(code, known)
            category, kind, masked, key = facts
            yield new(
                Finding,
                (self.id, self.version, category, kind, location, masked, 1.0, start, end, 1.0,
                 key),
            )  # fmt: skip
        header_kw = bool(ctx.header and _ICD_KW_RE.search(ctx.header))
        bare: Iterator[re.Match[bytes]] | Iterator[re.Match[str]] = (
            _ICD_BARE_SHAPE_RE.finditer(text.encode("ascii").translate(_SHAPES))
            if text.isascii()
            else _ICD_BARE_RE.finditer(text)
        )
        for hit in bare:
            start, end = hit.span()
            code = text[start:end]
            if code not in codes or not starts_token(text, start, ".-/"):
                continue
            if header_kw or near(low, start, end, _ICD_KW_RE, 60, 15):
                category, kind, masked, key = self._facts(code, known)
                yield new(
                    Finding,
                    (self.id, self.version, category, kind, location, masked, 1.0, start, end, 1.0,
                     key),
                )  # fmt: skip

    @staticmethod
    def _facts(code: str, known: dict[str, _IcdFacts]) -> _IcdFacts:
        """What a finding of this code says, wherever it is: category, kind, masked, key.

        The score and weight are 1.0, as _health makes them for a weight of 1.0.
        """
        facts = known.get(code)
        if facts is None:
            category = icd_category(code)
            masked = code[0] + "**" + (".*" if len(code) > 3 else "")
            facts = known[code] = (category, _kind(category), masked, value_key(category, code))
        return facts


# --- Lab results ---------------------------------------------------------------------

# The look-behind after the first digit rejects digits inside a number or word
# without stopping the regex engine from skipping ahead to digits.
_LAB_VALUE_RE = re.compile(
    r"\d(?<![\w.]\d)\d{0,3}(?:\.\d{1,3})?[ \t]?(?:%|mg/dl|mmol/l|g/dl|meq/l|u/l|iu/l|miu/l|miu/ml"
    r"|[uµμ]iu/ml|ng/ml|ng/dl|pg/ml|mcg/dl|[uµμ]g/dl|cells/mm3|cells/[uµμ]l|copies/ml|k/[uµμ]l"
    r"|x ?10\^?\d+/l|mm ?hg|bpm|kg/m2|ml/min(?:/1\.73 ?m2)?|mg/l|fl|sec)(?![\w/])"
)
# Every unit above contains one of these: without any, no value can match.
_UNIT_HINTS = (
    "%",
    "/l",
    "/d",
    "/m",
    "/u",
    "/\u00b5",
    "/\u03bc",
    "mm hg",
    "mmhg",
    "bpm",
    "fl",
    "sec",
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
# Each pattern with the literals one of which it needs, or none when the pattern is
# as quick to run as a look for its literals. A look is a regex search: one that
# starts with a literal character has the regex engine skip from one occurrence of
# that character to the next, quicker than `in` goes through a long table.
# ("cbg" needs no look of its own: it holds "bg".)
_LAB_SHORTHANDS: tuple[tuple[re.Pattern[str], tuple[re.Pattern[str], ...]], ...] = (
    (_BP_RE, ()),
    (_A1C_RE, ()),
    (_GLUCOSE_RE, tuple(re.compile(h) for h in ("sugar", "glucose", "bg", "fsbs"))),
)
# The looks for _UNIT_HINTS but "%": the six of a "/" and a letter in one.
_UNIT_HINT_RES = tuple(re.compile(h) for h in ("/[ldmu\u00b5\u03bc]", "bpm", "fl", "sec", "mm ?hg"))


def _has_unit_hint(low: str) -> bool:
    """any(u in low for u in _UNIT_HINTS), quicker on a long text."""
    return "%" in low or any(look.search(low) for look in _UNIT_HINT_RES)


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
        if not ctx.digits:
            return
        names: list[tuple[int, int, str]] | None = None
        values = _LAB_VALUE_RE.finditer(low) if _has_unit_hint(low) else ()
        for m in values:
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
        for pattern, looks in _LAB_SHORTHANDS:
            if looks and not any(look.search(low) for look in looks):
                continue
            for m in pattern.finditer(low):
                if not starts_token(low, m.start()) and not low.endswith("hb", 0, m.start()):
                    continue
                yield _health(
                    self.id, self.version, "lab-result", seg, m.start(), m.end(), 1.0,
                    m.group(0)[:3],
                )  # fmt: skip


# --- Patient context, CPT codes, 42 CFR Part 2 notices --------------------------------------

_AGE_SEX_RE = re.compile(
    r"(\d(?<![\w]\d)\d{0,2})(?:[- ]?(?:year|yr)s?[- ]old\b"
    r"(?:[ ,]+(?:white |black |hispanic |asian )?"
    r"(?:male|female|man|woman|boy|girl|patient|pt|gentleman|lady|m|f)\b)?"
    r"|(?P<short> ?(?:yo|y/o|y\.o\.))(?: ?(?:m|f|male|female)\b)?)"
)
# Where the unit of an age above may begin. It comes right after the age's digits (and
# a "-" or " "), so an age starts 1-4 characters before one of these: only those few
# offsets are tried, instead of the whole pattern at every digit of a table.
_AGE_UNIT_RE = re.compile(r"y(?:ears?[- ]old|rs?[- ]old|o|/o|\.o\.)")
_CPT_RE = re.compile(r"cpt(?: codes?)?[\s:#]{0,4}(\d{4}[0-9ft])\b")
_PART2_RE = re.compile(r"42\s*c\.?\s?f\.?\s?r\.?\s*(?:part\s*|§\s*)?2\b")


def _ages(low: str) -> Iterator[re.Match[str]]:
    """The matches of _AGE_SEX_RE.finditer(low), found from the unit words.

    A match starts at the first digit of a run (its look-behind) and holds no digit
    after it, so matches never overlap and each has its own unit word: trying the
    offsets before every unit word finds exactly the matches finditer finds.
    """
    last = 0
    for unit in _AGE_UNIT_RE.finditer(low):
        p = unit.start()
        for s in range(max(p - 4, last), p):
            # \d is a Unicode decimal digit: what str.isdecimal() tells.
            if low[s].isdecimal() and (m := _AGE_SEX_RE.match(low, s)) is not None:
                last = m.end()
                yield m
                break


class ClinicalContextDetector:
    """Patient ages ("67-year-old male"), CPT codes and 42 CFR Part 2 notices."""

    id = "clinical-context"
    version = 1

    def scan(self, seg: SegmentLike, low: str, ctx: ScanContext = NO_CONTEXT) -> Iterator[Finding]:
        """Findings in one segment."""
        if not ctx.digits:
            return
        for m in _ages(low):
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
                    "age-over-89",
                    self.version,
                    "age",
                    "identifier",
                    seg.location,
                    "90+",
                    0.8,
                    m.start(),
                    m.end(),
                    0.6,
                    value_key("age", str(age)),
                )
        for m in _CPT_RE.finditer(low) if "cpt" in low else ():
            yield _health(
                "cpt", self.version, "procedure", seg, m.start(), m.end(), 0.8, m.group(1),
                "[cpt *****]",
            )  # fmt: skip
        for m in _PART2_RE.finditer(low):
            yield _health(
                "42cfr-part2", self.version, "substance-use", seg, m.start(), m.end(), 1.0,
                "part2",
            )  # fmt: skip
