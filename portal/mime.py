"""Reading a stored message for display, and writing a recipient's reply.

The stored copy is the original RFC 5322 message. The portal shows its text
and HTML bodies (HTML sanitised with nh3: no scripts, no event handlers, no
forms, no styles that load anything; remote images dropped unless the reader
asks for them) and lists its attachments. A reply goes back to the original
participants only: the server works out the addresses, the form cannot add any.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.parser import BytesParser

import nh3

_PARSER = BytesParser(policy=email.policy.default)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CSS_URL = re.compile(r"url\s*\(|expression\s*\(|@import|behavior\s*:", re.IGNORECASE)

# Tags and attributes a mail body may keep; anything else is dropped with its script.
_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "col", "colgroup",
    "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "i", "img", "ins", "li", "ol", "p", "pre", "q", "s", "small", "span", "strike", "strong",
    "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul",
}  # fmt: skip
_COMMON_ATTRS = {"align", "valign", "width", "height", "style", "title", "dir", "lang"}
_ATTRS: dict[str, set[str]] = {
    "*": _COMMON_ATTRS,
    "a": {"href"},
    "img": {"src", "alt", "border"},
    "font": {"color", "face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "bgcolor"},
    "td": {"colspan", "rowspan", "bgcolor", "nowrap"},
    "th": {"colspan", "rowspan", "bgcolor", "nowrap"},
    "col": {"span"},
    "colgroup": {"span"},
    "ol": {"start", "type"},
}
_URL_SCHEMES = {"http", "https", "mailto", "cid"}
# Layout and colour only: no positioning (no overlays faking the portal's own page).
_STYLE_PROPERTIES = {
    "background-color", "border", "border-bottom", "border-collapse", "border-color",
    "border-left", "border-right", "border-style", "border-top", "border-width", "color",
    "font", "font-family", "font-size", "font-style", "font-weight", "height", "line-height",
    "list-style-type", "margin", "margin-bottom", "margin-left", "margin-right", "margin-top",
    "max-width", "padding", "padding-bottom", "padding-left", "padding-right", "padding-top",
    "text-align", "text-decoration", "vertical-align", "white-space", "width",
}  # fmt: skip


_INLINE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
_INLINE_MAX = 2 * 1024 * 1024


class MessageFormatError(Exception):
    """The stored message cannot be shown."""


@dataclass(frozen=True)
class Attachment:
    """One attachment: its position among the message's parts, name, type and size."""

    index: int
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class MessageView:
    """What the reading page shows of a message."""

    subject: str
    sender: str
    to: list[str]
    cc: list[str]
    date: str
    message_id: str | None
    text: str | None
    html: str | None  # raw HTML; sanitise with safe_html before showing
    attachments: list[Attachment]
    # Content-ID → data: URI of an inline image (the sandboxed frame cannot fetch them)
    inline: dict[str, str] = field(default_factory=dict)
    read_notice: bool | None = None  # X-Sealgate-Read-Notice, when the sender set it
    reply_to: list[str] = field(default_factory=list)


def _clean(text: str) -> str:
    return _CONTROL.sub("", text)


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except (ValueError, TypeError, IndexError):
        return ""
    return _clean(str(value)) if value is not None else ""


def _addresses(msg: Message, name: str) -> list[str]:
    try:
        values = msg.get_all(name) or []
        pairs = email.utils.getaddresses([str(v) for v in values])
    except (ValueError, TypeError, IndexError):
        return []
    return [_clean(addr).strip() for _, addr in pairs if "@" in addr]


def _parts(msg: Message) -> list[Message]:
    """Every leaf part, in order (its position is the part index used in URLs)."""
    return [p for p in msg.walk() if not p.is_multipart()]


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError):
        return b""
    return data if isinstance(data, bytes) else b""


def _text(part: Message) -> str:
    raw = _payload(part)
    charset = part.get_content_charset() or "utf-8"
    try:
        return raw.decode(charset, errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


def _filename(part: Message, index: int) -> str:
    try:
        name = part.get_filename()
    except (ValueError, TypeError, IndexError):
        name = None
    name = _clean(name or "").replace("/", "_").replace("\\", "_").strip(" .")
    return name[:200] or f"attachment-{index}"


def _is_attachment(part: Message) -> bool:
    disposition = (part.get_content_disposition() or "").lower()
    if disposition == "attachment":
        return True
    return part.get_content_maintype() not in ("text",) or part.get_filename() is not None


def _read_notice(msg: Message) -> bool | None:
    value = _header(msg, "X-Sealgate-Read-Notice").strip().lower()
    if value in ("yes", "true", "1", "on"):
        return True
    if value in ("no", "false", "0", "off"):
        return False
    return None


def parse(data: bytes) -> MessageView:
    """The parts of a stored message the portal shows."""
    try:
        msg = _PARSER.parsebytes(data)
    except Exception as exc:  # the email package raises many kinds on broken input
        raise MessageFormatError(f"unreadable message: {type(exc).__name__}") from None
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    inline: dict[str, str] = {}
    for index, part in enumerate(_parts(msg)):
        ctype = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        cid = _header(part, "Content-ID").strip().strip("<>")
        if ctype == "text/plain" and disposition != "attachment" and part.get_filename() is None:
            # Later inline text parts (a footer, a forwarded note) follow the first.
            text = _text(part) if text is None else f"{text}\n\n{_text(part)}"
            continue
        if ctype == "text/html" and disposition != "attachment" and html is None:
            if part.get_filename() is None:
                html = _text(part)
                continue
        if cid and ctype in _INLINE_TYPES:
            payload = _payload(part)
            if len(payload) <= _INLINE_MAX:
                inline[cid] = f"data:{ctype};base64,{base64.b64encode(payload).decode()}"
        if _is_attachment(part):
            size = len(_payload(part))
            attachments.append(Attachment(index, _filename(part, index), ctype, size))
    return MessageView(
        subject=_header(msg, "Subject") or "(no subject)",
        sender=(_addresses(msg, "From") or [""])[0],
        to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"),
        date=_header(msg, "Date"),
        message_id=_header(msg, "Message-ID").strip() or None,
        text=text,
        html=html,
        attachments=attachments,
        inline=inline,
        read_notice=_read_notice(msg),
        reply_to=_addresses(msg, "Reply-To"),
    )


def part_bytes(data: bytes, index: int) -> tuple[bytes, str, str] | None:
    """(content, filename, content type) of leaf part number index, or None."""
    try:
        msg = _PARSER.parsebytes(data)
    except Exception:
        return None
    parts = _parts(msg)
    if not 0 <= index < len(parts):
        return None
    part = parts[index]
    return _payload(part), _filename(part, index), part.get_content_type()


def safe_html(html: str, *, inline: dict[str, str], remote: bool) -> str:
    """Sanitised HTML: cid: images inlined as data: URIs, remote images only when asked."""

    def attribute(tag: str, attr: str, value: str) -> str | None:
        if attr == "style" and _CSS_URL.search(value):
            return None  # CSS that could fetch something
        if tag == "img" and attr == "src":
            lowered = value.strip().lower()
            if lowered.startswith("cid:"):
                return inline.get(value.strip()[4:].strip("<>"))
            if lowered.startswith(("http:", "https:")):
                return value if remote else None
            return None
        return value

    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRS,
        url_schemes=_URL_SCHEMES,
        attribute_filter=attribute,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
        filter_style_properties=_STYLE_PROPERTIES,
    )


def has_remote_images(html: str) -> bool:
    """Whether the HTML would load images from elsewhere."""
    return re.search(r"<img[^>]+src\s*=\s*[\"']?\s*https?:", html, re.IGNORECASE) is not None


# --- replies ------------------------------------------------------------------------------


def reply_recipients(view: MessageView, me: str, *, reply_all: bool) -> list[str]:
    """Who a reply goes to: the sender (or Reply-To), plus To and Cc for reply-all; never me."""
    me = me.lower()
    first = view.reply_to or ([view.sender] if view.sender else [])
    out: list[str] = []
    candidates = [*first, *(view.to + view.cc if reply_all else [])]
    for addr in candidates:
        low = addr.lower()
        if low != me and low not in (a.lower() for a in out):
            out.append(addr)
    return out


@dataclass(frozen=True)
class Upload:
    """A file the recipient attached to a reply."""

    filename: str
    content_type: str
    data: bytes


def _reply_subject(subject: str) -> str:
    clean = subject.replace("\r", " ").replace("\n", " ").strip()
    return clean if clean.lower().startswith("re:") else f"Re: {clean}"


def _quote(view: MessageView) -> str:
    if not view.text:
        return ""
    lines = view.text.replace("\r\n", "\n").split("\n")
    return f"\n\nOn {view.date}, {view.sender} wrote:\n" + "\n".join(f"> {x}" for x in lines)


def compose_reply(
    view: MessageView,
    me: str,
    rcpts: Sequence[str],
    body: str,
    uploads: Sequence[Upload],
    *,
    hostname: str,
    portal_id: str,
) -> tuple[bytes, str]:
    """The reply (RFC 5322, from me to rcpts, marked confidential) and its Message-ID."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = me
    others = [r for r in rcpts[1:]]
    msg["To"] = rcpts[0]
    if others:
        msg["Cc"] = ", ".join(others)
    msg["Subject"] = _reply_subject(view.subject)
    msg["Date"] = email.utils.formatdate(time.time(), localtime=False)
    message_id = f"<{secrets.token_hex(16)}@{hostname}>"
    msg["Message-ID"] = message_id
    if view.message_id:
        msg["In-Reply-To"] = view.message_id
        msg["References"] = view.message_id
    # RFC 4021's Sensitivity: the gateway's policy requires encryption for it, so the
    # reply never travels in plaintext even when it carries no recognisable PHI.
    msg["Sensitivity"] = "Company-Confidential"
    msg["X-Sealgate-Portal-Reply"] = portal_id
    msg.set_content(_clean(body).replace("\r\n", "\n") + _quote(view), charset="utf-8")
    for up in uploads:
        maintype, _, subtype = up.content_type.partition("/")
        if not maintype or not subtype or "\n" in up.content_type:
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(up.data, maintype=maintype, subtype=subtype, filename=up.filename)
    return msg.as_bytes(), message_id


def simple_message(
    sender: str, to: str, subject: str, text: str, *, hostname: str, html: str | None = None
) -> bytes:
    """A short notice (one-time code, read notification) from the portal."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(time.time(), localtime=False)
    msg["Message-ID"] = f"<{secrets.token_hex(16)}@{hostname}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, charset="utf-8")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8")
    return msg.as_bytes()
