"""What TLS a destination must get: admin policy, MTA-STS and DANE combined.

Three sources can demand more than opportunistic STARTTLS for a recipient
domain, and the strongest wins, together with the level the message itself
asks for:

- the admin's `delivery.tls_policy` (none / may / encrypt / verify / dane,
  like Postfix's smtp_tls_policy_maps), e.g. for partners under a BAA;
- the domain's MTA-STS policy (RFC 8461) in mode enforce: every MX used must
  be listed in the policy and present a certificate valid for its name;
- DANE (RFC 7672): an MX host learnt from a DNSSEC-validated MX answer whose
  TLSA records the resolver validated must present a key they pin.

With a relay host, MTA-STS and DANE do not apply (they describe the
recipient's MX hosts, not our relay); "verified" then means the relay's
certificate is valid for its name by the trusted CAs.

`domain()` answers the question the method selection asks ("can verified TLS
be demanded for this domain?"); `plan()` and `hop()` are what the transport
follows on each delivery.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway import log
from gateway.config import DeliveryConfig, TlsPolicyLevel
from gateway.fetch import HttpsFetcher
from gateway.outbound import dane
from gateway.outbound.mtasts import MtaSts, StsPolicy
from gateway.outbound.routes import Hop
from gateway.outbound.session import HopFailure, TlsLevel
from gateway.resolver import DnsTemporaryError, Resolver, TlsaRecord

__all__ = ["DomainTls", "HopTls", "Plan", "TlsPolicy", "stronger"]

_RANK: dict[TlsLevel, int] = {"opportunistic": 0, "required": 1, "verified": 2}
_ADMIN_FLOOR: dict[TlsPolicyLevel, TlsLevel] = {
    "none": "opportunistic",
    "may": "opportunistic",
    "encrypt": "required",
    "verify": "verified",
    "dane": "verified",
}
# How long domain() remembers an answer; a failed lookup is retried sooner.
_DOMAIN_TTL = 300.0
_DOMAIN_FAILED_TTL = 30.0
# DANE for the method selection: look at this many MX hosts at most.
_MAX_MX_CHECKED = 5


def stronger(a: TlsLevel, b: TlsLevel) -> TlsLevel:
    """The stronger of two TLS levels."""
    return a if _RANK[a] >= _RANK[b] else b


@dataclass(frozen=True)
class DomainTls:
    """What can be demanded of a recipient domain, and the least all its mail must get."""

    verifiable: bool  # verified TLS can be demanded (MTA-STS enforce, usable DANE, admin policy)
    source: str | None  # "dane" | "mta-sts" | "policy" | None: why it is verifiable
    floor: TlsLevel  # the least the domain must get for any mail


@dataclass(frozen=True)
class HopTls:
    """What one host must achieve, and the policy facts for the delivery record."""

    level: TlsLevel
    starttls: bool = True  # False: admin policy "none", nothing stronger asked; plaintext
    dane: tuple[TlsaRecord, ...] = ()  # validated, usable TLSA records: DANE decides
    facts: dict[str, str | None] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """How sessions made under this requirement differ from others (for reuse)."""
        how = "dane" if self.dane else ("tls" if self.starttls else "plain")
        return f"{self.level}/{how}"


@dataclass(frozen=True)
class Plan:
    """The TLS requirement of one delivery to one domain, before looking at each host."""

    domain: str
    level: TlsLevel  # strongest of the requested level, admin policy and MTA-STS enforce
    policy: TlsPolicyLevel | None  # the admin policy that applies, if any
    sts: StsPolicy | None  # MTA-STS policy in force (enforce or testing), None for a relay
    relay: bool  # delivering to the relay host: no MTA-STS, no DANE


class TlsPolicy:
    """Combines admin policy, MTA-STS and DANE; lookups are cached and never raise."""

    def __init__(
        self,
        cfg: DeliveryConfig,
        resolver: Resolver,
        fetcher: HttpsFetcher,
        *,
        cache_dir: Path | None = None,
    ) -> None:
        self._cfg = cfg
        self._resolver = resolver
        self._mtasts = MtaSts(resolver, fetcher, cache_dir=cache_dir)
        self._domains: dict[str, tuple[float, DomainTls]] = {}

    def admin_policy(self, domain: str) -> TlsPolicyLevel | None:
        """The admin policy for domain: its own entry, else the closest ".parent" entry."""
        table = self._cfg.tls_policy
        if not table:
            return None
        domain = domain.strip().rstrip(".").lower()
        if domain in table:
            return table[domain]
        labels = domain.split(".")
        for i in range(1, len(labels)):
            key = "." + ".".join(labels[i:])
            if key in table:
                return table[key]
        return None

    async def sts(self, domain: str) -> StsPolicy | None:
        """The domain's MTA-STS policy in force (None when disabled or absent)."""
        if not self._cfg.mta_sts or self._cfg.relay_host is not None:
            return None
        if domain.startswith("["):
            return None  # an address literal has no DNS name to publish a policy under
        return await self._mtasts.policy(domain)

    async def domain(self, domain: str) -> DomainTls:
        """Whether verified TLS can be demanded for domain, why, and its floor (cached)."""
        domain = domain.strip().rstrip(".").lower()
        now = time.monotonic()
        hit = self._domains.get(domain)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            answer, complete = await self._domain(domain)
        except Exception as exc:
            # Never raise to the caller: not verifiable is the fail-closed answer
            # (protected mail then takes another method, e.g. the portal).
            log.event(
                "tls_policy_error",
                logging.ERROR,
                domain=domain,
                error=f"{type(exc).__name__}: {exc}",
            )
            answer, complete = await self._admin_only(domain), False
        self._domains[domain] = (now + (_DOMAIN_TTL if complete else _DOMAIN_FAILED_TTL), answer)
        return answer

    async def _admin_only(self, domain: str) -> DomainTls:
        policy = self.admin_policy(domain)
        floor = _ADMIN_FLOOR[policy] if policy is not None else "opportunistic"
        if policy in ("verify", "dane"):
            return DomainTls(True, "policy", floor)
        return DomainTls(False, None, floor)

    async def _domain(self, domain: str) -> tuple[DomainTls, bool]:
        """The answer, and whether every lookup behind it succeeded."""
        admin = await self._admin_only(domain)
        if self._cfg.relay_host is not None:
            return admin, True
        floor = admin.floor
        sources: list[str] = []
        complete = True
        if self._cfg.dane:
            try:
                with_tlsa, total = await self._dane_hosts(domain)
            except DnsTemporaryError:
                with_tlsa, total, complete = 0, 0, False
            if with_tlsa:
                sources.append("dane")
                if with_tlsa == total:
                    floor = "verified"  # every MX is bound to DANE anyway
        sts = await self.sts(domain)
        if sts is not None and sts.mode == "enforce":
            sources.append("mta-sts")
            floor = "verified"
        if admin.verifiable:
            sources.append("policy")
        if not sources:
            return DomainTls(False, None, floor), complete
        return DomainTls(True, sources[0], floor), complete

    async def _dane_hosts(self, domain: str) -> tuple[int, int]:
        """How many of the domain's MX hosts have usable validated TLSA, of how many looked at."""
        answer = await self._resolver.mx(domain)
        if not answer.authenticated or not answer.records:
            return 0, 0
        hosts = [r.host for r in answer.records][:_MAX_MX_CHECKED]
        found = 0
        for host in hosts:
            if await self._tlsa(host, self._cfg.mx_port):
                found += 1
        return found, len(hosts)

    async def _tlsa(self, host: str, port: int) -> tuple[TlsaRecord, ...]:
        """Usable TLSA records of host:port that the resolver validated; may raise DNS errors."""
        answer = await self._resolver.tlsa(f"_{port}._tcp.{host}")
        if not answer.authenticated:
            return ()
        return dane.usable(answer.records)

    async def plan(self, domain: str, requested: TlsLevel) -> Plan:
        """The domain-wide part of the requirement for one delivery; never raises."""
        policy = self.admin_policy(domain)
        level = requested
        if policy is not None:
            level = stronger(level, _ADMIN_FLOOR[policy])
        relay = self._cfg.relay_host is not None
        sts: StsPolicy | None = None
        if not relay:
            try:
                sts = await self.sts(domain)
            except Exception as exc:
                log.event(
                    "tls_policy_error",
                    logging.ERROR,
                    domain=domain,
                    error=f"{type(exc).__name__}: {exc}",
                )
            if sts is not None and sts.mode == "enforce":
                level = "verified"
        return Plan(domain=domain, level=level, policy=policy, sts=sts, relay=relay)

    async def hop(self, plan: Plan, hop: Hop) -> HopTls:
        """What one host must achieve; raises HopFailure when it cannot be used at all."""
        records: tuple[TlsaRecord, ...] = ()
        # RFC 7672 section 2.2: TLSA records count only below a secure MX answer.
        if not plan.relay and self._cfg.dane and hop.secure:
            try:
                records = await self._tlsa(hop.host, hop.port)
            except DnsTemporaryError as exc:
                # Section 2.2: a failed TLSA lookup for a secure MX host makes it unusable.
                raise HopFailure(
                    "transient",
                    None,
                    f"4.7.5 TLSA lookup for {hop.host} failed: {exc}",
                    reached=False,
                    tls=True,
                ) from None
        sts_state = plan.sts.mode if plan.sts is not None else None
        facts: dict[str, str | None] = {
            "policy": plan.policy,
            "mta_sts": sts_state,
            "dane": None,
        }
        if records:
            # DANE decides for this host; MTA-STS steps aside (RFC 8461 section 2).
            return HopTls(level="verified", dane=records, facts=facts)
        if plan.policy == "dane" and not plan.relay:
            raise HopFailure(
                "transient",
                None,
                f"4.7.5 {hop.host}: no DNSSEC-validated TLSA records, DANE required by policy",
                reached=False,
                tls=True,
            )
        if plan.sts is not None and not plan.sts.matches(hop.host):
            reason = f"{hop.host} is not an MX host of the MTA-STS policy of {plan.domain}"
            if plan.sts.mode == "enforce":
                raise HopFailure("transient", None, f"4.7.5 {reason}", reached=False, tls=True)
            # Testing mode: deliver as without a policy, and say what would have failed.
            log.event("mta_sts_testing_failure", domain=plan.domain, host=hop.host, reason=reason)
            facts["mta_sts_failure"] = reason
        starttls = not (plan.policy == "none" and plan.level == "opportunistic")
        return HopTls(level=plan.level, starttls=starttls, facts=facts)
