"""One outbound SMTP connection: connect, greeting, EHLO and the STARTTLS decision.

Opening a session either returns a ready Session (EHLO done, TLS settled) or
raises HopFailure, which says how this host failed so the transport can move
on to the next one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Literal

import aiosmtplib
from aiosmtplib import SMTPResponse

from gateway import log
from gateway.outbound.tlsfacts import ClientContexts, session_facts

TlsLevel = Literal["opportunistic", "required", "verified"]
Status = Literal["delivered", "transient", "permanent"]

_ENHANCED_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(\s|$)")
# Replies are stored with each recipient's state and quoted in DSNs; a hostile
# server must not make them huge.
_MAX_REPLY_TEXT = 1000

# The errors a conversation with a remote server can raise: protocol, socket, TLS.
NETWORK_ERRORS = (aiosmtplib.SMTPException, OSError)


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
    ) -> None:
        super().__init__(text)
        self.status: Literal["transient", "permanent"] = status
        self.code = code
        self.text = text
        self.reached = reached  # the server answered (greeting or later)


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

    def __init__(self, smtp: aiosmtplib.SMTP, target: Target, tls: dict[str, Any] | None) -> None:
        self.smtp = smtp
        self.target = target
        self.tls = tls

    @property
    def alive(self) -> bool:
        """Whether the connection is still open (as far as we know)."""
        return self.smtp.is_connected

    def supports(self, extension: str) -> bool:
        """Whether the server's EHLO reply listed extension."""
        return self.smtp.supports_extension(extension)

    def size_limit(self) -> int | None:
        """The server's SIZE limit in bytes (RFC 1870), or None when it states none."""
        value = self.smtp.esmtp_extensions.get("size", "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else None

    async def command(self, *args: bytes) -> SMTPResponse:
        """Send one command and return the reply, whatever its code."""
        return await self.smtp.execute_command(*args)

    async def reset(self, limit: float) -> bool:
        """RSET before reusing the connection; False when it is dead or unwilling."""
        if not self.smtp.is_connected:
            return False
        try:
            reply = await self.smtp.execute_command(b"RSET", timeout=limit)
        except NETWORK_ERRORS:
            return False
        return reply.code == 250

    async def quit(self, limit: float) -> None:
        """Say goodbye politely; never raises."""
        try:
            if self.smtp.is_connected:
                await self.smtp.execute_command(b"QUIT", timeout=limit)
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
    target: Target, level: TlsLevel, contexts: ClientContexts, settings: SessionSettings
) -> Session:
    """A ready session with target at the given TLS level, or HopFailure.

    Opportunistic: try a verified handshake; if the certificate does not
    verify, reconnect and encrypt without verifying (recording why); if the
    handshake fails outright, reconnect in plaintext, as Postfix does at
    security level "may". Required: never plaintext. Verified: the
    certificate must verify against the MX name.
    """
    mode: Literal["verify", "noverify", "plain"] = "verify"
    verify_error: str | None = None
    while True:
        smtp = await _connect(target, settings)
        try:
            await _hello(smtp, target)
            offered = smtp.supports_extension("starttls")
            if mode == "plain" or not offered:
                if level != "opportunistic":
                    raise HopFailure(
                        "transient",
                        None,
                        f"4.7.4 TLS is required, but was not offered by {target}",
                        reached=True,
                    )
                return Session(smtp, target, None)
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
                    ) from None
                log.event("smtp_tls_unverified", remote=str(target), reason=verify_error)
                mode = "noverify"
                continue
            except aiosmtplib.SMTPResponseException as exc:
                # The server refused STARTTLS; the session is still usable in
                # plaintext unless it is closing (421).
                if level != "opportunistic" or not smtp.is_connected:
                    raise HopFailure(
                        "transient",
                        exc.code,
                        reply_text(exc.code, exc.message),
                        reached=True,
                    ) from None
                return Session(smtp, target, None)
            except NETWORK_ERRORS as exc:
                smtp.close()
                reason = describe_error(exc.__cause__ or exc)
                if level != "opportunistic":
                    raise HopFailure(
                        "transient",
                        None,
                        f"4.7.5 TLS handshake with {target} failed: {reason}",
                        reached=True,
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
            # RFC 3207 section 4.2: forget what was learnt before TLS; ask again.
            await _hello(smtp, target)
            facts = session_facts(
                smtp.get_transport_info("ssl_object"),
                verified=mode == "verify",
                verify_error=verify_error,
            )
            return Session(smtp, target, facts)
        except BaseException as exc:
            smtp.close()
            if isinstance(exc, NETWORK_ERRORS):
                raise _lost(target, exc, "EHLO") from None
            raise
