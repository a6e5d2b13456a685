"""Webhooks: signatures, PHI-free payloads, config rules, and the outbox sender.

The sender POSTs to a real HTTP receiver (http.server in a thread, on
127.0.97.0/24) that verifies every signature; the outbox lives in a real store
of each backend (SQLite, and PostgreSQL when its binaries are installed).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway import log
from gateway.config import Config, StorageConfig, WebhookEndpoint, WebhooksConfig
from gateway.store import Store, open_store
from gateway.webhooks import outbox
from gateway.webhooks.events import WEBHOOK_EVENTS, to_webhook
from gateway.webhooks.sender import WebhookSender, WebhookSetupError, read_secret
from gateway.webhooks.signing import HEADER, signature, verify
from gateway.webhooks.writer import OutboxWriter
from tests.peers.postgres import PostgresServer, server_for_tests

RECEIVER_HOST = "127.0.97.1"
SECRET = b"whsec-0123456789abcdef"
WAIT = 60.0


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver accepted: its headers that matter and the parsed body."""

    delivery: str
    event: str
    attempt: int
    body: dict[str, Any]


class Receiver:
    """A webhook receiver on loopback that checks each signature before accepting."""

    def __init__(self, host: str = RECEIVER_HOST, secret: bytes = SECRET) -> None:
        self.host = host
        self.port = 0
        self.secret = secret
        self.status = 204  # what to answer a correctly signed POST
        self.deliveries: list[Delivery] = []
        self.bad_signatures: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where endpoints POST."""
        return f"http://{self.host}:{self.port}/hooks/sealgate"

    def start(self) -> None:
        """Listen (on the same port as before, after a stop)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                header = self.headers.get(HEADER, "")
                if not verify(receiver.secret, header, body):
                    with receiver._lock:
                        receiver.bad_signatures.append(header)
                    self.send_response(400)
                    self.end_headers()
                    return
                status = receiver.status
                if 200 <= status < 300:
                    with receiver._lock:
                        receiver.deliveries.append(
                            Delivery(
                                self.headers["X-Sealgate-Delivery"],
                                self.headers["X-Sealgate-Event"],
                                int(self.headers["X-Sealgate-Attempt"]),
                                json.loads(body),
                            )
                        )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: POSTs are refused until start()."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()

    def got(self) -> list[Delivery]:
        """The deliveries so far."""
        with self._lock:
            return list(self.deliveries)

    def wait_until(
        self, predicate: Callable[[list[Delivery]], bool], timeout: float = WAIT
    ) -> list[Delivery]:
        """The deliveries once predicate holds for them (fails after timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.got()
            if predicate(got):
                return got
            assert time.monotonic() < deadline, f"receiver got {got}"
            time.sleep(0.1)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


# --- signatures ----------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"event":"delivered"}'
    header = signature(SECRET, 1_700_000_000, body)
    expected = hmac.new(SECRET, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify(SECRET, header, body, now=1_700_000_100)


def test_verify_refuses_tampering_other_secrets_old_timestamps_and_junk() -> None:
    body = b'{"a":1}'
    header = signature(SECRET, 1_700_000_000, body)
    assert not verify(SECRET, header, b'{"a":2}', now=1_700_000_000)
    assert not verify(b"another-secret-entirely", header, body, now=1_700_000_000)
    assert not verify(SECRET, header, body, now=1_700_000_000 + 301)
    for junk in ("", "t=abc,v1=00", "v1=00", f"{header},t=1"):
        assert not verify(SECRET, junk, body, now=1_700_000_000)
    # During a secret rotation a receiver may see two v1 values.
    rotated = f"{header},v1={'0' * 64}"
    assert verify(SECRET, rotated, body, now=1_700_000_000)


# --- payloads ------------------------------------------------------------------------


def test_payloads_carry_allowed_facts_only() -> None:
    fields = {
        "id": "Q1",
        "rcpt": "bob@partner.example",
        "method": "tls",
        "code": 250,
        "remote": "mx.partner.example",
        "tls_version": "TLSv1.3",
        "tls_cipher": "TLS_AES_256_GCM_SHA384",
        "tls_verified": True,
        "delay": 1.5,
        "reason": "verified TLS (MTA-STS)",
        "subject": "Referral for Maria Testpatient",
        "findings": {"ssn": 1},
    }
    event = to_webhook("delivered", fields, at=1_700_000_000.25)
    assert event is not None
    payload = event.payload()
    assert payload["event"] == "delivered"
    assert payload["timestamp"] == "2023-11-14T22:13:20.250Z"
    assert payload["data"] == {
        "message_id": "Q1",
        "recipient": "bob@partner.example",
        "method": "tls",
        "code": 250,
        "remote": "mx.partner.example",
        "tls_version": "TLSv1.3",
        "tls_cipher": "TLS_AES_256_GCM_SHA384",
        "tls_verified": True,
        "delay_seconds": 1.5,
    }
    assert "Testpatient" not in json.dumps(payload)


def test_expiry_is_a_bounce_and_unmapped_events_make_none() -> None:
    event = to_webhook("expired", {"id": "Q", "rcpt": "a@b.example", "code": 451})
    assert event is not None and event.type == "bounced" and event.data["expired"] is True
    bounced = to_webhook("bounced", {"id": "Q", "rcpt": "a@b.example", "code": 550})
    assert bounced is not None and bounced.data["expired"] is False
    assert to_webhook("policy", {"id": "Q", "verdict": "phi"}) is None
    viewed = to_webhook("portal_viewed", {"id": "P", "queue_id": "Q", "recipient": "r@x.example"})
    assert viewed is not None and viewed.type == "portal_opened"
    assert {"delivered", "deferred", "bounced", "quarantined", "portal_opened"} <= WEBHOOK_EVENTS
    assert "portal_replied" in WEBHOOK_EVENTS


# --- configuration -------------------------------------------------------------------


def endpoint(**kw: Any) -> WebhookEndpoint:
    base: dict[str, Any] = {
        "name": "ehr",
        "url": "https://hooks.example/x",
        "secret": SECRET.decode(),
    }
    return WebhookEndpoint.model_validate({**base, **kw})


def test_http_only_to_private_hosts_unless_allowed() -> None:
    assert endpoint(url="http://127.0.97.1:8000/h").url.startswith("http://")
    assert endpoint(url="http://10.1.2.3/h")
    assert endpoint(url="http://[::1]:9000/h")
    with pytest.raises(ValidationError, match="plain http"):
        endpoint(url="http://hooks.example/h")
    with pytest.raises(ValidationError, match="plain http"):
        endpoint(url="http://8.8.8.8/h")
    assert endpoint(url="http://ehr.hospital.internal/h", allow_http=True)
    with pytest.raises(ValidationError, match="expected"):
        endpoint(url="ftp://hooks.example/h")


def test_endpoint_needs_one_secret_known_events_and_absolute_files(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        WebhookEndpoint.model_validate({"name": "a", "url": "https://h.example/"})
    (tmp_path / "secret").write_bytes(SECRET)
    with pytest.raises(ValidationError, match="exactly one"):
        endpoint(secret_file=str(tmp_path / "secret"))
    with pytest.raises(ValidationError, match="unknown webhook event"):
        endpoint(events=["delivered", "opened_by_martians"])
    with pytest.raises(ValidationError, match="absolute"):
        endpoint(secret=None, secret_file="relative/secret")
    with pytest.raises(ValidationError, match="at least 16"):
        endpoint(secret="short")
    with pytest.raises(ValidationError, match="once"):
        WebhooksConfig.model_validate({"endpoints": [endpoint().model_dump()] * 2})


def test_secret_file_is_read_and_loose_permissions_are_logged(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o644)
    seen: list[str] = []

    def listen(name: str, level: int, fields: dict[str, Any]) -> None:
        seen.append(name)

    log.add_listener(listen)
    try:
        assert read_secret(endpoint(secret=None, secret_file=str(path))) == SECRET
    finally:
        log.remove_listener(listen)
    assert "webhook_secret_permissions" in seen
    with pytest.raises(ValidationError, match="does not exist"):
        endpoint(secret=None, secret_file=str(tmp_path / "missing"))
    # Gone after the configuration was checked: a clear error when the gateway starts.
    gone = endpoint(secret=None, secret_file=str(path))
    path.unlink()
    with pytest.raises(WebhookSetupError, match="cannot read"):
        read_secret(gone)


# --- outbox and sender, on each backend ---------------------------------------------


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    yield from server_for_tests()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    storage = StorageConfig()
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("pg_server")
        storage = StorageConfig(url=server.create_database())
    s = await open_store(storage, tmp_path)
    try:
        yield s
    finally:
        await s.close()


def hooks(url: str, **kw: Any) -> WebhooksConfig:
    settings: dict[str, Any] = {
        "endpoints": [{"name": "ehr", "url": url, "secret": SECRET.decode()}],
        "retry_first": "0.2s",
        "retry_max": "0.5s",
        "poll_interval": "0.1s",
        **kw,
    }
    return WebhooksConfig.model_validate(settings)


async def enqueue(store: Store, cfg: WebhooksConfig, n: int) -> list[str]:
    """n delivered events in the outbox; their event ids."""
    ids = []
    for i in range(n):
        event = to_webhook("delivered", {"id": f"Q{i}", "rcpt": f"r{i}@x.example", "code": 250})
        assert event is not None
        await outbox.add(store, outbox.items_for(event, cfg.endpoints))
        ids.append(event.event_id)
    return ids


async def wait_async(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_sender_delivers_each_row_once_with_signed_headers(
    store: Store, receiver: Receiver
) -> None:
    cfg = hooks(receiver.url)
    ids = await enqueue(store, cfg, 5)
    # Two senders (as on two nodes) share the outbox: the leases keep them apart.
    senders = [WebhookSender(cfg, store), WebhookSender(cfg, store)]
    for s in senders:
        await s.start()
    try:
        await wait_async(lambda: len(receiver.got()) >= 5)
        await asyncio.sleep(0.5)  # anything sent twice would arrive meanwhile
    finally:
        for s in senders:
            await s.close()
    got = receiver.got()
    assert sorted(d.body["event_id"] for d in got) == sorted(ids)
    assert len({d.delivery for d in got}) == 5
    assert all(d.event == "delivered" and d.attempt == 1 for d in got)
    assert receiver.bad_signatures == []
    assert await outbox.counts(store) == {("ehr", "delivered"): 5}


async def test_a_failing_receiver_gets_retries_with_the_same_delivery_id(
    store: Store, receiver: Receiver
) -> None:
    cfg = hooks(receiver.url)
    receiver.status = 503
    await enqueue(store, cfg, 1)
    sender = WebhookSender(cfg, store)
    await sender.start()
    try:
        row = await store.fetchone("SELECT id FROM webhook_outbox")
        assert row is not None

        async def attempts() -> int:
            r = await store.fetchone("SELECT attempts FROM webhook_outbox")
            return int(r["attempts"]) if r else 0

        deadline = time.monotonic() + WAIT
        while await attempts() < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        receiver.status = 200
        await wait_async(lambda: len(receiver.got()) == 1)
    finally:
        await sender.close()
    (delivery,) = receiver.got()
    assert delivery.delivery == row["id"] and delivery.attempt >= 3
    final = await store.fetchone("SELECT state, last_status FROM webhook_outbox")
    assert final == {"state": "delivered", "last_status": 200}


async def test_rows_past_their_lifetime_are_given_up_and_retry_brings_them_back(
    store: Store, receiver: Receiver
) -> None:
    cfg = hooks(receiver.url, lifetime="0.3s")
    receiver.stop()  # nothing listens: connection refused
    await enqueue(store, cfg, 2)
    sender = WebhookSender(cfg, store)
    await sender.start()
    try:
        deadline = time.monotonic() + WAIT
        while (await outbox.counts(store)).get(("ehr", "failed"), 0) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        receiver.start()
        assert await outbox.retry_failed(store, time.time(), "ehr") == 2
        sender.wake()
        await wait_async(lambda: len(receiver.got()) == 2)
    finally:
        await sender.close()
    row = await store.fetchone("SELECT last_error FROM webhook_outbox WHERE state = 'delivered'")
    assert row is not None and row["last_error"] is None


async def test_rows_of_an_endpoint_no_longer_configured_are_given_up(
    store: Store, receiver: Receiver
) -> None:
    old = hooks(receiver.url)
    await enqueue(store, old, 1)
    renamed = WebhooksConfig.model_validate(
        {**old.model_dump(), "endpoints": [{**old.endpoints[0].model_dump(), "name": "crm"}]}
    )
    sender = WebhookSender(renamed, store)
    await sender.start()
    try:
        deadline = time.monotonic() + WAIT
        while (await outbox.counts(store)).get(("ehr", "failed"), 0) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        await sender.close()
    assert receiver.got() == []


async def test_writer_turns_events_into_rows_for_subscribed_endpoints(tmp_path: Path) -> None:
    secret = SECRET.decode()
    cfg = Config.model_validate(
        {
            "data_dir": str(tmp_path),
            "webhooks": {
                "endpoints": [
                    {"name": "all", "url": "https://a.example/", "secret": secret},
                    {"name": "bounces", "url": "https://b.example/", "secret": secret,
                     "events": ["bounced"]},
                ]
            },
        }
    )  # fmt: skip
    writer = OutboxWriter(cfg)
    writer.start()
    try:
        log.event("delivered", id="Q1", rcpt="a@x.example", code=250, subject="secret subject")
        log.event("expired", id="Q2", rcpt="b@x.example", code=451)
        log.event("policy", id="Q1", verdict="phi")
    finally:
        await writer.close()
    store = await open_store(cfg.storage, tmp_path)
    try:
        rows = await store.fetchall("SELECT endpoint, event, body FROM webhook_outbox")
    finally:
        await store.close()
    assert sorted((r["endpoint"], r["event"]) for r in rows) == [
        ("all", "bounced"),
        ("all", "delivered"),
        ("bounces", "bounced"),
    ]
    assert all("secret subject" not in r["body"] for r in rows)


# --- the CLI -------------------------------------------------------------------------


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=WAIT,
    )


def test_cli_test_list_and_retry(tmp_path: Path, receiver: Receiver) -> None:
    config = tmp_path / "sealgate.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "webhooks:\n"
        "  endpoints:\n"
        f"    - {{name: ehr, url: '{receiver.url}', secret: {SECRET.decode()}}}\n"
        "    - {name: down, url: 'http://127.0.97.1:1/x', secret: another-secret-0123456}\n"
    )
    sent = run_cli(config, "webhooks", "test", "ehr")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "delivered (HTTP 204)" in sent.stdout
    (probe,) = receiver.wait_until(lambda got: len(got) == 1)
    assert probe.event == "test" and probe.body["event"] == "test"
    refused = run_cli(config, "webhooks", "test", "down")
    assert refused.returncode == 1 and "failed: ConnectError" in refused.stdout
    unknown = run_cli(config, "webhooks", "test", "nope")
    assert unknown.returncode == 1 and "no endpoint named" in unknown.stderr

    async def given_up() -> None:
        store = await open_store(StorageConfig(), tmp_path / "data")
        try:
            cfg = hooks(receiver.url)
            await enqueue(store, cfg, 2)
            await store.execute("UPDATE webhook_outbox SET state = 'failed', finished_at = 1")
        finally:
            await store.close()

    asyncio.run(given_up())
    listed = run_cli(config, "webhooks", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert rows[0] == {
        "name": "ehr",
        "host": f"{receiver.host}:{receiver.port}",
        "events": ["*"],
        "configured": True,
        "pending": 0,
        "delivered": 0,
        "failed": 2,
    }
    assert rows[1]["name"] == "down" and rows[1]["failed"] == 0
    retried = run_cli(config, "webhooks", "retry", "--endpoint", "ehr")
    assert retried.returncode == 0 and "2 event(s)" in retried.stdout
    listed = run_cli(config, "webhooks", "list")
    assert "pending=2" in listed.stdout.splitlines()[0]
