"""From findings to a verdict: none / pii / phi / sensitive.

PHI is an individual's identifier together with health information: both
inside one window of text (a few hundred characters) or one table row. A
window is PHI when its identifier strength I and health evidence H satisfy
I >= min_identifier, H >= min_health and I * H >= 0.9, so a strong identifier
(SSN, MRN, DOB, a patient's name) needs one clear health fact, while a
lighter one (a name after "Re:") needs more health evidence. Contact details
(phone, e-mail, address) add at most a little: every signature has them.

Bulk data is PHI without health words: many distinct SSNs/MRNs/DOBs, or
many table rows that each identify a person (name + DOB, name + MRN).
The subject is part of every body window: "Re: Jane Doe" + a diagnosis in
the body is PHI, and PHI that relies on an identifier in the subject is
flagged (only message-level protection hides a subject).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Final, Literal

from policies.detect.base import Finding, SegmentLike

VerdictName = Literal["none", "pii", "phi", "sensitive"]
VERDICTS: tuple[VerdictName, ...] = ("none", "pii", "phi", "sensitive")

# Contact details: listed in every signature, so they only ever tip a window.
WEAK_IDENTIFIERS = frozenset({"phone", "fax", "email", "address"})
_WEAK_CAP = 0.5
_HEALTH_CAP = 3.0
# Identifiers only the health system issues: whoever has one is a patient or a
# Medicare beneficiary, which is itself a little health information. ("Member
# ID" is left out: gyms and airlines issue those too.)
HEALTH_SYSTEM_IDS = frozenset({"mrn", "mbi", "hicn"})
_HEALTH_SYSTEM_CONTEXT = 0.5
# Identifiers that make a list of people "bulk" when many distinct ones appear.
BULK_CATEGORIES = frozenset({"ssn", "mbi", "hicn", "mrn", "member-id", "dob"})
# Reported when a message is bulk: the identifiers that make the list a list of people.
_BULK_REPORTED = BULK_CATEGORIES | {"name"}


@dataclass(frozen=True)
class Thresholds:
    """Tunable numbers of the verdict (the ruleset may override them)."""

    window: int = 300  # characters either side of an identifier
    min_identifier: float = 0.6
    min_health: float = 0.5
    phi_product: float = 0.9  # identifier strength x health evidence needed in one window
    bulk_identifiers: int = 5  # distinct values of one bulk category
    bulk_rows: int = 5  # table rows that each identify a person
    row_identifier: float = 1.5  # identifier strength that makes a row "a person"
    sensitive_weight: float = 0.7  # a sensitive finding this heavy lifts phi to sensitive
    max_findings: int = 200  # findings kept in a decision


@dataclass(frozen=True)
class ScannedSegment:
    """A segment and its findings, as the verdict needs them."""

    segment: SegmentLike
    findings: Sequence[Finding]


@dataclass(frozen=True)
class Classification:
    """The verdict, the findings that explain it, and facts rules may test."""

    verdict: VerdictName
    findings: tuple[Finding, ...]
    phi_in_subject: bool = False
    reasons: tuple[str, ...] = ()  # "co-occurrence", "bulk-ssn", "bulk-rows"
    findings_total: int = 0
    categories: frozenset[str] = field(default_factory=frozenset)


_HEALTH_KINDS = frozenset({"health", "sensitive", "provider"})
# Weights are decimals summed in binary floating point (0.6 + 0.3 < 0.9): the
# thresholds are met within this tolerance.
_EPSILON = 1e-9
_PLACE = attrgetter("location", "start")
_WEIGHT = attrgetter("weight")
_CATEGORY_OF = attrgetter("category")
# Field positions in Finding, for the per-finding loop of `classify`
# (Final, so type checkers read f[_KIND] as the field it is; a test checks them).
_CATEGORY: Final = 2
_KIND: Final = 3
_WEIGHT_AT: Final = 9
_KEY: Final = 10


def _strength(best: dict[str, float], weak: bool = True) -> float:
    """Identifier strength from the heaviest weight per category (weak ones capped)."""
    strong = 0.0
    light = 0.0
    for category, weight in best.items():
        if category in WEAK_IDENTIFIERS:
            light += weight
        else:
            strong += weight
    return strong + min(light, _WEAK_CAP) if weak else strong


def _health_evidence(health: Iterable[Finding]) -> float:
    best: dict[str, float] = {}
    for f in health:
        k = f.key or f.category
        if f.weight > best.get(k, 0.0):
            best[k] = f.weight
    return min(sum(best.values()), _HEALTH_CAP)


def _is_phi(ids: Sequence[Finding], health: Sequence[Finding], t: Thresholds) -> bool:
    if not ids:
        return False
    best: dict[str, float] = {}
    for f in ids:
        if f.weight > best.get(f.category, -1.0):
            best[f.category] = f.weight
    return _phi_of(_strength(best), best, health, t)


def _phi_of(i: float, best: dict[str, float], health: Sequence[Finding], t: Thresholds) -> bool:
    """PHI test for identifiers of strength i (categories in best) with this health evidence."""
    if i < t.min_identifier - _EPSILON:
        return False
    h = _health_evidence(health)
    if not HEALTH_SYSTEM_IDS.isdisjoint(best):
        h += _HEALTH_SYSTEM_CONTEXT
    return h >= t.min_health - _EPSILON and i * h >= t.phi_product - _EPSILON


def _split(findings: Iterable[Finding]) -> tuple[list[Finding], list[Finding]]:
    ids: list[Finding] = []
    health: list[Finding] = []
    for f in findings:
        if f.kind == "identifier":
            ids.append(f)
        elif f.kind in ("health", "sensitive", "provider"):
            health.append(f)
    return ids, health


class _Windows:
    """Co-occurrence windows within one segment (plus the subject's findings)."""

    def __init__(self, findings: Sequence[Finding], extra: Sequence[Finding], t: Thresholds):
        self.ids, self.health = _split(findings)
        self.extra_ids, self.extra_health = _split(extra)
        self.t = t
        self.health_starts = [f.start for f in self.health]
        self.id_starts = [f.start for f in self.ids]

    def phi_windows(self) -> Iterable[tuple[list[Finding], list[Finding]]]:
        """(identifiers, health) of every window that is PHI."""
        w = self.t.window
        # Without identifiers of its own, the segment is one window around the subject's.
        from_subject = not self.ids
        anchors = self.extra_ids if from_subject else self.ids
        # An identifier already inside a PHI window adds nothing new as an
        # anchor; skipping it keeps dense documents linear.
        done: set[int] = set()
        for anchor in anchors:
            if id(anchor) in done:
                continue
            if from_subject:
                lo, hi = 0, 1 << 62
            else:
                lo, hi = anchor.start - w, anchor.end + w
            ids = self.ids[bisect_left(self.id_starts, lo) : bisect_right(self.id_starts, hi)]
            health = self.health[
                bisect_left(self.health_starts, lo) : bisect_right(self.health_starts, hi)
            ]
            ids = ids + self.extra_ids
            health = health + self.extra_health
            if _is_phi(ids, health, self.t):
                done.update(id(f) for f in ids)
                yield ids, health


def classify(scanned: Sequence[ScannedSegment], t: Thresholds = Thresholds()) -> Classification:
    """The verdict for one message from the findings of all its segments."""
    subject = [f for s in scanned if s.segment.kind == "subject" for f in s.findings]
    reported: dict[int, Finding] = {}
    reasons: list[str] = []
    phi = False
    phi_in_subject = False
    subject_ids = {id(f) for f in subject if f.kind == "identifier"}
    extra_ids, extra_health = _split(subject)
    # Collected on the way for the bulk rules and the verdict.
    distinct: dict[str, set[str]] = {}
    people: set[frozenset[str]] = set()
    strong_ids: list[Finding] = []
    sensitive: list[Finding] = []
    bulk_candidates: list[Finding] = []  # identifiers a bulk verdict reports

    sensitive_weight = t.sensitive_weight
    row_identifier = t.row_identifier - _EPSILON
    bulk_identifiers, bulk_rows = t.bulk_identifiers, t.bulk_rows
    min_identifier = t.min_identifier - _EPSILON
    min_health = t.min_health - _EPSILON
    phi_product = t.phi_product - _EPSILON
    # A table has thousands of rows, each a segment of a few findings: the loop
    # reads fields by position and works out _strength and _health_evidence
    # in the same pass that sorts the findings.
    for s in scanned:
        seg = s.segment
        found = s.findings
        with_subject = bool(subject) and seg.kind == "body"
        if not found and not with_subject:
            continue
        ids: list[Finding] = []
        health: list[Finding] = []
        best: dict[str, float] = {}  # identifier category -> heaviest weight
        evidence: dict[str, float] = {}  # health key -> heaviest weight
        for f in found:
            kind = f[_KIND]
            if kind == "identifier":
                ids.append(f)
                category = f[_CATEGORY]
                weight = f[_WEIGHT_AT]
                if weight > best.get(category, -1.0):
                    best[category] = weight
                if category in _BULK_REPORTED:
                    bulk_candidates.append(f)
                if weight >= 1.0:
                    strong_ids.append(f)
                    if category in BULK_CATEGORIES:
                        keys = distinct.get(category)
                        if keys is None:
                            distinct[category] = keys = set()
                        # Only "at least bulk_identifiers" matters: stop counting there.
                        if len(keys) < bulk_identifiers:
                            keys.add(f[_KEY])
            elif kind in _HEALTH_KINDS:
                health.append(f)
                weight = f[_WEIGHT_AT]
                k = f[_KEY] or f[_CATEGORY]
                if weight > evidence.get(k, 0.0):
                    evidence[k] = weight
                if kind == "sensitive" and weight >= sensitive_weight:
                    sensitive.append(f)
        strong = light = 0.0
        for category, weight in best.items():
            if category in WEAK_IDENTIFIERS:
                light += weight
            else:
                strong += weight
        # Only "at least bulk_rows people" matters: stop collecting there.
        if len(ids) >= 2 and strong >= row_identifier and len(people) < bulk_rows:
            person = [f[_KEY] for f in ids if f[_CATEGORY] not in WEAK_IDENTIFIERS]
            if len(person) >= 2:
                people.add(frozenset(person))
        windows: Iterable[tuple[list[Finding], list[Finding]]]
        if seg.is_row:
            if with_subject:
                ids, health = ids + extra_ids, health + extra_health
                row_phi = _is_phi(ids, health, t)
            else:
                # _phi_of, with the strength and evidence gathered above.
                i = strong + min(light, _WEAK_CAP)
                row_phi = False
                if ids and i >= min_identifier:
                    h = min(sum(evidence.values()), _HEALTH_CAP)
                    if not HEALTH_SYSTEM_IDS.isdisjoint(best):
                        h += _HEALTH_SYSTEM_CONTEXT
                    row_phi = h >= min_health and i * h >= phi_product
            windows = [(ids, health)] if row_phi else ()
        else:
            windows = _Windows(found, subject if with_subject else (), t).phi_windows()
        for w_ids, w_health in windows:
            phi = True
            # Keyed by identity (the same finding object), so the first
            # insertion fixes each finding's place, as setdefault would.
            reported.update(zip(map(id, w_ids), w_ids, strict=True))
            reported.update(zip(map(id, w_health), w_health, strict=True))
            if not phi_in_subject and (subject_ids or seg.kind == "subject"):
                phi_in_subject = _subject_carries_phi(seg, w_ids, w_health, subject_ids, t)
    if phi:
        reasons.append("co-occurrence")

    bulk = [
        f"bulk-{category}"
        for category, keys in sorted(distinct.items())
        if len(keys) >= t.bulk_identifiers
    ]
    if len(people) >= t.bulk_rows:
        bulk.append("bulk-rows")
    if bulk:
        phi = True
        reasons.extend(bulk)
        reported.update(zip(map(id, bulk_candidates), bulk_candidates, strict=True))

    verdict: VerdictName
    if phi and sensitive:
        verdict = "sensitive"
        for f in sensitive:
            reported.setdefault(id(f), f)
    elif phi:
        verdict = "phi"
    elif strong_ids:
        verdict = "pii"
        for f in strong_ids:
            reported.setdefault(id(f), f)
    else:
        verdict = "none"
    # Provider ids alone and stray contact details are not worth reporting.
    # Heaviest first, then by place: two stable sorts instead of a tuple key per finding.
    kept = sorted(reported.values(), key=_PLACE)
    kept.sort(key=_WEIGHT, reverse=True)
    total = len(kept)
    kept = kept[: t.max_findings]
    kept.sort(key=_PLACE)
    return Classification(
        verdict=verdict,
        findings=tuple(kept),
        phi_in_subject=phi_in_subject and phi,
        reasons=tuple(reasons),
        findings_total=total,
        categories=frozenset(map(_CATEGORY_OF, reported.values())),
    )


def _subject_carries_phi(
    seg: SegmentLike,
    ids: Sequence[Finding],
    health: Sequence[Finding],
    subject_ids: set[int],
    t: Thresholds,
) -> bool:
    """Does this PHI window rely on, or expose, an identifier written in the subject?"""
    if seg.kind == "subject":
        return True
    in_subject = [f for f in ids if id(f) in subject_ids and f.weight >= t.min_identifier]
    if not in_subject:
        return False
    if any(f.weight >= 1.0 for f in in_subject):
        return True  # "Samuel Morales DOB 12/13/1952 - MRI results"
    # A name after "Re:" may be a colleague's: it only counts when the body's
    # own identifiers would not make the window PHI without it.
    body_ids = [f for f in ids if id(f) not in subject_ids]
    return not _is_phi(body_ids, health, t)
