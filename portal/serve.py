"""Running the portal: storage and keys opened, uvicorn on `portal.listen`, clean stop.

`serve` runs in a process of its own: `sealgate portal-server -c CONFIG` on a
portal-only node, or the child `sealgate run` starts (portal/process.py), so
the portal's work (argon2, decrypting, rendering) never competes with the SMTP
event loop. Several portal processes on several machines can share one
PostgreSQL database (`storage.url`) and the same master key file.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import AsyncIterator

from gateway.config import Config, HostPort
from gateway.sealing import KeyFileError, MasterKey
from gateway.store import StoreError, open_store
from gateway.webservice import (
    OnReady,
    StartError,
    reporting,
    run_service,
    serve_app,
    submission_address,
)
from portal.app import create_app
from portal.web import PortalSettings


class PortalStartError(StartError):
    """The portal cannot start; the message says why, for the operator."""


def submit_address(cfg: Config) -> HostPort:
    """Where the portal submits mail: portal.submit, else the gateway's first listener."""
    return submission_address(cfg, cfg.portal.submit)


def settings_for(cfg: Config) -> PortalSettings:
    """The portal's settings from the whole configuration."""
    return PortalSettings(portal=cfg.portal, hostname=cfg.hostname, submit=submit_address(cfg))


def _tls_check(cfg: Config) -> None:
    tls = cfg.portal.tls
    if tls is None:
        return
    try:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise PortalStartError(
            f"cannot load the portal TLS certificate {tls.cert} / key {tls.key}: {exc}"
        ) from None


async def serve(
    cfg: Config,
    stop: asyncio.Event,
    *,
    on_ready: OnReady | None = None,
    audit: bool = True,
) -> None:
    """Serve the portal until stop is set; a StartError when it cannot start."""
    await asyncio.to_thread(_tls_check, cfg)
    try:
        master = await asyncio.to_thread(MasterKey.load, cfg.data_dir / "master.key")
    except KeyFileError as exc:
        raise PortalStartError(
            f"{exc} (a portal node needs the gateway's master key to open messages)"
        ) from None
    try:
        store = await open_store(cfg.storage, cfg.data_dir)
    except StoreError as exc:
        raise PortalStartError(f"cannot open the shared store: {exc}") from None
    tls = cfg.portal.tls
    try:
        async with reporting(cfg) if audit else _nothing():
            await serve_app(
                create_app(settings_for(cfg), store, master),
                cfg.portal.listen,
                stop,
                service="portal",
                on_ready=on_ready,
                listening={"proto": "https" if tls else "http", "base_url": cfg.portal.base_url},
                proxy_headers=bool(cfg.portal.trusted_proxies),
                forwarded_allow_ips=list(cfg.portal.trusted_proxies) or None,
                ssl_certfile=str(tls.cert) if tls else None,
                ssl_keyfile=str(tls.key) if tls else None,
            )
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


def run(
    cfg: Config,
    *,
    on_ready: OnReady | None = None,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> int:
    """Run the portal in the foreground until one of signals: 0, or 1 if it cannot start."""
    return run_service("portal", lambda stop: serve(cfg, stop, on_ready=on_ready), signals=signals)
