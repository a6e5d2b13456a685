"""The values extraction hands to detection: segments of text and what could not be read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

SegmentKind = Literal["subject", "header", "body", "attachment"]


@dataclass(frozen=True)
class Limits:
    """Resource bounds for extracting one message; whatever exceeds them is unscannable."""

    max_depth: int = 5  # nested message/rfc822 and archive depth
    max_part_bytes: int = 25 << 20  # a single decoded part/member
    max_total_bytes: int = 100 << 20  # total decoded + decompressed bytes per message
    max_ratio: int = 100  # zip member compression ratio (bomb guard)
    max_text_chars: int = 20_000_000
    max_parts: int = 1000
    timeout_s: float = 20.0  # wall-clock budget for one message; the rest is unscannable


@dataclass(frozen=True)
class Segment:
    """One piece of normalised text and where in the message it came from."""

    location: str
    text: str
    kind: SegmentKind
    is_row: bool = False  # one table row: the unit within which detectors look for co-occurrence


@dataclass(frozen=True)
class Unscannable:
    """A part of the message whose text could not be extracted, and why."""

    location: str
    # "encrypted-archive", "encrypted-pdf", "image-only", "parse-error",
    # "limit-exceeded" or "unsupported-type"
    reason: str


@dataclass(frozen=True)
class AttachmentInfo:
    """Facts about one attachment (or archive member), for rules that look at files."""

    location: str
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class Extraction:
    """Everything extraction learnt about one message."""

    segments: tuple[Segment, ...]
    unscannable: tuple[Unscannable, ...]
    attachments: tuple[AttachmentInfo, ...]
    headers: Mapping[str, str]  # lowercased header name -> decoded, normalised value
