"""The outbound SMTP transport against real peers on loopback.

MX hosts are aiosmtpd sinks (tests/peers/sink.py) or Postfix's smtp-sink, found
through the test DNS server; nothing stands in for the network. They listen on
127.0.25.0/24 so that other suites running at the same time keep their addresses.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from gateway.config import DeliveryConfig, DnsConfig, parse_hostport
from gateway.outbound.transport import Transport
from gateway.resolver import Resolver
from tests.peers.dns import DnsServer
from tests.peers.sink import SinkFactory

MESSAGE = (
    b"From: <doctor@clinic.example>\r\n"
    b"To: <patient@partner.example>\r\n"
    b"Subject: appointment\r\n"
    b"\r\n"
    b"See you on Monday.\r\n"
)
SENDER = "doctor@clinic.example"
SMTP_SINK = "/usr/sbin/smtp-sink"
# Certificate names for TLS sinks. Spelled out because OpenSSL matches no
# wildcard directly below a one-label name ("*.example").
MX_NAMES = ["sink.test", "mx1.example", "mx2.example", "127.0.25.2", "127.0.25.3"]

MakeTransport = Callable[..., Transport]


@pytest.fixture
async def transport_factory(dns_server: DnsServer) -> AsyncIterator[MakeTransport]:
    """Builds transports that resolve through the test DNS server; closes them afterwards."""
    made: list[Transport] = []

    def make(**delivery: Any) -> Transport:
        delivery.setdefault("command_timeout", 60)
        resolver = Resolver(
            DnsConfig(nameservers=[parse_hostport(dns_server.nameserver)], timeout=10)
        )
        transport = Transport(DeliveryConfig(**delivery), "gw.clinic.example", resolver)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.close()


def add_mx(dns_server: DnsServer, domain: str, *hosts: tuple[int, str, str]) -> None:
    """Publish MX records (preference, host, IPv4 address) for domain."""
    for preference, host, ip in hosts:
        dns_server.add(domain, "MX", f"{preference} {host}.")
        dns_server.add(host, "A", ip)


# --- routing --------------------------------------------------------------------


async def test_first_mx_refuses_connection_second_takes_it(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(
        dns_server,
        "partner.example",
        (10, "mx1.example", "127.0.25.12"),  # nothing listens there
        (20, "mx2.example", "127.0.25.3"),
    )
    sink = sink_factory("127.0.25.3")
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["patient@partner.example"], MESSAGE
    )
    assert [(r.status, r.code) for r in report.results] == [("delivered", 250)]
    assert report.remote == "mx2.example [127.0.25.3]:25"
    assert report.tls is None
    (received,) = sink.messages
    assert received.mail_from == SENDER
    assert received.rcpt_tos == ["patient@partner.example"]
    assert received.data == MESSAGE
    assert received.helo == "gw.clinic.example"


async def test_lowest_preference_is_tried_first(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(
        dns_server,
        "partner.example",
        (20, "mx2.example", "127.0.25.3"),
        (10, "mx1.example", "127.0.25.2"),
    )
    first, second = sink_factory("127.0.25.2"), sink_factory("127.0.25.3")
    transport = transport_factory()
    for _ in range(3):
        report = await transport.deliver("partner.example", SENDER, ["p@partner.example"], MESSAGE)
        assert report.results[0].status == "delivered"
    assert len(first.messages) == 3
    assert second.connections == 0


async def test_every_mx_unreachable_is_transient(
    dns_server: DnsServer, transport_factory: MakeTransport
) -> None:
    add_mx(
        dns_server,
        "partner.example",
        (10, "mx1.example", "127.0.25.12"),
        (20, "mx2.example", "127.0.25.13"),
    )
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example", "b@partner.example"], MESSAGE
    )
    assert [r.status for r in report.results] == ["transient", "transient"]
    assert report.results[0].code is None
    assert report.results[0].text == "4.4.1 Connection refused by mx2.example [127.0.25.13]:25"
    assert report.remote == ""


async def test_implicit_mx(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    dns_server.add("partner.example", "A", "127.0.25.4")
    sink = sink_factory("127.0.25.4")
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["p@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert report.remote == "partner.example [127.0.25.4]:25"
    assert len(sink.messages) == 1


async def test_null_mx_is_permanent_without_connecting(
    dns_server: DnsServer, transport_factory: MakeTransport
) -> None:
    dns_server.add("nomail.example", "MX", "0 .")
    report = await transport_factory().deliver(
        "nomail.example", SENDER, ["a@nomail.example", "b@nomail.example"], MESSAGE
    )
    assert [(r.address, r.status, r.code, r.text) for r in report.results] == [
        ("a@nomail.example", "permanent", 556, "5.1.10 Recipient address has null MX"),
        ("b@nomail.example", "permanent", 556, "5.1.10 Recipient address has null MX"),
    ]
    assert report.remote == ""


async def test_nonexistent_domain_is_permanent(
    dns_server: DnsServer, transport_factory: MakeTransport
) -> None:
    report = await transport_factory().deliver(
        "missing.example", SENDER, ["a@missing.example"], MESSAGE
    )
    (result,) = report.results
    assert (result.status, result.code) == ("permanent", None)
    assert result.text.startswith("5.1.2 ")


async def test_dns_failure_is_transient(
    dns_server: DnsServer, transport_factory: MakeTransport
) -> None:
    dns_server.fail("broken.example")
    report = await transport_factory().deliver(
        "broken.example", SENDER, ["a@broken.example"], MESSAGE
    )
    (result,) = report.results
    assert (result.status, result.code) == ("transient", None)
    assert result.text.startswith("4.4.3 ")


async def test_mx_host_without_address_is_transient(
    dns_server: DnsServer, transport_factory: MakeTransport
) -> None:
    dns_server.add("partner.example", "MX", "10 gone.example.")
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    (result,) = report.results
    assert result.status == "transient"
    assert result.text == "4.4.4 Host gone.example has no address records"


async def test_relay_host_skips_mx_lookup(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    sink = sink_factory("127.0.25.5")
    transport = transport_factory(relay_host=sink.address)
    report = await transport.deliver("anywhere.example", SENDER, ["a@anywhere.example"], MESSAGE)
    assert report.results[0].status == "delivered"
    assert report.remote == "127.0.25.5 [127.0.25.5]:25"
    assert len(sink.messages) == 1
    assert dns_server.queries == []


async def test_relay_host_by_name(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    dns_server.add("relay.example", "A", "127.0.25.5")
    sink = sink_factory("127.0.25.5", 2526)
    transport = transport_factory(relay_host="relay.example:2526")
    report = await transport.deliver("anywhere.example", SENDER, ["a@anywhere.example"], MESSAGE)
    assert report.results[0].status == "delivered"
    assert report.remote == "relay.example [127.0.25.5]:2526"
    assert len(sink.messages) == 1
    assert {q.rtype for q in dns_server.queries} <= {"A", "AAAA"}


async def test_address_literal_domain(
    sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    sink = sink_factory("127.0.25.6")
    report = await transport_factory().deliver(
        "[127.0.25.6]", SENDER, ["postmaster@[127.0.25.6]"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert sink.messages[0].rcpt_tos == ["postmaster@[127.0.25.6]"]


async def test_mx_port_is_used(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2", 2525)
    report = await transport_factory(mx_port=2525).deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    assert report.remote == "mx1.example [127.0.25.2]:2525"
    assert len(sink.messages) == 1


# --- STARTTLS -------------------------------------------------------------------


async def test_starttls_verified_with_configured_ca(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2", tls=True, cert_names=MX_NAMES)
    report = await transport_factory(tls_ca_file=tls_ca_file).deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert report.tls is not None
    assert report.tls["verified"] is True
    assert report.tls["verify_error"] is None
    assert report.tls["version"] in ("TLSv1.2", "TLSv1.3")
    assert report.tls["cipher"]
    assert report.tls["peer"] == "sink.test"
    (received,) = sink.messages
    assert received.tls_info is not None
    assert received.tls_info.sni == "mx1.example"  # the MX name, which is also what we verify


async def test_starttls_unknown_ca_still_encrypts(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2", tls=True, cert_names=MX_NAMES)
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert report.tls is not None
    assert report.tls["verified"] is False
    assert "issuer" in report.tls["verify_error"]
    (received,) = sink.messages
    assert received.tls_info is not None  # opportunistic: encrypted, though unverified


async def test_starttls_name_mismatch_is_recorded(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink_factory("127.0.25.2", tls=True, cert_names=["other.test"])
    report = await transport_factory(tls_ca_file=tls_ca_file).deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert report.tls is not None
    assert report.tls["verified"] is False
    assert "mx1.example" in report.tls["verify_error"]


async def test_verified_level_refuses_unverified_server(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2", tls=True, cert_names=MX_NAMES)
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE, tls="verified"
    )
    (result,) = report.results
    assert result.status == "transient"
    assert result.text.startswith("4.7.5 Server certificate not verified for mx1.example")
    assert sink.messages == []


async def test_verified_level_delivers_to_verified_server(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2", tls=True, cert_names=MX_NAMES)
    report = await transport_factory(tls_ca_file=tls_ca_file).deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE, tls="verified"
    )
    assert report.results[0].status == "delivered"
    assert report.tls is not None and report.tls["verified"] is True
    assert sink.messages[0].tls_info is not None


async def test_verified_level_moves_on_to_a_verifiable_mx(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    add_mx(
        dns_server,
        "partner.example",
        (10, "mx1.example", "127.0.25.2"),
        (20, "mx2.example", "127.0.25.3"),
    )
    bad = sink_factory("127.0.25.2", tls=True, cert_names=["other.test"])
    good = sink_factory("127.0.25.3", tls=True, cert_names=MX_NAMES)
    report = await transport_factory(tls_ca_file=tls_ca_file).deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE, tls="verified"
    )
    assert report.results[0].status == "delivered"
    assert report.remote == "mx2.example [127.0.25.3]:25"
    assert bad.messages == [] and len(good.messages) == 1


async def test_no_starttls_offered_means_plaintext(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2")
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert report.tls is None
    assert sink.messages[0].tls_info is None


@pytest.mark.parametrize("level", ["required", "verified"])
async def test_tls_levels_refuse_plaintext_server(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport, level: str
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2")
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE, tls=level
    )
    (result,) = report.results
    assert result.status == "transient"
    assert (
        result.text == "4.7.4 TLS is required, but was not offered by mx1.example [127.0.25.2]:25"
    )
    assert sink.messages == []


class _NoSharedCipher:
    """A certificate configurer that leaves the sink only SHA-1 suites, which our client refuses.

    The sink still offers STARTTLS, so every handshake with it fails.
    """

    def __init__(self, leaf: trustme.LeafCert) -> None:
        self.leaf = leaf

    def configure_cert(self, ctx: ssl.SSLContext) -> None:
        self.leaf.configure_cert(ctx)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 suites cannot be narrowed
        ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA")


async def test_failed_handshake_retries_in_plaintext(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca: trustme.CA,
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2", tls_cert=_NoSharedCipher(tls_ca.issue_cert("mx1.example")))  # type: ignore[arg-type]
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert report.tls is None
    assert sink.messages[0].tls_info is None
    assert sink.connections == 2


async def test_required_level_does_not_fall_back_after_failed_handshake(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca: trustme.CA,
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2", tls_cert=_NoSharedCipher(tls_ca.issue_cert("mx1.example")))  # type: ignore[arg-type]
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE, tls="required"
    )
    (result,) = report.results
    assert result.status == "transient"
    assert result.text.startswith("4.7.5 TLS handshake with mx1.example [127.0.25.2]:25 failed")
    assert sink.messages == []


# --- replies --------------------------------------------------------------------


async def test_per_recipient_replies_in_one_transaction(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2")
    sink.reply_rcpt["gone@partner.example"] = "550 5.1.1 No such user"
    sink.reply_rcpt["full@partner.example"] = "452 4.2.2 Mailbox full"
    sink.reply_rcpt["old@partner.example"] = "553 mailbox name not allowed"
    rcpts = [
        "a@partner.example",
        "gone@partner.example",
        "full@partner.example",
        "old@partner.example",
        "b@partner.example",
    ]
    report = await transport_factory().deliver("partner.example", SENDER, rcpts, MESSAGE)
    assert [(r.address, r.status, r.code, r.text) for r in report.results] == [
        ("a@partner.example", "delivered", 250, "2.0.0 Ok: queued as 1"),
        ("gone@partner.example", "permanent", 550, "5.1.1 No such user"),
        ("full@partner.example", "transient", 452, "4.2.2 Mailbox full"),
        # No enhanced code from the server: the reply class gives one (RFC 3463).
        ("old@partner.example", "permanent", 553, "5.0.0 mailbox name not allowed"),
        ("b@partner.example", "delivered", 250, "2.0.0 Ok: queued as 1"),
    ]
    (received,) = sink.messages
    assert received.rcpt_tos == ["a@partner.example", "b@partner.example"]


async def test_every_recipient_refused_sends_no_data(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2")
    sink.reply_rcpt["gone@partner.example"] = "550 5.1.1 No such user"
    transport = transport_factory()
    report = await transport.deliver("partner.example", SENDER, ["gone@partner.example"], MESSAGE)
    assert report.results[0].status == "permanent"
    assert sink.messages == []
    # The connection stays usable for the next message.
    report = await transport.deliver("partner.example", SENDER, ["a@partner.example"], MESSAGE)
    assert report.results[0].status == "delivered"
    assert sink.connections == 1


async def test_451_at_data_is_transient_for_accepted_recipients(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2")
    sink.reply_data = ["451 4.3.0 Try again later"]
    sink.reply_rcpt["gone@partner.example"] = "550 5.1.1 No such user"
    report = await transport_factory().deliver(
        "partner.example",
        SENDER,
        ["a@partner.example", "gone@partner.example", "b@partner.example"],
        MESSAGE,
    )
    assert [(r.status, r.code, r.text) for r in report.results] == [
        ("transient", 451, "4.3.0 Try again later"),
        ("permanent", 550, "5.1.1 No such user"),
        ("transient", 451, "4.3.0 Try again later"),
    ]
    assert sink.messages == []


async def test_554_at_data_is_permanent(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2")
    sink.reply_data = ["554 5.6.0 Message rejected"]
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    assert [(r.status, r.code) for r in report.results] == [("permanent", 554)]


async def test_5xx_to_mail_from_is_permanent_for_all(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(
        dns_server,
        "partner.example",
        (10, "mx1.example", "127.0.25.2"),
        (20, "mx2.example", "127.0.25.3"),
    )
    first, second = sink_factory("127.0.25.2"), sink_factory("127.0.25.3")
    first.reply_mail[SENDER] = "550 5.7.1 Sender rejected"
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example", "b@partner.example"], MESSAGE
    )
    assert [(r.status, r.code, r.text) for r in report.results] == [
        ("permanent", 550, "5.7.1 Sender rejected"),
        ("permanent", 550, "5.7.1 Sender rejected"),
    ]
    assert second.connections == 0


async def test_4xx_to_mail_from_moves_to_next_mx(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(
        dns_server,
        "partner.example",
        (10, "mx1.example", "127.0.25.2"),
        (20, "mx2.example", "127.0.25.3"),
    )
    first, second = sink_factory("127.0.25.2"), sink_factory("127.0.25.3")
    first.reply_mail[SENDER] = "451 4.3.2 Busy"
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert report.remote == "mx2.example [127.0.25.3]:25"
    assert first.messages == [] and len(second.messages) == 1


async def test_421_at_rcpt_moves_everyone_to_next_mx(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(
        dns_server,
        "partner.example",
        (10, "mx1.example", "127.0.25.2"),
        (20, "mx2.example", "127.0.25.3"),
    )
    first, second = sink_factory("127.0.25.2"), sink_factory("127.0.25.3")
    first.reply_rcpt["gone@partner.example"] = "550 5.1.1 No such user"
    first.reply_rcpt["b@partner.example"] = "421 4.3.2 Shutting down"
    rcpts = ["gone@partner.example", "a@partner.example", "b@partner.example"]
    report = await transport_factory().deliver("partner.example", SENDER, rcpts, MESSAGE)
    # The refusal mx1 gave before closing stands; the others went to mx2.
    assert [(r.address, r.status) for r in report.results] == [
        ("gone@partner.example", "permanent"),
        ("a@partner.example", "delivered"),
        ("b@partner.example", "delivered"),
    ]
    assert first.messages == []
    assert second.messages[0].rcpt_tos == ["a@partner.example", "b@partner.example"]


async def test_421_at_data_moves_to_next_mx(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(
        dns_server,
        "partner.example",
        (10, "mx1.example", "127.0.25.2"),
        (20, "mx2.example", "127.0.25.3"),
    )
    first, second = sink_factory("127.0.25.2"), sink_factory("127.0.25.3")
    first.reply_data = ["421 4.3.2 Shutting down"]
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert len(second.messages) == 1


async def test_null_sender_duplicates_and_bad_addresses(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2")
    rcpts = ["a@partner.example", "a@partner.example", "evil\r\nRCPT TO:<x@y>@partner.example"]
    report = await transport_factory().deliver("partner.example", "", rcpts, MESSAGE)
    assert [(r.status, r.text[:6]) for r in report.results] == [
        ("delivered", "2.0.0 "),
        ("permanent", "5.1.3 "),
    ]
    (received,) = sink.messages
    assert received.mail_from == ""  # the null sender
    assert received.rcpt_tos == ["a@partner.example"]


# --- extensions -----------------------------------------------------------------


async def test_smtputf8(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2")
    data = "From: <médecin@clinic.example>\r\nSubject: rendez-vous\r\n\r\nÀ lundi.\r\n".encode()
    report = await transport_factory().deliver(
        "partner.example",
        "médecin@clinic.example",
        ["josé@partner.example"],
        data,
        smtputf8=True,
        body_8bitmime=True,
    )
    assert report.results[0].status == "delivered"
    (received,) = sink.messages
    assert received.mail_from == "médecin@clinic.example"
    assert received.rcpt_tos == ["josé@partner.example"]
    assert received.data == data
    assert "SMTPUTF8" in received.mail_options
    assert "BODY=8BITMIME" in received.mail_options


async def test_message_over_the_server_size_limit_is_permanent(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2", data_size_limit=64)
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    (result,) = report.results
    assert result.status == "permanent"
    assert result.text.startswith("5.3.4 ")
    assert sink.messages == []


@pytest.fixture
def smtp_sink_factory() -> Iterator[Callable[..., Path]]:
    """Runs Postfix's smtp-sink on an address; returns the folder it dumps messages into."""
    if not os.path.exists(SMTP_SINK):
        pytest.skip("Postfix's smtp-sink is not installed")
    procs: list[subprocess.Popen[bytes]] = []
    # smtp-sink drops privileges (to nobody, as root) before writing its dump
    # files, and pytest's tmp_path sits below a folder only its owner may enter.
    top = Path(tempfile.mkdtemp(prefix="sealgate-smtp-sink-"))
    top.chmod(0o755)

    def start(host: str, *options: str) -> Path:
        dump = top / f"dump-{host}"
        dump.mkdir()
        dump.chmod(0o777)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        proc = subprocess.Popen(
            [SMTP_SINK, *user, *options, "-d", f"{dump}/%H%M%S.", f"{host}:25", "50"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((host, 25), timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"smtp-sink did not start on {host}:25") from None
                time.sleep(0.05)
        return dump

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)
    shutil.rmtree(top, ignore_errors=True)


def dumped(folder: Path, n: int) -> list[str]:
    """The n messages smtp-sink wrote into folder (waits for the files to appear)."""
    deadline = time.monotonic() + 30
    while len(list(folder.iterdir())) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p.read_text(errors="replace") for p in sorted(folder.iterdir())]


async def test_smtputf8_not_offered_is_permanent(
    dns_server: DnsServer,
    smtp_sink_factory: Callable[..., Path],
    transport_factory: MakeTransport,
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.7"))
    dump = smtp_sink_factory("127.0.25.7")  # smtp-sink does not announce SMTPUTF8
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["josé@partner.example"], MESSAGE, smtputf8=True
    )
    (result,) = report.results
    assert (result.status, result.code) == ("permanent", None)
    assert result.text == (
        "5.6.7 SMTPUTF8 is required, but was not offered by mx1.example [127.0.25.7]:25"
    )
    assert list(dump.iterdir()) == []


async def test_server_without_esmtp_gets_helo(
    dns_server: DnsServer,
    smtp_sink_factory: Callable[..., Path],
    transport_factory: MakeTransport,
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.7"))
    dump = smtp_sink_factory("127.0.25.7", "-e")
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    (text,) = dumped(dump, 1)
    assert "X-Client-Proto: SMTP\n" in text  # HELO, not EHLO
    assert "X-Mail-Args: <doctor@clinic.example>\n" in text  # no ESMTP parameters
    assert "See you on Monday." in text


async def test_esmtp_parameters_sent_to_postfix_smtp_sink(
    dns_server: DnsServer,
    smtp_sink_factory: Callable[..., Path],
    transport_factory: MakeTransport,
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.7"))
    dump = smtp_sink_factory("127.0.25.7")
    report = await transport_factory().deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE, body_8bitmime=True
    )
    assert report.results[0].status == "delivered"
    (text,) = dumped(dump, 1)
    assert "X-Client-Proto: ESMTP\n" in text
    assert "X-Helo-Args: gw.clinic.example\n" in text
    assert "X-Mail-Args: <doctor@clinic.example> BODY=8BITMIME\n" in text


async def test_timeout_after_data_defers_without_trying_next_mx(
    dns_server: DnsServer,
    smtp_sink_factory: Callable[..., Path],
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
) -> None:
    add_mx(
        dns_server,
        "partner.example",
        (10, "mx1.example", "127.0.25.7"),
        (20, "mx2.example", "127.0.25.3"),
    )
    smtp_sink_factory("127.0.25.7", "-w", "600")  # never answers DATA in time
    backup = sink_factory("127.0.25.3")
    report = await transport_factory(command_timeout=1).deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    (result,) = report.results
    assert result.status == "transient"
    assert result.text.startswith("4.4.2 Lost connection with mx1.example [127.0.25.7]:25 during")
    # mx1 may already hold the message (RFC 1047): a second copy must wait for the retry.
    assert backup.connections == 0


# --- time limits ----------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[Callable[[str], None]]:
    """Listening sockets that complete TCP handshakes but never send a greeting."""
    socks: list[socket.socket] = []

    def listen(host: str) -> None:
        socks.append(socket.create_server((host, 25)))

    yield listen
    for s in socks:
        s.close()


async def test_server_without_greeting_falls_through(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    silent_server: Callable[[str], None],
) -> None:
    add_mx(
        dns_server,
        "partner.example",
        (10, "mx1.example", "127.0.25.8"),
        (20, "mx2.example", "127.0.25.3"),
    )
    silent_server("127.0.25.8")
    sink = sink_factory("127.0.25.3")
    report = await transport_factory(command_timeout=1).deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert len(sink.messages) == 1


async def test_hung_server_does_not_block_other_deliveries(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    silent_server: Callable[[str], None],
) -> None:
    add_mx(dns_server, "slow.example", (10, "mx1.example", "127.0.25.8"))
    add_mx(dns_server, "partner.example", (10, "mx2.example", "127.0.25.3"))
    silent_server("127.0.25.8")
    sink_factory("127.0.25.3")
    transport = transport_factory(command_timeout=600)
    hung = asyncio.create_task(
        transport.deliver("slow.example", SENDER, ["a@slow.example"], MESSAGE)
    )
    report = await transport.deliver("partner.example", SENDER, ["b@partner.example"], MESSAGE)
    assert report.results[0].status == "delivered"
    assert not hung.done()
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung


# --- connection reuse -------------------------------------------------------------


async def test_connection_is_reused(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    add_mx(dns_server, "other.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2", tls=True, cert_names=MX_NAMES)
    transport = transport_factory(tls_ca_file=tls_ca_file)
    first = await transport.deliver("partner.example", SENDER, ["a@partner.example"], MESSAGE)
    second = await transport.deliver("other.example", SENDER, ["b@other.example"], MESSAGE)
    assert [first.results[0].status, second.results[0].status] == ["delivered", "delivered"]
    assert second.tls == first.tls  # the same TLS session
    assert len(sink.messages) == 2
    assert sink.connections == 1
    assert transport.idle_connections == 1
    await transport.close()
    assert transport.idle_connections == 0


async def test_reuse_disabled(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2")
    transport = transport_factory(connection_reuse_time=0)
    for _ in range(2):
        await transport.deliver("partner.example", SENDER, ["a@partner.example"], MESSAGE)
    assert len(sink.messages) == 2
    assert sink.connections == 2


async def test_idle_connection_is_closed_after_reuse_time(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2")
    transport = transport_factory(connection_reuse_time=0.2)
    await transport.deliver("partner.example", SENDER, ["a@partner.example"], MESSAGE)
    assert transport.idle_connections == 1
    await asyncio.sleep(1)  # well past the idle limit: its timer has fired
    assert transport.idle_connections == 0
    await transport.deliver("partner.example", SENDER, ["b@partner.example"], MESSAGE)
    assert sink.connections == 2


async def test_dead_pooled_connection_is_replaced(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    transport = transport_factory()
    old = sink_factory("127.0.25.2")
    await transport.deliver("partner.example", SENDER, ["a@partner.example"], MESSAGE)
    assert transport.idle_connections == 1
    old.stop()  # closes every session, including our idle one
    new = sink_factory("127.0.25.2")
    report = await transport.deliver("partner.example", SENDER, ["b@partner.example"], MESSAGE)
    assert report.results[0].status == "delivered"
    assert len(new.messages) == 1


async def test_concurrent_deliveries_never_share_a_connection(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2")
    transport = transport_factory()
    rounds = [[f"r{round_}-{i}@partner.example" for i in range(5)] for round_ in range(2)]
    for rcpts in rounds:
        reports = await asyncio.gather(
            *(transport.deliver("partner.example", SENDER, [r], MESSAGE) for r in rcpts)
        )
        assert [r.results[0].status for r in reports] == ["delivered"] * 5
    # Each transaction carried exactly its own recipient.
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == sorted(
        r for rcpts in rounds for r in rcpts
    )
    assert all(len(m.rcpt_tos) == 1 for m in sink.messages)
    # The second round reused the first round's connections.
    assert sink.connections <= 5


async def test_ipv6_exchanger(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    dns_server.add("partner.example", "MX", "10 mx6.example.")
    dns_server.add("mx6.example", "AAAA", "::1")
    sink = sink_factory("::1", 2525)
    report = await transport_factory(mx_port=2525).deliver(
        "partner.example", SENDER, ["a@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert report.remote == "mx6.example [::1]:2525"
    assert len(sink.messages) == 1
