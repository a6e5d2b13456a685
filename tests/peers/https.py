"""An HTTPS server on loopback whose documents tests set per host name and path.

It stands in for the web servers a gateway asks during delivery: an MTA-STS
policy host (mta-sts.DOMAIN) or a Web Key Directory (openpgpkey.DOMAIN or the
domain itself). One certificate, issued by the test CA, names every host the
test registers; DNS (tests.peers.dns) points those names at this server.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

import trustme


@dataclass
class Document:
    """What the server answers for one (host, path)."""

    body: bytes
    status: int = 200
    content_type: str = "application/octet-stream"
    delay: float = 0.0  # seconds to wait before answering, for timeout tests


@dataclass
class Request:
    """One request the server received."""

    host: str
    path: str


@dataclass
class _State:
    documents: dict[tuple[str, str], Document] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        path = self.path.split("?", 1)[0]
        state = self.server.state
        with state.lock:
            state.requests.append(Request(host, self.path))
            doc = state.documents.get((host, path))
        if doc is None:
            doc = Document(b"not found\n", status=404, content_type="text/plain")
        if doc.delay:
            threading.Event().wait(doc.delay)
        self.send_response(doc.status)
        self.send_header("Content-Type", doc.content_type)
        self.send_header("Content-Length", str(len(doc.body)))
        self.end_headers()
        self.wfile.write(doc.body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read requests from HttpsServer.requests."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: clients that hang up early (size caps, timeouts) are what tests provoke."""


class HttpsServer:
    """Serves registered documents over HTTPS on (address, port) until closed."""

    def __init__(
        self, ca: trustme.CA, hosts: list[str], address: str = "127.0.80.1", port: int = 443
    ) -> None:
        self.address = address
        self.port = port
        self._state = _State()
        cert = ca.issue_cert(*hosts)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        self._server = _Server((address, port), _Handler)
        self._server.state = self._state
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def put(self, host: str, path: str, body: bytes | str, **kwargs: object) -> None:
        """Serve body at https://host/path (status, content_type, delay as keywords)."""
        data = body.encode() if isinstance(body, str) else body
        doc = Document(data, **kwargs)  # type: ignore[arg-type]
        with self._state.lock:
            self._state.documents[(host.lower(), path)] = doc

    def remove(self, host: str, path: str) -> None:
        """Stop serving host/path (it answers 404 from now on)."""
        with self._state.lock:
            self._state.documents.pop((host.lower(), path), None)

    @property
    def requests(self) -> list[Request]:
        """Every request so far, oldest first."""
        with self._state.lock:
            return list(self._state.requests)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HttpsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_ca(ca: trustme.CA, path: Path) -> Path:
    """The CA certificate as PEM at path (for delivery.tls_ca_file)."""
    ca.cert_pem.write_to_path(str(path))
    return path
