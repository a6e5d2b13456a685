"""The admin TLS policy (delivery.tls_policy) and what TlsPolicy.domain() reports.

Real peers on loopback: sinks on 127.0.72.10-20, an MTA-STS policy host on
127.0.72.1:443, the test DNS server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from gateway.config import DeliveryConfig, DnsConfig, parse_hostport
from gateway.fetch import HttpsFetcher, https_context
from gateway.outbound.tlspolicy import DomainTls, TlsPolicy, stronger
from gateway.outbound.transport import Transport
from gateway.resolver import Resolver
from tests.peers.dns import DnsServer
from tests.peers.https import HttpsServer
from tests.peers.sink import SinkFactory

WEB = "127.0.72.1"
MX1, MX2 = "127.0.72.11", "127.0.72.12"
DOMAIN = "partner.example"
MESSAGE = b"From: <doctor@clinic.example>\r\nSubject: hello\r\n\r\nHi.\r\n"
SENDER = "doctor@clinic.example"
MX_NAMES = ["mx1.partner.example", "mx2.partner.example", "relay.clinic.example"]


def make_policy(dns_server: DnsServer, ca_file: Path | None = None, **delivery: Any) -> TlsPolicy:
    cfg = DeliveryConfig(**delivery)
    resolver = Resolver(DnsConfig(nameservers=[parse_hostport(dns_server.nameserver)]))
    fetcher = HttpsFetcher(resolver, https_context(ca_file), timeout=2.0, max_size=2000)
    return TlsPolicy(cfg, resolver, fetcher)


def test_levels_order() -> None:
    assert stronger("opportunistic", "required") == "required"
    assert stronger("verified", "required") == "verified"
    assert stronger("opportunistic", "opportunistic") == "opportunistic"


def test_admin_policy_lookup(dns_server: DnsServer) -> None:
    policy = make_policy(
        dns_server,
        tls_policy={
            "partner.example": "verify",
            ".partner.example": "encrypt",
            ".example": "may",
            "Legacy.Example.": "none",
        },
    )
    assert policy.admin_policy("partner.example") == "verify"
    assert policy.admin_policy("PARTNER.example.") == "verify"
    assert policy.admin_policy("mail.partner.example") == "encrypt"
    assert policy.admin_policy("a.b.partner.example") == "encrypt"
    assert policy.admin_policy("other.example") == "may"
    assert policy.admin_policy("legacy.example") == "none"
    assert policy.admin_policy("example") is None
    assert policy.admin_policy("elsewhere.test") is None


async def test_domain_from_admin_policy(dns_server: DnsServer) -> None:
    policy = make_policy(
        dns_server,
        tls_policy={"baa.example": "verify", "enc.example": "encrypt", "dane.example": "dane"},
    )
    assert await policy.domain("baa.example") == DomainTls(True, "policy", "verified")
    assert await policy.domain("dane.example") == DomainTls(True, "policy", "verified")
    assert await policy.domain("enc.example") == DomainTls(False, None, "required")
    assert await policy.domain("nobody.example") == DomainTls(False, None, "opportunistic")


async def test_domain_never_raises_for_network_trouble(dns_server: DnsServer) -> None:
    dns_server.fail(DOMAIN)
    dns_server.fail(f"_mta-sts.{DOMAIN}")
    policy = make_policy(dns_server, tls_policy={DOMAIN: "encrypt"})
    assert await policy.domain(DOMAIN) == DomainTls(False, None, "required")


@pytest.fixture
def web(tls_ca: trustme.CA, dns_server: DnsServer) -> Iterator[HttpsServer]:
    dns_server.add(f"mta-sts.{DOMAIN}", "A", WEB)
    with HttpsServer(tls_ca, [f"mta-sts.{DOMAIN}"], address=WEB) as server:
        yield server


def publish_sts(web: HttpsServer, dns_server: DnsServer, mode: str) -> None:
    dns_server.add(f"_mta-sts.{DOMAIN}", "TXT", "v=STSv1; id=7;")
    web.put(
        f"mta-sts.{DOMAIN}",
        "/.well-known/mta-sts.txt",
        f"version: STSv1\nmode: {mode}\nmx: *.partner.example\nmax_age: 600\n",
        content_type="text/plain",
    )


async def test_domain_from_mta_sts(
    web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path
) -> None:
    publish_sts(web, dns_server, "enforce")
    policy = make_policy(dns_server, tls_ca_file)
    assert await policy.domain(DOMAIN) == DomainTls(True, "mta-sts", "verified")
    assert await policy.domain(DOMAIN) == DomainTls(True, "mta-sts", "verified")
    assert len(web.requests) == 1
    off = make_policy(dns_server, tls_ca_file, mta_sts=False)
    assert await off.domain(DOMAIN) == DomainTls(False, None, "opportunistic")
    relay = make_policy(dns_server, tls_ca_file, relay_host="relay.clinic.example:25")
    assert await relay.domain(DOMAIN) == DomainTls(False, None, "opportunistic")
    assert len(web.requests) == 1


async def test_domain_mta_sts_testing_is_not_verifiable(
    web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path
) -> None:
    publish_sts(web, dns_server, "testing")
    policy = make_policy(dns_server, tls_ca_file)
    assert await policy.domain(DOMAIN) == DomainTls(False, None, "opportunistic")


# --- delivery under the admin policy ---------------------------------------------------

MakeTransport = Callable[..., Transport]


@pytest.fixture
async def transport_factory(dns_server: DnsServer) -> AsyncIterator[MakeTransport]:
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


def add_mx(dns_server: DnsServer, *hosts: tuple[int, str, str]) -> None:
    for preference, host, ip in hosts:
        dns_server.add(DOMAIN, "MX", f"{preference} {host}.")
        dns_server.add(host, "A", ip)


async def test_encrypt_refuses_a_server_without_starttls(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, (10, "mx1.partner.example", MX1))
    sink = sink_factory(MX1)
    report = await transport_factory(tls_policy={DOMAIN: "encrypt"}).deliver(
        DOMAIN, SENDER, ["p@partner.example"], MESSAGE
    )
    (result,) = report.results
    assert result.status == "transient"
    assert report.tls_failure == (
        "4.7.4 TLS is required, but was not offered by mx1.partner.example [127.0.72.11]:25"
    )
    assert sink.messages == []


async def test_encrypt_accepts_any_certificate(
    dns_server: DnsServer, sink_factory: SinkFactory, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, (10, "mx1.partner.example", MX1))
    sink = sink_factory(MX1, tls=True, cert_names=["other.test"])
    report = await transport_factory(tls_policy={DOMAIN: "encrypt"}).deliver(
        DOMAIN, SENDER, ["p@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert report.tls is not None
    assert report.tls["level"] == "required"
    assert report.tls["policy"] == "encrypt"
    assert report.tls["verified"] is False
    assert report.tls["version"] in ("TLSv1.2", "TLSv1.3")
    assert len(sink.messages) == 1


async def test_verify_policy_needs_the_mx_name(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    add_mx(dns_server, (10, "mx1.partner.example", MX1), (20, "mx2.partner.example", MX2))
    bad = sink_factory(MX1, tls=True, cert_names=["other.test"])
    good = sink_factory(MX2, tls=True, cert_names=MX_NAMES)
    transport = transport_factory(tls_ca_file=tls_ca_file, tls_policy={".example": "verify"})
    report = await transport.deliver(DOMAIN, SENDER, ["p@partner.example"], MESSAGE)
    assert report.results[0].status == "delivered"
    assert report.remote == "mx2.partner.example [127.0.72.12]:25"
    assert report.tls is not None and report.tls["policy"] == "verify"
    assert report.tls["level"] == "verified"
    assert bad.messages == [] and len(good.messages) == 1


async def test_none_policy_sends_plaintext_for_ordinary_mail_only(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    add_mx(dns_server, (10, "mx1.partner.example", MX1))
    sink = sink_factory(MX1, tls=True, cert_names=MX_NAMES)
    transport = transport_factory(tls_ca_file=tls_ca_file, tls_policy={DOMAIN: "none"})
    report = await transport.deliver(DOMAIN, SENDER, ["p@partner.example"], MESSAGE)
    assert report.results[0].status == "delivered"
    assert report.tls is None
    assert sink.messages[0].tls_info is None
    # A message that asks for verified TLS still gets it: the strongest requirement wins.
    report = await transport.deliver(DOMAIN, SENDER, ["p@partner.example"], MESSAGE, tls="verified")
    assert report.results[0].status == "delivered"
    assert report.tls is not None and report.tls["verified"] is True
    assert sink.messages[1].tls_info is not None


async def test_dane_policy_without_tlsa_records_fails_closed(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    add_mx(dns_server, (10, "mx1.partner.example", MX1))
    sink = sink_factory(MX1, tls=True, cert_names=MX_NAMES)
    report = await transport_factory(tls_ca_file=tls_ca_file, tls_policy={DOMAIN: "dane"}).deliver(
        DOMAIN, SENDER, ["p@partner.example"], MESSAGE
    )
    assert report.results[0].status == "transient"
    assert report.tls_failure is not None
    assert "DANE required by policy" in report.tls_failure
    assert sink.connections == 0


async def test_unreachable_hosts_are_not_a_tls_failure(
    dns_server: DnsServer, transport_factory: MakeTransport
) -> None:
    add_mx(dns_server, (10, "mx1.partner.example", "127.0.72.19"))  # nothing listens
    report = await transport_factory().deliver(
        DOMAIN, SENDER, ["p@partner.example"], MESSAGE, tls="verified"
    )
    assert report.results[0].status == "transient"
    assert report.results[0].text.startswith("4.4.1")
    assert report.tls_failure is None


async def test_tls_failure_on_one_mx_and_delivery_on_the_next(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    add_mx(dns_server, (10, "mx1.partner.example", MX1), (20, "mx2.partner.example", MX2))
    plain = sink_factory(MX1)
    good = sink_factory(MX2, tls=True, cert_names=MX_NAMES)
    report = await transport_factory(tls_ca_file=tls_ca_file).deliver(
        DOMAIN, SENDER, ["p@partner.example"], MESSAGE, tls="verified"
    )
    assert report.results[0].status == "delivered"
    assert report.tls_failure is None
    assert plain.messages == [] and len(good.messages) == 1


async def test_relay_host_ignores_mta_sts_and_is_verified_by_its_name(
    web: HttpsServer,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    publish_sts(web, dns_server, "enforce")
    dns_server.add("relay.clinic.example", "A", MX1)
    sink = sink_factory(MX1, tls=True, cert_names=MX_NAMES)
    transport = transport_factory(tls_ca_file=tls_ca_file, relay_host="relay.clinic.example:25")
    report = await transport.deliver(DOMAIN, SENDER, ["p@partner.example"], MESSAGE, tls="verified")
    assert report.results[0].status == "delivered"
    assert report.tls is not None
    assert report.tls["verified"] is True and report.tls["mta_sts"] is None
    assert web.requests == []
    assert len(sink.messages) == 1


async def test_relay_host_with_a_wrong_name_fails_verified_mail(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    dns_server.add("relay.clinic.example", "A", MX1)
    sink = sink_factory(MX1, tls=True, cert_names=["other.test"])
    transport = transport_factory(
        tls_ca_file=tls_ca_file,
        relay_host="relay.clinic.example:25",
        tls_policy={DOMAIN: "verify"},
    )
    report = await transport.deliver(DOMAIN, SENDER, ["p@partner.example"], MESSAGE)
    assert report.results[0].status == "transient"
    assert report.tls_failure is not None and report.tls_failure.startswith("4.7.5")
    assert sink.messages == []


async def test_sessions_are_reused_only_for_the_same_requirement(
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    add_mx(dns_server, (10, "mx1.partner.example", MX1))
    sink = sink_factory(MX1, tls=True, cert_names=["other.test"])
    transport = transport_factory(tls_ca_file=tls_ca_file)
    report = await transport.deliver(DOMAIN, SENDER, ["p@partner.example"], MESSAGE)
    assert report.results[0].status == "delivered"
    assert transport.idle_connections == 1
    # The idle, unverified session must not carry mail that needs verified TLS.
    report = await transport.deliver(DOMAIN, SENDER, ["p@partner.example"], MESSAGE, tls="verified")
    assert report.results[0].status == "transient"
    assert report.tls_failure is not None
    assert len(sink.messages) == 1
