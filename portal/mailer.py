"""How the portal sends mail: SMTP submission to the gateway's own listener.

One-time codes, replies and read notices go in through the front door, so the
policy engine classifies them and the gateway picks each recipient's
protection like for any other message. Submission is over loopback (or a
connector network) without AUTH; `portal.submit` names the listener.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib

from gateway import log
from gateway.config import HostPort

SUBMIT_TIMEOUT = 60.0


class SubmitError(Exception):
    """The gateway did not accept the message."""


@dataclass(frozen=True)
class Mailer:
    """Submits messages to one SMTP listener of the gateway."""

    address: HostPort
    hostname: str
    starttls: bool = False

    async def send(self, mail_from: str, rcpts: Sequence[str], data: bytes, kind: str) -> None:
        """Submit data for rcpts; raise SubmitError (reason logged) when it is refused."""
        try:
            errors, _reply = await aiosmtplib.send(
                data,
                sender=mail_from,
                recipients=list(rcpts),
                hostname=self.address.host,
                port=self.address.port,
                local_hostname=self.hostname,
                start_tls=self.starttls,
                validate_certs=False,
                timeout=SUBMIT_TIMEOUT,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            reason = str(exc).replace("\n", " ")[:300] or type(exc).__name__
            log.event("portal_submit_failed", level=logging.WARNING, kind=kind, reason=reason)
            raise SubmitError(reason) from None
        if errors:
            refused = sorted(errors)
            log.event("portal_submit_failed", level=logging.WARNING, kind=kind, refused=refused)
            raise SubmitError(f"refused recipients: {', '.join(refused)}")
