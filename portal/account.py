"""The recipient's account: a password, and an authenticator app (TOTP) on top.

A recipient can always sign in with a code mailed to their address; a
password (argon2id) and TOTP (secret sealed under the master key) are extras.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import log
from portal import credentials
from portal.web import portal_of, signed_in_session


async def account_page(request: Request) -> Response:
    """Set a password and turn on an authenticator app."""
    portal = portal_of(request)
    session = await signed_in_session(portal, request)
    assert session.address is not None
    recipient = await portal.db.recipient(session.address)
    return portal.page(
        request,
        "account.html",
        session,
        recipient=recipient,
        error=None,
        notice=None,
        totp_setup=None,
    )


async def account_password(request: Request) -> Response:
    """Set or change the password (the session proves the address)."""
    portal = portal_of(request)
    session, form = await portal.form(request)
    if session.address is None:
        raise HTTPException(401)
    password = form.get("password")
    confirm = form.get("confirm")
    recipient = await portal.db.recipient(session.address)
    problem = None
    if not isinstance(password, str) or password != confirm:
        problem = "The two passwords are not the same."
    else:
        problem = credentials.password_problem(password)
    if problem is not None or not isinstance(password, str):
        return portal.page(
            request,
            "account.html",
            session,
            status=400,
            recipient=recipient,
            error=problem,
            notice=None,
            totp_setup=None,
        )
    await portal.db.set_password(session.address, await credentials.hash_password(password))
    log.event("portal_password_set", recipient=session.address)
    recipient = await portal.db.recipient(session.address)
    return portal.page(
        request,
        "account.html",
        session,
        recipient=recipient,
        error=None,
        notice="Your password is set.",
        totp_setup=None,
    )


async def account_totp(request: Request) -> Response:
    """Turn on TOTP: show a secret, then confirm it with a first code; or turn it off."""
    portal = portal_of(request)
    session, form = await portal.form(request)
    address = session.address
    if address is None:
        raise HTTPException(401)
    if portal.master is None:
        raise HTTPException(503)
    action = form.get("action")
    recipient = await portal.db.recipient(address)
    setup: dict[str, str] | None = None
    if action == "off":
        await portal.db.set_totp(address, None, False)
        log.event("portal_totp_disabled", recipient=address)
        recipient = await portal.db.recipient(address)
        return portal.page(
            request,
            "account.html",
            session,
            recipient=recipient,
            error=None,
            notice="The authenticator app is turned off.",
            totp_setup=None,
        )
    if action == "start":
        secret = credentials.new_totp_secret()
        await portal.db.set_totp(
            address, credentials.seal_totp(portal.master, address, secret), False
        )
        setup = {
            "secret": secret,
            "uri": credentials.totp_uri(secret, address, portal.cfg.organisation),
        }
        return portal.page(
            request,
            "account.html",
            session,
            recipient=recipient,
            error=None,
            notice=None,
            totp_setup=setup,
        )
    code = form.get("code")
    sealed = recipient.totp_secret if recipient else None
    secret_text = credentials.open_totp(portal.master, address, sealed) if sealed else None
    if secret_text and isinstance(code, str) and credentials.check_totp(secret_text, code):
        await portal.db.set_totp(address, sealed, True)
        log.event("portal_totp_enabled", recipient=address)
        recipient = await portal.db.recipient(address)
        return portal.page(
            request,
            "account.html",
            session,
            recipient=recipient,
            error=None,
            notice="Your authenticator app is on.",
            totp_setup=None,
        )
    setup = None
    if secret_text:
        setup = {
            "secret": secret_text,
            "uri": credentials.totp_uri(secret_text, address, portal.cfg.organisation),
        }
    return portal.page(
        request,
        "account.html",
        session,
        status=400,
        recipient=recipient,
        error="That code is not right. Try the newest one.",
        notice=None,
        totp_setup=setup,
    )


def routes() -> list[BaseRoute]:
    """The account pages."""
    return [
        Route("/account", account_page),
        Route("/account/password", account_password, methods=["POST"]),
        Route("/account/totp", account_totp, methods=["POST"]),
    ]
