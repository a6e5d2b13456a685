"""Reading and answering: the inbox, a message, its HTML, its attachments, replies.

The HTML body is sanitised (portal/mime.py) and shown in a sandboxed frame
under its own Content-Security-Policy; attachments are always downloads. A
reply goes through the gateway to the original participants only.
"""

from __future__ import annotations

import asyncio
import urllib.parse

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import log
from portal import mime
from portal.mailer import SubmitError
from portal.security import frame_csp
from portal.web import client_ip, portal_of, signed_in_session

_MAX_UPLOADS = 10
_MAX_TEXT = 200_000


async def inbox(request: Request) -> Response:
    """Every active portal message for the signed-in address, newest first."""
    portal = portal_of(request)
    session = await signed_in_session(portal, request)
    assert session.address is not None
    now = portal.clock()
    messages = [
        m for m in await portal.box.for_recipient(session.address) if m.state(now) == "active"
    ]
    messages.reverse()
    return portal.page(request, "inbox.html", session, messages=messages)


async def message_page(request: Request) -> Response:
    """Read one message: headers, body, attachments, reply buttons."""
    portal = portal_of(request)
    session = await portal.session(request)
    message = await portal.own_message(session, request.path_params["id"])
    assert session is not None
    data = await portal.body(request, message)
    try:
        view = await asyncio.to_thread(mime.parse, data)
    except mime.MessageFormatError:
        raise HTTPException(500) from None
    remote = request.query_params.get("images") == "1"
    log.event(
        "portal_viewed",
        id=message.id,
        queue_id=message.queue_id,
        recipient=session.address,
        ip=client_ip(request),
    )
    if await portal.box.mark_viewed(message.id):
        portal.background(portal.read_notice(message, view))
    assert session.address is not None
    return portal.page(
        request,
        "message.html",
        session,
        message=message,
        view=view,
        remote=remote,
        remote_images=bool(view.html and mime.has_remote_images(view.html)),
        can_reply_all=len(mime.reply_recipients(view, session.address, reply_all=True)) > 1,
    )


async def message_html(request: Request) -> Response:
    """The message's HTML, sanitised, for the sandboxed frame on the reading page."""
    portal = portal_of(request)
    session = await portal.session(request)
    message = await portal.own_message(session, request.path_params["id"])
    data = await portal.body(request, message)
    view = await asyncio.to_thread(mime.parse, data)
    remote = request.query_params.get("images") == "1"
    html = await asyncio.to_thread(
        mime.safe_html, view.html or "", inline=view.inline, remote=remote
    )
    page = (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<style>body{font-family:system-ui,sans-serif;margin:0;padding:0.5rem;"
        "overflow-wrap:anywhere;color:#1a1a1a;background:#fff}img{max-width:100%;height:auto}"
        "</style></head><body>" + html + "</body></html>"
    )
    response = HTMLResponse(page)
    response.headers["content-security-policy"] = frame_csp(remote)
    response.headers["x-frame-options"] = "SAMEORIGIN"
    response.headers["cross-origin-resource-policy"] = "same-origin"
    return response


async def message_part(request: Request) -> Response:
    """Download an attachment: always as a file, never shown by the browser itself."""
    portal = portal_of(request)
    session = await portal.session(request)
    message = await portal.own_message(session, request.path_params["id"])
    assert session is not None
    data = await portal.body(request, message)
    index = request.path_params["index"]
    part = await asyncio.to_thread(mime.part_bytes, data, index)
    if part is None:
        raise HTTPException(404)
    content, filename, _ctype = part
    log.event(
        "portal_downloaded",
        id=message.id,
        queue_id=message.queue_id,
        recipient=session.address,
        ip=client_ip(request),
        part=index,
        size=len(content),
    )
    quoted = urllib.parse.quote(filename, safe="")
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={
            "content-disposition": f'attachment; filename="{ascii_name}"; '
            f"filename*=UTF-8''{quoted}",
        },
    )


async def reply_form(request: Request) -> Response:
    """Write a reply (to the sender) or a reply to all (the original participants)."""
    portal = portal_of(request)
    session = await portal.session(request)
    message = await portal.own_message(session, request.path_params["id"])
    assert session is not None and session.address is not None
    data = await portal.body(request, message)
    view = await asyncio.to_thread(mime.parse, data)
    reply_all = request.query_params.get("all") == "1"
    rcpts = mime.reply_recipients(view, session.address, reply_all=reply_all)
    return portal.page(
        request,
        "reply.html",
        session,
        message=message,
        view=view,
        rcpts=rcpts,
        reply_all=reply_all,
        error=None,
        text="",
    )


async def _uploads(form: FormData) -> list[mime.Upload]:
    out: list[mime.Upload] = []
    for item in form.getlist("attachments"):
        if not isinstance(item, UploadFile) or not item.filename:
            continue
        name = item.filename.replace("/", "_").replace("\\", "_").strip()[:200] or "attachment"
        ctype = (item.content_type or "application/octet-stream").split(";")[0].strip().lower()
        out.append(mime.Upload(name, ctype, await item.read()))
    return out


async def reply_send(request: Request) -> Response:
    """Send the reply through the gateway, to the original participants only."""
    portal = portal_of(request)
    session, form = await portal.form(request, max_files=_MAX_UPLOADS, max_part_size=_MAX_TEXT)
    message = await portal.own_message(session, request.path_params["id"])
    assert session.address is not None
    data = await portal.body(request, message)
    view = await asyncio.to_thread(mime.parse, data)
    reply_all = form.get("all") == "1"
    rcpts = mime.reply_recipients(view, session.address, reply_all=reply_all)
    text_raw = form.get("body")
    text = text_raw if isinstance(text_raw, str) else ""
    uploads = await _uploads(form)
    if not rcpts:
        raise HTTPException(400, "There is nobody to reply to.")
    if not text.strip() and not uploads:
        return portal.page(
            request,
            "reply.html",
            session,
            status=400,
            message=message,
            view=view,
            rcpts=rcpts,
            reply_all=reply_all,
            error="Write a message or attach a file.",
            text=text,
        )
    raw, reply_id = await asyncio.to_thread(
        mime.compose_reply,
        view,
        session.address,
        rcpts,
        text,
        uploads,
        hostname=portal.settings.hostname,
        portal_id=message.id,
    )
    try:
        await portal.mailer.send(session.address, rcpts, raw, "reply")
    except SubmitError:
        return portal.page(
            request,
            "reply.html",
            session,
            status=503,
            message=message,
            view=view,
            rcpts=rcpts,
            reply_all=reply_all,
            text=text,
            error="Your reply could not be sent just now. Please try again in a few minutes.",
        )
    log.event(
        "portal_replied",
        id=message.id,
        queue_id=message.queue_id,
        recipient=session.address,
        ip=client_ip(request),
        reply_id=reply_id,
        rcpts=rcpts,
        attachments=len(uploads),
        reply_all=reply_all,
    )
    return portal.page(request, "sent.html", session, message=message, rcpts=rcpts)


def routes() -> list[BaseRoute]:
    """The reading pages."""
    return [
        Route("/inbox", inbox),
        Route("/messages/{id:str}", message_page),
        Route("/messages/{id:str}/html", message_html),
        Route("/messages/{id:str}/parts/{index:int}", message_part),
        Route("/messages/{id:str}/reply", reply_form),
        Route("/messages/{id:str}/reply", reply_send, methods=["POST"]),
    ]
