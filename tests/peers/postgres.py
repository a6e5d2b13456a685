"""A real PostgreSQL server in a private directory on loopback, for storage tests.

initdb and the server refuse to run as root, so as root they run as the
`postgres` system user (the Debian package creates it) through runuser, in a
directory made for them under /tmp (pytest's own temp folders are root-only).
Unix sockets are off: clients connect over TCP to 127.0.86.1 with a password,
as a gateway node would. fsync is off too: the tests need a server, not its
crash safety.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

HOST = "127.0.86.1"
USER = "sealgate"
_START_TIMEOUT = 60


def _bindir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def postgres_available() -> bool:
    """Whether PostgreSQL's server programs are installed (the CI script installs them)."""
    return _bindir() is not None


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One private PostgreSQL cluster; `create_database()` hands out fresh databases."""

    def __init__(self, host: str = HOST) -> None:
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = bindir
        self.host = host
        self.port = 0
        self.password = secrets.token_hex(16)
        self.base = Path(tempfile.mkdtemp(prefix="sealgate-pg-"))
        self.datadir = self.base / "data"
        self._run_as: list[str] = []
        self._started = False

    def _cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self._run_as, *args],
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT,
            check=False,
            cwd=self.base,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}\n{self._log_tail()}"
            )
        return result

    def _log_tail(self) -> str:
        try:
            return (self.base / "server.log").read_text()[-2000:]
        except OSError:
            return ""

    def start(self) -> None:
        """initdb, then start the server listening on host:port (TCP only)."""
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        pwfile.chmod(0o600)
        self._cmd(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=reject",
            "--encoding=UTF8",
            "--no-instructions",
        )
        pwfile.unlink()
        self.port = _free_port(self.host)
        options = (
            f"-c listen_addresses={self.host} -c port={self.port} "
            "-c unix_socket_directories='' -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._cmd(
            str(self.bindir / "pg_ctl"),
            "start",
            "-D",
            str(self.datadir),
            "-l",
            str(self.base / "server.log"),
            "-w",
            "-t",
            str(_START_TIMEOUT),
            "-o",
            options,
        )
        self._started = True

    def url(self, database: str = "postgres") -> str:
        """A connection URL for database (with the password)."""
        return f"postgresql://{USER}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        try:
            if self._started:
                self._cmd(
                    str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast"
                )
                self._started = False
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def server_for_tests() -> Iterator[PostgresServer]:
    """Body of a module fixture: a started server, stopped afterwards.

    Without PostgreSQL the test is skipped on a workstation but fails in CI
    (CI=true), where .ci/run installs it and a skip would hide a broken suite.
    """
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not postgres_available():
        if in_ci:
            pytest.fail("PostgreSQL is not installed; .ci/run installs it")
        pytest.skip("PostgreSQL is not installed (bash .ci/run installs it)")
    server = PostgresServer()
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        if in_ci:
            pytest.fail(f"PostgreSQL did not start: {exc}")
        pytest.skip(f"PostgreSQL did not start: {exc}")
    try:
        yield server
    finally:
        server.stop()
