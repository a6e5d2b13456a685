"""DANE (RFC 7672) against a DNSSEC-signed zone behind a real validating resolver.

unbound (tests/peers/unbound.py) validates the signed zone dane.test; the MX
hosts are aiosmtpd sinks whose certificates come from a CA the gateway does not
trust, so only DANE can vouch for them. The same records served by the plain
test DNS server (no validation, AD=0) must not be trusted. Addresses:
127.0.71.0/24 for sinks, 127.0.72.53 for unbound.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.config import DeliveryConfig, DnsConfig, parse_hostport
from gateway.fetch import HttpsFetcher, https_context
from gateway.outbound import dane
from gateway.outbound.tlspolicy import TlsPolicy
from gateway.outbound.transport import Transport
from gateway.resolver import Resolver, TlsaRecord
from tests.peers.dns import DnsServer
from tests.peers.sink import SinkFactory
from tests.peers.unbound import SignedZone, ValidatingResolver, port_free, unbound_available

MESSAGE = b"From: <doctor@clinic.example>\r\nSubject: results\r\n\r\nSee attached.\r\n"
SENDER = "doctor@clinic.example"
UNBOUND = ("127.0.72.53", 53)
MX_EE, MX_TA, MX_BAD, MX_PLAIN = "127.0.71.2", "127.0.71.3", "127.0.71.4", "127.0.71.5"


def _spki_sha256(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def _cert_sha256(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


@dataclass
class World:
    """The signed zone's records and the certificates the MX hosts present."""

    resolver: ValidatingResolver
    records: list[tuple[str, str, str]]
    ee_cert: trustme.LeafCert
    ta_cert: trustme.LeafCert
    bad_cert: trustme.LeafCert


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not unbound_available():
        if os.environ.get("CI"):
            pytest.fail("unbound and ldnsutils are not installed; .ci/run installs them")
        pytest.skip("unbound/ldnsutils not installed (bash .ci/run installs them)")
    if not port_free(*UNBOUND):
        pytest.skip(f"{UNBOUND[0]}:{UNBOUND[1]} is taken (another test run?)")
    # A CA nobody trusts: only DANE can make these certificates acceptable.
    private_ca = trustme.CA(organization_name="Private CA")
    intermediate = private_ca.create_child_ca()
    ee_cert = private_ca.issue_cert("mx.dane.test")
    ta_cert = intermediate.issue_cert("mxta.dane.test")
    bad_cert = private_ca.issue_cert("mxbad.dane.test")
    records = [
        ("dane.test", "MX", "10 mx.dane.test."),
        ("mx.dane.test", "A", MX_EE),
        (
            "_25._tcp.mx.dane.test",
            "TLSA",
            f"3 1 1 {_spki_sha256(ee_cert.cert_chain_pems[0].bytes())}",
        ),
        ("ta.dane.test", "MX", "10 mxta.dane.test."),
        ("mxta.dane.test", "A", MX_TA),
        (
            "_25._tcp.mxta.dane.test",
            "TLSA",
            f"2 0 1 {_cert_sha256(intermediate.cert_pem.bytes())}",
        ),
        ("bad.dane.test", "MX", "10 mxbad.dane.test."),
        ("mxbad.dane.test", "A", MX_BAD),
        ("_25._tcp.mxbad.dane.test", "TLSA", "3 1 1 " + "00" * 32),
        ("plain.dane.test", "MX", "10 mxplain.dane.test."),
        ("mxplain.dane.test", "A", MX_PLAIN),
    ]
    zone = SignedZone("dane.test")
    for name, rtype, value in records:
        zone.add(name, rtype, value)
    with ValidatingResolver(
        tmp_path_factory.mktemp("unbound"), [zone], UNBOUND[0], UNBOUND[1]
    ) as resolver:
        yield World(resolver, records, ee_cert, ta_cert, bad_cert)


MakeTransport = Callable[..., Transport]


@pytest.fixture
async def transports() -> AsyncIterator[Callable[..., Transport]]:
    made: list[Transport] = []

    def make(nameserver: str, **delivery: Any) -> Transport:
        delivery.setdefault("command_timeout", 60)
        resolver = Resolver(DnsConfig(nameservers=[parse_hostport(nameserver)], timeout=10))
        transport = Transport(DeliveryConfig(**delivery), "gw.clinic.example", resolver)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.close()


async def test_mx_and_tlsa_from_the_signed_zone_are_authenticated(world: World) -> None:
    resolver = Resolver(DnsConfig(nameservers=[parse_hostport(world.resolver.nameserver)]))
    mx = await resolver.mx("dane.test")
    assert mx.authenticated is True
    assert [r.host for r in mx.records] == ["mx.dane.test"]
    tlsa = await resolver.tlsa("_25._tcp.mx.dane.test")
    assert tlsa.authenticated is True
    assert [(r.usage, r.selector, r.mtype) for r in tlsa.records] == [(3, 1, 1)]


async def test_dane_ee_delivers_over_verified_tls(
    world: World, sink_factory: SinkFactory, transports: MakeTransport
) -> None:
    sink = sink_factory(MX_EE, tls_cert=world.ee_cert)
    report = await transports(world.resolver.nameserver).deliver(
        "dane.test", SENDER, ["patient@dane.test"], MESSAGE, tls="verified"
    )
    assert [r.status for r in report.results] == ["delivered"]
    assert report.tls_failure is None
    assert report.tls is not None
    assert report.tls["dane"] == "matched"
    assert report.tls["dane_usage"] == "DANE-EE"
    assert report.tls["verified"] is True
    assert report.tls["level"] == "verified"
    assert report.tls["version"] in ("TLSv1.2", "TLSv1.3")
    (received,) = sink.messages
    assert received.tls_info is not None


async def test_dane_applies_to_opportunistic_mail_too(
    world: World, sink_factory: SinkFactory, transports: MakeTransport
) -> None:
    # RFC 7672 section 2.2: validated TLSA records make authenticated TLS mandatory.
    sink = sink_factory(MX_BAD, tls_cert=world.bad_cert)
    report = await transports(world.resolver.nameserver).deliver(
        "bad.dane.test", SENDER, ["patient@bad.dane.test"], MESSAGE
    )
    (result,) = report.results
    assert result.status == "transient"
    assert result.text.startswith("4.7.5 DANE TLSA records of mxbad.dane.test do not match")
    assert report.tls_failure == result.text
    assert sink.messages == []


async def test_dane_ta_with_chain_and_name(
    world: World, sink_factory: SinkFactory, transports: MakeTransport
) -> None:
    sink = sink_factory(MX_TA, tls_cert=world.ta_cert)
    report = await transports(world.resolver.nameserver).deliver(
        "ta.dane.test", SENDER, ["patient@ta.dane.test"], MESSAGE, tls="verified"
    )
    assert [r.status for r in report.results] == ["delivered"]
    assert report.tls is not None and report.tls["dane_usage"] == "DANE-TA"
    assert len(sink.messages) == 1


async def test_secure_mx_without_tlsa_falls_back_to_ca_verification(
    world: World, sink_factory: SinkFactory, transports: MakeTransport
) -> None:
    sink = sink_factory(MX_PLAIN, tls=True, cert_names=["other.test"])
    transport = transports(world.resolver.nameserver)
    report = await transport.deliver(
        "plain.dane.test", SENDER, ["p@plain.dane.test"], MESSAGE, tls="verified"
    )
    assert report.results[0].status == "transient"
    assert report.tls_failure is not None and report.tls_failure.startswith("4.7.5")
    assert sink.messages == []
    report = await transport.deliver("plain.dane.test", SENDER, ["p@plain.dane.test"], MESSAGE)
    assert report.results[0].status == "delivered"
    assert report.tls is not None and report.tls["dane"] is None


async def test_same_records_without_validation_are_not_trusted(
    world: World, dns_server: DnsServer, sink_factory: SinkFactory, transports: MakeTransport
) -> None:
    for name, rtype, value in world.records:
        dns_server.add(name, rtype, value)
    sink = sink_factory(MX_EE, tls_cert=world.ee_cert)
    report = await transports(dns_server.nameserver).deliver(
        "dane.test", SENDER, ["patient@dane.test"], MESSAGE, tls="verified"
    )
    (result,) = report.results
    assert result.status == "transient"
    assert result.text.startswith("4.7.5 Server certificate not verified for mx.dane.test")
    assert report.tls_failure == result.text
    assert sink.messages == []
    # The unvalidated TLSA records were never even asked for.
    assert not [q for q in dns_server.queries if q.rtype == "TLSA"]


async def test_domain_tls_reports_dane(world: World, dns_server: DnsServer) -> None:
    async def domain_tls(nameserver: str, domain: str, **delivery: Any) -> Any:
        cfg = DeliveryConfig(**delivery)
        resolver = Resolver(DnsConfig(nameservers=[parse_hostport(nameserver)]))
        fetcher = HttpsFetcher(resolver, https_context(None), timeout=2, max_size=1000)
        return await TlsPolicy(cfg, resolver, fetcher).domain(domain)

    tls = await domain_tls(world.resolver.nameserver, "dane.test")
    assert (tls.verifiable, tls.source, tls.floor) == (True, "dane", "verified")
    tls = await domain_tls(world.resolver.nameserver, "plain.dane.test")
    assert (tls.verifiable, tls.source, tls.floor) == (False, None, "opportunistic")
    tls = await domain_tls(world.resolver.nameserver, "dane.test", dane=False)
    assert tls.verifiable is False
    for name, rtype, value in world.records:
        dns_server.add(name, rtype, value)
    tls = await domain_tls(dns_server.nameserver, "dane.test")
    assert tls.verifiable is False


async def test_dane_off_ignores_validated_records(
    world: World, sink_factory: SinkFactory, transports: MakeTransport
) -> None:
    sink_factory(MX_BAD, tls_cert=world.bad_cert)
    report = await transports(world.resolver.nameserver, dane=False).deliver(
        "bad.dane.test", SENDER, ["patient@bad.dane.test"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert report.tls is not None and report.tls["verified"] is False


# --- matching rules, on certificates alone ----------------------------------------


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def _record(usage: int, selector: int, mtype: int, pem: bytes) -> TlsaRecord:
    cert = x509.load_pem_x509_certificate(pem)
    data = (
        cert.public_bytes(Encoding.DER)
        if selector == 0
        else cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return TlsaRecord(usage, selector, mtype, data)


def test_dane_ee_ignores_names() -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("somewhere.else")
    pem = leaf.cert_chain_pems[0].bytes()
    for selector, mtype in [(0, 0), (0, 1), (1, 1), (1, 2)]:
        result = dane.match([_record(3, selector, mtype, pem)], [_der(pem)], "mx.example.net")
        assert result == dane.DaneResult(True, "DANE-EE")


def test_dane_ta_needs_the_name_and_a_valid_chain() -> None:
    ca = trustme.CA()
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert("mx.example.net")
    chain = [_der(p.bytes()) for p in leaf.cert_chain_pems]
    anchor = _record(2, 0, 1, intermediate.cert_pem.bytes())
    assert dane.match([anchor], chain, "mx.example.net").matched
    wrong_name = dane.match([anchor], chain, "mx.example.org")
    assert not wrong_name.matched and "not valid for mx.example.org" in wrong_name.detail
    # An anchor the server does not send cannot be checked.
    assert not dane.match([anchor], chain[:1], "mx.example.net").matched
    # A chain whose signatures do not lead to the anchor.
    stranger = trustme.CA().create_child_ca()
    forged = [chain[0], _der(stranger.cert_pem.bytes())]
    result = dane.match([_record(2, 0, 1, stranger.cert_pem.bytes())], forged, "mx.example.net")
    assert result == dane.DaneResult(
        False, "the certificate chain does not lead to the TLSA trust anchor"
    )


def test_pkix_usages_are_not_usable_for_smtp() -> None:
    ca = trustme.CA()
    pem = ca.issue_cert("mx.example.net").cert_chain_pems[0].bytes()
    records = [_record(1, 0, 1, pem), _record(0, 0, 1, ca.cert_pem.bytes())]
    assert dane.usable(records) == ()
    assert dane.match(records, [_der(pem)], "mx.example.net") == dane.DaneResult(
        False, "no usable TLSA records"
    )


def test_wildcard_names() -> None:
    ca = trustme.CA()
    cert = x509.load_pem_x509_certificate(ca.issue_cert("*.example.net").cert_chain_pems[0].bytes())
    assert dane.name_matches(cert, "mx.example.net")
    assert not dane.name_matches(cert, "a.mx.example.net")
    assert not dane.name_matches(cert, "example.net")


def test_malformed_chain_is_a_mismatch(tmp_path: Path) -> None:
    record = TlsaRecord(3, 1, 1, b"\x00" * 32)
    assert dane.match([record], [b"not a certificate"], "mx.example.net").matched is False
    assert dane.match([record], [], "mx.example.net").detail == "the server sent no certificate"
