"""Key discovery against real peers: WKD on a loopback HTTPS server, DNS from the test server."""

from __future__ import annotations

import base64
import email
import email.policy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from gateway import log
from gateway.config import DnsConfig, HostPort, PgpConfig
from gateway.fetch import HttpsFetcher, https_context
from gateway.message import ClientInfo, Envelope, QueuedMessage, RecipientStatus
from gateway.outbound.methods import Method, Outgoing
from gateway.pgp import PgpDirectory, PgpHandler
from gateway.pgp.discovery import openpgpkey_name, wkd_hash
from gateway.resolver import Resolver
from tests.peers.dns import DnsServer
from tests.peers.gpg import GpgUser, pgp_mime_parts
from tests.peers.https import HttpsServer

WEB = "127.0.82.1"
HOSTS = [
    "openpgpkey.adv.example",
    "direct.example",
    "openpgpkey.slow.example",
    "openpgpkey.change.example",
]


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GpgUser]]:
    base = tmp_path_factory.mktemp("gpgd")
    users = {
        "carol": GpgUser.create(base / "carol", "Carol@adv.example", "Carol"),
        "dave": GpgUser.create(base / "dave", "dave@direct.example", "Dave"),
        "erin": GpgUser.create(base / "erin", "erin@change.example", "Erin"),
        "erin2": GpgUser.create(base / "erin2", "erin@change.example", "Erin (new)"),
        "mallory": GpgUser.create(base / "mallory", "mallory@evil.example", "Mallory"),
        "slow": GpgUser.create(base / "slow", "sam@slow.example", "Sam"),
    }
    try:
        yield users
    finally:
        for u in users.values():
            u.close()


@pytest.fixture
def web(tls_ca: trustme.CA, dns_server: DnsServer) -> Iterator[HttpsServer]:
    for host in HOSTS:
        dns_server.add(host, "A", WEB)
    with HttpsServer(tls_ca, HOSTS, address=WEB) as server:
        yield server


@pytest.fixture
def events() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def listener(name: str, level: int, fields: dict[str, Any]) -> None:
        seen.append((name, fields))

    log.add_listener(listener)
    try:
        yield seen
    finally:
        log.remove_listener(listener)


def make_directory(
    tmp_path: Path, dns_server: DnsServer, ca_file: Path, timeout: float = 5.0, **cfg: Any
) -> PgpDirectory:
    resolver = Resolver(
        DnsConfig(nameservers=[HostPort(dns_server.address, dns_server.port)], timeout=timeout)
    )
    fetcher = HttpsFetcher(resolver, https_context(ca_file), timeout=timeout, max_size=64 * 1024)
    return PgpDirectory(tmp_path / "data", PgpConfig(**cfg), resolver, fetcher)


def advanced_path(local: str, domain: str) -> str:
    return f"/.well-known/openpgpkey/{domain}/hu/{wkd_hash(local)}"


def direct_path(local: str) -> str:
    return f"/.well-known/openpgpkey/hu/{wkd_hash(local)}"


async def test_wkd_advanced_key_encrypts_and_decrypts(
    tmp_path: Path,
    web: HttpsServer,
    dns_server: DnsServer,
    tls_ca_file: Path,
    people: dict[str, GpgUser],
    events: list[tuple[str, dict[str, Any]]],
) -> None:
    carol = people["carol"]
    web.put("openpgpkey.adv.example", advanced_path("carol", "adv.example"), carol.public_key())
    d = make_directory(tmp_path, dns_server, tls_ca_file)
    assert await d.key_for("Carol@adv.example") == carol.fingerprint
    assert web.requests[-1].host == "openpgpkey.adv.example"
    assert web.requests[-1].path.endswith("?l=Carol")
    binding = d.state.binding("carol@adv.example")
    assert binding is not None and binding.source == "wkd"
    assert any(n == "pgp_key_learned" for n, _ in events)
    # Found once, then served from the keyring until lookup_cache runs out.
    count = len(web.requests)
    assert await d.key_for("carol@adv.example") == carol.fingerprint
    assert len(web.requests) == count

    data = (
        b"From: drwho@clinic.example\r\nTo: Carol@adv.example\r\n"
        b"Subject: Biopsy result for Jane Roe\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nMalignant. Call me.\r\n"
    )
    env = Envelope("drwho@clinic.example", ("Carol@adv.example",), time.time(), ClientInfo("::1"))
    msg = QueuedMessage("W1", env, len(data), (RecipientStatus("Carol@adv.example"),), 0.0)
    method = Method("pgp", subject="Secure message", key=carol.fingerprint)
    result = await PgpHandler(d).render(method, msg, data, ["Carol@adv.example"])
    assert isinstance(result, Outgoing)
    assert b"Biopsy" not in result.data and b"Malignant" not in result.data
    _, payload = pgp_mime_parts(result.data)
    plain, _ = carol.decrypt(payload)
    inner = email.message_from_bytes(plain, policy=email.policy.default)
    assert inner["Subject"] == "Biopsy result for Jane Roe"
    assert inner.get_content().replace("\r\n", "\n") == "Malignant. Call me.\n"


async def test_wkd_direct_when_no_openpgpkey_host(
    tmp_path: Path,
    web: HttpsServer,
    dns_server: DnsServer,
    tls_ca_file: Path,
    people: dict[str, GpgUser],
) -> None:
    dave = people["dave"]
    web.put("direct.example", direct_path("dave"), dave.public_key(armor=True))
    d = make_directory(tmp_path, dns_server, tls_ca_file)
    assert await d.key_for("dave@direct.example") == dave.fingerprint
    assert [r.host for r in web.requests] == ["direct.example"]


async def test_advanced_host_without_key_does_not_fall_back(
    tmp_path: Path,
    web: HttpsServer,
    dns_server: DnsServer,
    tls_ca_file: Path,
    people: dict[str, GpgUser],
) -> None:
    # draft-koch-openpgp-webkey-service 3.1: direct only when the sub-domain does not exist.
    carol = people["carol"]
    dns_server.add("adv.example", "A", WEB)
    web.put("adv.example", direct_path("carol"), carol.public_key())
    d = make_directory(tmp_path, dns_server, tls_ca_file)
    assert await d.key_for("carol@adv.example") is None
    assert {r.host for r in web.requests} == {"openpgpkey.adv.example"}


async def test_key_not_naming_the_address_is_ignored(
    tmp_path: Path,
    web: HttpsServer,
    dns_server: DnsServer,
    tls_ca_file: Path,
    people: dict[str, GpgUser],
) -> None:
    web.put(
        "openpgpkey.adv.example",
        advanced_path("carol", "adv.example"),
        people["mallory"].public_key(),
    )
    d = make_directory(tmp_path, dns_server, tls_ca_file)
    assert await d.key_for("carol@adv.example") is None
    assert d.state.binding("carol@adv.example") is None


async def test_absence_is_cached_for_negative_cache(
    tmp_path: Path, web: HttpsServer, dns_server: DnsServer, tls_ca_file: Path
) -> None:
    d = make_directory(tmp_path, dns_server, tls_ca_file)
    assert await d.key_for("nobody@adv.example") is None
    count = len(web.requests)
    assert count == 1
    assert await d.key_for("nobody@adv.example") is None
    assert len(web.requests) == count
    again = make_directory(tmp_path, dns_server, tls_ca_file, negative_cache=0)
    assert await again.key_for("nobody@adv.example") is None
    assert len(web.requests) == count + 1


async def test_slow_directory_gives_none_not_an_error(
    tmp_path: Path,
    web: HttpsServer,
    dns_server: DnsServer,
    tls_ca_file: Path,
    people: dict[str, GpgUser],
    events: list[tuple[str, dict[str, Any]]],
) -> None:
    slow = people["slow"]
    web.put(
        "openpgpkey.slow.example", advanced_path("sam", "slow.example"), slow.public_key(), delay=3
    )
    d = make_directory(tmp_path, dns_server, tls_ca_file, timeout=0.5)
    assert await d.key_for("sam@slow.example") is None
    assert any(n == "pgp_wkd_failed" for n, _ in events)


async def test_unanswered_dns_gives_none(
    tmp_path: Path, dns_server: DnsServer, tls_ca_file: Path
) -> None:
    dns_server.drop("openpgpkey.dark.example")
    d = make_directory(tmp_path, dns_server, tls_ca_file, timeout=0.5)
    assert await d.key_for("x@dark.example") is None


async def test_changed_key_is_pending_not_used(
    tmp_path: Path,
    web: HttpsServer,
    dns_server: DnsServer,
    tls_ca_file: Path,
    people: dict[str, GpgUser],
    events: list[tuple[str, dict[str, Any]]],
) -> None:
    erin, erin2 = people["erin"], people["erin2"]
    path = advanced_path("erin", "change.example")
    web.put("openpgpkey.change.example", path, erin.public_key())
    d = make_directory(tmp_path, dns_server, tls_ca_file, lookup_cache=0)
    assert await d.key_for("erin@change.example") == erin.fingerprint
    # The directory now serves another key: the accepted one stays in use.
    web.put("openpgpkey.change.example", path, erin2.public_key())
    assert await d.key_for("erin@change.example") == erin.fingerprint
    pending = d.state.pending("erin@change.example")
    assert [p.fingerprint for p in pending] == [erin2.fingerprint]
    changed = [f for n, f in events if n == "pgp_key_changed"]
    assert len(changed) == 1
    assert changed[0]["address_domain"] == "change.example"
    assert changed[0]["old_fingerprint"] == erin.fingerprint
    assert changed[0]["new_fingerprint"] == erin2.fingerprint
    assert "erin@" not in str(changed[0])
    # Seen again: still pending, and the admin is not told twice.
    assert await d.key_for("erin@change.example") == erin.fingerprint
    assert len([n for n, _ in events if n == "pgp_key_changed"]) == 1
    # The new key is not in the keyring until accepted.
    assert d.keyring.get(erin2.fingerprint) is None


async def test_revoked_key_is_not_used(
    tmp_path: Path,
    web: HttpsServer,
    dns_server: DnsServer,
    tls_ca_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    fred = GpgUser.create(tmp_path_factory.mktemp("gpgf") / "fred", "fred@adv.example", "Fred")
    try:
        path = advanced_path("fred", "adv.example")
        web.put("openpgpkey.adv.example", path, fred.public_key())
        d = make_directory(tmp_path, dns_server, tls_ca_file, lookup_cache=0)
        assert await d.key_for("fred@adv.example") == fred.fingerprint
        # The next lookup refreshes the key (lookup_cache=0) and so learns of its revocation.
        web.put("openpgpkey.adv.example", path, fred.revoke())
        assert await d.key_for("fred@adv.example") is None
        info = d.keyring.get(fred.fingerprint)
        assert info is not None and info.status() == "revoked"
    finally:
        fred.close()


async def test_unvalidated_openpgpkey_record_is_ignored(
    tmp_path: Path,
    dns_server: DnsServer,
    tls_ca_file: Path,
    people: dict[str, GpgUser],
    events: list[tuple[str, dict[str, Any]]],
) -> None:
    dave = people["dave"]
    name = openpgpkey_name("dave", "direct.example")
    dns_server.add(name, "OPENPGPKEY", base64.b64encode(dave.public_key()).decode())
    d = make_directory(tmp_path, dns_server, tls_ca_file, wkd=False)
    records, authenticated = await d._discovery._resolver.openpgpkey(name)  # type: ignore[union-attr]
    assert records == [dave.public_key()]
    assert authenticated is False  # the test server is no validating resolver
    assert await d.key_for("dave@direct.example") is None
    assert any(n == "pgp_dns_unvalidated" for n, _ in events)


async def test_bad_addresses_give_none(
    tmp_path: Path, dns_server: DnsServer, tls_ca_file: Path
) -> None:
    d = make_directory(tmp_path, dns_server, tls_ca_file)
    for address in ("", "no-at-sign", "@example.org", "a@", "a b@example.org", "x@exa/mple.org"):
        assert await d.key_for(address) is None
