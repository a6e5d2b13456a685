"""Per-message extraction state: budgets, and the segments and findings gathered so far."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import MappingProxyType
from typing import NoReturn

from policies.extract.model import (
    AttachmentInfo,
    Extraction,
    Limits,
    Segment,
    SegmentKind,
    Unscannable,
)
from policies.extract.normalize import normalize

_new_object = object.__new__

# A container format hands each embedded file back to the walker through this:
# (decoded bytes, location, filename, declared content type).
Nested = Callable[[bytes, str, str, str], None]


class LimitExceeded(Exception):
    """One part is too big, too deep or too compressed: that part alone is unscannable."""


class BudgetExhausted(LimitExceeded):
    """A per-message budget (time, bytes, text, parts) ran out: nothing more is scanned."""


class Context:
    """Budgets for one message and the output collected while walking it."""

    def __init__(self, limits: Limits) -> None:
        """Start the clock and the counters for one message."""
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout_s
        self.total_bytes = 0
        self.parts = 0
        self.text_chars = 0
        self.headers: dict[str, str] = {}
        self._segments: list[Segment] = []
        self._unscannable: dict[tuple[str, str], Unscannable] = {}
        self._attachments: list[AttachmentInfo] = []

    def check_time(self) -> None:
        """Stop the whole extraction once the wall-clock budget is spent."""
        if time.monotonic() > self.deadline:
            raise BudgetExhausted("time budget spent")

    def charge_bytes(self, size: int) -> None:
        """Account for `size` decoded or decompressed bytes of one part."""
        if size > self.limits.max_part_bytes:
            raise LimitExceeded("part too large")
        if self.total_bytes + size > self.limits.max_total_bytes:
            raise BudgetExhausted("message byte budget spent")
        self.total_bytes += size

    def remaining_bytes(self) -> int:
        """Bytes one more part may still decode to."""
        return max(
            0, min(self.limits.max_part_bytes, self.limits.max_total_bytes - self.total_bytes)
        )

    def count_part(self) -> None:
        """Account for one more MIME part or archive member."""
        self.parts += 1
        if self.parts > self.limits.max_parts:
            raise BudgetExhausted("too many parts")

    def text(self, location: str, text: str, kind: SegmentKind, is_row: bool = False) -> None:
        """Normalise `text` and keep it as a segment (empty text is dropped)."""
        clean = normalize(text)
        if not clean:
            return
        total = self.text_chars + len(clean)
        if total > self.limits.max_text_chars:
            self._overflow(location, clean, kind, is_row)
        self.text_chars = total
        # As Segment(location, clean, kind, is_row) builds it, without the frozen
        # dataclass __init__ (one object.__setattr__ per field): a message may hold
        # thousands of table rows.
        segment = _new_object(Segment)
        fields = segment.__dict__
        fields["location"] = location
        fields["text"] = clean
        fields["kind"] = kind
        fields["is_row"] = is_row
        self._segments.append(segment)

    def row(self, location: str, text: str, kind: SegmentKind) -> None:
        """Keep one table row: text(location, text, kind, is_row=True)."""
        self.text(location, text, kind, True)

    def _overflow(self, location: str, clean: str, kind: SegmentKind, is_row: bool) -> NoReturn:
        """Keep what still fits of a text past the budget, and stop."""
        room = self.limits.max_text_chars - self.text_chars
        if room > 0:
            self._segments.append(Segment(location, clean[:room], kind, is_row))
            self.text_chars += room
        raise BudgetExhausted("text budget spent")

    def skip(self, location: str, reason: str) -> None:
        """Record that `location` could not be scanned, and why (once per pair)."""
        self._unscannable.setdefault((location, reason), Unscannable(location, reason))

    def attachment(self, location: str, filename: str, content_type: str, size: int) -> None:
        """Record one attachment or archive member."""
        self._attachments.append(AttachmentInfo(location, filename, content_type, size))

    def result(self) -> Extraction:
        """Freeze what was collected."""
        return Extraction(
            segments=tuple(self._segments),
            unscannable=tuple(self._unscannable.values()),
            attachments=tuple(self._attachments),
            headers=MappingProxyType(dict(self.headers)),
        )
