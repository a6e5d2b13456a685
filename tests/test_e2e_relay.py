"""The relay end to end, the way it is deployed: a real MTA in front, real MX hosts behind.

Postfix plays Microsoft 365 (a smarthost client with STARTTLS and AUTH),
Sealgate runs as its own process, MX hosts are SMTP sinks found through the
test DNS server, and OpenDKIM checks the signatures on what arrived.
"""

from __future__ import annotations

import email
import smtplib
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.dkim import generate_key
from tests.peers import opendkim
from tests.peers.dns import DnsServer
from tests.peers.gateway import GatewayFactory, write_config
from tests.peers.postfix import PostfixFactory, null_client
from tests.peers.sink import SinkFactory

# This module's corner of 127.0.0.0/8.
MX_A = "127.0.43.2"
MX_B = "127.0.43.3"
POSTFIX_IN = "127.0.43.10"
WAIT = 90.0


def publish(dns: DnsServer) -> None:
    """Two recipient domains, each with its own MX host."""
    dns.add("partner.example", "MX", "10 mx.partner.example.")
    dns.add("mx.partner.example", "A", MX_A)
    dns.add("lab.example", "MX", "10 mx.lab.example.")
    dns.add("mx.lab.example", "A", MX_B)


def argon2_hash(password: str) -> str:
    """The hash `sealgate hash-password` prints."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "hash-password"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def message(n: int, sender: str = "dr.alice@clinic.example") -> bytes:
    """A small message with a unique Message-ID."""
    return (
        f"From: Dr Alice <{sender}>\r\n"
        "To: Bob <bob@partner.example>, Lab <results@lab.example>\r\n"
        f"Subject: Referral {n}\r\n"
        "Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n"
        f"Message-ID: <e2e-{n}@clinic.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Please see the attached referral, number {n}.\r\n"
    ).encode()


@pytest.mark.slow
def test_postfix_smarthost_to_mx_with_dkim(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    postfix_factory: PostfixFactory,
    gateway_factory: GatewayFactory,
) -> None:
    """Postfix relays through Sealgate (STARTTLS + AUTH); each MX gets a signed copy."""
    if not opendkim.available():
        pytest.fail("opendkim-testmsg is missing; .ci/run installs opendkim-tools")
    publish(dns_server)
    mx_a, mx_b = sink_factory(MX_A), sink_factory(MX_B)
    rsa, rsa_txt = generate_key(tmp_path / "keys", "clinic.example", "sg1", "rsa2048")
    ed, ed_txt = generate_key(tmp_path / "keys", "clinic.example", "sg2", "ed25519")
    dns_server.add("sg1._domainkey.clinic.example", "TXT", rsa_txt)
    dns_server.add("sg2._domainkey.clinic.example", "TXT", ed_txt)
    cfg = write_config(
        tmp_path / "gw",
        nameserver=dns_server.nameserver,
        extra={
            "smtp": {
                # No trusted network: the upstream must authenticate.
                "connectors": [],
                "users": [
                    {
                        "username": "m365",
                        "password_hash": argon2_hash("correct horse battery"),
                        "allowed_senders": ["@clinic.example"],
                    }
                ],
            },
            "dkim": [
                {"domain": "clinic.example", "selector": "sg1", "key": str(rsa)},
                {"domain": "clinic.example", "selector": "sg2", "key": str(ed)},
            ],
        },
    )
    gw = gateway_factory(cfg)
    upstream = postfix_factory.start(
        null_client(
            f"[{cfg.smtp_host}]:{cfg.smtp_port}",
            listen=POSTFIX_IN,
            tls="encrypt",
            sasl=("m365", "correct horse battery"),
        )
    )

    with smtplib.SMTP(POSTFIX_IN, upstream.port, timeout=WAIT) as client:
        client.sendmail(
            "dr.alice@clinic.example", ["bob@partner.example", "results@lab.example"], message(1)
        )

    (got_a,) = mx_a.wait_for(1, WAIT)
    (got_b,) = mx_b.wait_for(1, WAIT)
    assert got_a.rcpt_tos == ["bob@partner.example"]
    assert got_b.rcpt_tos == ["results@lab.example"]
    verify = opendkim.verifier(dns_server.address, tmp_path)
    for got in (got_a, got_b):
        parsed = email.message_from_bytes(got.data)
        assert len(parsed.get_all("DKIM-Signature") or []) == 2  # RSA and Ed25519
        received = parsed.get_all("Received") or []
        # Ours on top (authenticated, encrypted), Postfix's below it.
        assert "ESMTPSA" in received[0] and "gw.clinic.example" in received[0]
        result = verify(got.data)
        assert result.returncode == 0, result.stderr.decode()
    delivered = gw.wait_for_event("delivered", WAIT, count=2)
    assert {e["rcpt"] for e in delivered} == {"bob@partner.example", "results@lab.example"}
    assert "Please see the attached referral" not in gw.log_text()


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_message(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
) -> None:
    """kill -9 in the middle of 500 messages; after a restart every acknowledged one arrives."""
    publish(dns_server)
    sink = sink_factory(MX_A)
    cfg = write_config(
        tmp_path,
        nameserver=dns_server.nameserver,
        extra={"log": {"level": "info"}, "delivery": {"retry": {"first": "1s"}}},
    )
    gw = gateway_factory(cfg)
    acked: set[str] = set()
    lock = threading.Lock()
    total, killed = 500, threading.Event()

    def sender(worker: int) -> None:
        for n in range(worker, total, 10):
            if killed.is_set():
                return
            try:
                with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=30) as client:
                    client.sendmail("dr.alice@clinic.example", ["bob@partner.example"], message(n))
            except (OSError, smtplib.SMTPException):
                continue  # the gateway died under us: not acknowledged, may be lost
            with lock:
                acked.add(f"<e2e-{n}@clinic.example>")

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(sender, w) for w in range(10)]
        deadline = time.monotonic() + WAIT
        while len(acked) < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
        gw.kill()
        killed.set()
        for f in futures:
            f.result()
    assert 150 <= len(acked) < total

    gw.start()
    want = set(acked)
    deadline = time.monotonic() + WAIT
    arrived: set[str] = set()
    while not want <= arrived and time.monotonic() < deadline:
        arrived = {str(email.message_from_bytes(m.data)["Message-ID"]) for m in list(sink.messages)}
        time.sleep(0.2)
    missing = want - arrived
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:3]}"
    assert gw.stop() == 0
