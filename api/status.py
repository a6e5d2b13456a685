"""A message's status per recipient, from the queue, the quarantine, the audit trail and the portal.

A queued message's spool file holds its live delivery state. Once every
recipient is done the file is gone, and the audit trail is what remembers:
the last delivered / deferred / bounced / expired record per recipient, with
the method and TLS facts. The portal store adds whether the recipient opened
their copy. Nothing here reads a message body.
"""

from __future__ import annotations

import asyncio
from typing import Any

from api.schemas import MessageStatus, PortalCopy, RecipientStatus, TlsFacts
from gateway.audit import trail
from gateway.message import QueuedMessage
from gateway.portalbox import PortalBox
from gateway.quarantine import Held, QuarantineStore
from gateway.spool import Spool
from gateway.store.base import Store

_OUTCOMES = {"delivered": "delivered", "deferred": "deferred", "bounced": "bounced",
             "expired": "expired"}  # fmt: skip
# How many audit records one status look-up reads at most (a message's whole life is a few).
_MAX_RECORDS = 5000


def _tls(facts: dict[str, Any] | None) -> TlsFacts | None:
    if not facts:
        return None
    verified = facts.get("verified")
    return TlsFacts(
        version=_opt_str(facts.get("version")),
        cipher=_opt_str(facts.get("cipher")),
        verified=verified if isinstance(verified, bool) else None,
    )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _from_spool(msg: QueuedMessage) -> dict[str, RecipientStatus]:
    out: dict[str, RecipientStatus] = {}
    for r in msg.recipients:
        state = r.state if r.state != "pending" or r.attempts == 0 else "deferred"
        out[r.address.lower()] = RecipientStatus(
            address=r.address,
            state=state,
            attempts=r.attempts,
            method=r.method,
            method_reason=r.method_reason or None,
            code=r.last_code,
            reply=r.last_reply or None,
            remote=r.remote or None,
            tls=_tls(r.tls),
        )
    return out


class _Trail:
    """What the audit trail says about one message."""

    def __init__(self) -> None:
        self.sender: str | None = None
        self.received_at: float | None = None
        self.verdict: str | None = None
        self.size: int | None = None
        self.quarantined = False
        self.recipients: dict[str, RecipientStatus] = {}

    def add(self, event: str, at: float, f: dict[str, Any]) -> None:
        if event in ("received", "quarantined"):
            self.received_at = self.received_at or at
            self.sender = _opt_str(f.get("sender")) if self.sender is None else self.sender
            self.size = _opt_int(f.get("size")) if self.size is None else self.size
            self.quarantined = self.quarantined or event == "quarantined"
        elif event == "released":
            self.received_at = self.received_at or at
            self.sender = self.sender or _opt_str(f.get("sender"))
            self.verdict = self.verdict or _opt_str(f.get("verdict"))
        elif event == "policy" and f.get("verdict") is not None:
            self.verdict = str(f["verdict"])
        elif event in _OUTCOMES and isinstance(f.get("rcpt"), str):
            rcpt = str(f["rcpt"])
            before = self.recipients.get(rcpt.lower())
            attempts = _opt_int(f.get("attempts"))
            if attempts is None:
                attempts = (before.attempts if before else 0) + (event == "delivered")
            tls = None
            if event == "delivered":
                tls = _tls({"version": f.get("tls_version"), "cipher": f.get("tls_cipher"),
                            "verified": f.get("tls_verified")})  # fmt: skip
            self.recipients[rcpt.lower()] = RecipientStatus(
                address=rcpt,
                state=_OUTCOMES[event],  # type: ignore[arg-type]
                attempts=attempts,
                method=_opt_str(f.get("method")) or (before.method if before else None),
                method_reason=_opt_str(f.get("reason")) if event == "delivered" else None,
                code=_opt_int(f.get("code")),
                reply=None if event == "delivered" else _opt_str(f.get("reason")),
                remote=_opt_str(f.get("remote")),
                tls=tls,
                delivered_at=at if event == "delivered" else None,
            )


async def _read_trail(store: Store, msg_id: str) -> _Trail:
    found = _Trail()
    count = 0
    async for record in trail.records(store, message_id=msg_id):
        if record.message_id == msg_id:
            found.add(record.event, record.at, record.fields)
        elif record.event == "released":
            # A released quarantine: queued under a new id, with no "received" of its own.
            found.add("released", record.at, record.fields)
        count += 1
        if count >= _MAX_RECORDS:
            break
    return found


def _overall(recipients: list[RecipientStatus], queued: bool, quarantined: bool) -> str:
    if quarantined:
        return "quarantined"
    if queued:
        return "queued"
    if not recipients:
        return "unknown"
    states = {r.state for r in recipients}
    if states <= {"delivered"}:
        return "delivered"
    if "delivered" in states:
        return "partially_delivered"
    if states & {"pending", "deferred"}:
        return "queued"
    return "failed"


async def message_status(
    msg_id: str, spool: Spool, quarantine: QuarantineStore, store: Store
) -> MessageStatus | None:
    """Everything known about msg_id, or None when nothing is."""
    queued: QueuedMessage | None = await asyncio.to_thread(spool.load, msg_id)
    held: Held | None = None
    if queued is None:
        held = await asyncio.to_thread(quarantine.load, msg_id)
    facts = await _read_trail(store, msg_id)
    copies = await PortalBox(store, None).list_messages(queue_id=msg_id)

    recipients = dict(facts.recipients)
    if queued is not None:
        # Live state wins; the trail still knows when finished recipients were delivered.
        for addr, live in _from_spool(queued).items():
            done = recipients.get(addr)
            if live.state == "delivered" and done is not None and done.state == "delivered":
                continue
            recipients[addr] = live
    if held is not None:
        for rcpt in held.envelope.rcpt_to:
            recipients[rcpt.lower()] = RecipientStatus(address=rcpt, state="quarantined")
    for copy in copies:
        addr = copy.recipient.lower()
        # A copy without a delivery record yet: the audit record follows within a moment.
        entry = recipients.get(addr) or RecipientStatus(
            address=copy.recipient, state="delivered", method="portal"
        )
        recipients[addr] = entry.model_copy(
            update={
                "portal": PortalCopy(
                    state=copy.state(),
                    created_at=copy.created_at,
                    expires_at=copy.expires_at,
                    opened_at=copy.first_viewed_at,
                    revoked_at=copy.revoked_at,
                )
            }
        )
    if queued is None and held is None and not recipients and facts.received_at is None:
        return None
    sender = facts.sender
    received_at = facts.received_at
    size = facts.size
    verdict = facts.verdict
    if queued is not None:
        sender, received_at, size = (
            queued.envelope.mail_from,
            queued.envelope.received_at,
            queued.size,
        )
        decision = queued.meta.get("decision")
        if isinstance(decision, dict) and decision.get("verdict") is not None:
            verdict = str(decision["verdict"])
    elif held is not None:
        sender, size = held.envelope.mail_from, held.size
        received_at = held.envelope.received_at
        verdict = _opt_str(held.decision.get("verdict")) or verdict
    ordered = list(recipients.values())
    return MessageStatus(
        id=msg_id,
        state=_overall(ordered, queued is not None, held is not None),  # type: ignore[arg-type]
        sender=sender,
        received_at=received_at,
        verdict=verdict,
        size=size,
        recipients=ordered,
    )
