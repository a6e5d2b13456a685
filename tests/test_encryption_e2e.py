"""One PHI message, six recipients, each reached the way it can be: the gateway as deployed.

Sealgate runs as its own process with the shipped policy. Recipient MX hosts
are SMTP sinks found through the test DNS server; an HTTPS server on loopback
serves an MTA-STS policy and a Web Key Directory. What arrived is checked with
the tools a recipient would use: `openssl cms -decrypt`, `gpg --decrypt`, and
OpenDKIM for the signature on every copy.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import hashlib
import re
import smtplib
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.dkim import generate_key
from tests.peers import opendkim
from tests.peers.dns import DnsServer
from tests.peers.gateway import GatewayConfigFile, GatewayFactory, GatewayProcess, write_config
from tests.peers.https import HttpsServer
from tests.peers.sink import SinkFactory, SmtpSink

pytestmark = pytest.mark.slow

# This module's corner of 127.0.0.0/8.
MX_SMIME = "127.0.95.1"
MX_PGP = "127.0.95.2"
MX_TLS = "127.0.95.3"
MX_NOTLS = "127.0.95.4"
MX_BADCERT = "127.0.95.5"
MX_PLAIN = "127.0.95.6"
MX_CLINIC = "127.0.95.7"
MX_STRICT = "127.0.95.8"
WEB = "127.0.95.10"
WAIT = 90.0

SENDER = "dr.alice@clinic.test"
SMIME_RCPT = "anne@smime.test"
PGP_RCPT = "bert@pgp.test"
TLS_RCPT = "carl@tls.test"
NOTLS_RCPT = "dora@notls.test"
BADCERT_RCPT = "emil@badcert.test"
PLAIN_RCPT = "fay@plain.test"
STRICT_RCPT = "gus@strict.test"
ALL = [SMIME_RCPT, PGP_RCPT, TLS_RCPT, NOTLS_RCPT, BADCERT_RCPT, PLAIN_RCPT, STRICT_RCPT]
PHI_LINE = "Patient: Maria Lopez, DOB 03/14/1962, MRN 00482913. Diagnosis: type 2 diabetes (E11.9)."
ATTACHMENT = bytes(range(256)) * 40


def zbase32(data: bytes) -> str:
    """RFC 6189 z-base-32, as WKD names keys."""
    alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"
    bits = "".join(f"{b:08b}" for b in data)
    bits += "0" * (-len(bits) % 5)
    return "".join(alphabet[int(bits[i : i + 5], 2)] for i in range(0, len(bits), 5))


def smime_identity(directory: Path, address: str) -> tuple[Path, Path]:
    """A recipient's S/MIME certificate and key (PEM files), issued by a throwaway CA."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smime-cert.pem", directory / "smime-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def pgp_identity(home: Path, address: str) -> bytes:
    """A recipient's OpenPGP key in its own GNUPGHOME; returns the binary public key."""
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--quiet", "--pinentry-mode", "loopback"]
    subprocess.run(
        [*gpg, "--passphrase", "", "--quick-gen-key", address, "ed25519", "sign", "never"],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        [*gpg, "--with-colons", "--list-keys", address], check=True, capture_output=True, text=True
    ).stdout
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    subprocess.run(
        [*gpg, "--passphrase", "", "--quick-add-key", fpr, "cv25519", "encr", "never"],
        check=True,
        capture_output=True,
    )
    return subprocess.run([*gpg, "--export", address], check=True, capture_output=True).stdout


def phi_message() -> bytes:
    """A referral with PHI in the body and an attachment; the subject carries none."""
    msg = EmailMessage()
    msg["From"] = f"Dr Alice <{SENDER}>"
    msg["To"] = ", ".join(ALL)
    msg["Subject"] = "Referral for your review"
    msg["Date"] = "Mon, 23 Nov 2026 09:00:00 +0000"
    msg["Message-ID"] = "<enc-e2e-1@clinic.test>"
    msg.set_content(f"Hello,\n\n{PHI_LINE}\nPlease review the attached results.\n")
    msg.add_attachment(ATTACHMENT, maintype="application", subtype="octet-stream", filename="r.bin")
    return msg.as_bytes(policy=email.policy.SMTP)


@pytest.fixture
def web(tls_ca: trustme.CA) -> Iterator[HttpsServer]:
    names = ["mta-sts.tls.test", "mta-sts.strict.test", "openpgpkey.pgp.test"]
    with HttpsServer(tls_ca, names, address=WEB) as server:
        yield server


def mx(dns: DnsServer, domain: str, address: str) -> None:
    dns.add(domain, "MX", f"10 mx.{domain}.")
    dns.add(f"mx.{domain}", "A", address)


def mta_sts(dns: DnsServer, web: HttpsServer, domain: str) -> None:
    """Publish an enforcing MTA-STS policy naming the domain's MX host."""
    dns.add(f"_mta-sts.{domain}", "TXT", "v=STSv1; id=20261123")
    dns.add(f"mta-sts.{domain}", "A", WEB)
    policy = f"version: STSv1\nmode: enforce\nmx: mx.{domain}\nmax_age: 86400\n"
    web.put(f"mta-sts.{domain}", "/.well-known/mta-sts.txt", policy, content_type="text/plain")


def body_text(raw: bytes) -> str:
    """Every text part of a message, decoded."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    out = []
    for part in parsed.walk():
        if part.get_content_maintype() == "text":
            out.append(part.get_content())
    return "\n".join(out)


def attachment_of(raw: bytes) -> bytes | None:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    for part in parsed.walk():
        if part.get_filename() == "r.bin":
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else None
    return None


def keys_cli(cfg: Path, *args: str) -> None:
    subprocess.run(
        [".venv/bin/sealgate", "keys", *args, "-c", str(cfg)],
        check=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parents[1],
    )


def start_gateway(
    tmp_path: Path, dns: DnsServer, tls_ca_file: Path, gateway_factory: GatewayFactory
) -> tuple[GatewayProcess, GatewayConfigFile]:
    rsa_key, rsa_txt = generate_key(tmp_path / "keys", "clinic.test", "sg1", "rsa2048")
    ed_key, ed_txt = generate_key(tmp_path / "keys", "clinic.test", "sg2", "ed25519")
    dns.add("sg1._domainkey.clinic.test", "TXT", rsa_txt)
    dns.add("sg2._domainkey.clinic.test", "TXT", ed_txt)
    cfg = write_config(
        tmp_path / "gw",
        nameserver=dns.nameserver,
        extra={
            "delivery": {"tls_ca_file": str(tls_ca_file), "https_timeout": "5s"},
            "dkim": [
                {"domain": "clinic.test", "selector": "sg1", "key": str(rsa_key)},
                {"domain": "clinic.test", "selector": "sg2", "key": str(ed_key)},
            ],
            "portal": {"base_url": "https://portal.clinic.test", "organisation": "Clinic"},
            "encryption": {"pgp": {"openpgpkey_dns": False}},
        },
    )
    return gateway_factory(cfg), cfg


def test_each_recipient_gets_its_own_protected_copy(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
    web: HttpsServer,
    tls_ca: trustme.CA,
    tls_ca_file: Path,
) -> None:
    """S/MIME, OpenPGP (via WKD), verified TLS or the portal; never the body in clear."""
    if not opendkim.available():
        pytest.fail("opendkim-testmsg is missing; .ci/run installs opendkim-tools")
    sinks: dict[str, SmtpSink] = {}
    for domain, address in [
        ("smime.test", MX_SMIME),
        ("pgp.test", MX_PGP),
        ("plain.test", MX_PLAIN),
        ("clinic.test", MX_CLINIC),
    ]:
        mx(dns_server, domain, address)
        sinks[domain] = sink_factory(address)
    mx(dns_server, "tls.test", MX_TLS)
    sinks["tls.test"] = sink_factory(MX_TLS, tls=True, cert_names=["mx.tls.test"])
    mx(dns_server, "notls.test", MX_NOTLS)
    sinks["notls.test"] = sink_factory(MX_NOTLS)  # offers no STARTTLS at all
    mx(dns_server, "badcert.test", MX_BADCERT)
    sinks["badcert.test"] = sink_factory(MX_BADCERT, tls=True, cert_names=["mx.elsewhere.test"])
    mx(dns_server, "strict.test", MX_STRICT)
    strict = sink_factory(MX_STRICT, tls=True, cert_names=["mx.elsewhere.test"])
    for domain in ("tls.test", "strict.test"):
        mta_sts(dns_server, web, domain)

    cert, key = smime_identity(tmp_path, SMIME_RCPT)
    pgp_home = tmp_path / "bert-gnupg"
    pgp_public = pgp_identity(pgp_home, PGP_RCPT)
    dns_server.add("openpgpkey.pgp.test", "A", WEB)
    hu = zbase32(hashlib.sha1(b"bert").digest())  # noqa: S324 - the WKD naming scheme
    web.put("openpgpkey.pgp.test", f"/.well-known/openpgpkey/pgp.test/hu/{hu}", pgp_public)
    web.put("openpgpkey.pgp.test", "/.well-known/openpgpkey/pgp.test/policy", "")

    gw, cfg = start_gateway(tmp_path, dns_server, tls_ca_file, gateway_factory)
    keys_cli(cfg.path, "smime", "import", str(cert))

    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=WAIT) as client:
        client.sendmail(SENDER, ALL, phi_message())

    try:
        got = {d: s.wait_for(1, WAIT)[0] for d, s in sinks.items() if d != "clinic.test"}
    except TimeoutError:
        interesting = ("delivered", "deferred", "method_fallback", "delivery_error")
        print("\n".join(line for line in gw.log_lines() if any(i in line for i in interesting)))
        raise
    verify = opendkim.verifier(dns_server.address, tmp_path)
    for domain, received in got.items():
        assert received.rcpt_tos == [next(r for r in ALL if r.endswith("@" + domain))]
        result = verify(received.data)
        assert result.returncode == 0, f"{domain}: {result.stderr.decode()}"

    # S/MIME: only the recipient's key opens it; inside is the original.
    smime_copy = got["smime.test"].data
    assert PHI_LINE not in smime_copy.decode("latin-1")
    (tmp_path / "smime.eml").write_bytes(smime_copy)
    inner = subprocess.run(
        [
            "openssl",
            "cms",
            "-decrypt",
            "-in",
            str(tmp_path / "smime.eml"),
            "-recip",
            str(cert),
            "-inkey",
            str(key),
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert PHI_LINE in body_text(inner)
    assert attachment_of(inner) == ATTACHMENT

    # OpenPGP with the key found through WKD.
    pgp_copy = got["pgp.test"].data
    assert b"multipart/encrypted" in pgp_copy and PHI_LINE.encode() not in pgp_copy
    parsed = email.message_from_bytes(pgp_copy, policy=email.policy.default)
    armored = parsed.get_payload()[1].get_payload(decode=True)  # type: ignore[index,union-attr]
    assert isinstance(armored, bytes)
    clear = subprocess.run(
        ["gpg", "--homedir", str(pgp_home), "--batch", "--quiet", "--decrypt"],
        input=armored,
        check=True,
        capture_output=True,
    ).stdout
    assert PHI_LINE in body_text(clear)
    assert attachment_of(clear) == ATTACHMENT

    # Verified TLS: the MX named by the enforcing MTA-STS policy gets the original over TLS.
    tls_copy = got["tls.test"]
    assert tls_copy.tls_info is not None
    assert PHI_LINE in body_text(tls_copy.data)

    # No STARTTLS, a wrong certificate, or no way to verify TLS at all: a portal notification.
    for domain in ("notls.test", "badcert.test", "plain.test"):
        notice = got[domain].data
        assert PHI_LINE.encode() not in notice
        assert b"Referral for your review" not in notice
        assert b"r.bin" not in notice
        assert re.search(rb"https://portal\.clinic\.test/m/[A-Za-z0-9_-]{22,}", notice), domain

    # The sender learns which recipients read it in the portal.
    (sender_notice,) = sinks["clinic.test"].wait_for(1, WAIT)
    text = body_text(sender_notice.data)
    for rcpt in (NOTLS_RCPT, BADCERT_RCPT, PLAIN_RCPT):
        assert rcpt in text
    assert PHI_LINE not in text

    delivered = gw.wait_for_event("delivered", WAIT, count=len(ALL))
    methods = {e["rcpt"]: e["method"] for e in delivered if e["rcpt"] in ALL}
    assert methods == {
        SMIME_RCPT: "smime",
        PGP_RCPT: "pgp",
        TLS_RCPT: "tls",
        NOTLS_RCPT: "portal",
        BADCERT_RCPT: "portal",
        PLAIN_RCPT: "portal",
    }
    # MTA-STS enforce promised verified TLS, the MX failed it: the copy turned into a
    # portal deposit, and even its notice waits, since the domain's policy forbids any
    # delivery to a host that fails it (RFC 8461). The MX saw nothing.
    (fallback,) = gw.events("method_fallback")
    assert fallback["rcpt"] == STRICT_RCPT and fallback["method"] == "portal"
    (deferred,) = gw.wait_for_event("deferred", WAIT)
    assert deferred["rcpt"] == STRICT_RCPT and deferred["reason"].startswith("4.7.5")
    assert strict.messages == []
    assert PHI_LINE not in gw.log_text()
