"""The S/MIME certificate store: which certificates it keeps and which one wins, and its CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.config import SmimeConfig
from gateway.smime import SmimeDirectory
from gateway.smime.store import (
    CertificateError,
    CertStore,
    best_for,
    load_certificates,
    normalize_fingerprint,
    problems,
)
from tests.smime_certs import DAY, NOW, ca, ec_key, issue, rsa_key

SEALGATE = str(Path(sys.executable).with_name("sealgate"))


# -- which certificates are usable --


def test_good_certificate_has_no_problems() -> None:
    assert problems(issue("ann@mail.example").cert) == []
    # The address may sit in the subject's emailAddress instead of the SAN.
    assert problems(issue("bo@mail.example", san=False, subject_email=True).cert) == []
    # No keyUsage / extendedKeyUsage at all: nothing restricts the key.
    assert problems(issue("cy@mail.example", key_usage=False, eku=None).cert) == []
    any_eku = (ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,)
    assert problems(issue("di@mail.example", eku=any_eku).cert) == []


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"email": None}, "no email address"),
        ({"email": "x@mail.example", "key_encipherment": False}, "keyEncipherment"),
        (
            {"email": "x@mail.example", "eku": (ExtendedKeyUsageOID.SERVER_AUTH,)},
            "emailProtection",
        ),
        ({"email": "x@mail.example", "key": rsa_key(1024, 2)}, "1024 bits"),
        ({"email": "x@mail.example", "key": ec_key()}, "not an RSA key"),
        ({"email": "x@mail.example", "is_ca": True}, "CA certificate"),
    ],
)
def test_unusable_certificates_are_refused(
    tmp_path: Path, kwargs: dict[str, object], reason: str
) -> None:
    cert = issue(**kwargs).cert  # type: ignore[arg-type]
    assert any(reason in p for p in problems(cert))
    with pytest.raises(CertificateError, match=reason):
        CertStore(tmp_path).add(cert, "import")
    assert CertStore(tmp_path).read_index() == {}


def test_expired_and_future_certificates_are_refused(tmp_path: Path) -> None:
    store = CertStore(tmp_path)
    expired = issue("old@mail.example", not_before=NOW - 400 * DAY, not_after=NOW - DAY)
    with pytest.raises(CertificateError, match="expired"):
        store.add(expired.cert, "import")
    future = issue("new@mail.example", not_before=NOW + DAY, not_after=NOW + 400 * DAY)
    with pytest.raises(CertificateError, match="not valid before"):
        store.add(future.cert, "import")


def test_newest_valid_certificate_wins(tmp_path: Path) -> None:
    store = CertStore(tmp_path)
    short = issue("ann@mail.example", not_after=NOW + 30 * DAY)
    long = issue("ann@mail.example", key=rsa_key(2048, 3), not_after=NOW + 700 * DAY)
    other = issue("bo@mail.example")
    for item in (short, long, other):
        info, new = store.add(item.cert, "import")
        assert new and info.fingerprint == item.fingerprint
    assert store.add(short.cert, "import")[1] is False  # the same certificate again
    entries = store.read_index()
    now = NOW.timestamp()
    assert best_for(entries, "Ann@Mail.Example", now) == long.fingerprint
    assert best_for(entries, "bo@mail.example", now) == other.fingerprint
    assert best_for(entries, "nobody@mail.example", now) is None
    # Once the long one has expired (in 800 days), none is valid: none is chosen.
    assert best_for(entries, "ann@mail.example", now + 800 * 86400) is None
    # Between the two expiries only the short one is out: the long one still wins.
    assert best_for(entries, "ann@mail.example", now + 60 * 86400) == long.fingerprint
    # The files: one per certificate named by fingerprint, and the index by address.
    index = json.loads((tmp_path / "keys/smime/index.json").read_text())
    assert sorted(index["addresses"]["ann@mail.example"]) == sorted(
        [short.fingerprint, long.fingerprint]
    )
    assert (tmp_path / f"keys/smime/{long.fingerprint}.pem").is_file()


def test_directory_sees_changes_made_by_another_writer(tmp_path: Path) -> None:
    directory = SmimeDirectory(tmp_path, SmimeConfig())
    assert directory.cert_for("ann@mail.example") is None
    ann = issue("ann@mail.example")
    # Another process (the CLI) writes the store; the directory notices the new index.
    CertStore(tmp_path).add(ann.cert, "import")
    assert directory.cert_for("ann@mail.example") == ann.fingerprint
    cert = directory.certificate(ann.fingerprint, "ann@mail.example")
    assert cert is not None and cert == ann.cert
    assert directory.certificate(ann.fingerprint, "bo@mail.example") is None
    CertStore(tmp_path).remove([ann.fingerprint])
    assert directory.cert_for("ann@mail.example") is None
    assert directory.certificate(ann.fingerprint) is None


def test_damaged_index_means_no_certificates_not_a_crash(tmp_path: Path) -> None:
    ann = issue("ann@mail.example")
    CertStore(tmp_path).add(ann.cert, "import")
    (tmp_path / "keys/smime/index.json").write_text("{not json")
    assert SmimeDirectory(tmp_path, SmimeConfig()).cert_for("ann@mail.example") is None
    # The next write rebuilds the index from the certificate files.
    bo = issue("bo@mail.example")
    CertStore(tmp_path).add(bo.cert, "import")
    entries = CertStore(tmp_path).read_index()
    assert set(entries) == {ann.fingerprint, bo.fingerprint}


def test_load_certificates_formats() -> None:
    ann = issue("ann@mail.example")
    bo = issue("bo@mail.example", key=rsa_key(2048, 4))
    assert load_certificates(ann.pem) == [ann.cert]
    assert load_certificates(ann.der) == [ann.cert]
    assert load_certificates(ann.pem + bo.pem) == [ann.cert, bo.cert]
    bundle_der = pkcs7.serialize_certificates([ann.cert, ca().cert], Encoding.DER)
    # A SET OF: the bundle's order is not kept.
    assert set(load_certificates(bundle_der)) == {ann.cert, ca().cert}
    bundle_pem = pkcs7.serialize_certificates([ann.cert], Encoding.PEM)
    assert load_certificates(bundle_pem) == [ann.cert]
    for junk in (b"", b"hello", b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n"):
        with pytest.raises(CertificateError):
            load_certificates(junk)


def test_normalize_fingerprint() -> None:
    fp = "ab" * 32
    assert normalize_fingerprint(fp.upper()) == fp
    assert normalize_fingerprint(":".join(fp[i : i + 2] for i in range(0, 64, 2))) == fp
    assert normalize_fingerprint("abc") is None
    assert normalize_fingerprint("zz" * 32) is None


# -- the CLI, as an admin runs it --


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    path = tmp_path / "sealgate.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data", "hostname": "gw.clinic.example"}))
    return path


def sealgate(cfg: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SEALGATE, "keys", "smime", *args, "-c", str(cfg)],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_cli_import_list_remove(tmp_path: Path, cfg_path: Path) -> None:
    ann = issue("ann@mail.example")
    bo = issue("bo@mail.example", key=rsa_key(2048, 5))
    cy = issue("cy@mail.example", key=rsa_key(2048, 6))
    (tmp_path / "ann.pem").write_bytes(ann.pem)
    (tmp_path / "bo.der").write_bytes(bo.der)
    # A bundle with the CA certificate in it: the CA is skipped, the file still imports.
    (tmp_path / "cy.p7b").write_bytes(
        pkcs7.serialize_certificates([cy.cert, ca().cert], Encoding.DER)
    )

    r = sealgate(cfg_path, "import", str(tmp_path / "ann.pem"))
    assert r.returncode == 0, r.stderr
    assert f"Imported {ann.fingerprint} for ann@mail.example" in r.stdout
    r = sealgate(cfg_path, "import", str(tmp_path / "bo.der"), str(tmp_path / "cy.p7b"))
    assert r.returncode == 0, r.stderr
    assert bo.fingerprint in r.stdout and cy.fingerprint in r.stdout
    assert "CA certificate" in r.stderr
    r = sealgate(cfg_path, "import", "--json", "-", stdin=ann.pem)
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout)
    assert line["fingerprint"] == ann.fingerprint and line["new"] is False

    r = sealgate(cfg_path, "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(ann.fingerprint) and "valid" in lines[0]
    r = sealgate(cfg_path, "list", "--json", "BO@mail.example")
    assert r.returncode == 0, r.stderr
    (entry,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert entry["emails"] == ["bo@mail.example"] and entry["status"] == "valid"
    assert entry["source"] == "import"

    # The running gateway's view (another process) follows the store.
    directory = SmimeDirectory(tmp_path / "data", SmimeConfig())
    assert directory.cert_for("cy@mail.example") == cy.fingerprint

    colons = ":".join(bo.fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    r = sealgate(cfg_path, "remove", colons, "cy@mail.example")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Removed") == 2
    assert directory.cert_for("cy@mail.example") is None
    r = sealgate(cfg_path, "list")
    assert r.stdout.splitlines()[0].startswith(ann.fingerprint)
    assert len(r.stdout.splitlines()) == 1


def test_cli_errors(tmp_path: Path, cfg_path: Path) -> None:
    weak = issue("weak@mail.example", key=rsa_key(1024, 7))
    (tmp_path / "weak.pem").write_bytes(weak.pem)
    (tmp_path / "junk.pem").write_bytes(b"not a certificate")
    r = sealgate(cfg_path, "import", str(tmp_path / "weak.pem"))
    assert r.returncode == 1
    assert "1024 bits" in r.stderr and "Traceback" not in r.stderr
    r = sealgate(cfg_path, "import", str(tmp_path / "junk.pem"))
    assert r.returncode == 1 and "not a certificate" in r.stderr
    r = sealgate(cfg_path, "import", str(tmp_path / "missing.pem"))
    assert r.returncode == 1 and "missing.pem" in r.stderr
    r = sealgate(cfg_path, "remove", "nobody@mail.example")
    assert r.returncode == 1 and "no certificate" in r.stderr
    r = sealgate(cfg_path, "remove", "nonsense")
    assert r.returncode == 2
    r = sealgate(cfg_path, "list", "nobody@mail.example")
    assert r.returncode == 1
    r = sealgate(cfg_path, "list")
    assert r.returncode == 0 and r.stdout == ""
