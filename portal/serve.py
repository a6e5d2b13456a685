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
import ipaddress
import logging
import signal
import socket
import ssl
from collections.abc import Callable, Generator

import uvicorn

from gateway import log
from gateway.config import Config, HostPort
from gateway.sealing import KeyFileError, MasterKey
from gateway.store import StoreError, open_store
from portal.app import create_app
from portal.web import PortalSettings


class PortalStartError(Exception):
    """The portal cannot start; the message says why, for the operator."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: our caller decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Leave signal handling to the caller."""
        yield


def submit_address(cfg: Config) -> HostPort:
    """Where the portal submits mail: portal.submit, else the gateway's first listener."""
    if cfg.portal.submit is not None:
        return cfg.portal.submit
    listen = (cfg.smtp.listen or cfg.smtp.listen_implicit_tls)[0]
    try:
        ip = ipaddress.ip_address(listen.host)
    except ValueError:
        return listen
    if ip.is_unspecified:
        return HostPort("::1" if ip.version == 6 else "127.0.0.1", listen.port)
    return listen


def settings_for(cfg: Config) -> PortalSettings:
    """The portal's settings from the whole configuration."""
    return PortalSettings(portal=cfg.portal, hostname=cfg.hostname, submit=submit_address(cfg))


def _bind(address: HostPort) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host, address.port))
        sock.listen(512)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


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
    on_ready: Callable[[], None] | None = None,
    audit: bool = True,
) -> None:
    """Serve the portal until stop is set; PortalStartError when it cannot start."""
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
    stop_audit = None
    try:
        if audit:
            from gateway.audit.recorder import start_recorder

            stop_audit = start_recorder(cfg, purge=False)
        try:
            sock = _bind(cfg.portal.listen)
        except OSError as exc:
            raise PortalStartError(
                f"cannot listen on {cfg.portal.listen}: {exc.strerror or exc}"
            ) from None
        app = create_app(settings_for(cfg), store, master)
        tls = cfg.portal.tls
        config = uvicorn.Config(
            app,
            access_log=False,  # access logs would carry link tokens in their paths
            log_config=None,
            server_header=False,
            proxy_headers=bool(cfg.portal.trusted_proxies),
            forwarded_allow_ips=list(cfg.portal.trusted_proxies) or None,
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="portal-http")
        try:
            while not server.started:
                if task.done():
                    await task
                    raise PortalStartError("the portal web server stopped while starting")
                await asyncio.sleep(0.02)
            bound = sock.getsockname()
            log.event(
                "listening",
                proto="https" if tls else "http",
                service="portal",
                address=str(HostPort(bound[0], bound[1])),
                base_url=cfg.portal.base_url,
            )
            if on_ready is not None:
                on_ready()
            stop_wait = asyncio.create_task(stop.wait())
            await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception, SystemExit):
                await task
            sock.close()
    finally:
        if stop_audit is not None:
            await stop_audit()
        await store.close()


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(
    cfg: Config,
    *,
    on_ready: Callable[[], None] | None = None,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> int:
    """Run the portal in the foreground until one of signals: 0, or 1 if it cannot start."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve(cfg, stop, on_ready=on_ready)
        except PortalStartError as exc:
            log.event("startup_failed", level=logging.ERROR, service="portal", reason=str(exc))
            return 1
        log.event("stopped", service="portal")
        return 0

    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        return runner.run(main())
