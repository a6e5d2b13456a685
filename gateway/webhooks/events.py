"""Which gateway events become webhook events, and which of their facts they carry.

An explicit allow-list, as for the audit trail (gateway/audit/catalog.py): a
field not named here never reaches a receiver. Payloads carry ids, addresses,
methods, reply codes, TLS facts and times; never subjects, bodies, matched
text, findings, tokens or keys. This module imports nothing from the gateway,
so the configuration can validate event names against it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WebhookSpec:
    """A gateway event's webhook type and its fields, as (gateway name, payload name)."""

    type: str
    fields: tuple[tuple[str, str], ...]
    extra: tuple[tuple[str, Any], ...] = ()


def _m(kind: str, *fields: str, **extra: Any) -> WebhookSpec:
    pairs = tuple((f.split("=")[0], f.split("=")[-1]) for f in fields)
    return WebhookSpec(kind, pairs, tuple(extra.items()))


_DELIVERY = ("id=message_id", "rcpt=recipient")
_TLS = ("tls_version", "tls_cipher", "tls_verified")

# gateway event name -> webhook event; "a=b" renames field a to b in the payload.
EVENT_MAP: Mapping[str, WebhookSpec] = {
    "received": _m("received", "id=message_id", "sender", "recipients", "size"),
    "quarantined": _m("quarantined", "id=quarantine_id", "sender", "recipients", "size"),
    "released": _m("released", "id=quarantine_id", "queue_id=message_id", "verdict"),
    "delivered": _m(
        "delivered", *_DELIVERY, "method", "code", "remote", *_TLS, "delay=delay_seconds"
    ),
    "deferred": _m("deferred", *_DELIVERY, "code", "reason", "attempts", "next_attempt"),
    "bounced": _m("bounced", *_DELIVERY, "code", "reason", "attempts", expired=False),
    "expired": _m("bounced", *_DELIVERY, "code", "reason", "attempts", expired=True),
    "portal_deposited": _m(
        "portal_deposited", "id=portal_id", "queue_id=message_id", "recipient", "expires"
    ),
    "portal_viewed": _m("portal_opened", "id=portal_id", "queue_id=message_id", "recipient"),
    "portal_downloaded": _m(
        "portal_downloaded", "id=portal_id", "queue_id=message_id", "recipient"
    ),
    "portal_replied": _m(
        "portal_replied", "id=portal_id", "queue_id=message_id", "recipient", "reply_id"
    ),
    "portal_login": _m("portal_login", "recipient", "method"),
}

# Every webhook event type an endpoint may subscribe to ("test" is what
# `sealgate webhooks test` sends).
WEBHOOK_EVENTS: frozenset[str] = frozenset({m.type for m in EVENT_MAP.values()} | {"test"})

# A payload field longer than this is cut (SMTP replies can be long).
_MAX_TEXT = 500


@dataclass(frozen=True)
class WebhookEvent:
    """One event to send: its type, id, time and PHI-free data."""

    type: str
    event_id: str
    at: float
    data: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        """The JSON document receivers get."""
        return {
            "event": self.type,
            "event_id": self.event_id,
            "timestamp": iso_time(self.at),
            "data": self.data,
        }


def iso_time(at: float) -> str:
    """UTC, to the millisecond, as receivers expect ("2026-01-02T03:04:05.678Z")."""
    second = int(at)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{stamp}.{int((at - second) * 1000):03d}Z"


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    text = str(value)
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT]


def to_webhook(
    name: str, fields: Mapping[str, Any], at: float | None = None
) -> WebhookEvent | None:
    """The webhook event for a gateway event, or None when it has none."""
    spec = EVENT_MAP.get(name)
    if spec is None:
        return None
    data: dict[str, Any] = {}
    for source, target in spec.fields:
        if source in fields:
            data[target] = _plain(fields[source])
    data.update(spec.extra)
    return WebhookEvent(spec.type, uuid.uuid4().hex, time.time() if at is None else at, data)


def probe_event() -> WebhookEvent:
    """The event `sealgate webhooks test` sends."""
    return WebhookEvent("test", uuid.uuid4().hex, time.time(), {"message": "Sealgate webhook test"})
