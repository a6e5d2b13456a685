"""The OpenPGP delivery method: one PGP/MIME copy per recipient, encrypted to their key."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from gateway import log
from gateway.message import QueuedMessage
from gateway.outbound.methods import LocalOutcome, Method, Outgoing
from gateway.pgp.directory import PgpDirectory
from gateway.pgp.keyring import KeyringError, normalize_fingerprint
from gateway.pgp.mime import inner_entity, outer_message

# RFC 3463 X.7.0: a security status; temporary, so the scheduler retries and,
# when the key stays unusable, method selection picks another way next time.
NO_KEY = "4.7.0 OpenPGP key for the recipient is not usable"
FAILED = "4.7.0 OpenPGP encryption failed"


class PgpHandler:
    """Renders a message as PGP/MIME (RFC 3156) for the single recipient it is given."""

    def __init__(self, directory: PgpDirectory) -> None:
        self._directory = directory

    async def render(
        self, method: Method, msg: QueuedMessage, data: bytes, rcpts: Sequence[str]
    ) -> Outgoing | LocalOutcome:
        """The encrypted copy, or a temporary failure; never the plaintext."""
        fingerprint = normalize_fingerprint(method.key or "")
        if fingerprint is None or len(rcpts) != 1:
            # One copy per recipient keeps Bcc recipients hidden from each other.
            log.event(
                "pgp_render_refused",
                level=logging.WARNING,
                id=msg.id,
                reason="no key" if fingerprint is None else "several recipients",
            )
            return LocalOutcome("transient", None, FAILED)
        try:
            if not await self._directory.usable(fingerprint):
                log.event("pgp_key_unusable", level=logging.WARNING, id=msg.id, key=fingerprint)
                return LocalOutcome("transient", None, NO_KEY)
            inner = await asyncio.to_thread(inner_entity, data)
            armored = await self._directory.encrypt(inner, fingerprint)
            out = await asyncio.to_thread(outer_message, data, armored, method.subject)
        except (KeyringError, OSError, ValueError) as exc:
            log.event(
                "pgp_encrypt_failed",
                level=logging.WARNING,
                id=msg.id,
                key=fingerprint,
                reason=str(exc),
            )
            return LocalOutcome("transient", None, FAILED)
        log.event("pgp_encrypted", id=msg.id, key=fingerprint, signed=self._directory.signs)
        return Outgoing(out, "opportunistic")
