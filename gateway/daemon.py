"""`sealgate run`: wires the components together and runs them until SIGTERM or SIGINT.

Lifecycle: spool up → outbound process (scheduler, transport, resolver, DKIM
signer) → inbound listeners → tell systemd READY → wait for a signal → stop in
reverse order, draining in-flight work with a deadline. Nothing acknowledged is
lost on the way down: the spool holds it, and unfinished deliveries stay queued.

Deliveries run in a process of their own (`python -m gateway.daemon outbound`),
as Postfix's queue manager and SMTP client run apart from smtpd: the spool is
already the only hand-off between inbound and outbound, so the two sides share
nothing else and each gets a CPU. The main process owns the spool, the daemon
lock and the listeners; it starts the outbound process, tells it of each new
message over a socket pair, restarts it if it dies, and on shutdown tells it to
drain and waits for it. The outbound process holds the daemon lock with it and
dies with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import log
from gateway.config import Config
from gateway.webservice import event_loop_factory

if TYPE_CHECKING:
    from gateway.spool import Spool

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
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(_serve(cfg, lock.fileno()))
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


async def _serve(cfg: Config, lock_fd: int) -> int:
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
        await _start(cfg, closers, lock_fd)
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


async def _start(cfg: Config, closers: list[tuple[str, Closer]], lock_fd: int) -> None:
    """Start every component in order, registering how to stop each one."""
    from gateway.audit.recorder import start_recorder

    # First in, last out: the audit trail sees every other component start and stop.
    closers.append(("audit", start_recorder(cfg, purge=True)))
    from gateway import metrics, webhooks

    # Before the child processes start: they inherit the metrics directory.
    closers.append(("metrics", await metrics.start(cfg, serve=True)))
    closers.append(("webhooks", await webhooks.start(cfg, send=True)))
    # Imported here so `sealgate check` and other commands stay light.
    from gateway.dkim import DkimSigner
    from gateway.inbound.server import InboundServer
    from gateway.policy import PolicyStage, PolicyStartError, start_scanner
    from gateway.quarantine import QuarantineError, QuarantineStore, RequestWatcher
    from gateway.sealing import MasterKey
    from gateway.spool import Spool

    # Everything read from files comes first, so a bad key or certificate stops
    # startup before any delivery begins (the outbound process loads its own signer).
    key = await asyncio.to_thread(MasterKey.load_or_create, cfg.data_dir / "master.key")
    await asyncio.to_thread(DkimSigner, list(cfg.dkim))
    tls_context = await asyncio.to_thread(_inbound_tls_context, cfg)
    # The policy ruleset is read once, here; its scanning processes start before any mail.
    try:
        scanner = await start_scanner(cfg.policy)
    except PolicyStartError as exc:
        raise StartupError(str(exc)) from None
    closers.append(("policy", scanner.close))

    spool = Spool(cfg.data_dir, key)
    await spool.start()
    closers.append(("spool", spool.close))
    quarantine = QuarantineStore(cfg.data_dir, key)
    try:
        await asyncio.to_thread(quarantine.prepare)
    except QuarantineError as exc:
        raise StartupError(str(exc)) from None

    outbound = OutboundProcess(cfg, lock_fd)
    spool.on_new_header(outbound.notify)
    closers.append(("outbound", lambda: outbound.stop(OUTBOUND_DRAIN_TIMEOUT)))
    await outbound.start()
    # `sealgate quarantine release|delete` requests; a release goes through this spool.
    requests = RequestWatcher(quarantine, spool)
    await requests.start()
    closers.append(("quarantine", requests.stop))

    inbound = InboundServer(
        cfg.smtp, cfg.hostname, spool, tls_context, policy=PolicyStage(scanner, quarantine)
    )
    # Registered before start: a listener that failed to bind must still release the others.
    closers.append(("inbound", lambda: inbound.stop(INBOUND_DRAIN_TIMEOUT)))
    await inbound.start()
    # The recipient portal serves from a process of its own (portal/process.py).
    from portal.process import PortalProcess, PortalProcessError

    portal = PortalProcess(cfg)
    closers.append(("portal", portal.stop))
    try:
        await portal.start()
    except PortalProcessError as exc:
        raise StartupError(str(exc)) from None
    if cfg.api.enabled:
        # The HTTP API too (api/process.py); it submits mail to the listeners above.
        from api.process import api_process
        from gateway.childproc import ChildStartError

        api = api_process(cfg)
        closers.append(("api", api.stop))
        try:
            await api.start()
        except ChildStartError as exc:
            raise StartupError(str(exc)) from None


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


# --- the outbound process ------------------------------------------------------------

OUTBOUND_START_TIMEOUT = 60.0
# Beyond its drain timeout, how long the outbound process gets to exit.
_OUTBOUND_EXIT_GRACE = 15.0
# Delays before restarting an outbound process that died, growing while it keeps
# dying; one that stayed up this long restarts after the first delay again.
_RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
_STAYED_UP = 60.0
# A notice carries a spool header line, which grows with the recipients.
_CHANNEL_LIMIT = 64 * 1024 * 1024
# Messages up to this size travel with their notice, saving the outbound process
# a read of the file it would do at once; bigger ones it reads from the spool.
_INLINE_BODY = 1024 * 1024
# Lines on the socket pair. Main → outbound: a new message (its spool header line),
# the same with the message after it ("B <size> <header>", then size bytes), or stop
# (drain, then exit). Outbound → main: ready, or failed to start (the reason).
_NEW = b"M "
_NEW_WITH_BODY = b"B "
_STOP = b"S\n"
_READY = b"R\n"
_FAILED = b"F "
_PR_SET_PDEATHSIG = 1


def _child_env() -> dict[str, str]:
    """The environment for the outbound process: this one, importing this very package."""
    here = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, path]))}


class OutboundProcess:
    """The delivery process: started, told of new mail, restarted when it dies, stopped last."""

    def __init__(self, cfg: Config, lock_fd: int) -> None:
        self._cfg = cfg
        self._lock_fd = lock_fd
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The running outbound process's id."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the process and wait until it delivers; StartupError says why it cannot."""
        await self._spawn()
        self._watcher = asyncio.create_task(self._watch(), name="outbound-watch")

    def notify(self, header: bytes, body: bytes) -> None:
        """Pass a new message on (a Spool.on_new_header subscriber).

        Without a running process the notice is dropped: the next process finds
        the message on disk when it starts. Notices made in one turn of the event
        loop go out in one write.
        """
        if self._writer is None:
            return
        if len(body) <= _INLINE_BODY:
            size = str(len(body)).encode("ascii")
            self._pending += (_NEW_WITH_BODY, size, b" ", header, b"\n", body)
        else:
            self._pending.append(_NEW + header + b"\n")
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        writer = self._writer
        if pending and writer is not None and not writer.is_closing():
            writer.write(b"".join(pending))

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours, limit=_CHANNEL_LIMIT)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        # Connected before the process exists: a message put from now on is noticed
        # (the socket holds the notice), one put before is on disk when it starts.
        self._writer = writer
        proc: asyncio.subprocess.Process | None = None
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gateway.daemon", "outbound",
                    str(theirs.fileno()), str(self._lock_fd), str(os.getpid()),
                    stdin=asyncio.subprocess.PIPE,
                    pass_fds=(theirs.fileno(), self._lock_fd),
                    env=_child_env(),
                )  # fmt: skip
            finally:
                theirs.close()
            assert proc.stdin is not None
            # Trusted: the configuration this process validated, to its own child.
            proc.stdin.write(pickle.dumps(self._cfg))
            await proc.stdin.drain()
            proc.stdin.close()
            try:
                async with asyncio.timeout(OUTBOUND_START_TIMEOUT):
                    line = await reader.readline()
            except TimeoutError:
                line = b""
                reason = f"the outbound process did not start within {OUTBOUND_START_TIMEOUT:g}s"
            else:
                reason = ""
            if line == _READY:
                self._proc = proc
                log.event("outbound_started", pid=proc.pid)
                return
            if line.startswith(_FAILED):
                reason = line[len(_FAILED) :].decode("utf-8", "replace").strip()
            elif not reason:
                reason = "the outbound process exited while starting"
            raise StartupError(reason)
        except BaseException:
            self._writer = None
            writer.close()
            if proc is not None and proc.returncode is None:
                proc.kill()
                await asyncio.shield(proc.wait())
            raise

    async def _watch(self) -> None:
        """Restart the process whenever it dies, until stop()."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            proc = self._proc
            assert proc is not None
            started = loop.time()
            code = await proc.wait()
            self._disconnect()
            log.event(
                "outbound_exited",
                level=logging.ERROR,
                pid=proc.pid,
                code=code if code >= 0 else None,
                signal=signal.Signals(-code).name if code < 0 else None,
                action="restart",
            )
            if loop.time() - started >= _STAYED_UP:
                failures = 0
            while True:
                await asyncio.sleep(_RESTART_DELAYS[min(failures, len(_RESTART_DELAYS) - 1)])
                failures += 1
                try:
                    await self._spawn()
                    break
                except Exception as exc:
                    # Keep trying: the spool holds the mail until a process delivers it.
                    reason = str(exc) or type(exc).__name__
                    log.event("outbound_start_failed", level=logging.ERROR, reason=reason)

    def _disconnect(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._pending.clear()

    # The daemon's shutdown contract names a drain budget; asyncio.timeout would not drain.
    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109
        """Tell the process to drain (up to timeout) and exit; kill it if it does not."""
        if self._stopping:
            return
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        proc, writer = self._proc, self._writer
        if proc is None or proc.returncode is not None:
            self._disconnect()
            return
        self._flush()
        if writer is not None and not writer.is_closing():
            writer.write(_STOP)
        try:
            async with asyncio.timeout(timeout + _OUTBOUND_EXIT_GRACE):
                code = await proc.wait()
        except TimeoutError:
            log.event("outbound_killed", level=logging.ERROR, pid=proc.pid, reason="stop timeout")
            proc.kill()
            code = await proc.wait()
        self._disconnect()
        if code != 0:
            log.event("outbound_exited", level=logging.ERROR, pid=proc.pid, code=code)


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent dies, as if the daemon crashed whole.

    Otherwise an orphan could go on delivering, and hold the daemon lock, next
    to a restarted daemon. (Linux; elsewhere the closed socket pair ends it.)
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the request took effect


def _outbound_main(argv: list[str]) -> int:
    """The outbound process: `python -m gateway.daemon outbound CHANNEL_FD LOCK_FD PARENT_PID`."""
    channel_fd, lock_fd, parent = (int(a) for a in argv)
    _die_with_parent(parent)
    # The main process decides when deliveries stop: a terminal's Ctrl-C or the
    # service manager's SIGTERM to the whole group must not cut them short first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cfg = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - written by our parent process
    if not isinstance(cfg, Config):
        return 2
    log.setup(cfg.log.level)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(_outbound_serve(cfg, channel_fd))
    finally:
        log.stop()
        os.close(lock_fd)


async def _outbound_serve(cfg: Config, channel_fd: int) -> int:
    sock = socket.socket(fileno=channel_fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=_CHANNEL_LIMIT)
    closers: list[tuple[str, Closer]] = []
    drain = [OUTBOUND_DRAIN_TIMEOUT]
    try:
        spool = await _start_outbound(cfg, closers, drain)
    except Exception as exc:
        # As the main process would put it: names of files and keys, never content.
        reason = str(exc) or type(exc).__name__
        if not _expected_startup_error(exc):
            _log.debug("outbound process failed to start", exc_info=exc)
        writer.write(_FAILED + reason.replace("\n", " ").encode("utf-8", "replace") + b"\n")
        with contextlib.suppress(OSError):
            await writer.drain()
        await _close_all(closers)
        return 1
    writer.write(_READY)
    stopped = await _take_notices(reader, spool)
    if not stopped:
        # The main process is gone without a word (it crashed) or out of step: finish
        # at once; a new outbound process rescans the spool.
        drain[0] = 0.0
    await _close_all(closers)
    writer.close()
    return 0 if stopped else 1


async def _take_notices(reader: asyncio.StreamReader, spool: Spool) -> bool:
    """Announce each new message the main process sends; True once told to stop."""
    while True:
        try:
            line = await reader.readline()
        except (OSError, ValueError):
            return False
        if line == _STOP:
            return True
        body: bytes | None = None
        if line.startswith(_NEW_WITH_BODY):
            size, _, header = line[len(_NEW_WITH_BODY) : -1].partition(b" ")
            if not size.isdigit() or int(size) > _INLINE_BODY:
                log.event("outbound_bad_notice", level=logging.ERROR, error="bad message size")
                return False
            try:
                body = await reader.readexactly(int(size))
            except (asyncio.IncompleteReadError, OSError):
                return False
        elif line.startswith(_NEW):
            header = line[len(_NEW) : -1]
        else:
            if line:
                log.event("outbound_bad_notice", level=logging.ERROR, error="unknown notice")
            return False
        try:
            msg = spool.message_from_header(header)
        except ValueError as exc:
            log.event("outbound_bad_notice", level=logging.ERROR, error=str(exc))
            continue
        spool.announce(msg, body)


async def _start_outbound(
    cfg: Config, closers: list[tuple[str, Closer]], drain: list[float]
) -> Spool:
    from gateway.audit.recorder import start_recorder

    closers.append(("audit", start_recorder(cfg, purge=False)))
    from gateway import metrics, webhooks

    closers.append(("metrics", await metrics.start(cfg, serve=False)))
    closers.append(("webhooks", await webhooks.start(cfg, send=False)))
    from gateway.dkim import DkimSigner
    from gateway.outbound import wiring
    from gateway.outbound.scheduler import Scheduler
    from gateway.outbound.transport import Transport
    from gateway.resolver import Resolver
    from gateway.sealing import MasterKey
    from gateway.spool import Spool

    key = await asyncio.to_thread(MasterKey.load, cfg.data_dir / "master.key")
    signer = await asyncio.to_thread(DkimSigner, list(cfg.dkim))
    # Not the owner: the main process prepared the spool and may be writing to it.
    spool = Spool(cfg.data_dir, key)
    await spool.start(owner=False)
    closers.append(("spool", spool.close))
    resolver = Resolver(cfg.dns)
    outbound = await wiring.build(cfg, resolver, key)
    closers.append(("methods", outbound.close))
    transport = Transport(cfg.delivery, cfg.hostname, resolver, outbound.tls_policy)
    closers.append(("transport", transport.close))
    scheduler = Scheduler(
        cfg.delivery,
        cfg.hostname,
        spool,
        transport,
        signer,
        methods=outbound.methods,
        portal_notice=outbound.portal_notice,
        observe=outbound.observe,
    )
    await scheduler.start()
    closers.append(("scheduler", lambda: scheduler.stop(drain[0])))
    return spool


if __name__ == "__main__":
    if sys.argv[1:2] != ["outbound"]:
        sys.exit("usage: python -m gateway.daemon outbound CHANNEL_FD LOCK_FD PARENT_PID")
    sys.exit(_outbound_main(sys.argv[2:]))
