"""The method stage: how each recipient's copy leaves the gateway.

A method turns (message bytes, recipients) into either bytes to hand to the
SMTP transport at a given TLS level, or a local outcome that needs no SMTP
transaction. Handlers: "smtp" (the message as it is, at a TLS level), "smime",
"pgp" (message-level encryption), "portal" (stored for pickup; the recipient
gets a notification) and "hold".

The policy decision stored with the message (meta["decision"]) says what the
copy needs. Ordinary mail leaves by SMTP with opportunistic TLS. Mail that
must be encrypted goes, per recipient, by the selector's choice
(gateway.outbound.selection); when no method fits it is held: a temporary
failure each attempt, a bounce once delivery.retry.lifetime has passed, never
a plaintext copy. Messages queued without a decision are the gateway's own
notices (DSNs, portal notices) and mail queued by a version before the policy
stage; both leave as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gateway import log
from gateway.message import QueuedMessage
from gateway.outbound.encrypted import already_encrypted
from gateway.outbound.selection import PER_RECIPIENT, Choice, Selector, subject_has_phi
from policies.decision import Decision

TlsLevel = Literal["opportunistic", "required", "verified"]
LocalStatus = Literal["delivered", "transient", "permanent"]


@dataclass(frozen=True)
class Method:
    """The choice made for one recipient: a handler name and the TLS level it needs.

    subject: when not None, the subject the copy shows outside its encryption
    (the real one carries PHI and stays inside only). key: which recipient
    key or certificate a message-level method encrypts to (fingerprint).
    """

    name: str
    tls: TlsLevel = "opportunistic"
    subject: str | None = None
    key: str | None = None  # for "hold": why nothing fits


@dataclass(frozen=True)
class Planned:
    """The method for one recipient and the reason it was chosen (for the delivery record)."""

    method: Method
    reason: str


@dataclass(frozen=True)
class Outgoing:
    """A copy ready for the SMTP transport: its final bytes (before DKIM) and TLS level."""

    data: bytes
    tls: TlsLevel


@dataclass(frozen=True)
class LocalOutcome:
    """A method finished the recipients itself; no SMTP transaction follows."""

    status: LocalStatus
    code: int | None
    text: str


class MethodHandler(Protocol):
    """Renders one copy of a message for a group of recipients sharing a method."""

    async def render(
        self, method: Method, msg: QueuedMessage, data: bytes, rcpts: Sequence[str]
    ) -> Outgoing | LocalOutcome:
        """The bytes to send (and how), or the outcome when handled locally."""
        ...


class SmtpHandler:
    """Plain SMTP: the message goes out unchanged at the method's TLS level."""

    async def render(
        self, method: Method, msg: QueuedMessage, data: bytes, rcpts: Sequence[str]
    ) -> Outgoing | LocalOutcome:
        """Return the message as it is; the transport negotiates TLS."""
        return Outgoing(data, method.tls)


class HoldHandler:
    """Keeps the copy queued: no method the decision allows fits this recipient now."""

    async def render(
        self, method: Method, msg: QueuedMessage, data: bytes, rcpts: Sequence[str]
    ) -> Outgoing | LocalOutcome:
        """A temporary failure, so the scheduler retries with backoff and finally bounces."""
        if not isinstance(decision_of(msg), Decision):
            return LocalOutcome("transient", None, HELD_UNREADABLE)
        if method.key:
            return LocalOutcome("transient", None, f"{HELD_ENCRYPTION} ({method.key})")
        return LocalOutcome("transient", None, HELD_ENCRYPTION)


SMTP_OPPORTUNISTIC = Method("smtp", tls="opportunistic")
HOLD = Method("hold")
# RFC 3463 X.7.0: a security or policy status.
HELD_ENCRYPTION = "4.7.0 Held: policy requires encryption; no encryption method fits"
HELD_UNREADABLE = "4.7.0 Held: the message's policy decision cannot be read"
_PROTECTED_VERDICTS = ("phi", "sensitive")


def decision_of(msg: QueuedMessage) -> Decision | Exception | None:
    """The stored decision, None when there is none, or the error that makes it unreadable."""
    raw: Any = msg.meta.get("decision")
    if raw is None:
        return None
    try:
        if not isinstance(raw, dict):
            raise TypeError("not a mapping")
        return Decision.from_json(raw)
    except (KeyError, TypeError, ValueError) as exc:
        return exc


def needs_encryption(decision: Decision) -> bool:
    """Whether no copy may leave in plaintext under this decision.

    A released quarantine carries a decision whose deciding action was
    "quarantine"; a person let it out, but the baseline still holds: PHI and
    sensitive mail is not delivered in plaintext.
    """
    names = {a.name for a in decision.actions}
    if decision.min_strength is not None or "reject" in names:
        return True
    return "quarantine" in names and decision.verdict in _PROTECTED_VERDICTS


_CONTROL_PREFIX = b"x-sealgate-"


def strip_control_headers(data: bytes) -> bytes:
    """The message without X-Sealgate-* headers (instructions to us, not for recipients)."""
    end = data.find(b"\r\n\r\n")
    head = data[: end + 2] if end >= 0 else data
    if _CONTROL_PREFIX not in head.lower():
        return data
    lines = head.split(b"\r\n")
    kept: list[bytes] = []
    skipping = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.lower().startswith(_CONTROL_PREFIX)
        if not skipping:
            kept.append(line)
    new_head = b"\r\n".join(kept)
    return new_head + data[end + 2 :] if end >= 0 else new_head


class MethodStage:
    """Chooses a method per recipient and dispatches rendering to its handler."""

    def __init__(
        self,
        handlers: Mapping[str, MethodHandler] | None = None,
        *,
        selector: Selector | None = None,
    ) -> None:
        self._handlers: dict[str, MethodHandler] = {"smtp": SmtpHandler(), "hold": HoldHandler()}
        if handlers:
            self._handlers.update(handlers)
        self._selector = selector
        self._unclassified_seen: set[str] = set()

    async def plan(
        self, msg: QueuedMessage, data: bytes, rcpts: Sequence[str]
    ) -> dict[str, Planned]:
        """The method for each recipient of msg, from the policy decision stored with it."""
        decision = decision_of(msg)
        if decision is None:
            if not msg.envelope.is_dsn and msg.id not in self._unclassified_seen:
                # Queued before the policy stage existed, under the rules of its day.
                self._unclassified_seen.add(msg.id)
                log.event("unclassified", id=msg.id, action="deliver")
            return dict.fromkeys(rcpts, Planned(SMTP_OPPORTUNISTIC, "no policy decision"))
        if isinstance(decision, Exception):
            return dict.fromkeys(rcpts, Planned(HOLD, "policy decision unreadable"))
        if not needs_encryption(decision):
            return dict.fromkeys(rcpts, Planned(SMTP_OPPORTUNISTIC, "policy allows plain delivery"))
        sealed = already_encrypted(data)
        if sealed is not None:
            # The sender encrypted it end to end; a second layer would only get in the way.
            reason = f"already encrypted by the sender ({sealed})"
            return dict.fromkeys(rcpts, Planned(SMTP_OPPORTUNISTIC, reason))
        if self._selector is None:
            return dict.fromkeys(rcpts, Planned(HOLD, "no encryption method configured"))
        neutral = self._selector.neutral_subject if subject_has_phi(decision) else None
        out: dict[str, Planned] = {}
        for rcpt in rcpts:
            choice = await self._selector.choose(msg, decision, rcpt)
            out[rcpt] = Planned(self._method(choice, neutral), choice.reason)
        return out

    @staticmethod
    def _method(choice: Choice, neutral: str | None) -> Method:
        if choice.name == "tls":
            return Method("smtp", tls="verified")
        if choice.name == "hold":
            return Method("hold", key=choice.reason)
        return Method(choice.name, subject=neutral, key=choice.key)

    def fallback(self, msg: QueuedMessage, method: Method) -> Planned | None:
        """The portal for a protected copy whose verified TLS failed at delivery, if allowed."""
        if method.name != "smtp" or method.tls != "verified" or self._selector is None:
            return None
        decision = decision_of(msg)
        if not isinstance(decision, Decision) or not self._selector.portal_allowed(msg):
            return None
        neutral = self._selector.neutral_subject if subject_has_phi(decision) else None
        return Planned(Method("portal", subject=neutral), "verified TLS failed at delivery")

    @staticmethod
    def per_recipient(method: Method) -> bool:
        """Whether copies by this method are made one per recipient (never revealing Bcc)."""
        return method.name in PER_RECIPIENT

    async def render(
        self, method: Method, msg: QueuedMessage, data: bytes, rcpts: Sequence[str]
    ) -> Outgoing | LocalOutcome:
        """Run the method's handler; an unknown method fails closed (temporary)."""
        handler = self._handlers.get(method.name)
        if handler is None:
            # Fail closed: never fall back to another method (it might be plaintext).
            return LocalOutcome(
                "transient", None, f"4.3.5 Delivery method {method.name} unavailable"
            )
        if method.name != "portal":
            # The portal reads X-Sealgate-Expires from the stored copy; no one else sees them.
            data = strip_control_headers(data)
        return await handler.render(method, msg, data, rcpts)
