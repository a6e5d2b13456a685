"""Extraction: raw message bytes to normalised text segments, failing closed.

`extract` never raises. Whatever cannot be read (encrypted, image-only,
malformed, over a limit, unknown binary) is listed in `Extraction.unscannable`
so that rules can treat it as unknown rather than as clean.
"""

from __future__ import annotations

from policies.extract.context import BudgetExhausted, Context
from policies.extract.model import (
    AttachmentInfo,
    Extraction,
    Limits,
    Segment,
    SegmentKind,
    Unscannable,
)
from policies.extract.walk import Walker

__all__ = [
    "AttachmentInfo",
    "Extraction",
    "Limits",
    "Segment",
    "SegmentKind",
    "Unscannable",
    "extract",
]


def extract(raw: bytes, limits: Limits = Limits()) -> Extraction:  # noqa: B008 - frozen
    """Extract every readable piece of text from one RFC 5322 message."""
    ctx = Context(limits)
    try:
        Walker(ctx).walk(raw)
    except BudgetExhausted:
        ctx.skip("message", "limit-exceeded")
    except Exception:
        # A bug of ours must not let the message through unscanned: say so.
        ctx.skip("message", "parse-error")
    return ctx.result()
