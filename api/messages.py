"""Routes for messages: send (JSON fields or raw MIME), status, portal revoke."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from api.auth import client_ip, require
from api.compose import ComposeError, compose, decode_base64
from api.context import ApiContext, context
from api.errors import ApiError, responses
from api.schemas import ActionResult, MessageStatus, RawMessage, SendMessage, Submitted
from api.status import message_status
from api.submit import SubmitError
from gateway import log
from gateway.apikeys import ApiKey
from gateway.portalbox import PortalBox
from gateway.quarantine import QuarantineStore
from gateway.spool import Spool
from gateway.store.base import StoreError

router = APIRouter(prefix="/v1/messages", tags=["messages"])
MessageId = Annotated[str, Path(pattern=r"^[0-9A-HJKMNP-TV-Z]{18}$", description="a queue id")]
RETRY_AFTER = "60"


def _check_envelope(ctx: ApiContext, key: ApiKey, sender: str, rcpts: list[str]) -> list[str]:
    if not key.may_send_as(sender):
        raise ApiError(403, "sender_not_allowed", f"this key may not send as {sender}")
    unique = list(dict.fromkeys(rcpts))
    if len(unique) > ctx.settings.max_recipients:
        raise ApiError(
            422, "too_many_recipients", f"at most {ctx.settings.max_recipients} recipients"
        )
    return unique


async def _submit(
    request: Request, ctx: ApiContext, key: ApiKey, sender: str, rcpts: list[str], data: bytes,
    attachments: int,
) -> Submitted:  # fmt: skip
    try:
        queue_id = await ctx.submitter.submit(sender, rcpts, data)
    except SubmitError as exc:
        log.event("api_submit_refused", level=logging.WARNING, key_id=key.key_id, sender=sender,
                  code=exc.code, reason=exc.reason, ip=client_ip(request))  # fmt: skip
        if exc.permanent:
            raise ApiError(422, "rejected", exc.reason) from None
        raise ApiError(503, "try_again", exc.reason, {"Retry-After": RETRY_AFTER}) from None
    log.event("api_message_submitted", id=queue_id, key_id=key.key_id, sender=sender,
              recipients=len(rcpts), size=len(data), attachments=attachments,
              ip=client_ip(request))  # fmt: skip
    return Submitted(id=queue_id, recipients=len(rcpts))


@router.post(
    "",
    status_code=202,
    response_model=Submitted,
    summary="Send a message composed from fields",
    responses=responses(401, 403, 413, 422, 503),
)
async def send_message(
    body: SendMessage,
    request: Request,
    key: Annotated[ApiKey, Depends(require("send"))],
    ctx: Annotated[ApiContext, Depends(context)],
) -> Submitted:
    """Compose a MIME message and submit it through the same pipeline as SMTP mail.

    The policy engine classifies it and each recipient's protection is chosen at
    delivery; `id` is the queue id for the status route. A policy refusal is 422
    with the reason; a temporary refusal is 503 with Retry-After.
    """
    rcpts = _check_envelope(ctx, key, body.sender, [*body.to, *body.cc, *body.bcc])
    try:
        data = await asyncio.to_thread(compose, body, ctx.settings.hostname)
    except ComposeError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    return await _submit(request, ctx, key, body.sender, rcpts, data, len(body.attachments))


@router.post(
    "/raw",
    status_code=202,
    response_model=Submitted,
    summary="Send a complete MIME message",
    responses=responses(401, 403, 413, 422, 503),
)
async def send_raw(
    body: RawMessage,
    request: Request,
    key: Annotated[ApiKey, Depends(require("send"))],
    ctx: Annotated[ApiContext, Depends(context)],
) -> Submitted:
    """Submit a message as it is (base64 of its bytes) with the given envelope."""
    rcpts = _check_envelope(ctx, key, body.mail_from, body.rcpt_to)
    try:
        data = decode_base64(body.mime, "mime")
    except ComposeError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    if not data.strip():
        raise ApiError(422, "invalid_request", "mime: the message is empty")
    return await _submit(request, ctx, key, body.mail_from, rcpts, data, 0)


@router.get(
    "/{message_id}",
    response_model=MessageStatus,
    summary="A message's status per recipient",
    responses=responses(401, 403, 404, 503),
)
async def get_status(
    message_id: MessageId,
    key: Annotated[ApiKey, Depends(require("status"))],
    ctx: Annotated[ApiContext, Depends(context)],
) -> MessageStatus:
    """Per recipient: state, method, SMTP reply, TLS facts, portal copy (opened, revoked)."""
    spool = Spool(ctx.settings.data_dir, None)
    quarantine = QuarantineStore(ctx.settings.data_dir, None)
    try:
        status = await message_status(message_id, spool, quarantine, ctx.store)
    except StoreError as exc:
        log.event("api_store_failed", level=logging.ERROR, error=str(exc))
        raise ApiError(
            503, "unavailable", "the store is not available", {"Retry-After": "30"}
        ) from None
    # A key limited to some senders sees only their messages; others do not exist for it.
    if status is None or not key.sees(status.sender):
        raise ApiError(404, "not_found", f"no message {message_id}")
    return status


@router.post(
    "/{message_id}/portal/revoke",
    response_model=ActionResult,
    summary="Withdraw the message's portal copies",
    responses=responses(401, 403, 404, 503),
)
async def revoke_portal(
    message_id: MessageId,
    request: Request,
    key: Annotated[ApiKey, Depends(require("portal"))],
    ctx: Annotated[ApiContext, Depends(context)],
) -> ActionResult:
    """Withdraw every portal copy of a queue id: recipients can no longer open it."""
    box = PortalBox(ctx.store, None)
    try:
        if not key.sees(None):
            copies = await box.list_messages(queue_id=message_id)
            if not any(key.sees(c.sender) for c in copies):
                raise ApiError(404, "not_found", f"no portal message {message_id}")
        result = await box.revoke(message_id, f"api:{key.key_id}")
    except StoreError as exc:
        log.event("api_store_failed", level=logging.ERROR, error=str(exc))
        raise ApiError(
            503, "unavailable", "the store is not available", {"Retry-After": "30"}
        ) from None
    if result.found == 0:
        raise ApiError(404, "not_found", f"no portal message {message_id}")
    log.event("api_action", id=message_id, key_id=key.key_id, action="portal_revoke",
              outcome=f"{result.revoked} of {result.found}", ip=client_ip(request))  # fmt: skip
    return ActionResult(
        id=message_id, action="revoked", copies=result.found, revoked=result.revoked
    )
