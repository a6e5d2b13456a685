"""Submission over SMTP to the gateway's own listener: the same pipeline as any mail.

The listener answers "250 2.0.0 Ok: queued as ID"; that id is the API's
message id. All or nothing: if the listener refuses any recipient, the
transaction is abandoned (RSET) and nothing is queued.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib

from gateway import log
from gateway.config import HostPort

SUBMIT_TIMEOUT = 120.0
_QUEUED_RE = re.compile(r"queued as ([0-9A-Z]{18})\b")
_MAX_REASON = 300


class SubmitError(Exception):
    """The listener did not take the message: code (0: no answer) and its reply."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @property
    def permanent(self) -> bool:
        """A 5xx: sending the same again fails the same way."""
        return 500 <= self.code < 600


def _reason(text: str) -> str:
    return " ".join(text.split())[:_MAX_REASON]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class Submitter:
    """Submits messages to one SMTP listener of the gateway."""

    address: HostPort
    hostname: str
    user: str | None = None
    password: str | None = None
    timeout: float = SUBMIT_TIMEOUT

    def _start_tls(self) -> bool | None:
        # Credentials only ever travel inside TLS; over loopback TLS protects nothing.
        if self.user is not None:
            return True
        return False if _is_loopback(self.address.host) else None

    async def submit(self, mail_from: str, rcpts: Sequence[str], data: bytes) -> str:
        """Queue data for rcpts; the queue id, or SubmitError with the listener's reply."""
        smtp = aiosmtplib.SMTP(
            hostname=self.address.host,
            port=self.address.port,
            local_hostname=self.hostname,
            start_tls=self._start_tls(),
            validate_certs=False,  # our own listener, often with a self-signed certificate
            timeout=self.timeout,
        )
        try:
            await smtp.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SubmitError(0, "the gateway's SMTP listener cannot be reached") from exc
        try:
            if self.user is not None and self.password is not None:
                await smtp.login(self.user, self.password)
            options = ["BODY=8BITMIME"] if any(b > 127 for b in data) else []
            await smtp.mail(mail_from, options=options)
            for rcpt in rcpts:
                try:
                    await smtp.rcpt(rcpt)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    await smtp.rset()
                    raise SubmitError(exc.code, f"{rcpt}: {_reason(exc.message)}") from None
            reply = await smtp.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            raise SubmitError(exc.code, _reason(exc.message)) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.event("api_submit_failed", level=logging.WARNING, error=type(exc).__name__)
            raise SubmitError(0, "the gateway's SMTP listener did not answer") from None
        finally:
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError):
                    smtp.close()
        m = _QUEUED_RE.search(reply.message)
        if m is None:
            # Accepted by something that is not our listener (api.submit points elsewhere):
            # queued all the same, so not an error a client would retry (and duplicate).
            log.event("api_submit_no_queue_id", level=logging.WARNING, code=reply.code)
            return ""
        return m.group(1)
