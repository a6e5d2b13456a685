"""The API as a child of `sealgate run` (gateway/childproc.py does the supervising)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from gateway.childproc import ChildProcess, child_main
from gateway.config import Config


def api_process(cfg: Config) -> ChildProcess:
    """The supervisor for the API's process (`python -m api.process PARENT_PID`)."""
    return ChildProcess(cfg, "api", "api.process")


def _run(cfg: Config, ready: Callable[[], None]) -> int:
    from api.serve import run

    return run(cfg, on_ready=ready, signals=(signal.SIGTERM,))


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:], _run))
