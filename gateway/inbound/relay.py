"""Who may relay through the gateway: accounts, connectors, sender restrictions.

Pure decisions (no I/O): the SMTP handler asks, acts on the answer and logs it.
Sealgate delivers nothing locally, so every accepted recipient is relayed; a
client that is neither an authenticated account nor a matching connector may
not send at all.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.config import ClientCert, Connector, SmtpConfig, SmtpUser

# RFC 3463 X.7.1 "Delivery not authorized, message refused"; 553 is RFC 5321's
# "mailbox name not allowed" (§4.2.2), the usual answer to a forbidden sender.
SENDER_NOT_ALLOWED_USER = "553 5.7.1 Sender address not allowed for this account"
SENDER_NOT_ALLOWED_CONNECTOR = "553 5.7.1 Sender address not allowed for this connection"
# RFC 5321 §3.6.2: a server that is not a relay for the destination refuses at RCPT.
RELAY_DENIED = "550 5.7.1 Relaying denied"
UNKNOWN_TENANT = "550 5.7.1 Message from an unrecognised Microsoft 365 tenant"


@dataclass(frozen=True)
class Authority:
    """Why a client may relay (or why it may not), decided at MAIL FROM."""

    allowed: bool
    user: str | None = None
    connector: Connector | None = None
    reply: str | None = None  # the rejection to send at MAIL FROM, if any
    reason: str = ""  # for the log, never shown to the client

    @property
    def name(self) -> str | None:
        """The account or connector name, for logs and the envelope."""
        if self.user is not None:
            return self.user
        return self.connector.name if self.connector else None


def sender_matches(patterns: Iterable[str], address: str) -> bool:
    """True when address matches one of "*", "@domain" or "user@domain"."""
    addr = address.lower()
    _, at, domain = addr.rpartition("@")
    for pattern in patterns:
        if pattern == "*":
            return True
        if pattern.startswith("@"):
            if at and domain == pattern[1:]:
                return True
        elif pattern == addr:
            return True
    return False


# Upstreams are few and come back for every message: parse each address once.
@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def cert_names(der: bytes) -> set[str]:
    """Subject common names and DNS subjectAltNames of a certificate, lower-cased."""
    cert = x509.load_der_x509_certificate(der)
    names = {
        str(a.value).lower().rstrip(".")
        for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return names
    names.update(n.lower().rstrip(".") for n in san.value.get_values_for_type(x509.DNSName))
    return names


def cert_matches(rule: ClientCert, der: bytes | None) -> bool:
    """True when the client certificate satisfies every criterion the rule gives."""
    if der is None:
        return False
    if rule.fingerprint_sha256 and hashlib.sha256(der).hexdigest() != rule.fingerprint_sha256:
        return False
    if rule.subject:
        try:
            names = cert_names(der)
        except ValueError:
            return False
        if rule.subject.lower().rstrip(".") not in names:
            return False
    return True


def wants_client_certs(cfg: SmtpConfig) -> bool:
    """True when some connector identifies its upstream by TLS client certificate."""
    return any(c.client_cert is not None for c in cfg.connectors)


def find_connector(
    connectors: Sequence[Connector], ip: str, cert_der: bytes | None
) -> Connector | None:
    """The first connector whose networks hold ip and whose certificate rule (if any) holds."""
    addr = _ip(ip)
    if addr is None:
        return None
    for connector in connectors:
        if not any(addr in net for net in connector.networks):
            continue
        if connector.client_cert is not None and not cert_matches(connector.client_cert, cert_der):
            continue
        return connector
    return None


class RelayPolicy:
    """The relay rules of one SmtpConfig, indexed for per-transaction lookups."""

    def __init__(self, cfg: SmtpConfig) -> None:
        self._users: dict[str, SmtpUser] = {u.username: u for u in cfg.users}
        self._connectors = tuple(cfg.connectors)

    def authority(
        self, *, ip: str, auth_user: str | None, cert_der: bytes | None, mail_from: str
    ) -> Authority:
        """Decide, at MAIL FROM, whether this client may relay mail from this sender."""
        if auth_user is not None:
            user = self._users.get(auth_user)
            if user is None:  # the account vanished from the config: fail closed
                return Authority(False, reply=RELAY_DENIED, reason="unknown account")
            # The null sender (bounces, RFC 5321 §4.5.5) carries no address to restrict.
            if mail_from and not sender_matches(user.allowed_senders, mail_from):
                return Authority(
                    False,
                    user=user.username,
                    reply=SENDER_NOT_ALLOWED_USER,
                    reason="sender not allowed for account",
                )
            return Authority(True, user=user.username, reason="authenticated")
        connector = find_connector(self._connectors, ip, cert_der)
        if connector is None:
            # Refused later, at RCPT: RFC 5321 §3.6.2 places the relay decision there.
            return Authority(False, reason="not authenticated and no connector matches")
        if mail_from and not sender_matches(connector.allowed_senders, mail_from):
            return Authority(
                False,
                connector=connector,
                reply=SENDER_NOT_ALLOWED_CONNECTOR,
                reason="sender not allowed for connector",
            )
        return Authority(True, connector=connector, reason="connector")


def tenant_allowed(connector: Connector | None, tenant_ids: Sequence[str]) -> bool:
    """Microsoft 365 tenant pinning: every stamped tenant id must be one of ours.

    Microsoft's outbound ranges are shared by all tenants, so a connector matched by
    network alone would relay for any of them. Exchange Online stamps the sending
    tenant in X-MS-Exchange-CrossTenant-Id; a message without it, or with any
    foreign value (e.g. a second, forged copy of the header), is refused.
    """
    if connector is None or not connector.m365_tenant_ids:
        return True
    if not tenant_ids:
        return False
    allowed = set(connector.m365_tenant_ids)
    return all(t.strip().lower() in allowed for t in tenant_ids)
