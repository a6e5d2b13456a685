"""S/MIME through the real gateway: PHI to a recipient with a known certificate arrives encrypted.

The certificate is imported with `sealgate keys smime import` while the gateway
runs, or learned from a signed message that passed through; the MX host is an
SMTP sink; `openssl cms -decrypt` with the recipient's key recovers the original.
"""

from __future__ import annotations

import email
import email.policy
import os
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.peers.dns import DnsServer
from tests.peers.gateway import REPO, GatewayConfigFile, GatewayFactory, write_config
from tests.peers.sink import SinkFactory
from tests.smime_certs import Issued, issue, openssl

# This module's corner of 127.0.0.0/8.
MX_PARTNER = "127.0.84.2"
MX_CLINIC = "127.0.84.3"
WAIT = 90.0
SENDER = "dr.alice@clinic.example"
RCPT = "bob@partner.example"
SSN = "219-09-9999"
# The shipped policy refuses PHI in a subject at DATA time; an ordinary subject
# stays visible outside the encryption (the neutral-subject case is in test_smime_stage).
SUBJECT = "Referral for cardiology review"
BODY = (
    "Dear Dr Bob,\r\n\r\n"
    f"I am referring my patient Margaret Thornton (DOB 04/12/1958, SSN {SSN}, "
    "MRN 00482913) for cardiology review.\r\n"
    "Diagnosis: type 2 diabetes mellitus (E11.9) with essential hypertension (I10).\r\n"
    "Current medication: metformin 500 mg twice daily.\r\n\r\nDr Alice\r\n"
)


def message(subject: str = SUBJECT, body: str = BODY) -> bytes:
    headers = [
        f"From: Dr Alice <{SENDER}>",
        f"To: Bob <{RCPT}>",
        f"Subject: {subject}",
        "Date: Mon, 23 Nov 2026 09:00:00 +0000",
        f"Message-ID: <smime-{time.monotonic_ns()}@clinic.example>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def send(cfg: GatewayConfigFile, data: bytes, sender: str = SENDER, rcpt: str = RCPT) -> None:
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=WAIT) as client:
        client.ehlo("client.clinic.example")
        client.sendmail(sender, [rcpt], data)


def sealgate(cfg: GatewayConfigFile, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args, "-c", str(cfg.path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=WAIT,
        check=False,
    )


def setup(tmp_path: Path, dns: DnsServer) -> GatewayConfigFile:
    dns.add("partner.example", "MX", "10 mx.partner.example.")
    dns.add("mx.partner.example", "A", MX_PARTNER)
    dns.add("clinic.example", "MX", "10 mx.clinic.example.")
    dns.add("mx.clinic.example", "A", MX_CLINIC)
    return write_config(
        tmp_path / "gw",
        nameserver=dns,
        extra={
            "policy": {"workers": 1},
            "delivery": {"retry": {"first": "1s", "max_backoff": "2s"}},
            # Only S/MIME, so that nothing else can carry the message.
            "encryption": {"preference": ["smime"]},
        },
    )


def check_decrypts(data: bytes, bob: Issued, tmp_path: Path) -> None:
    cert_path, key_path = bob.write(tmp_path, "bob")
    assert b"Thornton" not in data and SSN.encode() not in data and b"E11.9" not in data
    outer = email.message_from_bytes(data, policy=email.policy.default)
    assert outer.get_content_type() == "application/pkcs7-mime"
    assert outer["Subject"] == SUBJECT
    inner_bytes = openssl(
        "cms", "-decrypt", "-recip", str(cert_path), "-inkey", str(key_path), data=data
    )
    inner = email.message_from_bytes(inner_bytes, policy=email.policy.default)
    assert inner["Subject"] == SUBJECT
    body = inner.get_body(("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == BODY.replace("\r\n", "\n")


@pytest.mark.slow
def test_phi_to_known_certificate_arrives_encrypted(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
) -> None:
    sink = sink_factory(MX_PARTNER)
    cfg = setup(tmp_path, dns_server)
    gateway_factory(cfg)
    bob = issue(RCPT)
    (tmp_path / "bob-import.pem").write_bytes(bob.pem)
    # Imported while the gateway runs.
    r = sealgate(cfg, "keys", "smime", "import", str(tmp_path / "bob-import.pem"))
    assert r.returncode == 0, r.stderr

    send(cfg, message())
    (got,) = sink.wait_for(1, WAIT)
    check_decrypts(got.data, bob, tmp_path)


@pytest.mark.slow
def test_certificate_learned_from_signed_mail_is_used(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
) -> None:
    sink_factory(MX_CLINIC)
    sink = sink_factory(MX_PARTNER)
    cfg = setup(tmp_path, dns_server)
    gw = gateway_factory(cfg)
    bob = issue(RCPT)
    cert_path, key_path = bob.write(tmp_path, "bob")
    (tmp_path / "note").write_bytes(b"Content-Type: text/plain\r\n\r\nThanks, will do.\r\n")
    args = ["-signer", str(cert_path), "-inkey", str(key_path), "-crlfeol"]
    headers = ["-from", RCPT, "-to", SENDER, "-subject", "Re: hello"]
    signed = openssl("cms", "-sign", "-in", str(tmp_path / "note"), *args, *headers)
    # openssl ends the base64 signature lines with bare LF; SMTP wants CRLF throughout.
    signed = signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    # Bob's signed reply passes through the gateway (to the clinic).
    send(cfg, signed, sender=RCPT, rcpt=SENDER)
    gw.wait_for_event("smime_harvested", WAIT)

    send(cfg, message())
    (got,) = sink.wait_for(1, WAIT)
    check_decrypts(got.data, bob, tmp_path)
