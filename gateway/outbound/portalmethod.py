"""The "portal" delivery method: store the message for pickup, mail the recipient a link.

For each recipient the original message is deposited in the portal box
(gateway/portalbox.py: sealed at rest, in the shared store every node reads),
and the copy that leaves by SMTP is only a notification with a link to it
(gateway/outbound/portalnotice.py). The notification never carries the
subject, body or attachment names, so it may travel with opportunistic TLS.

Failing closed: if the deposit (or anything before the notification is
ready) fails, the recipient's delivery is a temporary failure and is retried;
nothing of the message leaves. A retry reuses the stored copy and sends a new
link; the previous link stops working.

How long a copy stays readable: `portal.expiry`, unless the message asked for
its own with `X-Sealgate-Expires: 7d` (s, m, h, d or w; at most 365 days).
`X-Sealgate-Portal: sealed-link` asks for sealed-link mode for one message
(the handler's `sealed_links` turns it on for all). The inbound stage strips
X-Sealgate-* fields before queueing, and may record them in
`meta["control"]` ({lower-case field name: value}), which is read first.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway import log
from gateway.config import PortalConfig
from gateway.message import QueuedMessage
from gateway.outbound.methods import LocalOutcome, Method, Outgoing
from gateway.outbound.portalnotice import header_value, notification, original_sender
from gateway.outbound.portalnotice import sender_notice as sender_notice
from gateway.portalbox import PortalBox, RevokedError
from gateway.store import StoreError

__all__ = ["MAX_EXPIRY", "PortalHandler", "message_expiry", "parse_expiry", "sender_notice"]

EXPIRES_FIELD = "X-Sealgate-Expires"
MODE_FIELD = "X-Sealgate-Portal"
MAX_EXPIRY = 365 * 86400.0
_EXPIRY_RE = re.compile(r"(\d{1,9})\s*([smhdw])", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# RFC 3463 X.3.0: other or undefined mail system status (our storage is down).
STORAGE_UNAVAILABLE = "4.3.0 Secure portal storage temporarily unavailable"
# RFC 3463 X.7.0: security status; a person withdrew the message on purpose.
WITHDRAWN = "5.7.0 Portal message withdrawn before the recipient was notified"
ONE_RECIPIENT = "4.3.5 Portal delivery takes one recipient per copy"


def parse_expiry(text: str) -> float | None:
    """Seconds for "7d", "12h", "90m"...; None when malformed, zero or over 365 days."""
    match = _EXPIRY_RE.fullmatch(text.strip())
    if not match:
        return None
    seconds = float(int(match[1]) * _UNITS[match[2].lower()])
    return seconds if 0 < seconds <= MAX_EXPIRY else None


def control_value(msg: QueuedMessage, data: bytes, field: str) -> str | None:
    """An application control field: as recorded at inbound, else in the message itself."""
    control: Any = msg.meta.get("control")
    if isinstance(control, Mapping):
        value = control.get(field.lower())
        if isinstance(value, str):
            return value
    return header_value(data, field)


def message_expiry(msg: QueuedMessage, data: bytes, default: float) -> float:
    """How long this message's portal copies stay readable, in seconds."""
    text = control_value(msg, data, EXPIRES_FIELD)
    if text is None:
        return default
    seconds = parse_expiry(text)
    if seconds is None:
        log.event("portal_expiry_ignored", id=msg.id, reason="malformed or out of range")
        return default
    return seconds


READ_NOTICE_FIELD = "X-Sealgate-Read-Notice"


def portal_copy(msg: QueuedMessage, data: bytes) -> bytes:
    """The bytes to deposit: the message, carrying the sender's read-notice wish for the portal.

    Inbound takes X-Sealgate-* fields out of the message (they are not for
    recipients) and keeps them with the queue entry; the portal reads this one
    from the stored copy, which only the recipient's portal session shows.
    """
    control: Any = msg.meta.get("control")
    if not isinstance(control, Mapping):
        return data
    value = control.get(READ_NOTICE_FIELD.lower())
    if not isinstance(value, str) or header_value(data, READ_NOTICE_FIELD) is not None:
        return data
    clean = value.replace("\r", " ").replace("\n", " ").strip()
    return f"{READ_NOTICE_FIELD}: {clean}\r\n".encode() + data


class PortalHandler:
    """Renders a portal recipient's copy: deposit the message, return the notification."""

    def __init__(
        self,
        box: PortalBox,
        portal: PortalConfig,
        *,
        sealed_links: bool = False,
        hostname: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._box = box
        self._portal = portal
        self._sealed_links = sealed_links
        self._hostname = hostname or socket.getfqdn()
        self._clock = clock

    def _sealed(self, msg: QueuedMessage, data: bytes) -> bool:
        if self._sealed_links:
            return True
        mode = control_value(msg, data, MODE_FIELD)
        return mode is not None and mode.strip().lower() == "sealed-link"

    async def render(
        self, method: Method, msg: QueuedMessage, data: bytes, rcpts: Sequence[str]
    ) -> Outgoing | LocalOutcome:
        """Deposit data for the one recipient; the notification to send, or why not."""
        if len(rcpts) != 1:
            return LocalOutcome("transient", None, ONE_RECIPIENT)
        rcpt = rcpts[0]
        try:
            sealed = self._sealed(msg, data)
            deposit = await self._box.deposit(
                msg.id,
                rcpt,
                msg.envelope.mail_from,
                portal_copy(msg, data),
                expires_in=message_expiry(msg, data, self._portal.expiry),
                sealed_link=sealed,
            )
            note = notification(
                recipient=rcpt,
                sender=original_sender(data, msg.envelope.mail_from),
                link=deposit.link(self._portal.base_url),
                expires_at=deposit.message.expires_at,
                portal=self._portal,
                hostname=self._hostname,
                now=self._clock(),
            )
        except RevokedError:
            log.event("portal_withdrawn", id=msg.id, rcpt=rcpt)
            return LocalOutcome("permanent", None, WITHDRAWN)
        except Exception as exc:
            # Fail closed: whatever broke, the message stays queued and nothing leaves.
            # A store error's text names the database and its reason, never message content.
            detail = str(exc) if isinstance(exc, StoreError) else ""
            log.event(
                "portal_failed", id=msg.id, rcpt=rcpt, error=type(exc).__name__, detail=detail
            )
            return LocalOutcome("transient", None, STORAGE_UNAVAILABLE)
        log.event(
            "portal_deposited",
            id=deposit.message.id,
            queue_id=msg.id,
            recipient=deposit.message.recipient,
            sender=msg.envelope.mail_from,
            size=deposit.message.size,
            expires=int(deposit.message.expires_at),
            reused=deposit.reused,
            sealed_link=sealed,
        )
        return Outgoing(note, tls="opportunistic")
