"""Shared harness for the inbound tests: a real InboundServer on a real Spool.

Imported by the tests/test_inbound_*.py modules; its own tests check the harness.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

from gateway import tlsfiles
from gateway.config import HostPort, SmtpConfig
from gateway.inbound.handler import SpoolLike, control_fields
from gateway.inbound.server import InboundServer
from gateway.message import QueuedMessage
from gateway.sealing import MasterKey
from gateway.spool import Spool

HOSTNAME = "gw.test"
MESSAGE = (
    b"From: app@clinic.example\r\n"
    b"To: pat@example.net\r\n"
    b"Subject: appointment\r\n"
    b"Message-ID: <1@clinic.example>\r\n"
    b"\r\n"
    b"See you on Monday.\r\n"
)
# Generous: the tests must pass on a slow, loaded CI machine.
CLIENT_TIMEOUT = 60.0


@dataclass
class Gateway:
    """A running inbound server, its spool and the files a client needs."""

    server: InboundServer
    spool: Spool
    data_dir: Path
    ca: trustme.CA

    @property
    def port(self) -> int:
        """The first plain (STARTTLS) listener's port."""
        return self.server.addresses[0].port

    def port_of(self, index: int) -> int:
        """The port of the index-th listener (plain ones first, then implicit TLS)."""
        return self.server.addresses[index].port

    def messages(self) -> list[QueuedMessage]:
        """Everything the spool holds, oldest first."""
        return sorted(self.spool.load_all(), key=lambda m: m.id)

    async def body(self, msg: QueuedMessage) -> bytes:
        """The stored (unsealed) bytes of a message."""
        return await self.spool.read_body(msg.id)

    def client_context(self, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        """A client context that trusts the test CA, optionally presenting a certificate."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if cert is not None:
            cert.configure_cert(ctx)
        return ctx


def write_server_cert(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    """A certificate for the gateway (gw.test and 127.0.0.1) as PEM files."""
    leaf = ca.issue_cert(HOSTNAME, "127.0.0.1")
    cert, key = directory / "gw.crt", directory / "gw.key"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


@contextlib.asynccontextmanager
async def running_gateway(
    tmp_path: Path,
    ca: trustme.CA,
    *,
    wrap_spool: Callable[[Spool], SpoolLike] | None = None,
    client_ca: Path | None = None,
    data_dir: Path | None = None,
    **smtp: Any,
) -> AsyncIterator[Gateway]:
    """Start spool and server (listeners on free loopback ports); stop both afterwards."""
    smtp.setdefault("listen", [HostPort("127.0.0.1", 0)])
    cfg = SmtpConfig(**smtp)
    data_dir = data_dir or tmp_path / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    cert, key = write_server_cert(ca, tmp_path)
    ctx = tlsfiles.server_context(cert, key, client_ca)
    spool = Spool(data_dir, MasterKey.load_or_create(data_dir / "master.key"))
    await spool.start()
    server = InboundServer(cfg, HOSTNAME, wrap_spool(spool) if wrap_spool else spool, ctx)
    try:
        await server.start()
        yield Gateway(server, spool, data_dir, ca)
    finally:
        await server.stop(10)
        await spool.close()


def free_port() -> int:
    """A port nothing listens on right now (for tests that must name one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smtp_client(port: int, source: str | None = None) -> smtplib.SMTP:
    """A connected smtplib client (call from a worker thread)."""
    return smtplib.SMTP(
        "127.0.0.1",
        port,
        local_hostname="client.test",
        timeout=CLIENT_TIMEOUT,
        source_address=(source, 0) if source else None,
    )


async def in_thread(func: Callable[[], Any]) -> Any:
    """Run a blocking client in a thread while the server keeps serving on this loop."""
    return await asyncio.wait_for(asyncio.to_thread(func), timeout=CLIENT_TIMEOUT * 2)


def raw_session(port: int, *commands: bytes, source: str | None = None) -> list[bytes]:
    """Send raw bytes one chunk at a time and collect the reply lines after each chunk."""
    with socket.create_connection(
        ("127.0.0.1", port),
        timeout=CLIENT_TIMEOUT,
        source_address=(source, 0) if source else None,
    ) as sock:
        f = sock.makefile("rb")
        replies = [_read_reply(f)]
        for chunk in commands:
            sock.sendall(chunk)
            replies.append(_read_reply(f))
        return replies


def _read_reply(f: Any) -> bytes:
    lines = []
    while True:
        line = f.readline()
        lines.append(line)
        if not line or line[3:4] != b"-":
            return b"".join(lines)


async def test_harness_accepts_a_message_from_a_connector(tmp_path: Path) -> None:
    ca = trustme.CA()
    async with running_gateway(
        tmp_path, ca, connectors=[{"name": "lan", "networks": ["127.0.0.0/8"]}]
    ) as gw:

        def send() -> Any:
            with smtp_client(gw.port) as c:
                return c.sendmail("app@clinic.example", ["pat@example.net"], MESSAGE)

        assert await in_thread(send) == {}
        (msg,) = gw.messages()
        assert msg.envelope.rcpt_to == ("pat@example.net",)
        assert (await gw.body(msg)).endswith(MESSAGE)


def test_control_fields_are_kept_for_later_stages() -> None:
    raw = (
        b"From: app@clinic.example\r\nX-Sealgate-Expires: 7d\r\n"
        b"x-sealgate-read-notice: yes\r\nX-Sealgate-Unknown: dropped\r\n"
        b"Subject: statement\r\n\r\nX-Sealgate-Portal: sealed-link\r\n"
    )
    assert control_fields(raw) == {"x-sealgate-expires": "7d", "x-sealgate-read-notice": "yes"}
    assert control_fields(b"From: a@b.example\r\n\r\nbody\r\n") == {}
