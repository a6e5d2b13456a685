"""A web service as a child of `sealgate run`: started, watched, restarted, stopped.

The daemon's main process keeps the SMTP listeners; each web service (the
recipient portal, the HTTP API) gets a process of its own
(`python -m MODULE PARENT_PID`, the configuration pickled on its stdin, "ready"
as one line on its stdout). It dies with the daemon (PR_SET_PDEATHSIG), is
restarted with growing delays if it crashes, and is stopped with SIGTERM when
the daemon stops. Events are named after the service: `<name>_started`,
`<name>_exited`, `<name>_start_failed`, `<name>_killed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from gateway import log
from gateway.config import Config

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
READY = b"R\n"
_RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
_STAYED_UP = 60.0
_PR_SET_PDEATHSIG = 1


class ChildStartError(Exception):
    """The child process did not start; the message says why."""


def child_env() -> dict[str, str]:
    """This environment, with this very source tree first on the import path."""
    here = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, path]))}


class ChildProcess:
    """Supervises one service process on behalf of the daemon."""

    def __init__(self, cfg: Config, name: str, module: str) -> None:
        self._cfg = cfg
        self._name = name
        self._module = module
        self._proc: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The running process's id."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the service and wait until it listens; ChildStartError says why not."""
        self._proc = await self._spawn()
        self._watcher = asyncio.create_task(self._watch(), name=f"{self._name}-watch")

    async def _spawn(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self._module, str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=child_env(),
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        try:
            # Trusted: the configuration this process validated, to its own child.
            proc.stdin.write(pickle.dumps(self._cfg))
            await proc.stdin.drain()
            proc.stdin.close()
            async with asyncio.timeout(START_TIMEOUT):
                line = await proc.stdout.readline()
        except (TimeoutError, OSError):
            line = b""
        if line == READY:
            log.event(f"{self._name}_started", pid=proc.pid)
            return proc
        if proc.returncode is None:
            proc.kill()
        code = await proc.wait()
        raise ChildStartError(
            f"the {self._name} process did not start (exit {code}); "
            "its startup_failed line says why"
        )

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            proc = self._proc
            assert proc is not None
            started = loop.time()
            code = await proc.wait()
            log.event(f"{self._name}_exited", level=logging.ERROR, pid=proc.pid, code=code,
                      action="restart")  # fmt: skip
            if loop.time() - started >= _STAYED_UP:
                failures = 0
            while True:
                await asyncio.sleep(_RESTART_DELAYS[min(failures, len(_RESTART_DELAYS) - 1)])
                failures += 1
                try:
                    self._proc = await self._spawn()
                    break
                except (ChildStartError, OSError) as exc:
                    log.event(f"{self._name}_start_failed", level=logging.ERROR, reason=str(exc))

    async def stop(self) -> None:
        """SIGTERM the service and wait for it (SIGKILL after STOP_TIMEOUT)."""
        if self._stopping:
            return
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await proc.wait()
        except TimeoutError:
            log.event(f"{self._name}_killed", level=logging.ERROR, pid=proc.pid,
                      reason="stop timeout")  # fmt: skip
            proc.kill()
            await proc.wait()


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the request took effect


def child_main(argv: list[str], run: Callable[[Config, Callable[[], None]], int]) -> int:
    """The child side: `python -m MODULE PARENT_PID`; run(cfg, ready) serves until SIGTERM."""
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m MODULE PARENT_PID", file=sys.stderr)
        return 2
    die_with_parent(int(argv[0]))
    cfg = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - written by our parent process
    if not isinstance(cfg, Config):
        return 2
    # Ctrl-C in a terminal reaches the whole group: the daemon decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.buffer

    def ready() -> None:
        out.write(READY)
        out.flush()

    log.setup(cfg.log.level)
    try:
        return run(cfg, ready)
    finally:
        log.stop()
