"""HTTPS GET for policy and key discovery (MTA-STS policies, Web Key Directory).

Names are resolved through the gateway's own resolver (the configured DNS
servers, not the C library's), the certificate is verified against the system
CAs plus delivery.tls_ca_file, and every fetch is bounded in time and size.
Redirects are not followed: RFC 8461 section 3.3 forbids them for MTA-STS, and
a key directory that moves is not worth a second trust decision.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.resolver import DnsTemporaryError, Resolver

_MAX_HEADER_BYTES = 16 * 1024
_USER_AGENT = "Sealgate"


class FetchError(Exception):
    """The resource could not be fetched; the message says why (no content in it)."""


@dataclass(frozen=True)
class FetchResult:
    """An HTTP answer: status, lower-cased headers and the body (at most the size cap)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def https_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client context (system CAs plus ca_file); reads files, so call it in a thread."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


class HttpsFetcher:
    """Fetches https:// URLs with a deadline and a size cap; one per process is enough."""

    def __init__(
        self,
        resolver: Resolver,
        context: ssl.SSLContext,
        *,
        timeout: float,
        max_size: int,
        port: int = 443,
    ) -> None:
        self._resolver = resolver
        self._context = context
        self._timeout = timeout
        self._max_size = max_size
        self._port = port

    async def get(self, url: str, *, accept: str = "*/*") -> FetchResult:
        """GET url; raises FetchError on any network, TLS, protocol or size problem."""
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise FetchError(f"not an https URL: {url}")
        host = parts.hostname
        port = parts.port or self._port
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        try:
            async with asyncio.timeout(self._timeout):
                return await self._get(host, port, target, accept)
        except TimeoutError:
            raise FetchError(f"fetching https://{host}{parts.path} timed out") from None

    async def _get(self, host: str, port: int, target: str, accept: str) -> FetchResult:
        try:
            addresses = await self._resolver.addresses(host)
        except DnsTemporaryError as exc:
            raise FetchError(str(exc)) from None
        if not addresses:
            raise FetchError(f"{host} has no address")
        last: Exception | None = None
        for address in addresses:
            try:
                reader, writer = await asyncio.open_connection(
                    address, port, ssl=self._context, server_hostname=host
                )
            except ssl.SSLError as exc:
                raise FetchError(f"TLS with {host} failed: {exc.reason or exc}") from None
            except OSError as exc:
                last = exc
                continue
            try:
                return await self._exchange(reader, writer, host, target, accept)
            finally:
                writer.close()
        raise FetchError(f"could not connect to {host}: {last}")

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        target: str,
        accept: str,
    ) -> FetchResult:
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {_USER_AGENT}\r\n"
            f"Accept: {accept}\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("ascii"))
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise FetchError(f"{host} sent oversized HTTP headers") from None
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as exc:
            raise FetchError(f"{host} closed the connection: {exc}") from None
        if len(head) > _MAX_HEADER_BYTES:
            raise FetchError(f"{host} sent oversized HTTP headers")
        status, headers = _parse_head(head, host)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked(reader, host)
        else:
            body = await self._read_plain(reader, headers, host)
        return FetchResult(status, headers, body)

    async def _read_plain(
        self, reader: asyncio.StreamReader, headers: Mapping[str, str], host: str
    ) -> bytes:
        length_text = headers.get("content-length")
        if length_text is not None:
            if not length_text.isdigit():
                raise FetchError(f"{host} sent a bad Content-Length")
            length = int(length_text)
            if length > self._max_size:
                raise FetchError(f"{host} answered with more than {self._max_size} bytes")
            try:
                return await reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                raise FetchError(f"{host} sent a truncated body") from None
        body = bytearray()
        while True:
            try:
                chunk = await reader.read(65536)
            except (ConnectionError, ssl.SSLError):
                break  # read-until-close: some servers end TLS without close_notify
            if not chunk:
                break
            body += chunk
            if len(body) > self._max_size:
                raise FetchError(f"{host} answered with more than {self._max_size} bytes")
        return bytes(body)

    async def _read_chunked(self, reader: asyncio.StreamReader, host: str) -> bytes:
        body = bytearray()
        try:
            while True:
                line = await reader.readuntil(b"\r\n")
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise FetchError(f"{host} sent a bad chunk size") from None
                if size == 0:
                    return bytes(body)
                if len(body) + size > self._max_size:
                    raise FetchError(f"{host} answered with more than {self._max_size} bytes")
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            raise FetchError(f"{host} sent a truncated body") from None


def _parse_head(head: bytes, host: str) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
        raise FetchError(f"{host} did not answer HTTP")
    if not status_line[1].isdigit():
        raise FetchError(f"{host} sent a bad HTTP status")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise FetchError(f"{host} sent a malformed HTTP header")
        headers[name.strip().lower()] = value.strip()
    return int(status_line[1]), headers
