"""Keys learnt from mail passing through: Autocrypt headers and keys attached to signed mail."""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import log
from gateway.config import PgpConfig
from gateway.pgp import PgpDirectory
from gateway.pgp.autocrypt import attached_keys, autocrypt_key, parse_autocrypt
from tests.peers.gpg import GpgUser, gpg


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GpgUser]]:
    base = tmp_path_factory.mktemp("gpgl")
    users = {
        "gina": GpgUser.create(base / "gina", "gina@partner.example", "Gina"),
        "gina2": GpgUser.create(base / "gina2", "gina@partner.example", "Gina (new)"),
        "hank": GpgUser.create(base / "hank", "hank@partner.example", "Hank"),
    }
    try:
        yield users
    finally:
        for u in users.values():
            u.close()


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


def directory(tmp_path: Path, autocrypt: bool = True) -> PgpDirectory:
    cfg = PgpConfig(wkd=False, openpgpkey_dns=False, autocrypt=autocrypt)
    return PgpDirectory(tmp_path / "data", cfg, None, None)


def autocrypt_header(addr: str, key: bytes, extra: str = "") -> str:
    data = "\r\n ".join(textwrap.wrap(base64.b64encode(key).decode(), 76))
    return f"Autocrypt: addr={addr};{extra} prefer-encrypt=mutual; keydata=\r\n {data}\r\n"


def message(from_: str, *headers: str) -> bytes:
    head = f"From: {from_}\r\nTo: drwho@clinic.example\r\nSubject: re: results\r\n"
    return (head + "".join(headers) + "\r\nThanks.\r\n").encode()


async def test_autocrypt_key_is_learnt(tmp_path: Path, people: dict[str, GpgUser]) -> None:
    gina = people["gina"]
    d = directory(tmp_path)
    data = message(
        "Gina <Gina@partner.example>", autocrypt_header("gina@partner.example", gina.public_key())
    )
    await d.learn(data)
    binding = d.state.binding("gina@partner.example")
    assert binding is not None
    assert binding.fingerprint == gina.fingerprint and binding.source == "autocrypt"
    assert await d.key_for("gina@partner.example") == gina.fingerprint


async def test_autocrypt_change_is_pending(
    tmp_path: Path, people: dict[str, GpgUser], events: list[tuple[str, dict[str, Any]]]
) -> None:
    gina, gina2 = people["gina"], people["gina2"]
    d = directory(tmp_path)
    await d.learn(
        message("gina@partner.example", autocrypt_header("gina@partner.example", gina.public_key()))
    )
    await d.learn(
        message(
            "gina@partner.example", autocrypt_header("gina@partner.example", gina2.public_key())
        )
    )
    assert await d.key_for("gina@partner.example") == gina.fingerprint
    assert [p.fingerprint for p in d.state.pending("gina@partner.example")] == [gina2.fingerprint]
    assert [f["source"] for n, f in events if n == "pgp_key_changed"] == ["autocrypt"]


@pytest.mark.parametrize(
    "build",
    [
        # addr differs from From
        lambda k: message("gina@partner.example", autocrypt_header("hank@partner.example", k)),
        # two headers: none is used
        lambda k: message(
            "gina@partner.example",
            autocrypt_header("gina@partner.example", k),
            autocrypt_header("gina@partner.example", k),
        ),
        # an unknown critical attribute
        lambda k: message(
            "gina@partner.example", autocrypt_header("gina@partner.example", k, " x=1;")
        ),
        # two From addresses
        lambda k: message(
            "gina@partner.example, hank@partner.example",
            autocrypt_header("gina@partner.example", k),
        ),
    ],
    ids=["addr-mismatch", "two-headers", "critical-attribute", "two-senders"],
)
async def test_invalid_autocrypt_is_ignored(
    tmp_path: Path, people: dict[str, GpgUser], build: Any
) -> None:
    d = directory(tmp_path)
    await d.learn(build(people["gina"].public_key()))
    assert d.state.bindings() == []


def test_non_critical_attribute_is_allowed(people: dict[str, GpgUser]) -> None:
    key = people["gina"].public_key()
    data = message("gina@partner.example", autocrypt_header("gina@partner.example", key, " _x=1;"))
    found = autocrypt_key(data)
    assert found is not None and found.keydata == key
    assert parse_autocrypt("addr=a@b.example; keydata=!!!") is None


async def test_autocrypt_off_learns_nothing(tmp_path: Path, people: dict[str, GpgUser]) -> None:
    d = directory(tmp_path, autocrypt=False)
    gina = people["gina"]
    await d.learn(
        message("gina@partner.example", autocrypt_header("gina@partner.example", gina.public_key()))
    )
    assert d.state.bindings() == []


def signed_message(user: GpgUser, key: bytes, tamper: bool = False) -> bytes:
    # RFC 3156 section 5: what is signed is in canonical form, CRLF line ends.
    key = key.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").rstrip(b"\r\n")
    part = (
        b'Content-Type: multipart/mixed; boundary="inner"\r\n\r\n'
        b"--inner\r\nContent-Type: text/plain\r\n\r\nMy key is attached.\r\n"
        b'--inner\r\nContent-Type: application/pgp-keys; name="key.asc"\r\n'
        b"Content-Disposition: attachment\r\n\r\n" + key + b"\r\n--inner--\r\n"
    )
    signature = gpg(user.home, "--armor", "--detach-sign", "-u", user.fingerprint, data=part)
    if tamper:
        part = part.replace(b"My key", b"My KEY")
    return (
        f"From: {user.address}\r\nTo: drwho@clinic.example\r\nSubject: key\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/signed; micalg=pgp-sha256;\r\n"
        ' protocol="application/pgp-signature"; boundary="outer"\r\n\r\n'
    ).encode() + (
        b"--outer\r\n" + part + b"\r\n--outer\r\n"
        b"Content-Type: application/pgp-signature\r\n\r\n" + signature + b"\r\n--outer--\r\n"
    )


async def test_key_attached_to_signed_mail_is_learnt(
    tmp_path: Path, people: dict[str, GpgUser]
) -> None:
    hank = people["hank"]
    data = signed_message(hank, hank.public_key(armor=True))
    assert len(attached_keys(data)) == 1
    d = directory(tmp_path)
    await d.learn(data)
    binding = d.state.binding("hank@partner.example")
    assert binding is not None and binding.fingerprint == hank.fingerprint
    assert binding.source == "attached"


async def test_attached_key_with_bad_signature_is_ignored(
    tmp_path: Path, people: dict[str, GpgUser]
) -> None:
    hank = people["hank"]
    d = directory(tmp_path)
    await d.learn(signed_message(hank, hank.public_key(armor=True), tamper=True))
    assert d.state.bindings() == []


async def test_attached_key_of_someone_else_is_ignored(
    tmp_path: Path, people: dict[str, GpgUser]
) -> None:
    # Hank signs, but attaches Gina's key: it did not make the signature.
    d = directory(tmp_path)
    await d.learn(signed_message(people["hank"], people["gina"].public_key(armor=True)))
    assert d.state.bindings() == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"From: <>\r\nAutocrypt: addr=x\r\n\r\n",
        b"Content-Type: multipart/signed; boundary=x\r\nFrom: a@b.example\r\n\r\n--x\r\n",
        bytes(range(256)) * 20,
    ],
)
async def test_garbage_never_raises(tmp_path: Path, data: bytes) -> None:
    await directory(tmp_path).learn(data)
