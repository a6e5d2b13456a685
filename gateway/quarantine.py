"""The quarantine: messages a policy rule held for a person to release or delete.

Layout under data_dir/quarantine/:

    <ID>              written once: one JSON header line (envelope, size, when,
                      meta with the policy decision), then the body sealed with
                      gateway.sealing under the master key (aad: the header)
    .<ID>.tmp*        being written; leftovers of a crash, removed at start
    requests/<REQ>.<release|delete>.<ID or ALL>
                      asks the running gateway to act (`sealgate quarantine`)

A quarantined message is not in the delivery queue. Releasing it puts it into
the spool with its decision (which may still forbid plaintext delivery) and
then removes it here; a crash in between delivers at least once, never zero
times. While the gateway runs only it changes these files (through requests);
otherwise the command line does, holding the gateway's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from gateway import log
from gateway.message import Envelope, QueuedMessage
from gateway.safeio import fsync_dir, write_file
from gateway.sealing import MasterKey, SealError, WrongKeyError
from gateway.spool import ALL, new_id, take_request_files, valid_id

QUARANTINE_DIRNAME = "quarantine"
FORMAT_VERSION = 1
_AAD_PREFIX = b"sealgate quarantine v1\n"
_MAX_HEADER = 16 * 1024 * 1024

RequestAction = Literal["release", "delete"]
REQUEST_ACTIONS: tuple[RequestAction, ...] = ("release", "delete")


class QuarantineError(Exception):
    """A storage failure in the quarantine."""


class QuarantineFull(QuarantineError):
    """The disk (or quota) is full."""


class NotQuarantined(QuarantineError):
    """No quarantined message has that id (any more)."""


class SpoolLike(Protocol):
    """Where a released message goes: the spool's durable put."""

    async def put(
        self, envelope: Envelope, data: bytes, meta: dict[str, Any] | None = None
    ) -> QueuedMessage:
        """Queue the message; return once it is on disk."""
        ...


@dataclass(frozen=True)
class Held:
    """One quarantined message, without its body."""

    id: str
    envelope: Envelope
    size: int
    quarantined_at: float
    meta: dict[str, Any]

    @property
    def decision(self) -> dict[str, Any]:
        """The policy decision (JSON form) that held the message; {} if missing."""
        d = self.meta.get("decision")
        return d if isinstance(d, dict) else {}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for `sealgate quarantine list --json`)."""
        return {
            "id": self.id,
            "quarantined_at": self.quarantined_at,
            "size": self.size,
            "envelope": self.envelope.to_json(),
            "meta": self.meta,
        }


def _storage_error(exc: OSError, what: str) -> QuarantineError:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return QuarantineFull(f"{what}: {exc.strerror}{where}")
    return QuarantineError(f"{what}: {exc.strerror or exc}{where}")


def _adopt_owner(path: Path, like: Path) -> None:
    # An admin running `sealgate quarantine` as root must not leave files the
    # gateway's own user cannot read or remove.
    if os.geteuid() != 0:
        return
    want = os.stat(like)
    have = os.stat(path, follow_symlinks=False)
    if (have.st_uid, have.st_gid) != (want.st_uid, want.st_gid):
        os.chown(path, want.st_uid, want.st_gid, follow_symlinks=False)


class QuarantineStore:
    """Sealed, durable storage of held messages; every method blocks (call from a thread)."""

    def __init__(self, data_dir: Path, key: MasterKey | None) -> None:
        # key may be None for readers that never open bodies (`quarantine list`).
        self.data_dir = data_dir
        self.dir = data_dir / QUARANTINE_DIRNAME
        self.requests_dir = self.dir / "requests"
        self._key = key

    # --- lifecycle -------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the directories and remove a crash's leftovers (only with the lock held)."""
        try:
            for d in (self.dir, self.requests_dir):
                if not d.is_dir():
                    d.mkdir(parents=True, exist_ok=True, mode=0o700)
                    _adopt_owner(d, self.data_dir)
                    fsync_dir(d.parent)
            for d in (self.dir, self.requests_dir):
                for name in os.listdir(d):
                    if name.startswith("."):
                        (d / name).unlink(missing_ok=True)
                        log.event(
                            "quarantine_leftover_removed", logging.WARNING, file=str(d / name)
                        )
        except OSError as exc:
            raise _storage_error(exc, "cannot prepare the quarantine") from exc

    # --- writing -----------------------------------------------------------------------

    def put(self, envelope: Envelope, data: bytes, meta: dict[str, Any]) -> Held:
        """Store a message durably (file and directory fsynced) and return its record."""
        if self._key is None:
            raise QuarantineError("quarantine was opened without a master key")
        held = Held(new_id(), envelope, len(data), time.time(), dict(meta))
        try:
            header = json.dumps(
                {
                    "v": FORMAT_VERSION,
                    "id": held.id,
                    "quarantined_at": held.quarantined_at,
                    "size": held.size,
                    "envelope": envelope.to_json(),
                    "meta": held.meta,
                },
                ensure_ascii=True,
                separators=(",", ":"),
                allow_nan=False,
            ).encode()
        except (TypeError, ValueError):
            raise QuarantineError("message metadata cannot be stored as JSON") from None
        blob = self._key.seal(data, _AAD_PREFIX + header)
        try:
            if not self.dir.is_dir():
                # Not prepare(): it would delete files other writers have under way.
                self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self.dir / held.id
            write_file(path, header + b"\n" + blob)
            _adopt_owner(path, self.dir)
        except OSError as exc:
            raise _storage_error(exc, "cannot write to the quarantine") from exc
        return held

    def remove(self, msg_id: str) -> bool:
        """Delete a quarantined message durably; False if it was not there."""
        if not valid_id(msg_id):
            return False
        try:
            (self.dir / msg_id).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _storage_error(exc, f"cannot remove {msg_id}") from exc
        fsync_dir(self.dir)
        return True

    # --- reading -----------------------------------------------------------------------

    def ids(self) -> list[str]:
        """Ids of every quarantined message, oldest first."""
        try:
            return sorted(n for n in os.listdir(self.dir) if valid_id(n))
        except FileNotFoundError:
            return []

    def load(self, msg_id: str) -> Held | None:
        """One message's record (no body), or None if there is no such message."""
        if not valid_id(msg_id):
            return None
        try:
            with (self.dir / msg_id).open("rb") as f:
                line = f.readline(_MAX_HEADER)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _storage_error(exc, f"cannot read {msg_id}") from exc
        try:
            if not line.endswith(b"\n"):
                raise ValueError("header line is missing or too long")
            head = json.loads(line)
            if head.get("v") != FORMAT_VERSION or head.get("id") != msg_id:
                raise ValueError("unknown format or another message's header")
            meta = head.get("meta") or {}
            if not isinstance(meta, dict):
                raise ValueError("metadata is not a mapping")
            return Held(
                msg_id,
                Envelope.from_json(head["envelope"]),
                int(head["size"]),
                float(head["quarantined_at"]),
                meta,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise QuarantineError(f"quarantined message {msg_id} is unreadable: {exc}") from None

    def load_all(self) -> tuple[list[Held], list[str]]:
        """Every readable record, oldest first, and the ids of unreadable ones."""
        out: list[Held] = []
        bad: list[str] = []
        for msg_id in self.ids():
            try:
                held = self.load(msg_id)
            except QuarantineError:
                bad.append(msg_id)
                continue
            if held is not None:
                out.append(held)
        return out, bad

    def read_body(self, msg_id: str) -> bytes:
        """The unsealed message bytes; raises NotQuarantined or QuarantineError."""
        if self._key is None:
            raise QuarantineError("quarantine was opened without a master key")
        if not valid_id(msg_id):
            raise NotQuarantined(f"{msg_id!r} is not a quarantine id")
        try:
            raw = (self.dir / msg_id).read_bytes()
        except FileNotFoundError:
            raise NotQuarantined(f"no quarantined message {msg_id}") from None
        except OSError as exc:
            raise _storage_error(exc, f"cannot read {msg_id}") from exc
        try:
            return self._key.unseal_record(raw, _AAD_PREFIX)
        except WrongKeyError as exc:
            raise QuarantineError(f"{msg_id} was sealed under another master key") from exc
        except SealError as exc:
            raise QuarantineError(f"quarantined message {msg_id} does not open: {exc}") from exc

    # --- requests to the running gateway ------------------------------------------------

    def request(self, action: RequestAction, target: str) -> Path:
        """Ask the running gateway to release or delete (target: an id or ALL)."""
        if action not in REQUEST_ACTIONS:
            raise ValueError(f"unknown quarantine action {action!r}")
        if target != ALL and not valid_id(target):
            raise ValueError("not a quarantine id")
        path = self.requests_dir / f"{new_id()}.{action}.{target}"
        try:
            if not self.requests_dir.is_dir():
                self.requests_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                _adopt_owner(self.requests_dir, self.data_dir)
            write_file(path, b"")
            _adopt_owner(path, self.requests_dir)
        except OSError as exc:
            raise _storage_error(exc, "cannot write a quarantine request") from exc
        return path

    def take_requests(self) -> list[tuple[RequestAction, str]]:
        """Gateway side: consume pending requests as [(action, id)], ALL expanded."""
        taken = take_request_files(
            self.requests_dir, REQUEST_ACTIONS, self.ids, "quarantine_bad_request"
        )
        return [("release" if a == "release" else "delete", i) for a, i in taken]


# --- release --------------------------------------------------------------------------------


def released_meta(held: Held, now: float | None = None) -> dict[str, Any]:
    """The spool metadata of a released message: its decision, and where it came from."""
    meta = dict(held.meta)
    meta["released_from"] = held.id
    meta["released_at"] = time.time() if now is None else now
    return meta


async def release(store: QuarantineStore, spool: SpoolLike, msg_id: str) -> QueuedMessage:
    """Move one message into the delivery queue with its decision; raises NotQuarantined."""
    held = await asyncio.to_thread(store.load, msg_id)
    if held is None:
        raise NotQuarantined(f"no quarantined message {msg_id}")
    data = await asyncio.to_thread(store.read_body, msg_id)
    queued = await spool.put(held.envelope, data, released_meta(held))
    # Queued first, removed second: a crash in between leaves a copy here, never none.
    await asyncio.to_thread(store.remove, msg_id)
    log.event(
        "released",
        id=msg_id,
        queue_id=queued.id,
        sender=held.envelope.mail_from,
        recipients=len(held.envelope.rcpt_to),
        verdict=held.decision.get("verdict"),
    )
    return queued


async def delete(store: QuarantineStore, msg_id: str) -> bool:
    """Delete one quarantined message; False if it was not there."""
    removed = await asyncio.to_thread(store.remove, msg_id)
    if removed:
        log.event("quarantine_deleted", id=msg_id)
    return removed


async def apply_requests(
    store: QuarantineStore, spool: SpoolLike, requests: Iterable[tuple[RequestAction, str]]
) -> None:
    """Carry out release and delete requests, one at a time, logging each failure."""
    for action, msg_id in requests:
        try:
            if action == "release":
                await release(store, spool, msg_id)
            elif not await delete(store, msg_id):
                log.event("quarantine_unknown", action=action, id=msg_id)
        except NotQuarantined:
            log.event("quarantine_unknown", action=action, id=msg_id)
        except Exception as exc:
            # The message stays quarantined; the operator can ask again.
            log.event(
                "quarantine_request_failed",
                logging.ERROR,
                action=action,
                id=msg_id,
                error=type(exc).__name__,
            )


class RequestWatcher:
    """Daemon side: picks up `sealgate quarantine release|delete` requests promptly."""

    def __init__(self, store: QuarantineStore, spool: SpoolLike, *, interval: float = 0.5) -> None:
        self._store = store
        self._spool = spool
        self._interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start polling the requests directory."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="quarantine-requests")

    async def stop(self) -> None:
        """Stop polling once the requests being carried out are done."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                requests = await asyncio.to_thread(self._store.take_requests)
                await apply_requests(self._store, self._spool, requests)
            except Exception as exc:
                log.event("quarantine_request_failed", logging.ERROR, error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
