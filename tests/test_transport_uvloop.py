"""The transport's TLS and reuse paths on uvloop, the loop the daemon runs on.

uvloop has its own TLS and socket code, so errors can surface differently than
on asyncio's loop; these run the same scenarios through uvloop.run().
"""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import trustme

from gateway.config import DeliveryConfig, DnsConfig, parse_hostport
from gateway.outbound.transport import DeliveryReport, Transport
from gateway.resolver import Resolver
from tests.peers.dns import DnsServer
from tests.peers.sink import SinkFactory
from tests.test_transport import MESSAGE, MX_NAMES, SENDER, _NoSharedCipher, add_mx

uvloop = pytest.importorskip("uvloop")


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return uvloop.run(coro)


def deliveries(
    dns_server: DnsServer, count: int = 1, tls: str = "opportunistic", **delivery: Any
) -> tuple[list[DeliveryReport], int]:
    """Deliver count messages to partner.example with one transport; reports and idle count."""

    async def scenario() -> tuple[list[DeliveryReport], int]:
        resolver = Resolver(DnsConfig(nameservers=[parse_hostport(dns_server.nameserver)]))
        transport = Transport(DeliveryConfig(**delivery), "gw.clinic.example", resolver)
        try:
            reports = [
                await transport.deliver(
                    "partner.example", SENDER, ["a@partner.example"], MESSAGE, tls=tls
                )
                for _ in range(count)
            ]
            return reports, transport.idle_connections
        finally:
            await transport.close()

    result: tuple[list[DeliveryReport], int] = run(scenario())
    return result


def test_fall_through_and_verified_tls(
    dns_server: DnsServer, sink_factory: SinkFactory, tls_ca_file: Path
) -> None:
    add_mx(
        dns_server,
        "partner.example",
        (10, "mx1.example", "127.0.25.12"),  # refuses connections
        (20, "mx2.example", "127.0.25.3"),
    )
    sink = sink_factory("127.0.25.3", tls=True, cert_names=MX_NAMES)
    (report,), idle = deliveries(dns_server, tls_ca_file=tls_ca_file)
    assert report.results[0].status == "delivered"
    assert report.remote == "mx2.example [127.0.25.3]:25"
    assert report.tls is not None and report.tls["verified"] is True
    assert sink.messages[0].tls_info is not None
    assert idle == 1


def test_unknown_ca_still_encrypts(dns_server: DnsServer, sink_factory: SinkFactory) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2", tls=True, cert_names=MX_NAMES)
    (report,), _ = deliveries(dns_server)
    assert report.results[0].status == "delivered"
    assert report.tls is not None
    assert report.tls["verified"] is False
    assert report.tls["verify_error"]
    assert sink.messages[0].tls_info is not None


def test_verified_level_refuses_unknown_ca(
    dns_server: DnsServer, sink_factory: SinkFactory
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2", tls=True, cert_names=MX_NAMES)
    (report,), _ = deliveries(dns_server, tls="verified")
    assert report.results[0].status == "transient"
    assert report.results[0].text.startswith("4.7.5 ")
    assert sink.messages == []


def test_failed_handshake_retries_in_plaintext(
    dns_server: DnsServer, sink_factory: SinkFactory, tls_ca: trustme.CA
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2", tls_cert=_NoSharedCipher(tls_ca.issue_cert("mx1.example")))  # type: ignore[arg-type]
    (report,), _ = deliveries(dns_server)
    assert report.results[0].status == "delivered"
    assert report.tls is None
    assert sink.messages[0].tls_info is None


def test_connection_is_reused(
    dns_server: DnsServer, sink_factory: SinkFactory, tls_ca_file: Path
) -> None:
    add_mx(dns_server, "partner.example", (10, "mx1.example", "127.0.25.2"))
    sink = sink_factory("127.0.25.2", tls=True, cert_names=MX_NAMES)
    reports, idle = deliveries(dns_server, count=3, tls_ca_file=tls_ca_file)
    assert [r.results[0].status for r in reports] == ["delivered"] * 3
    assert len(sink.messages) == 3
    assert sink.connections == 1
    assert idle == 1
