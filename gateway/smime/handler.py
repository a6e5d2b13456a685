"""The "smime" method: one copy per recipient, encrypted to the recipient's certificate."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway import log
from gateway.config import SmimeConfig
from gateway.message import QueuedMessage
from gateway.outbound.methods import LocalOutcome, Method, Outgoing
from gateway.smime.directory import SmimeDirectory
from gateway.smime.envelope import envelope

# Messages at least this large are encrypted in a worker thread, off the event loop.
_THREAD_THRESHOLD = 64 * 1024
# RFC 3463 X.7.0: security status; the text names no internal detail.
NO_CERTIFICATE = "4.7.0 Recipient's S/MIME certificate is no longer usable; will retry"
ENCRYPT_FAILED = "4.7.0 S/MIME encryption failed; will retry"


class SmimeHandler:
    """Renders the S/MIME enveloped copy for one recipient (a MethodHandler)."""

    def __init__(self, directory: SmimeDirectory, cfg: SmimeConfig) -> None:
        self._directory = directory
        self._cfg = cfg

    async def render(
        self, method: Method, msg: QueuedMessage, data: bytes, rcpts: Sequence[str]
    ) -> Outgoing | LocalOutcome:
        """The enveloped message, or a temporary failure: never the plaintext."""
        if len(rcpts) != 1 or method.key is None:
            # One certificate, one recipient: anything else is a caller's mistake.
            log.event("smime_render_refused", id=msg.id, recipients=len(rcpts))
            return LocalOutcome("transient", None, ENCRYPT_FAILED)
        rcpt = rcpts[0]
        cert = self._directory.certificate(method.key, rcpt)
        if cert is None:
            log.event("smime_certificate_gone", id=msg.id, rcpt=rcpt, fingerprint=method.key)
            return LocalOutcome("transient", None, NO_CERTIFICATE)
        try:
            if len(data) >= _THREAD_THRESHOLD:
                out = await asyncio.to_thread(
                    envelope, data, cert, self._cfg.cipher, method.subject
                )
            else:
                out = envelope(data, cert, self._cfg.cipher, method.subject)
        except Exception as exc:
            # Fail closed; the exception's text may quote content, so only its type is logged.
            log.event(
                "smime_encrypt_failed",
                id=msg.id,
                rcpt=rcpt,
                fingerprint=method.key,
                error=type(exc).__name__,
            )
            return LocalOutcome("transient", None, ENCRYPT_FAILED)
        log.event(
            "smime_encrypted",
            id=msg.id,
            rcpt=rcpt,
            fingerprint=method.key,
            cipher=self._cfg.cipher,
            neutral_subject=method.subject is not None,
        )
        return Outgoing(data=out, tls="opportunistic")
