"""Routes for operators' applications: the quarantine (list, show, release, delete), the queue.

Release and delete go through the running gateway, as `sealgate quarantine`
does: a request file it takes within a second. The API never changes the
spool or the quarantine itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from api.auth import client_ip, require
from api.context import ApiContext, context
from api.errors import ApiError, responses
from api.schemas import ActionResult, QuarantinedMessage, QuarantineList, QueueSummary
from gateway import log
from gateway.apikeys import ApiKey
from gateway.audit import trail
from gateway.quarantine import Held, QuarantineError, QuarantineStore, RequestAction
from gateway.spool import Spool, daemon_running
from gateway.store.base import StoreError

router = APIRouter(prefix="/v1", tags=["operations"])
QuarantineId = Annotated[
    str, Path(pattern=r"^[0-9A-HJKMNP-TV-Z]{18}$", description="a quarantine id")
]
# How long a release or delete waits for the running gateway to act.
REQUEST_WAIT = 15.0
_POLL = 0.1


def _summary(held: Held) -> QuarantinedMessage:
    verdict = held.decision.get("verdict")
    return QuarantinedMessage(
        id=held.id,
        quarantined_at=held.quarantined_at,
        sender=held.envelope.mail_from,
        recipients=list(held.envelope.rcpt_to),
        size=held.size,
        verdict=None if verdict is None else str(verdict),
        rules=[str(r) for r in held.decision.get("matched_rules", [])],
    )


def _visible(key: ApiKey, held: Held) -> bool:
    return key.sees(held.envelope.mail_from)


@router.get(
    "/quarantine",
    response_model=QuarantineList,
    summary="Quarantined messages",
    responses=responses(401, 403),
)
async def list_quarantine(
    key: Annotated[ApiKey, Depends(require("quarantine"))],
    ctx: Annotated[ApiContext, Depends(context)],
) -> QuarantineList:
    """Every message a policy rule quarantined (envelope, verdict, rules; no content)."""
    store = QuarantineStore(ctx.settings.data_dir, None)
    held, unreadable = await asyncio.to_thread(store.load_all)
    return QuarantineList(
        messages=[_summary(h) for h in held if _visible(key, h)],
        unreadable=unreadable if key.sees(None) else [],
    )


async def _load(ctx: ApiContext, key: ApiKey, msg_id: str) -> Held:
    held = await asyncio.to_thread(QuarantineStore(ctx.settings.data_dir, None).load, msg_id)
    if held is None or not _visible(key, held):
        raise ApiError(404, "not_found", f"no message {msg_id} in the quarantine")
    return held


@router.get(
    "/quarantine/{message_id}",
    response_model=QuarantinedMessage,
    summary="One quarantined message",
    responses=responses(401, 403, 404),
)
async def get_quarantined(
    message_id: QuarantineId,
    key: Annotated[ApiKey, Depends(require("quarantine"))],
    ctx: Annotated[ApiContext, Depends(context)],
) -> QuarantinedMessage:
    """A quarantined message's envelope, verdict and matched rules."""
    return _summary(await _load(ctx, key, message_id))


async def _request(ctx: ApiContext, action: RequestAction, msg_id: str) -> None:
    """Hand the running gateway a request and wait until the message has left the quarantine."""
    if not await asyncio.to_thread(daemon_running, ctx.settings.data_dir):
        raise ApiError(503, "unavailable", "the gateway is not running", {"Retry-After": "30"})
    store = QuarantineStore(ctx.settings.data_dir, None)
    try:
        path = await asyncio.to_thread(store.request, action, msg_id)
    except QuarantineError as exc:
        log.event("api_request_failed", level=logging.ERROR, action=action, error=str(exc))
        raise ApiError(503, "unavailable", "the request could not be written") from None
    deadline = time.monotonic() + REQUEST_WAIT
    # Polling files that another process consumes: there is no event to wait on.
    while (path.exists() or (store.dir / msg_id).exists()) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(_POLL)
    if path.exists():
        # Withdrawn, so that no gateway acts on it days later.
        path.unlink(missing_ok=True)
        raise ApiError(503, "try_again", "the gateway did not take the request in time",
                       {"Retry-After": "30"})  # fmt: skip
    if (store.dir / msg_id).exists():
        raise ApiError(503, "try_again", f"the gateway could not {action} the message; "
                       "its log says why", {"Retry-After": "60"})  # fmt: skip


async def _released_as(ctx: ApiContext, msg_id: str) -> str | None:
    """The new queue id, from the audit trail (written within a moment of the release)."""
    deadline = time.monotonic() + 3.0
    while True:
        try:
            async for record in trail.records(ctx.store, message_id=msg_id):
                if record.event == "released" and isinstance(record.fields.get("queue_id"), str):
                    return str(record.fields["queue_id"])
        except StoreError:
            return None
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.2)


@router.post(
    "/quarantine/{message_id}/release",
    response_model=ActionResult,
    summary="Release a quarantined message into the delivery queue",
    responses=responses(401, 403, 404, 503),
)
async def release_quarantined(
    message_id: QuarantineId,
    request: Request,
    key: Annotated[ApiKey, Depends(require("quarantine"))],
    ctx: Annotated[ApiContext, Depends(context)],
) -> ActionResult:
    """Queue the message for delivery with its policy decision (encryption still applies)."""
    await _load(ctx, key, message_id)
    await _request(ctx, "release", message_id)
    queue_id = await _released_as(ctx, message_id)
    log.event("api_action", id=message_id, key_id=key.key_id, action="quarantine_release",
              outcome="released", ip=client_ip(request))  # fmt: skip
    return ActionResult(id=message_id, action="released", queue_id=queue_id)


@router.delete(
    "/quarantine/{message_id}",
    response_model=ActionResult,
    summary="Delete a quarantined message",
    responses=responses(401, 403, 404, 503),
)
async def delete_quarantined(
    message_id: QuarantineId,
    request: Request,
    key: Annotated[ApiKey, Depends(require("quarantine"))],
    ctx: Annotated[ApiContext, Depends(context)],
) -> ActionResult:
    """Delete the message without delivering it."""
    await _load(ctx, key, message_id)
    await _request(ctx, "delete", message_id)
    log.event("api_action", id=message_id, key_id=key.key_id, action="quarantine_delete",
              outcome="deleted", ip=client_ip(request))  # fmt: skip
    return ActionResult(id=message_id, action="deleted")


def _queue_summary(ctx: ApiContext) -> QueueSummary:
    now = time.time()
    queued = Spool(ctx.settings.data_dir, None).load_all()
    quarantined = len(QuarantineStore(ctx.settings.data_dir, None).ids())
    oldest = min((m.envelope.received_at for m in queued), default=None)
    return QueueSummary(
        messages=len(queued),
        recipients_pending=sum(len(m.pending) for m in queued),
        deferred_messages=sum(1 for m in queued if m.attempts > 0),
        bytes=sum(m.size for m in queued),
        oldest_age=None if oldest is None else round(max(0.0, now - oldest), 3),
        quarantined=quarantined,
        gateway_running=daemon_running(ctx.settings.data_dir),
    )


@router.get(
    "/queue",
    response_model=QueueSummary,
    summary="The delivery queue at a glance",
    responses=responses(401, 403),
)
async def queue_summary(
    key: Annotated[ApiKey, Depends(require("queue"))],
    ctx: Annotated[ApiContext, Depends(context)],
) -> QueueSummary:
    """Counts only: messages, pending recipients, deferred messages, bytes, oldest age."""
    return await asyncio.to_thread(_queue_summary, ctx)
