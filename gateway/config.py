"""Configuration: the YAML schema, validated once at load into frozen objects.

Every other module receives the typed section it needs; nothing parses raw
config values at the point of use.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# --- value types -------------------------------------------------------------

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like "300", "5m", "1.5h", "5d"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 1h or 5d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]
    raise ValueError("expected a duration such as 30s, 5m, 1h or 5d")


def parse_size(value: Any) -> int:
    """Bytes from a number or a string like "50MB", "512k", "1GiB"."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512k, 50MB or 1G")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = (m.group(2) or "b").lower()[0]
            return int(m.group(1)) * {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    raise ValueError("expected a size such as 512k, 50MB or 1G")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


@dataclass(frozen=True)
class HostPort:
    """A host and a port, as written "host:port" or "[v6addr]:port"."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_hostport(value: Any, default_port: int | None = None) -> HostPort:
    """Parse "host:port", "[::1]:port" or, given a default port, a bare host."""
    if isinstance(value, HostPort):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError('expected "host:port"')
    text = value.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError('expected "[ipv6-address]:port"')
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError('expected "[ipv6-address]:port"')
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        raise ValueError('write IPv6 addresses as "[address]:port"')
    if not port_text:
        if default_port is None:
            raise ValueError('missing port: expected "host:port"')
        return HostPort(host, default_port)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} is not a number from 1 to 65535")
    if not host:
        raise ValueError('missing host: expected "host:port"')
    return HostPort(host, int(port_text))


def _listen_address(value: Any) -> HostPort:
    return parse_hostport(value)


ListenAddress = Annotated[HostPort, BeforeValidator(_listen_address)]


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise ValueError("expected a network such as 192.0.2.0/24")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP network: {exc}") from None


Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)]

_SENDER_PATTERN_RE = re.compile(r"^(@[^@\s]+|[^@\s]+@[^@\s]+|\*)$")


def _sender_pattern(value: Any) -> str:
    if not isinstance(value, str) or not _SENDER_PATTERN_RE.match(value.strip()):
        raise ValueError(
            'expected "user@domain", "@domain" (any address at the domain) or "*" (any)'
        )
    return value.strip().lower()


SenderPattern = Annotated[str, BeforeValidator(_sender_pattern)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections -----------------------------------------------------------------


class TLSFiles(_Section):
    """A certificate chain and its private key, both PEM."""

    cert: Path
    key: Path


class SmtpUser(_Section):
    """An SMTP AUTH account for an application."""

    username: str = Field(min_length=1)
    password_hash: str
    allowed_senders: list[SenderPattern] = Field(min_length=1)

    @field_validator("password_hash")
    @classmethod
    def _argon2(cls, v: str) -> str:
        if not v.startswith("$argon2"):
            raise ValueError("must be an argon2 hash; create one with `sealgate hash-password`")
        return v


class ClientCert(_Section):
    """Identifies an upstream by its TLS client certificate."""

    subject: str | None = None  # matches the subject CN or any DNS subjectAltName
    fingerprint_sha256: str | None = None

    @field_validator("fingerprint_sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is None:
            return v
        clean = v.replace(":", "").strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", clean):
            raise ValueError("expected 64 hex digits (colons allowed)")
        return clean

    @model_validator(mode="after")
    def _one(self) -> ClientCert:
        if not self.subject and not self.fingerprint_sha256:
            raise ValueError("give subject, fingerprint_sha256 or both")
        return self


class Connector(_Section):
    """A trusted upstream (M365, Workspace, an app server) that relays without AUTH."""

    name: str = Field(min_length=1)
    networks: list[Network] = Field(min_length=1)
    client_cert: ClientCert | None = None
    # Microsoft's sending ranges are shared by every tenant: pin to ours.
    m365_tenant_ids: list[str] = []
    allowed_senders: list[SenderPattern] = ["*"]

    @field_validator("m365_tenant_ids")
    @classmethod
    def _guids(cls, v: list[str]) -> list[str]:
        out = []
        for t in v:
            t = t.strip().lower()
            if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", t):
                raise ValueError(f"{t!r} is not a tenant id (a GUID)")
            out.append(t)
        return out


class SmtpConfig(_Section):
    """Inbound SMTP: listeners, TLS, who may relay, limits."""

    listen: list[ListenAddress] = [HostPort("127.0.0.1", 2525)]
    listen_implicit_tls: list[ListenAddress] = []
    tls: TLSFiles | None = None
    # CA bundle that verifies connectors' TLS client certificates (default: the system CAs).
    client_ca_file: Path | None = None
    users: list[SmtpUser] = []
    connectors: list[Connector] = []
    max_message_size: Size = 50 * 1024 * 1024
    max_recipients: int = Field(default=1000, ge=1)
    max_hops: int = Field(default=50, ge=1)
    max_connections: int = Field(default=1000, ge=1)
    command_timeout: Duration = 300.0
    data_timeout: Duration = 600.0
    proxy_protocol: bool = False
    proxy_protocol_timeout: Duration = 5.0
    banner: str | None = None

    @field_validator("users")
    @classmethod
    def _unique_users(cls, v: list[SmtpUser]) -> list[SmtpUser]:
        seen: set[str] = set()
        for u in v:
            if u.username in seen:
                raise ValueError(f"username {u.username!r} appears twice")
            seen.add(u.username)
        return v

    @model_validator(mode="after")
    def _some_listener(self) -> SmtpConfig:
        if not self.listen and not self.listen_implicit_tls:
            raise ValueError("needs at least one address in listen or listen_implicit_tls")
        if self.proxy_protocol and self.listen_implicit_tls:
            raise ValueError(
                "proxy_protocol works on listen only; terminate implicit TLS at the proxy"
            )
        return self


class RetryConfig(_Section):
    """When to try again after a temporary failure (Postfix's defaults in spirit)."""

    first: Duration = 300.0
    max_backoff: Duration = 4000.0
    lifetime: Duration = 5 * 86400.0
    delay_warning: Duration | None = None  # e.g. 4h: tell the sender mail is still waiting


# none: plaintext allowed; may: opportunistic; encrypt: TLS >= 1.2, any certificate;
# verify: a certificate valid for the MX host name; dane: TLSA records must match.
TlsPolicyLevel = Literal["none", "may", "encrypt", "verify", "dane"]


def _domain_key(value: str) -> str:
    key = value.strip().rstrip(".").lower()
    if not key or any(c.isspace() or c == "@" for c in key):
        raise ValueError(f"{value!r} is not a domain or .domain suffix")
    return key


class DeliveryConfig(_Section):
    """Outbound delivery."""

    relay_host: HostPort | None = None
    mx_port: int = Field(default=25, ge=1, le=65535)
    tls_ca_file: Path | None = None
    connect_timeout: Duration = 30.0
    command_timeout: Duration = 300.0
    max_connections: int = Field(default=100, ge=1)
    max_per_destination: int = Field(default=20, ge=1)
    max_recipients_per_transaction: int = Field(default=50, ge=1)
    connection_reuse_time: Duration = 300.0
    retry: RetryConfig = RetryConfig()
    # Admin TLS policy per recipient domain, like Postfix's smtp_tls_policy_maps:
    # "example.com" names the domain, ".example.com" its subdomains.
    tls_policy: dict[str, TlsPolicyLevel] = {}
    mta_sts: bool = True  # honour MTA-STS (RFC 8461) policies of recipient domains
    dane: bool = True  # honour DANE TLSA records (RFC 7672), only when DNSSEC-validated
    https_timeout: Duration = 10.0  # MTA-STS policy and WKD key fetches
    https_max_size: Size = 64 * 1024

    @field_validator("tls_policy")
    @classmethod
    def _policy_domains(cls, v: dict[str, str]) -> dict[str, str]:
        return {_domain_key(k): level for k, level in v.items()}

    @field_validator("relay_host", mode="before")
    @classmethod
    def _relay(cls, v: Any) -> HostPort | None:
        return None if v is None else parse_hostport(v, default_port=25)


class DnsConfig(_Section):
    """Resolver settings; default is the system resolver."""

    nameservers: list[HostPort] = []
    timeout: Duration = 5.0

    @field_validator("nameservers", mode="before")
    @classmethod
    def _servers(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        servers = [parse_hostport(s, default_port=53) for s in v]
        for hp in servers:
            try:
                ipaddress.ip_address(hp.host)
            except ValueError:
                raise ValueError(f"{hp.host!r} is not an IP address") from None
        return servers


class DkimKey(_Section):
    """A DKIM signing key for one sender domain."""

    domain: str = Field(min_length=1)
    selector: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    key: Path

    @field_validator("domain")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.strip().rstrip(".").lower()


class PolicyConfig(_Section):
    """The PHI policy engine: which ruleset, and the budget for scanning one message."""

    rules: Path | None = None  # default: the ruleset shipped in policies/default.yaml
    workers: int = Field(default=0, ge=0)  # scanning processes; 0 = one per CPU
    timeout: Duration = 60.0  # a scan taking longer is a temporary failure (451), never a pass


class PortalConfig(_Section):
    """Where the recipient portal listens, how links to it are written, how it looks."""

    listen: ListenAddress = HostPort("127.0.0.1", 8025)
    base_url: str = "http://127.0.0.1:8025"
    organisation: str = "Sealgate"  # shown on pages and in notifications
    logo_url: str | None = None
    colour: str = Field(default="#1f5f8b", pattern=r"^#[0-9a-fA-F]{6}$")
    expiry: Duration = 30 * 86400.0  # how long a stored message can be read
    # The notification a portal recipient gets; never carries PHI.
    notification_from: str | None = None  # default: the original sender
    notification_subject: str = "Secure message from {organisation}"
    notification_text: str = (
        "{sender} sent you a secure message through {organisation}.\n"
        "Open it here: {link}\n"
        "To read it you will confirm your email address with a one-time code."
    )
    notify_sender: bool = True  # tell the sender which recipients got a portal link
    # Sealed-link mode for every portal copy: the key is only in the recipient's link
    # (URL fragment), never stored. Per message: "X-Sealgate-Portal: sealed-link".
    sealed_links: bool = False
    # --- the web portal process (portal/) ---
    tls: TLSFiles | None = None  # serve HTTPS itself; null: plain HTTP behind a TLS proxy
    # Cookies marked Secure (sent over HTTPS only); null: when base_url is https://.
    secure_cookies: bool | None = None
    trusted_proxies: list[str] = []  # proxies whose X-Forwarded-For/-Proto are believed
    # Where the portal submits mail (codes, replies, read notices) so it passes the
    # policy engine: "host:port"; null: the gateway's first smtp.listen address.
    submit: HostPort | None = None
    mail_from: str | None = None  # From of codes and notices; null: portal@hostname
    session_idle: Duration = 900.0  # signed out after this long without a request
    session_max: Duration = 8 * 3600.0  # signed out this long after signing in, regardless
    code_lifetime: Duration = 600.0  # a one-time code is good for this long, once
    code_attempts: int = Field(default=5, ge=1)  # wrong entries before a code is void
    codes_per_hour: int = Field(default=5, ge=1)  # codes sent to one address per hour
    lockout_failures: int = Field(default=10, ge=1)  # failed sign-ins (window) before lock-out
    lockout_window: Duration = 900.0
    lockout_time: Duration = 900.0  # how long an address (or client address) stays locked
    read_notification: bool = False  # tell the sender when the recipient first opens it
    max_reply_size: Size = 25 * 1024 * 1024  # a reply with its attachments

    @field_validator("submit", mode="before")
    @classmethod
    def _submit(cls, v: Any) -> HostPort | None:
        return None if v is None else parse_hostport(v, default_port=25)


# Consumer mailbox providers: TLS to them protects the hop, but no BAA covers
# the mailbox, so PHI goes to their users by S/MIME, OpenPGP or the portal.
DEFAULT_NEVER_TRUST_TLS = (
    "aol.com",
    "att.net",
    "comcast.net",
    "gmail.com",
    "gmx.com",
    "gmx.net",
    "googlemail.com",
    "hotmail.com",
    "icloud.com",
    "live.com",
    "mac.com",
    "mail.com",
    "me.com",
    "msn.com",
    "outlook.com",
    "proton.me",
    "protonmail.com",
    "verizon.net",
    "yahoo.com",
    "yandex.com",
    "ymail.com",
    "zoho.com",
)

EncryptionMethodName = Literal["smime", "pgp", "tls", "portal"]


class PgpConfig(_Section):
    """OpenPGP key discovery and output."""

    wkd: bool = True  # Web Key Directory lookups (advanced, then direct)
    openpgpkey_dns: bool = True  # RFC 7929 records, trusted only when DNSSEC-validated
    autocrypt: bool = True  # learn keys from Autocrypt headers of mail passing through
    sign_key: str | None = None  # fingerprint of the organisation's key to sign with
    lookup_cache: Duration = 86400.0  # keep a found key (or its absence) this long
    negative_cache: Duration = 3600.0


class SmimeConfig(_Section):
    """S/MIME certificates and output."""

    harvest: bool = True  # learn certificates from signed mail passing through
    cipher: Literal["aes256", "aes128"] = "aes256"


class EncryptionConfig(_Section):
    """How a message that must be encrypted reaches each recipient."""

    preference: list[EncryptionMethodName] = ["smime", "pgp", "tls", "portal"]
    never_trust_tls: list[str] = list(DEFAULT_NEVER_TRUST_TLS)
    # Senders whose protected mail must leave by verified TLS or not at all
    # (bulk statements, say, that must never turn into portal notices).
    tls_only_senders: list[SenderPattern] = []
    neutral_subject: str = "Secure message"  # replaces a subject that carries PHI
    pgp: PgpConfig = PgpConfig()
    smime: SmimeConfig = SmimeConfig()

    @field_validator("never_trust_tls")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        return [_domain_key(d) for d in v]

    @field_validator("preference")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each method may appear once")
        if not v:
            raise ValueError("needs at least one method")
        return v


class StorageConfig(_Section):
    """Shared state (portal messages, audit trail): SQLite under data_dir, or PostgreSQL."""

    # null: SQLite at data_dir/sealgate.db (one machine). For several gateway and
    # portal nodes: "postgresql://user:password@host/dbname".
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("postgresql://", "postgres://", "sqlite:///")):
            raise ValueError('expected "postgresql://..." or "sqlite:///PATH"')
        return v


class AuditConfig(_Section):
    """The tamper-evident audit trail (docs/audit.md), kept in the shared storage."""

    enabled: bool = True
    # Records older than this are purged (except messages under legal hold);
    # 6 years is HIPAA's documentation retention. 0 keeps everything.
    retention: Duration = 6 * 365 * 86400.0
    # null: the default event catalogue. A list of names replaces it; a list of
    # "+name" / "-name" entries adds to or removes from it.
    events: list[str] | None = None

    @field_validator("events")
    @classmethod
    def _event_names(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        for entry in v:
            if not re.match(r"^[+-]?[a-z][a-z0-9_]*$", entry):
                raise ValueError(f"{entry!r} is not an event name (optionally with + or -)")
        signed = [e[:1] in ("+", "-") for e in v]
        if any(signed) and not all(signed):
            raise ValueError('use either plain names (the full list) or only "+name"/"-name"')
        return v


def _private_host(host: str) -> bool:
    """True for an IP literal on loopback or a private network (plain http is tolerable there)."""
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    return addr.is_loopback or addr.is_private


class WebhookEndpoint(_Section):
    """One receiver of webhook events (docs/webhooks.md)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    url: str
    events: list[str] = ["*"]  # event types (docs/webhooks.md), or "*" for every one
    # The HMAC-SHA256 key the receiver checks signatures with. It must stay readable
    # (it signs), so it is not hashed: keep it in a 0600 file (absolute path), or inline.
    secret: str | None = Field(default=None, min_length=16)
    secret_file: Path | None = None
    # Plain http is accepted for loopback and private IP literals; for an internal
    # host name set allow_http: true (the payloads carry no PHI, but say so on purpose).
    allow_http: bool = False
    ca_file: Path | None = None  # CA bundle (absolute path) for an https receiver on internal PKI
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        scheme, sep, rest = v.partition("://")
        host = rest.split("/", 1)[0].rpartition("@")[2]
        if not sep or scheme.lower() not in ("http", "https") or not host:
            raise ValueError('expected "https://host[:port]/path" (or http:// on a private host)')
        return v

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        from gateway.webhooks.events import WEBHOOK_EVENTS

        for name in v:
            if name != "*" and name not in WEBHOOK_EVENTS:
                known = ", ".join(sorted(WEBHOOK_EVENTS))
                raise ValueError(f"unknown webhook event {name!r} (known: {known}, or *)")
        if not v:
            raise ValueError('needs at least one event type (or "*")')
        return v

    @field_validator("secret_file", "ca_file")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_absolute():
            raise ValueError("expected an absolute path")
        if v is not None and not v.is_file():
            raise ValueError(f"file {v} does not exist")
        return v

    @model_validator(mode="after")
    def _checks(self) -> WebhookEndpoint:
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("set exactly one of secret and secret_file")
        scheme, _, rest = self.url.partition("://")
        hostport = rest.split("/", 1)[0].rpartition("@")[2]
        host = hostport.rsplit(":", 1)[0] if not hostport.endswith("]") else hostport
        if scheme.lower() == "http" and not self.allow_http and not _private_host(host):
            raise ValueError(
                "plain http to a public or named host: use https, or set allow_http: true"
            )
        return self


class WebhooksConfig(_Section):
    """Signed webhook deliveries of gateway events from a durable outbox (docs/webhooks.md)."""

    endpoints: list[WebhookEndpoint] = []
    retry_first: Duration = 10.0  # first wait after a failed POST; doubles each time
    retry_max: Duration = 1800.0  # the longest wait between two attempts
    lifetime: Duration = 3 * 86400.0  # an event not accepted by then is given up (logged)
    poll_interval: Duration = 1.0  # how often the sender looks for due events
    keep: Duration = 7 * 86400.0  # delivered and given-up events stay this long (for retry)
    concurrency: int = Field(default=8, ge=1)  # POSTs in flight at once

    @field_validator("endpoints")
    @classmethod
    def _unique_names(cls, v: list[WebhookEndpoint]) -> list[WebhookEndpoint]:
        names = [e.name for e in v]
        if len(set(names)) != len(names):
            raise ValueError("each endpoint name may appear once")
        return v


class MetricsConfig(_Section):
    """The Prometheus metrics endpoint (docs/metrics.md), served by the main process."""

    enabled: bool = False
    listen: ListenAddress = HostPort("127.0.0.1", 9466)


class ApiConfig(_Section):
    """The HTTP API for applications (docs/api.md): listener, submission, limits.

    Plain HTTP: listen on loopback, or behind a TLS-terminating proxy for other hosts.
    """

    enabled: bool = True
    listen: ListenAddress = HostPort("127.0.0.1", 8026)
    # Where the API submits messages so they pass the same pipeline as SMTP:
    # "host:port"; null: the gateway's first smtp.listen address.
    submit: HostPort | None = None
    # SMTP AUTH for that submission (STARTTLS first), when the listener does not
    # trust the API host by network (loopback is trusted by default).
    submit_user: str | None = None
    submit_password: str | None = None
    max_request_size: Size = 35 * 1024 * 1024  # a whole request body (base64 grows data by 4/3)
    max_recipients: int = Field(default=100, ge=1)  # per message sent through the API

    @field_validator("submit", mode="before")
    @classmethod
    def _submit(cls, v: Any) -> HostPort | None:
        return None if v is None else parse_hostport(v, default_port=25)

    @model_validator(mode="after")
    def _credentials(self) -> ApiConfig:
        if (self.submit_user is None) != (self.submit_password is None):
            raise ValueError("give submit_user and submit_password together")
        return self


class LogConfig(_Section):
    """Logging."""

    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(_Section):
    """The whole configuration."""

    data_dir: Path = Path("sealgate-data")
    hostname: str = Field(default_factory=socket.getfqdn, min_length=1)
    smtp: SmtpConfig = SmtpConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    dns: DnsConfig = DnsConfig()
    dkim: list[DkimKey] = []
    policy: PolicyConfig = PolicyConfig()
    portal: PortalConfig = PortalConfig()
    encryption: EncryptionConfig = EncryptionConfig()
    storage: StorageConfig = StorageConfig()
    api: ApiConfig = ApiConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    audit: AuditConfig = AuditConfig()

    @field_validator("dkim")
    @classmethod
    def _unique_selectors(cls, v: list[DkimKey]) -> list[DkimKey]:
        seen: set[tuple[str, str]] = set()
        for k in v:
            if (k.domain, k.selector) in seen:
                raise ValueError(f"selector {k.selector!r} of {k.domain!r} appears twice")
            seen.add((k.domain, k.selector))
        return v

    def dkim_for(self, domain: str) -> list[DkimKey]:
        """The signing keys configured for a sender domain (RSA and Ed25519 may both sign)."""
        domain = domain.lower().rstrip(".")
        return [k for k in self.dkim if k.domain == domain]


# --- loading and error reporting --------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration: where, and why."""

    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.path or '(top level)'}{where}: {self.reason}"


class ConfigError(Exception):
    """The configuration is unusable; carries every problem found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _line_index(node: yaml.Node | None) -> dict[tuple[int | str, ...], int]:
    """Map key paths to 1-based line numbers from a composed YAML tree."""
    index: dict[tuple[int | str, ...], int] = {}

    def walk(n: yaml.Node, path: tuple[int | str, ...]) -> None:
        index[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                index[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
                index[(*path, key)] = k.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*path, i))

    if node is not None:
        walk(node, ())
    return index


def _nearest_line(
    index: dict[tuple[int | str, ...], int], loc: tuple[int | str, ...]
) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in index:
            return index[loc[:end]]
    return None


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # pydantic inserts union member names and validator tags into locations.
    return tuple(
        p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))
    )


def _resolve_paths(cfg: Config, base: Path) -> Config:
    """Make relative file paths relative to the config file's folder."""

    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (base / p)

    smtp, delivery = cfg.smtp, cfg.delivery
    if smtp.tls:
        tls = smtp.tls.model_copy(update={"cert": fix(smtp.tls.cert), "key": fix(smtp.tls.key)})
        smtp = smtp.model_copy(update={"tls": tls})
    if smtp.client_ca_file:
        smtp = smtp.model_copy(update={"client_ca_file": fix(smtp.client_ca_file)})
    if delivery.tls_ca_file:
        delivery = delivery.model_copy(update={"tls_ca_file": fix(delivery.tls_ca_file)})
    dkim = [k.model_copy(update={"key": fix(k.key)}) for k in cfg.dkim]
    policy = cfg.policy
    if policy.rules:
        policy = policy.model_copy(update={"rules": fix(policy.rules)})
    portal = cfg.portal
    if portal.tls:
        portal_tls = portal.tls.model_copy(
            update={"cert": fix(portal.tls.cert), "key": fix(portal.tls.key)}
        )
        portal = portal.model_copy(update={"tls": portal_tls})
    return cfg.model_copy(
        update={
            "data_dir": fix(cfg.data_dir),
            "smtp": smtp,
            "delivery": delivery,
            "dkim": dkim,
            "policy": policy,
            "portal": portal,
        }
    )


def _file_problems(cfg: Config) -> Iterator[Problem]:
    def check(path: Path, where: str) -> Iterator[Problem]:
        if not path.is_file():
            yield Problem(where, f"file {path} does not exist")
        else:
            try:
                with path.open("rb"):
                    pass
            except OSError as exc:
                yield Problem(where, f"cannot read {path}: {exc.strerror}")

    if cfg.smtp.tls:
        yield from check(cfg.smtp.tls.cert, "smtp.tls.cert")
        yield from check(cfg.smtp.tls.key, "smtp.tls.key")
    if cfg.smtp.client_ca_file:
        yield from check(cfg.smtp.client_ca_file, "smtp.client_ca_file")
    if cfg.delivery.tls_ca_file:
        yield from check(cfg.delivery.tls_ca_file, "delivery.tls_ca_file")
    for i, k in enumerate(cfg.dkim):
        yield from check(k.key, f"dkim[{i}].key")
    if cfg.policy.rules:
        yield from check(cfg.policy.rules, "policy.rules")
    if cfg.portal.tls:
        yield from check(cfg.portal.tls.cert, "portal.tls.cert")
        yield from check(cfg.portal.tls.key, "portal.tls.key")


def parse(text: str, source: str = "<config>", base: Path | None = None) -> Config:
    """Validate YAML text into a Config; raise ConfigError listing every problem."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(source, [Problem("", f"not valid YAML: {exc}", line)]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, [Problem("", "the top level must be a mapping of keys")])
    lines = _line_index(node)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = _clean_loc(tuple(err["loc"]))
            reason = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                reason = "unknown key"
            elif err["type"] == "missing":
                reason = "required key is missing"
            problems.append(Problem(_format_loc(loc), reason, _nearest_line(lines, loc)))
        raise ConfigError(source, problems) from None
    cfg = _resolve_paths(cfg, base or Path.cwd())
    problems = list(_file_problems(cfg))
    if problems:
        for i, p in enumerate(problems):
            loc = tuple(int(x) if x.isdigit() else x for x in re.split(r"[.\[\]]+", p.path) if x)
            problems[i] = Problem(p.path, p.reason, _nearest_line(lines, loc))
        raise ConfigError(source, problems)
    return cfg


# Without a config file the gateway must work out of the box on one machine: like
# Postfix's default mynetworks, it trusts this host's loopback and nobody else.
EMBEDDED_DEFAULT = """\
smtp:
  connectors:
    - {name: localhost, networks: ["127.0.0.0/8", "::1/128"]}
"""


def load(path: Path | None) -> Config:
    """Load the config file at path, or the embedded default when path is None."""
    if path is None:
        return parse(EMBEDDED_DEFAULT, "<embedded default>", Path.cwd())
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [Problem("", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), [Problem("", "not UTF-8 text")]) from None
    return parse(text, str(path), path.resolve().parent)
