"""already_encrypted: mail the sender encrypted (real gpg and openssl output) passes as it is."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.outbound.encrypted import already_encrypted
from gateway.smime.harvest import harvest
from tests.smime_certs import issue, openssl

HEAD = b"From: dr@clinic.example\r\nTo: ann@mail.example\r\nSubject: results\r\n"
TEXT = b"Diagnosis: E11.9\r\n"


@pytest.fixture(scope="module")
def armoured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bytes]:
    """A PGP MESSAGE made by gpg for a throwaway key."""
    home = tmp_path_factory.mktemp("gnupg")
    os.chmod(home, 0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    gpg = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(
        [*gpg, "--quick-gen-key", "ann@mail.example", "future-default", "default", "1d"],
        env=env,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [*gpg, "--armor", "--trust-model", "always", "--encrypt", "-r", "ann@mail.example"],
        input=TEXT,
        env=env,
        check=True,
        capture_output=True,
    ).stdout
    try:
        yield out.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False, capture_output=True)


@pytest.fixture(scope="module")
def smime(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A recipient certificate and key as files for openssl."""
    return issue("ann@mail.example").write(tmp_path_factory.mktemp("smime"), "ann")


def pgp_mime(armour: bytes) -> bytes:
    return HEAD + (
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        b' boundary="enc-b"\r\n'
        b"\r\n"
        b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n"
        b"--enc-b\r\n"
        b"Content-Type: application/pgp-encrypted\r\n"
        b"Content-Description: PGP/MIME version identification\r\n"
        b"\r\n"
        b"Version: 1\r\n"
        b"\r\n"
        b"--enc-b\r\n"
        b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
        b'Content-Disposition: inline; filename="encrypted.asc"\r\n'
        b"\r\n" + armour + b"\r\n"
        b"--enc-b--\r\n"
    )


def test_pgp_mime(armoured: bytes) -> None:
    assert already_encrypted(pgp_mime(armoured)) == "pgp"


def test_pgp_mime_with_plaintext_inside_is_not_encrypted(armoured: bytes) -> None:
    assert already_encrypted(pgp_mime(TEXT)) is None
    # An armour block with plaintext after it.
    assert already_encrypted(pgp_mime(armoured + b"\r\n" + TEXT)) is None
    # Truncated: no closing delimiter.
    assert already_encrypted(pgp_mime(armoured).rsplit(b"--enc-b--", 1)[0]) is None
    # Another protocol.
    other = pgp_mime(armoured).replace(b'application/pgp-encrypted"', b'application/x-other"')
    assert already_encrypted(other) is None


def test_inline_pgp(armoured: bytes) -> None:
    plain = HEAD + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + armoured
    assert already_encrypted(plain) == "pgp"
    assert already_encrypted(HEAD + b"\r\n\r\n" + armoured + b"\r\n\r\n") == "pgp"
    b64 = base64.encodebytes(armoured).replace(b"\n", b"\r\n")
    encoded = HEAD + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64
    assert already_encrypted(encoded) == "pgp"
    # Text around the block: the text is not encrypted.
    assert already_encrypted(HEAD + b"\r\nHello,\r\n" + armoured) is None
    assert already_encrypted(HEAD + b"\r\n" + armoured + b"Regards\r\n") is None
    # An armoured message attached to a plain one is not the whole message.
    html = HEAD + b"Content-Type: text/html\r\n\r\n" + armoured
    assert already_encrypted(html) is None


def test_clearsigned_pgp_is_not_encrypted() -> None:
    body = (
        b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\n" + TEXT + b"-----BEGIN PGP "
        b"SIGNATURE-----\r\n\r\niQEz\r\n-----END PGP SIGNATURE-----\r\n"
    )
    assert already_encrypted(HEAD + b"\r\n" + body) is None


def smime_encrypted(cert: Path, *extra: str) -> bytes:
    return HEAD + openssl("cms", "-encrypt", "-in", "/dev/stdin", *extra, str(cert), data=TEXT)


def test_smime_enveloped(smime: tuple[Path, Path]) -> None:
    cert, _ = smime
    data = smime_encrypted(cert, "-aes256")
    assert b"smime-type=enveloped-data" in data
    assert already_encrypted(data) == "smime"
    # The older media type, and a label without smime-type but with the .p7m name.
    assert already_encrypted(data.replace(b"application/pkcs7-mime", b"application/x-pkcs7-mime"))
    bare = data.replace(b" smime-type=enveloped-data;", b"")
    assert b"smime-type" not in bare
    assert already_encrypted(bare) == "smime"


def test_smime_auth_enveloped(smime: tuple[Path, Path]) -> None:
    cert, _ = smime
    data = smime_encrypted(cert, "-aes-256-gcm")
    assert b"authEnveloped-data" in data
    assert already_encrypted(data) == "smime"


def test_smime_signed_is_not_encrypted(smime: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = smime
    (tmp_path / "content").write_bytes(b"Content-Type: text/plain\r\n\r\n" + TEXT)
    for extra in ((), ("-nodetach",)):
        args = ["cms", "-sign", "-in", str(tmp_path / "content"), "-signer", str(cert)]
        signed = openssl(*args, "-inkey", str(key), *extra)
        assert already_encrypted(HEAD + signed) is None


def test_mislabelled_smime_is_not_encrypted(smime: tuple[Path, Path]) -> None:
    cert, _ = smime
    data = smime_encrypted(cert)
    head = data.split(b"\n\n", 1)[0]  # openssl ends its lines with LF
    fake = base64.encodebytes(TEXT * 20)
    assert already_encrypted(head + b"\r\n\r\n" + fake) is None
    assert already_encrypted(head + b"\r\n\r\n" + TEXT) is None
    # A real structure with plaintext appended is not "the whole body".
    real = smime_encrypted(cert)
    body = real.split(b"\n\n", 1)[1]
    der = base64.b64decode(body)
    padded = base64.encodebytes(der + TEXT)
    assert already_encrypted(head + b"\r\n\r\n" + padded) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"no headers at all",
        HEAD + b"\r\n" + TEXT,
        HEAD + b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n",
        HEAD + b"Content-Type: multipart/encrypted; boundary=x\r\n\r\n--x--\r\n",
        HEAD + b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n",
        HEAD + b"Content-Type: application/pkcs7-mime; smime-type=compressed-data\r\n\r\nxx",
    ],
)
def test_plain_messages(data: bytes) -> None:
    assert already_encrypted(data) is None


_PIECES = st.sampled_from(
    [
        b"Content-Type: multipart/encrypted; boundary=b;\r\n"
        b' protocol="application/pgp-encrypted"\r\n',
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=x.p7m\r\n",
        b"Content-Type: text/plain\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"\r\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"-----BEGIN PGP MESSAGE-----\r\n",
        b"-----END PGP MESSAGE-----\r\n",
        b"MIIBAAAA\r\n",
        b"=\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.binary(max_size=40)), max_size=20))
def test_fuzz_never_raises(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert already_encrypted(data) in (None, "pgp", "smime")
    assert isinstance(harvest(data), list)
