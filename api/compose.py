"""Turning a JSON message (fields and base64 attachments) into MIME bytes."""

from __future__ import annotations

import base64
import binascii
import email.policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from api.schemas import SendMessage

# CRLF line ends and folding as SMTP wants them; bodies in 7-bit transfer encodings.
_POLICY = email.policy.SMTP


class ComposeError(ValueError):
    """The fields do not make a message; the text names the field."""


def decode_base64(text: str, where: str) -> bytes:
    """Strict base64 (whitespace allowed between lines); ComposeError names where."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ComposeError(f"{where}: not valid base64") from None


def compose(msg: SendMessage, hostname: str) -> bytes:
    """The message as RFC 5322 bytes with CRLF line ends."""
    out = EmailMessage(policy=_POLICY)
    try:
        if msg.from_name:
            user, _, domain = msg.sender.rpartition("@")
            out["From"] = HeaderAddress(display_name=msg.from_name, username=user, domain=domain)
        else:
            out["From"] = msg.sender
        out["To"] = ", ".join(msg.to)
        if msg.cc:
            out["Cc"] = ", ".join(msg.cc)
        if msg.reply_to:
            out["Reply-To"] = msg.reply_to
        out["Subject"] = msg.subject
        out["Date"] = formatdate(localtime=False, usegmt=True)
        out["Message-ID"] = make_msgid(domain=hostname)
        for name, value in msg.headers.items():
            out[name] = value
    except (ValueError, TypeError) as exc:
        raise ComposeError(f"headers: {exc}") from None
    if msg.text is not None and msg.html is not None:
        out.set_content(msg.text, cte="quoted-printable")
        out.add_alternative(msg.html, subtype="html", cte="quoted-printable")
    elif msg.html is not None:
        out.set_content(msg.html, subtype="html", cte="quoted-printable")
    else:
        out.set_content(msg.text or "", cte="quoted-printable")
    for i, att in enumerate(msg.attachments):
        data = decode_base64(att.content, f"attachments.{i}.content")
        maintype, _, subtype = att.content_type.lower().partition("/")
        if maintype in ("multipart", "message"):
            # Those may not be base64-encoded (RFC 2045 6.4); send such a message raw.
            raise ComposeError(f"attachments.{i}.content_type: {maintype}/* cannot be attached")
        out.add_attachment(data, maintype=maintype, subtype=subtype, filename=att.filename)
    return out.as_bytes(policy=_POLICY)
