"""The policy engine: raw message → extraction → detectors → verdict → rules → Decision.

Pure: no network, no disk writes, nothing from `gateway`. CPU-bound, so the
gateway calls `evaluate` from a worker thread or process, never on its event
loop. Any exception here is the caller's cue to fail closed (4xx).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence

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
    return decide(extract(raw, limits), mail_from, rcpt_to, ruleset, size=len(raw))


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
    # Address headers are the envelope's business; the subject is scanned.
    segments = [s for s in extraction.segments if s.kind != "header"]
    i = 0
    while i < len(segments):
        seg = segments[i]
        if not seg.is_row:
            scanned.append(ScannedSegment(seg, scan_segment(seg, dets)))
            i += 1
            continue
        j = i + 1
        table = _table_of(seg)
        while j < len(segments) and segments[j].is_row and _table_of(segments[j]) == table:
            j += 1
        scanned.extend(_scan_rows(segments[i:j], dets))
        i = j
    if allowed_keys:
        scanned = [
            ScannedSegment(
                s.segment,
                [f for f in s.findings if not (f.kind == "provider" and f.key in allowed_keys)],
            )
            for s in scanned
        ]
    return classify(scanned, thresholds)


def _scan_rows(rows: Sequence[Segment], dets: tuple[Detector, ...]) -> list[ScannedSegment]:
    """Scan the rows of one table as one text, then give each row its own findings.

    A spreadsheet has thousands of short rows; running every detector once per
    row would cost far more than the text itself. Rows are labelled by
    extraction ("DOB: 1980-02-01"), so each row still carries its own context.
    """
    if len(rows) == 1:
        return [ScannedSegment(rows[0], scan_segment(rows[0], dets))]
    starts: list[int] = []
    pos = 0
    for row in rows:
        starts.append(pos)
        pos += len(row.text) + 1
    joined = Segment(rows[0].location, "\n".join(r.text for r in rows), rows[0].kind, True)
    per_row: list[list[Finding]] = [[] for _ in rows]
    for f in scan_segment(joined, dets):
        k = bisect_right(starts, f.start) - 1
        row, offset = rows[k], starts[k]
        end = min(f.end - offset, len(row.text))
        per_row[k].append(
            Finding(
                f.rule,
                f.version,
                f.category,
                f.kind,
                row.location,
                f.masked,
                f.score,
                f.start - offset,
                end,
                f.weight,
                f.key,
            )
        )
    return [ScannedSegment(row, found) for row, found in zip(rows, per_row, strict=True)]


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
