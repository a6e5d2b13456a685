"""HTTP hardening that applies to every response and request of the portal.

- Security headers: HSTS, a strict Content-Security-Policy (scripts and styles
  from the portal itself only, nothing inline; no framing by other sites),
  nosniff, no referrer, no caching of pages that show mail.
- A cap on request bodies, counted as they arrive (a lying Content-Length
  cannot get past it).
A response that sets its own Content-Security-Policy (the sandboxed frame that
shows a message's HTML) keeps it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS = "max-age=63072000; includeSubDomains"


def page_csp(logo_url: str | None) -> str:
    """The policy for the portal's own pages."""
    img = "'self'"
    if logo_url:
        parts = urlsplit(logo_url)
        if parts.scheme in ("https", "http") and parts.netloc:
            img += f" {parts.scheme}://{parts.netloc}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src {img}; connect-src 'self'; form-action 'self'; frame-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


def frame_csp(remote_images: bool) -> str:
    """The policy for a message's sanitised HTML, shown in a sandboxed frame of our page."""
    img = "'self' data: https:" if remote_images else "'self' data:"
    return (
        f"default-src 'none'; img-src {img}; style-src 'unsafe-inline'; "
        "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; "
        "sandbox allow-popups allow-popups-to-escape-sandbox"
    )


class SecurityHeaders:
    """ASGI middleware: adds the security headers to every response."""

    def __init__(self, app: ASGIApp, *, csp: str) -> None:
        self.app = app
        self._fixed = [
            (b"strict-transport-security", HSTS.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        self._csp = csp.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap send to add headers to the response start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers.extend(h for h in self._fixed if h[0] not in names)
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", self._csp))
                if b"x-frame-options" not in names:
                    headers.append((b"x-frame-options", b"DENY"))
                if b"cache-control" not in names:
                    value = b"public, max-age=3600" if static else b"no-store"
                    headers.append((b"cache-control", value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, wrapped)


class BodyLimit:
    """ASGI middleware: refuses request bodies over a size (413), however they arrive."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count body bytes as the app reads them; answer 413 past the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    # Read (and drop) a moderately oversized body first, so the browser is
                    # not cut off mid-upload and shows our answer rather than a reset.
                    if value.isdigit() and int(value) <= self.limit * _DRAIN_FACTOR:
                        await _drain(receive)
                    await _too_large(send)
                    return
        seen = 0
        exceeded = False
        answered = False

        async def counted() -> Message:
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # The app sees a body that ends here; its answer is replaced by 413.
                    exceeded = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded(message: Message) -> None:
            nonlocal answered
            if not exceeded:
                await send(message)
                return
            if not answered:
                answered = True
                await _too_large(send)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not answered:
            await _too_large(send)


_DRAIN_FACTOR = 8


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _too_large(send: Send) -> None:
    body = b"The upload is too large."
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
