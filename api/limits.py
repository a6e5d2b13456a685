"""Request size limit: a body over api.max_request_size is refused with 413, unread."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response


class BodyLimit:
    """ASGI middleware: refuse by Content-Length at once, or once a streamed body exceeds it."""

    def __init__(self, app: ASGIApp, max_size: int) -> None:
        self.app = app
        self.max_size = max_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a counting receive."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit():
                    response = error_response(400, "bad_request", "bad Content-Length")
                elif int(value) > self.max_size:
                    response = error_response(413, "too_large", self._reason())
                else:
                    break
                await response(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_size:
                    # Raised inside the route's body read: the JSON error handler answers.
                    raise HTTPException(413, self._reason())
            return message

        await self.app(scope, counted, send)

    def _reason(self) -> str:
        return f"the request body is larger than the limit of {self.max_size} bytes"
