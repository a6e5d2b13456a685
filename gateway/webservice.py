"""Serving a web app (the recipient portal, the HTTP API) in a process of its own.

Both services live the same life: bind their listener, start uvicorn without
its signal handling or access log (paths can carry link tokens), say
"listening" once it accepts connections, run until told to stop, and report
their events to the audit trail, webhooks and metrics like every other
gateway process. This module is that life, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

from gateway import log
from gateway.config import Config, HostPort

OnReady = Callable[[], None]


class StartError(Exception):
    """The service cannot start; the message says why, for the operator."""


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def submission_address(cfg: Config, configured: HostPort | None) -> HostPort:
    """Where a service submits mail: its configured address, else the first SMTP listener."""
    if configured is not None:
        return configured
    listen = (cfg.smtp.listen or cfg.smtp.listen_implicit_tls)[0]
    try:
        ip = ipaddress.ip_address(listen.host)
    except ValueError:
        return listen
    if ip.is_unspecified:
        # Listening on every address: reach it over loopback.
        return HostPort("::1" if ip.version == 6 else "127.0.0.1", listen.port)
    return listen


def bind(address: HostPort) -> socket.socket:
    """A listening, non-blocking socket on address; OSError when it cannot be had."""
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


@contextlib.asynccontextmanager
async def reporting(cfg: Config) -> AsyncIterator[None]:
    """This process's events go to the audit trail, webhooks and metrics while inside."""
    from gateway import metrics, webhooks
    from gateway.audit.recorder import start_recorder

    stoppers: list[Callable[[], Awaitable[None]]] = [start_recorder(cfg, purge=False)]
    try:
        # The main process sends the webhooks and serves the metrics; here they are fed.
        stoppers.append(await metrics.start(cfg, serve=False))
        stoppers.append(await webhooks.start(cfg, send=False))
        yield
    finally:
        for stopper in reversed(stoppers):
            await stopper()


async def serve_app(
    app: Any,
    address: HostPort,
    stop: asyncio.Event,
    *,
    service: str,
    on_ready: OnReady | None = None,
    listening: dict[str, Any] | None = None,
    **options: Any,
) -> None:
    """Serve app on address until stop is set; StartError when it cannot start."""
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn without its own signal handling: our caller decides when to stop."""

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            """Leave signal handling to the caller."""
            yield

    try:
        sock = bind(address)
    except OSError as exc:
        raise StartError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    config = uvicorn.Config(
        app,
        access_log=False,
        log_config=None,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        **options,
    )
    server = Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{service}-http")
    try:
        while not server.started:
            if task.done():
                await task
                raise StartError(f"the {service} web server stopped while starting")
            await asyncio.sleep(0.02)
        bound = sock.getsockname()
        fields = {"proto": "http", **(listening or {})}
        log.event("listening", service=service, address=str(HostPort(bound[0], bound[1])), **fields)
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


def run_service(
    service: str,
    serve: Callable[[asyncio.Event], Awaitable[None]],
    *,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> int:
    """Run serve(stop) in the foreground until one of signals: 0, or 1 if it cannot start."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve(stop)
        except StartError as exc:
            log.event("startup_failed", level=logging.ERROR, service=service, reason=str(exc))
            return 1
        log.event("stopped", service=service)
        return 0

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(main())
