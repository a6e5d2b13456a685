"""Harvesting certificates from mail signed by `openssl cms -sign`: only verified signers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config import SmimeConfig
from gateway.smime import SmimeDirectory
from gateway.smime.harvest import Signed, harvest, signatures, verified_signers
from tests.smime_certs import DAY, NOW, Issued, ec_key, issue, openssl, rsa_key

ANN = "ann@mail.example"
CONTENT = (
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b"Results attached, see you Tuesday.\r\n"
)


def sign(
    tmp_path: Path,
    signer: Issued,
    *extra: str,
    sender: str = ANN,
    content: bytes = CONTENT,
) -> bytes:
    """A message signed by signer with openssl, From sender (S/MIME headers from openssl)."""
    cert_path, key_path = signer.write(tmp_path, "signer")
    (tmp_path / "content").write_bytes(content)
    return openssl(
        "cms",
        "-sign",
        "-in",
        str(tmp_path / "content"),
        "-signer",
        str(cert_path),
        "-inkey",
        str(key_path),
        "-from",
        sender,
        "-to",
        "dr@clinic.example",
        "-subject",
        "Re: appointment",
        "-crlfeol",
        *extra,
    )


@pytest.fixture
def ann() -> Issued:
    return issue(ANN)


def learn(tmp_path: Path, data: bytes, **cfg: object) -> tuple[int, SmimeDirectory]:
    directory = SmimeDirectory(tmp_path / "data", SmimeConfig(**cfg))  # type: ignore[arg-type]
    return directory.learn(data), directory


def test_detached_signature_is_harvested(tmp_path: Path, ann: Issued) -> None:
    data = sign(tmp_path, ann)
    assert b"multipart/signed" in data
    new, directory = learn(tmp_path, data)
    assert new == 1
    assert directory.cert_for(ANN) == ann.fingerprint
    assert directory.learn(data) == 0  # known already
    entry = directory.store.read_index()[ann.fingerprint]
    assert entry.source == "harvest"


def test_opaque_signed_data_is_harvested(tmp_path: Path, ann: Issued) -> None:
    data = sign(tmp_path, ann, "-nodetach")
    assert b"smime-type=signed-data" in data
    new, directory = learn(tmp_path, data)
    assert new == 1 and directory.cert_for(ANN) == ann.fingerprint


def test_lf_line_ends_and_nested_signed_part(tmp_path: Path, ann: Issued) -> None:
    # A gateway upstream wrapped the signed message in multipart/mixed (a disclaimer, say);
    # the file was stored with LF line ends.
    signed = sign(tmp_path, ann)
    head, body = signed.split(b"\r\n\r\n", 1)
    ctype = next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Type"))
    wrapped = (
        f"From: {ANN}\nTo: dr@clinic.example\nSubject: x\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="outer-b"\n\n'
        "--outer-b\n"
    ).encode()
    wrapped += ctype + b"\n\n" + body.replace(b"\r\n", b"\n")
    wrapped += b"\n--outer-b\nContent-Type: text/plain\n\nDisclaimer.\n--outer-b--\n"
    assert len(list(signatures(wrapped))) == 1
    new, directory = learn(tmp_path, wrapped)
    assert new == 1 and directory.cert_for(ANN) == ann.fingerprint


def test_rsa_pss_signature_verifies(tmp_path: Path, ann: Issued) -> None:
    data = sign(tmp_path, ann, "-keyopt", "rsa_padding_mode:pss")
    assert [c.subject for c in harvest(data)] == [ann.cert.subject]


def test_tampered_content_is_not_harvested(tmp_path: Path, ann: Issued) -> None:
    data = sign(tmp_path, ann)
    forged = data.replace(b"see you Tuesday", b"see you Thursday")
    assert forged != data
    new, directory = learn(tmp_path, forged)
    assert new == 0 and directory.cert_for(ANN) is None


def test_certificate_that_did_not_sign_is_not_harvested(tmp_path: Path, ann: Issued) -> None:
    # Mallory signs mail claiming to be from Ann and puts Ann's certificate beside her own:
    # Ann's did not sign, Mallory's does not name the From address. Nothing is learned.
    mallory = issue("mallory@mail.example", key=rsa_key(2048, 9))
    ann_path, _ = ann.write(tmp_path, "ann")
    data = sign(tmp_path, mallory, "-certfile", str(ann_path), sender=ANN)
    assert [c.subject for c in harvest_any(data)] == [mallory.cert.subject]
    new, directory = learn(tmp_path, data)
    assert new == 0
    assert directory.cert_for(ANN) is None
    assert directory.cert_for("mallory@mail.example") is None


def harvest_any(data: bytes) -> list[object]:
    """Every verified signer, whatever the From address."""
    return [c for s in signatures(data) for c in verified_signers(s)]


def test_signer_for_another_address_is_not_harvested(tmp_path: Path, ann: Issued) -> None:
    data = sign(tmp_path, ann, sender="bo@mail.example")
    new, directory = learn(tmp_path, data)
    assert new == 0
    assert directory.cert_for(ANN) is None and directory.cert_for("bo@mail.example") is None


def test_extra_certificates_are_not_harvested(tmp_path: Path, ann: Issued) -> None:
    cy = issue("cy@mail.example", key=rsa_key(2048, 10))
    cy_path, _ = cy.write(tmp_path, "cy")
    data = sign(tmp_path, ann, "-certfile", str(cy_path))
    new, directory = learn(tmp_path, data)
    assert new == 1
    assert directory.cert_for(ANN) == ann.fingerprint
    assert directory.cert_for("cy@mail.example") is None


def test_sha1_signature_is_not_evidence(tmp_path: Path, ann: Issued) -> None:
    data = sign(tmp_path, ann, "-md", "sha1")
    assert harvest(data) == []


def test_unusable_signer_certificates_are_not_stored(tmp_path: Path) -> None:
    expired = issue(ANN, key=rsa_key(2048, 11), not_before=NOW - 9 * DAY, not_after=NOW - DAY)
    data = sign(tmp_path, expired, "-noverify")
    assert len(harvest(data)) == 1  # the signature is good
    assert learn(tmp_path, data)[0] == 0  # but the certificate cannot encrypt any more
    # An EC signer: its ECDSA signature verifies, but the store keeps RSA keys only.
    ec_signer = issue(ANN, key=ec_key())
    data = sign(tmp_path, ec_signer)
    assert [c.subject for c in harvest(data)] == [ec_signer.cert.subject]
    assert learn(tmp_path, data)[0] == 0


def test_harvest_switched_off(tmp_path: Path, ann: Issued) -> None:
    data = sign(tmp_path, ann)
    new, directory = learn(tmp_path, data, harvest=False)
    assert new == 0 and directory.cert_for(ANN) is None
    assert not (tmp_path / "data" / "keys").exists()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"From: ann@mail.example\r\n\r\nplain\r\n",
        b"From: ann@mail.example\r\nContent-Type: multipart/signed; "
        b'protocol="application/pkcs7-signature"; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b\r\n'
        b"Content-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\nAAAA!!\r\n--b--\r\n",
        b"From: ann@mail.example\r\nContent-Type: application/pkcs7-mime; "
        b"smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIIBAAAA\r\n",
        b"From: ann@mail.example\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
    ],
)
def test_malformed_input_learns_nothing(tmp_path: Path, data: bytes) -> None:
    new, _ = learn(tmp_path, data)
    assert new == 0


def test_garbage_cms_is_not_an_error() -> None:
    assert verified_signers(Signed(b"\x30\x03\x02\x01\x01", b"x")) == []
    assert verified_signers(Signed(b"junk", None)) == []


def test_harvest_event_is_logged_without_content(
    tmp_path: Path, ann: Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway import log

    log.setup("info")
    try:
        learn(tmp_path, sign(tmp_path, ann))
    finally:
        log.stop()
    err = capsys.readouterr().err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    harvested = [e for e in events if e["event"] == "smime_harvested"]
    assert harvested and harvested[0]["fingerprint"] == ann.fingerprint
    assert "Tuesday" not in err
