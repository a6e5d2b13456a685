"""The outbound scheduler with a real spool and a real SMTP transport against loopback sinks.

Every destination is a real aiosmtpd sink found through the test DNS server;
nothing stands in for the spool, the transport or the DKIM signer.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from email.message import Message
from pathlib import Path
from typing import Any

import dkim
import pytest

from gateway.config import DeliveryConfig, DkimKey, DnsConfig, RetryConfig
from gateway.dkim import DkimSigner, generate_key
from gateway.message import ClientInfo, Envelope, QueuedMessage
from gateway.outbound.methods import LocalOutcome, Method, MethodStage, Outgoing, Planned
from gateway.outbound.scheduler import Scheduler
from gateway.outbound.transport import Transport
from gateway.resolver import Resolver
from gateway.sealing import MasterKey
from gateway.spool import Spool
from tests.peers.dns import DnsServer
from tests.peers.sink import SinkFactory

HOSTNAME = "gw.sealgate.test"
# Our own corner of 127.0.0.0/8, so sinks of other suites running at the same
# time on this machine (127.0.0.2-20) never collide with ours.
MX1, MX2, MX3 = "127.0.40.2", "127.0.40.3", "127.0.40.4"
WAIT = 60.0  # generous: a slow machine must not fail these tests


def body(subject: str = "Lab results", text: str = "PHI stays out of logs") -> bytes:
    """A small RFC 5322 message."""
    return (
        f"From: Doctor <doctor@clinic.example>\r\n"
        f"To: patient@example.net\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{time.time_ns()}@clinic.example>\r\n"
        f"\r\n{text}\r\n"
    ).encode()


class Events(logging.Handler):
    """Collects the gateway's structured log events for assertions."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep (event, fields)."""
        fields = getattr(record, "fields", None)
        if fields is not None:
            self.records.append((record.getMessage(), dict(fields)))

    def named(self, name: str, **match: Any) -> list[dict[str, Any]]:
        """Events called name whose fields include match."""
        return [
            f for n, f in self.records if n == name and all(f.get(k) == v for k, v in match.items())
        ]

    async def wait(self, name: str, count: int = 1, **match: Any) -> list[dict[str, Any]]:
        """Wait until count such events were logged."""
        deadline = time.monotonic() + WAIT
        while len(self.named(name, **match)) < count:
            if time.monotonic() > deadline:
                seen = [n for n, _ in self.records]
                raise TimeoutError(f"no {count}x {name} {match} within {WAIT}s; saw {seen}")
            await asyncio.sleep(0.02)
        return self.named(name, **match)


@pytest.fixture
def events() -> Iterator[Events]:
    """The event log, captured."""
    handler = Events()
    logger = logging.getLogger("sealgate.event")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


class Gateway:
    """A spool, transport and scheduler in the test's event loop."""

    def __init__(
        self, data_dir: Path, cfg: DeliveryConfig, dns: DnsServer, dns_timeout: float = 5
    ) -> None:
        self.data_dir = data_dir
        self.cfg = cfg
        self.dns_cfg = DnsConfig.model_validate(
            {"nameservers": [dns.nameserver], "timeout": dns_timeout}
        )
        self.spool = Spool(data_dir, MasterKey.load_or_create(data_dir / "master.key"))
        self.transport = Transport(cfg, HOSTNAME, Resolver(self.dns_cfg))
        self.scheduler: Scheduler | None = None

    async def start(
        self, signer: DkimSigner | None = None, methods: MethodStage | None = None
    ) -> None:
        """Start the spool, then the scheduler."""
        await self.spool.start()
        await self.start_scheduler(signer, methods)

    async def start_scheduler(
        self, signer: DkimSigner | None = None, methods: MethodStage | None = None
    ) -> None:
        """(Re)start only the scheduler, as after a daemon restart."""
        self.scheduler = Scheduler(
            self.cfg,
            HOSTNAME,
            self.spool,
            self.transport,
            signer or DkimSigner([]),
            methods=methods,
            control_interval=0.1,
        )
        await self.scheduler.start()

    async def stop_scheduler(self, timeout: float = 10.0) -> None:
        """Stop the scheduler, keeping the spool open."""
        if self.scheduler is not None:
            await self.scheduler.stop(timeout)
            self.scheduler = None

    async def close(self) -> None:
        """Stop everything."""
        await self.stop_scheduler()
        await self.transport.close()
        await self.spool.close()

    async def send(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes | None = None,
        *,
        received_at: float | None = None,
        is_dsn: bool = False,
    ) -> QueuedMessage:
        """Queue a message the way inbound does."""
        env = Envelope(
            mail_from=mail_from,
            rcpt_to=tuple(rcpts),
            received_at=time.time() if received_at is None else received_at,
            client=ClientInfo(ip="127.0.0.1", helo="app.clinic.example"),
            is_dsn=is_dsn,
        )
        return await self.spool.put(env, data or body())

    async def wait_gone(self, mid: str) -> None:
        """Wait until a message has left the queue."""
        deadline = time.monotonic() + WAIT
        while await asyncio.to_thread(self.spool.load, mid) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{mid} still queued after {WAIT}s")
            await asyncio.sleep(0.02)


def retry(first: float = 1.0, max_backoff: float = 2.0, **kw: Any) -> RetryConfig:
    """A retry policy with short intervals for tests."""
    return RetryConfig.model_validate({"first": first, "max_backoff": max_backoff, **kw})


def delivery(**kw: Any) -> DeliveryConfig:
    """Delivery settings for tests: MX on port 25, short timeouts and retries."""
    values: dict[str, Any] = {
        "mx_port": 25,
        "connect_timeout": 10,
        "command_timeout": 30,
        "retry": retry(),
    }
    values.update(kw)
    return DeliveryConfig.model_validate(values)


@asynccontextmanager
async def gateway(
    tmp_path: Path,
    dns: DnsServer,
    cfg: DeliveryConfig | None = None,
    signer: DkimSigner | None = None,
    methods: MethodStage | None = None,
) -> AsyncIterator[Gateway]:
    """A running gateway outbound side; always shut down."""
    gw = Gateway(tmp_path, cfg or delivery(), dns)
    try:
        await gw.start(signer, methods)
        yield gw
    finally:
        await gw.close()


def mx(dns: DnsServer, domain: str, address: str) -> None:
    """Publish an MX for domain pointing at a host with the given address."""
    host = f"mx.{domain}"
    dns.add(domain, "MX", f"10 {host}.")
    dns.add(host, "A", address)


async def wait_for_query(dns: DnsServer, name: str) -> None:
    """Wait until the DNS server has been asked about name."""
    deadline = time.monotonic() + WAIT
    while not any(q.name.rstrip(".").lower() == name for q in dns.queries):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody asked for {name}")
        await asyncio.sleep(0.02)


def parse(data: bytes) -> email.message.EmailMessage:
    """Parse a received message."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def delivery_status(report: email.message.EmailMessage) -> list[Message]:
    """The blocks of a DSN's message/delivery-status part."""
    status = list(report.iter_parts())[1]
    assert status.get_content_type() == "message/delivery-status"
    payload = status.get_payload()
    assert isinstance(payload, list)
    return [block for block in payload if isinstance(block, Message)]


# --- delivery -----------------------------------------------------------------------


async def test_new_mail_is_delivered_signed_and_removed(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """A queued message goes out at once, DKIM-signed, and leaves the spool."""
    mx(dns_server, "example.net", MX1)
    sink = sink_factory(MX1)
    key_path, txt = generate_key(tmp_path / "keys", "clinic.example", "s1", "ed25519")
    signer = DkimSigner([DkimKey(domain="clinic.example", selector="s1", key=key_path)])
    async with gateway(tmp_path / "gw", dns_server, signer=signer) as gw:
        msg = await gw.send("doctor@clinic.example", ["patient@example.net"])
        (got,) = await sink.wait_for_async(1, WAIT)
        await gw.wait_gone(msg.id)
    assert got.mail_from == "doctor@clinic.example"
    assert got.rcpt_tos == ["patient@example.net"]
    assert got.data.startswith(b"DKIM-Signature:")

    def dns_txt(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.clinic.example."
        return txt.encode()

    assert dkim.verify(got.data, dnsfunc=dns_txt)
    (done,) = events.named("delivered", id=msg.id)
    assert done["rcpt"] == "patient@example.net"
    assert done["code"] == 250
    assert MX1 in done["remote"]
    # The log never carries content.
    assert all("Lab results" not in str(f) for _, f in events.records)
    assert all("PHI stays" not in str(f) for _, f in events.records)


async def test_transient_failure_is_retried_then_delivered(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """A 4xx at DATA defers the message; the retry after backoff delivers it."""
    mx(dns_server, "example.net", MX1)
    sink = sink_factory(MX1)
    sink.reply_data = ["451 4.3.0 Try again later", None]
    async with gateway(tmp_path, dns_server) as gw:
        msg = await gw.send("doctor@clinic.example", ["patient@example.net"])
        (deferred,) = await events.wait("deferred", id=msg.id)
        (got,) = await sink.wait_for_async(1, WAIT)
        await gw.wait_gone(msg.id)
    assert deferred["code"] == 451
    assert deferred["reason"].startswith("4.3.0")
    assert deferred["next_attempt"]
    assert got.rcpt_tos == ["patient@example.net"]
    (delivered,) = events.named("delivered", id=msg.id)
    assert events.records.index(("delivered", delivered)) > events.records.index(
        ("deferred", deferred)
    )


async def test_deferred_state_is_persisted(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """After a failed attempt the spool holds attempts, code, reply and the next attempt."""
    mx(dns_server, "example.net", MX1)
    sink = sink_factory(MX1)
    sink.reply_rcpt["patient@example.net"] = "450 4.2.0 Mailbox busy"
    cfg = delivery(retry=retry(first=3600, max_backoff=4000))
    async with gateway(tmp_path, dns_server, cfg) as gw:
        before = time.time()
        msg = await gw.send("doctor@clinic.example", ["patient@example.net"])
        await events.wait("deferred", id=msg.id)
        stored = await asyncio.to_thread(gw.spool.load, msg.id)
    assert stored is not None
    (rcpt,) = stored.recipients
    assert rcpt.state == "pending"
    assert rcpt.attempts == 1
    assert rcpt.last_code == 450
    assert rcpt.last_reply.startswith("4.2.0")
    assert MX1 in rcpt.remote
    assert stored.attempts == 1
    # First backoff is retry.first (3600 s) give or take the jitter.
    assert stored.next_attempt > before + 3000


async def test_pending_message_is_retried_after_restart(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """A message still pending when the scheduler stops goes out after it starts again."""
    mx(dns_server, "example.net", MX1)
    sink = sink_factory(MX1)
    sink.reply_rcpt["patient@example.net"] = "450 4.2.0 Mailbox busy"
    cfg = delivery(retry=retry(first=3600, max_backoff=4000))
    gw = Gateway(tmp_path, cfg, dns_server)
    try:
        await gw.start()
        msg = await gw.send("doctor@clinic.example", ["patient@example.net"])
        await events.wait("deferred", id=msg.id)
        await gw.stop_scheduler()
        sink.reply_rcpt.clear()
        # The next attempt is an hour away; a restart plus `queue retry` makes it due now.
        await gw.start_scheduler()
        gw.spool.request_control("retry", msg.id)
        await sink.wait_for_async(1, WAIT)
        await gw.wait_gone(msg.id)
    finally:
        await gw.close()


async def test_unreachable_destination_deferred_then_delivered(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """No server listening: deferred without a reply code; delivered once a sink comes up."""
    mx(dns_server, "example.net", MX3)
    async with gateway(tmp_path, dns_server) as gw:
        msg = await gw.send("doctor@clinic.example", ["patient@example.net"])
        (deferred, *_) = await events.wait("deferred", id=msg.id)
        assert deferred["code"] is None
        assert deferred["reason"].startswith("4.")
        sink = sink_factory(MX3)
        (got,) = await sink.wait_for_async(1, WAIT)
        await gw.wait_gone(msg.id)
    assert got.rcpt_tos == ["patient@example.net"]


async def test_recipients_grouped_per_destination(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """Two domains, two sinks: one transaction each, carrying that domain's recipients."""
    mx(dns_server, "example.net", MX1)
    mx(dns_server, "example.org", MX2)
    net, org = sink_factory(MX1), sink_factory(MX2)
    rcpts = ["a@example.net", "b@Example.NET", "c@example.org"]
    async with gateway(tmp_path, dns_server) as gw:
        msg = await gw.send("doctor@clinic.example", rcpts)
        (got_net,) = await net.wait_for_async(1, WAIT)
        (got_org,) = await org.wait_for_async(1, WAIT)
        await gw.wait_gone(msg.id)
    assert sorted(got_net.rcpt_tos) == ["a@example.net", "b@Example.NET"]
    assert got_org.rcpt_tos == ["c@example.org"]
    assert got_net.data == got_org.data  # the body is read once and sent as is
    assert len(events.named("delivered", id=msg.id)) == 3


async def test_destinations_in_parallel_and_progress_saved(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """A hanging destination does not hold up another; the finished one is saved at once."""
    mx(dns_server, "example.net", MX1)
    dns_server.drop("slow.example")  # its MX lookup never gets an answer
    sink = sink_factory(MX1)
    gw = Gateway(tmp_path, delivery(), dns_server, dns_timeout=WAIT * 2)
    try:
        await gw.start()
        msg = await gw.send("doctor@clinic.example", ["p@slow.example", "q@example.net"])
        (got,) = await sink.wait_for_async(1, WAIT)
        assert got.rcpt_tos == ["q@example.net"]
        await events.wait("delivered", id=msg.id, rcpt="q@example.net")
        # The other destination is still in flight, yet the delivery is already on disk,
        # so a crash now would not send q@example.net a second copy.
        deadline = time.monotonic() + WAIT
        while True:
            stored = await asyncio.to_thread(gw.spool.load, msg.id)
            assert stored is not None
            states = {r.address: r.state for r in stored.recipients}
            if states["q@example.net"] == "delivered" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert states == {"p@slow.example": "pending", "q@example.net": "delivered"}
        assert not events.named("deferred", id=msg.id)
        await gw.stop_scheduler(0.1)  # abandon the hanging attempt
    finally:
        await gw.close()


async def test_max_recipients_per_transaction(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory
) -> None:
    """More recipients than the per-transaction limit are split into several transactions."""
    mx(dns_server, "example.net", MX1)
    sink = sink_factory(MX1)
    rcpts = [f"r{i}@example.net" for i in range(5)]
    async with gateway(tmp_path, dns_server, delivery(max_recipients_per_transaction=2)) as gw:
        msg = await gw.send("doctor@clinic.example", rcpts)
        got = await sink.wait_for_async(3, WAIT)
        await gw.wait_gone(msg.id)
    assert sorted(len(m.rcpt_tos) for m in got) == [1, 2, 2]
    assert sorted(a for m in got for a in m.rcpt_tos) == rcpts


async def test_relay_host_is_one_destination(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory
) -> None:
    """With relay_host every recipient, whatever its domain, goes in one transaction."""
    sink = sink_factory(MX2)
    async with gateway(tmp_path, dns_server, delivery(relay_host=sink.address)) as gw:
        msg = await gw.send("doctor@clinic.example", ["a@example.net", "b@example.org"])
        (got,) = await sink.wait_for_async(1, WAIT)
        await gw.wait_gone(msg.id)
    assert sorted(got.rcpt_tos) == ["a@example.net", "b@example.org"]


# --- bounces and DSNs -----------------------------------------------------------------


async def test_permanent_failure_sends_dsn_to_sender(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """A 550 for one recipient bounces it with a DSN; the other recipient is delivered."""
    mx(dns_server, "example.net", MX1)
    mx(dns_server, "clinic.example", MX2)
    dest, sender_mx = sink_factory(MX1), sink_factory(MX2)
    dest.reply_rcpt["gone@example.net"] = "550 5.1.1 No such user"
    async with gateway(tmp_path, dns_server) as gw:
        msg = await gw.send("doctor@clinic.example", ["gone@example.net", "ok@example.net"])
        (dsn,) = await sender_mx.wait_for_async(1, WAIT)
        await gw.wait_gone(msg.id)
    (delivered,) = dest.messages
    assert delivered.rcpt_tos == ["ok@example.net"]
    assert dsn.mail_from == ""  # the null sender
    assert dsn.rcpt_tos == ["doctor@clinic.example"]
    report = parse(dsn.data)
    assert report.get_content_type() == "multipart/report"
    assert report["Auto-Submitted"] == "auto-replied"
    _, rcpt = delivery_status(report)
    assert rcpt["Final-Recipient"] == "rfc822; gone@example.net"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Diagnostic-Code"].startswith("smtp; 550")
    assert b"PHI stays out of logs" not in dsn.data  # headers only, never the body
    (bounced,) = events.named("bounced", id=msg.id)
    assert bounced["rcpt"] == "gone@example.net"
    assert bounced["code"] == 550
    (queued,) = events.named("dsn_queued", original_id=msg.id)
    assert queued["to"] == "doctor@clinic.example"


@pytest.mark.parametrize("kind", ["null sender", "dsn"])
async def test_no_dsn_for_null_sender_or_dsn(
    kind: str,
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    events: Events,
) -> None:
    """Bounces are never answered: a failed DSN or null-sender message just goes away."""
    mx(dns_server, "example.net", MX1)
    mx(dns_server, "clinic.example", MX2)
    dest, sender_mx = sink_factory(MX1), sink_factory(MX2)
    dest.reply_rcpt["gone@example.net"] = "550 5.1.1 No such user"
    mail_from = "" if kind == "null sender" else "doctor@clinic.example"
    async with gateway(tmp_path, dns_server) as gw:
        msg = await gw.send(mail_from, ["gone@example.net"], is_dsn=kind == "dsn")
        await events.wait("bounced", id=msg.id)
        # A DSN would be queued before the message is removed: once it is gone, none came.
        await gw.wait_gone(msg.id)
        assert events.named("dsn_queued") == []
        assert await asyncio.to_thread(gw.spool.load_all) == []
    assert sender_mx.messages == []


async def test_expired_message_bounces_with_dsn(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """Still failing temporarily after retry.lifetime: the recipient expires, the sender is told."""
    mx(dns_server, "example.net", MX1)
    mx(dns_server, "clinic.example", MX2)
    dest, sender_mx = sink_factory(MX1), sink_factory(MX2)
    dest.reply_rcpt["slow@example.net"] = "450 4.2.0 Mailbox busy"
    cfg = delivery(retry=retry(first=0.5, max_backoff=1, lifetime=2))
    async with gateway(tmp_path, dns_server, cfg) as gw:
        msg = await gw.send("doctor@clinic.example", ["slow@example.net"])
        (dsn,) = await sender_mx.wait_for_async(1, WAIT)
        await gw.wait_gone(msg.id)
    assert events.named("deferred", id=msg.id)  # it was retried before giving up
    (expired,) = events.named("expired", id=msg.id)
    assert expired["code"] == 450
    _, rcpt = delivery_status(parse(dsn.data))
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.4.7"
    assert "450" in rcpt["Diagnostic-Code"]
    assert dest.messages == []


async def test_old_message_expires_after_one_more_try(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """A message older than its lifetime (say, after downtime) gets one last try, then bounces."""
    mx(dns_server, "example.net", MX1)
    mx(dns_server, "clinic.example", MX2)
    sender_mx = sink_factory(MX2)
    async with gateway(tmp_path, dns_server) as gw:
        # Nothing listens on MX1's address: connection refused.
        msg = await gw.send(
            "doctor@clinic.example", ["p@example.net"], received_at=time.time() - 6 * 86400
        )
        (dsn,) = await sender_mx.wait_for_async(1, WAIT)
        await gw.wait_gone(msg.id)
    (expired,) = events.named("expired", id=msg.id)
    assert expired["code"] is None
    _, rcpt = delivery_status(parse(dsn.data))
    assert rcpt["Status"] == "5.4.7"
    assert rcpt["Diagnostic-Code"].startswith("X-Sealgate; 4.")


async def test_delay_warning_sent_once(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """With delay_warning set the sender hears once that mail is delayed, then it arrives."""
    mx(dns_server, "example.net", MX1)
    mx(dns_server, "clinic.example", MX2)
    dest, sender_mx = sink_factory(MX1), sink_factory(MX2)
    dest.reply_data = ["451 4.3.0 later", "451 4.3.0 later", None]
    cfg = delivery(retry=retry(first=0.5, max_backoff=1, delay_warning=0))
    async with gateway(tmp_path, dns_server, cfg) as gw:
        msg = await gw.send("doctor@clinic.example", ["patient@example.net"])
        await dest.wait_for_async(1, WAIT)
        await gw.wait_gone(msg.id)
        await events.wait("delivered", count=2)  # the original and the warning
    assert len(events.named("deferred", id=msg.id)) == 2
    (warning,) = sender_mx.messages
    report = parse(warning.data)
    assert "Delayed" in report["Subject"]
    _, rcpt = delivery_status(report)
    assert rcpt["Action"] == "delayed"
    assert rcpt["Status"] == "4.3.0"
    assert rcpt["Will-Retry-Until"]


# --- control requests -------------------------------------------------------------------


async def test_control_retry_makes_message_due_now(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """`sealgate queue retry` (a control request) skips the remaining backoff."""
    mx(dns_server, "example.net", MX1)
    sink = sink_factory(MX1)
    sink.reply_data = ["451 4.3.0 later", None]
    cfg = delivery(retry=retry(first=3600, max_backoff=4000))
    async with gateway(tmp_path, dns_server, cfg) as gw:
        msg = await gw.send("doctor@clinic.example", ["patient@example.net"])
        await events.wait("deferred", id=msg.id)
        gw.spool.request_control("retry", msg.id)
        await sink.wait_for_async(1, WAIT)
        await gw.wait_gone(msg.id)
    assert events.named("retry_requested", id=msg.id)


async def test_control_delete_forgets_message(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """`sealgate queue delete` removes a deferred message; it is never delivered."""
    mx(dns_server, "example.net", MX1)
    sink = sink_factory(MX1)
    sink.reply_rcpt["patient@example.net"] = "450 4.2.0 busy"
    cfg = delivery(retry=retry(first=0.5, max_backoff=1))
    async with gateway(tmp_path, dns_server, cfg) as gw:
        msg = await gw.send("doctor@clinic.example", ["patient@example.net"])
        await events.wait("deferred", id=msg.id)
        gw.spool.request_control("delete", msg.id)
        await events.wait("deleted", id=msg.id)
        await gw.wait_gone(msg.id)
        sink.reply_rcpt.clear()
        # Anything else still flows: a later message is delivered, the deleted one never.
        other = await gw.send("doctor@clinic.example", ["patient@example.net"])
        await events.wait("delivered", id=other.id)
        assert await asyncio.to_thread(gw.spool.load_all) == []
    assert len(sink.messages) == 1
    assert not events.named("delivered", id=msg.id)


async def test_control_delete_abandons_attempt_in_flight(
    tmp_path: Path, dns_server: DnsServer, events: Events
) -> None:
    """Deleting a message whose attempt is under way discards that attempt's results."""
    mx(dns_server, "example.net", MX1)
    dns_server.drop("example.net")  # the attempt hangs waiting for DNS
    async with gateway(tmp_path, dns_server) as gw:
        msg = await gw.send("doctor@clinic.example", ["patient@example.net"])
        await wait_for_query(dns_server, "example.net")
        gw.spool.request_control("delete", msg.id)
        await events.wait("deleted", id=msg.id)
        await gw.wait_gone(msg.id)
        assert await asyncio.to_thread(gw.spool.load_all) == []
    assert not events.named("deferred", id=msg.id)


# --- the method stage -------------------------------------------------------------------


class PortalStub:
    """A local method: records which recipients it handled (as a portal would store them)."""

    def __init__(self) -> None:
        self.handled: list[str] = []

    async def render(
        self, method: Method, msg: QueuedMessage, data: bytes, rcpts: Sequence[str]
    ) -> Outgoing | LocalOutcome:
        """Take the recipients locally."""
        self.handled.extend(rcpts)
        return LocalOutcome("delivered", None, "2.0.0 Stored for the portal")


class PortalForSome(MethodStage):
    """Sends recipients matching a predicate to the local method."""

    def __init__(self, portal: PortalStub, use_portal: Callable[[str], bool]) -> None:
        super().__init__({"portal": portal})
        self._use_portal = use_portal

    async def plan(
        self, msg: QueuedMessage, data: bytes, rcpts: Sequence[str]
    ) -> dict[str, Planned]:
        """Portal for matching recipients, SMTP otherwise."""
        out = await super().plan(msg, data, rcpts)
        for rcpt in rcpts:
            if self._use_portal(rcpt):
                out[rcpt] = Planned(Method("portal"), "test")
        return out


async def test_method_stage_routes_recipients(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """A recipient whose method is local never reaches SMTP; the rest are delivered."""
    mx(dns_server, "example.net", MX1)
    sink = sink_factory(MX1)
    portal = PortalStub()
    methods = PortalForSome(portal, lambda r: r.startswith("secure"))
    async with gateway(tmp_path, dns_server, methods=methods) as gw:
        msg = await gw.send("doctor@clinic.example", ["secure@example.net", "plain@example.net"])
        (got,) = await sink.wait_for_async(1, WAIT)
        await gw.wait_gone(msg.id)
    assert got.rcpt_tos == ["plain@example.net"]
    assert portal.handled == ["secure@example.net"]
    (local,) = events.named("delivered", id=msg.id, rcpt="secure@example.net")
    assert local["method"] == "portal"


async def test_unknown_method_fails_closed(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """A method nobody implements defers the recipient; it never falls back to plain SMTP."""
    mx(dns_server, "example.net", MX1)
    sink = sink_factory(MX1)

    class SmimeOnly(MethodStage):
        async def plan(
            self, msg: QueuedMessage, data: bytes, rcpts: Sequence[str]
        ) -> dict[str, Planned]:
            return dict.fromkeys(rcpts, Planned(Method("smime"), "test"))

    cfg = delivery(retry=retry(first=3600, max_backoff=4000))
    async with gateway(tmp_path, dns_server, cfg, methods=SmimeOnly()) as gw:
        msg = await gw.send("doctor@clinic.example", ["patient@example.net"])
        (deferred,) = await events.wait("deferred", id=msg.id)
    assert deferred["reason"].startswith("4.")
    assert sink.messages == []
    assert sink.connections == 0


# --- shutdown -----------------------------------------------------------------------------


async def test_stop_abandons_in_flight_attempt_and_keeps_message(
    tmp_path: Path, dns_server: DnsServer, sink_factory: SinkFactory, events: Events
) -> None:
    """stop() with a delivery hanging: the attempt is cancelled, the message stays queued."""
    mx(dns_server, "example.net", MX1)
    # Queries for the MX host are never answered, so the attempt hangs in DNS.
    dns_server.drop("example.net")
    gw = Gateway(tmp_path, delivery(), dns_server)
    try:
        await gw.start()
        msg = await gw.send("doctor@clinic.example", ["patient@example.net"])
        await wait_for_query(dns_server, "example.net")
        assert gw.scheduler is not None
        await gw.scheduler.stop(0.1)
        stored = await asyncio.to_thread(gw.spool.load, msg.id)
        assert stored is not None
        assert [r.state for r in stored.recipients] == ["pending"]
        assert events.named("scheduler_stopped")[0]["abandoned"] == 1
    finally:
        await gw.close()
