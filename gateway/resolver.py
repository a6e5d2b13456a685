"""DNS lookups for mail routing and record checks, through dnspython's async resolver.

Answers are cached for their TTL (negative answers for the zone's negative TTL)
by dnspython's own LRU cache, so a burst of deliveries to one domain costs one
MX lookup.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.TLSA import TLSA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from gateway.config import DnsConfig

# dnspython's default per-server timeout; the configured timeout bounds the
# whole lookup so a lost UDP packet is retried within it.
_PER_TRY_TIMEOUT = 2.0
_CACHE_ENTRIES = 10_000


class DnsTemporaryError(Exception):
    """A lookup failed in a way that may succeed later (SERVFAIL, timeout): retry later."""


@dataclass(frozen=True)
class MxRecord:
    """One mail exchanger: preference and host name (lowercase, no trailing dot)."""

    preference: int
    host: str


@dataclass(frozen=True)
class MxAnswer:
    """Where mail for a domain goes.

    records are sorted by preference. null_mx: the domain accepts no mail (RFC
    7505). implicit: no MX but the domain has addresses, so it is its own mail
    exchanger (RFC 5321 section 5.1). nxdomain: the domain does not exist.
    authenticated: the resolver validated the answer with DNSSEC (AD bit); DANE
    applies only to exchangers learnt from a secure MX RRset (RFC 7672 section 2.2.1).
    """

    records: tuple[MxRecord, ...]
    null_mx: bool = False
    implicit: bool = False
    nxdomain: bool = False
    authenticated: bool = False


@dataclass(frozen=True)
class TlsaRecord:
    """One TLSA record (RFC 6698): usage, selector, matching type, association data."""

    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True)
class TlsaAnswer:
    """TLSA records of a name, and whether the resolver vouched for them (AD bit).

    The AD bit is only meaningful when the path to a validating resolver is
    trusted (e.g. a resolver on localhost).
    """

    records: tuple[TlsaRecord, ...]
    authenticated: bool


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _to_name(text: str) -> dns.name.Name | None:
    """An absolute DNS name, or None when text cannot be a domain name."""
    text = text.strip().rstrip(".")
    if not text:
        return None
    try:
        return dns.name.from_text(text)
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return None


def _host_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


class Resolver:
    """Async DNS resolver for the lookups mail delivery and DNS checks need."""

    def __init__(self, cfg: DnsConfig) -> None:
        if cfg.nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            servers: list[str | dns.nameserver.Nameserver] = []
            for ns in cfg.nameservers:
                if not _is_ip(ns.host):
                    raise ValueError(f"DNS server {ns} must be given as an IP address")
                servers.append(dns.nameserver.Do53Nameserver(ns.host, ns.port))
            resolver.nameservers = servers
        else:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                # What the C library does without /etc/resolv.conf.
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = ["127.0.0.1"]
        resolver.lifetime = cfg.timeout
        resolver.timeout = min(_PER_TRY_TIMEOUT, cfg.timeout)
        # AD in the query asks a validating resolver to say whether it
        # validated the answer (RFC 6840 section 5.7); DANE needs that fact.
        resolver.flags = dns.flags.RD | dns.flags.AD
        resolver.cache = dns.resolver.LRUCache(_CACHE_ENTRIES)
        self._resolver = resolver

    async def _resolve(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.resolver.Answer | None:
        """The answer (rrset None for NODATA), or None for NXDOMAIN."""
        try:
            return await self._resolver.resolve(
                name, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoNameservers:
            raise DnsTemporaryError(
                f"no DNS server answered for {_host_text(name)} {rdtype.name} (SERVFAIL)"
            ) from None
        except dns.exception.Timeout:
            raise DnsTemporaryError(
                f"DNS lookup of {_host_text(name)} {rdtype.name} timed out"
            ) from None
        except dns.exception.DNSException as exc:
            raise DnsTemporaryError(
                f"DNS lookup of {_host_text(name)} {rdtype.name} failed: {exc}"
            ) from None

    async def mx(self, domain: str) -> MxAnswer:
        """The mail exchangers of domain, sorted by preference."""
        name = _to_name(domain)
        if name is None:
            return MxAnswer(records=(), nxdomain=True)
        answer = await self._resolve(name, dns.rdatatype.MX)
        if answer is None:
            return MxAnswer(records=(), nxdomain=True)
        authenticated = bool(answer.response.flags & dns.flags.AD)
        if answer.rrset is None:
            # RFC 5321 section 5.1: no MX but an address means the domain is
            # its own mail exchanger. A validated denial of the MX makes the
            # implicit exchanger as trustworthy as a secure MX would be.
            host = _host_text(name)
            if await self.addresses(host):
                return MxAnswer(
                    records=(MxRecord(0, host),), implicit=True, authenticated=authenticated
                )
            return MxAnswer(records=(), authenticated=authenticated)
        records: list[MxRecord] = []
        saw_root = False
        for rdata in answer.rrset:
            assert isinstance(rdata, MX)
            if rdata.exchange == dns.name.root:
                saw_root = True
            else:
                records.append(MxRecord(rdata.preference, _host_text(rdata.exchange)))
        records.sort(key=lambda r: r.preference)
        # RFC 7505 section 3: a null MX is the only MX of its domain. If a
        # misconfigured domain publishes real exchangers beside it, use them.
        return MxAnswer(
            records=tuple(records),
            null_mx=saw_root and not records,
            authenticated=authenticated,
        )

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of host ([] when it has none)."""
        if _is_ip(host):
            return [host]
        name = _to_name(host)
        if name is None:
            return []
        outcomes = await asyncio.gather(
            self._resolve(name, dns.rdatatype.A),
            self._resolve(name, dns.rdatatype.AAAA),
            return_exceptions=True,
        )
        found: list[str] = []
        failure: DnsTemporaryError | None = None
        for outcome in outcomes:
            if isinstance(outcome, DnsTemporaryError):
                failure = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            elif outcome is not None and outcome.rrset is not None:
                for rdata in outcome.rrset:
                    assert isinstance(rdata, A | AAAA)
                    found.append(rdata.address)
        # One family answering is enough to deliver; report a failure only
        # when it leaves us with nothing.
        if not found and failure is not None:
            raise failure
        return found

    async def txt(self, name: str) -> list[str]:
        """Each TXT record of name as one string ([] for NXDOMAIN or no TXT)."""
        qname = _to_name(name)
        if qname is None:
            return []
        answer = await self._resolve(qname, dns.rdatatype.TXT)
        if answer is None or answer.rrset is None:
            return []
        out: list[str] = []
        for rdata in answer.rrset:
            assert isinstance(rdata, TXT)
            out.append(b"".join(rdata.strings).decode("utf-8", errors="replace"))
        return out

    async def tlsa(self, name: str) -> TlsaAnswer:
        """TLSA records of name (e.g. "_25._tcp.mx.example") and their DNSSEC status."""
        qname = _to_name(name)
        if qname is None:
            return TlsaAnswer(records=(), authenticated=False)
        answer = await self._resolve(qname, dns.rdatatype.TLSA)
        if answer is None or answer.rrset is None:
            return TlsaAnswer(records=(), authenticated=False)
        records: list[TlsaRecord] = []
        for rdata in answer.rrset:
            assert isinstance(rdata, TLSA)
            records.append(TlsaRecord(rdata.usage, rdata.selector, rdata.mtype, rdata.cert))
        authenticated = bool(answer.response.flags & dns.flags.AD)
        return TlsaAnswer(records=tuple(records), authenticated=authenticated)

    async def openpgpkey(self, name: str) -> tuple[list[bytes], bool]:
        """OPENPGPKEY records (RFC 7929) of name and whether the resolver vouched for them (AD)."""
        from dns.rdtypes.ANY.OPENPGPKEY import OPENPGPKEY

        qname = _to_name(name)
        if qname is None:
            return [], False
        answer = await self._resolve(qname, dns.rdatatype.OPENPGPKEY)
        if answer is None or answer.rrset is None:
            return [], False
        keys: list[bytes] = []
        for rdata in answer.rrset:
            assert isinstance(rdata, OPENPGPKEY)
            keys.append(rdata.key)
        return keys, bool(answer.response.flags & dns.flags.AD)
