"""SMTP policy for one transaction: who may send, to whom, what, and the hand-off to the spool.

The protocol (gateway/inbound/server.py, on aiosmtpd) calls the handle_* hooks;
each returns the reply line. Every rejection cites its RFC, writes one log line
and tells the client only the reply text, never an internal reason.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, Protocol

from aiosmtpd.smtp import AuthResult, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from gateway import log
from gateway import policy as policy_stage
from gateway.config import SmtpConfig
from gateway.inbound import auth, relay
from gateway.message import ClientInfo, Envelope, QueuedMessage
from gateway.quarantine import QuarantineError, QuarantineFull
from gateway.spool import SpoolError, SpoolFull
from policies.decision import Decision

if TYPE_CHECKING:
    from aiosmtpd.proxy_protocol import ProxyData

    from gateway.inbound.server import SealgateSMTP

# --- replies -----------------------------------------------------------------------

OK_SENDER = "250 2.1.0 Ok"
OK_RECIPIENT = "250 2.1.5 Ok"
# RFC 3463 X.1.7 / X.1.3: bad sender / recipient mailbox syntax; RFC 5321 §4.2.2 501.
BAD_SENDER = "501 5.1.7 Bad sender address syntax"
BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
# RFC 6531 §3.7.3: a non-ASCII address needs the SMTPUTF8 parameter.
NEEDS_SMTPUTF8 = "553 5.6.7 Non-ASCII address requires SMTPUTF8"
# RFC 1870 §6.1: the declared SIZE is over our limit; RFC 3463 X.3.4 "message too big".
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
# RFC 5321 §4.5.3.1.10 (recipients buffer) and RFC 3463 X.5.3 "too many recipients".
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
# RFC 5321 §6.3 loop detection by counting Received headers; RFC 3463 X.4.6.
TOO_MANY_HOPS = "554 5.4.6 Too many hops"
# RFC 3463 X.3.1 "mail system full" / X.3.0 "other mail system problem".
STORAGE_FULL = "452 4.3.1 Insufficient system storage"
TEMP_FAILURE = "451 4.3.0 Temporary server error, try again later"

_MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1
_MAX_DOMAIN = 255  # RFC 5321 §4.5.3.1.2
_MAX_PATH = 254  # RFC 5321 §4.5.3.1.3 allows 256 octets including the angle brackets
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_HELO_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_HEADER_END = b"\r\n\r\n"


_CONTROL_PREFIX = b"x-sealgate-"
# What an application may tell the gateway per message; anything else is dropped.
_CONTROL_NAMES = frozenset({"x-sealgate-expires", "x-sealgate-portal", "x-sealgate-read-notice"})
_MAX_CONTROL_VALUE = 200


def control_fields(data: bytes) -> dict[str, str]:
    """The X-Sealgate-* instructions in the message header, by lower-cased name."""
    end = data.find(b"\r\n\r\n")
    head = data[: end + 2] if end >= 0 else data
    if _CONTROL_PREFIX not in head.lower():
        return {}
    out: dict[str, str] = {}
    for line in head.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        key = name.strip().lower().decode("ascii", "replace")
        if colon and key in _CONTROL_NAMES and key not in out:
            out[key] = value.strip().decode("utf-8", "replace")[:_MAX_CONTROL_VALUE]
    return out


class SpoolLike(Protocol):
    """What inbound needs from the spool: a durable put."""

    async def put(
        self, envelope: Envelope, data: bytes, meta: dict[str, Any] | None = None
    ) -> QueuedMessage:
        """Store the message (with metadata for later stages); return once it is on disk."""
        ...


class PolicyLike(Protocol):
    """What inbound needs from the policy stage (gateway.policy.PolicyStage)."""

    async def classify(self, data: bytes, mail_from: str, rcpt_to: Sequence[str]) -> Decision:
        """The decision for one message; raises policy.PolicyUnavailable."""
        ...

    async def quarantine(self, envelope: Envelope, data: bytes, meta: dict[str, Any]) -> str:
        """Hold the message durably instead of queueing it; return its quarantine id."""
        ...


class Transaction(SmtpEnvelope):
    """aiosmtpd's envelope plus the relay decision made at MAIL FROM."""

    def __init__(self) -> None:
        super().__init__()
        self.authority: relay.Authority | None = None
        self.body_8bitmime = False


# --- address and header checks (pure) -------------------------------------------


def _domain_ok(domain: str, smtputf8: bool) -> bool:
    if not domain or len(domain) > _MAX_DOMAIN:
        return False
    if domain.startswith("[") and domain.endswith("]"):  # address literal, RFC 5321 §4.1.3
        literal = domain[1:-1]
        if literal[:5].lower() == "ipv6:":
            literal = literal[5:]
            try:
                return isinstance(ipaddress.ip_address(literal), ipaddress.IPv6Address)
            except ValueError:
                return False
        try:
            return isinstance(ipaddress.ip_address(literal), ipaddress.IPv4Address)
        except ValueError:
            return False
    labels = domain.rstrip(".").split(".") if domain.endswith(".") else domain.split(".")
    for label in labels:
        if smtputf8 and not label.isascii():
            # U-labels (RFC 6531): leave IDNA validity to the next hop, refuse only
            # what cannot be a label at all.
            if not label or len(label.encode()) > 63 or any(c in label for c in ' @[]\\"'):
                return False
        elif not _LABEL_RE.match(label):
            return False
    return True


def address_problem(address: str, smtputf8: bool, *, recipient: bool) -> str | None:
    """The reply refusing a mailbox's syntax, or None when it is acceptable."""
    bad = BAD_RECIPIENT if recipient else BAD_SENDER
    try:
        encoded = address.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
        return bad
    if not address.isascii() and not smtputf8:
        return NEEDS_SMTPUTF8
    local, at, domain = address.rpartition("@")
    if not at or not local or len(encoded) > _MAX_PATH:
        return bad
    if len(local.encode()) > _MAX_LOCAL_PART or any(ord(c) < 32 or ord(c) == 127 for c in local):
        return bad
    if not _domain_ok(domain, smtputf8):
        return bad
    return None


def header_fields(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(lower-cased name, unfolded value) of each field in a header block."""
    name: bytes | None = None
    value: list[bytes] = []
    for line in block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                value.append(line)
            continue
        if name is not None:
            yield name, b"".join(value).strip()
        head, colon, rest = line.partition(b":")
        if colon and head and not head.endswith((b" ", b"\t")):
            name, value = head.lower(), [rest]
        else:
            name, value = None, []  # not a field: ignore it
    if name is not None:
        yield name, b"".join(value).strip()


def header_block(data: bytes) -> bytes:
    """The message's header section (RFC 5322 §2.1), without parsing the body."""
    if data.startswith(b"\r\n"):
        return b""
    end = data.find(_HEADER_END)
    return data if end < 0 else data[: end + 2]


@dataclass(frozen=True)
class HeaderFacts:
    """What DATA checks need from the headers."""

    received: int
    tenant_ids: tuple[str, ...]


def header_facts(data: bytes) -> HeaderFacts:
    """Count Received fields and collect Microsoft 365 tenant ids."""
    received = 0
    tenants: list[str] = []
    for name, value in header_fields(header_block(data)):
        if name == b"received":
            received += 1
        elif name == b"x-ms-exchange-crosstenant-id":
            tenants.append(value.decode("ascii", "replace"))
    return HeaderFacts(received, tuple(tenants))


def _helo_text(helo: str, ip_literal: str) -> str:
    if _HELO_DOMAIN_RE.match(helo) or helo == ip_literal:
        return helo
    if helo.startswith("[") and helo.endswith("]") and _domain_ok(helo, False):
        return helo
    # Anything else could break the header's syntax; the address is what counts.
    return ip_literal


def _ip_literal(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "[unknown]"
    return f"[IPv6:{addr}]" if addr.version == 6 else f"[{addr}]"


def received_header(
    *,
    helo: str,
    ip: str,
    hostname: str,
    protocol: str,
    tls: str | None,
    trace_id: str,
    recipients: Iterable[str],
    when: datetime,
) -> bytes:
    """A Received trace field as RFC 5321 §4.4 lays it out, folded, ending in CRLF."""
    literal = _ip_literal(ip)
    parts = [f"from {_helo_text(helo, literal)} ({literal})"]
    if tls:
        version, _, cipher = tls.partition(" ")
        parts.append(f"(using {version} with cipher {cipher})" if cipher else f"(using {tls})")
    parts.append(f"by {hostname} with {protocol} id {trace_id}")
    rcpts = list(recipients)
    # A single recipient only: listing several would disclose Bcc recipients to each other.
    if len(rcpts) == 1:
        parts.append(f"for <{rcpts[0]}>")
    text = "Received: " + "\r\n\t".join(parts) + ";\r\n\t" + format_datetime(when) + "\r\n"
    return text.encode("utf-8")


def with_protocol(*, extended: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    """The "with" keyword: RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA), RFC 6531 §3.7.4 (UTF8...)."""
    suffix = ("S" if tls else "") + ("A" if authenticated else "")
    if smtputf8:
        return "UTF8SMTP" + suffix
    if extended or suffix:
        return "ESMTP" + suffix
    return "SMTP"


# --- the handler ---------------------------------------------------------------------


def _session_user(session: Session) -> str | None:
    data = session.auth_data
    return data if session.authenticated and isinstance(data, str) else None


class InboundHandler:
    """aiosmtpd handler: applies relay control and limits, then spools the message."""

    def __init__(
        self,
        cfg: SmtpConfig,
        hostname: str,
        spool: SpoolLike,
        authenticator: auth.Authenticator,
        *,
        max_auth_failures: int = 3,
        policy: PolicyLike | None = None,
    ) -> None:
        self._cfg = cfg
        self._hostname = hostname
        self._spool = spool
        self._auth = authenticator
        # The daemon always passes one; None (no classification) is for protocol tests.
        self._policy_stage = policy
        self._policy = relay.RelayPolicy(cfg)
        self._max_auth_failures = max_auth_failures

    # -- connection ----------------------------------------------------------------

    async def handle_PROXY(
        self, server: SealgateSMTP, session: Session, envelope: Transaction, proxy: ProxyData
    ) -> bool:
        """Take the client address from the PROXY header (v1 or v2)."""
        # A v1 "UNKNOWN" or v2 LOCAL header (health checks) carries no client address.
        if proxy.src_addr is not None and not isinstance(proxy.src_addr, str):
            server.client_ip = str(proxy.src_addr)
            server.client_port = proxy.src_port
        return True

    async def handle_EHLO(
        self,
        server: SealgateSMTP,
        session: Session,
        envelope: Transaction,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """Advertise our extensions: SIZE, PIPELINING, and AUTH only where it is usable."""
        session.host_name = hostname
        keywords = [r[4:] for r in responses[1:]]
        keywords = [k for k in keywords if k != "HELP"]
        if not self._auth.enabled:
            keywords = [k for k in keywords if not k.startswith("AUTH")]
        keywords[0:0] = ["PIPELINING", f"SIZE {self._cfg.max_message_size}"]
        lines = [responses[0][4:], *keywords]
        return [f"250-{k}" for k in lines[:-1]] + [f"250 {lines[-1]}"]

    # -- authentication -----------------------------------------------------------------

    async def _login(
        self, server: SealgateSMTP, mechanism: str, creds: auth.Credentials | None
    ) -> AuthResult:
        if creds is None:  # a syntax error, already answered
            return AuthResult(success=False, handled=True)
        if await self._auth.verify(creds.username, creds.password):
            log.event(
                "auth",
                session=server.sid,
                ip=server.client_ip,
                user=creds.username,
                mechanism=mechanism,
            )
            return AuthResult(success=True, auth_data=creds.username)
        server.auth_failures += 1
        log.event(
            "auth_failed",
            session=server.sid,
            ip=server.client_ip,
            user=creds.username,
            mechanism=mechanism,
            failures=server.auth_failures,
        )
        if server.auth_failures >= self._max_auth_failures:
            # Slow down password guessing: one connection gets a few tries only.
            await server.push(auth.AUTH_FAILED)
            server.close_with("421 4.7.0 Too many failed authentication attempts")
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=auth.AUTH_FAILED)

    async def auth_PLAIN(self, server: SealgateSMTP, args: list[str]) -> AuthResult:
        """AUTH PLAIN (RFC 4616), checked against smtp.users."""
        return await self._login(server, "PLAIN", await auth.read_plain(server, args))

    async def auth_LOGIN(self, server: SealgateSMTP, args: list[str]) -> AuthResult:
        """AUTH LOGIN (the de-facto mechanism Outlook-era clients use)."""
        return await self._login(server, "LOGIN", await auth.read_login(server, args))

    # -- transaction ----------------------------------------------------------------------

    def _reject(
        self, server: SealgateSMTP, stage: str, reply: str, reason: str, **fields: Any
    ) -> str:
        log.event(
            "rejected",
            session=server.sid,
            ip=server.client_ip,
            stage=stage,
            code=int(reply[:3]),
            reason=reason,
            **fields,
        )
        return reply

    async def handle_MAIL(
        self,
        server: SealgateSMTP,
        session: Session,
        envelope: Transaction,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Check the sender's syntax, declared size and the relay authority."""
        smtputf8 = "SMTPUTF8" in mail_options
        sender = "" if address == "<>" else address
        if sender:
            problem = address_problem(sender, smtputf8, recipient=False)
            if problem:
                return self._reject(server, "mail", problem, "bad sender syntax", sender=sender)
        for option in mail_options:
            name, _, value = option.partition("=")
            # RFC 1870 §6.2: refuse at MAIL when the declared size is already too big.
            if name == "SIZE" and value.isdigit() and int(value) > self._cfg.max_message_size:
                return self._reject(
                    server,
                    "mail",
                    TOO_BIG,
                    "declared size over limit",
                    sender=sender,
                    size=int(value),
                )
        tls = server.tls_facts()
        authority = self._policy.authority(
            ip=server.client_ip,
            auth_user=_session_user(session),
            cert_der=tls.peer_cert if tls else None,
            mail_from=sender,
        )
        if authority.reply:
            return self._reject(
                server,
                "mail",
                authority.reply,
                authority.reason,
                sender=sender,
                user=authority.user,
                connector=authority.connector.name if authority.connector else None,
            )
        # aiosmtpd treats an empty mail_from as "no MAIL yet", so "<>" stays as written.
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.smtp_utf8 = smtputf8
        envelope.body_8bitmime = "BODY=8BITMIME" in mail_options
        envelope.authority = authority
        return OK_SENDER

    async def handle_RCPT(
        self,
        server: SealgateSMTP,
        session: Session,
        envelope: Transaction,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Refuse relaying for unknown clients; check syntax and the recipient limit."""
        authority = envelope.authority
        problem = address_problem(address, envelope.smtp_utf8, recipient=True)
        if problem:
            return self._reject(server, "rcpt", problem, "bad recipient syntax", rcpt=address)
        if authority is None or not authority.allowed:
            return self._reject(
                server,
                "rcpt",
                relay.RELAY_DENIED,
                authority.reason if authority else "no sender",
                rcpt=address,
                sender="" if envelope.mail_from == "<>" else envelope.mail_from,
            )
        if address in envelope.rcpt_tos:
            return OK_RECIPIENT  # a repeated RCPT is harmless; deliver once
        if len(envelope.rcpt_tos) >= self._cfg.max_recipients:
            return self._reject(
                server, "rcpt", TOO_MANY_RECIPIENTS, "recipient limit", rcpt=address
            )
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return OK_RECIPIENT

    async def handle_DATA(
        self, server: SealgateSMTP, session: Session, envelope: Transaction
    ) -> str:
        """Check hops and tenant, prepend Received, and spool; 250 only once it is on disk."""
        data = envelope.original_content or b""
        authority = envelope.authority
        assert authority is not None and envelope.mail_from is not None
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        facts = header_facts(data)
        if facts.received > self._cfg.max_hops:
            return self._reject(
                server, "data", TOO_MANY_HOPS, "mail loop", sender=sender, hops=facts.received
            )
        if not relay.tenant_allowed(authority.connector, facts.tenant_ids):
            return self._reject(
                server,
                "data",
                relay.UNKNOWN_TENANT,
                "tenant not allowed",
                sender=sender,
                connector=authority.name,
                tenants=list(facts.tenant_ids),
            )

        tls = server.tls_facts()
        tls_text = tls.summary if tls else None
        user = _session_user(session)
        server.transactions += 1
        trace_id = f"{server.sid}.{server.transactions}"
        now = time.time()
        received = received_header(
            helo=session.host_name or "",
            ip=server.client_ip,
            hostname=self._hostname,
            protocol=with_protocol(
                extended=session.extended_smtp,
                tls=tls is not None,
                authenticated=user is not None,
                smtputf8=envelope.smtp_utf8,
            ),
            tls=tls_text,
            trace_id=trace_id,
            recipients=envelope.rcpt_tos,
            when=datetime.fromtimestamp(now, UTC),
        )
        message = Envelope(
            mail_from=sender,
            rcpt_to=tuple(envelope.rcpt_tos),
            received_at=now,
            client=ClientInfo(
                ip=server.client_ip,
                helo=session.host_name or "",
                tls=tls_text,
                auth_user=user,
                connector=authority.connector.name if authority.connector else None,
            ),
            smtputf8=envelope.smtp_utf8,
            body_8bitmime=envelope.body_8bitmime,
        )
        added = b""
        decision: Decision | None = None
        if self._policy_stage is not None:
            try:
                decision = await self._policy_stage.classify(data, sender, message.rcpt_to)
            except policy_stage.PolicyUnavailable as exc:
                # Fail closed: unclassified mail is never queued; the client tries again.
                return self._reject(
                    server,
                    "data",
                    TEMP_FAILURE,
                    "policy unavailable",
                    sender=sender,
                    trace=trace_id,
                    failure=exc.kind,
                    detail=exc.detail,
                )
            if decision.action == "reject":
                self._log_policy(server, trace_id, decision, None, "refused")
                await self._notify(message, decision, "refused", None)
                return self._reject(
                    server,
                    "data",
                    policy_stage.reject_reply(decision),
                    "policy",
                    sender=sender,
                    trace=trace_id,
                    rules=list(decision.matched_rules),
                )
            control = control_fields(data)
            added, data = policy_stage.rewrite(data, decision)
        else:
            control = {}
        # Headers a rule adds go below our Received: trace fields stay on top (RFC 5321 §4.4).
        body = received + added + data
        meta: dict[str, Any] = {"decision": decision.to_json()} if decision is not None else {}
        if control:
            # The headers leave the message here; later stages (the portal) act on them.
            meta["control"] = control
        if decision is not None and decision.action == "quarantine":
            return await self._hold(server, trace_id, message, body, decision, meta)
        try:
            queued = await (
                self._spool.put(message, body, meta) if meta else self._spool.put(message, body)
            )
        except SpoolFull:
            return self._reject(server, "data", STORAGE_FULL, "spool full", sender=sender)
        except SpoolError as exc:
            return self._reject(
                server,
                "data",
                TEMP_FAILURE,
                "spool error",
                sender=sender,
                error=type(exc).__name__,
            )
        log.event(
            "received",
            id=queued.id,
            session=server.sid,
            trace=trace_id,
            ip=server.client_ip,
            helo=session.host_name,
            user=user,
            connector=authority.connector.name if authority.connector else None,
            tls=tls_text,
            sender=sender,
            recipients=len(envelope.rcpt_tos),
            size=len(body),
        )
        if decision is not None:
            self._log_policy(server, trace_id, decision, queued.id, "queued")
            await self._notify(message, decision, "queued", queued.id)
        return f"250 2.0.0 Ok: queued as {queued.id}"

    # -- the policy decision's effects ----------------------------------------------------

    async def _hold(
        self,
        server: SealgateSMTP,
        trace_id: str,
        message: Envelope,
        body: bytes,
        decision: Decision,
        meta: dict[str, Any],
    ) -> str:
        """Quarantine the message instead of queueing it; the client hears 250 all the same.

        meta (the decision, the sender's X-Sealgate-* instructions) travels with it,
        and on release into the queue.
        """
        assert self._policy_stage is not None
        try:
            qid = await self._policy_stage.quarantine(message, body, meta)
        except QuarantineFull:
            return self._reject(
                server, "data", STORAGE_FULL, "quarantine full", sender=message.mail_from
            )
        except QuarantineError as exc:
            return self._reject(
                server,
                "data",
                TEMP_FAILURE,
                "quarantine error",
                sender=message.mail_from,
                error=type(exc).__name__,
            )
        log.event(
            "quarantined",
            id=qid,
            session=server.sid,
            trace=trace_id,
            ip=server.client_ip,
            sender=message.mail_from,
            recipients=len(message.rcpt_to),
            size=len(body),
        )
        self._log_policy(server, trace_id, decision, qid, "quarantined")
        await self._notify(message, decision, "quarantined", qid)
        # Accepted: what happens next is the organisation's business, not the client's.
        return f"250 2.0.0 Ok: queued as {qid}"

    def _log_policy(
        self,
        server: SealgateSMTP,
        trace_id: str,
        decision: Decision,
        msg_id: str | None,
        outcome: policy_stage.Outcome,
    ) -> None:
        log.event(
            "policy",
            id=msg_id,
            session=server.sid,
            trace=trace_id,
            outcome=outcome,
            **policy_stage.log_fields(decision),
        )

    async def _notify(
        self,
        message: Envelope,
        decision: Decision,
        outcome: policy_stage.Outcome,
        msg_id: str | None,
    ) -> None:
        """Queue the notice a notify_sender action asks for; a failure is logged, not fatal."""
        notice = policy_stage.notification(
            hostname=self._hostname,
            envelope=message,
            decision=decision,
            outcome=outcome,
            msg_id=msg_id,
        )
        if notice is None:
            return
        envelope, data = notice
        try:
            queued = await self._spool.put(envelope, data, {"notice_for": msg_id})
        except SpoolError as exc:
            log.event(
                "notice_failed", logging.ERROR, id=msg_id, outcome=outcome, error=type(exc).__name__
            )
            return
        log.event("notice_queued", id=queued.id, original_id=msg_id, to=message.mail_from)
