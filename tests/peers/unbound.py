"""A DNSSEC-signed test zone behind a real validating resolver (unbound) on loopback.

The zone is signed with ldns-signzone under a key made by ldns-keygen; unbound
loads it as an auth-zone "for upstream", so its answers go through unbound's
validator exactly as if fetched from an authoritative server, with the zone's
DS as the only trust anchor. Answers from the zone carry AD=1; a tampered or
unsigned copy would not.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype

_TOOLS = ("unbound", "ldns-keygen", "ldns-signzone")


def unbound_available() -> bool:
    """Whether unbound and the ldns tools are installed."""
    return all(shutil.which(tool) for tool in _TOOLS)


class SignedZone:
    """Records of one zone, signed when the resolver starts."""

    def __init__(self, origin: str) -> None:
        self.origin = origin.strip().rstrip(".").lower() + "."
        self._records: list[str] = []

    def add(self, name: str, rtype: str, value: str, ttl: int = 300) -> None:
        """Add one record (name relative to nothing: give the full name)."""
        owner = name.strip().rstrip(".").lower() + "."
        self._records.append(f"{owner} {ttl} IN {rtype.upper()} {value}")

    def sign(self, directory: Path) -> tuple[Path, Path]:
        """Write and sign the zone; return (signed zone file, DS trust anchor file)."""
        directory.mkdir(parents=True, exist_ok=True)
        origin = self.origin
        keygen = subprocess.run(
            ["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", origin],
            cwd=directory,
            check=True,
            capture_output=True,
            text=True,
        )
        base = keygen.stdout.strip()
        zone = directory / f"{origin}zone"
        lines = [
            f"$ORIGIN {origin}",
            f"{origin} 300 IN SOA ns.{origin} admin.{origin} 1 3600 600 86400 300",
            f"{origin} 300 IN NS ns.{origin}",
            f"ns.{origin} 300 IN A 127.0.0.1",
            *self._records,
        ]
        zone.write_text("\n".join(lines) + "\n")
        subprocess.run(
            ["ldns-signzone", "-o", origin, str(zone), base],
            cwd=directory,
            check=True,
            capture_output=True,
        )
        return directory / f"{origin}zone.signed", directory / f"{base}.ds"


class ValidatingResolver:
    """unbound serving signed zones with validation, listening on (address, port)."""

    def __init__(self, workdir: Path, zones: list[SignedZone], address: str, port: int = 53):
        self.workdir = workdir
        self.zones = zones
        self.address = address
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def nameserver(self) -> str:
        """The server as "host:port", the form `dns.nameservers` takes."""
        return f"{self.address}:{self.port}"

    def start(self) -> None:
        """Sign the zones, start unbound and wait until it answers."""
        anchors: list[Path] = []
        auth: list[str] = []
        for zone in self.zones:
            signed, ds = zone.sign(self.workdir / zone.origin.rstrip("."))
            anchors.append(ds)
            auth += [
                "auth-zone:",
                f'  name: "{zone.origin}"',
                f'  zonefile: "{signed}"',
                "  for-downstream: no",
                "  for-upstream: yes",
                "  fallback-enabled: no",
            ]
        server = [
            "server:",
            f"  interface: {self.address}",
            f"  port: {self.port}",
            "  do-daemonize: no",
            '  chroot: ""',
            '  username: ""',
            f'  directory: "{self.workdir}"',
            '  pidfile: ""',
            "  use-syslog: no",
            '  logfile: ""',
            "  verbosity: 1",
            '  module-config: "validator iterator"',
            "  val-log-level: 2",
            # RFC 6761 names (test., example.) are local zones by default.
            '  local-zone: "test." nodefault',
            '  local-zone: "example." nodefault',
            *[f'  trust-anchor-file: "{a}"' for a in anchors],
        ]
        conf = self.workdir / "unbound.conf"
        conf.write_text("\n".join(server + auth) + "\n")
        self._log = open(self.workdir / "unbound.log", "wb")
        self._proc = subprocess.Popen(
            ["unbound", "-d", "-c", str(conf)], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        probe = dns.message.make_query(self.zones[0].origin, dns.rdatatype.SOA)
        probe.flags |= dns.flags.AD
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"unbound exited: {self.log()}")
            try:
                reply = dns.query.udp(probe, self.address, port=self.port, timeout=1)
                if reply.flags & dns.flags.AD:
                    return
            except (OSError, dns.exception.Timeout):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"unbound did not validate its zone: {self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        """What unbound has logged so far."""
        try:
            return (self.workdir / "unbound.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop unbound (only the process this object started)."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
            self._log.close()

    def __enter__(self) -> ValidatingResolver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def port_free(address: str, port: int) -> bool:
    """Whether nothing listens on UDP address:port (another run may hold it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True
