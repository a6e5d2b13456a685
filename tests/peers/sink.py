"""A receiving SMTP server on loopback that records what it gets and answers as scripted."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

_ACCEPT = "250 2.0.0 Ok: queued"
_WILDCARDS = ("*.example.net", "*.example.com", "*.example.org")


@dataclass(frozen=True)
class TlsInfo:
    """What the STARTTLS session looked like from the server's side."""

    version: str
    cipher: str
    bits: int
    sni: str | None


class Received(tuple[str, list[str], bytes, TlsInfo | None]):
    """One accepted message: unpacks as (mail_from, rcpt_tos, data, tls_info), with more facts."""

    peer: tuple[str, int]
    helo: str | None
    auth_login: str | None
    mail_options: list[str]
    rcpt_options: list[str]

    def __new__(
        cls,
        mail_from: str,
        rcpt_tos: list[str],
        data: bytes,
        tls_info: TlsInfo | None,
        *,
        peer: tuple[str, int],
        helo: str | None,
        auth_login: str | None,
        mail_options: list[str],
        rcpt_options: list[str],
    ) -> Received:
        """Build the record; the extra facts are keyword-only so the tuple stays four long."""
        self = super().__new__(cls, (mail_from, rcpt_tos, data, tls_info))
        self.peer = peer
        self.helo = helo
        self.auth_login = auth_login
        self.mail_options = mail_options
        self.rcpt_options = rcpt_options
        return self

    @property
    def mail_from(self) -> str:
        """The envelope sender ("" for the null sender)."""
        return self[0]

    @property
    def rcpt_tos(self) -> list[str]:
        """The envelope recipients this transaction accepted."""
        return self[1]

    @property
    def data(self) -> bytes:
        """The message exactly as received (CRLF line ends, dot-unstuffed)."""
        return self[2]

    @property
    def tls_info(self) -> TlsInfo | None:
        """TLS facts, or None when the session was plaintext."""
        return self[3]


class _Handler:
    """aiosmtpd handler hooks: scripted replies and recording."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        reply = self.sink._lookup(self.sink.reply_mail, address)
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.sink._lookup(self.sink.reply_rcpt, address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self.sink._finish(session, envelope)


class _RecordingSMTP(SMTP):
    """Counts connections (the STARTTLS re-entry into connection_made is the same one)."""

    def __init__(self, sink: SmtpSink, handler: _Handler, **kwargs: Any) -> None:
        self._sink = sink
        super().__init__(handler, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count new TCP connections before handing over to aiosmtpd."""
        if self._original_transport is None:
            self._sink._connected(transport.get_extra_info("peername"))
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        """Forget the session so shutdown only closes live ones."""
        self._sink._protocols.discard(self)
        super().connection_lost(error)


class SmtpSink:
    """An SMTP server in its own thread and event loop, so tests can block on it safely."""

    def __init__(
        self,
        host: str = "127.0.0.2",
        port: int = 25,
        tls_cert: trustme.LeafCert | None = None,
        *,
        hostname: str | None = None,
        auth: Mapping[str, str] | None = None,
        data_size_limit: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname or f"sink-{host.replace('.', '-').replace(':', '-')}.test"
        self.tls_cert = tls_cert
        self.auth = dict(auth or {})
        self.data_size_limit = data_size_limit
        # Scripted replies; a test may change them while clients are connected.
        self.reply_mail: dict[str, str] = {}
        self.reply_rcpt: dict[str, str] = {}
        self.reply_data: list[str | None] = []
        self.messages: list[Received] = []
        self.peers: list[tuple[str, int]] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._protocols: set[_RecordingSMTP] = set()
        self._sni: dict[int, str] = {}

    @property
    def address(self) -> str:
        """The listener as "host:port" (the form `delivery.relay_host` takes)."""
        return f"{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        """How many TCP connections clients have opened so far."""
        with self._cond:
            return len(self.peers)

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Bind and serve from a background thread; raise if the address is taken."""
        if self._thread is not None:
            return
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(self._make_protocol, self.host, self.port)
                )
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            self.port = self._server.sockets[0].getsockname()[1]
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"smtp-sink-{self.host}", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if failure or not ready.is_set():
            self._thread.join(timeout=10)
            self._thread = None
            self._loop = None
            if failure:
                raise RuntimeError(
                    f"sink could not listen on {self.address}: {failure[0]}"
                ) from failure[0]
            raise RuntimeError(f"sink on {self.address} did not start")

    def stop(self) -> None:
        """Close the listener and every open session; wait for the thread to end."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._thread = None
        self._loop = None

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for proto in list(self._protocols):
            if proto.transport is not None:
                proto.transport.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- waiting -------------------------------------------------------------

    def wait_for(self, n: int = 1, timeout: float = 30.0) -> list[Received]:
        """Block until at least n messages arrived; return them, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"sink {self.address} got {len(self.messages)} message(s), "
                        f"expected {n} within {timeout:g}s"
                    )
                self._cond.wait(left)
            return list(self.messages)

    async def wait_for_async(self, n: int = 1, timeout: float = 30.0) -> list[Received]:
        """wait_for for coroutines: waits in a thread so the caller's loop keeps running."""
        return await asyncio.to_thread(self.wait_for, n, timeout)

    def reset(self) -> None:
        """Forget received messages, connections and scripted replies."""
        with self._cond:
            self.messages.clear()
            self.peers.clear()
            self.reply_mail.clear()
            self.reply_rcpt.clear()
            self.reply_data.clear()

    # --- internals (called from the sink's loop thread) -----------------------

    def _make_protocol(self) -> _RecordingSMTP:
        kwargs: dict[str, Any] = {
            "hostname": self.hostname,
            "enable_SMTPUTF8": True,
            "decode_data": False,
            "data_size_limit": self.data_size_limit,
            "loop": self._loop,
            # Generous: a slow CI machine must not see the sink hang up on it.
            "timeout": 600,
        }
        if self.tls_cert is not None:
            kwargs["tls_context"] = self._tls_context()
        if self.auth:
            kwargs["authenticator"] = self._authenticate
        proto = _RecordingSMTP(self, _Handler(self), **kwargs)
        self._protocols.add(proto)
        return proto

    def _tls_context(self) -> ssl.SSLContext:
        assert self.tls_cert is not None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls_cert.configure_cert(ctx)

        def remember_sni(obj: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
            if name is not None:
                self._sni[id(obj)] = name

        ctx.sni_callback = remember_sni
        return ctx

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode(errors="replace")
            if self.auth.get(login) == auth_data.password.decode(errors="replace"):
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    def _connected(self, peer: tuple[str, int]) -> None:
        with self._cond:
            self.peers.append(peer)

    @staticmethod
    def _lookup(table: dict[str, str], address: str) -> str | None:
        return table.get(address, table.get(address.lower()))

    def _tls_info(self, session: Session) -> TlsInfo | None:
        if not session.ssl:
            return None
        obj = session.ssl.get("ssl_object")
        if obj is None:
            return None
        name, version, bits = obj.cipher() or ("", "", 0)
        return TlsInfo(
            version=obj.version() or version,
            cipher=name,
            bits=bits,
            sni=self._sni.get(id(obj)),
        )

    def _finish(self, session: Session, envelope: Envelope) -> str:
        with self._cond:
            scripted = self.reply_data.pop(0) if self.reply_data else None
            if scripted is not None:
                return scripted
            data = envelope.original_content or b""
            if isinstance(envelope.content, bytes) and not envelope.original_content:
                data = envelope.content
            self.messages.append(
                Received(
                    # aiosmtpd keeps the null sender as "<>"; tests compare with "".
                    "" if envelope.mail_from in (None, "<>") else envelope.mail_from,
                    list(envelope.rcpt_tos),
                    data,
                    self._tls_info(session),
                    peer=cast(tuple[str, int], session.peer),
                    helo=session.host_name,
                    auth_login=session.auth_data if session.authenticated else None,
                    mail_options=list(envelope.mail_options),
                    rcpt_options=list(envelope.rcpt_options),
                )
            )
            self._cond.notify_all()
            return f"{_ACCEPT} as {len(self.messages)}"


class SinkFactory:
    """Starts sinks on demand and stops every one of them in `close()` (a fixture's teardown)."""

    def __init__(self, ca: trustme.CA) -> None:
        self.ca = ca
        self.sinks: list[SmtpSink] = []

    def __call__(
        self,
        host: str = "127.0.0.2",
        port: int = 25,
        *,
        tls: bool = False,
        tls_cert: trustme.LeafCert | None = None,
        cert_names: list[str] | None = None,
        hostname: str | None = None,
        auth: Mapping[str, str] | None = None,
        data_size_limit: int | None = None,
    ) -> SmtpSink:
        """A started sink; with tls=True it offers STARTTLS with a certificate from `ca`.

        The default certificate names cover the sink's hostname, its address, localhost
        and any name one label under example.net, example.com or example.org (e.g.
        mx1.example.net; OpenSSL ignores wildcards directly under a TLD such as
        "*.example"). Pass cert_names for other MX names or to test a mismatch.
        """
        if tls and tls_cert is None:
            sink_name = hostname or f"sink-{host.replace('.', '-').replace(':', '-')}.test"
            names = cert_names or [sink_name, host, "localhost", *_WILDCARDS]
            tls_cert = self.ca.issue_cert(*names)
        sink = SmtpSink(
            host,
            port,
            tls_cert,
            hostname=hostname,
            auth=auth,
            data_size_limit=data_size_limit,
        )
        sink.start()
        self.sinks.append(sink)
        return sink

    def close(self) -> None:
        """Stop every sink this factory started."""
        while self.sinks:
            self.sinks.pop().stop()
