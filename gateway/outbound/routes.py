"""Next hops for a destination: the relay host, or the domain's mail exchangers in order."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from typing import Literal

from gateway.config import HostPort
from gateway.resolver import DnsTemporaryError, MxRecord, Resolver


@dataclass(frozen=True)
class Hop:
    """A host to try (its name is also the TLS name to verify) and the port.

    secure: the host was learnt from a DNSSEC-validated MX answer, so DANE may
    apply to it (RFC 7672 section 2.2.1); never for a relay host or IP literal.
    """

    host: str
    port: int
    secure: bool = False


@dataclass(frozen=True)
class NoRoute:
    """Why no host can be tried for a destination; applies to every recipient."""

    status: Literal["transient", "permanent"]
    code: int | None
    text: str


def _address_literal(domain: str) -> str | None:
    """The IP of an RFC 5321 address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]")."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


def _shuffled_by_preference(records: tuple[MxRecord, ...]) -> list[MxRecord]:
    # RFC 5321 section 5.1: hosts of equal preference are tried in random
    # order, which spreads load across them.
    rng = random.SystemRandom()
    groups: dict[int, list[MxRecord]] = {}
    for record in records:
        groups.setdefault(record.preference, []).append(record)
    out: list[MxRecord] = []
    for preference in sorted(groups):
        group = groups[preference]
        rng.shuffle(group)
        out.extend(group)
    return out


async def find_route(
    domain: str, resolver: Resolver, relay_host: HostPort | None, mx_port: int
) -> list[Hop] | NoRoute:
    """The hosts to try for domain, best first, or why there are none."""
    if relay_host is not None:
        return [Hop(relay_host.host, relay_host.port)]
    literal = _address_literal(domain)
    if literal is not None:
        return [Hop(literal, mx_port)]
    try:
        answer = await resolver.mx(domain)
    except DnsTemporaryError as exc:
        return NoRoute("transient", None, f"4.4.3 MX lookup for {domain} failed: {exc}")
    if answer.nxdomain:
        return NoRoute("permanent", None, f"5.1.2 Domain {domain} does not exist")
    if answer.null_mx:
        # RFC 7505 section 4.2: report 556 5.1.10 without trying to connect.
        return NoRoute("permanent", 556, "5.1.10 Recipient address has null MX")
    if not answer.records:
        return NoRoute("permanent", None, f"5.4.4 Domain {domain} has no MX or address records")
    secure = answer.authenticated
    return [Hop(r.host, mx_port, secure) for r in _shuffled_by_preference(answer.records)]
