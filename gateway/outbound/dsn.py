"""Delivery status notifications (RFC 3464): the bounce and delay reports we send.

A report carries a human-readable part, the machine-readable delivery status
and the original message's header block only: the body never leaves in a
bounce (it may hold PHI, and the sender has it anyway).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import Literal

from gateway.message import Envelope, RecipientStatus

Action = Literal["failed", "delayed"]

# A header block beyond this is cut at a line boundary: a bounce need not carry
# a megabyte of Received lines, and some receivers refuse large DSNs.
MAX_HEADER_BYTES = 64 * 1024
# RFC 5322 §2.1.1 caps a line at 998 octets; leave room for the field name.
_MAX_FIELD_TEXT = 900

_ENHANCED_RE = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")
_UNPRINTABLE_RE = re.compile(r"[^\x20-\x7e]+")
_MSGID_RE = re.compile(rb"^Message-ID:[ \t]*(<[!-;=?-~]{1,250}>)[ \t]*$", re.IGNORECASE)


@dataclass(frozen=True)
class DsnRecipient:
    """What the report says about one recipient."""

    address: str
    action: Action
    status: str  # enhanced status code, e.g. "5.1.1"
    code: int | None  # the remote SMTP reply code, None when no server answered
    reply: str  # the reply text or our own reason; never message content
    remote: str  # host name of the server that answered, "" if none
    last_attempt: float | None


@dataclass(frozen=True)
class Dsn:
    """A rendered report and whether it needs an SMTPUTF8/8BITMIME transaction."""

    data: bytes
    utf8: bool


def _clean(text: str) -> str:
    """One line of printable ASCII, capped: remote replies go into header fields."""
    return _UNPRINTABLE_RE.sub(" ", text).strip()[:_MAX_FIELD_TEXT]


def enhanced_status(code: int | None, reply: str, action: Action, *, expired: bool = False) -> str:
    """The RFC 3463 status for a recipient, taken from the reply when it carries one."""
    if expired:
        return "5.4.7"  # RFC 3463: delivery time expired
    want = "5" if action == "failed" else "4"
    m = _ENHANCED_RE.match(reply)
    if m and m.group(1) == want:
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
    if m:
        return f"{want}.{m.group(2)}.{m.group(3)}"
    return f"{want}.0.0"


def recipient_entry(
    status: RecipientStatus, action: Action, *, expired: bool = False, at: float | None = None
) -> DsnRecipient:
    """Describe one recipient's delivery status for a report."""
    return DsnRecipient(
        address=status.address,
        action=action,
        status=enhanced_status(status.last_code, status.last_reply, action, expired=expired),
        code=status.last_code,
        reply=status.last_reply,
        # The transport writes "mx1.example [192.0.2.1]:25"; Remote-MTA wants the name.
        remote=status.remote.split(" ", 1)[0] if status.remote else "",
        last_attempt=at,
    )


def header_block(data: bytes, limit: int = MAX_HEADER_BYTES) -> bytes:
    """The original message's header section, with CRLF line ends, without the body."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        lf_end = data.find(b"\n\n")
        end = lf_end if lf_end >= 0 else len(data)
    head = data[:end]
    if len(head) > limit:
        cut = head.rfind(b"\n", 0, limit)
        head = head[: cut if cut > 0 else 0]
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    # A cut may leave a folded continuation as the first line; drop empty tails.
    return b"".join(line.rstrip(b"\r") + b"\r\n" for line in lines if line.strip(b"\r"))


def _date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, tz=UTC))


def _address_field(address: str, utf8: bool) -> str:
    if utf8:
        return f"utf-8; {address}"  # RFC 6533 §3: the utf-8 address type
    return f"rfc822; {address}"


def _human_text(
    hostname: str,
    queue_id: str,
    recipients: Sequence[DsnRecipient],
    retry_until: float | None,
) -> str:
    failed = [r for r in recipients if r.action == "failed"]
    delayed = [r for r in recipients if r.action == "delayed"]
    out = [f"This is the mail system at host {hostname}.", ""]
    if failed:
        out += [
            "Your message could not be delivered to one or more recipients.",
            "It has been returned: the original headers are attached below.",
            "",
        ]
    if delayed:
        out += ["Delivery of your message to some recipients is delayed.", ""]
        if retry_until is not None:
            out += [f"The system will keep trying until {_date(retry_until)}.", ""]
        out += ["You do not need to send the message again.", ""]
    out += [f"Queue ID: {queue_id}", ""]
    for r in recipients:
        reason = _clean(r.reply) or "no reason given"
        who = f"host {r.remote} said: " if r.remote and r.code is not None else ""
        code = f"{r.code} " if r.code is not None else ""
        verb = "failed" if r.action == "failed" else "delayed"
        out.append(f"<{r.address}> ({verb}): {who}{code}{reason}")
    out.append("")
    return "\r\n".join(out)


def _status_part(
    hostname: str,
    queue_id: str,
    envelope: Envelope,
    recipients: Sequence[DsnRecipient],
    retry_until: float | None,
    utf8: bool,
) -> str:
    fields = [
        f"Reporting-MTA: dns; {hostname}",
        f"X-Sealgate-Queue-ID: {queue_id}",
        f"Arrival-Date: {_date(envelope.received_at)}",
        "",
    ]
    for r in recipients:
        fields.append(f"Final-Recipient: {_address_field(r.address, utf8)}")
        fields.append(f"Action: {r.action}")
        fields.append(f"Status: {r.status}")
        if r.remote:
            fields.append(f"Remote-MTA: dns; {_clean(r.remote)}")
        if r.code is not None:
            fields.append(f"Diagnostic-Code: smtp; {r.code} {_clean(r.reply)}".rstrip())
        elif r.reply:
            # No server answered (DNS, refused connection, expiry): our own reason,
            # in an X- diagnostic type as RFC 3464 §2.3.6 allows.
            fields.append(f"Diagnostic-Code: X-Sealgate; {_clean(r.reply)}")
        if r.last_attempt is not None:
            fields.append(f"Last-Attempt-Date: {_date(r.last_attempt)}")
        if r.action == "delayed" and retry_until is not None:
            fields.append(f"Will-Retry-Until: {_date(retry_until)}")
        fields.append("")
    return "\r\n".join(fields)


def build_dsn(
    *,
    hostname: str,
    queue_id: str,
    envelope: Envelope,
    recipients: Sequence[DsnRecipient],
    original_headers: bytes,
    now: float,
    retry_until: float | None = None,
) -> Dsn:
    """Render a multipart/report DSN to envelope.mail_from about the given recipients."""
    if not recipients:
        raise ValueError("a delivery status notification needs at least one recipient")
    headers = header_block(original_headers)
    utf8 = not (
        envelope.mail_from.isascii()
        and all(r.address.isascii() for r in recipients)
        and headers.isascii()
    )
    boundary = f"{secrets.token_hex(12)}/{hostname}"
    while boundary.encode() in headers:
        boundary = f"{secrets.token_hex(12)}/{hostname}"

    any_failed = any(r.action == "failed" for r in recipients)
    subject = (
        "Undelivered Mail Returned to Sender"
        if any_failed
        else "Delayed Mail (still being retried)"
    )
    top = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{envelope.mail_from}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: {make_msgid(domain=hostname)}",
        "Auto-Submitted: auto-replied",
    ]
    for line in headers.split(b"\r\n"):
        m = _MSGID_RE.match(line)
        if m:
            original_id = m.group(1).decode("ascii")
            top += [f"In-Reply-To: {original_id}", f"References: {original_id}"]
            break
    top += [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
    ]
    human = _human_text(hostname, queue_id, recipients, retry_until)
    status = _status_part(hostname, queue_id, envelope, recipients, retry_until, utf8)
    # RFC 6533 §6: internationalised reports use the "global" media types.
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    headers_type = "message/global-headers" if utf8 else "text/rfc822-headers"
    charset, cte = ("utf-8", "8bit") if utf8 else ("us-ascii", "7bit")
    parts = [
        "\r\n".join(top),
        f"--{boundary}",
        "Content-Description: Notification",
        f"Content-Type: text/plain; charset={charset}",
        f"Content-Transfer-Encoding: {cte}",
        "",
        human,
        f"--{boundary}",
        "Content-Description: Delivery report",
        f"Content-Type: {status_type}",
        f"Content-Transfer-Encoding: {cte}",
        "",
        status,
        f"--{boundary}",
        "Content-Description: Undelivered message headers",
        f"Content-Type: {headers_type}",
        f"Content-Transfer-Encoding: {cte}",
        "",
    ]
    body = "\r\n".join(parts).encode("utf-8") + b"\r\n" + headers
    body += f"\r\n--{boundary}--\r\n".encode("ascii")
    return Dsn(data=body, utf8=utf8)
