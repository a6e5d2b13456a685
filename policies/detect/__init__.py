"""PHI detectors: identifiers, health information, sensitive categories, provider ids.

Each detector is a named, versioned rule that takes one text segment and
returns findings; `verdict.classify` turns the findings of a message into a
verdict by co-occurrence.
"""

from __future__ import annotations

from operator import attrgetter

from policies.detect.base import (
    NO_CONTEXT,
    Detector,
    Finding,
    Kind,
    ScanContext,
    SegmentLike,
    has_digit,
    lower_same_length,
)
from policies.detect.health import (
    ClinicalContextDetector,
    IcdDetector,
    LabResultDetector,
    TermDetector,
)
from policies.detect.identifiers import (
    AddressDetector,
    DateDetector,
    EmailDetector,
    HicnDetector,
    KeywordIdDetector,
    MbiDetector,
    PhoneDetector,
    SsnDetector,
)
from policies.detect.names import PatientNameDetector
from policies.detect.provider import DeaDetector, NpiDetector

__all__ = [
    "NO_CONTEXT",
    "Detector",
    "Finding",
    "Kind",
    "ScanContext",
    "SegmentLike",
    "default_detectors",
    "scan_segment",
]


def default_detectors() -> tuple[Detector, ...]:
    """Every detector, in a fixed order."""
    return (
        SsnDetector(),
        MbiDetector(),
        HicnDetector(),
        KeywordIdDetector(),
        DateDetector(),
        PhoneDetector(),
        EmailDetector(),
        AddressDetector(),
        PatientNameDetector(),
        IcdDetector(),
        TermDetector(),
        LabResultDetector(),
        ClinicalContextDetector(),
        NpiDetector(),
        DeaDetector(),
    )


def scan_segment(
    seg: SegmentLike,
    detectors: tuple[Detector, ...] | None = None,
    ctx: ScanContext = NO_CONTEXT,
) -> list[Finding]:
    """All findings in one segment, in text order."""
    low = lower_same_length(seg.text)
    if ctx.digits and not has_digit(low):
        # Detectors of numbers (most of them) can skip a text without digits.
        ctx = ScanContext(ctx.header, digits=False)
    found: list[Finding] = []
    for detector in detectors if detectors is not None else default_detectors():
        found.extend(detector.scan(seg, low, ctx))
    found.sort(key=attrgetter("start", "end"))
    return found
