"""Inbound SMTP listeners: aiosmtpd's protocol, hardened, on our own asyncio servers.

The protocol class keeps to protocol matters (framing, limits, timeouts, TLS);
SMTP policy lives in gateway/inbound/handler.py.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import secrets
import ssl
import traceback
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, Session, TLSSetupException

from gateway import log
from gateway.config import HostPort, SmtpConfig
from gateway.inbound import relay
from gateway.inbound.auth import Authenticator
from gateway.inbound.handler import (
    TEMP_FAILURE,
    TOO_BIG,
    InboundHandler,
    PolicyLike,
    SpoolLike,
    Transaction,
)

# SMTP smuggling (CVE-2023-51764 and relatives): a bare LF or CR inside DATA lets a
# downstream server see an end of data that we did not. We only ever end DATA at
# <CR><LF>.<CR><LF> (RFC 5321 §4.1.1.4; aiosmtpd 1.4.6 does too) and refuse such a
# message outright with the reply Postfix uses for smtpd_forbid_bare_newline
# (https://www.postfix.org/smtp-smuggling.html), "521 5.5.2 ... bare <LF> received",
# then close the connection as Postfix does (RFC 7504: 521 = no mail accepted here).
BARE_NEWLINE = "521 5.5.2 Error: bare <CR> or <LF> received"
# RFC 5321 §4.5.3.1.6: text lines are at most 1000 octets with the CRLF (998 + CRLF,
# plus one for a leading transparency dot); RFC 3463 X.6.0 for the content problem.
LINE_TOO_LONG = "554 5.6.0 Message has lines longer than 998 characters"
# RFC 5321 §3.8 / §4.2.2: 421 before closing; RFC 3463 X.4.2 (timeout), X.3.2 (shutting
# down), X.7.0 (connection refused by local policy).
TIMEOUT = "421 4.4.2 {host} Error: timeout exceeded"
SHUTTING_DOWN = "421 4.3.2 {host} Service shutting down"
TOO_MANY_CONNECTIONS = "421 4.7.0 {host} Too many connections, try again later"

_MAX_LINE = 1001  # 998 characters + CRLF + a transparency dot
_TIMER_SLICE = 64 * 1024  # restart the data timeout after this many bytes of progress
_DISCARD_FACTOR = 2  # past this multiple of the size limit, stop reading and hang up
# A line whose CRLF lies beyond the reader's limit arrives in pieces: it is too long
# whatever it holds, so it is not also searched for bare CR or LF (see DataScanner).
_PIECEWISE_LINE = _MAX_LINE + 2
_CRLF = b"\r\n"
_DOT_LINE_END = b".\r\n"
# Replies held back for a pipelining client are sent at the latest at this size.
_HELD_REPLIES = 8192

# The paths nearly every client sends, "<local@domain>" with a dot-atom local part and
# an ASCII host name, optionally followed by parameters. Parsed here with one regular
# expression; anything else goes to aiosmtpd's RFC 5322 parser, which costs a hundred
# times more (it even defines a class per call). The result is the same for both.
_SIMPLE_PATH = re.compile(
    r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*>"
)


def _new_session_id() -> str:
    return secrets.token_hex(6)


@dataclass(frozen=True)
class TLSFacts:
    """The negotiated TLS parameters of a connection."""

    version: str
    cipher: str
    peer_cert: bytes | None  # DER, when the client presented a certificate

    @property
    def summary(self) -> str:
        """e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384" (the form ClientInfo.tls records)."""
        return f"{self.version} {self.cipher}"


class _Session(Session):
    """aiosmtpd's session without the deprecation warning it logs on every login."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _VerbMethods(Mapping[str, Any]):
    """A connection's smtp_* methods by verb (aiosmtpd's _smtp_methods), bound when looked up.

    Binding the twenty-odd verbs of every new connection up front costs more than
    the few lookups a session makes.
    """

    __slots__ = ("_owner", "_verbs")

    def __init__(self, owner: SMTP, verbs: frozenset[str]) -> None:
        self._owner = owner
        self._verbs = verbs

    def __getitem__(self, verb: str) -> Any:
        if verb not in self._verbs:
            raise KeyError(verb)
        return getattr(self._owner, "smtp_" + verb)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._verbs))

    def __len__(self) -> int:
        return len(self._verbs)


class DataScanner:
    """The DATA stream, fed in pieces as they arrive: where it ends and whether it is acceptable.

    Only <CRLF>.<CRLF> ends the data (RFC 5321 §4.1.1.4): a "." line right after a
    CRLF, or at the very start. Lines end at CRLF only; a CR or LF anywhere else is
    bare (SMTP smuggling), a line over 998 characters is too long, and a message
    over the limit is too big. A line whose CRLF lies beyond the reader's limit
    counts as too long and is not searched for bare CR or LF, as when each line
    was read on its own. Whole pieces are checked with bytes methods; only a piece
    with a suspect line is walked line by line. Once the message is refused,
    nothing more is kept, so memory stays bounded by the limit.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0  # bytes of the message as sent (dot-stuffed), end line excluded
        self.bare = False
        self.too_long = False
        self._parts: list[bytes] = []  # accepted lines, transparency dots removed
        self._carry = b""  # the unfinished last line, or only its last byte once too long
        self._carry_len = 0  # the unfinished line's full length so far
        self._last2 = b""  # the last two bytes fed, to tell where lines start

    @property
    def too_big(self) -> bool:
        """The message is over the size limit."""
        return self.size > self.limit

    @property
    def refused(self) -> bool:
        """Some check failed: the message will not be accepted."""
        return self.bare or self.too_long or self.too_big

    async def receive(self, reader: asyncio.StreamReader) -> bool:
        """Read and take the next piece; True once the end-of-data line has been read.

        Reads what has arrived up to the next ".<CRLF>" (a candidate end), or past
        the reader's limit whatever has arrived, so nothing after the end-of-data
        line is consumed: pipelined commands stay in the reader. Raises
        asyncio.IncompleteReadError when the client goes away first.
        """
        try:
            chunk = await reader.readuntil(_DOT_LINE_END)
        except asyncio.LimitOverrunError as exc:
            chunk = await reader.read(exc.consumed)
        else:
            if self.ends_data(chunk):
                self.feed(chunk[: -len(_DOT_LINE_END)])
                return True
        self.feed(chunk)
        return False

    def ends_data(self, chunk: bytes) -> bool:
        """Whether chunk, read up to and including a ".<CRLF>", ends with the end-of-data line."""
        dot = len(chunk) - len(_DOT_LINE_END)
        if dot == 0 and self.size == 0:
            return True  # "." as the first line: an empty message
        return (self._last2 + chunk[max(0, dot - 2) : dot])[-2:] == _CRLF

    def feed(self, data: bytes) -> None:
        """Take the next piece of the message (never the end-of-data line itself)."""
        if not data:
            return
        self.size += len(data)
        self._last2 = (self._last2 + data[-2:])[-2:]
        buf = self._carry + data if self._carry else data
        end = buf.rfind(_CRLF)
        if end < 0:
            self._carry_len += len(data)
            self._carry = buf if self._carry_len <= _PIECEWISE_LINE else buf[-1:]
            return
        complete, rest = buf[: end + 2], buf[end + 2 :]
        self._check(complete, dropped=self._carry_len - len(self._carry))
        self._carry = rest if len(rest) <= _PIECEWISE_LINE else rest[-1:]
        self._carry_len = len(rest)
        if self.refused:
            self._parts.clear()
            return
        # RFC 5321 §4.5.2: remove the transparency dot; complete starts at a line start.
        if complete[:1] == b".":
            complete = complete[1:]
        self._parts.append(complete.replace(b"\r\n.", _CRLF))

    def _check(self, lines: bytes, dropped: int) -> None:
        """Check complete lines; the first is dropped bytes longer than shown (a long line)."""
        crlfs = lines.count(_CRLF)
        if not dropped and lines.count(b"\r") == crlfs and lines.count(b"\n") == crlfs:
            if len(lines) > _MAX_LINE and max(map(len, lines.split(_CRLF))) + 2 > _MAX_LINE:
                self.too_long = True
            return
        for i, line in enumerate(lines.split(_CRLF)[:-1]):
            length = len(line) + 2 + (dropped if i == 0 else 0)
            if length > _PIECEWISE_LINE:
                self.too_long = True
            elif b"\r" in line or b"\n" in line:
                self.bare = True
            elif length > _MAX_LINE:
                self.too_long = True

    def message(self) -> bytes:
        """The message without transparency dots (empty once refused)."""
        return b"".join(self._parts)


class SealgateSMTP(SMTP):
    """One client connection."""

    def __init__(
        self,
        server: InboundServer,
        handler: InboundHandler,
        cfg: SmtpConfig,
        hostname: str,
        tls_context: ssl.SSLContext,
        *,
        implicit_tls: bool,
        auth_mechanisms_off: list[str],
    ) -> None:
        # An instance dict: aiosmtpd's class-level default is shared by every
        # connection and grows each time any client says EHLO.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(
            handler,
            data_size_limit=None,  # enforced (with enhanced codes) in smtp_DATA and MAIL
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident=cfg.banner or "ESMTP",
            # Implicit TLS is TLS from the first byte: no STARTTLS, AUTH at once.
            tls_context=None if implicit_tls else tls_context,
            require_starttls=False,
            timeout=cfg.command_timeout,
            auth_required=False,
            auth_require_tls=not implicit_tls,
            auth_exclude_mechanism=auth_mechanisms_off,
            proxy_protocol_timeout=cfg.proxy_protocol_timeout if cfg.proxy_protocol else None,
        )
        # RFC 1870: the MAIL line grows by " SIZE=n", RFC 6531 by " SMTPUTF8",
        # RFC 6152 by " BODY=8BITMIME".
        self.command_size_limits["MAIL"] = SMTP.command_size_limit + 26 + 10 + 14
        self._server = server
        self._cfg = cfg
        self._data_timeout = cfg.data_timeout
        self._verbs = frozenset(self._smtp_methods)
        self._init_connection()

    def _init_connection(self) -> None:
        self._held: list[bytes] = []
        self._held_size = 0
        self._refused = False
        self._released = False
        self.in_data = False
        self.sid = _new_session_id()
        self.client_ip = ""
        self.client_port: int | None = None
        self.transactions = 0
        self.auth_failures = 0
        self.handler_task: asyncio.Task[None] | None = None

    def spawn(self) -> SealgateSMTP:
        """A protocol for a new connection, set up like this one (a template never connected).

        aiosmtpd's constructor introspects the protocol and the handler (dir,
        inspect.getmembers, inspect.signature) to find its hooks: a few hundred
        microseconds per connection, the same answer every time. A listener
        builds one template with it; each connection copies the template's
        settings and gets fresh connection state: stream reader and writer
        state, command size limits, and its own bound command methods.
        """
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        asyncio.StreamReaderProtocol.__init__(
            clone,
            asyncio.StreamReader(limit=self.line_length_limit, loop=self.loop),
            client_connected_cb=clone._cb_client_connected,
            loop=self.loop,
        )
        clone.command_size_limits = collections.defaultdict(
            lambda: SMTP.command_size_limit, self.command_size_limits
        )
        clone._smtp_methods = _VerbMethods(clone, self._verbs)  # type: ignore[assignment]
        clone._auth_methods = {
            # aiosmtpd's own mechanisms are methods of the protocol: bind them to the clone.
            name: attr._replace(method=types.MethodType(attr.method.__func__, clone))  # type: ignore[attr-defined]
            if attr.is_builtin
            else attr
            for name, attr in self._auth_methods.items()
        }
        clone._init_connection()
        return clone

    # -- connection life -----------------------------------------------------------

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def _create_envelope(self) -> Transaction:
        return Transaction()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the client (or refuse it when over max_connections)."""
        if self._original_transport is None and self.transport is None:
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple):
                self.client_ip, self.client_port = str(peer[0]), int(peer[1])
            if not self._server.admit(self):
                self._refused = True
                log.event("refused", session=self.sid, ip=self.client_ip, reason="max_connections")
                text = TOO_MANY_CONNECTIONS.format(host=self.hostname)
                transport.write(text.encode() + b"\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
        super().connection_made(transport)
        if self.handler_task is None:
            self.handler_task = self._handler_coroutine

    def connection_lost(self, error: Exception | None) -> None:
        """Release the connection slot; aiosmtpd may call this twice after a TLS failure."""
        if self._refused:
            return
        if not self._released:
            self._released = True
            self._server.release(self)
        if self.transport is not None:
            super().connection_lost(error)

    def eof_received(self) -> bool | None:
        """Treat end of input like aiosmtpd does, except on refused connections."""
        if self._refused:
            return False
        result: bool | None = super().eof_received()
        return result

    def _timeout_cb(self) -> None:
        # RFC 5321 §4.5.3.2 lets the server close an idle connection; 421 says why.
        log.event("timeout", session=self.sid, ip=self.client_ip, in_data=self.in_data)
        self.close_with(TIMEOUT.format(host=self.hostname))

    async def push(self, status: str | bytes) -> None:
        """Send a reply, or hold it while the client's next command is already here.

        RFC 2920: a client that pipelines reads the replies to a whole group of
        commands; they go out together, in one write, when the last command of the
        group has been answered. Every command answers (DATA with its 354), so a
        held reply always leaves with the next one.
        """
        if isinstance(status, str):
            status = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        self._held.append(status + b"\r\n")
        self._held_size += len(status) + 2
        if not self.in_data and self._held_size < _HELD_REPLIES and self._command_waiting():
            return
        replies = b"".join(self._held)
        self._held.clear()
        self._held_size = 0
        self._writer.write(replies)
        await self._writer.drain()

    def _command_waiting(self) -> bool:
        # asyncio's StreamReader has no peek; aiosmtpd reads its buffer too (STARTTLS).
        buffer = getattr(self._reader, "_buffer", None)
        return isinstance(buffer, bytearray) and b"\n" in buffer

    def close_with(self, reply: str) -> None:
        """Send a final reply (after any held back) and close the connection without waiting."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            held = b"".join(self._held)
            self._held.clear()
            self._held_size = 0
            transport.write(held + reply.encode() + b"\r\n")  # type: ignore[attr-defined]
            transport.close()

    def abort(self) -> None:
        """Drop the connection at once (shutdown deadline passed)."""
        transport = self.transport
        if transport is not None:
            transport.abort()  # type: ignore[attr-defined]

    @property
    def busy(self) -> bool:
        """True while a mail transaction is open (MAIL given, not yet finished)."""
        return self.in_data or (self.envelope is not None and self.envelope.mail_from is not None)

    def tls_facts(self) -> TLSFacts | None:
        """TLS version, cipher and client certificate, or None on a plain connection."""
        transport = self.transport
        if transport is None:
            return None
        obj = transport.get_extra_info("ssl_object")
        if not isinstance(obj, ssl.SSLObject | ssl.SSLSocket):
            return None
        cipher = obj.cipher()
        return TLSFacts(
            version=obj.version() or "TLS",
            cipher=cipher[0] if cipher else "unknown",
            peer_cert=obj.getpeercert(binary_form=True),
        )

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """(address, the rest of the line) of a MAIL or RCPT argument, as aiosmtpd parses it."""
        m = _SIMPLE_PATH.match(arg)
        if m is not None:
            rest = arg[m.end() :]
            if rest[:1] in ("", " ", "\t"):
                rest = rest.lstrip(" \t")
                # A comment after the path is CFWS the full parser would consume.
                if not rest.startswith("("):
                    if self.local_part_limit and len(m.group(1)) > self.local_part_limit:
                        return None, None
                    return m.group(0)[1:-1], rest
        address: str | None
        rest_: str | None
        address, rest_ = super()._getaddr(arg)
        return address, rest_

    async def handle_exception(self, error: Exception) -> str:
        """Log the error with its traceback; the client only hears a generic 451."""
        if isinstance(error, TLSSetupException):
            cause = error.__cause__
            log.event(
                "tls_failed",
                session=self.sid,
                ip=self.client_ip,
                error=type(cause).__name__ if cause else "handshake failed",
                detail=str(cause) if cause else None,
            )
            return TEMP_FAILURE  # not sent: aiosmtpd drops the connection
        log.event(
            "error",
            level=logging.ERROR,
            session=self.sid,
            ip=self.client_ip,
            error=type(error).__name__,
            exception="".join(traceback.format_exception(error)),
        )
        return TEMP_FAILURE

    # -- DATA ------------------------------------------------------------------------

    async def smtp_DATA(self, arg: str | None) -> None:
        """Receive the message with our own framing rules, then call handle_DATA."""
        if await self.check_helo_needed():
            return
        envelope = self.envelope
        assert envelope is not None
        if not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        self.in_data = True
        try:
            await self._receive(envelope)
        finally:
            self.in_data = False
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            self._reset_timeout()
        if self._server.draining:
            self.close_with(SHUTTING_DOWN.format(host=self.hostname))

    async def _receive(self, envelope: Any) -> None:
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._reset_timeout(self._data_timeout)
        reader = self._reader
        limit = self._cfg.max_message_size
        scanner = DataScanner(limit)
        since_timer = 0
        while True:
            size = scanner.size
            try:
                if await scanner.receive(reader):
                    break
            except asyncio.IncompleteReadError:
                return  # the client went away mid-message: nothing was acknowledged
            since_timer += scanner.size - size
            if since_timer >= _TIMER_SLICE:
                since_timer = 0
                self._reset_timeout(self._data_timeout)
            if scanner.size > limit * _DISCARD_FACTOR:
                # A client that ignores SIZE would keep us reading forever.
                self._log_rejected(552, "message too big", size=scanner.size)
                self.close_with(TOO_BIG)
                return
        if scanner.bare:
            self._log_rejected(521, "bare CR or LF in DATA")
            self.close_with(BARE_NEWLINE)
            return
        if scanner.too_big:
            self._log_rejected(552, "message too big", size=scanner.size)
            await self.push(TOO_BIG)
            return
        if scanner.too_long:
            self._log_rejected(554, "line too long")
            await self.push(LINE_TOO_LONG)
            return
        content = scanner.message()
        envelope.content = envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        await self.push(status)

    def _log_rejected(self, code: int, reason: str, **fields: Any) -> None:
        log.event(
            "rejected",
            session=self.sid,
            ip=self.client_ip,
            stage="data",
            code=code,
            reason=reason,
            **fields,
        )


class InboundServer:
    """Every inbound SMTP listener of one configuration."""

    def __init__(
        self,
        cfg: SmtpConfig,
        hostname: str,
        spool: SpoolLike,
        tls_context: ssl.SSLContext,
        *,
        policy: PolicyLike | None = None,
    ) -> None:
        if cfg.proxy_protocol and cfg.listen_implicit_tls:
            # The PROXY header precedes the TLS handshake, which asyncio's TLS
            # servers cannot read around.
            raise ValueError("smtp.proxy_protocol cannot be used with smtp.listen_implicit_tls")
        self._cfg = cfg
        self._hostname = hostname
        self._tls = tls_context
        self._auth = Authenticator(cfg.users)
        self._handler = InboundHandler(cfg, hostname, spool, self._auth, policy=policy)
        self._mechanisms_off = [] if self._auth.enabled else ["PLAIN", "LOGIN"]
        self._servers: list[tuple[asyncio.Server, HostPort, str]] = []
        self._sessions: set[SealgateSMTP] = set()
        self._idle = asyncio.Event()
        self.draining = False

    # -- connection accounting (called by the protocol) ------------------------------

    def admit(self, session: SealgateSMTP) -> bool:
        """Count a new connection; False when over max_connections or shutting down."""
        if self.draining or len(self._sessions) >= self._cfg.max_connections:
            return False
        self._sessions.add(session)
        self._idle.clear()
        return True

    def release(self, session: SealgateSMTP) -> None:
        """Forget a closed connection."""
        self._sessions.discard(session)
        if not self._sessions:
            self._idle.set()

    # -- lifecycle -------------------------------------------------------------------

    def _factory(self, implicit_tls: bool) -> Callable[[], SealgateSMTP]:
        template = SealgateSMTP(
            self,
            self._handler,
            self._cfg,
            self._hostname,
            self._tls,
            implicit_tls=implicit_tls,
            auth_mechanisms_off=self._mechanisms_off,
        )
        return template.spawn

    async def _prepare_client_certs(self) -> None:
        ctx = self._tls
        if not relay.wants_client_certs(self._cfg) or ctx.verify_mode != ssl.CERT_NONE:
            return
        # A connector identifies its upstream by certificate, but the context does not
        # ask for one: ask (optionally, other clients have none) and verify against the
        # system's CAs, which is where Microsoft 365's and Google's certificates chain.
        await asyncio.to_thread(ctx.load_default_certs, ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_OPTIONAL

    async def start(self) -> None:
        """Bind every listener; log one "listening" line for each."""
        loop = asyncio.get_running_loop()
        await self._prepare_client_certs()
        listeners = [(a, False) for a in self._cfg.listen] + [
            (a, True) for a in self._cfg.listen_implicit_tls
        ]
        try:
            for address, implicit in listeners:
                server = await loop.create_server(
                    self._factory(implicit),
                    address.host,
                    address.port,
                    ssl=self._tls if implicit else None,
                    ssl_handshake_timeout=self._cfg.command_timeout if implicit else None,
                    reuse_address=True,
                    backlog=1024,
                )
                self._servers.append((server, address, "implicit" if implicit else "starttls"))
        except BaseException:
            for server, _, _ in self._servers:
                server.close()
            self._servers.clear()
            raise
        for server, address, mode in self._servers:
            log.event(
                "listening", proto="smtp", address=str(self._bound(server, address)), tls=mode
            )

    @staticmethod
    def _bound(server: asyncio.Server, address: HostPort) -> HostPort:
        # With port 0 (tests), the kernel picked the port: report the real one.
        if address.port == 0 and server.sockets:
            return HostPort(address.host, int(server.sockets[0].getsockname()[1]))
        return address

    @property
    def addresses(self) -> list[HostPort]:
        """The bound address of each listener, plain ones first."""
        return [self._bound(s, a) for s, a, _ in self._servers]

    # `timeout` is a drain budget (the daemon's stop contract), not a cancel-after.
    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109
        """Stop accepting, let open transactions finish for up to timeout seconds, then close.

        A client only hears 250 after the spool has the message on disk, so a
        transaction cut short at the deadline loses nothing that was acknowledged.
        """
        self.draining = True
        for server, _, _ in self._servers:
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._sessions:
            for session in list(self._sessions):
                if not session.busy:
                    session.close_with(SHUTTING_DOWN.format(host=self._hostname))
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # Wake up now and then to close sessions that finished their transaction.
            try:
                await asyncio.wait_for(self._idle.wait(), min(remaining, 0.2))
            except TimeoutError:
                pass
        leftovers = list(self._sessions)
        for session in leftovers:
            log.event("aborted", session=session.sid, ip=session.client_ip, reason="shutdown")
            session.abort()
        tasks = [s.handler_task for s in leftovers if s.handler_task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for server, _, _ in self._servers:
            await server.wait_closed()
        self._servers.clear()
