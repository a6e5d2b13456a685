"""Prometheus metrics: counted from events in every process, served by the main one.

Events arise in the main process (inbound, policy), the delivery process and
the portal process, so counters use prometheus_client's multiprocess mode: each
process writes its values to files in `data_dir/metrics/` (emptied when the
gateway starts; the variable PROMETHEUS_MULTIPROC_DIR, set here, is inherited
by the child processes), and the main process's endpoint (`metrics.listen`)
sums them, adding queue depth and age read from the spool at scrape time.
docs/metrics.md lists the metrics.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway import log
from gateway.config import Config

Closer = Callable[[], Awaitable[None]]
ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir(data_dir: Path) -> Path:
    """Where the processes keep their values."""
    return data_dir / "metrics"


def _prepare(directory: Path) -> None:
    """An empty directory, and multiprocess mode for this process and its children."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(mode=0o700, parents=True)
    os.environ[ENV] = str(directory)
    from prometheus_client import values

    # Chosen when prometheus_client is first imported: choose again now the variable is set.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


async def start(cfg: Config, *, serve: bool) -> Closer:
    """Count this process's events; the main process (serve) also prepares and serves."""

    async def nothing() -> None:
        return None

    if not cfg.metrics.enabled:
        return nothing
    if serve:
        await asyncio.to_thread(_prepare, metrics_dir(cfg.data_dir))
    elif not os.environ.get(ENV):
        return nothing  # started apart from the gateway's main process: nobody would serve it
    from gateway.metrics.collect import GatewayMetrics

    counted = GatewayMetrics()
    log.add_listener(counted.listen)
    server = None
    if serve:
        from gateway.metrics.server import serve as serve_http

        try:
            server = serve_http(cfg)
        except BaseException:
            log.remove_listener(counted.listen)
            raise

    async def close() -> None:
        log.remove_listener(counted.listen)
        if server is not None:
            server.close()

    return close
