"""What every portal page shares: settings, storage, sessions, CSRF, rate limits, mail.

`Portal` is the application's state (one per process): the shared store
(portal messages via gateway/portalbox.py; sessions, codes and rate limits via
portal/store.py), the mail submitter and the templates. Sessions live in the
database, so any node can serve any request. Messages of another address
answer 404, exactly as messages that do not exist.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gateway import log
from gateway.config import HostPort, PortalConfig
from gateway.portalbox import (
    GoneError,
    KeyRequiredError,
    PortalBox,
    PortalMessage,
    RevokedError,
)
from gateway.sealing import MasterKey
from gateway.store import Store, StoreError
from portal import mime
from portal.mailer import Mailer, SubmitError
from portal.store import PortalStore, Session

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "sg_session"
KEY_COOKIE_PREFIX = "sg_key_"
_ID_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class PortalSettings:
    """What the portal needs to know beyond its own config section."""

    portal: PortalConfig
    hostname: str  # for Message-IDs and the default From of codes and notices
    submit: HostPort  # the gateway's SMTP listener the portal submits mail to

    @property
    def secure_cookies(self) -> bool:
        """Whether cookies are marked Secure (HTTPS only)."""
        if self.portal.secure_cookies is not None:
            return self.portal.secure_cookies
        return self.portal.base_url.lower().startswith("https://")

    @property
    def mail_from(self) -> str:
        """The From address of codes and notices."""
        return self.portal.mail_from or self.portal.notification_from or f"portal@{self.hostname}"


def _contrast_text(colour: str) -> str:
    """Black or white, whichever reads better on the organisation's colour (WCAG luminance)."""

    def channel(hex2: str) -> float:
        c = int(hex2, 16) / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(colour[i : i + 2]) for i in (1, 3, 5))
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#000000" if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else "#ffffff"


def mask_address(address: str) -> str:
    """The address as "p****@example.net": the owner recognises it, others learn little."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}{'*' * max(3, len(local) - 1)}@{domain}"


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%d %b %Y, %H:%M UTC", time.gmtime(ts))


def fmt_size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


class Portal:
    """The application's state: storage, mail submission, templates, settings."""

    def __init__(
        self,
        settings: PortalSettings,
        store: Store,
        master: MasterKey | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.cfg = settings.portal
        self.master = master
        self.box = PortalBox(store, master, clock=clock)
        self.db = PortalStore(store, clock=clock)
        self.mailer = Mailer(settings.submit, settings.hostname)
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["when"] = fmt_time
        self.templates.filters["size"] = fmt_size
        self.templates.filters["mask"] = mask_address
        text = _contrast_text(self.cfg.colour)
        self.theme_css = f":root{{--brand:{self.cfg.colour};--brand-text:{text}}}\n".encode()

    # --- responses -------------------------------------------------------------------

    def page(
        self,
        request: Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        """Render a page with the organisation's branding and the session's CSRF token."""
        body = self.templates.get_template(template).render(
            org=self.cfg.organisation,
            logo_url=self.cfg.logo_url,
            csrf=session.csrf if session else "",
            signed_in=session.address if session else None,
            **context,
        )
        return HTMLResponse(body, status_code=status)

    def set_session_cookie(self, response: Response, cookie: str) -> None:
        """The session cookie: Secure, HttpOnly, SameSite=Strict, gone with the browser."""
        response.set_cookie(
            self.cookie_name,
            cookie,
            path="/",
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )

    @property
    def cookie_name(self) -> str:
        """`__Host-` prefixed when Secure: the browser then refuses any Domain or Path."""
        return f"__Host-{SESSION_COOKIE}" if self.settings.secure_cookies else SESSION_COOKIE

    # --- sessions --------------------------------------------------------------------

    async def session(self, request: Request) -> Session | None:
        """The request's live session, or None."""
        cookie = request.cookies.get(self.cookie_name, "")
        return await self.db.session(cookie, self.cfg.session_idle, self.cfg.session_max)

    async def ensure_session(self, request: Request) -> tuple[Session, str | None]:
        """The live session, or a new anonymous one (with the cookie value to set)."""
        session = await self.session(request)
        if session is not None:
            return session, None
        cookie, session = await self.db.new_session()
        return session, cookie

    async def form(self, request: Request, **limits: Any) -> tuple[Session, FormData]:
        """A POSTed form that carries this session's CSRF token; 403 otherwise."""
        session = await self.session(request)
        # No session, no upload: the body is not even read (nor spooled to disk).
        form = await request.form(**limits) if session is not None else None
        token = form.get("csrf") if form is not None else None
        if (
            session is None
            or form is None
            or not isinstance(token, str)
            or not hmac.compare_digest(token.encode(), session.csrf.encode())
        ):
            log.event(
                "portal_csrf_rejected",
                level=logging.WARNING,
                path=request.url.path.split("/")[1] if request.url.path else "",
                ip=client_ip(request),
                session=session is not None,
            )
            raise HTTPException(403, "This form has expired. Please go back and try again.")
        return session, form

    # --- rate limits -------------------------------------------------------------------

    async def locked(self, address: str | None, client: str) -> bool:
        """Whether the address or the client's IP address is locked out."""
        if address is not None and await self.db.locked(f"addr:{address}"):
            return True
        return await self.db.locked(f"ip:{client}")

    async def failed(
        self, address: str | None, client: str, kind: str, reason: str = "wrong"
    ) -> None:
        """Count a failed sign-in; lock the address (and a noisy client) past the limit."""
        log.event(
            "portal_login_failed",
            level=logging.WARNING,
            recipient=address,
            ip=client,
            method=kind,
            reason=reason,
        )
        subjects = [f"ip:{client}"] + ([f"addr:{address}"] if address else [])
        for subject in subjects:
            await self.db.hit(subject, "failure")
            limit = self.cfg.lockout_failures * (3 if subject.startswith("ip:") else 1)
            if await self.db.hits(subject, "failure", self.cfg.lockout_window) >= limit:
                await self.db.lock(subject, self.cfg.lockout_time)
                log.event(
                    "portal_locked",
                    level=logging.WARNING,
                    recipient=address if subject.startswith("addr:") else None,
                    ip=client if subject.startswith("ip:") else None,
                    seconds=self.cfg.lockout_time,
                )

    # --- mail ----------------------------------------------------------------------------

    async def send_code(self, session: Session, address: str, client: str) -> str:
        """Mail a one-time code to address: "sent", "limited" or "failed"."""
        subject = f"addr:{address}"
        if await self.db.hits(subject, "code", 3600) >= self.cfg.codes_per_hour:
            log.event("portal_code_limited", level=logging.WARNING, recipient=address, ip=client)
            return "limited"
        await self.db.hit(subject, "code")
        code = await self.db.new_code(session, address, self.cfg.code_lifetime)
        minutes = max(1, round(self.cfg.code_lifetime / 60))
        text = (
            f"Your code for {self.cfg.organisation} secure messages is:\n\n    {code}\n\n"
            f"It works once, for {minutes} minutes. If you did not ask for it, you can ignore "
            "this email: nobody can read your messages without the code.\n"
        )
        data = mime.simple_message(
            self.settings.mail_from,
            address,
            f"Your {self.cfg.organisation} code: {code}",
            text,
            hostname=self.settings.hostname,
        )
        try:
            await self.mailer.send(self.settings.mail_from, [address], data, "code")
        except SubmitError:
            return "failed"
        log.event("portal_code_sent", recipient=address, ip=client)
        return "sent"

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run work after the response, keeping a reference so it is not collected midway."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def read_notice(self, message: PortalMessage, view: mime.MessageView) -> None:
        """Tell the sender, once, that the recipient opened the message (when asked for)."""
        wanted = view.read_notice if view.read_notice is not None else self.cfg.read_notification
        if not wanted or not message.sender:
            return
        try:
            if not await self.db.mark_read_notified(message.id):
                return  # another view (or node) sent it already
            text = (
                f"{message.recipient} opened the secure message you sent on "
                f"{fmt_time(message.created_at)} through {self.cfg.organisation}.\n"
                f"Reference: {message.queue_id}\n"
            )
            data = mime.simple_message(
                self.settings.mail_from,
                message.sender,
                "Your secure message was opened",
                text,
                hostname=self.settings.hostname,
            )
            try:
                await self.mailer.send(
                    self.settings.mail_from, [message.sender], data, "read_notice"
                )
            except SubmitError:
                # Not sent: the next view tries again.
                await self.db.release_read_notified(message.id)
                return
        except StoreError as exc:
            log.event("portal_read_notice_failed", level=logging.WARNING, id=message.id,
                      error=str(exc)[:300])  # fmt: skip
            return
        log.event(
            "portal_read_notice",
            id=message.id,
            queue_id=message.queue_id,
            recipient=message.recipient,
            sender=message.sender,
        )

    # --- messages ------------------------------------------------------------------------

    async def own_message(self, session: Session | None, message_id: str) -> PortalMessage:
        """The signed-in recipient's active message; 404 for anything else."""
        if session is None or session.address is None:
            raise HTTPException(401)
        if not _ID_RE.fullmatch(message_id):
            raise HTTPException(404)
        message = await self.box.get(message_id)
        if message is None or message.recipient != session.address:
            raise HTTPException(404)
        return message

    async def body(self, request: Request, message: PortalMessage) -> bytes:
        """The message's bytes; 410 when revoked/expired, 409 when the link key is missing."""
        key = request.cookies.get(KEY_COOKIE_PREFIX + message.id)
        try:
            return await self.box.read_body(message, key)
        except RevokedError:
            raise HTTPException(410, "revoked") from None
        except GoneError:
            raise HTTPException(410, "expired") from None
        except KeyRequiredError:
            raise HTTPException(409, "key") from None


def portal_of(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def redirect(url: str, cookie: str | None = None, portal: Portal | None = None) -> Response:
    response = RedirectResponse(url, status_code=303)
    if cookie is not None and portal is not None:
        portal.set_session_cookie(response, cookie)
    return response


def with_cookie(response: Response, portal: Portal, cookie: str | None) -> Response:
    if cookie is not None:
        portal.set_session_cookie(response, cookie)
    return response


async def link_message(portal: Portal, token: str) -> PortalMessage:
    message = await portal.box.by_token(token)
    if message is None:
        log.event("portal_bad_link", level=logging.WARNING)
        raise HTTPException(404, "link")
    state = message.state(portal.clock())
    if state != "active":
        raise HTTPException(410, state)
    return message


async def signed_in_session(portal: Portal, request: Request) -> Session:
    session = await portal.session(request)
    if session is None or session.address is None:
        raise HTTPException(401)
    return session
