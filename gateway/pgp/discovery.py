"""Finding a recipient's OpenPGP key on the network: Web Key Directory and OPENPGPKEY DNS.

WKD (draft-koch-openpgp-webkey-service): the advanced method asks
https://openpgpkey.DOMAIN/.well-known/openpgpkey/DOMAIN/hu/HASH?l=LOCAL; only
when that host does not exist does the direct method ask
https://DOMAIN/.well-known/openpgpkey/hu/HASH?l=LOCAL (section 3.1). HASH is
the z-base-32 form of the SHA-1 of the lower-cased local part.

OPENPGPKEY (RFC 7929): HEX._openpgpkey.DOMAIN where HEX is the SHA2-256 of the
local part truncated to 28 octets. Records count only when the resolver says
it validated them (AD bit): unsigned DNS is no better than no key.

Every lookup is bounded in time and turns any failure into "nothing found";
what went wrong goes to the log (domain and reason, never the address).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import quote

from gateway import log
from gateway.config import PgpConfig
from gateway.fetch import FetchError, HttpsFetcher
from gateway.resolver import DnsTemporaryError, Resolver

_ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"


def zbase32(data: bytes) -> str:
    """z-base-32 encoding (the WKD flavour: no padding, bits read most significant first)."""
    bits = int.from_bytes(data, "big")
    nbits = len(data) * 8
    out: list[str] = []
    for shift in range(nbits - 5, -5, -5):
        chunk = (bits >> shift) & 31 if shift >= 0 else (bits << -shift) & 31
        out.append(_ZBASE32[chunk])
    return "".join(out)


def split_address(address: str) -> tuple[str, str] | None:
    """(local part, ASCII domain) of an address, or None when it is not one."""
    local, sep, domain = address.strip().rpartition("@")
    if not sep or not local or not domain:
        return None
    if any(c.isspace() or not c.isprintable() for c in address.strip()):
        return None
    try:
        ascii_domain = domain.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    if not ascii_domain or "/" in ascii_domain or ":" in ascii_domain:
        return None
    return local, ascii_domain


def wkd_hash(local: str) -> str:
    """The WKD hash of a local part: z-base-32(SHA-1(lower-cased local part))."""
    return zbase32(hashlib.sha1(local.lower().encode("utf-8"), usedforsecurity=False).digest())


def wkd_urls(local: str, domain: str) -> tuple[str, str]:
    """(advanced URL, direct URL) for an address."""
    h = wkd_hash(local)
    query = "l=" + quote(local, safe="")
    advanced = f"https://openpgpkey.{domain}/.well-known/openpgpkey/{domain}/hu/{h}?{query}"
    direct = f"https://{domain}/.well-known/openpgpkey/hu/{h}?{query}"
    return advanced, direct


def openpgpkey_name(local: str, domain: str) -> str:
    """The OPENPGPKEY owner name of an address (RFC 7929 section 3)."""
    digest = hashlib.sha256(local.encode("utf-8")).digest()[:28]
    return f"{digest.hex()}._openpgpkey.{domain}"


@dataclass(frozen=True)
class Candidate:
    """Key data found for an address, and where (wkd or dns)."""

    data: bytes
    source: str


class Discovery:
    """Looks keys up by WKD, then OPENPGPKEY DNS, as the configuration allows."""

    def __init__(
        self, cfg: PgpConfig, resolver: Resolver | None, fetcher: HttpsFetcher | None
    ) -> None:
        self._cfg = cfg
        self._resolver = resolver
        self._fetcher = fetcher

    async def find(self, local: str, domain: str) -> list[Candidate]:
        """Key data published for local@domain, best source first; [] when none or on failure."""
        found: list[Candidate] = []
        if self._cfg.wkd and self._fetcher is not None:
            data = await self._wkd(local, domain)
            if data:
                found.append(Candidate(data, "wkd"))
        if self._cfg.openpgpkey_dns and self._resolver is not None:
            found.extend(Candidate(d, "dns") for d in await self._dns(local, domain))
        return found

    async def _wkd(self, local: str, domain: str) -> bytes | None:
        advanced, direct = wkd_urls(local, domain)
        host = f"openpgpkey.{domain}"
        if self._resolver is not None:
            try:
                has_subdomain = bool(await self._resolver.addresses(host))
            except DnsTemporaryError as exc:
                log.event("pgp_wkd_failed", domain=domain, method="advanced", reason=str(exc))
                return None
        else:
            has_subdomain = True
        if has_subdomain:
            return await self._fetch(advanced, domain, "advanced")
        return await self._fetch(direct, domain, "direct")

    async def _fetch(self, url: str, domain: str, method: str) -> bytes | None:
        assert self._fetcher is not None
        try:
            result = await self._fetcher.get(url, accept="application/octet-stream")
        except FetchError as exc:
            log.event("pgp_wkd_failed", domain=domain, method=method, reason=str(exc))
            return None
        if result.status == 404:
            return None
        if result.status != 200 or not result.body:
            log.event(
                "pgp_wkd_failed", domain=domain, method=method, reason=f"HTTP {result.status}"
            )
            return None
        return result.body

    async def _dns(self, local: str, domain: str) -> list[bytes]:
        assert self._resolver is not None
        names = [openpgpkey_name(local, domain)]
        if local.lower() != local:
            # RFC 7929 section 3 hashes the local part as given; many publishers
            # lower-case it, so that spelling is asked for too.
            names.append(openpgpkey_name(local.lower(), domain))
        for name in names:
            try:
                records, authenticated = await self._resolver.openpgpkey(name)
            except DnsTemporaryError as exc:
                log.event("pgp_dns_failed", domain=domain, reason=str(exc))
                return []
            if records and not authenticated:
                log.event("pgp_dns_unvalidated", domain=domain)
                continue
            if records:
                return records
        return []
