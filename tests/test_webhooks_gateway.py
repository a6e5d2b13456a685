"""Webhooks from a real gateway: a receiver that is down for a while misses nothing.

The gateway runs as its own processes (main: inbound, policy and the sender;
the delivery process writes delivered/deferred events); mail goes to an SMTP
sink on 127.0.97.12 found through the test DNS server; the receiver
(tests/test_webhooks.py) on 127.0.97.11 checks the signature of every POST.
"""

from __future__ import annotations

import smtplib
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.peers.dns import DnsServer
from tests.peers.gateway import GatewayConfigFile, GatewayFactory, write_config
from tests.peers.sink import SinkFactory
from tests.test_webhooks import SECRET, Delivery, Receiver

MX = "127.0.97.12"
WAIT = 90.0
SENDER = "billing@clinic.example"
SUBJECT_SECRET = "Invoice for Maria Testpatient"


def message(n: int, rcpt: str) -> bytes:
    return (
        f"From: Billing <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: {SUBJECT_SECRET} {n}\r\n"
        f"Message-ID: <webhook-{n}-{time.monotonic_ns()}@clinic.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "The waiting room chairs arrive on Tuesday.\r\n"
    ).encode()


def send(cfg: GatewayConfigFile, n: int, rcpt: str = "bob@partner.example") -> str:
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=WAIT) as client:
        client.ehlo("app.clinic.example")
        client.mail(SENDER)
        code, text = client.rcpt(rcpt)
        assert code == 250, text
        code, text = client.data(message(n, rcpt))
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[1]


def events_of(got: list[Delivery], event: str) -> dict[str, Delivery]:
    """Message id -> a delivery of that event type."""
    return {d.body["data"]["message_id"]: d for d in got if d.event == event}


@pytest.mark.slow
def test_receiver_down_for_a_while_gets_every_missed_event_signed(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
) -> None:
    dns_server.add("partner.example", "MX", "10 mx.partner.example.")
    dns_server.add("mx.partner.example", "A", MX)
    sink = sink_factory(MX, tls=True, cert_names=["mx.partner.example"])
    sink.reply_rcpt["carol@partner.example"] = "451 4.2.0 Mailbox busy, try later"
    receiver = Receiver("127.0.97.11")
    receiver.start()
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_bytes(SECRET)
    secret_file.chmod(0o600)
    cfg = write_config(
        tmp_path / "gw",
        nameserver=dns_server,
        smtp_host="127.0.97.10",
        extra={
            "delivery": {"retry": {"first": "1s", "max_backoff": "2s"}},
            "webhooks": {
                "endpoints": [
                    {
                        "name": "billing-app",
                        "url": receiver.url,
                        "secret_file": str(secret_file),
                        "events": ["received", "delivered", "deferred", "bounced"],
                    }
                ],
                "retry_first": "0.5s",
                "retry_max": "1s",
                "poll_interval": "0.2s",
            },
        },
    )
    gw = gateway_factory(cfg)
    try:
        first = send(cfg, 1)
        receiver.wait_until(lambda got: first in events_of(got, "delivered"))

        # Down: what happens meanwhile waits in the outbox.
        receiver.stop()
        missed = [send(cfg, 2), send(cfg, 3)]
        busy = send(cfg, 4, "carol@partner.example")
        sink.wait_for(3, WAIT)
        gw.wait_for_event("deferred", WAIT, id=busy)
        gw.wait_for_event("webhook_deferred", WAIT)

        receiver.start()
        got = receiver.wait_until(
            lambda got: (
                all(m in events_of(got, "delivered") for m in missed)
                and busy in events_of(got, "deferred")
                and all(m in events_of(got, "received") for m in [*missed, busy])
            )
        )
    finally:
        receiver.stop()
    assert receiver.bad_signatures == []
    # At-least-once: a repeat carries the same delivery id and the same body.
    bodies: dict[str, set[str]] = defaultdict(set)
    deliveries_of_event: dict[str, set[str]] = defaultdict(set)
    for d in got:
        bodies[d.delivery].add(repr(sorted(d.body.items())))
        deliveries_of_event[d.body["event_id"]].add(d.delivery)
    assert all(len(b) == 1 for b in bodies.values())
    assert all(len(ids) == 1 for ids in deliveries_of_event.values())
    assert {d.event for d in got} <= {"received", "delivered", "deferred"}
    delivered = events_of(got, "delivered")
    assert set(delivered) >= {first, *missed}
    data = delivered[missed[0]].body["data"]
    assert data["recipient"] == "bob@partner.example" and data["code"] == 250
    assert str(data["tls_version"]).startswith("TLS") and data["method"]
    assert events_of(got, "deferred")[busy].body["data"]["code"] == 451
    assert events_of(got, "received")[busy].body["data"]["sender"] == SENDER
    assert all("Testpatient" not in repr(d.body) for d in got)
    assert "Testpatient" not in gw.log_text()
