"""One outbound SMTP connection: connect, greeting, EHLO and the STARTTLS decision.

Opening a session either returns a ready Session (EHLO done, TLS settled) or
raises HopFailure, which says how this host failed so the transport can move
on to the next one.

aiosmtplib sets the connection up (greeting, EHLO, STARTTLS); the Session then
takes the connection over and speaks the transactions itself, because
aiosmtplib reads one reply per command written and so cannot pipeline: with
PIPELINING (RFC 2920) a transaction is two writes instead of one per command.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Literal, cast

import aiosmtplib
from aiosmtplib import SMTPResponse

from gateway import log
from gateway.outbound import dane
from gateway.outbound.tlsfacts import ClientContexts, session_facts
from gateway.resolver import TlsaRecord

TlsLevel = Literal["opportunistic", "required", "verified"]
Status = Literal["delivered", "transient", "permanent"]

_ENHANCED_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(\s|$)")
# Replies are stored with each recipient's state and quoted in DSNs; a hostile
# server must not make them huge.
_MAX_REPLY_TEXT = 1000

# The errors a conversation with a remote server can raise: protocol, socket, TLS.
NETWORK_ERRORS = (aiosmtplib.SMTPException, OSError)

# Limits on what a server may send, as aiosmtplib has them: one reply line, one reply.
_MAX_REPLY_LINE = 8192
_MAX_REPLY = 4 * _MAX_REPLY_LINE
# RFC 5321 §4.1.1: a command line holds no control characters but its CRLF.
_CONTROL_RE = re.compile(rb"[\x00-\x1f\x7f]")
_LINE_ENDS_RE = re.compile(rb"\r\n|\n|\r(?!\n)")
# The protocol versions "required" and "verified" accept.
_MODERN_TLS = ("TLSv1.2", "TLSv1.3")
_CRLF = b"\r\n"


def command_line(*args: bytes) -> bytes:
    """One command line with its CRLF; raises ValueError on a control character (injection)."""
    for arg in args:
        if _CONTROL_RE.search(arg):
            raise ValueError("command argument contains a control character")
    return b" ".join(args) + _CRLF


def data_block(message: bytes) -> bytes:
    """The message as sent after DATA: CRLF line ends, dot-stuffed, ending with <CRLF>.<CRLF>."""
    crlf = message.count(_CRLF)
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        # Lone CR or LF (spooled mail has none): send them as line ends, as aiosmtplib does.
        message = _LINE_ENDS_RE.sub(_CRLF, message)
    if not message.endswith(_CRLF):
        message += _CRLF
    # RFC 5321 §4.5.2: a line that starts with "." gets one more.
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class _Replies(asyncio.Protocol):
    """Receives a session's replies once it is set up, and hands them out in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._replies: collections.deque[SMTPResponse] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: str | None = None

    def data_received(self, data: bytes) -> None:
        """Parse every complete reply that has arrived."""
        self._buffer += data
        while True:
            try:
                reply = self._parse()
            except aiosmtplib.SMTPResponseException as exc:
                self._fail(exc.message)
                return
            if reply is None:
                break
            self._replies.append(reply)
        if len(self._buffer) > _MAX_REPLY:
            self._fail("Response too long")
            return
        self._wake()

    def _parse(self) -> SMTPResponse | None:
        buf = self._buffer
        offset = 0
        lines: list[bytes] = []
        while True:
            end = buf.find(b"\n", offset)
            if end < 0:
                return None
            line = bytes(buf[offset : end + 1])
            if len(line) > _MAX_REPLY_LINE:
                raise aiosmtplib.SMTPResponseException(-1, "Response too long")
            try:
                code = int(line[:3])
            except ValueError:
                raise aiosmtplib.SMTPResponseException(
                    -1, "Malformed SMTP response line: " + line.decode("utf-8", "ignore")
                ) from None
            offset = end + 1
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                del buf[:offset]
                return SMTPResponse(code, b"\n".join(lines).decode("utf-8", "surrogateescape"))

    def eof_received(self) -> bool:
        """The server closed its side."""
        self._fail("Unexpected EOF received")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone; whoever waits for a reply learns it."""
        self._fail("Connection lost")

    def _fail(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self, limit: float) -> SMTPResponse:
        """The next reply; SMTPServerDisconnected or SMTPReadTimeoutError if none comes."""
        while not self._replies:
            if self._lost is not None:
                raise aiosmtplib.SMTPServerDisconnected(self._lost)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(limit):
                    await self._waiter
            except TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response"
                ) from None
            finally:
                self._waiter = None
        return self._replies.popleft()


@dataclass(frozen=True)
class Target:
    """One address of one host: where a session goes."""

    host: str
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.host} [{self.ip}]:{self.port}"


@dataclass(frozen=True)
class SessionSettings:
    """What every session needs: our EHLO name and the timeouts."""

    hostname: str
    connect_timeout: float
    command_timeout: float


class HopFailure(Exception):
    """This host cannot take the mail now; status/code/text describe it for the recipients."""

    def __init__(
        self,
        status: Literal["transient", "permanent"],
        code: int | None,
        text: str,
        *,
        reached: bool,
        tls: bool = False,
    ) -> None:
        super().__init__(text)
        self.status: Literal["transient", "permanent"] = status
        self.code = code
        self.text = text
        self.reached = reached  # the server answered (greeting or later)
        self.tls = tls  # the host could not meet the TLS requirement


def classify(code: int) -> Status:
    """RFC 5321 section 4.2.1: 2yz done, 5yz permanent; anything else may change later."""
    if 200 <= code < 300:
        return "delivered"
    if 500 <= code < 600:
        return "permanent"
    return "transient"


def failure_status(code: int) -> Literal["transient", "permanent"]:
    """How a failed reply counts: 5yz permanent, anything else transient."""
    return "permanent" if classify(code) == "permanent" else "transient"


def reply_text(code: int, message: str) -> str:
    """A server reply as one line that starts with an enhanced status code."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    if not _ENHANCED_RE.match(text):
        # RFC 3463: when the server gave no enhanced code, the class alone is known.
        cls = str(code)[:1] if str(code)[:1] in "245" else "4"
        text = f"{cls}.0.0 {text}".rstrip()
    return text[:_MAX_REPLY_TEXT]


def describe_error(exc: BaseException) -> str:
    """A short operator-facing reason for a network or TLS error (never message content)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or "certificate verification failed"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return "connection lost"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class Session:
    """A connected, greeted SMTP client with its TLS facts; one transaction at a time."""

    def __init__(
        self,
        smtp: aiosmtplib.SMTP,
        target: Target,
        tls: dict[str, Any] | None,
        command_timeout: float,
    ) -> None:
        self.smtp = smtp
        self.target = target
        self.tls = tls
        self.timeout = command_timeout
        self.pipelining = smtp.supports_extension("pipelining")
        # From here on replies come to us; aiosmtplib only closes the connection.
        transport = smtp.transport
        assert transport is not None
        self._transport = cast(asyncio.WriteTransport, transport)
        self._replies = _Replies()
        transport.set_protocol(self._replies)

    @property
    def alive(self) -> bool:
        """Whether the connection is still open (as far as we know)."""
        return self.smtp.is_connected and not self._transport.is_closing()

    def supports(self, extension: str) -> bool:
        """Whether the server's EHLO reply listed extension."""
        return self.smtp.supports_extension(extension)

    def size_limit(self) -> int | None:
        """The server's SIZE limit in bytes (RFC 1870), or None when it states none."""
        value = self.smtp.esmtp_extensions.get("size", "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else None

    def send(self, *lines: bytes) -> None:
        """Write command lines (from command_line) or data in one write."""
        if not self.alive:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._transport.write(b"".join(lines))

    async def reply(self, limit: float | None = None) -> SMTPResponse:
        """The next reply, in the order the commands were sent (limit: seconds to wait)."""
        return await self._replies.next(self.timeout if limit is None else limit)

    async def command(self, *args: bytes) -> SMTPResponse:
        """Send one command and return the reply, whatever its code."""
        self.send(command_line(*args))
        return await self.reply()

    async def reset(self, limit: float) -> bool:
        """RSET before reusing the connection; False when it is dead or unwilling."""
        if not self.alive:
            return False
        try:
            self.send(b"RSET\r\n")
            reply = await self.reply(limit)
        except NETWORK_ERRORS:
            return False
        return reply.code == 250

    async def quit(self, limit: float) -> None:
        """Say goodbye politely; never raises."""
        try:
            if self.alive:
                self.send(b"QUIT\r\n")
                await self.reply(limit)
        except NETWORK_ERRORS:
            pass
        finally:
            self.smtp.close()

    def abort(self) -> None:
        """Drop the connection at once."""
        self.smtp.close()


async def _connect(target: Target, settings: SessionSettings) -> aiosmtplib.SMTP:
    """TCP connect (connect_timeout), then wait for the greeting (command_timeout)."""
    family = socket.AF_INET6 if ":" in target.ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(settings.connect_timeout):
            await loop.sock_connect(sock, (target.ip, target.port))
    except BaseException as exc:
        sock.close()
        if not isinstance(exc, TimeoutError | OSError):
            raise  # cancelled
        if isinstance(exc, ConnectionRefusedError):
            text = f"4.4.1 Connection refused by {target}"
        elif isinstance(exc, TimeoutError):
            text = f"4.4.1 Connection timed out to {target}"
        else:
            text = f"4.4.1 Cannot connect to {target}: {describe_error(exc)}"
        raise HopFailure("transient", None, text, reached=False) from None
    # RFC 5321 section 4.5.3.2.1 gives the greeting five minutes, unlike the
    # TCP connect: some servers delay it on purpose.
    smtp = aiosmtplib.SMTP(
        sock=sock,
        local_hostname=settings.hostname,
        timeout=settings.command_timeout,
        start_tls=False,
    )
    try:
        await smtp.connect()
    except aiosmtplib.SMTPConnectResponseError as exc:
        sock.close()
        raise HopFailure(
            failure_status(exc.code),
            exc.code,
            reply_text(exc.code, exc.message),
            reached=True,
        ) from None
    except BaseException as exc:
        sock.close()
        if not isinstance(exc, NETWORK_ERRORS):
            raise  # cancelled
        if _being_cancelled():
            # aiosmtplib may report a cancellation during connect() as a lost
            # connection; the caller's cancellation must win.
            raise asyncio.CancelledError from exc
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise HopFailure(
            "transient",
            None,
            f"4.4.2 No greeting from {target}: {describe_error(cause)}",
            reached=True,
        ) from None
    return smtp


async def _hello(smtp: aiosmtplib.SMTP, target: Target) -> None:
    """EHLO, or HELO for a server that does not speak ESMTP (RFC 5321 section 3.2)."""
    try:
        await smtp.ehlo()
        return
    except aiosmtplib.SMTPHeloError as exc:
        if classify(exc.code) != "permanent" or not smtp.is_connected:
            text = reply_text(exc.code, exc.message)
            raise HopFailure("transient", exc.code, text, reached=True) from None
    try:
        await smtp.helo()
    except aiosmtplib.SMTPHeloError as exc:
        raise HopFailure(
            failure_status(exc.code), exc.code, reply_text(exc.code, exc.message), reached=True
        ) from None


def _lost(target: Target, exc: BaseException, stage: str) -> HopFailure:
    return HopFailure(
        "transient",
        None,
        f"4.4.2 Lost connection with {target} during {stage}: {describe_error(exc)}",
        reached=True,
    )


async def open_session(
    target: Target,
    level: TlsLevel,
    contexts: ClientContexts,
    settings: SessionSettings,
    *,
    dane_records: tuple[TlsaRecord, ...] = (),
    starttls: bool = True,
) -> Session:
    """A ready session with target at the given TLS level, or HopFailure.

    Opportunistic: try a verified handshake; if the certificate does not
    verify, reconnect and encrypt without verifying (recording why); if the
    handshake fails outright, reconnect in plaintext, as Postfix does at
    security level "may". Required: STARTTLS with TLS 1.2 or later, any
    certificate, never plaintext. Verified: the certificate must verify
    against the MX name, or, with dane_records, match them (RFC 7672).
    starttls=False (admin policy "none") sends in plaintext even when
    STARTTLS is offered; only for the opportunistic level.
    """
    mode: Literal["verify", "noverify", "plain", "dane"] = "dane" if dane_records else "verify"
    verify_error: str | None = None
    while True:
        smtp = await _connect(target, settings)
        try:
            await _hello(smtp, target)
            offered = smtp.supports_extension("starttls")
            if mode == "plain" or not offered or not starttls:
                if level != "opportunistic" or dane_records:
                    # Also what a STARTTLS stripped from the EHLO reply looks like.
                    raise HopFailure(
                        "transient",
                        None,
                        f"4.7.4 TLS is required, but was not offered by {target}",
                        reached=True,
                        tls=True,
                    )
                return Session(smtp, target, None, settings.command_timeout)
            context = contexts.verify if mode == "verify" else contexts.noverify
            try:
                await smtp.starttls(server_hostname=target.host, tls_context=context)
            except ssl.SSLCertVerificationError as exc:
                verify_error = describe_error(exc)
                smtp.close()
                if level == "verified":
                    raise HopFailure(
                        "transient",
                        None,
                        f"4.7.5 Server certificate not verified for {target}: {verify_error}",
                        reached=True,
                        tls=True,
                    ) from None
                log.event("smtp_tls_unverified", remote=str(target), reason=verify_error)
                mode = "noverify"
                continue
            except aiosmtplib.SMTPResponseException as exc:
                # The server refused STARTTLS; the session is still usable in
                # plaintext unless it is closing (421).
                if level != "opportunistic" or dane_records or not smtp.is_connected:
                    raise HopFailure(
                        "transient",
                        exc.code,
                        f"4.7.4 STARTTLS refused by {target}: {reply_text(exc.code, exc.message)}",
                        reached=True,
                        tls=level != "opportunistic" or bool(dane_records),
                    ) from None
                return Session(smtp, target, None, settings.command_timeout)
            except NETWORK_ERRORS as exc:
                smtp.close()
                reason = describe_error(exc.__cause__ or exc)
                if level != "opportunistic" or dane_records:
                    raise HopFailure(
                        "transient",
                        None,
                        f"4.7.5 TLS handshake with {target} failed: {reason}",
                        reached=True,
                        tls=True,
                    ) from None
                log.event(
                    "smtp_tls_fallback",
                    logging.WARNING,
                    remote=str(target),
                    to="plaintext",
                    reason=reason,
                )
                mode = "plain"
                continue
            ssl_object = smtp.get_transport_info("ssl_object")
            dane_usage = _check_tls(target, level, mode, ssl_object, dane_records)
            # RFC 3207 section 4.2: forget what was learnt before TLS; ask again.
            await _hello(smtp, target)
            facts = session_facts(
                ssl_object,
                verified=mode in ("verify", "dane"),
                verify_error=verify_error,
            )
            if facts is not None and dane_usage is not None:
                facts["dane"] = "matched"
                facts["dane_usage"] = dane_usage
            return Session(smtp, target, facts, settings.command_timeout)
        except BaseException as exc:
            smtp.close()
            if isinstance(exc, NETWORK_ERRORS):
                raise _lost(target, exc, "EHLO") from None
            raise


def _check_tls(
    target: Target,
    level: TlsLevel,
    mode: str,
    ssl_object: ssl.SSLObject | None,
    dane_records: tuple[TlsaRecord, ...],
) -> str | None:
    """After the handshake: the version floor and the DANE match; HopFailure if not met.

    Returns the DANE usage that matched, or None without DANE.
    """
    version = ssl_object.version() if ssl_object is not None else None
    if (level != "opportunistic" or dane_records) and version not in _MODERN_TLS:
        raise HopFailure(
            "transient",
            None,
            f"4.7.5 {target} negotiated {version or 'no TLS'}; TLS 1.2 or later is required",
            reached=True,
            tls=True,
        )
    if mode != "dane":
        return None
    result = dane.match(dane_records, dane.peer_chain(ssl_object), target.host)
    if not result.matched:
        raise HopFailure(
            "transient",
            None,
            f"4.7.5 DANE TLSA records of {target.host} do not match its certificate "
            f"({result.detail})",
            reached=True,
            tls=True,
        )
    return result.detail


def _being_cancelled() -> bool:
    """True when the running task has a cancellation pending."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
