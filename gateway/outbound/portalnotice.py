"""The mails the portal method writes: the recipient's notification, the sender's notice.

Neither carries anything of the message itself: no subject, no body text, no
attachment names. The notification holds the organisation's wording and
branding (portal.* in the configuration) and the link; the sender's notice
names the recipients who were sent a link, which the sender chose anyway.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import SMTP, SMTPUTF8
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid, parseaddr

from gateway.config import PortalConfig
from gateway.message import QueuedMessage

_PLACEHOLDER_RE = re.compile(r"\{(organisation|sender|link)\}")
_SPACE_RE = re.compile(r"\s+")
_HEADER_END_RE = re.compile(rb"\r?\n\r?\n")
# RFC 5322 §3.6.1 allows much more, but a From header this long is not a person.
_MAX_HEADER_BLOCK = 256 * 1024
# Python folds a long header before its first word ("Subject:\r\n text"), which some
# clients show with a leading space; RFC 5322 §2.1.1 allows lines up to 998 octets.
_POLICY = SMTP.clone(max_line_length=998)
_POLICY_UTF8 = SMTPUTF8.clone(max_line_length=998)


@dataclass(frozen=True)
class Sender:
    """Who the notification says the message is from."""

    address: str
    name: str = ""

    def display(self) -> str:
        """ "Name <address>", or the address alone."""
        return f"{self.name} <{self.address}>" if self.name else self.address


def header_block(data: bytes) -> bytes:
    """The message's header section (up to and without the blank line)."""
    match = _HEADER_END_RE.search(data, 0, _MAX_HEADER_BLOCK)
    return data[: match.start()] + b"\r\n" if match else data[:_MAX_HEADER_BLOCK]


def header_value(data: bytes, name: str) -> str | None:
    """The first value of a header field of the message, unfolded, or None."""
    try:
        parsed = BytesHeaderParser(policy=default_policy).parsebytes(header_block(data))
        value = parsed.get(name)
    except (ValueError, TypeError, LookupError, UnicodeError):
        return None
    return None if value is None else _SPACE_RE.sub(" ", str(value)).strip()


def original_sender(data: bytes, envelope_from: str) -> Sender | None:
    """The first address of the message's From field, else the envelope sender."""
    try:
        parsed = BytesHeaderParser(policy=default_policy).parsebytes(header_block(data))
        field = parsed.get("From")
        addresses = getattr(field, "addresses", ()) if field is not None else ()
        for a in addresses:
            if a.username and a.domain:
                return Sender(a.addr_spec, _SPACE_RE.sub(" ", a.display_name or "").strip())
    except (ValueError, TypeError, LookupError, UnicodeError, IndexError):
        pass  # a From field we cannot read: fall back to the envelope
    return Sender(envelope_from) if envelope_from else None


def _one_line(text: str) -> str:
    return _SPACE_RE.sub(" ", text).strip()


def _fill(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER_RE.sub(lambda m: values[m[1]], template)


def _date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d %B %Y, %H:%M UTC")


def _domain(field: str, fallback: str) -> str:
    domain = parseaddr(field)[1].rpartition("@")[2]
    return domain if domain and domain.isascii() else fallback


def _address_header(address: str, name: str = "") -> Address | str:
    local, _, domain = address.rpartition("@")
    try:
        return Address(display_name=name, username=local, domain=domain)
    except (ValueError, TypeError, IndexError):
        return f"<{address}>"


def _html(portal: PortalConfig, text: str, values: dict[str, str], link: str, until: str) -> str:
    esc = {k: html.escape(v) for k, v in values.items()}
    href = html.escape(link, quote=True)
    esc["link"] = f'<a href="{href}" style="color:{portal.colour}">{html.escape(link)}</a>'
    paragraphs = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [
            _PLACEHOLDER_RE.sub(lambda m: esc[m[1]], html.escape(li)) for li in block.split("\n")
        ]
        paragraphs.append(f'<p style="margin:0 0 16px">{"<br>".join(lines)}</p>')
    org = html.escape(portal.organisation)
    logo = ""
    if portal.logo_url and portal.logo_url.startswith(("https://", "http://")):
        logo = (
            f'<img src="{html.escape(portal.logo_url, quote=True)}" alt="{org}" '
            'style="display:block;max-height:48px;border:0;margin:0 0 16px">'
        )
    colour = portal.colour  # validated as #rrggbb by the configuration
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
        '<body style="margin:0;padding:24px;background:#f3f4f6;'
        'font-family:Arial,Helvetica,sans-serif;font-size:15px;line-height:1.5;color:#1f2933">\n'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
        f'style="max-width:560px;margin:0 auto;background:#ffffff;border-top:4px solid {colour}">'
        '<tr><td style="padding:24px">\n'
        f"{logo}"
        f'<h1 style="margin:0 0 16px;font-size:20px;color:{colour}">{org}</h1>\n'
        + "\n".join(paragraphs)
        + f'\n<p style="margin:24px 0"><a href="{href}" style="display:inline-block;'
        f"padding:12px 20px;background:{colour};color:#ffffff;text-decoration:none;"
        'border-radius:4px;font-weight:bold">Open the secure message</a></p>\n'
        f'<p style="margin:0;font-size:12px;color:#616e7c">This link works until '
        f"{html.escape(until)}. If the button does not work, copy this address into your "
        f"browser: {html.escape(link)}</p>\n"
        "</td></tr></table>\n</body></html>\n"
    )


def notification(
    *,
    recipient: str,
    sender: Sender | None,
    link: str,
    expires_at: float,
    portal: PortalConfig,
    hostname: str,
    now: float | None = None,
) -> bytes:
    """The recipient's mail: wording and branding from portal.*, the link, nothing else."""
    now = time.time() if now is None else now
    sender_text = sender.display() if sender else portal.organisation
    values = {"organisation": portal.organisation, "sender": sender_text, "link": link}
    until = _day(expires_at)
    text = _fill(portal.notification_text, values).rstrip() + (
        f"\n\nThis link works until {until}.\n"
    )
    utf8 = not (recipient.isascii() and (sender is None or sender.address.isascii()))
    msg = EmailMessage(policy=_POLICY_UTF8 if utf8 else _POLICY)
    if portal.notification_from:
        msg["From"] = portal.notification_from
        from_address = portal.notification_from
    elif sender is not None:
        msg["From"] = _address_header(sender.address, sender.name)
        from_address = sender.address
    else:
        from_address = f"MAILER-DAEMON@{hostname}"
        msg["From"] = _address_header(from_address, portal.organisation)
    msg["To"] = _address_header(recipient)
    msg["Subject"] = _one_line(_fill(portal.notification_subject, values)) or "Secure message"
    msg["Date"] = _date(now)
    msg["Message-ID"] = make_msgid(domain=_domain(from_address, hostname))
    # RFC 3834 §5: automatic; out-of-office replies to it would reach no one useful.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, charset="utf-8")
    msg.add_alternative(
        _html(portal, portal.notification_text, values, link, until),
        subtype="html",
        charset="utf-8",
    )
    return msg.as_bytes()


def sender_notice(
    msg: QueuedMessage, rcpts: Sequence[str], portal: PortalConfig, hostname: str
) -> bytes:
    """An RFC 5322 message to msg.envelope.mail_from saying which recipients got a portal link.

    Addresses only, no content; the caller queues it (as the gateway's own mail).
    """
    if not msg.envelope.mail_from:
        raise ValueError("the null sender gets no notices")
    addresses = [msg.envelope.mail_from, *rcpts]
    utf8 = not all(a.isascii() for a in addresses)
    lines = [
        f"This is the mail gateway at {hostname}, about a message you sent on "
        f"{_date(msg.envelope.received_at)}.",
        "",
        f"It went through the secure portal of {portal.organisation}. These recipients "
        "were sent a link to read it there, after confirming their email address:",
        "",
        *(f"  <{r}>" for r in rcpts),
        "",
        f"Reference: {msg.id}. If the message should not be read, ask your mail "
        f"administrator to withdraw it (sealgate portal revoke {msg.id}).",
        "",
    ]
    out = EmailMessage(policy=_POLICY_UTF8 if utf8 else _POLICY)
    out["From"] = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    out["To"] = _address_header(msg.envelope.mail_from)
    out["Subject"] = "Your message was delivered through the secure portal"
    out["Date"] = _date(time.time())
    out["Message-ID"] = make_msgid(domain=hostname)
    out["Auto-Submitted"] = "auto-generated"
    out.set_content("\n".join(lines), charset="utf-8")
    return out.as_bytes()
