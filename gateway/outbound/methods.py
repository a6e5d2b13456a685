"""The method stage: how each recipient's copy leaves the gateway.

A method turns (message bytes, recipients) into either bytes to hand to the
SMTP transport at a given TLS level, or a local outcome (a copy stored for the
portal, say) that needs no SMTP transaction. Today the methods are SMTP with
opportunistic STARTTLS and "hold"; S/MIME, OpenPGP, verified TLS and the portal
register here as further handlers without the scheduler changing.

The policy decision stored with the message (meta["decision"]) says what the
copy needs. Until an encryption method exists, a message that must be
encrypted is held: a temporary failure each attempt, a bounce once
delivery.retry.lifetime has passed, never a plaintext copy. Messages queued
without a decision are the gateway's own notices (DSNs, notify_sender) and
mail queued by a version before the policy stage; both leave as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gateway import log
from gateway.message import QueuedMessage
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
    key: str | None = None


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
    """Keeps the copy queued: the decision forbids every method available today."""

    async def render(
        self, method: Method, msg: QueuedMessage, data: bytes, rcpts: Sequence[str]
    ) -> Outgoing | LocalOutcome:
        """A temporary failure, so the scheduler retries with backoff and finally bounces."""
        if isinstance(decision_of(msg), Decision):
            return LocalOutcome("transient", None, HELD_ENCRYPTION)
        return LocalOutcome("transient", None, HELD_UNREADABLE)


SMTP_OPPORTUNISTIC = Method("smtp", tls="opportunistic")
HOLD = Method("hold")
# RFC 3463 X.7.0: a security or policy status.
HELD_ENCRYPTION = "4.7.0 Held: policy requires encryption; no encryption method available"
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


class MethodStage:
    """Chooses a method per recipient and dispatches rendering to its handler."""

    def __init__(self, handlers: Mapping[str, MethodHandler] | None = None) -> None:
        self._handlers: dict[str, MethodHandler] = {"smtp": SmtpHandler(), "hold": HoldHandler()}
        if handlers:
            self._handlers.update(handlers)
        self._unclassified_seen: set[str] = set()

    def choose(self, msg: QueuedMessage, rcpt: str) -> Method:
        """The method for one recipient of msg, from the policy decision stored with it.

        Encryption required (or a decision that cannot be read): hold. Otherwise
        (deliver, opportunistic_tls): SMTP with opportunistic STARTTLS.
        """
        decision = decision_of(msg)
        if decision is None:
            if not msg.envelope.is_dsn and msg.id not in self._unclassified_seen:
                # Queued before the policy stage existed, under the rules of its day.
                self._unclassified_seen.add(msg.id)
                log.event("unclassified", id=msg.id, action="deliver")
            return SMTP_OPPORTUNISTIC
        if isinstance(decision, Exception) or needs_encryption(decision):
            return HOLD
        return SMTP_OPPORTUNISTIC

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
        return await handler.render(method, msg, data, rcpts)
