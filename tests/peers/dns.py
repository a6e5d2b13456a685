"""A tiny authoritative DNS server on loopback (UDP and TCP) whose records tests set at runtime."""

from __future__ import annotations

import base64
import socket
import socketserver
import struct
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RD, RR, TLSA, TXT, A, DNSRecord

_SUPPORTED = ("A", "AAAA", "MX", "TXT", "TLSA", "CNAME", "OPENPGPKEY")
# RFC 1035 4.2.1: without EDNS a UDP answer is at most 512 bytes; larger ones are
# truncated (TC) so the client retries over TCP, which is what large TXT tests exercise.
_CLASSIC_UDP_LIMIT = 512
_MAX_CNAME_CHAIN = 8


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower() + "."


def _txt_chunks(value: str) -> list[bytes]:
    raw = value.encode()
    # RFC 1035 3.3.14: one character-string holds at most 255 bytes.
    return [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]


def _rdata(rtype: str, value: str) -> Any:
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype == "MX":
        pref, _, host = value.strip().partition(" ")
        return MX(host.strip(), int(pref))
    if rtype == "TXT":
        return TXT(_txt_chunks(value))
    if rtype == "TLSA":
        usage, selector, mtype, *data = value.split()
        return TLSA(int(usage), int(selector), int(mtype), bytes.fromhex("".join(data)))
    if rtype == "CNAME":
        return CNAME(value)
    if rtype == "OPENPGPKEY":
        # RFC 7929: the transferable public key, given here in base64 as in a zone file.
        return RD(base64.b64decode("".join(value.split())))
    raise ValueError(f"unsupported record type {rtype!r}; use one of {', '.join(_SUPPORTED)}")


@dataclass(frozen=True)
class Query:
    """One question the server received."""

    name: str
    rtype: str
    protocol: str


class _Zone:
    """The records, behind a lock: the socket servers answer from several threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[tuple[str, str], list[RR]] = {}
        self.failing: set[str] = set()
        self.dropping: set[str] = set()
        self.queries: list[Query] = []

    def name_exists(self, name: str) -> bool:
        # An empty non-terminal (e.g. "_domainkey.example." above a selector) exists:
        # it answers NODATA, not NXDOMAIN (RFC 8020).
        return any(n == name or n.endswith("." + name) for n, _ in self.records)

    def answer(self, request: DNSRecord, protocol: str) -> DNSRecord | None:
        reply = request.reply(ra=0, aa=1)
        # Not a validating resolver: never vouch for DNSSEC (DANE trusts only AD=1).
        reply.header.ad = 0
        if not request.questions:
            reply.header.rcode = RCODE.FORMERR
            return reply
        q = request.q
        name = _norm(str(q.qname))
        rtype = QTYPE.get(q.qtype, str(q.qtype))
        with self.lock:
            self.queries.append(Query(name, rtype, protocol))
            if name in self.dropping:
                return None
            if name in self.failing:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            self._fill(reply, name, rtype)
        return reply

    def _fill(self, reply: DNSRecord, name: str, rtype: str) -> None:
        for _ in range(_MAX_CNAME_CHAIN):
            if rtype != "CNAME" and (name, "CNAME") in self.records:
                cname = self.records[(name, "CNAME")]
                for rr in cname:
                    reply.add_answer(rr)
                name = _norm(str(cname[0].rdata.label))
                if name in self.failing:
                    reply.header.rcode = RCODE.SERVFAIL
                    return
                continue
            if (name, rtype) in self.records:
                for rr in self.records[(name, rtype)]:
                    reply.add_answer(rr)
            elif not self.name_exists(name):
                reply.header.rcode = RCODE.NXDOMAIN
            # Otherwise NODATA: NOERROR with an empty answer section.
            return


class _Handler(socketserver.BaseRequestHandler):
    """Reads one query (UDP datagram or length-prefixed TCP message) and answers it."""

    server: _UdpServer | _TcpServer

    def handle(self) -> None:
        tcp = self.server.socket_type == socket.SOCK_STREAM
        try:
            if tcp:
                while True:
                    wire = self._read_tcp_message()
                    if wire is None:
                        return
                    self._respond(wire, tcp=True)
            else:
                data, _ = self.request
                self._respond(data, tcp=False)
        except (OSError, ValueError, struct.error):
            return

    def _read_tcp_message(self) -> bytes | None:
        head = self._recv_exact(2)
        if head is None:
            return None
        (length,) = struct.unpack("!H", head)
        return self._recv_exact(length)

    def _recv_exact(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = self.request.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _respond(self, wire: bytes, *, tcp: bool) -> None:
        try:
            request = DNSRecord.parse(wire)
        except Exception:  # dnslib raises several types on garbage; a test server just ignores it
            return
        reply = self.server.zone.answer(request, "tcp" if tcp else "udp")
        if reply is None:
            return
        data = reply.pack()
        if tcp:
            self.request.sendall(struct.pack("!H", len(data)) + data)
            return
        limit = _CLASSIC_UDP_LIMIT
        for rr in request.ar:
            if rr.rtype == QTYPE.OPT:
                limit = max(limit, int(rr.rclass))
        if len(data) > limit:
            # Keep the question: resolvers (dnspython among them) discard an answer
            # whose question section does not match theirs.
            short = request.reply(ra=0, aa=1)
            short.header.tc = 1
            data = short.pack()
        _, sock = self.request
        sock.sendto(data, self.client_address)


class _UdpServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    # SO_REUSEADDR would let a second server silently share the UDP port (and
    # steal half the queries); UDP has no TIME_WAIT to work around anyway.
    allow_reuse_address = False
    daemon_threads = True

    def __init__(self, address: tuple[str, int], zone: _Zone) -> None:
        self.zone = zone
        super().__init__(address, _Handler)


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], zone: _Zone) -> None:
        self.zone = zone
        super().__init__(address, _Handler)


class DnsServer:
    """Authoritative answers for whatever names a test adds; NXDOMAIN for everything else."""

    def __init__(self, address: str = "127.0.0.53", port: int = 53) -> None:
        self.address = address
        self.port = port
        self._zone = _Zone()
        self._servers: list[_UdpServer | _TcpServer] = []
        self._threads: list[threading.Thread] = []

    @property
    def nameserver(self) -> str:
        """The server as "host:port", the form `dns.nameservers` takes."""
        return f"{self.address}:{self.port}"

    @property
    def queries(self) -> list[Query]:
        """Every question received so far, oldest first."""
        with self._zone.lock:
            return list(self._zone.queries)

    def start(self) -> None:
        """Bind UDP and TCP and serve from background threads."""
        if self._servers:
            return
        udp = _UdpServer((self.address, self.port), self._zone)
        try:
            # With port 0 the kernel picks one: TCP must then use the same number.
            self.port = udp.server_address[1]
            tcp = _TcpServer((self.address, self.port), self._zone)
        except BaseException:
            udp.server_close()
            raise
        self._servers = [udp, tcp]
        for srv in self._servers:
            t = threading.Thread(target=srv.serve_forever, name=f"dns-{self.nameserver}")
            t.daemon = True
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop serving and release the sockets."""
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=10)
        self._servers, self._threads = [], []

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def add(self, name: str, rtype: str, value: str, ttl: int = 60) -> None:
        """Add one record; adding several of the same name and type makes an RRset."""
        rtype = rtype.upper()
        if rtype not in _SUPPORTED:
            raise ValueError(
                f"unsupported record type {rtype!r}; use one of {', '.join(_SUPPORTED)}"
            )
        owner = _norm(name)
        rr = RR(owner, getattr(QTYPE, rtype), rdata=_rdata(rtype, value), ttl=ttl)
        with self._zone.lock:
            if rtype == "CNAME" and any(n == owner and t != "CNAME" for n, t in self._zone.records):
                raise ValueError(f"{owner} has other records; a CNAME cannot sit beside them")
            self._zone.records.setdefault((owner, rtype), []).append(rr)

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Delete a name's records of one type, or all of them."""
        owner = _norm(name)
        with self._zone.lock:
            for key in [k for k in self._zone.records if k[0] == owner]:
                if rtype is None or key[1] == rtype.upper():
                    del self._zone.records[key]

    def fail(self, name: str) -> None:
        """Answer SERVFAIL for this name (a broken authoritative server)."""
        with self._zone.lock:
            self._zone.failing.add(_norm(name))

    def drop(self, name: str) -> None:
        """Never answer queries for this name (the client times out)."""
        with self._zone.lock:
            self._zone.dropping.add(_norm(name))

    def clear(self) -> None:
        """Forget every record, failure, drop and recorded query."""
        with self._zone.lock:
            self._zone.records.clear()
            self._zone.failing.clear()
            self._zone.dropping.clear()
            self._zone.queries.clear()
