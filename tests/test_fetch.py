"""HTTPS fetches through the gateway's resolver against a real HTTPS server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from gateway.config import DnsConfig, HostPort
from gateway.fetch import FetchError, HttpsFetcher, https_context
from gateway.resolver import Resolver
from tests.peers.dns import DnsServer
from tests.peers.https import HttpsServer

_ADDRESS = "127.0.81.1"


@pytest.fixture
def web(tls_ca: trustme.CA, dns_server: DnsServer) -> Iterator[HttpsServer]:
    dns_server.add("docs.fetch.test", "A", _ADDRESS)
    with HttpsServer(tls_ca, ["docs.fetch.test"], address=_ADDRESS) as server:
        yield server


def _fetcher(dns_server: DnsServer, ca_file: Path | None, max_size: int = 1000) -> HttpsFetcher:
    resolver = Resolver(DnsConfig(nameservers=[HostPort(dns_server.address, dns_server.port)]))
    return HttpsFetcher(resolver, https_context(ca_file), timeout=2.0, max_size=max_size)


async def test_fetches_document(web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path) -> None:
    web.put("docs.fetch.test", "/a.txt", "hello\n", content_type="text/plain")
    result = await _fetcher(dns_server, tls_ca_file).get("https://docs.fetch.test/a.txt")
    assert result.status == 200
    assert result.body == b"hello\n"
    assert result.headers["content-type"] == "text/plain"
    assert web.requests[-1].host == "docs.fetch.test"


async def test_missing_document_is_a_status_not_an_error(
    web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path
) -> None:
    result = await _fetcher(dns_server, tls_ca_file).get("https://docs.fetch.test/none")
    assert result.status == 404


async def test_untrusted_certificate_fails(web: HttpsServer, dns_server: DnsServer) -> None:
    web.put("docs.fetch.test", "/a.txt", "hello\n")
    with pytest.raises(FetchError, match="TLS"):
        await _fetcher(dns_server, None).get("https://docs.fetch.test/a.txt")


async def test_oversized_body_fails(
    web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path
) -> None:
    web.put("docs.fetch.test", "/big", b"x" * 5000)
    with pytest.raises(FetchError, match="more than"):
        await _fetcher(dns_server, tls_ca_file).get("https://docs.fetch.test/big")


async def test_slow_server_times_out(
    web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path
) -> None:
    web.put("docs.fetch.test", "/slow", "late", delay=4.0)
    with pytest.raises(FetchError, match="timed out"):
        await _fetcher(dns_server, tls_ca_file).get("https://docs.fetch.test/slow")


async def test_unknown_host_fails(dns_server: DnsServer, tls_ca_file: Path) -> None:
    with pytest.raises(FetchError, match="no address"):
        await _fetcher(dns_server, tls_ca_file).get("https://nowhere.fetch.test/")


async def test_only_https(dns_server: DnsServer) -> None:
    with pytest.raises(FetchError, match="not an https URL"):
        await _fetcher(dns_server, None).get("http://docs.fetch.test/")
