"""Inbound SMTP protocol behaviour, driven by smtplib and raw sockets over loopback.

Every scenario runs a real InboundServer on a real Spool and checks the exact reply
and what reached the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtpd
import pytest
import trustme
from argon2 import PasswordHasher

from gateway.config import HostPort
from gateway.message import Envelope, QueuedMessage
from gateway.spool import Spool
from tests.test_inbound_helpers import (
    CLIENT_TIMEOUT,
    MESSAGE,
    in_thread,
    raw_session,
    running_gateway,
    smtp_client,
)

LAN = [{"name": "lan", "networks": ["127.0.0.0/8"]}]


def _user() -> dict[str, Any]:
    """The account "app", password "pw", that may send from any address."""
    return {
        "username": "app",
        "password_hash": PasswordHasher().hash("pw"),
        "allowed_senders": ["*"],
    }


# --- greeting and EHLO ---------------------------------------------------------------


async def test_banner_and_ehlo_reveal_no_version(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, connectors=LAN, users=[_user()]) as gw:
        greeting, ehlo, helo = await in_thread(
            lambda: raw_session(gw.port, b"EHLO client.test\r\n", b"HELP\r\n")
        )
        assert greeting == b"220 gw.test ESMTP\r\n"
        assert aiosmtpd.__version__.encode() not in ehlo + helo
        assert b"Python" not in ehlo + helo
        assert ehlo.split(b"\r\n")[:-1] == [
            b"250-gw.test",
            b"250-PIPELINING",
            b"250-SIZE 52428800",
            b"250-8BITMIME",
            b"250-SMTPUTF8",
            b"250 STARTTLS",  # and no AUTH before TLS
        ]


async def test_configured_banner(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, banner="ESMTP clinic relay") as gw:
        (greeting,) = await in_thread(lambda: raw_session(gw.port))
        assert greeting == b"220 gw.test ESMTP clinic relay\r\n"


async def test_auth_only_after_tls(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, users=[_user()]) as gw:
        _, _, auth = await in_thread(
            lambda: raw_session(gw.port, b"EHLO c.test\r\n", b"AUTH PLAIN AGFwcABwdw==\r\n")
        )
        assert auth == b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"

        def after_tls() -> Any:
            with smtp_client(gw.port) as c:
                c.starttls(context=gw.client_context())
                c.ehlo()
                auth = c.esmtp_features.get("auth", "")
                return auth, c.login("app", "pw")

        mechanisms, login = await in_thread(after_tls)
        assert mechanisms.split() == ["LOGIN", "PLAIN"]
        assert login == (235, b"2.7.0 Authentication successful")


async def test_no_auth_advertised_without_accounts(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca) as gw:

        def probe() -> Any:
            with smtp_client(gw.port) as c:
                c.starttls(context=gw.client_context())
                c.ehlo()
                return c.has_extn("auth"), c.docmd("AUTH", "PLAIN AGFwcABwdw==")

        assert await in_thread(probe) == (False, (504, b"5.5.4 Unrecognized authentication type"))


async def test_repeated_auth_failures_end_the_session(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, users=[_user()]) as gw:

        def guess() -> list[Any]:
            replies = []
            with smtp_client(gw.port) as c:
                c.starttls(context=gw.client_context())
                c.ehlo()
                for _ in range(3):
                    replies.append(c.docmd("AUTH", "PLAIN AGFwcAB3cm9uZw=="))  # app / wrong
                replies.append(c.getreply())
            return replies

        replies = await in_thread(guess)
        assert replies[:3] == [(535, b"5.7.8 Authentication credentials invalid")] * 3
        assert replies[3] == (421, b"4.7.0 Too many failed authentication attempts")


# --- addresses, sizes, recipients ---------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"MAIL FROM:<nodomain>", b"501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<a@-bad-.example>", b"501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<a@b@c>", b"553 5.1.3 Error: malformed address"),
        (b"MAIL FROM:<j\xc3\xb6rg@x.example>", b"553 5.6.7 Non-ASCII address requires SMTPUTF8"),
        (
            b"MAIL FROM:<a@x.example> SIZE=52428801",
            b"552 5.3.4 Message size exceeds fixed maximum message size",
        ),
    ],
)
async def test_sender_checks(
    tmp_path: Path, tls_ca: trustme.CA, command: bytes, reply: bytes
) -> None:
    async with running_gateway(tmp_path, tls_ca, connectors=LAN) as gw:
        replies = await in_thread(
            lambda: raw_session(gw.port, b"EHLO c.test\r\n", command + b"\r\n")
        )
        assert replies[-1] == reply + b"\r\n"


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"RCPT TO:<postmaster>", b"501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a@[300.1.1.1]>", b"501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<" + b"x" * 65 + b"@example.net>", b"501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a@[127.0.0.1]>", b"250 2.1.5 Ok"),
        (b"RCPT TO:<a@[IPv6:2001:db8::1]>", b"250 2.1.5 Ok"),
    ],
)
async def test_recipient_checks(
    tmp_path: Path, tls_ca: trustme.CA, command: bytes, reply: bytes
) -> None:
    async with running_gateway(tmp_path, tls_ca, connectors=LAN) as gw:
        replies = await in_thread(
            lambda: raw_session(
                gw.port, b"EHLO c.test\r\n", b"MAIL FROM:<a@clinic.example>\r\n", command + b"\r\n"
            )
        )
        assert replies[-1] == reply + b"\r\n"


async def test_smtputf8_addresses(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, connectors=LAN) as gw:

        def send() -> Any:
            with smtp_client(gw.port) as c:
                return c.sendmail(
                    "jörg@clinic.example", ["zoë@exämple.net"], MESSAGE, mail_options=["SMTPUTF8"]
                )

        assert await in_thread(send) == {}
        (msg,) = gw.messages()
        assert msg.envelope.smtputf8 and msg.envelope.rcpt_to == ("zoë@exämple.net",)
        assert b"with UTF8SMTP id" in await gw.body(msg)


async def test_size_is_enforced_even_when_the_client_lies(
    tmp_path: Path, tls_ca: trustme.CA
) -> None:
    async with running_gateway(tmp_path, tls_ca, connectors=LAN, max_message_size=2000) as gw:
        big = MESSAGE + b"x" * 70 + b"\r\n" * 0 + (b"y" * 70 + b"\r\n") * 40

        def send() -> Any:
            with smtp_client(gw.port) as c:
                c.ehlo()
                assert c.esmtp_features["size"] == "2000"
                declared = c.mail("a@clinic.example", ["SIZE=3000"])
                c.rset()
                c.mail("a@clinic.example", ["SIZE=100"])  # a lie
                c.rcpt("p@example.net")
                lied = c.data(big)
                # The session goes on: a message within the limit is still welcome.
                ok = c.sendmail("a@clinic.example", ["p@example.net"], MESSAGE)
                return declared, lied, ok

        declared, lied, ok = await in_thread(send)
        assert declared == (552, b"5.3.4 Message size exceeds fixed maximum message size")
        assert lied == (552, b"5.3.4 Message size exceeds fixed maximum message size")
        assert ok == {}
        assert len(gw.messages()) == 1


async def test_too_many_recipients(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, connectors=LAN, max_recipients=3) as gw:

        def send() -> Any:
            with smtp_client(gw.port) as c:
                c.ehlo()
                c.mail("a@clinic.example")
                replies = [c.rcpt(f"p{i}@example.net") for i in range(4)]
                replies.append(c.rcpt("p0@example.net"))  # a repeat is not a new recipient
                return replies, c.data(MESSAGE)

        replies, data = await in_thread(send)
        assert [r[0] for r in replies] == [250, 250, 250, 452, 250]
        assert replies[3] == (452, b"4.5.3 Too many recipients")
        assert data[0] == 250
        (msg,) = gw.messages()
        assert msg.envelope.rcpt_to == ("p0@example.net", "p1@example.net", "p2@example.net")


async def test_long_lines_are_refused(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, connectors=LAN) as gw:

        def send(line_length: int) -> Any:
            with smtp_client(gw.port) as c:
                c.ehlo()
                c.mail("a@clinic.example")
                c.rcpt("p@example.net")
                return c.data(MESSAGE + b"z" * line_length + b"\r\n" + b"." * 998 + b"\r\n")

        assert (await in_thread(lambda: send(998)))[0] == 250
        assert await in_thread(lambda: send(5000)) == (
            554,
            b"5.6.0 Message has lines longer than 998 characters",
        )
        (msg,) = gw.messages()
        assert (await gw.body(msg)).endswith(b"z" * 998 + b"\r\n" + b"." * 998 + b"\r\n")


# --- SMTP smuggling ---------------------------------------------------------------------

_SMUGGLED = b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nforged\r\n"


@pytest.mark.parametrize(
    "ending",
    [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\n"],
    ids=["LF.LF", "CR.CR", "CRLF.LF", "LF.CRLF", "CR.CRLF", "CRLF.CR", "bare-LF"],
)
async def test_smtp_smuggling_is_refused(tmp_path: Path, tls_ca: trustme.CA, ending: bytes) -> None:
    async with running_gateway(tmp_path, tls_ca, connectors=LAN) as gw:

        def attack() -> list[bytes]:
            data = b"Subject: hi\r\n\r\nhello" + ending + _SMUGGLED + b".\r\n"
            with socket.create_connection(("127.0.0.1", gw.port), timeout=CLIENT_TIMEOUT) as s:
                f = s.makefile("rb")
                replies = [f.readline()]
                for command in (b"HELO c.test", b"MAIL FROM:<a@x.example>", b"RCPT TO:<p@x.net>"):
                    s.sendall(command + b"\r\n")
                    replies.append(f.readline())
                s.sendall(b"DATA\r\n")
                replies.append(f.readline())
                s.sendall(data)
                replies.append(f.read())  # the reply, then the server hangs up
                return replies

        replies = await in_thread(attack)
        assert [r[:4] for r in replies[:4]] == [b"220 ", b"250 ", b"250 ", b"250 "]
        assert replies[4] == b"354 End data with <CR><LF>.<CR><LF>\r\n"
        assert replies[5] == b"521 5.5.2 Error: bare <CR> or <LF> received\r\n"
        assert gw.messages() == []


async def test_dot_stuffing_round_trip(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, connectors=LAN) as gw:
        body = b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\nend\r\n"

        def send() -> Any:
            with smtp_client(gw.port) as c:
                return c.sendmail("a@clinic.example", ["p@example.net"], body)  # smtplib stuffs

        assert await in_thread(send) == {}
        (msg,) = gw.messages()
        assert (await gw.body(msg)).endswith(body)


# --- loops, trace header -----------------------------------------------------------------


async def test_hop_limit(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, connectors=LAN, max_hops=5) as gw:

        def send(hops: int) -> Any:
            trace = b"".join(
                b"Received: from h%d.example by h%d.example;\r\n\tMon, 1 Jan 2024 00:00 +0000\r\n"
                % (i, i + 1)
                for i in range(hops)
            )
            with smtp_client(gw.port) as c:
                c.ehlo()
                c.mail("a@clinic.example")
                c.rcpt("p@example.net")
                # A Received line in the body is not a hop.
                return c.data(trace + MESSAGE + b"Received: from body.example\r\n")

        assert (await in_thread(lambda: send(5)))[0] == 250
        assert await in_thread(lambda: send(6)) == (554, b"5.4.6 Too many hops")
        assert len(gw.messages()) == 1


async def test_received_header(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, connectors=LAN) as gw:

        def send() -> None:
            with smtp_client(gw.port, source="127.0.0.9") as c:
                c.sendmail("a@clinic.example", ["one@example.net"], MESSAGE)
                c.starttls(context=gw.client_context())
                c.ehlo("bad helo (with) parens")
                c.sendmail("a@clinic.example", ["one@example.net", "two@example.net"], MESSAGE)

        await in_thread(send)
        first, second = [await gw.body(m) for m in gw.messages()]
        head, _, rest = first.partition(b"\r\nFrom: ")
        lines = head.split(b"\r\n")
        assert lines[0] == b"Received: from client.test ([127.0.0.9])"
        assert lines[1].startswith(b"\tby gw.test with ESMTP id ")
        assert lines[2] == b"\tfor <one@example.net>;"
        assert lines[3].startswith(b"\t") and lines[3].endswith(b" +0000")
        assert rest.startswith(b"app@clinic.example")
        # Several recipients are not listed; an unusable HELO is replaced by the address.
        head = second.partition(b"\r\nFrom: ")[0]
        assert head.startswith(b"Received: from [127.0.0.9] ([127.0.0.9])\r\n\t(using TLSv1.")
        assert b"with ESMTPS id" in head and b"for <" not in head


# --- timeouts, connection limit ----------------------------------------------------------


def _read_until_closed(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(4096):
        out += chunk
    return out


async def test_command_timeout(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, command_timeout=1) as gw:

        def idle() -> bytes:
            with socket.create_connection(("127.0.0.1", gw.port), timeout=CLIENT_TIMEOUT) as s:
                return _read_until_closed(s)

        out = await in_thread(idle)
        assert out.startswith(b"220 ")
        assert out.endswith(b"421 4.4.2 gw.test Error: timeout exceeded\r\n")


async def test_data_timeout(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(
        tmp_path, tls_ca, connectors=LAN, command_timeout=600, data_timeout=1
    ) as gw:

        def stall() -> bytes:
            with socket.create_connection(("127.0.0.1", gw.port), timeout=CLIENT_TIMEOUT) as s:
                s.sendall(
                    b"HELO c.test\r\nMAIL FROM:<a@clinic.example>\r\nRCPT TO:<p@example.net>\r\n"
                    b"DATA\r\nSubject: half a message\r\n"
                )
                return _read_until_closed(s)

        out = await in_thread(stall)
        assert b"354 " in out
        assert out.endswith(b"421 4.4.2 gw.test Error: timeout exceeded\r\n")
        assert gw.messages() == []


async def test_connection_limit(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, max_connections=2) as gw:

        def crowd() -> list[bytes]:
            with contextlib.ExitStack() as stack:
                greetings = []
                for _ in range(3):
                    s = stack.enter_context(
                        socket.create_connection(("127.0.0.1", gw.port), timeout=CLIENT_TIMEOUT)
                    )
                    greetings.append(s.makefile("rb").readline())
                return greetings

        greetings = await in_thread(crowd)
        assert greetings[:2] == [b"220 gw.test ESMTP\r\n"] * 2
        assert greetings[2] == b"421 4.7.0 gw.test Too many connections, try again later\r\n"

        # The slots are free again once those clients have gone.
        def later() -> bytes:
            return raw_session(gw.port)[0]

        for _ in range(200):
            if await in_thread(later) == b"220 gw.test ESMTP\r\n":
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("connection slots were never released")


# --- failures are never leaked -------------------------------------------------------------


class _BrokenSpool:
    """The real spool with a put that fails in a way nobody planned for."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    async def put(self, envelope: Envelope, data: bytes) -> QueuedMessage:
        raise RuntimeError("secret internal detail: /var/lib/sealgate is haunted")


async def test_unexpected_error_is_a_generic_451(
    tmp_path: Path, tls_ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_gateway(tmp_path, tls_ca, connectors=LAN, wrap_spool=_BrokenSpool) as gw:

        def send() -> Any:
            with smtp_client(gw.port) as c:
                c.ehlo()
                c.mail("a@clinic.example")
                c.rcpt("p@example.net")
                return c.data(MESSAGE), c.noop(), c.mail("b@clinic.example")

        data, noop, mail = await in_thread(send)
        assert data == (451, b"4.3.0 Temporary server error, try again later")
        assert noop[0] == 250 and mail[0] == 250  # the session survives, state was reset
        errors = [r for r in caplog.records if r.getMessage() == "error"]
        assert errors and "haunted" in errors[0].fields["exception"]  # type: ignore[attr-defined]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs: a real filesystem that really runs out of space."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_disk_full_is_452(tmp_path: Path, tls_ca: trustme.CA, small_disk: Path) -> None:
    async with running_gateway(
        tmp_path, tls_ca, connectors=LAN, data_dir=small_disk, max_message_size=8 << 20
    ) as gw:
        big = MESSAGE + (b"x" * 76 + b"\r\n") * 40000  # about 3 MB

        def send() -> Any:
            with smtp_client(gw.port) as c:
                c.ehlo()
                c.mail("a@clinic.example")
                c.rcpt("p@example.net")
                return c.data(big), c.sendmail("a@clinic.example", ["p@example.net"], MESSAGE)

        full, small = await in_thread(send)
        assert full == (452, b"4.3.1 Insufficient system storage")
        assert small == {}
        assert len(gw.messages()) == 1


# --- shutdown ---------------------------------------------------------------------------------


async def test_stop_lets_open_transactions_finish(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca, connectors=LAN) as gw:
        port = gw.port
        in_transaction = threading.Event()
        stopping = threading.Event()

        def busy_client() -> Any:
            with smtp_client(gw.port) as c:
                c.ehlo()
                c.mail("a@clinic.example")
                c.rcpt("p@example.net")
                in_transaction.set()
                assert stopping.wait(CLIENT_TIMEOUT)
                data = c.data(MESSAGE)
                return data, c.getreply()

        def idle_client() -> bytes:
            with socket.create_connection(("127.0.0.1", gw.port), timeout=CLIENT_TIMEOUT) as s:
                s.sendall(b"EHLO c.test\r\n")
                return _read_until_closed(s)

        busy = asyncio.ensure_future(in_thread(busy_client))
        idle = asyncio.ensure_future(in_thread(idle_client))
        await asyncio.get_running_loop().run_in_executor(None, in_transaction.wait)
        stop = asyncio.ensure_future(gw.server.stop(CLIENT_TIMEOUT))
        assert (await idle).endswith(b"421 4.3.2 gw.test Service shutting down\r\n")
        stopping.set()
        data, bye = await busy
        await stop
        assert data[0] == 250
        assert bye == (421, b"4.3.2 gw.test Service shutting down")
        assert len(gw.messages()) == 1
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT).close()


async def test_listening_lines(
    tmp_path: Path, tls_ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="sealgate.event")
    async with running_gateway(
        tmp_path,
        tls_ca,
        listen=[HostPort("127.0.0.1", 0), HostPort("127.0.0.2", 0)],
        listen_implicit_tls=[HostPort("127.0.0.1", 0)],
    ) as gw:
        lines = [r.fields for r in caplog.records if r.getMessage() == "listening"]  # type: ignore[attr-defined]
        assert lines == [
            {"proto": "smtp", "address": f"127.0.0.1:{gw.port_of(0)}", "tls": "starttls"},
            {"proto": "smtp", "address": f"127.0.0.2:{gw.port_of(1)}", "tls": "starttls"},
            {"proto": "smtp", "address": f"127.0.0.1:{gw.port_of(2)}", "tls": "implicit"},
        ]
