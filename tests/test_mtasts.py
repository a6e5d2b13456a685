"""MTA-STS (RFC 8461): parsing, fetching and caching, and delivery under a policy.

Policies are served by a real HTTPS server (tests/peers/https.py) on
127.0.70.1:443 with a certificate from the test CA; MX hosts are sinks on
127.0.70.10-20; names come from the test DNS server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from gateway.config import DeliveryConfig, DnsConfig, parse_hostport
from gateway.fetch import HttpsFetcher, https_context
from gateway.outbound.mtasts import (
    MtaSts,
    PolicyError,
    mx_matches,
    parse_policy,
    parse_txt,
)
from gateway.outbound.transport import Transport
from gateway.resolver import Resolver
from tests.peers.dns import DnsServer
from tests.peers.https import HttpsServer
from tests.peers.sink import SinkFactory

WEB = "127.0.70.1"
MX1, MX2 = "127.0.70.11", "127.0.70.12"
DOMAIN = "partner.example"
POLICY_HOST = f"mta-sts.{DOMAIN}"
POLICY_PATH = "/.well-known/mta-sts.txt"
MESSAGE = b"From: <doctor@clinic.example>\r\nSubject: hello\r\n\r\nHi.\r\n"
SENDER = "doctor@clinic.example"
MX_NAMES = ["mx1.partner.example", "mx2.partner.example"]


def policy(mode: str = "enforce", *mx: str, max_age: int = 86400) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *[f"mx: {m}" for m in mx or ("*.partner.example",)]]
    return "\r\n".join([*lines, f"max_age: {max_age}"]) + "\r\n"


# --- parsing ----------------------------------------------------------------------


def test_parse_txt() -> None:
    assert parse_txt(["v=STSv1; id=20160831085700Z;"]) == "20160831085700Z"
    assert parse_txt(["v=STSv1;id=abc"]) == "abc"
    assert parse_txt(["something else", "v=STSv1; id=abc"]) == "abc"
    assert parse_txt([]) is None
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # two records: none
    assert parse_txt(["v=STSv1; id=bad-id!"]) is None
    assert parse_txt(["v=STSv1;"]) is None
    assert parse_txt(["id=abc; v=STSv1"]) is None  # v= must come first


def test_parse_policy() -> None:
    parsed = parse_policy(policy("enforce", "mx1.partner.example", "*.backup.example"))
    assert parsed.mode == "enforce"
    assert parsed.mx == ("mx1.partner.example", "*.backup.example")
    assert parsed.max_age == 86400
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 5\n").mode == "none"
    assert parse_policy(policy(max_age=99999999999 // 10)).max_age == 31_557_600
    for bad in [
        "mode: enforce\nmx: a\nmax_age: 1\n",
        "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a\nmax_age: soon\n",
        "version: STSv1\nmode: enforce\nmx: a\nmax_age: 1\ngarbage\n",
    ]:
        with pytest.raises(PolicyError):
            parse_policy(bad)


def test_mx_patterns() -> None:
    assert mx_matches("mail.example.com", "MAIL.example.com.")
    assert mx_matches("*.example.com", "mx1.example.com")
    assert not mx_matches("*.example.com", "example.com")
    assert not mx_matches("*.example.com", "a.b.example.com")
    assert not mx_matches("mail.example.com", "mail.example.com.evil.test")


# --- fetching and caching -----------------------------------------------------------


@pytest.fixture
def web(tls_ca: trustme.CA, dns_server: DnsServer) -> Iterator[HttpsServer]:
    dns_server.add(POLICY_HOST, "A", WEB)
    with HttpsServer(tls_ca, [POLICY_HOST], address=WEB) as server:
        yield server


def publish(
    web: HttpsServer, dns_server: DnsServer, text: str, ident: str = "1", **kwargs: Any
) -> None:
    dns_server.remove(f"_mta-sts.{DOMAIN}", "TXT")
    dns_server.add(f"_mta-sts.{DOMAIN}", "TXT", f"v=STSv1; id={ident};", ttl=0)
    kwargs.setdefault("content_type", "text/plain")
    web.put(POLICY_HOST, POLICY_PATH, text, **kwargs)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make_sts(
    dns_server: DnsServer, ca_file: Path | None, clock: Clock, cache_dir: Path | None = None
) -> MtaSts:
    resolver = Resolver(DnsConfig(nameservers=[parse_hostport(dns_server.nameserver)]))
    fetcher = HttpsFetcher(resolver, https_context(ca_file), timeout=2.0, max_size=2000)
    return MtaSts(resolver, fetcher, cache_dir=cache_dir, clock=clock)


async def test_fetches_and_caches_by_id(
    web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path
) -> None:
    publish(web, dns_server, policy("enforce", "mx1.partner.example"))
    clock = Clock()
    sts = make_sts(dns_server, tls_ca_file, clock)
    found = await sts.policy(DOMAIN)
    assert found is not None and found.mode == "enforce" and found.id == "1"
    assert found.matches("mx1.partner.example") and not found.matches("mx2.partner.example")
    assert await sts.policy(DOMAIN) == found
    assert len(web.requests) == 1  # same id: the cached policy
    publish(web, dns_server, policy("testing"), ident="2")
    changed = await sts.policy(DOMAIN)
    assert changed is not None and changed.mode == "testing"
    assert len(web.requests) == 2


async def test_deliveries_at_once_fetch_the_policy_once(
    web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path
) -> None:
    publish(web, dns_server, policy())
    sts = make_sts(dns_server, tls_ca_file, Clock())
    found = await asyncio.gather(*(sts.policy(DOMAIN) for _ in range(5)))
    assert all(p is not None and p.mode == "enforce" for p in found)
    assert len(web.requests) == 1


async def test_failed_fetch_keeps_the_cached_policy_until_it_expires(
    web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path
) -> None:
    publish(web, dns_server, policy(max_age=3600))
    clock = Clock()
    sts = make_sts(dns_server, tls_ca_file, clock)
    assert (await sts.policy(DOMAIN)) is not None
    # An attacker (or an outage) blocks the policy host and the TXT record changes.
    web.remove(POLICY_HOST, POLICY_PATH)
    publish(web, dns_server, "", ident="2", status=404)
    kept = await sts.policy(DOMAIN)
    assert kept is not None and kept.mode == "enforce"
    # The TXT record vanishing does not end the policy either (RFC 8461 section 5.1).
    dns_server.remove(f"_mta-sts.{DOMAIN}", "TXT")
    assert (await sts.policy(DOMAIN)) is not None
    clock.now += 3601
    assert (await sts.policy(DOMAIN)) is None


async def test_mode_none_and_bad_documents_mean_no_policy(
    web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path
) -> None:
    sts = make_sts(dns_server, tls_ca_file, Clock())
    publish(web, dns_server, "version: STSv1\nmode: none\nmax_age: 60\n")
    assert (await sts.policy(DOMAIN)) is None
    publish(web, dns_server, policy(), ident="2", content_type="text/html")
    assert (await sts.policy(DOMAIN)) is None
    publish(web, dns_server, "x" * 5000, ident="3")
    assert (await sts.policy(DOMAIN)) is None  # over the size cap


async def test_untrusted_policy_host_means_no_policy(
    web: HttpsServer, dns_server: DnsServer
) -> None:
    publish(web, dns_server, policy())
    assert (await make_sts(dns_server, None, Clock()).policy(DOMAIN)) is None


async def test_slow_policy_host_times_out(
    web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path
) -> None:
    publish(web, dns_server, policy(), delay=4.0)
    assert (await make_sts(dns_server, tls_ca_file, Clock()).policy(DOMAIN)) is None


async def test_cache_survives_a_restart(
    web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path, tmp_path: Path
) -> None:
    publish(web, dns_server, policy())
    clock = Clock()
    assert (await make_sts(dns_server, tls_ca_file, clock, tmp_path).policy(DOMAIN)) is not None
    saved = json.loads((tmp_path / "mta-sts.json").read_text())
    assert saved[DOMAIN]["mode"] == "enforce"
    web.remove(POLICY_HOST, POLICY_PATH)
    again = await make_sts(dns_server, tls_ca_file, clock, tmp_path).policy(DOMAIN)
    assert again is not None and again.mode == "enforce"
    assert len(web.requests) == 1


async def test_damaged_cache_file_is_ignored(
    web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "mta-sts.json").write_text("{not json")
    publish(web, dns_server, policy())
    assert (await make_sts(dns_server, tls_ca_file, Clock(), tmp_path).policy(DOMAIN)) is not None


# --- delivery under a policy ---------------------------------------------------------


MakeTransport = Callable[..., Transport]


@pytest.fixture
async def transport_factory(dns_server: DnsServer) -> AsyncIterator[MakeTransport]:
    made: list[Transport] = []

    def make(**delivery: Any) -> Transport:
        delivery.setdefault("command_timeout", 60)
        delivery.setdefault("https_timeout", 5)
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


async def test_enforce_delivers_over_verified_tls(
    web: HttpsServer,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    publish(web, dns_server, policy("enforce", "mx1.partner.example"))
    add_mx(dns_server, (10, "mx1.partner.example", MX1))
    sink = sink_factory(MX1, tls=True, cert_names=MX_NAMES)
    report = await transport_factory(tls_ca_file=tls_ca_file).deliver(
        DOMAIN, SENDER, ["p@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert report.tls is not None
    assert report.tls["mta_sts"] == "enforce"
    assert report.tls["level"] == "verified"  # the policy raised the opportunistic request
    assert report.tls["verified"] is True
    assert sink.messages[0].tls_info is not None


async def test_enforce_skips_an_mx_the_policy_does_not_list(
    web: HttpsServer,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    publish(web, dns_server, policy("enforce", "mx2.partner.example"))
    add_mx(dns_server, (10, "mx1.partner.example", MX1))
    sink = sink_factory(MX1, tls=True, cert_names=MX_NAMES)
    report = await transport_factory(tls_ca_file=tls_ca_file).deliver(
        DOMAIN, SENDER, ["p@partner.example"], MESSAGE
    )
    (result,) = report.results
    assert result.status == "transient"
    assert report.tls_failure == (
        "4.7.5 mx1.partner.example is not an MX host of the MTA-STS policy of partner.example"
    )
    assert result.text == report.tls_failure
    assert sink.connections == 0


@pytest.mark.parametrize("offer", ["no-starttls", "wrong-certificate"])
async def test_enforce_never_sends_in_clear_or_to_a_wrong_certificate(
    web: HttpsServer,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
    offer: str,
) -> None:
    publish(web, dns_server, policy("enforce"))
    add_mx(dns_server, (10, "mx1.partner.example", MX1), (20, "mx2.partner.example", MX2))
    if offer == "no-starttls":
        sinks = [sink_factory(MX1), sink_factory(MX2)]
    else:
        sinks = [
            sink_factory(MX1, tls=True, cert_names=["other.test"]),
            sink_factory(MX2, tls=True, cert_names=["other.test"]),
        ]
    report = await transport_factory(tls_ca_file=tls_ca_file).deliver(
        DOMAIN, SENDER, ["p@partner.example"], MESSAGE
    )
    (result,) = report.results
    assert result.status == "transient"
    assert report.tls_failure is not None and report.tls_failure.startswith("4.7.")
    assert result.text == report.tls_failure
    assert all(s.messages == [] for s in sinks)


async def test_testing_mode_delivers_and_records(
    web: HttpsServer,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    publish(web, dns_server, policy("testing", "mx9.partner.example"))
    add_mx(dns_server, (10, "mx1.partner.example", MX1))
    sink = sink_factory(MX1, tls=True, cert_names=["other.test"])
    report = await transport_factory(tls_ca_file=tls_ca_file).deliver(
        DOMAIN, SENDER, ["p@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert report.tls_failure is None
    assert report.tls is not None
    assert report.tls["mta_sts"] == "testing"
    assert report.tls["level"] == "opportunistic"
    assert report.tls["verified"] is False
    assert "mx1.partner.example is not an MX host" in report.tls["mta_sts_failure"]
    assert len(sink.messages) == 1


async def test_mta_sts_off_ignores_the_policy(
    web: HttpsServer,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    transport_factory: MakeTransport,
    tls_ca_file: Path,
) -> None:
    publish(web, dns_server, policy("enforce", "mx9.partner.example"))
    add_mx(dns_server, (10, "mx1.partner.example", MX1))
    sink_factory(MX1)
    report = await transport_factory(tls_ca_file=tls_ca_file, mta_sts=False).deliver(
        DOMAIN, SENDER, ["p@partner.example"], MESSAGE
    )
    assert report.results[0].status == "delivered"
    assert web.requests == []
