"""An independent verifier: OpenDKIM's opendkim-testmsg checks our signatures."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import dkim
from gateway.config import DkimKey
from tests.peers import opendkim
from tests.peers.dns import DnsServer
from tests.peers.opendkim import TestMsg

MESSAGE = (
    b"From: Dr Alice <alice@clinic.example>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Cc: lab@clinic.example\r\n"
    b"Subject: Results  are\r\n ready\r\n"
    b"Date: Mon, 1 Jan 2024 09:00:00 +0000\r\n"
    b"Message-ID: <1@clinic.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Hello Bob,  \r\n" + "Grüße — the results are in the portal.\r\n".encode() + b"\r\n\r\n"
)

pytestmark = pytest.mark.skipif(
    not opendkim.available(), reason="opendkim-testmsg missing: apt-get install opendkim-tools"
)


@pytest.fixture
def keys(tmp_path: Path, dns_server: DnsServer) -> dict[str, DkimKey]:
    """An RSA and an Ed25519 key for clinic.example, published in the test DNS."""
    out = {}
    choices: tuple[tuple[str, dkim.Algorithm], ...] = (("rsa1", "rsa2048"), ("ed1", "ed25519"))
    for selector, algorithm in choices:
        path, value = dkim.generate_key(tmp_path, "clinic.example", selector, algorithm)
        dns_server.add(f"{selector}._domainkey.clinic.example", "TXT", value)
        out[selector] = DkimKey(domain="clinic.example", selector=selector, key=path)
    return out


@pytest.fixture
def testmsg(tmp_path: Path, dns_server: DnsServer) -> TestMsg:
    """Run opendkim-testmsg (verify mode) with the test DNS server as its resolver."""
    if dns_server.port != 53:
        pytest.skip("resolv.conf can only name a server on port 53")
    try:
        return opendkim.verifier(dns_server.address, tmp_path)
    except opendkim.CannotIsolate as exc:
        pytest.skip(f"cannot make a private mount namespace here: {exc}")


@pytest.mark.parametrize("selector", ["rsa1", "ed1"])
def test_opendkim_verifies_our_signature(
    keys: dict[str, DkimKey],
    testmsg: TestMsg,
    dns_server: DnsServer,
    selector: str,
) -> None:
    signed = dkim.DkimSigner([keys[selector]]).sign(MESSAGE, "alice@clinic.example")
    result = testmsg(signed)
    assert result.returncode == 0, result.stderr.decode()
    # The key really came from our DNS server, not from a cache or elsewhere.
    assert any(q.name == f"{selector}._domainkey.clinic.example." for q in dns_server.queries)
    # The same message as a Unix mailbox would store it (LF line endings).
    lf = dkim.DkimSigner([keys[selector]]).sign(MESSAGE.replace(b"\r\n", b"\n"), "")
    result = testmsg(lf)
    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.parametrize("selector", ["rsa1", "ed1"])
def test_opendkim_rejects_tampering(
    keys: dict[str, DkimKey],
    testmsg: TestMsg,
    selector: str,
) -> None:
    signed = dkim.DkimSigner([keys[selector]]).sign(MESSAGE, "alice@clinic.example")
    body = testmsg(signed.replace(b"portal", b"p0rtal"))
    assert body.returncode != 0
    assert b"signature" in body.stderr.lower()
    added_from = testmsg(b"From: Mallory <ceo@clinic.example>\r\n" + signed)
    assert added_from.returncode != 0


def test_opendkim_dual_signed_message(
    keys: dict[str, DkimKey],
    testmsg: TestMsg,
    dns_server: DnsServer,
) -> None:
    signer = dkim.DkimSigner([keys["rsa1"], keys["ed1"]])
    result = testmsg(signer.sign(MESSAGE, "alice@clinic.example"))
    assert result.returncode == 0, result.stderr.decode()
