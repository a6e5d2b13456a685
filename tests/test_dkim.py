"""DKIM signing, checked by dkimpy's verifier; key loading and generation."""

from __future__ import annotations

import base64
import hashlib
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import dkim
from gateway.config import DkimKey

DNS = Callable[..., bytes | None]

MESSAGE = (
    b"Received: from app.clinic.example by gw\r\n"
    b"From: Dr Alice <alice@clinic.example>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Results   are\r\n\tready\r\n"
    b"Date: Mon, 1 Jan 2024 09:00:00 +0000\r\n"
    b"Message-ID: <1@clinic.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob,  \r\n"
    b"\tyour results are in the portal.\r\n"
    b"\r\n\r\n"
)


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One RSA and one Ed25519 key for clinic.example, made once for the module."""
    data = tmp_path_factory.mktemp("data")
    dkim.generate_key(data, "clinic.example", "rsa1", "rsa2048")
    dkim.generate_key(data, "clinic.example", "ed1", "ed25519")
    dkim.generate_key(data, "bounces.example", "b1", "ed25519")
    return data / "dkim"


def key(keydir: Path, domain: str, selector: str) -> DkimKey:
    return DkimKey(domain=domain, selector=selector, key=keydir / f"{domain}.{selector}.key")


@pytest.fixture(scope="module")
def dns(keydir: Path) -> DNS:
    """A dkimpy dnsfunc answering with the published form of every key in keydir."""
    records: dict[bytes, bytes] = {}
    for path in keydir.glob("*.key"):
        domain, selector = path.name.removesuffix(".key").rsplit(".", 1)
        value = dkim.dns_txt_value(dkim.load_private_key(path))
        records[f"{selector}._domainkey.{domain}.".encode()] = value.encode()

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return lookup


def verify_all(message: bytes, dns: DNS) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature of message, top to bottom."""
    d = dkimpy.DKIM(message)
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    results = []
    for i in range(count):
        try:
            results.append(bool(dkimpy.DKIM(message).verify(idx=i, dnsfunc=dns)))
        except dkimpy.NaClNotFoundError:
            raise  # dkimpy verifies Ed25519 only with PyNaCl installed: a setup problem
        except dkimpy.DKIMException:
            results.append(False)
    return results


def sig_tags(message: bytes) -> list[dict[bytes, bytes]]:
    d = dkimpy.DKIM(message)
    out = []
    for name, value in d.headers:
        if name.lower() == b"dkim-signature":
            unfolded = re.sub(rb"\s+", b"", value)
            out.append(dkimpy.util.parse_tag_value(unfolded))
    return out


@pytest.mark.parametrize("selector", ["rsa1", "ed1"])
def test_signature_verifies_with_dkimpy(keydir: Path, dns: DNS, selector: str) -> None:
    signer = dkim.DkimSigner([key(keydir, "clinic.example", selector)])
    signed = signer.sign(MESSAGE, "alice@clinic.example")
    assert signed.endswith(MESSAGE)
    assert signed.startswith(b"DKIM-Signature: v=1; ")
    assert verify_all(signed, dns) == [True]
    (tags,) = sig_tags(signed)
    expected_alg = b"rsa-sha256" if selector == "rsa1" else b"ed25519-sha256"
    assert tags[b"a"] == expected_alg
    assert tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == b"clinic.example"
    assert tags[b"s"] == selector.encode()
    assert b"t" in tags
    assert b"l" not in tags  # a body length limit would let anyone append content


def test_both_keys_of_a_domain_sign(keydir: Path, dns: DNS) -> None:
    signer = dkim.DkimSigner(
        [key(keydir, "clinic.example", "rsa1"), key(keydir, "clinic.example", "ed1")]
    )
    signed = signer.sign(MESSAGE, "alice@clinic.example")
    assert [t[b"a"] for t in sig_tags(signed)] == [b"rsa-sha256", b"ed25519-sha256"]
    assert verify_all(signed, dns) == [True, True]


def test_from_and_visible_headers_are_oversigned(keydir: Path, dns: DNS) -> None:
    signer = dkim.DkimSigner([key(keydir, "clinic.example", "rsa1")])
    signed = signer.sign(MESSAGE, "alice@clinic.example")
    (tags,) = sig_tags(signed)
    h = tags[b"h"].split(b":")
    assert h.count(b"from") == 2
    for name in (b"subject", b"to", b"date", b"message-id", b"content-type"):
        assert h.count(name) == 2, name
    assert h.count(b"reply-to") == 1 and h.count(b"cc") == 1  # absent, so none may be added
    assert b"received" not in h

    # Each of these additions changes what a reader sees; each must break the signature.
    head, _, body = signed.partition(b"\r\n\r\n")
    for extra in (
        b"From: Mallory <ceo@clinic.example>",
        b"Reply-To: mallory@evil.example",
        b"Subject: Urgent: wire transfer",
        b"Cc: mallory@evil.example",
    ):
        for tampered in (head + b"\r\n" + extra, extra + b"\r\n" + head):
            assert verify_all(tampered + b"\r\n\r\n" + body, dns) == [False], extra
    # Headers a relay legitimately adds do not.
    relayed = b"Received: from gw by mx.example.net\r\n" + signed
    assert verify_all(relayed, dns) == [True]


@pytest.mark.parametrize("selector", ["rsa1", "ed1"])
def test_tampered_body_or_header_fails(keydir: Path, dns: DNS, selector: str) -> None:
    signer = dkim.DkimSigner([key(keydir, "clinic.example", selector)])
    signed = signer.sign(MESSAGE, "alice@clinic.example")
    assert verify_all(signed.replace(b"portal", b"p0rtal"), dns) == [False]
    assert verify_all(signed.replace(b"To: Bob", b"To: Eve"), dns) == [False]
    # Relaxed canonicalisation tolerates whitespace changes in transit.
    rewrapped = signed.replace(b"Hello Bob,  ", b"Hello  Bob,")
    assert verify_all(rewrapped, dns) == [True]


@pytest.mark.parametrize("selector", ["rsa1", "ed1"])
def test_lf_message_and_eight_bit_body(keydir: Path, dns: DNS, selector: str) -> None:
    signer = dkim.DkimSigner([key(keydir, "clinic.example", selector)])
    body = "Grüße, café, 日本語\r\n".encode() + b"latin-1: \xe9\xe8\r\n"
    crlf = MESSAGE.replace(b"\r\n\r\nHello", b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHello")
    crlf += body
    signed = signer.sign(crlf, "alice@clinic.example")
    assert verify_all(signed, dns) == [True]

    lf = crlf.replace(b"\r\n", b"\n")
    signed_lf = signer.sign(lf, "alice@clinic.example")
    assert signed_lf.endswith(lf)
    assert b"\r" not in signed_lf  # the new field follows the message's line ending
    assert verify_all(signed_lf, dns) == [True]
    # What an SMTP client puts on the wire (CRLF) verifies too.
    assert verify_all(signed_lf.replace(b"\n", b"\r\n"), dns) == [True]


def test_message_without_final_newline(keydir: Path, dns: DNS) -> None:
    signer = dkim.DkimSigner([key(keydir, "clinic.example", "ed1")])
    signed = signer.sign(MESSAGE.rstrip(b"\r\n") + b" tail", "alice@clinic.example")
    # SMTP ends DATA with CRLF; receivers see (and hash) that.
    assert verify_all(signed + b"\r\n", dns) == [True]


def test_empty_body(keydir: Path, dns: DNS) -> None:
    signer = dkim.DkimSigner([key(keydir, "clinic.example", "rsa1")])
    head = MESSAGE.partition(b"\r\n\r\n")[0]
    for message in (head + b"\r\n\r\n", head + b"\r\n"):
        assert verify_all(signer.sign(message, ""), dns) == [True]


def test_key_choice_from_header_then_envelope(keydir: Path, dns: DNS) -> None:
    signer = dkim.DkimSigner(
        [key(keydir, "clinic.example", "ed1"), key(keydir, "bounces.example", "b1")]
    )
    # The From: domain wins over the envelope sender (DMARC aligns on From:).
    signed = signer.sign(MESSAGE, "bounce+123@bounces.example")
    assert [t[b"d"] for t in sig_tags(signed)] == [b"clinic.example"]
    # No key for the From: domain: sign for the envelope sender's domain.
    other = MESSAGE.replace(b"alice@clinic.example", b"alice@partner.example")
    signed = signer.sign(other, "bounce+123@bounces.example")
    assert [t[b"d"] for t in sig_tags(signed)] == [b"bounces.example"]
    assert verify_all(signed, dns) == [True]
    # Neither has a key, or the null sender: unchanged.
    assert signer.sign(other, "x@partner.example") == other
    assert signer.sign(other, "") == other
    # A parent domain's key does not sign a subdomain (exact match only).
    sub = MESSAGE.replace(b"alice@clinic.example", b"alice@lab.clinic.example")
    assert signer.sign(sub, "alice@lab.clinic.example") == sub
    # Domain case and a trailing dot do not matter.
    upper = MESSAGE.replace(b"alice@clinic.example", b"Alice@CLINIC.Example.")
    assert [t[b"d"] for t in sig_tags(signer.sign(upper, ""))] == [b"clinic.example"]


def test_no_keys_and_malformed_messages_are_passed_through(keydir: Path) -> None:
    assert dkim.DkimSigner([]).sign(MESSAGE, "alice@clinic.example") == MESSAGE
    signer = dkim.DkimSigner([key(keydir, "clinic.example", "ed1")])
    for bad in (
        b"\r\nbody only\r\n",
        b"not a header line\r\nFrom: alice@clinic.example\r\n\r\nbody\r\n",
        b"  continuation first\r\nFrom: alice@clinic.example\r\n\r\nbody\r\n",
    ):
        assert signer.sign(bad, "alice@clinic.example") == bad


def test_existing_signatures_are_kept_and_not_signed(keydir: Path, dns: DNS) -> None:
    upstream = dkim.DkimSigner([key(keydir, "bounces.example", "b1")])
    first = upstream.sign(MESSAGE.replace(b"clinic.example>", b"bounces.example>"), "")
    ours = dkim.DkimSigner([key(keydir, "clinic.example", "rsa1")]).sign(
        first, "alice@clinic.example"
    )
    assert verify_all(ours, dns) == [True, True]
    assert b"dkim-signature" not in sig_tags(ours)[0][b"h"]


# --- canonicalisation ---------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from([b" ", b"\t", b"\r\n", b"\n", b"a", b"\xc3\xa9", b" \t ", b"\r\n\r\n"]),
        max_size=40,
    )
)
def test_body_hash_matches_dkimpy_canonicalisation(parts: list[bytes]) -> None:
    body = b"".join(parts)
    # dkimpy's parser turns every line ending into CRLF; SMTP adds a final one.
    wire = re.sub(rb"\r?\n", b"\r\n", body)
    if wire and not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    expected = hashlib.sha256(Relaxed.canonicalize_body(wire)).digest()
    assert dkim._body_hash(body) == expected


# --- keys ----------------------------------------------------------------------


def test_generate_key_writes_private_pem_and_refuses_overwrite(tmp_path: Path) -> None:
    path, value = dkim.generate_key(tmp_path, "Clinic.Example.", "sg1", "rsa2048")
    assert path == tmp_path / "dkim" / "clinic.example.sg1.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    private = dkim.load_private_key(path)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    assert value.startswith("v=DKIM1; k=rsa; p=MII")
    der = base64.b64decode(value.split("p=")[1])
    published = serialization.load_der_public_key(der)
    assert isinstance(published, rsa.RSAPublicKey)
    assert published.public_numbers() == private.public_key().public_numbers()

    before = path.read_bytes()
    with pytest.raises(dkim.DkimKeyError, match="already exists"):
        dkim.generate_key(tmp_path, "clinic.example", "sg1", "ed25519")
    assert path.read_bytes() == before
    path2, value2 = dkim.generate_key(tmp_path, "clinic.example", "sg1", "ed25519", force=True)
    assert path2 == path and path.read_bytes() != before
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", value2)


@pytest.mark.parametrize(
    ("domain", "selector"),
    [("../etc", "s1"), ("clinic.example", "../s1"), ("clinic", "s1"), ("a/b.example", "s")],
)
def test_generate_key_rejects_unsafe_names(tmp_path: Path, domain: str, selector: str) -> None:
    with pytest.raises(dkim.DkimKeyError):
        dkim.generate_key(tmp_path, domain, selector, "ed25519")
    assert not (tmp_path / "dkim").exists() or not any((tmp_path / "dkim").iterdir())


def test_key_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    with pytest.raises(dkim.DkimKeyError, match=re.escape(str(missing))):
        dkim.DkimSigner([DkimKey(domain="clinic.example", selector="s", key=missing)])
    garbage = tmp_path / "garbage.key"
    garbage.write_text("hello\n")
    with pytest.raises(dkim.DkimKeyError, match=re.escape(str(garbage))):
        dkim.DkimSigner([DkimKey(domain="clinic.example", selector="s", key=garbage)])
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(dkim.DkimKeyError, match="encrypted"):
        dkim.load_private_key(encrypted)


def test_short_rsa_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.key"
    subprocess.run(["openssl", "genrsa", "-out", str(path), "768"], check=True, capture_output=True)
    with pytest.raises(dkim.DkimKeyError, match="too short"):
        dkim.load_private_key(path)


def test_keys_from_other_tools_load(tmp_path: Path, dns: DNS) -> None:
    # opendkim-genkey writes PKCS#1 ("BEGIN RSA PRIVATE KEY"); dkimpy's dknewkey
    # writes an Ed25519 key as the base64 of its 32-byte seed.
    pkcs1 = tmp_path / "pkcs1.key"
    pkcs1.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    assert isinstance(dkim.load_private_key(pkcs1), rsa.RSAPrivateKey)
    seed = ed25519.Ed25519PrivateKey.generate()
    raw = seed.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    seed_file = tmp_path / "seed.key"
    seed_file.write_bytes(base64.b64encode(raw) + b"\n")
    loaded = dkim.load_private_key(seed_file)
    assert dkim.dns_txt_value(loaded) == dkim.dns_txt_value(seed)
