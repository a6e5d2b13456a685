"""Webhooks: gateway events, without PHI, signed and sent from a durable outbox.

Every process runs an outbox writer (writer.py) that turns its events into
rows in the shared store; each node's main process also runs the sender
(sender.py). docs/webhooks.md describes events, payloads and signatures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.config import Config

Closer = Callable[[], Awaitable[None]]


async def start(cfg: Config, *, send: bool) -> Closer:
    """Start this process's outbox writer, and the sender when send; return the closer."""
    if not cfg.webhooks.endpoints:

        async def nothing() -> None:
            return None

        return nothing
    from gateway.store import open_store
    from gateway.webhooks.sender import WebhookSender
    from gateway.webhooks.writer import OutboxWriter

    writer = OutboxWriter(cfg)
    writer.start()
    sender: WebhookSender | None = None
    store = None
    try:
        if send:
            store = await open_store(cfg.storage, cfg.data_dir)
            sender = WebhookSender(cfg.webhooks, store)
            await sender.start()
    except BaseException:
        if sender is not None:
            await sender.close()
        if store is not None:
            await store.close()
        await writer.close()
        raise

    async def close() -> None:
        if sender is not None:
            await sender.close()
        if store is not None:
            await store.close()
        await writer.close()

    return close
