"""The method stage: how each recipient's copy leaves the gateway.

A method turns (message bytes, recipients) into either bytes to hand to the
SMTP transport at a given TLS level, or a local outcome (a copy stored for the
portal, say) that needs no SMTP transaction. Today the only method is SMTP with
opportunistic STARTTLS; S/MIME, OpenPGP, verified TLS and the portal register
here as further handlers without the scheduler changing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.message import QueuedMessage

TlsLevel = Literal["opportunistic", "required", "verified"]
LocalStatus = Literal["delivered", "transient", "permanent"]


@dataclass(frozen=True)
class Method:
    """The choice made for one recipient: a handler name and the TLS level it needs."""

    name: str
    tls: TlsLevel = "opportunistic"


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


SMTP_OPPORTUNISTIC = Method("smtp", tls="opportunistic")


class MethodStage:
    """Chooses a method per recipient and dispatches rendering to its handler."""

    def __init__(self, handlers: Mapping[str, MethodHandler] | None = None) -> None:
        self._handlers: dict[str, MethodHandler] = {"smtp": SmtpHandler()}
        if handlers:
            self._handlers.update(handlers)

    def choose(self, msg: QueuedMessage, rcpt: str) -> Method:
        """The method for one recipient of msg.

        Later stages read the policy decision in msg.meta and the recipient's
        known keys here; until they exist every copy is SMTP with opportunistic TLS.
        """
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
