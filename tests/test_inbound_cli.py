"""`sealgate check` and `sealgate hash-password`, run as the installed console script would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from gateway import config
from gateway.cli import main

REPO = Path(__file__).resolve().parent.parent


def _sealgate(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_hash_password_output_works_in_a_config(tmp_path: Path) -> None:
    done = _sealgate("hash-password", stdin="s3cret with spaces \n")
    assert done.returncode == 0, done.stderr
    digest = done.stdout.strip()
    assert digest.startswith("$argon2id$")
    assert PasswordHasher().verify(digest, "s3cret with spaces ")
    cfg_file = tmp_path / "sg.yaml"
    cfg_file.write_text(
        f"data_dir: {tmp_path}/d\n"
        "smtp:\n  users:\n"
        f"    - {{username: app1, password_hash: '{digest}', allowed_senders: ['*']}}\n"
    )
    assert config.load(cfg_file).smtp.users[0].password_hash == digest
    assert _sealgate("check", "-c", str(cfg_file)).stdout == "configuration OK\n"


@pytest.mark.parametrize("stdin", ["", "\n"])
def test_hash_password_refuses_an_empty_password(stdin: str) -> None:
    done = _sealgate("hash-password", stdin=stdin)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "empty password" in done.stderr


def test_check_prints_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"data_dir: {tmp_path}/d\n")
    assert main(["check", "-c", str(good)]) == 0
    assert capsys.readouterr().out == "configuration OK\n"
