"""Per-recipient choice of how a protected message leaves: S/MIME, OpenPGP, verified TLS, portal.

The choice is made at delivery time, for each recipient, from what is known
then: a certificate or key for the address, whether the recipient's domain
can be held to verified TLS (MTA-STS enforce, DANE, admin policy), whether
the policy allows TLS for this message's sensitivity, and the admin's order
of preference. Every choice carries its reason, which goes into the
delivery record.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway import log
from gateway.config import EncryptionConfig
from gateway.message import QueuedMessage
from policies.decision import Decision

# Methods whose copies are made one per recipient: each copy is encrypted to,
# or stored for, that recipient alone, so Bcc recipients are never revealed.
PER_RECIPIENT = frozenset({"smime", "pgp", "portal"})


class DomainTlsLike(Protocol):
    """What the TLS policy knows about a recipient domain (gateway.outbound.tlspolicy)."""

    @property
    def verifiable(self) -> bool:
        """Verified TLS can be demanded for this domain."""
        ...

    @property
    def source(self) -> str | None:
        """Why: "dane", "mta-sts" or "policy"."""
        ...


class TlsPolicyLike(Protocol):
    """gateway.outbound.tlspolicy.TlsPolicy."""

    async def domain(self, domain: str) -> DomainTlsLike:
        """The domain's TLS facts; never raises for network trouble."""
        ...


class SmimeLike(Protocol):
    """gateway.smime.SmimeDirectory."""

    def cert_for(self, address: str) -> str | None:
        """Fingerprint of a usable certificate for address."""
        ...


class PgpLike(Protocol):
    """gateway.pgp.PgpDirectory."""

    async def key_for(self, address: str) -> str | None:
        """Fingerprint of a usable key for address (may look it up)."""
        ...


@dataclass(frozen=True)
class Choice:
    """A method for one recipient and why it was chosen (no content in the reason)."""

    name: str  # smime / pgp / tls / portal / hold
    key: str | None
    reason: str


def domain_of(address: str) -> str:
    """The lower-cased domain of an address."""
    return address.rpartition("@")[2].rstrip(".").lower()


def listed(domain: str, entries: Sequence[str]) -> bool:
    """Whether domain is named in entries ("example.com", or ".example.com" for subdomains)."""
    for entry in entries:
        if entry.startswith("."):
            if domain.endswith(entry):
                return True
        elif domain == entry:
            return True
    return False


def sender_matches(sender: str, patterns: Sequence[str]) -> bool:
    """Whether the envelope sender matches one of the config's sender patterns."""
    sender = sender.lower()
    for pattern in patterns:
        if pattern == "*" or pattern == sender:
            return True
        if pattern.startswith("@") and sender.endswith(pattern):
            return True
    return False


# Finding kinds that make a subject line unfit to show outside the encryption. A
# health word alone ("Referral") names no one; an identifier or a sensitive
# category ("HIV results") does.
_SUBJECT_KINDS = frozenset({"identifier", "sensitive"})


def subject_has_phi(decision: Decision) -> bool:
    """Whether the subject line carries what only message-level methods may hide."""
    if decision.phi_in_subject:
        return True
    return any(f.location == "subject" and f.kind in _SUBJECT_KINDS for f in decision.findings)


class Selector:
    """Chooses the method for each recipient of a message that must be encrypted."""

    def __init__(
        self,
        cfg: EncryptionConfig,
        *,
        tls_policy: TlsPolicyLike | None = None,
        smime: SmimeLike | None = None,
        pgp: PgpLike | None = None,
        portal: bool = False,
    ) -> None:
        self._cfg = cfg
        self._tls_policy = tls_policy
        self._smime = smime
        self._pgp = pgp
        self._portal = portal

    @property
    def neutral_subject(self) -> str:
        """The subject shown outside the encryption when the real one carries PHI."""
        return self._cfg.neutral_subject

    def portal_allowed(self, msg: QueuedMessage) -> bool:
        """Whether the portal may carry this message (never for TLS-only senders)."""
        return (
            self._portal
            and "portal" in self._cfg.preference
            and not sender_matches(msg.envelope.mail_from, self._cfg.tls_only_senders)
        )

    async def choose(self, msg: QueuedMessage, decision: Decision, rcpt: str) -> Choice:
        """The best method rcpt can receive under decision, in the configured order."""
        tls_only = sender_matches(msg.envelope.mail_from, self._cfg.tls_only_senders)
        order = ["tls"] if tls_only else list(self._cfg.preference)
        refused: list[str] = []
        for name in order:
            try:
                choice = await self._try(name, msg, decision, rcpt)
            except Exception as exc:
                # A lookup bug must not stop the message: try the next method.
                log.event(
                    "method_lookup_error",
                    level=logging.ERROR,
                    id=msg.id,
                    method=name,
                    error=type(exc).__name__,
                )
                choice = None
            if isinstance(choice, Choice):
                if refused:
                    choice = Choice(
                        choice.name, choice.key, f"{choice.reason}; {'; '.join(refused)}"
                    )
                return choice
            if choice:
                refused.append(choice)
        why = "; ".join(refused) or "no method enabled"
        if tls_only:
            why = f"sender is TLS-only: {why}"
        return Choice("hold", None, why)

    async def _try(
        self, name: str, msg: QueuedMessage, decision: Decision, rcpt: str
    ) -> Choice | str | None:
        """A choice, or a short note why this method does not fit (None: not configured)."""
        if name == "smime":
            if self._smime is None:
                return None
            fp = self._smime.cert_for(rcpt)
            return (
                Choice("smime", fp, "S/MIME certificate known") if fp else "no S/MIME certificate"
            )
        if name == "pgp":
            if self._pgp is None:
                return None
            fp = await self._pgp.key_for(rcpt)
            return Choice("pgp", fp, "OpenPGP key known") if fp else "no OpenPGP key"
        if name == "tls":
            return await self._try_tls(decision, rcpt)
        if name == "portal":
            return Choice("portal", None, "portal") if self.portal_allowed(msg) else None
        return None

    async def _try_tls(self, decision: Decision, rcpt: str) -> Choice | str | None:
        if decision.min_strength == "message-level":
            return "policy demands message-level encryption"
        domain = domain_of(rcpt)
        if listed(domain, self._cfg.never_trust_tls):
            return f"TLS not trusted for PHI at {domain}"
        if self._tls_policy is None:
            return None
        facts = await self._tls_policy.domain(domain)
        if not facts.verifiable:
            return f"{domain} offers no verifiable TLS (no MTA-STS enforce, DANE or TLS policy)"
        return Choice("tls", None, f"verified TLS ({facts.source})")
