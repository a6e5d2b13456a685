"""The policy engine: raw message → extraction → detectors → verdict → rules → Decision.

Pure: no network, no disk writes, nothing from `gateway`. CPU-bound, so the
gateway calls `evaluate` from a worker thread or process, never on its event
loop. Any exception here is the caller's cue to fail closed (4xx).
"""

from __future__ import annotations

import dataclasses
import gc
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from policies import decision
from policies.detect import Detector, default_detectors, scan_segment
from policies.detect.base import Finding
from policies.detect.provider import npi_key
from policies.detect.verdict import Classification, ScannedSegment, Thresholds, classify
from policies.extract import Extraction, Limits, Segment, Unscannable, extract
from policies.rules import Facts, Ruleset

__all__ = ["analyse", "decide", "evaluate"]

_ROW_SUFFIX = "/row "


def evaluate(
    raw: bytes,
    mail_from: str,
    rcpt_to: Sequence[str],
    ruleset: Ruleset,
    limits: Limits = Limits(),  # noqa: B008 - frozen dataclass
) -> decision.Decision:
    """Classify one message and apply the ruleset to it."""
    with _collector_paused():
        return decide(extract(raw, limits), mail_from, rcpt_to, ruleset, size=len(raw))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector off while one message is classified.

    A patient list yields hundreds of thousands of findings (tuples the
    collector tracks), and its collections would traverse them again and again
    while they pile up: 10-20% of the time of a large table. Nothing here
    builds reference cycles worth collecting early; the collector resumes after.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def decide(
    extraction: Extraction,
    mail_from: str,
    rcpt_to: Sequence[str],
    ruleset: Ruleset,
    size: int = 0,
) -> decision.Decision:
    """Apply the ruleset to an already extracted message."""
    allowed = frozenset(npi_key(n) for n in ruleset.own_npis)
    result = analyse(extraction, ruleset.thresholds, allowed_keys=allowed)
    reasons = _unscannable_reasons(extraction)
    findings = tuple(_public(f) for f in result.findings) + tuple(
        decision.Finding(
            rule="unscannable",
            category=reason,
            location=u.location,
            masked=reason,
            score=1.0,
            kind="unscannable",
        )
        for u, reason in reasons
        # Logos and banners are not worth a line in every newsletter's decision.
        if reason != "small-image"
    )
    unreadable = any(reason != "small-image" for _, reason in reasons)
    every = result.categories | {"unscannable"} if unreadable else result.categories
    facts = Facts(
        verdict=result.verdict,
        findings=findings,
        categories=every | _kinds(result.findings),
        detectors=frozenset(f.rule for f in result.findings),
        phi_in_subject=result.phi_in_subject,
        unscannable=unreadable,
        unscannable_reasons=frozenset(reason for _, reason in reasons),
        mail_from=mail_from,
        rcpt_to=tuple(rcpt_to),
        headers=extraction.headers,
        attachments=tuple(
            (a.filename.lower(), a.content_type.lower()) for a in extraction.attachments
        ),
        size=size,
    )
    return ruleset.decide(
        facts,
        reasons=result.reasons,
        findings_total=result.findings_total + len(findings) - len(result.findings),
    )


def analyse(
    extraction: Extraction,
    thresholds: Thresholds = Thresholds(),  # noqa: B008 - frozen dataclass
    detectors: tuple[Detector, ...] | None = None,
    allowed_keys: frozenset[str] = frozenset(),
) -> Classification:
    """Run the detectors over every segment and classify the message."""
    dets = detectors if detectors is not None else default_detectors()
    scanned: list[ScannedSegment] = []
    joined: dict[str, Joined] = {}
    # Address headers are the envelope's business; the subject is scanned.
    segments = [s for s in extraction.segments if s.kind != "header"]
    i = 0
    while i < len(segments):
        seg = segments[i]
        j = i + 1
        if seg.is_row:
            table = _table_of(seg)
            while j < len(segments) and segments[j].is_row and _table_of(segments[j]) == table:
                j += 1
            scanned.extend(_scan_together(segments[i:j], dets, _ROW_JOIN, joined))
        else:
            # The pages of a PDF, the parts of a body: one scan instead of one per
            # segment, which costs each detector a fixed amount however short it is.
            while j < len(segments) and not segments[j].is_row and segments[j].kind == seg.kind:
                j += 1
            scanned.extend(_scan_together(segments[i:j], dets, _SEGMENT_JOIN, joined))
        i = j
    if allowed_keys:
        scanned = [
            ScannedSegment(
                s.segment,
                [f for f in s.findings if not (f.kind == "provider" and f.key in allowed_keys)],
            )
            for s in scanned
        ]
    result = classify(scanned, thresholds)
    if not joined:
        return result
    return dataclasses.replace(result, findings=tuple(placed(f, joined) for f in result.findings))


# Rows of a table are joined by a line break: a row's context may reach the next
# row, as it does in the spreadsheet itself.
_ROW_JOIN = "\n"
# Other segments are kept apart by more characters than any detector looks
# around a match (at most 85), of a kind no pattern matches: no match, keyword
# window or phrase reaches from one segment into the next, so each gets exactly
# the findings it would get on its own.
_SEGMENT_JOIN = "\n" + "\x00" * 200 + "\n"


@dataclass(frozen=True)
class Joined:
    """Segments scanned as one text: where each began in it, to place findings back."""

    segments: Sequence[Segment]
    starts: list[int]


def _scan_together(
    segs: Sequence[Segment],
    dets: tuple[Detector, ...],
    joiner: str,
    joined: dict[str, Joined],
) -> list[ScannedSegment]:
    """Scan several segments as one text, then give each segment its own findings.

    A spreadsheet has thousands of short rows and a lab report a page per
    patient; running every detector once per segment would cost far more than
    the text itself. Rows are labelled by extraction ("DOB: 1980-02-01"), so
    each row still carries its own context.

    Each segment's findings keep the joined text's location and offsets, which
    the verdict only compares within a segment: `placed` rewrites the few that
    end up in the decision (a patient list has thousands). `joined` records how.
    """
    if len(segs) == 1:
        return [ScannedSegment(segs[0], scan_segment(segs[0], dets))]
    starts: list[int] = []
    pos = 0
    for seg in segs:
        starts.append(pos)
        pos += len(seg.text) + len(joiner)
    first = segs[0]
    found = scan_segment(
        Segment(first.location, joiner.join(s.text for s in segs), first.kind, first.is_row), dets
    )
    joined[first.location] = Joined(segs, starts)
    # Findings come in text order: each segment's are one slice of the list.
    at = [f.start for f in found]
    bounds = [bisect_left(at, start) for start in starts]
    bounds.append(len(found))
    return [ScannedSegment(seg, found[bounds[k] : bounds[k + 1]]) for k, seg in enumerate(segs)]


def placed(f: Finding, joined: dict[str, Joined]) -> Finding:
    """A finding of a joined scan, with the location and offsets of its own segment."""
    group = joined.get(f.location)
    if group is None:
        return f
    k = bisect_right(group.starts, f.start) - 1
    seg, offset = group.segments[k], group.starts[k]
    return f._replace(
        location=seg.location,
        start=f.start - offset,
        end=min(f.end - offset, len(seg.text)),
    )


# Pictures below this size are logos and banners rather than scanned pages.
SMALL_IMAGE_BYTES = 256 << 10
# Fax servers deliver scanned pages as TIFF, whatever their size.
_DOCUMENT_IMAGES = ("image/tiff", "image/x-tiff")


def _unscannable_reasons(extraction: Extraction) -> list[tuple[Unscannable, str]]:
    """Each unscannable part with its reason; small pictures become "small-image"."""
    by_location = {a.location: a for a in extraction.attachments}
    out = []
    for u in extraction.unscannable:
        reason = u.reason
        info = by_location.get(u.location)
        if (
            reason == "image-only"
            and info is not None
            and info.content_type.lower().startswith("image/")
            and info.content_type.lower() not in _DOCUMENT_IMAGES
            and info.size < SMALL_IMAGE_BYTES
        ):
            reason = "small-image"
        out.append((u, reason))
    return out


def _public(f: Finding) -> decision.Finding:
    return decision.Finding(
        rule=f.rule,
        category=f.category,
        location=f.location,
        masked=f.masked,
        score=f.score,
        kind=f.kind,
        version=f.version,
    )


def _kinds(findings: Iterable[Finding]) -> frozenset[str]:
    return frozenset(f.kind for f in findings)


def _table_of(seg: Segment) -> str:
    return seg.location.rpartition(_ROW_SUFFIX)[0]
