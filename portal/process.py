"""The portal as a child of `sealgate run`: started, watched, restarted, stopped.

The daemon's main process keeps the SMTP listeners; the portal gets a process
of its own (`python -m portal.process PARENT_PID`, the configuration pickled on
its stdin, "ready" as one line on its stdout). It dies with the daemon
(PR_SET_PDEATHSIG), is restarted with growing delays if it crashes, and is
stopped with SIGTERM when the daemon stops. gateway/childproc.py does the
supervising, for the HTTP API's process too.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from gateway.childproc import ChildProcess, ChildStartError, child_main
from gateway.config import Config

PortalProcessError = ChildStartError


class PortalProcess(ChildProcess):
    """Supervises the portal's process on behalf of the daemon."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg, "portal", "portal.process")


def _run(cfg: Config, ready: Callable[[], None]) -> int:
    """The portal under `sealgate run`, until SIGTERM."""
    from portal.serve import run

    return run(cfg, on_ready=ready, signals=(signal.SIGTERM,))


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:], _run))
