"""Inbound SMTP against swaks, a real independent client: STARTTLS, AUTH, implicit TLS, PROXY.

Also runs the same server under uvloop (what `sealgate run` uses), since aiosmtpd's
STARTTLS swaps transports by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import smtplib
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop
from argon2 import PasswordHasher

from gateway.config import HostPort
from tests.test_inbound_helpers import CLIENT_TIMEOUT, MESSAGE, in_thread, running_gateway

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")

PASSWORD = "correct horse battery staple"


def _users() -> list[dict[str, Any]]:
    return [
        {
            "username": "ehr",
            "password_hash": PasswordHasher().hash(PASSWORD),
            "allowed_senders": ["@clinic.example"],
        }
    ]


async def swaks(port: int, *args: str) -> tuple[int, str]:
    """Run swaks against the gateway; (exit status, transcript)."""
    proc = await asyncio.create_subprocess_exec(
        "swaks",
        "--server",
        f"127.0.0.1:{port}",
        "--helo",
        "client.test",
        "--from",
        "nurse@clinic.example",
        "--to",
        "pat@example.net",
        "--timeout",
        str(int(CLIENT_TIMEOUT)),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), CLIENT_TIMEOUT * 2)
    return proc.returncode or 0, out.decode("utf-8", "replace")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_starttls_and_auth(tmp_path: Path, tls_ca: trustme.CA, mechanism: str) -> None:
    async with running_gateway(tmp_path, tls_ca, users=_users()) as gw:
        status, out = await swaks(
            gw.port, "-tls", "--auth", mechanism, "--auth-user", "ehr", "--auth-password", PASSWORD
        )
        assert status == 0, out
        assert "<~  235 2.7.0 Authentication successful" in out
        assert "<~  250 2.0.0 Ok: queued as " in out
        (msg,) = gw.messages()
        assert msg.envelope.client.auth_user == "ehr"
        assert msg.envelope.client.tls is not None and msg.envelope.client.tls.startswith("TLSv1.")
        assert b"with ESMTPSA id" in await gw.body(msg)
        assert PASSWORD not in out.split("235 2.7.0")[1]  # (swaks echoes what it sent before)


async def test_wrong_password_and_plaintext_auth(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, users=_users()) as gw:
        status, out = await swaks(
            gw.port, "-tls", "--auth", "PLAIN", "--auth-user", "ehr", "--auth-password", "nope"
        )
        assert status != 0
        assert "<~* 535 5.7.8 Authentication credentials invalid" in out
        # Without TLS the server does not even offer AUTH.
        status, out = await swaks(
            gw.port, "--auth", "PLAIN", "--auth-user", "ehr", "--auth-password", PASSWORD
        )
        assert status != 0
        assert "*** Host did not advertise authentication" in out
        assert gw.messages() == []


async def test_implicit_tls_listener(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(
        tmp_path, tls_ca, users=_users(), listen_implicit_tls=[HostPort("127.0.0.1", 0)]
    ) as gw:
        implicit = gw.port_of(1)
        status, out = await swaks(
            implicit, "--tls-on-connect", "--auth", "PLAIN", "--auth-user", "ehr",
            "--auth-password", PASSWORD,
        )  # fmt: skip
        assert status == 0, out
        assert "STARTTLS" not in out.split("EHLO client.test")[1]
        (msg,) = gw.messages()
        assert msg.envelope.client.tls is not None and msg.envelope.client.auth_user == "ehr"

        # A plaintext client gets no greeting on the TLS port, only a failed handshake.
        def plaintext() -> bytes:
            with socket.create_connection(("127.0.0.1", implicit), timeout=CLIENT_TIMEOUT) as s:
                s.sendall(b"EHLO client.test\r\n")
                out = b""
                with contextlib.suppress(ConnectionError):
                    while chunk := s.recv(4096):
                        out += chunk
                return out

        assert b"220" not in await in_thread(plaintext)


@pytest.mark.parametrize("version", ["1", "2"])
async def test_proxy_protocol_carries_the_client_address(
    tmp_path: Path, tls_ca: trustme.CA, version: str
) -> None:
    connectors = [{"name": "branch", "networks": ["192.0.2.0/24"]}]
    async with running_gateway(
        tmp_path, tls_ca, connectors=connectors, proxy_protocol=True, proxy_protocol_timeout=1
    ) as gw:
        proxy = [
            "--proxy-version",
            version,
            "--proxy-family",
            "TCP4" if version == "1" else "AF_INET",
        ]
        proxy += ["--proxy-dest", "127.0.0.1", "--proxy-dest-port", "25"]
        proxy += ["--proxy-source-port", "40000", "-tls"]
        status, out = await swaks(gw.port, *proxy, "--proxy-source", "192.0.2.10")
        assert status == 0, out
        (msg,) = gw.messages()
        # The address survives STARTTLS (aiosmtpd starts a new session object there).
        assert msg.envelope.client.ip == "192.0.2.10"
        assert msg.envelope.client.connector == "branch"
        assert b"([192.0.2.10])" in await gw.body(msg)
        # A client outside the connector's network, as the proxy reports it, is refused.
        status, out = await swaks(gw.port, *proxy, "--proxy-source", "198.51.100.1")
        assert status != 0 and "550 5.7.1 Relaying denied" in out

        # Without a PROXY header there is no greeting, only a 421 when the wait is over.
        def direct() -> Any:
            with smtplib.SMTP("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT) as c:
                return c.noop()

        with pytest.raises(smtplib.SMTPConnectError) as err:
            await in_thread(direct)
        assert err.value.smtp_code == 421
        assert len(gw.messages()) == 1


def test_under_uvloop(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async def scenario() -> list[Any]:
        async with running_gateway(
            tmp_path, tls_ca, users=_users(), listen_implicit_tls=[HostPort("127.0.0.1", 0)]
        ) as gw:
            status, out = await swaks(
                gw.port, "-tls", "--auth", "LOGIN", "--auth-user", "ehr",
                "--auth-password", PASSWORD,
            )  # fmt: skip
            assert status == 0, out

            def implicit() -> Any:
                ctx = gw.client_context()
                with smtplib.SMTP_SSL(
                    "127.0.0.1", gw.port_of(1), timeout=CLIENT_TIMEOUT, context=ctx
                ) as c:
                    c.login("ehr", PASSWORD)
                    return c.sendmail("a@clinic.example", ["p@example.net"], MESSAGE)

            assert await in_thread(implicit) == {}
            return [m.envelope.client for m in gw.messages()]

    clients = uvloop.run(scenario())
    assert [c.auth_user for c in clients] == ["ehr", "ehr"]
    assert all(c.tls and c.tls.startswith("TLSv1.") for c in clients)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_versions_below_1_2_are_refused(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async def scenario() -> None:
        async with running_gateway(tmp_path, tls_ca) as gw:

            def old_client() -> Any:
                ctx = gw.client_context()
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
                ctx.set_ciphers("ALL:@SECLEVEL=0")
                with smtplib.SMTP("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT) as c:
                    c.starttls(context=ctx)

            with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
                await in_thread(old_client)

    asyncio.run(scenario())
