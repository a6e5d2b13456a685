"""Builds the outbound side's method stage from the configuration.

One place knows which key stores, lookups and handlers exist and how they
connect: the S/MIME certificate store, the OpenPGP keyring with its
discovery, the TLS policy (MTA-STS, DANE, admin policy), the portal storage,
and the selector that picks among them per recipient.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from gateway.config import Config
from gateway.fetch import HttpsFetcher, https_context
from gateway.message import QueuedMessage
from gateway.outbound.methods import MethodHandler, MethodStage
from gateway.outbound.portalmethod import PortalHandler, sender_notice
from gateway.outbound.selection import Selector
from gateway.outbound.tlspolicy import TlsPolicy
from gateway.pgp import PgpDirectory, PgpHandler
from gateway.portalbox import PortalBox, expire_periodically
from gateway.resolver import Resolver
from gateway.sealing import MasterKey
from gateway.smime import SmimeDirectory, SmimeHandler
from gateway.store import open_store

Closer = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Outbound:
    """What the scheduler and transport need, built once per outbound process."""

    methods: MethodStage
    tls_policy: TlsPolicy
    portal_notice: Callable[[QueuedMessage, Sequence[str]], bytes] | None
    observe: Callable[[QueuedMessage, bytes], Awaitable[None]]
    close: Closer


async def build(cfg: Config, resolver: Resolver, key: MasterKey) -> Outbound:
    """The method stage and its collaborators; the caller awaits `close` at shutdown."""
    context = await asyncio.to_thread(https_context, cfg.delivery.tls_ca_file)
    fetcher = HttpsFetcher(
        resolver,
        context,
        timeout=cfg.delivery.https_timeout,
        max_size=cfg.delivery.https_max_size,
    )
    tls_policy = TlsPolicy(cfg.delivery, resolver, fetcher, cache_dir=cfg.data_dir / "cache")
    enc = cfg.encryption
    smime = await asyncio.to_thread(SmimeDirectory, cfg.data_dir, enc.smime)
    pgp = await asyncio.to_thread(PgpDirectory, cfg.data_dir, enc.pgp, resolver, fetcher)
    store = await open_store(cfg.storage, cfg.data_dir)
    box = PortalBox(store, key)
    handlers: dict[str, MethodHandler] = {
        "smime": SmimeHandler(smime, enc.smime),
        "pgp": PgpHandler(pgp),
        "portal": PortalHandler(
            box, cfg.portal, sealed_links=cfg.portal.sealed_links, hostname=cfg.hostname
        ),
    }
    selector = Selector(enc, tls_policy=tls_policy, smime=smime, pgp=pgp, portal=True)
    methods = MethodStage(handlers, selector=selector)

    async def observe(msg: QueuedMessage, data: bytes) -> None:
        """Learn certificates and keys from signed mail and Autocrypt headers passing through."""
        if enc.smime.harvest:
            await asyncio.to_thread(smime.learn, data)
        if enc.pgp.autocrypt:
            await pgp.learn(data)

    notice = None
    if cfg.portal.notify_sender:
        portal_cfg, hostname = cfg.portal, cfg.hostname

        def notice(msg: QueuedMessage, rcpts: Sequence[str]) -> bytes:
            return sender_notice(msg, rcpts, portal_cfg, hostname)

    # Expired and revoked copies lose their bodies on a schedule, not only when asked for.
    sweeper = asyncio.create_task(expire_periodically(box), name="portal-expiry")

    async def close() -> None:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
        await asyncio.to_thread(pgp.close)
        await store.close()

    return Outbound(methods, tls_policy, notice, observe, close)
