"""The API application: routes, JSON errors, the body size limit, the OpenAPI spec."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import PlainTextResponse

from api import errors, manage, messages
from api.context import ApiContext
from api.limits import BodyLimit

TITLE = "Sealgate API"
VERSION = "1"
DESCRIPTION = (
    "Send mail through the gateway's pipeline (policy, per-recipient encryption, "
    "DKIM), read each recipient's delivery status, manage the quarantine and "
    "portal copies. Authenticate with `Authorization: Bearer KEY` "
    '(`sealgate apikey create`). Errors are JSON: `{"error": code, "reason": text}`.'
)


def build() -> FastAPI:
    """The application without its runtime context (enough for the OpenAPI spec)."""
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        docs_url=None,  # the interactive pages load scripts from a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    errors.install(app)
    app.include_router(messages.router)
    app.include_router(manage.router)

    @app.get("/health", include_in_schema=False)
    async def health() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


def create_app(ctx: ApiContext) -> FastAPI:
    """The served application: routes with their context, behind the size limit."""
    app = build()
    app.state.ctx = ctx
    app.add_middleware(BodyLimit, max_size=ctx.settings.max_request_size)
    return app


def openapi_spec() -> dict[str, object]:
    """The OpenAPI 3 document, as served at /openapi.json."""
    return build().openapi()
