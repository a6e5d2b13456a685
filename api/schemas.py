"""Request and response bodies of the HTTP API (they make the OpenAPI spec)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# An ASCII mailbox: no spaces, brackets or separators, so nothing can be smuggled
# into a header or an SMTP command.
Address = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+$",
        max_length=254,
        examples=["someone@example.org"],
    ),
]
# One header line's worth of text: no line breaks.
Line = Annotated[str, Field(pattern=r"^[^\r\n]*$", max_length=998)]
HeaderName = Annotated[str, Field(pattern=r"^X-[A-Za-z0-9-]{1,70}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Attachment(_Body):
    """A file attached to a message."""

    filename: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f/\\]+$")]
    content_type: Annotated[
        str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
    ] = "application/octet-stream"
    content: str = Field(description="the file's bytes, base64")


class SendMessage(_Body):
    """A message the gateway composes (MIME) and sends through its pipeline."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sender: Address = Field(alias="from", description="envelope sender and From address")
    from_name: Line | None = Field(default=None, max_length=200)
    to: list[Address] = Field(min_length=1)
    cc: list[Address] = []
    bcc: list[Address] = Field(default=[], description="envelope only, never in a header")
    reply_to: Address | None = None
    subject: Line = ""
    text: str | None = Field(default=None, description="text/plain body")
    html: str | None = Field(default=None, description="text/html body")
    attachments: list[Attachment] = []
    headers: dict[HeaderName, Line] = Field(
        default={}, description="extra X- headers, e.g. X-Sealgate-Encrypt: yes"
    )


class RawMessage(_Body):
    """A complete MIME message with its envelope."""

    mail_from: Address
    rcpt_to: list[Address] = Field(min_length=1)
    mime: str = Field(description="the message (RFC 5322 bytes), base64")


class Submitted(BaseModel):
    """The gateway accepted the message; `id` is its queue id."""

    id: str
    recipients: int


class TlsFacts(BaseModel):
    """The TLS of a delivery attempt."""

    version: str | None = None
    cipher: str | None = None
    verified: bool | None = None


class PortalCopy(BaseModel):
    """The recipient's copy in the portal."""

    state: Literal["active", "revoked", "expired"]
    created_at: float
    expires_at: float
    opened_at: float | None = None
    revoked_at: float | None = None


RecipientState = Literal["pending", "deferred", "delivered", "bounced", "expired", "quarantined"]


class RecipientStatus(BaseModel):
    """Where one recipient's copy stands."""

    address: str
    state: RecipientState
    attempts: int = 0
    method: str | None = Field(default=None, description="smtp, tls, smime, pgp, portal or hold")
    method_reason: str | None = None
    code: int | None = None
    reply: str | None = None
    remote: str | None = None
    tls: TlsFacts | None = None
    delivered_at: float | None = None
    portal: PortalCopy | None = None


class MessageStatus(BaseModel):
    """A message's state, per recipient."""

    id: str
    state: Literal["queued", "delivered", "partially_delivered", "failed", "quarantined", "unknown"]
    sender: str | None = None
    received_at: float | None = None
    verdict: str | None = None
    size: int | None = None
    recipients: list[RecipientStatus]


class QuarantinedMessage(BaseModel):
    """A message a policy rule held for review (no content)."""

    id: str
    quarantined_at: float
    sender: str
    recipients: list[str]
    size: int
    verdict: str | None = None
    rules: list[str] = []


class QuarantineList(BaseModel):
    """The quarantine."""

    messages: list[QuarantinedMessage]
    unreadable: list[str] = []


class ActionResult(BaseModel):
    """What a release, delete or revoke did."""

    id: str
    action: Literal["released", "deleted", "revoked"]
    queue_id: str | None = Field(default=None, description="the released message's new queue id")
    copies: int | None = Field(default=None, description="portal copies found")
    revoked: int | None = Field(default=None, description="portal copies withdrawn by this call")


class QueueSummary(BaseModel):
    """The queue at a glance."""

    messages: int
    recipients_pending: int
    deferred_messages: int
    bytes: int
    oldest_age: float | None = None
    quarantined: int
    gateway_running: bool
