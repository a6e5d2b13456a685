"""`sealgate keys pgp ...`: the installed command against a real keyring."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.config import PgpConfig
from gateway.pgp import PgpDirectory
from tests.peers.gpg import GpgUser

SEALGATE = str(Path(sys.executable).with_name("sealgate"))


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GpgUser]]:
    base = tmp_path_factory.mktemp("gpgk")
    users = {
        "ivy": GpgUser.create(base / "ivy", "ivy@partner.example", "Ivy"),
        "ivy2": GpgUser.create(base / "ivy2", "ivy@partner.example", "Ivy (new)"),
        "jon": GpgUser.create(base / "jon", "jon@partner.example", "Jon"),
        "org": GpgUser.create(base / "org", "security@clinic.example", "Clinic", encrypt=False),
    }
    try:
        yield users
    finally:
        for u in users.values():
            u.close()


@pytest.fixture
def cfg_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sealgate.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data", "hostname": "gw.clinic.example"}))
    yield path
    # An imported signing key starts the keyring's gpg-agent: stop it.
    home = tmp_path / "data" / "keys" / "pgp" / "gnupg"
    if home.exists():
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )


class Result:
    """What one command printed and returned."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def sealgate(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run `sealgate keys pgp ARGS -c CFG` in this process (the console script's main)."""

    def run(cfg: Path, *args: str) -> Result:
        capsys.readouterr()
        code = main(["keys", "pgp", *args, "-c", str(cfg)])
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run


def installed(
    cfg: Path, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed console script, as an admin runs it."""
    return subprocess.run(
        [SEALGATE, "keys", "pgp", *args, "-c", str(cfg)],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_import_list_remove(
    tmp_path: Path, cfg_path: Path, people: dict[str, GpgUser], sealgate: Callable[..., Result]
) -> None:
    ivy, jon = people["ivy"], people["jon"]
    r = sealgate(cfg_path, "import", write(tmp_path / "ivy.asc", ivy.public_key(armor=True)))
    assert r.returncode == 0, r.stderr
    assert f"ivy@partner.example: {ivy.fingerprint}" in r.stdout
    r = sealgate(cfg_path, "import", write(tmp_path / "jon.gpg", jon.public_key()))
    assert r.returncode == 0, r.stderr

    r = sealgate(cfg_path, "list")
    assert r.returncode == 0, r.stderr
    assert "ivy@partner.example" in r.stdout and ivy.fingerprint in r.stdout
    assert "jon@partner.example" in r.stdout and "usable" in r.stdout
    r = sealgate(cfg_path, "list", "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert {(x["address"], x["fingerprint"], x["status"], x["source"]) for x in rows} == {
        ("ivy@partner.example", ivy.fingerprint, "usable", "admin"),
        ("jon@partner.example", jon.fingerprint, "usable", "admin"),
    }

    mode = (tmp_path / "data" / "keys" / "pgp").stat().st_mode & 0o777
    assert mode == 0o700

    r = sealgate(cfg_path, "remove", "IVY@partner.example")
    assert r.returncode == 0, r.stderr
    r = sealgate(cfg_path, "remove", "ivy@partner.example")
    assert r.returncode == 1
    assert "no key for ivy@partner.example" in r.stderr
    r = sealgate(cfg_path, "remove", jon.fingerprint.lower())
    assert r.returncode == 0, r.stderr
    r = sealgate(cfg_path, "list")
    assert r.stdout.strip() == "No OpenPGP keys"
    r = sealgate(cfg_path, "remove", jon.fingerprint)
    assert r.returncode == 1


def test_import_from_stdin_with_address(
    tmp_path: Path, cfg_path: Path, people: dict[str, GpgUser]
) -> None:
    jon = people["jon"]
    r = installed(
        cfg_path,
        "import",
        "-",
        "--address",
        "Jon.Alias@partner.example",
        stdin=jon.public_key(armor=True),
    )
    assert r.returncode == 0, r.stderr
    d = PgpDirectory(tmp_path / "data", PgpConfig(wkd=False, openpgpkey_dns=False), None, None)
    binding = d.state.binding("jon.alias@partner.example")
    assert binding is not None and binding.fingerprint == jon.fingerprint
    assert d.state.binding("jon@partner.example") is None
    r = installed(cfg_path, "list")
    assert r.returncode == 0, r.stderr
    assert "jon.alias@partner.example" in r.stdout


def test_bad_input(
    tmp_path: Path, cfg_path: Path, people: dict[str, GpgUser], sealgate: Callable[..., Result]
) -> None:
    r = sealgate(cfg_path, "import", write(tmp_path / "junk.asc", b"not a key\n"))
    assert r.returncode == 1
    assert "holds no OpenPGP key" in r.stderr and "Traceback" not in r.stderr
    r = sealgate(cfg_path, "import", str(tmp_path / "missing.asc"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    r = sealgate(cfg_path, "import", write(tmp_path / "sec.asc", people["org"].secret_key()))
    assert r.returncode == 2
    assert "--secret" in r.stderr
    r = sealgate(cfg_path, "remove", "not an address")
    assert r.returncode == 2
    r = sealgate(cfg_path, "accept", "nobody@partner.example")
    assert r.returncode == 1


def test_signing_key_import(
    tmp_path: Path, cfg_path: Path, people: dict[str, GpgUser], sealgate: Callable[..., Result]
) -> None:
    org = people["org"]
    r = sealgate(cfg_path, "import", "--secret", write(tmp_path / "org.asc", org.secret_key()))
    assert r.returncode == 0, r.stderr
    assert f"sign_key: {org.fingerprint}" in r.stdout
    r = sealgate(cfg_path, "list")
    assert f"signing key: {org.fingerprint}" in r.stdout
    # A signing key is not removed by accident with recipients' keys.
    r = sealgate(cfg_path, "remove", org.fingerprint)
    assert r.returncode == 1


async def test_pending_accept_reject(
    tmp_path: Path, cfg_path: Path, people: dict[str, GpgUser], sealgate: Callable[..., Result]
) -> None:
    ivy, ivy2 = people["ivy"], people["ivy2"]
    assert sealgate(cfg_path, "import", write(tmp_path / "i.asc", ivy.public_key())).returncode == 0
    r = sealgate(cfg_path, "pending")
    assert r.stdout.strip() == "No changed keys pending"
    d = PgpDirectory(tmp_path / "data", PgpConfig(wkd=False, openpgpkey_dns=False), None, None)
    d.state.add_pending("ivy@partner.example", ivy2.fingerprint, "wkd", ivy2.public_key())

    r = sealgate(cfg_path, "pending", "--json")
    [row] = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["fingerprint"] == ivy2.fingerprint and row["accepted"] == ivy.fingerprint
    assert "changed key pending" in sealgate(cfg_path, "list").stdout
    assert await d.key_for("ivy@partner.example") == ivy.fingerprint

    r = sealgate(cfg_path, "reject", "ivy@partner.example")
    assert r.returncode == 0, r.stderr
    assert sealgate(cfg_path, "reject", "ivy@partner.example").returncode == 1
    # Seen again after a rejection: no new alarm, nothing pending.
    assert not d.state.add_pending("ivy@partner.example", ivy2.fingerprint, "wkd", b"")
    assert d.state.pending() == []

    d.state.bind("ivy@partner.example", ivy.fingerprint, "admin")  # a new era: forget rejections
    d.state.add_pending("ivy@partner.example", ivy2.fingerprint, "autocrypt", ivy2.public_key())
    r = sealgate(cfg_path, "accept", "ivy@partner.example")
    assert r.returncode == 0, r.stderr
    binding = d.state.binding("ivy@partner.example")
    assert binding is not None and binding.fingerprint == ivy2.fingerprint
    assert await d.key_for("ivy@partner.example") == ivy2.fingerprint
    # The old key left the keyring: no address uses it any more.
    assert d.keyring.get(ivy.fingerprint) is None
