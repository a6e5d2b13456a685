"""The outbound queue manager: decides when each queued message is tried and records results.

It holds every queued message's state in memory, starts an attempt the moment
one is due (new mail is due at once), groups a message's pending recipients by
destination, runs the method stage, DKIM-signs each copy, hands it to the
transport, persists the per-recipient outcome, and retries, bounces or expires.
The transport's answer per recipient (delivered / transient / permanent) is the
one fact retry logic needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from gateway import log
from gateway.config import DeliveryConfig
from gateway.message import ClientInfo, Envelope, QueuedMessage, RecipientStatus
from gateway.outbound.dsn import Action, DsnRecipient, build_dsn, header_block, recipient_entry
from gateway.outbound.methods import LocalOutcome, Method, MethodStage, TlsLevel
from gateway.spool import MessageCorrupt, MessageNotFound

_log = logging.getLogger(__name__)

ResultStatus = Literal["delivered", "transient", "permanent"]

# Bodies above this are signed in a worker thread; smaller ones sign faster
# than a thread hand-off costs.
_SIGN_INLINE_LIMIT = 256 * 1024
# How many messages may have an attempt under way at once. Each holds its body
# in memory; the connection semaphores bound network use separately.
DEFAULT_MAX_ACTIVE = 1000
_STOP_CANCEL_GRACE = 10.0
# How many finished message ids are remembered. When another process tells the
# scheduler about new messages (gateway.daemon's outbound process), a message it
# also found on disk at start may already be delivered and gone by the time the
# notice arrives: the notice is then ignored rather than turned into a ghost.
_FINISHED_MEMORY = 10_000


# --- what the scheduler needs from its collaborators ------------------------------


class SpoolLike(Protocol):
    """The spool operations the scheduler uses (gateway.spool.Spool)."""

    async def put(
        self, envelope: Envelope, data: bytes, meta: dict[str, Any] | None = None
    ) -> QueuedMessage:
        """Queue a new message durably."""
        ...

    def on_new(self, callback: Callable[[QueuedMessage], None]) -> None:
        """Register a callback run after each put."""
        ...

    def load_all(self) -> list[QueuedMessage]:
        """Every queued message with its state."""
        ...

    def load(self, msg_id: str) -> QueuedMessage | None:
        """One queued message, or None."""
        ...

    async def read_body(self, msg_id: str) -> bytes:
        """The message's bytes."""
        ...

    async def save_state(self, msg: QueuedMessage) -> None:
        """Persist delivery state."""
        ...

    async def remove(self, msg_id: str) -> None:
        """Delete a message durably."""
        ...

    def take_control_requests(self) -> list[tuple[str, str]]:
        """Pending ("retry"|"delete", id) requests from `sealgate queue`."""
        ...


class RcptResultLike(Protocol):
    """One recipient's outcome of a transaction."""

    @property
    def address(self) -> str:
        """The recipient."""
        ...

    @property
    def status(self) -> str:
        """delivered, transient or permanent."""
        ...

    @property
    def code(self) -> int | None:
        """SMTP reply code, None when no server replied."""
        ...

    @property
    def text(self) -> str:
        """Reply text or our reason."""
        ...


class ReportLike(Protocol):
    """What the transport reports for one transaction."""

    @property
    def results(self) -> Sequence[RcptResultLike]:
        """Per-recipient outcomes."""
        ...

    @property
    def remote(self) -> str:
        """The server that answered, "" if none."""
        ...

    @property
    def tls(self) -> Mapping[str, Any] | None:
        """TLS facts, None without TLS."""
        ...


class TransportLike(Protocol):
    """The SMTP client (gateway.outbound.transport.Transport)."""

    async def deliver(
        self,
        domain: str,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        *,
        smtputf8: bool = False,
        body_8bitmime: bool = False,
        tls: TlsLevel = "opportunistic",
    ) -> ReportLike:
        """Deliver one copy at a TLS level; never raises for network problems."""
        ...


class SignerLike(Protocol):
    """The DKIM signer (gateway.dkim.DkimSigner)."""

    def sign(self, data: bytes, mail_from: str) -> bytes:
        """The message with a DKIM-Signature prepended, or unchanged."""
        ...


# Builds the note telling a sender which recipients got a portal link.
PortalNotice = Callable[[QueuedMessage, Sequence[str]], bytes]
# Looks at each message once, at its first attempt (keys and certificates to learn).
Observer = Callable[[QueuedMessage, bytes], Awaitable[None]]


# --- internal records -----------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    """Recipients of one message that share a destination and a method: one transaction."""

    destination: str
    domain: str
    method: Method
    rcpts: tuple[str, ...]


@dataclass(frozen=True)
class _Outcome:
    """One recipient's result of this attempt, as a status ready to store."""

    result: ResultStatus
    status: RecipientStatus


@dataclass
class _Slot:
    """The concurrency limit of one destination, dropped when nobody uses it."""

    sem: asyncio.Semaphore
    users: int = 0


@dataclass
class _AttemptContext:
    """Per-attempt shared state: each distinct copy is signed once; groups still running."""

    remaining: int
    signed: dict[int, tuple[bytes, asyncio.Future[bytes]]] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # why each recipient's method
    portal_delivered: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Sent:
    """What one transaction (or local handling) of a copy produced."""

    results: dict[str, tuple[ResultStatus, int | None, str]]
    remote: str = ""
    tls: Mapping[str, Any] | None = None
    tls_failure: str | None = None


def _result_status(status: str) -> ResultStatus:
    # Anything the transport did not call final is worth another try.
    if status == "delivered":
        return "delivered"
    if status == "permanent":
        return "permanent"
    return "transient"


def _method_label(method: Method) -> str:
    """The name a delivery record shows: "tls" for verified TLS, else the handler's name."""
    if method.name == "smtp" and method.tls == "verified":
        return "tls"
    return method.name


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Scheduler:
    """Runs delivery attempts for every queued message until each recipient is final."""

    def __init__(
        self,
        cfg: DeliveryConfig,
        hostname: str,
        spool: SpoolLike,
        transport: TransportLike,
        signer: SignerLike | None,
        *,
        methods: MethodStage | None = None,
        portal_notice: PortalNotice | None = None,
        observe: Observer | None = None,
        max_active: int = DEFAULT_MAX_ACTIVE,
        control_interval: float = 1.0,
    ) -> None:
        self._cfg = cfg
        self._hostname = hostname
        self._spool = spool
        self._transport = transport
        self._signer = signer
        self._methods = methods or MethodStage()
        self._portal_notice_builder = portal_notice
        self._observe = observe
        self._max_active = max_active
        self._control_interval = control_interval

        self._messages: dict[str, QueuedMessage] = {}
        # The authoritative due time per idle message; heap entries that
        # disagree with it are stale and skipped.
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._attempts: dict[str, asyncio.Task[None]] = {}
        self._retry_after: set[str] = set()
        self._forgotten: set[str] = set()
        self._finished: dict[str, None] = {}  # insertion-ordered: the oldest is dropped first
        # Last queued spool write per message: writes for one message run in
        # order and are never cut short by a cancelled caller.
        self._io: dict[str, asyncio.Future[None]] = {}
        self._connections = asyncio.Semaphore(cfg.max_connections)
        self._slots: dict[str, _Slot] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: list[asyncio.Task[None]] = []
        self._stopping = False

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Load the queue, subscribe to new messages and start working."""
        self._loop = asyncio.get_running_loop()
        # Subscribe first so nothing put during the load is missed; _add is idempotent.
        self._spool.on_new(self._on_new)
        queued = await asyncio.to_thread(self._spool.load_all)
        for msg in queued:
            self._add(msg)
        self._background = [
            asyncio.create_task(self._dispatch(), name="scheduler-dispatch"),
            asyncio.create_task(self._control_loop(), name="scheduler-control"),
        ]
        log.event("scheduler_started", queued=len(queued))

    # The daemon's shutdown contract names a drain budget; asyncio.timeout would not drain.
    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109
        """Start nothing new, let attempts finish up to timeout, cancel the rest (still queued)."""
        if self._stopping:
            return
        self._stopping = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        running = list(self._attempts.values())
        unfinished: set[asyncio.Task[None]] = set()
        if running:
            _, unfinished = await asyncio.wait(running, timeout=timeout)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished, timeout=_STOP_CANCEL_GRACE)
        writes = list(self._io.values())
        if writes:
            await asyncio.wait(writes, timeout=_STOP_CANCEL_GRACE)
        log.event("scheduler_stopped", queued=len(self._messages), abandoned=len(unfinished))

    # --- queue bookkeeping ------------------------------------------------------

    def _on_new(self, msg: QueuedMessage) -> None:
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(self._add, msg)
        else:
            self._add(msg)

    def _add(self, msg: QueuedMessage) -> None:
        if (
            self._stopping
            or msg.id in self._messages
            or msg.id in self._forgotten
            or msg.id in self._finished
        ):
            return
        self._messages[msg.id] = msg
        self._schedule(msg.id, msg.next_attempt)

    def _schedule(self, mid: str, when: float) -> None:
        self._due[mid] = when
        heapq.heappush(self._heap, (when, next(self._seq), mid))
        self._wake.set()

    async def _dispatch(self) -> None:
        """Start every due attempt as soon as it is due; sleep until the next one."""
        while True:
            self._wake.clear()
            now = time.time()
            while self._heap and len(self._attempts) < self._max_active:
                due, _, mid = self._heap[0]
                if self._due.get(mid) != due:
                    heapq.heappop(self._heap)
                    continue
                if mid in self._attempts:
                    # The attempt under way reschedules the message when it ends.
                    heapq.heappop(self._heap)
                    del self._due[mid]
                    continue
                if due > now:
                    break
                heapq.heappop(self._heap)
                del self._due[mid]
                self._start_attempt(mid)
            delay: float | None = None
            if self._heap and len(self._attempts) < self._max_active:
                delay = max(0.0, self._heap[0][0] - now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _start_attempt(self, mid: str) -> None:
        task = asyncio.create_task(self._attempt(mid), name=f"deliver-{mid}")
        self._attempts[mid] = task
        task.add_done_callback(lambda t: self._attempt_done(mid, t))

    def _attempt_done(self, mid: str, task: asyncio.Task[None]) -> None:
        """Schedule the message's next attempt (the attempt stored when) once this one ends."""
        self._attempts.pop(mid, None)
        self._wake.set()
        msg = self._messages.get(mid)
        when = msg.next_attempt if msg is not None else 0.0
        if not task.cancelled() and (exc := task.exception()) is not None:
            # A bug, not a delivery problem: keep the message and try again later.
            log.event("scheduler_error", level=logging.ERROR, id=mid, error=type(exc).__name__)
            _log.debug("attempt failed", exc_info=exc)
            when = time.time() + self._cfg.retry.first
        if mid in self._retry_after:
            self._retry_after.discard(mid)
            when = time.time()
        if msg is not None and not self._stopping:
            self._schedule(mid, when)

    # --- spool writes -----------------------------------------------------------

    async def _serial(self, mid: str, op: Callable[[], Awaitable[None]]) -> None:
        """Run a spool write for mid after the previous one; a cancelled caller can't cut it."""
        previous = self._io.get(mid)

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            await op()

        fut = asyncio.ensure_future(run())
        self._io[mid] = fut

        def done(f: asyncio.Future[None]) -> None:
            if self._io.get(mid) is f:
                del self._io[mid]
            if not f.cancelled():
                f.exception()  # retrieved here; the caller logs it if still waiting

        fut.add_done_callback(done)
        await asyncio.shield(fut)

    async def _persist(self, mid: str) -> None:
        """Write mid's current in-memory state; errors are logged (retried by later writes)."""

        async def save() -> None:
            msg = self._messages.get(mid)
            if msg is not None and mid not in self._forgotten:
                await self._spool.save_state(msg)

        try:
            await self._serial(mid, save)
        except Exception as exc:
            log.event(
                "spool_error",
                level=logging.ERROR,
                id=mid,
                op="save_state",
                error=type(exc).__name__,
            )

    async def _remove(self, mid: str) -> bool:
        try:
            await self._serial(mid, lambda: self._spool.remove(mid))
        except Exception as exc:
            log.event(
                "spool_error", level=logging.ERROR, id=mid, op="remove", error=type(exc).__name__
            )
            return False
        return True

    # --- one attempt --------------------------------------------------------------

    def _destination(self, address: str) -> tuple[str, str]:
        """(destination key, recipient domain) for grouping and for the transport."""
        domain = address.rpartition("@")[2].rstrip(".").lower()
        if self._cfg.relay_host is not None:
            return str(self._cfg.relay_host), domain
        return domain, domain

    async def _plan(
        self,
        msg: QueuedMessage,
        data: bytes,
        pending: Sequence[RecipientStatus],
        ctx: _AttemptContext,
    ) -> list[_Group]:
        planned = await self._methods.plan(msg, data, [r.address for r in pending])
        buckets: dict[tuple[str, Method], tuple[str, list[str]]] = {}
        groups: list[_Group] = []
        for rcpt in pending:
            dest, domain = self._destination(rcpt.address)
            choice = planned[rcpt.address]
            ctx.reasons[rcpt.address] = choice.reason
            if self._methods.per_recipient(choice.method):
                groups.append(_Group(dest, domain, choice.method, (rcpt.address,)))
                continue
            buckets.setdefault((dest, choice.method), (domain, []))[1].append(rcpt.address)
        size = self._cfg.max_recipients_per_transaction
        groups += [
            _Group(dest, domain, method, tuple(addrs[i : i + size]))
            for (dest, method), (domain, addrs) in buckets.items()
            for i in range(0, len(addrs), size)
        ]
        ctx.remaining = len(groups)
        return groups

    @contextlib.asynccontextmanager
    async def _connection_slot(self, destination: str) -> AsyncIterator[None]:
        slot = self._slots.get(destination)
        if slot is None:
            slot = self._slots[destination] = _Slot(
                asyncio.Semaphore(self._cfg.max_per_destination)
            )
        slot.users += 1
        try:
            # Destination first: a saturated destination must not hold global slots.
            async with slot.sem, self._connections:
                yield
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[destination]

    async def _sign(self, data: bytes, mail_from: str, ctx: _AttemptContext) -> bytes:
        signer = self._signer
        if signer is None:
            return data
        entry = ctx.signed.get(id(data))
        if entry is None and ctx.remaining == 1 and len(data) <= _SIGN_INLINE_LIMIT:
            return signer.sign(data, mail_from)  # no other group left to share it with
        if entry is None:
            if len(data) > _SIGN_INLINE_LIMIT:
                coro = asyncio.to_thread(signer.sign, data, mail_from)
            else:
                coro = self._sign_inline(signer, data, mail_from)
            # Keeping data in the entry pins its id() for the attempt's lifetime.
            entry = ctx.signed[id(data)] = (data, asyncio.ensure_future(coro))
        return await asyncio.shield(entry[1])

    @staticmethod
    async def _sign_inline(signer: SignerLike, data: bytes, mail_from: str) -> bytes:
        return signer.sign(data, mail_from)

    async def _transact(
        self, msg: QueuedMessage, data: bytes, group: _Group, ctx: _AttemptContext
    ) -> _Sent:
        """Render, sign and send one copy; results per recipient, remote and TLS facts."""
        env = msg.envelope
        out = await self._methods.render(group.method, msg, data, group.rcpts)
        if isinstance(out, LocalOutcome):
            return _Sent({a: (out.status, out.code, out.text) for a in group.rcpts})
        signed = await self._sign(out.data, env.mail_from, ctx)
        async with self._connection_slot(group.destination):
            report = await self._transport.deliver(
                group.domain,
                env.mail_from,
                group.rcpts,
                signed,
                smtputf8=env.smtputf8,
                body_8bitmime=env.body_8bitmime,
                tls=out.tls,
            )
        results = {r.address: (_result_status(r.status), r.code, r.text) for r in report.results}
        return _Sent(results, report.remote, report.tls, getattr(report, "tls_failure", None))

    async def _send(
        self, msg: QueuedMessage, data: bytes, group: _Group, ctx: _AttemptContext
    ) -> tuple[_Sent, dict[str, Method]]:
        """Send one group's copy; a protected copy whose verified TLS failed goes to the portal."""
        sent = await self._transact(msg, data, group, ctx)
        used = dict.fromkeys(group.rcpts, group.method)
        if sent.tls_failure is None:
            return sent, used
        fallback = self._methods.fallback(msg, group.method)
        if fallback is None:
            return sent, used
        results = dict(sent.results)
        for addr in group.rcpts:
            if results.get(addr, ("transient",))[0] == "delivered":
                continue
            ctx.reasons[addr] = f"{fallback.reason}: {sent.tls_failure}"
            log.event(
                "method_fallback",
                id=msg.id,
                rcpt=addr,
                method=fallback.method.name,
                reason=sent.tls_failure,
            )
            single = _Group(group.destination, group.domain, fallback.method, (addr,))
            again = await self._transact(msg, data, single, ctx)
            results[addr] = again.results.get(addr, ("transient", None, "4.3.0 Internal error"))
            used[addr] = fallback.method
        return _Sent(results, sent.remote, sent.tls, sent.tls_failure), used

    async def _run_group(
        self,
        msg: QueuedMessage,
        data: bytes,
        group: _Group,
        ctx: _AttemptContext,
    ) -> list[_Outcome]:
        mid = msg.id
        used = dict.fromkeys(group.rcpts, group.method)
        try:
            sent, used = await self._send(msg, data, group, ctx)
            results, remote, tls = sent.results, sent.remote, sent.tls
        except Exception as exc:
            # Fail closed: a rendering or signing error is temporary, never a plaintext fallback.
            log.event(
                "delivery_error",
                level=logging.ERROR,
                id=mid,
                destination=group.destination,
                error=type(exc).__name__,
            )
            _log.debug("delivery error", exc_info=exc)
            results, remote, tls = {}, "", None
        now = time.time()
        current = {r.address: r for r in msg.recipients}
        outcomes = []
        for addr in group.rcpts:
            result, code, text = results.get(addr, ("transient", None, "4.3.0 Internal error"))
            prev = current[addr]
            method = _method_label(used[addr])
            status = replace(
                prev,
                attempts=prev.attempts + 1,
                last_code=code,
                last_reply=text,
                remote=remote,
                tls=dict(tls) if tls is not None else None,
                state="delivered" if result == "delivered" else "pending",
                method=method,
                method_reason=ctx.reasons.get(addr, ""),
            )
            outcomes.append(_Outcome(result, status))
            if result == "delivered":
                if method == "portal":
                    ctx.portal_delivered.append(addr)
                log.event(
                    "delivered",
                    id=mid,
                    rcpt=addr,
                    remote=remote,
                    code=code,
                    method=method,
                    reason=ctx.reasons.get(addr, ""),
                    tls_version=tls.get("version") if tls else None,
                    tls_cipher=tls.get("cipher") if tls else None,
                    tls_verified=tls.get("verified") if tls else None,
                    delay=round(now - msg.envelope.received_at, 3),
                )
        ctx.remaining -= 1
        if mid in self._messages and mid not in self._forgotten:
            # Permanent failures are stored only once their DSN is queued (see _conclude).
            keep = [o.status for o in outcomes if o.result != "permanent"]
            self._messages[mid] = self._messages[mid].with_recipients(keep)
            if ctx.remaining > 0 and any(o.result == "delivered" for o in outcomes):
                # Other destinations are still in flight: record deliveries now so a
                # crash does not send these copies twice.
                await self._persist(mid)
        return outcomes

    async def _attempt(self, mid: str) -> None:
        msg = self._messages.get(mid)
        if msg is None:
            return
        pending = msg.pending
        if not pending:
            await self._finish(mid)
            return
        data: bytes | None
        try:
            data = await self._spool.read_body(mid)
        except (MessageNotFound, MessageCorrupt) as exc:
            # Gone or quarantined by the spool (which logged why): nothing left to deliver.
            log.event("dropped", level=logging.ERROR, id=mid, reason=type(exc).__name__)
            self._messages.pop(mid, None)
            self._remember_finished(mid)
            return
        except Exception as exc:
            log.event(
                "spool_error",
                level=logging.ERROR,
                id=mid,
                op="read_body",
                error=type(exc).__name__,
            )
            data = None
        if mid not in self._messages:
            return  # deleted meanwhile
        outcomes: list[_Outcome] = []
        if data is None:
            for r in pending:
                status = replace(
                    r,
                    attempts=r.attempts + 1,
                    last_code=None,
                    last_reply="4.3.0 Queue file unreadable",
                )
                outcomes.append(_Outcome("transient", status))
            self._messages[mid] = msg.with_recipients([o.status for o in outcomes])
        else:
            if msg.attempts == 0 and self._observe is not None:
                await self._observe_safely(msg, data)
            ctx = _AttemptContext(remaining=0)
            groups = await self._plan(msg, data, pending, ctx)
            if len(groups) == 1:
                batches = [await self._run_group(msg, data, groups[0], ctx)]
            else:
                batches = await asyncio.gather(
                    *(self._run_group(msg, data, g, ctx) for g in groups)
                )
            outcomes = [o for batch in batches for o in batch]
            if ctx.portal_delivered:
                await self._portal_notice(msg, ctx.portal_delivered)
        if mid not in self._messages or mid in self._forgotten:
            return  # deleted while in flight: the results are discarded
        await self._conclude(mid, outcomes, data)

    async def _conclude(self, mid: str, outcomes: list[_Outcome], data: bytes | None) -> None:
        """Bounce, expire, warn, then persist and reschedule (or remove) after an attempt."""
        msg = self._messages[mid]
        env = msg.envelope
        now = time.time()
        retry = self._cfg.retry
        expires = env.received_at + retry.lifetime

        failed: list[tuple[RecipientStatus, bool]] = [
            (o.status, False) for o in outcomes if o.result == "permanent"
        ]
        failed_addrs = {s.address for s, _ in failed}
        if now >= expires:
            failed += [(r, True) for r in msg.pending if r.address not in failed_addrs]
            failed_addrs = {s.address for s, _ in failed}
        waiting = [r for r in msg.pending if r.address not in failed_addrs]
        warn = bool(
            waiting
            and retry.delay_warning is not None
            and not msg.delay_warned
            and now - env.received_at >= retry.delay_warning
        )
        entries = [recipient_entry(s, "failed", expired=exp, at=now) for s, exp in failed]
        if warn:
            entries += [recipient_entry(r, "delayed", at=now) for r in waiting]
        # One report per attempt covers both the failures and the delay warning.
        notified = await self._notify(msg, entries, data, now, expires) if entries else True
        current = self._messages.get(mid)
        if current is None:
            return  # deleted meanwhile
        msg = current
        if notified:
            msg = msg.with_recipients([replace(s, state="bounced") for s, _ in failed])
            if warn:
                msg = replace(msg, delay_warned=True)
            for s, expired in failed:
                log.event(
                    "expired" if expired else "bounced",
                    id=mid,
                    rcpt=s.address,
                    code=s.last_code,
                    reason=s.last_reply,
                    attempts=s.attempts,
                )
        # Otherwise no DSN could be queued: the failed recipients stay pending so a
        # later attempt bounces them again and the sender still learns of it.
        self._messages[mid] = msg

        if not msg.pending:
            await self._finish(mid)
            return

        attempts = msg.attempts + 1
        backoff = min(retry.first * 2 ** min(attempts - 1, 32), retry.max_backoff)
        # A little jitter spreads retries of messages deferred together.
        backoff *= random.uniform(0.9, 1.1)  # noqa: S311 - timing jitter, not security
        next_attempt = min(now + backoff, expires)
        if mid in self._retry_after:
            self._retry_after.discard(mid)
            next_attempt = now
        msg = replace(msg, attempts=attempts, next_attempt=next_attempt)
        self._messages[mid] = msg
        await self._persist(mid)
        # _attempt_done schedules next_attempt once this task has ended.
        pending_now = {r.address for r in msg.pending}
        for o in outcomes:
            if o.status.address in pending_now:
                log.event(
                    "deferred",
                    id=mid,
                    rcpt=o.status.address,
                    code=o.status.last_code,
                    reason=o.status.last_reply,
                    attempts=o.status.attempts,
                    next_attempt=_iso(next_attempt),
                )

    def _remember_finished(self, mid: str) -> None:
        self._finished[mid] = None
        if len(self._finished) > _FINISHED_MEMORY:
            del self._finished[next(iter(self._finished))]

    async def _finish(self, mid: str) -> None:
        """Every recipient is final: forget the message and delete it from the spool."""
        self._messages.pop(mid, None)
        self._retry_after.discard(mid)
        self._remember_finished(mid)
        if await self._remove(mid):
            log.event("removed", id=mid)

    def _wants_dsn(self, msg: QueuedMessage) -> bool:
        # Never answer the null sender, never bounce a bounce (RFC 5321 §4.5.5).
        return msg.envelope.mail_from != "" and not msg.envelope.is_dsn

    async def _notify(
        self,
        msg: QueuedMessage,
        entries: list[DsnRecipient],
        data: bytes | None,
        now: float,
        retry_until: float,
    ) -> bool:
        """Queue one DSN about entries; True when queued or when none is wanted."""
        if not self._wants_dsn(msg):
            return True
        env = msg.envelope
        action: Action = "failed" if any(e.action == "failed" for e in entries) else "delayed"
        dsn = build_dsn(
            hostname=self._hostname,
            queue_id=msg.id,
            envelope=env,
            recipients=entries,
            original_headers=header_block(data) if data else b"",
            now=now,
            retry_until=retry_until,
        )
        dsn_env = Envelope(
            mail_from="",
            rcpt_to=(env.mail_from,),
            received_at=now,
            client=ClientInfo(ip="127.0.0.1", helo=self._hostname),
            smtputf8=dsn.utf8 or not env.mail_from.isascii(),
            body_8bitmime=dsn.utf8,
            is_dsn=True,
        )
        try:
            queued = await self._spool.put(dsn_env, dsn.data, {"dsn_for": msg.id})
        except Exception as exc:
            log.event(
                "dsn_failed",
                level=logging.ERROR,
                id=msg.id,
                action=action,
                error=type(exc).__name__,
            )
            return False
        log.event(
            "dsn_queued",
            id=queued.id,
            original_id=msg.id,
            action=action,
            to=env.mail_from,
            rcpts=len(entries),
        )
        self._add(queued)
        return True

    async def _observe_safely(self, msg: QueuedMessage, data: bytes) -> None:
        """Let the key stores learn from the message; their failure never delays delivery."""
        assert self._observe is not None
        try:
            await self._observe(msg, data)
        except Exception as exc:
            log.event("observe_error", level=logging.ERROR, id=msg.id, error=type(exc).__name__)
            _log.debug("observe failed", exc_info=exc)

    async def _portal_notice(self, msg: QueuedMessage, rcpts: Sequence[str]) -> None:
        """Tell the sender which recipients will read the message in the portal."""
        build = self._portal_notice_builder
        if build is None or not self._wants_dsn(msg):
            return
        env = msg.envelope
        now = time.time()
        try:
            data = build(msg, rcpts)
            notice_env = Envelope(
                mail_from="",
                rcpt_to=(env.mail_from,),
                received_at=now,
                client=ClientInfo(ip="127.0.0.1", helo=self._hostname),
                smtputf8=not env.mail_from.isascii(),
                # A notice about a notice is never sent, as for DSNs.
                is_dsn=True,
            )
            queued = await self._spool.put(notice_env, data, {"portal_notice_for": msg.id})
        except Exception as exc:
            # The recipients have their mail; a lost notice is worth a log line, not a retry.
            log.event(
                "portal_notice_failed", level=logging.ERROR, id=msg.id, error=type(exc).__name__
            )
            return
        log.event("portal_notice_queued", id=queued.id, original_id=msg.id, rcpts=len(rcpts))
        self._add(queued)

    # --- control requests from `sealgate queue` ------------------------------------

    async def _control_loop(self) -> None:
        while True:
            await asyncio.sleep(self._control_interval)
            try:
                requests = await asyncio.to_thread(self._spool.take_control_requests)
                for action, mid in requests:
                    if action == "retry":
                        await self.retry(mid)
                    elif action == "delete":
                        await self.delete(mid)
            except Exception as exc:
                log.event("control_error", level=logging.ERROR, error=type(exc).__name__)
                _log.debug("control error", exc_info=exc)

    async def retry(self, mid: str) -> bool:
        """Make a queued message due now; False if it is not queued."""
        if mid in self._attempts:
            self._retry_after.add(mid)
        elif mid in self._messages:
            self._schedule(mid, time.time())
        else:
            msg = await asyncio.to_thread(self._spool.load, mid)
            if msg is None or mid in self._forgotten:
                log.event("control_unknown", action="retry", id=mid)
                return False
            self._finished.pop(mid, None)  # still on disk: an operator wants it tried again
            self._add(msg)
            if mid in self._due:
                self._schedule(mid, time.time())
        log.event("retry_requested", id=mid)
        return True

    async def delete(self, mid: str) -> bool:
        """Forget a message (an attempt under way is abandoned) and delete it."""
        known = mid in self._messages
        self._forgotten.add(mid)
        self._messages.pop(mid, None)
        self._due.pop(mid, None)
        self._retry_after.discard(mid)
        task = self._attempts.get(mid)
        if task is not None:
            task.cancel()
        try:
            removed = await self._remove(mid)
        finally:
            self._forgotten.discard(mid)
        if removed:
            self._remember_finished(mid)
            log.event("deleted", id=mid, known=known)
        return removed
