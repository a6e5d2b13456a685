"""Shared fixtures: the real peers tests talk to over loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.peers.dns import DnsServer
from tests.peers.gateway import GatewayFactory
from tests.peers.postfix import PostfixFactory, postfix_available
from tests.peers.sink import SinkFactory

# Away from 127.0.0.53, where systemd-resolved listens on machines that run it; several
# candidates so that a second test run on the same machine still finds one free.
_DNS_ADDRESSES = tuple((f"127.0.53.{n}", 53) for n in range(53, 63))


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """The test certificate authority: every peer's certificate is issued by it."""
    return trustme.CA(organization_name="Sealgate tests")


@pytest.fixture(scope="session")
def tls_ca_file(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test CA as a PEM file, e.g. for `delivery.tls_ca_file`."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def _dns_server_session() -> Iterator[DnsServer]:
    last: OSError | None = None
    for address, port in _DNS_ADDRESSES:
        server = DnsServer(address, port)
        try:
            server.start()
        except OSError as exc:
            last = exc
            continue
        try:
            yield server
        finally:
            server.stop()
        return
    raise RuntimeError(f"no loopback address free for the test DNS server: {last}")


@pytest.fixture
def dns_server(_dns_server_session: DnsServer) -> Iterator[DnsServer]:
    """A running authoritative DNS server with no records (use `.nameserver` in configs)."""
    _dns_server_session.clear()
    yield _dns_server_session
    _dns_server_session.clear()


@pytest.fixture
def sink_factory(tls_ca: trustme.CA) -> Iterator[SinkFactory]:
    """Call it to start SMTP sinks (e.g. MX hosts on 127.0.0.2-20, port 25); all stop afterwards."""
    factory = SinkFactory(tls_ca)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def postfix_factory() -> Iterator[PostfixFactory]:
    """Call `.start(null_client(...))` or `.start(durable_relay(...))`; all stop afterwards."""
    if not postfix_available():
        if os.environ.get("CI"):
            pytest.fail("Postfix is not installed; .ci/run installs it")
        pytest.skip("Postfix is not installed (bash .ci/run installs it)")
    factory = PostfixFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def gateway_factory() -> Iterator[GatewayFactory]:
    """Call with a config path to get a running gateway process; all stop afterwards."""
    factory = GatewayFactory()
    try:
        yield factory
    finally:
        factory.close()
