"""The outbound transport against servers that offer PIPELINING (RFC 2920).

The sinks in tests/peers answer without PIPELINING, so the transport talks to
them one command at a time; here a small scripted server on loopback offers
it, records how the commands arrived, and refuses on demand. Postfix's
smtp-sink (which pipelines too) is covered in test_transport.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from gateway.config import DeliveryConfig, DnsConfig, parse_hostport
from gateway.outbound.transport import Transport
from gateway.resolver import Resolver
from tests.peers.dns import DnsServer

SENDER = "doctor@clinic.example"
MESSAGE = (
    b"From: <doctor@clinic.example>\r\n"
    b"Subject: results\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"end\r\n"
)
# Our corner of 127.0.0.0/8.
MX1, MX2 = "127.0.27.2", "127.0.27.3"


@dataclass
class Script:
    """How the server answers, and what it saw."""

    mail: dict[str, str] = field(default_factory=dict)  # sender -> reply
    rcpt: dict[str, str] = field(default_factory=dict)  # recipient -> reply
    data: list[str] = field(default_factory=list)  # replies to DATA, in turn
    final: list[str] = field(default_factory=list)  # replies after the message, in turn
    close_idle: bool = False  # hang up on an idle connection after each message
    hang_up_on_rset: bool = False  # as a server that just timed out an idle connection
    connections: int = 0
    reads: list[bytes] = field(default_factory=list)  # command input, read by read
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)


class PipeliningServer:
    """An SMTP server offering PIPELINING that answers each command line in order."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.script = Script()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen on host:25."""
        self._server = await asyncio.start_server(self._serve, self.host, 25)

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = self.script
        s.connections += 1
        writer.write(b"220 pipe.test ESMTP\r\n")
        sender, rcpts = "", []
        delivered_here = False
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                s.reads.append(chunk)
                buf = chunk
                while not buf.endswith(b"\r\n"):
                    more = await reader.read(65536)
                    if not more:
                        return
                    buf += more
                out = []
                for line in buf.split(b"\r\n")[:-1]:
                    verb = line[:4].upper()
                    arg = line.decode().partition(":")[2].strip()
                    if verb == b"EHLO":
                        out.append("250-pipe.test\r\n250-PIPELINING\r\n250 8BITMIME")
                    elif verb == b"MAIL":
                        sender = arg.split()[0].strip("<>")
                        out.append(s.mail.get(sender, "250 2.1.0 Ok"))
                    elif verb == b"RCPT":
                        rcpt = arg.strip("<>")
                        reply = s.rcpt.get(rcpt, "250 2.1.5 Ok")
                        if reply.startswith("250"):
                            rcpts.append(rcpt)
                        out.append(reply)
                    elif verb == b"RSET":
                        if s.hang_up_on_rset:
                            return
                        sender, rcpts = "", []
                        out.append("250 2.0.0 Ok")
                    elif verb == b"QUIT":
                        writer.write(b"221 2.0.0 Bye\r\n")
                        await writer.drain()
                        return
                    elif verb == b"DATA":
                        reply = s.data.pop(0) if s.data else "354 go ahead"
                        out.append(reply)
                        if reply.startswith("354"):
                            writer.write("".join(r + "\r\n" for r in out).encode())
                            out = []
                            body = await reader.readuntil(b"\r\n.\r\n")
                            lines = body[:-3].split(b"\r\n")
                            data = b"\r\n".join(ln[1:] if ln[:1] == b"." else ln for ln in lines)
                            final = s.final.pop(0) if s.final else "250 2.0.0 Ok: queued"
                            if final.startswith("250"):
                                s.messages.append((sender, list(rcpts), data))
                                delivered_here = True
                            out.append(final)
                            sender, rcpts = "", []
                    else:
                        out.append("502 5.5.2 Error: command not recognized")
                    if out and out[-1].startswith("421"):
                        break
                writer.write("".join(r + "\r\n" for r in out).encode())
                await writer.drain()
                if (out and out[-1].startswith("421")) or (s.close_idle and delivered_here):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


MakeServer = Callable[[str], PipeliningServer]


@pytest.fixture
async def servers() -> AsyncIterator[MakeServer]:
    """Starts PipeliningServers in this test's event loop; all stop afterwards."""
    made: list[PipeliningServer] = []

    def make(host: str) -> PipeliningServer:
        server = PipeliningServer(host)
        made.append(server)
        return server

    yield make
    for server in made:
        await server.close()


@pytest.fixture
async def transport(dns_server: DnsServer) -> AsyncIterator[Transport]:
    """A transport resolving through the test DNS server; MX hosts mx1 (MX1), mx2 (MX2)."""
    for pref, name, ip in ((10, "mx1.pipe.example", MX1), (20, "mx2.pipe.example", MX2)):
        dns_server.add("pipe.example", "MX", f"{pref} {name}.")
        dns_server.add(name, "A", ip)
    resolver = Resolver(DnsConfig(nameservers=[parse_hostport(dns_server.nameserver)], timeout=10))
    t = Transport(DeliveryConfig(command_timeout=30), "gw.clinic.example", resolver)
    yield t
    await t.close()


async def test_envelope_goes_in_one_write(servers: MakeServer, transport: Transport) -> None:
    mx = servers(MX1)
    await mx.start()
    mx.script.rcpt["gone@pipe.example"] = "550 5.1.1 No such user"
    mx.script.rcpt["full@pipe.example"] = "452 4.2.2 Mailbox full"
    rcpts = ["a@pipe.example", "gone@pipe.example", "full@pipe.example", "b@pipe.example"]
    report = await transport.deliver("pipe.example", SENDER, rcpts, MESSAGE)
    assert [(r.address, r.status, r.code, r.text) for r in report.results] == [
        ("a@pipe.example", "delivered", 250, "2.0.0 Ok: queued"),
        ("gone@pipe.example", "permanent", 550, "5.1.1 No such user"),
        ("full@pipe.example", "transient", 452, "4.2.2 Mailbox full"),
        ("b@pipe.example", "delivered", 250, "2.0.0 Ok: queued"),
    ]
    ((sender, got_rcpts, data),) = mx.script.messages
    assert (sender, got_rcpts) == (SENDER, ["a@pipe.example", "b@pipe.example"])
    assert data == MESSAGE  # dot-stuffed on the way, unstuffed by the server
    envelope = next(r for r in mx.script.reads if r.startswith(b"MAIL"))
    assert envelope.count(b"\r\n") == 5  # MAIL and four RCPTs, one write


async def test_reused_connection_sends_rset_with_the_envelope(
    servers: MakeServer, transport: Transport
) -> None:
    mx = servers(MX1)
    await mx.start()
    mx.script.rcpt["gone@pipe.example"] = "550 5.1.1 No such user"
    first = await transport.deliver("pipe.example", SENDER, ["gone@pipe.example"], MESSAGE)
    assert first.results[0].status == "permanent"  # no DATA sent; the connection stays usable
    second = await transport.deliver("pipe.example", SENDER, ["a@pipe.example"], MESSAGE)
    assert second.results[0].status == "delivered"
    assert mx.script.connections == 1
    assert any(r.startswith(b"RSET\r\nMAIL FROM:") for r in mx.script.reads)
    assert len(mx.script.messages) == 1


async def test_pooled_connection_closed_by_server_is_replaced(
    servers: MakeServer, transport: Transport
) -> None:
    mx = servers(MX1)
    await mx.start()
    mx.script.close_idle = True
    for n in range(10):
        report = await transport.deliver("pipe.example", SENDER, [f"r{n}@pipe.example"], MESSAGE)
        assert report.results[0].status == "delivered"
        # Seen closed before reuse, or found dead by the RSET sent with the next envelope.
        await asyncio.sleep(0.05 if n % 2 else 0)
    assert len(mx.script.messages) == 10


async def test_pooled_connection_that_fails_the_rset_is_replaced(
    servers: MakeServer, transport: Transport
) -> None:
    mx = servers(MX1)
    await mx.start()
    mx.script.hang_up_on_rset = True
    for n in range(3):
        report = await transport.deliver("pipe.example", SENDER, [f"r{n}@pipe.example"], MESSAGE)
        assert report.results[0].status == "delivered"
    assert len(mx.script.messages) == 3
    assert mx.script.connections == 3  # each reuse found dead, none a delivery failure


@pytest.mark.parametrize(
    ("reply", "status", "tried_next"),
    [
        ("550 5.7.1 Sender rejected", "permanent", False),
        ("451 4.3.2 Busy", "delivered", True),  # another exchanger takes it
        ("421 4.3.2 Shutting down", "delivered", True),
    ],
)
async def test_mail_from_refused(
    servers: MakeServer, transport: Transport, reply: str, status: str, tried_next: bool
) -> None:
    mx1, mx2 = servers(MX1), servers(MX2)
    await mx1.start()
    await mx2.start()
    mx1.script.mail[SENDER] = reply
    rcpts = ["a@pipe.example", "b@pipe.example"]
    report = await transport.deliver("pipe.example", SENDER, rcpts, MESSAGE)
    assert [r.status for r in report.results] == [status, status]
    assert mx1.script.messages == []
    assert (len(mx2.script.messages) == 1) is tried_next
    if status == "permanent":
        assert report.results[0].text == "5.7.1 Sender rejected"


async def test_421_at_rcpt_moves_the_rest_to_the_next_mx(
    servers: MakeServer, transport: Transport
) -> None:
    mx1, mx2 = servers(MX1), servers(MX2)
    await mx1.start()
    await mx2.start()
    mx1.script.rcpt["gone@pipe.example"] = "550 5.1.1 No such user"
    mx1.script.rcpt["b@pipe.example"] = "421 4.3.2 Shutting down"
    rcpts = ["gone@pipe.example", "a@pipe.example", "b@pipe.example"]
    report = await transport.deliver("pipe.example", SENDER, rcpts, MESSAGE)
    assert [(r.address, r.status) for r in report.results] == [
        ("gone@pipe.example", "permanent"),
        ("a@pipe.example", "delivered"),
        ("b@pipe.example", "delivered"),
    ]
    assert mx1.script.messages == []
    assert mx2.script.messages[0][1] == ["a@pipe.example", "b@pipe.example"]


@pytest.mark.parametrize(
    ("data", "final", "status", "code"),
    [
        (["554 5.5.1 No valid recipients"], [], "permanent", 554),
        (["451 4.3.0 Try later"], [], "transient", 451),
        ([], ["554 5.6.0 Message rejected"], "permanent", 554),
        ([], ["452 4.3.1 Disk full"], "transient", 452),
    ],
)
async def test_refusals_at_data(
    servers: MakeServer,
    transport: Transport,
    data: list[str],
    final: list[str],
    status: str,
    code: int,
) -> None:
    mx = servers(MX1)
    await mx.start()
    mx.script.data, mx.script.final = data, final
    report = await transport.deliver("pipe.example", SENDER, ["a@pipe.example"], MESSAGE)
    assert [(r.status, r.code) for r in report.results] == [(status, code)]
    assert mx.script.messages == []
    # The connection is still in step: the next message goes through on it.
    again = await transport.deliver("pipe.example", SENDER, ["a@pipe.example"], MESSAGE)
    assert again.results[0].status == "delivered"
    assert mx.script.connections == 1
