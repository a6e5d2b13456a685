"""The portal's web application: routes, error pages, housekeeping, middleware.

The pages live in portal/signin.py, portal/reading.py and portal/account.py;
what they share in portal/web.py. This module puts them together behind the
security middleware (portal/security.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from gateway import log
from gateway.portalbox import (
    PortalError,
)
from gateway.sealing import MasterKey
from gateway.store import Store, StoreError
from portal import account, reading, signin
from portal.security import BodyLimit, SecurityHeaders, page_csp
from portal.web import HERE, Portal, PortalSettings, portal_of, redirect

PURGE_INTERVAL = 300.0


async def home(request: Request) -> Response:
    """Signed in: the inbox; otherwise the sign-in page."""
    portal = portal_of(request)
    session = await portal.session(request)
    return redirect("/inbox" if session and session.address else "/signin")


async def theme(request: Request) -> Response:
    """The organisation's colours (a stylesheet, so no inline style is needed)."""
    return Response(portal_of(request).theme_css, media_type="text/css")


async def health(request: Request) -> Response:
    """For load balancers."""
    return PlainTextResponse("ok")


# --- errors --------------------------------------------------------------------------------

_ERROR_PAGES = {
    "link": (
        404,
        "This link does not work",
        "Check that you opened the whole link from your "
        "email. Links stop working when a newer email about the same message arrives.",
    ),
    "revoked": (
        410,
        "This message was withdrawn",
        "The sender has withdrawn this message. Contact them if you still need it.",
    ),
    "expired": (
        410,
        "This message has expired",
        "Messages are kept for a limited time. Contact the sender if you still need it.",
    ),
    "key": (
        409,
        "Open this message from its email",
        "This message is protected with a key that "
        "is only in the link in your email. Open that link again on this device.",
    ),
}


async def http_error(request: Request, exc: Exception) -> Response:
    """Friendly pages for the errors a recipient can meet; never a traceback."""
    assert isinstance(exc, HTTPException)
    portal = portal_of(request)
    try:
        session = await portal.session(request)
    except StoreError:
        session = None
    if exc.status_code == 401:
        return redirect("/signin")
    key = exc.detail if isinstance(exc.detail, str) else ""
    if key in _ERROR_PAGES:
        status, title, text = _ERROR_PAGES[key]
    elif exc.status_code == 404:
        status, title, text = 404, "Not found", "There is nothing here, or it is not yours to see."
    elif exc.status_code == 403:
        status, title, text = 403, "Please try again", str(exc.detail)
    elif exc.status_code in (400, 405):
        status, title, text = (
            exc.status_code,
            "Something was not right",
            (str(exc.detail) if exc.status_code == 400 else "That request is not possible here."),
        )
    else:
        status, title, text = exc.status_code, "Something went wrong", "Please try again later."
    return portal.page(request, "problem.html", session, status=status, title=title, text=text)


async def server_error(request: Request, exc: Exception) -> Response:
    """Anything unexpected: logged by type (no content), a plain apology to the reader."""
    log.event(
        "portal_error",
        level=logging.ERROR,
        error=type(exc).__name__,
        path=request.url.path.split("/")[1] if request.url.path else "",
    )
    body = (
        "<!doctype html><title>Something went wrong</title>"
        "<p>Something went wrong. Please try again later.</p>"
    )
    return HTMLResponse(body, status_code=500)


# --- the application -----------------------------------------------------------------------


async def _housekeeping(portal: Portal) -> None:
    while True:
        try:
            await portal.db.purge(portal.cfg.session_idle, portal.cfg.session_max)
            await portal.box.expire()
        except (StoreError, PortalError) as exc:
            log.event("portal_housekeeping_failed", level=logging.WARNING, error=str(exc))
        await asyncio.sleep(PURGE_INTERVAL)


def create_app(
    settings: PortalSettings,
    store: Store,
    master: MasterKey | None,
    *,
    clock: Callable[[], float] = time.time,
    housekeeping: bool = True,
) -> Starlette:
    """The portal as an ASGI application (store and master key opened by the caller)."""
    portal = Portal(settings, store, master, clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_housekeeping(portal)) if housekeeping else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    routes: list[BaseRoute] = [
        Route("/", home),
        Route("/healthz", health),
        Route("/theme.css", theme),
        *signin.routes(),
        *reading.routes(),
        *account.routes(),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: http_error,
        Exception: server_error,
        StoreError: _store_down,
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.portal = portal
    app.add_middleware(BodyLimit, limit=settings.portal.max_reply_size + 64 * 1024)
    app.add_middleware(SecurityHeaders, csp=page_csp(settings.portal.logo_url))
    return app


async def _store_down(request: Request, exc: Exception) -> Response:
    """The database is unreachable: a temporary failure, said plainly."""
    log.event("portal_store_error", level=logging.ERROR, error=str(exc)[:300])
    return PlainTextResponse(
        "The secure message service is briefly unavailable. Please try again in a few minutes.",
        status_code=503,
    )
