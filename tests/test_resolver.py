"""The DNS resolver against a real authoritative server on loopback."""

from __future__ import annotations

import pytest

from gateway.config import DnsConfig, HostPort, parse_hostport
from gateway.resolver import DnsTemporaryError, MxAnswer, MxRecord, Resolver
from tests.peers.dns import DnsServer


def make_resolver(dns_server: DnsServer, timeout: float = 10.0) -> Resolver:
    return Resolver(DnsConfig(nameservers=[parse_hostport(dns_server.nameserver)], timeout=timeout))


async def test_mx_sorted_lowercase_without_trailing_dot(dns_server: DnsServer) -> None:
    dns_server.add("clinic.example", "MX", "20 MX2.Clinic.Example.")
    dns_server.add("clinic.example", "MX", "10 mx1.clinic.example.")
    dns_server.add("clinic.example", "MX", "30 mx3.clinic.example.")
    answer = await make_resolver(dns_server).mx("Clinic.Example.")
    assert answer == MxAnswer(
        records=(
            MxRecord(10, "mx1.clinic.example"),
            MxRecord(20, "mx2.clinic.example"),
            MxRecord(30, "mx3.clinic.example"),
        )
    )


async def test_implicit_mx_from_address_record(dns_server: DnsServer) -> None:
    # RFC 5321 section 5.1: no MX, but an address: the domain is its own exchanger.
    dns_server.add("plain.example", "AAAA", "::1")
    answer = await make_resolver(dns_server).mx("plain.example")
    assert answer.implicit
    assert answer.records == (MxRecord(0, "plain.example"),)
    assert not answer.null_mx and not answer.nxdomain


async def test_domain_with_neither_mx_nor_address(dns_server: DnsServer) -> None:
    dns_server.add("textonly.example", "TXT", "v=spf1 -all")
    answer = await make_resolver(dns_server).mx("textonly.example")
    assert answer == MxAnswer(records=())


async def test_null_mx(dns_server: DnsServer) -> None:
    dns_server.add("nomail.example", "MX", "0 .")
    answer = await make_resolver(dns_server).mx("nomail.example")
    assert answer.null_mx
    assert answer.records == ()


async def test_null_mx_beside_real_exchanger_is_ignored(dns_server: DnsServer) -> None:
    # RFC 7505 forbids this mix; the real exchanger is the useful part of it.
    dns_server.add("mixed.example", "MX", "0 .")
    dns_server.add("mixed.example", "MX", "10 mx.mixed.example.")
    answer = await make_resolver(dns_server).mx("mixed.example")
    assert not answer.null_mx
    assert answer.records == (MxRecord(10, "mx.mixed.example"),)


async def test_nxdomain(dns_server: DnsServer) -> None:
    answer = await make_resolver(dns_server).mx("missing.example")
    assert answer.nxdomain
    assert answer.records == ()


async def test_invalid_name_is_treated_as_nonexistent(dns_server: DnsServer) -> None:
    resolver = make_resolver(dns_server)
    assert (await resolver.mx("a..example")).nxdomain
    assert (await resolver.mx("x" * 70 + ".example")).nxdomain
    assert await resolver.addresses("") == []
    assert dns_server.queries == []


async def test_servfail_is_temporary(dns_server: DnsServer) -> None:
    dns_server.fail("broken.example")
    resolver = make_resolver(dns_server)
    with pytest.raises(DnsTemporaryError, match=r"broken\.example"):
        await resolver.mx("broken.example")
    with pytest.raises(DnsTemporaryError):
        await resolver.addresses("broken.example")
    with pytest.raises(DnsTemporaryError):
        await resolver.txt("broken.example")


async def test_unanswered_query_times_out_as_temporary(dns_server: DnsServer) -> None:
    dns_server.drop("silent.example")
    with pytest.raises(DnsTemporaryError, match="timed out"):
        await make_resolver(dns_server, timeout=1.0).mx("silent.example")


async def test_addresses_ipv4_before_ipv6(dns_server: DnsServer) -> None:
    dns_server.add("mx.example", "AAAA", "::1")
    dns_server.add("mx.example", "A", "127.0.0.2")
    dns_server.add("mx.example", "A", "127.0.0.3")
    found = await make_resolver(dns_server).addresses("mx.example")
    assert sorted(found[:2]) == ["127.0.0.2", "127.0.0.3"]
    assert found[2:] == ["::1"]


async def test_addresses_empty_for_missing_host_and_literal_for_ip(dns_server: DnsServer) -> None:
    resolver = make_resolver(dns_server)
    assert await resolver.addresses("nothing.example") == []
    assert await resolver.addresses("127.0.0.9") == ["127.0.0.9"]
    assert await resolver.addresses("::1") == ["::1"]


async def test_addresses_follow_cname(dns_server: DnsServer) -> None:
    dns_server.add("alias.example", "CNAME", "real.example.")
    dns_server.add("real.example", "A", "127.0.0.7")
    assert await make_resolver(dns_server).addresses("alias.example") == ["127.0.0.7"]


async def test_txt_joins_strings_of_a_record(dns_server: DnsServer) -> None:
    long_value = "v=DKIM1; k=rsa; p=" + "A" * 600  # split into 255-byte strings on the wire
    dns_server.add("s1._domainkey.clinic.example", "TXT", long_value)
    dns_server.add("clinic.example", "TXT", "v=spf1 -all")
    dns_server.add("clinic.example", "TXT", "google-site-verification=x")
    resolver = make_resolver(dns_server)
    assert await resolver.txt("s1._domainkey.clinic.example") == [long_value]
    assert sorted(await resolver.txt("clinic.example")) == [
        "google-site-verification=x",
        "v=spf1 -all",
    ]


async def test_txt_empty_for_nxdomain_and_nodata(dns_server: DnsServer) -> None:
    dns_server.add("clinic.example", "A", "127.0.0.2")
    resolver = make_resolver(dns_server)
    assert await resolver.txt("missing.example") == []
    assert await resolver.txt("clinic.example") == []
    # An empty non-terminal answers NODATA (RFC 8020), e.g. _domainkey above a selector.
    dns_server.add("s1._domainkey.clinic.example", "TXT", "v=DKIM1; p=")
    assert await resolver.txt("_domainkey.clinic.example") == []


async def test_tlsa(dns_server: DnsServer) -> None:
    dns_server.add("_25._tcp.mx.example", "TLSA", "3 1 1 " + "ab" * 32)
    answer = await make_resolver(dns_server).tlsa("_25._tcp.mx.example")
    assert [(r.usage, r.selector, r.mtype, r.data) for r in answer.records] == [
        (3, 1, 1, bytes.fromhex("ab" * 32))
    ]
    assert (await make_resolver(dns_server).tlsa("_25._tcp.none.example")).records == ()


async def test_answers_are_cached_for_their_ttl(dns_server: DnsServer) -> None:
    dns_server.add("cached.example", "MX", "10 mx.cached.example.", ttl=3600)
    dns_server.add("fresh.example", "MX", "10 mx.fresh.example.", ttl=0)
    resolver = make_resolver(dns_server)
    for _ in range(3):
        await resolver.mx("cached.example")
        await resolver.mx("fresh.example")
    asked = [q.name for q in dns_server.queries if q.rtype == "MX"]
    assert asked.count("cached.example.") == 1
    assert asked.count("fresh.example.") == 3


async def test_internationalised_domain(dns_server: DnsServer) -> None:
    dns_server.add("xn--bcher-kva.example", "MX", "10 mx.xn--bcher-kva.example.")
    answer = await make_resolver(dns_server).mx("bücher.example")
    assert answer.records == (MxRecord(10, "mx.xn--bcher-kva.example"),)


def test_nameserver_must_be_an_address() -> None:
    with pytest.raises(ValueError, match="IP address"):
        Resolver(DnsConfig(nameservers=[HostPort("dns.example", 53)]))


async def test_system_resolver_configuration_is_the_default() -> None:
    # No lookups here: the machine's resolver may be unreachable from tests.
    Resolver(DnsConfig())
