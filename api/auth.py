"""API key authentication: `Authorization: Bearer sgk_...`, checked in the store per request."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.context import ApiContext, context
from api.errors import ApiError
from gateway import apikeys, log
from gateway.apikeys import ApiKey, Scope
from gateway.store.base import StoreError

bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="sgk_<key id>_<secret>",
    description="An API key made with `sealgate apikey create`.",
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def client_ip(request: Request) -> str | None:
    """The peer's address, for logs."""
    return request.client.host if request.client else None


def _denied(
    request: Request, reason: str, key_id: str | None = None, scope: str | None = None
) -> None:
    log.event(
        "api_request_denied",
        level=logging.WARNING,
        key_id=key_id,
        ip=client_ip(request),
        reason=reason,
        scope=scope,
        method=request.method,
        path=request.url.path,
    )


def require(scope: Scope) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that yields the request's key, if it is valid and carries scope."""

    async def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
        ctx: ApiContext = Depends(context),  # noqa: B008
    ) -> ApiKey:
        if credentials is None:
            _denied(request, "no key")
            raise ApiError(
                401, "unauthorized", "an API key is required: Authorization: Bearer KEY", _CHALLENGE
            )
        try:
            key = await apikeys.authenticate(ctx.store, credentials.credentials)
            if key is not None and key.allows(scope):
                await apikeys.touch(ctx.store, key)
        except StoreError as exc:
            log.event("api_store_failed", level=logging.ERROR, error=str(exc))
            raise ApiError(
                503, "unavailable", "the key store is not available", {"Retry-After": "30"}
            ) from None
        if key is None:
            _denied(request, "unknown or revoked key", apikeys.parse_key(credentials.credentials))
            raise ApiError(
                401, "unauthorized", "the API key is not valid or was revoked", _CHALLENGE
            )
        if not key.allows(scope):
            _denied(request, "scope", key.key_id, scope)
            raise ApiError(403, "forbidden", f"this key does not have the {scope} scope")
        return key

    return check
