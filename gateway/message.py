"""The nouns shared by inbound, spool and outbound: envelope and queue entry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

RecipientState = Literal["pending", "delivered", "bounced"]


@dataclass(frozen=True)
class ClientInfo:
    """Who handed us the message; recorded for logs and the Received header."""

    ip: str
    helo: str = ""
    tls: str | None = None  # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384", None without TLS
    auth_user: str | None = None
    connector: str | None = None


@dataclass(frozen=True)
class Envelope:
    """SMTP envelope of one accepted message."""

    mail_from: str  # "" is the null sender (bounces)
    rcpt_to: tuple[str, ...]
    received_at: float
    client: ClientInfo
    smtputf8: bool = False
    body_8bitmime: bool = False
    # Set on DSNs we generate, so a bounce of a bounce is never produced.
    is_dsn: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for the spool file)."""
        d = asdict(self)
        d["rcpt_to"] = list(self.rcpt_to)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Envelope:
        """Inverse of to_json."""
        return cls(
            mail_from=d["mail_from"],
            rcpt_to=tuple(d["rcpt_to"]),
            received_at=float(d["received_at"]),
            client=ClientInfo(**d["client"]),
            smtputf8=bool(d.get("smtputf8", False)),
            body_8bitmime=bool(d.get("body_8bitmime", False)),
            is_dsn=bool(d.get("is_dsn", False)),
        )


@dataclass(frozen=True)
class RecipientStatus:
    """Where delivery to one recipient stands."""

    address: str
    state: RecipientState = "pending"
    attempts: int = 0
    last_code: int | None = None  # last SMTP reply code (or None: no reply, e.g. no route)
    last_reply: str = ""  # "4.4.1 connection refused by mx.example" - reply text, no content
    remote: str = ""  # host the last attempt talked to
    tls: dict[str, Any] | None = None  # TLS facts of the last attempt
    method: str | None = None  # how the last attempt sent it: smtp, tls, smime, pgp, portal, hold
    method_reason: str = ""  # why that method (no content)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class QueuedMessage:
    """A message in the spool and its delivery state."""

    id: str
    envelope: Envelope
    size: int  # bytes of the (unsealed) message
    recipients: tuple[RecipientStatus, ...]
    next_attempt: float  # unix time; 0 = now
    attempts: int = 0
    delay_warned: bool = False
    meta: dict[str, Any] = field(default_factory=dict)  # later stages (policy decision, …)

    @property
    def pending(self) -> tuple[RecipientStatus, ...]:
        """Recipients still to deliver."""
        return tuple(r for r in self.recipients if r.state == "pending")

    def with_recipients(self, updated: list[RecipientStatus]) -> QueuedMessage:
        """A copy with the given recipients' statuses replaced (matched by address)."""
        by_addr = {r.address: r for r in updated}
        return replace(self, recipients=tuple(by_addr.get(r.address, r) for r in self.recipients))
