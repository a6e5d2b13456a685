"""The metrics endpoint: prometheus_client's HTTP server in a thread of the main process."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from gateway import log
from gateway.config import Config
from gateway.metrics.queue import QueueCollector


class MetricsServer:
    """A running endpoint and how to stop it."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)


def serve(cfg: Config) -> MetricsServer:
    """Serve /metrics on metrics.listen (OSError when the address is taken)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(QueueCollector(cfg.data_dir))
    address = cfg.metrics.listen
    httpd, thread = start_http_server(address.port, addr=address.host, registry=registry)
    log.event("listening", service="metrics", address=str(address))
    return MetricsServer(httpd, thread)
