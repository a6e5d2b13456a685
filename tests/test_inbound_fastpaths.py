"""The inbound fast paths give the answers of the slow, obvious code they replace.

DATA is scanned in whole pieces rather than line by line, MAIL/RCPT paths are
parsed with one regular expression for the common shapes, and each connection's
protocol object is copied from a per-listener template instead of introspected
anew. Each is checked here against the straightforward version.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import types
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import config
from gateway.inbound.server import DataScanner, InboundServer, SealgateSMTP
from tests.test_inbound_helpers import running_gateway

LIMIT = 4000  # small, so that "too big" is reached too

# --- DATA: the piecewise scanner against the line-by-line reader -----------------


async def _reference(reader: asyncio.StreamReader, limit: int) -> tuple[str, bytes]:
    """The previous reader: one readuntil per line (aiosmtpd's 1001-byte reader limit)."""
    lines: list[bytes] = []
    size = 0
    continuing = too_long = too_big = bare = False
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
            complete = True
        except asyncio.LimitOverrunError as exc:
            line = await reader.read(exc.consumed)
            complete = False
        except asyncio.IncompleteReadError:
            return "gone", b""
        if complete and not continuing and line == b".\r\n":
            break
        size += len(line)
        if size > limit * 2:
            return "discarded", b""
        if not complete or continuing:
            too_long = True
            continuing = not complete
        elif line.count(b"\n") != 1 or line.count(b"\r") != 1:
            bare = True
        elif len(line) > 1001:
            too_long = True
        if size > limit:
            too_big = True
        if bare or too_long or too_big:
            lines.clear()
            continue
        lines.append(line[1:] if line[:1] == b"." else line)
    if bare:
        return "bare", b""
    if too_big:
        return "too big", b""
    if too_long:
        return "too long", b""
    return "ok", b"".join(lines)


async def _scanner(reader: asyncio.StreamReader, limit: int) -> tuple[str, bytes]:
    scanner = DataScanner(limit)
    while True:
        try:
            if await scanner.receive(reader):
                break
        except asyncio.IncompleteReadError:
            return "gone", b""
        if scanner.size > limit * 2:
            return "discarded", b""
    if scanner.bare:
        return "bare", b""
    if scanner.too_big:
        return "too big", b""
    if scanner.too_long:
        return "too long", b""
    return "ok", scanner.message()


async def _run(
    reader_func: Any, stream: bytes, cuts: list[int], limit: int
) -> tuple[str, bytes, bytes]:
    """Feed stream in pieces (as a network would) to reader_func; its verdict and what is left."""
    reader = asyncio.StreamReader(limit=1001)
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    async def feed() -> None:
        for piece in pieces:
            reader.feed_data(piece)
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.ensure_future(feed())
    verdict, content = await reader_func(reader, limit)
    await feeder
    rest = await reader.read() if verdict not in ("gone", "discarded") else b""
    return verdict, content, rest


_TOKENS = st.sampled_from(
    [
        b"a",
        b"Subject: x",
        b".",
        b"..",
        b"\r",
        b"\n",
        b"\r\n",
        b".\r\n",
        b"\r\n.\r\n",
        b"\r\n..\r\n",
        b"\r\r\n",
        b"x" * 500,
        b"y" * 998,
        b"z" * 1000,
        b"QUIT\r\n",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    body=st.lists(_TOKENS, max_size=40).map(b"".join),
    end=st.sampled_from(
        [b"\r\n.\r\n", b".\r\n", b"\r\n.\r\nQUIT\r\n", b"\r\n.\r\nMAIL FROM:<a@b>\r\n", b""]
    ),
    cut_points=st.lists(st.integers(min_value=1, max_value=20000), max_size=8),
)
def test_scanner_matches_line_reader(body: bytes, end: bytes, cut_points: list[int]) -> None:
    stream = body + end
    cuts = sorted({c for c in cut_points if c < len(stream)})

    async def both() -> None:
        expected = await _run(_reference, stream, cuts, LIMIT)
        got = await _run(_scanner, stream, cuts, LIMIT)
        assert got == expected

    asyncio.run(both())


def test_scanner_keeps_what_follows_the_end() -> None:
    async def go() -> tuple[str, bytes, bytes]:
        return await _run(_scanner, b"A: b\r\n\r\n..x\r\n.\r\nQUIT\r\n", [3, 17], LIMIT)

    assert asyncio.run(go()) == ("ok", b"A: b\r\n\r\n.x\r\n", b"QUIT\r\n")


def test_scanner_long_line_split_at_every_byte() -> None:
    line = b"q" * 1500 + b"\r\n"

    async def go() -> None:
        for cut in range(1, len(line), 97):
            expected = await _run(_reference, line + b".\r\n", [cut], 10_000)
            assert await _run(_scanner, line + b".\r\n", [cut], 10_000) == expected

    asyncio.run(go())


# --- MAIL / RCPT paths -------------------------------------------------------------


@pytest.fixture(scope="module")
def protocol() -> SealgateSMTP:
    async def make() -> SealgateSMTP:
        cfg = config.load(None)
        server = InboundServer(cfg.smtp, "gw.example", _NoSpool(), _tls_context())
        return server._factory(False)()

    return asyncio.run(make())


class _NoSpool:
    async def put(self, envelope: Any, data: bytes) -> Any:
        raise AssertionError("not used")


def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)


_PATH_PIECES = st.sampled_from(
    ["<", ">", "a", "B", "0", ".", "..", "@", "-", "_", "+", "=", "/", "'", "`", "{", "}", "|",
     "~", "!", "#", "$", "%", "&", "*", "?", "^", "(", ")", "(c)", '"', '"q q"', " ", "\t",
     "[", "]", "[127.0.0.1]", ":", ",", ";", "\\", "é", "example.org", "SIZE=100",
     "BODY=8BITMIME", "<>", "<a@b>", "<a.b@c.d>"]
)  # fmt: skip


@settings(max_examples=800, deadline=None)
@given(st.lists(_PATH_PIECES, max_size=12).map("".join))
def test_getaddr_matches_aiosmtpd(protocol: SealgateSMTP, arg: str) -> None:
    assert _outcome(protocol._getaddr, arg) == _outcome(lambda a: SMTP._getaddr(protocol, a), arg)


def _outcome(func: Any, arg: str) -> object:
    # aiosmtpd's parser raises on some inputs ("<" alone): the fast path must too.
    try:
        return func(arg)
    except Exception as exc:
        return type(exc)


@pytest.mark.parametrize(
    "arg",
    [
        "<a@b>",
        "<first.last@example.org> SIZE=100 BODY=8BITMIME",
        "<first.last@example.org>  (comment) SIZE=1",
        "<x@y>SIZE=1",
        "<a..b@example.org>",
        "<.a@example.org>",
        "<a@[127.0.0.1]>",
        '<"q q"@example.org>',
        "<>",
        "a@b",
        " <a@b>",
        "<a@b.>",
    ],
)
def test_getaddr_examples(protocol: SealgateSMTP, arg: str) -> None:
    assert protocol._getaddr(arg) == SMTP._getaddr(protocol, arg)


# --- protocol objects copied from the listener's template ----------------------------


def _bound_to_other(value: Any, owner: object) -> bool:
    if isinstance(value, types.MethodType):
        return isinstance(value.__self__, SMTP) and value.__self__ is not owner
    if isinstance(value, tuple):
        return any(_bound_to_other(v, owner) for v in value)
    if isinstance(value, dict):
        return any(_bound_to_other(v, owner) for v in value.values())
    return False


def test_connections_share_no_state(tmp_path: Path) -> None:
    async def make() -> tuple[SealgateSMTP, SealgateSMTP]:
        cfg = config.load(None)
        server = InboundServer(cfg.smtp, "gw.example", _NoSpool(), _tls_context())
        make_one = server._factory(False)
        return make_one(), make_one()

    a, b = asyncio.run(make())
    assert a.sid != b.sid
    # Nothing in one connection points at another protocol object (the template included).
    for proto in (a, b):
        for name, value in vars(proto).items():
            assert not _bound_to_other(value, proto), name
    # Containers a connection may change are its own.
    shared = {
        name
        for name, value in vars(a).items()
        if isinstance(value, dict | list | set | bytearray | collections.deque)
        and value is vars(b).get(name)
    }
    # Read-only lookup tables filled once by aiosmtpd's constructor.
    assert shared <= {"_handle_hooks", "_call_limit_base"}
    assert a._stream_reader is not b._stream_reader
    assert a.command_size_limits is not b.command_size_limits
    assert a.command_size_limits["MAIL"] > SMTP.command_size_limit
    assert a._smtp_methods["MAIL"].__self__ is a


# --- replies to a pipelined group go out together -------------------------------------


async def _read_replies(reader: asyncio.StreamReader, count: int) -> tuple[list[bytes], int]:
    """count complete replies, and how many reads it took to get them."""
    buf, reads = b"", 0
    while buf.count(b"\r\n") < count:
        chunk = await asyncio.wait_for(reader.read(65536), 30)
        assert chunk, buf
        buf += chunk
        reads += 1
    return buf.split(b"\r\n")[:-1], reads


async def test_pipelined_group_is_answered_in_one_write(tmp_path: Path, tls_ca: trustme.CA) -> None:
    lan = [{"name": "lan", "networks": ["127.0.0.0/8"]}]
    async with running_gateway(tmp_path, tls_ca, connectors=lan) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            await _read_replies(reader, 1)  # greeting
            writer.write(b"EHLO client.example\r\n")
            ehlo, _ = await _read_replies(reader, 1)
            while not ehlo[-1].startswith(b"250 "):
                ehlo += (await _read_replies(reader, 1))[0]
            assert any(b"PIPELINING" in line for line in ehlo)
            writer.write(
                b"MAIL FROM:<a@clinic.example>\r\n"
                b"RCPT TO:<b@partner.example>\r\n"
                b"RCPT TO:<c@partner.example>\r\n"
                b"DATA\r\n"
            )
            replies, reads = await _read_replies(reader, 4)
            assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354"]
            assert reads == 1  # one write for the group (loopback delivers it whole)
            writer.write(b"Subject: x\r\n\r\nhello\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
            replies, _ = await _read_replies(reader, 4)
            assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"221"]
        finally:
            writer.close()
    assert len(gw.spool.load_all()) == 1
