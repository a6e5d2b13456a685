"""Errors as JSON: `{"error": code, "reason": text}`, never a traceback.

Validation errors name the field and what is wrong with it, never the value
sent (it may be message content). Anything unexpected is logged by type and
answered with a bare 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway import log

_log = logging.getLogger(__name__)
_MAX_PROBLEMS = 5

# HTTP statuses Starlette raises by itself (unknown path, wrong method...) and our codes.
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}


class ErrorBody(BaseModel):
    """Every error response."""

    error: str
    reason: str


class ApiError(Exception):
    """An error answer: HTTP status, a stable code, a reason for a human."""

    def __init__(
        self, status: int, error: str, reason: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = dict(headers or {})


def error_response(
    status: int, error: str, reason: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON answer for an error."""
    return JSONResponse({"error": error, "reason": reason}, status_code=status, headers=headers)


def responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI documentation of the error answers a route can give."""
    # Every route validates its input: 422 always applies (and replaces FastAPI's own
    # model), 400 when a body is not even text.
    codes = sorted({*statuses, 400, 422})
    return {s: {"model": ErrorBody, "description": _CODES.get(s, "error")} for s in codes}


def _validation_reason(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors()[:_MAX_PROBLEMS]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        problems.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - _MAX_PROBLEMS
    if more > 0:
        problems.append(f"and {more} more")
    return "; ".join(problems) or "the request is not valid"


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.reason, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES.get(exc.status_code, "error")
    reason = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, reason, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", _validation_reason(exc))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.event("api_error", level=logging.ERROR, path=request.url.path, error=type(exc).__name__)
    _log.debug("api request failed", exc_info=exc)
    return error_response(500, "internal", "internal error; the gateway log has the details")


def install(app: FastAPI) -> None:
    """Register the JSON error handlers on app."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
