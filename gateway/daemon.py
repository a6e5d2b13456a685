"""`sealgate run`: wires the components together and runs them until SIGTERM or SIGINT.

Lifecycle: spool up → outbound scheduler (transport, resolver, DKIM signer) →
inbound listeners → tell systemd READY → wait for a signal → stop in reverse
order, draining in-flight work with a deadline. Nothing acknowledged is lost on
the way down: the spool holds it, and unfinished deliveries stay queued.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway import log
from gateway.config import Config

# How long shutdown waits for SMTP sessions to finish their transaction, and
# then for deliveries under way; both together stay under systemd's default
# 90 s stop timeout.
INBOUND_DRAIN_TIMEOUT = 30.0
OUTBOUND_DRAIN_TIMEOUT = 30.0

_log = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[None]]


class StartupError(Exception):
    """The gateway cannot start; the message says why, for the operator."""


def sd_notify(state: str) -> bool:
    """Send a state line (READY=1, STOPPING=1...) to systemd when NOTIFY_SOCKET is set."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract socket namespace
    elif not address.startswith("/"):
        return False  # vsock and other transports are not used on a gateway host
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # A datagram to a local socket never waits; non-blocking makes sure of it.
            sock.setblocking(False)
            sock.sendto(state.encode("utf-8"), address)
    except OSError as exc:
        log.event("sd_notify_failed", level=logging.WARNING, error=exc.strerror or str(exc))
        return False
    return True


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _prepare_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create data_dir {data_dir}: {exc.strerror}") from None
    if not data_dir.is_dir():
        raise StartupError(f"data_dir {data_dir} is not a directory")


def run(cfg: Config) -> int:
    """Run the gateway in the foreground; 0 after a clean shutdown, 1 if it cannot start."""
    log.setup(cfg.log.level)
    try:
        return _run(cfg)
    finally:
        log.stop()


def _run(cfg: Config) -> int:
    from gateway.spool import AlreadyRunning, acquire_daemon_lock

    try:
        _prepare_data_dir(cfg.data_dir)
        lock = acquire_daemon_lock(cfg.data_dir)
    except (StartupError, AlreadyRunning) as exc:
        log.event("startup_failed", level=logging.ERROR, reason=str(exc))
        return 1
    except OSError as exc:
        reason = f"cannot lock data_dir {cfg.data_dir}: {exc.strerror or exc}"
        log.event("startup_failed", level=logging.ERROR, reason=reason)
        return 1
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            return runner.run(_serve(cfg))
    finally:
        lock.release()


def _expected_startup_error(exc: Exception) -> bool:
    """Errors an operator causes and fixes (busy port, bad key file): the reason says it all."""
    from gateway.dkim import DkimKeyError
    from gateway.sealing import KeyFileError
    from gateway.spool import SpoolError

    return isinstance(exc, OSError | StartupError | KeyFileError | DkimKeyError | SpoolError)


async def _close_all(closers: list[tuple[str, Closer]]) -> None:
    """Stop components in reverse start order; one failing does not keep others running."""
    while closers:
        name, close = closers.pop()
        try:
            await close()
        except Exception as exc:
            log.event("stop_failed", level=logging.ERROR, component=name, error=type(exc).__name__)
            _log.debug("stop failed", exc_info=exc)


async def _serve(cfg: Config) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    closers: list[tuple[str, Closer]] = []
    try:
        await _start(cfg, closers)
    except Exception as exc:
        # Startup errors name files, addresses and keys; no message content exists yet.
        log.event(
            "startup_failed",
            level=logging.ERROR,
            error=type(exc).__name__,
            reason=str(exc) or type(exc).__name__,
        )
        if not _expected_startup_error(exc):
            # Not an operator mistake but a bug: keep the traceback for debugging.
            _log.debug("startup failed", exc_info=exc)
        await _close_all(closers)
        return 1

    log.event(
        "ready",
        hostname=cfg.hostname,
        data_dir=str(cfg.data_dir),
        smtp=[str(a) for a in cfg.smtp.listen],
        smtp_implicit_tls=[str(a) for a in cfg.smtp.listen_implicit_tls],
        pid=os.getpid(),
    )
    sd_notify("READY=1\nSTATUS=accepting mail")
    await stop.wait()
    log.event("stopping", signal=received[0] if received else None)
    sd_notify("STOPPING=1")
    await _close_all(closers)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    log.event("stopped")
    return 0


async def _start(cfg: Config, closers: list[tuple[str, Closer]]) -> None:
    """Start every component in order, registering how to stop each one."""
    # Imported here so `sealgate check` and other commands stay light.
    from gateway.dkim import DkimSigner
    from gateway.inbound.server import InboundServer
    from gateway.outbound.scheduler import Scheduler
    from gateway.outbound.transport import Transport
    from gateway.resolver import Resolver
    from gateway.sealing import MasterKey
    from gateway.spool import Spool

    # Everything read from files comes first, so a bad key or certificate stops
    # startup before any delivery begins.
    key = await asyncio.to_thread(MasterKey.load_or_create, cfg.data_dir / "master.key")
    signer = await asyncio.to_thread(DkimSigner, list(cfg.dkim))
    tls_context = await asyncio.to_thread(_inbound_tls_context, cfg)

    spool = Spool(cfg.data_dir, key)
    await spool.start()
    closers.append(("spool", spool.close))

    transport = Transport(cfg.delivery, cfg.hostname, Resolver(cfg.dns))
    closers.append(("transport", transport.close))
    scheduler = Scheduler(cfg.delivery, cfg.hostname, spool, transport, signer)
    await scheduler.start()
    closers.append(("scheduler", lambda: scheduler.stop(OUTBOUND_DRAIN_TIMEOUT)))

    inbound = InboundServer(cfg.smtp, cfg.hostname, spool, tls_context)
    # Registered before start: a listener that failed to bind must still release the others.
    closers.append(("inbound", lambda: inbound.stop(INBOUND_DRAIN_TIMEOUT)))
    await inbound.start()


def _inbound_tls_context(cfg: Config) -> ssl.SSLContext:
    """The STARTTLS / implicit TLS context: the configured certificate or a self-signed one."""
    from gateway.tlsfiles import ensure_self_signed, server_context

    if cfg.smtp.tls is not None:
        cert, key = cfg.smtp.tls.cert, cfg.smtp.tls.key
    else:
        generated = ensure_self_signed(cfg.data_dir, cfg.hostname)
        cert, key = generated.cert, generated.key
    client_ca: Path | None = cfg.smtp.client_ca_file
    try:
        return server_context(cert, key, client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"cannot load the SMTP TLS certificate {cert} / key {key}: {exc}"
        ) from None
