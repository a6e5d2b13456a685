"""Signing in: the notification's link, one-time codes, passwords, TOTP, signing out.

A recipient arrives with `/m/{token}`, proves they own the address (a code
mailed to it, or their password plus TOTP when they turned it on) and lands on
the message. A returning recipient signs in at `/signin` and lands in their
inbox. Every failure counts towards the lock-out of the address and of the
client's IP address (portal/web.py).
"""

from __future__ import annotations

import re
import urllib.parse
from email.utils import parseaddr

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import log
from portal import credentials
from portal.store import CodeResult, Session
from portal.web import (
    KEY_COOKIE_PREFIX,
    Portal,
    client_ip,
    link_message,
    portal_of,
    redirect,
    with_cookie,
)

_KEY_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def _pending(session: Session, kind: str) -> str | None:
    """The address this session is half-way through signing in as, by kind of step.

    "code": a code was mailed to it from /signin; "totp": its password was right
    and the authenticator code is due. Kept apart so that one step never stands
    in for the other.
    """
    value = session.pending_address or ""
    prefix = f"{kind}:"
    return value[len(prefix) :] if value.startswith(prefix) else None


async def link(request: Request) -> Response:
    """A notification's link: who the message is for, and how to open it."""
    portal = portal_of(request)
    token = request.path_params["token"]
    message = await link_message(portal, token)
    session, cookie = await portal.ensure_session(request)
    recipient = await portal.db.recipient(message.recipient)
    signed_in = session.address == message.recipient
    response: Response = portal.page(
        request,
        "link.html",
        session,
        token=token,
        message=message,
        has_password=bool(recipient and recipient.password_hash),
        already=signed_in,
        next_url=f"/messages/{message.id}",
        sealed=message.sealed_link,
    )
    if signed_in and not message.sealed_link:
        response = redirect(f"/messages/{message.id}")
    return with_cookie(response, portal, cookie)


async def link_key(request: Request) -> Response:
    """Sealed link: the browser hands over the key from the URL fragment; it goes in a cookie.

    The key is never stored on the server: it lives in a cookie scoped to the
    message's pages and is used only while a request is being answered.
    """
    portal = portal_of(request)
    message = await link_message(portal, request.path_params["token"])
    _session, form = await portal.form(request)
    key = form.get("key")
    if not message.sealed_link or not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise HTTPException(400, "This link is incomplete. Open it again from your email.")
    response = PlainTextResponse("ok")
    response.set_cookie(
        KEY_COOKIE_PREFIX + message.id,
        key,
        path=f"/messages/{message.id}",
        secure=portal.settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )
    return response


async def link_send_code(request: Request) -> Response:
    """Mail a one-time code to the message's recipient."""
    portal = portal_of(request)
    token = request.path_params["token"]
    message = await link_message(portal, token)
    session, _form = await portal.form(request)
    client = client_ip(request)
    if await portal.locked(message.recipient, client):
        return portal.page(request, "locked.html", session, status=429)
    outcome = await portal.send_code(session, message.recipient, client)
    if outcome == "limited":
        return portal.page(request, "limited.html", session, status=429)
    if outcome == "failed":
        return portal.page(request, "error.html", session, status=503, reason="mail")
    return redirect(f"/m/{token}/code")


async def link_code_form(request: Request) -> Response:
    """Where the recipient types the code."""
    portal = portal_of(request)
    token = request.path_params["token"]
    message = await link_message(portal, token)
    session, cookie = await portal.ensure_session(request)
    response = portal.page(
        request,
        "code.html",
        session,
        action=f"/m/{token}/verify",
        resend=f"/m/{token}",
        address=message.recipient,
        error=None,
    )
    return with_cookie(response, portal, cookie)


async def _finish_sign_in(
    portal: Portal, request: Request, session: Session, address: str, how: str, next_url: str
) -> Response:
    cookie, _new = await portal.db.sign_in(session, address)
    await portal.db.clear_failures(f"addr:{address}")
    await portal.db.touch_login(address)
    log.event("portal_login", recipient=address, ip=client_ip(request), method=how)
    return redirect(next_url, cookie, portal)


async def _verify_code(
    portal: Portal,
    request: Request,
    address: str | None,
    action: str,
    resend: str,
    next_url: str,
) -> Response:
    session, form = await portal.form(request)
    client = client_ip(request)
    code = form.get("code")
    code_text = code if isinstance(code, str) else ""
    pending = address or _pending(session, "code")
    if await portal.locked(pending, client):
        return portal.page(request, "locked.html", session, status=429)
    result = CodeResult.NONE
    if pending is not None:
        result = await portal.db.check_code(session, pending, code_text, portal.cfg.code_attempts)
    if result == CodeResult.OK and pending is not None:
        return await _finish_sign_in(portal, request, session, pending, "code", next_url)
    await portal.failed(pending, client, "code")
    if await portal.locked(pending, client):
        return portal.page(request, "locked.html", session, status=429)
    errors = {
        CodeResult.WRONG: "That code is not right. Check the email and try again.",
        CodeResult.EXHAUSTED: "That code has been tried too many times. Ask for a new one.",
        CodeResult.NONE: "That code has expired or was already used. Ask for a new one.",
    }
    return portal.page(
        request,
        "code.html",
        session,
        status=400,
        action=action,
        resend=resend,
        address=pending or "",
        error=errors.get(result, errors[CodeResult.NONE]),
    )


async def link_verify(request: Request) -> Response:
    """Check the code; signed in, the recipient goes straight to the message."""
    portal = portal_of(request)
    token = request.path_params["token"]
    message = await link_message(portal, token)
    return await _verify_code(
        portal,
        request,
        message.recipient,
        f"/m/{token}/verify",
        f"/m/{token}",
        f"/messages/{message.id}",
    )


async def _password_step(
    portal: Portal, request: Request, session: Session, address: str, password: str, next_url: str
) -> Response:
    client = client_ip(request)
    if await portal.locked(address, client):
        return portal.page(request, "locked.html", session, status=429)
    recipient = await portal.db.recipient(address)
    stored = recipient.password_hash if recipient else None
    if not await credentials.check_password(stored, password) or recipient is None:
        await portal.failed(address, client, "password")
        if await portal.locked(address, client):
            return portal.page(request, "locked.html", session, status=429)
        return portal.page(
            request,
            "signin.html",
            session,
            status=400,
            error="That email address and password do not match.",
            address=address,
        )
    if recipient.totp_enabled:
        await portal.db.set_pending(session, f"totp:{address}")
        return redirect(f"/signin/totp?next={urllib.parse.quote(next_url, safe='/')}")
    return await _finish_sign_in(portal, request, session, address, "password", next_url)


async def link_password(request: Request) -> Response:
    """Password sign-in from a message link."""
    portal = portal_of(request)
    message = await link_message(portal, request.path_params["token"])
    session, form = await portal.form(request)
    password = form.get("password")
    return await _password_step(
        portal,
        request,
        session,
        message.recipient,
        password if isinstance(password, str) else "",
        f"/messages/{message.id}",
    )


async def signin_page(request: Request) -> Response:
    """Returning recipients: password, or a code mailed to the address."""
    portal = portal_of(request)
    session, cookie = await portal.ensure_session(request)
    if session.address:
        return redirect("/inbox")
    response = portal.page(request, "signin.html", session, error=None, address="")
    return with_cookie(response, portal, cookie)


def _form_address(form: FormData) -> str | None:
    raw = form.get("address")
    if not isinstance(raw, str) or len(raw) > 320:
        return None
    address = parseaddr(raw.strip())[1].lower()
    return address if "@" in address and " " not in address else None


async def signin_password(request: Request) -> Response:
    """Password sign-in at /signin."""
    portal = portal_of(request)
    session, form = await portal.form(request)
    address = _form_address(form)
    password = form.get("password")
    if address is None:
        return portal.page(
            request,
            "signin.html",
            session,
            status=400,
            error="Enter the email address the messages were sent to.",
            address="",
        )
    text = password if isinstance(password, str) else ""
    return await _password_step(portal, request, session, address, text, "/inbox")


async def signin_code(request: Request) -> Response:
    """Mail a code to an address, when it has portal messages (the answer looks the same)."""
    portal = portal_of(request)
    session, form = await portal.form(request)
    address = _form_address(form)
    client = client_ip(request)
    if address is None:
        return portal.page(
            request,
            "signin.html",
            session,
            status=400,
            error="Enter the email address the messages were sent to.",
            address="",
        )
    if await portal.locked(address, client):
        return portal.page(request, "locked.html", session, status=429)
    await portal.db.set_pending(session, f"code:{address}")
    messages = await portal.box.for_recipient(address)
    if any(m.state(portal.clock()) == "active" for m in messages):
        outcome = await portal.send_code(session, address, client)
        if outcome == "limited":
            return portal.page(request, "limited.html", session, status=429)
        if outcome == "failed":
            return portal.page(request, "error.html", session, status=503, reason="mail")
    else:
        # Nobody learns from this page which addresses have messages.
        log.event("portal_code_unknown_address", ip=client)
    return redirect("/signin/code")


async def signin_code_form(request: Request) -> Response:
    """Enter the code sent from /signin."""
    portal = portal_of(request)
    session, cookie = await portal.ensure_session(request)
    response = portal.page(
        request,
        "code.html",
        session,
        action="/signin/verify",
        resend="/signin",
        address=_pending(session, "code") or "",
        error=None,
    )
    return with_cookie(response, portal, cookie)


async def signin_verify(request: Request) -> Response:
    """Check a code entered after /signin."""
    portal = portal_of(request)
    return await _verify_code(portal, request, None, "/signin/verify", "/signin", "/inbox")


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/inbox"


async def totp_page(request: Request) -> Response:
    """The second step after a password, when TOTP is on."""
    portal = portal_of(request)
    session = await portal.session(request)
    if session is None or _pending(session, "totp") is None:
        return redirect("/signin")
    next_url = _safe_next(request.query_params.get("next"))
    return portal.page(request, "totp.html", session, error=None, next_url=next_url)


async def totp_submit(request: Request) -> Response:
    """Check the authenticator code and finish signing in."""
    portal = portal_of(request)
    session, form = await portal.form(request)
    address = _pending(session, "totp")
    if address is None:
        return redirect("/signin")
    next_raw = form.get("next")
    next_url = _safe_next(next_raw if isinstance(next_raw, str) else None)
    client = client_ip(request)
    if await portal.locked(address, client):
        return portal.page(request, "locked.html", session, status=429)
    recipient = await portal.db.recipient(address)
    code = form.get("code")
    secret = None
    if recipient and recipient.totp_secret and portal.master is not None:
        secret = credentials.open_totp(portal.master, address, recipient.totp_secret)
    if secret and isinstance(code, str) and credentials.check_totp(secret, code):
        return await _finish_sign_in(portal, request, session, address, "password+totp", next_url)
    await portal.failed(address, client, "totp")
    if await portal.locked(address, client):
        return portal.page(request, "locked.html", session, status=429)
    return portal.page(
        request,
        "totp.html",
        session,
        status=400,
        error="That code is not right. Use the newest code from your app.",
        next_url=next_url,
    )


async def signout(request: Request) -> Response:
    """End the session."""
    portal = portal_of(request)
    session, _form = await portal.form(request)
    await portal.db.end_session(session)
    if session.address:
        log.event("portal_logout", recipient=session.address)
    response = redirect("/signin")
    response.delete_cookie(
        portal.cookie_name,
        path="/",
        secure=portal.settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )
    return response


def routes() -> list[BaseRoute]:
    """The sign-in pages."""
    token = "{token:str}"  # noqa: S105 - a route parameter, not a secret
    return [
        Route(f"/m/{token}", link),
        Route(f"/m/{token}/key", link_key, methods=["POST"]),
        Route(f"/m/{token}/send", link_send_code, methods=["POST"]),
        Route(f"/m/{token}/code", link_code_form),
        Route(f"/m/{token}/verify", link_verify, methods=["POST"]),
        Route(f"/m/{token}/password", link_password, methods=["POST"]),
        Route("/signin", signin_page),
        Route("/signin/password", signin_password, methods=["POST"]),
        Route("/signin/send", signin_code, methods=["POST"]),
        Route("/signin/code", signin_code_form),
        Route("/signin/verify", signin_verify, methods=["POST"]),
        Route("/signin/totp", totp_page),
        Route("/signin/totp", totp_submit, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
    ]
