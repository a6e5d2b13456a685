"""The SMTP transport: delivers one message to one destination and reports per recipient.

Network and protocol problems never raise: each becomes a RcptResult saying
delivered, transient (try again later) or permanent (bounce), which is all the
retry logic needs.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import log
from gateway.config import DeliveryConfig
from gateway.fetch import HttpsFetcher, https_context
from gateway.outbound.pool import PoolKey, SessionPool
from gateway.outbound.routes import NoRoute, find_route
from gateway.outbound.session import (
    NETWORK_ERRORS,
    HopFailure,
    Session,
    SessionSettings,
    Status,
    Target,
    TlsLevel,
    classify,
    command_line,
    data_block,
    describe_error,
    open_session,
    reply_text,
)
from gateway.outbound.tlsfacts import ClientContexts, build_contexts
from gateway.outbound.tlspolicy import HopTls, Plan, TlsPolicy
from gateway.resolver import DnsTemporaryError, Resolver

__all__ = ["DeliveryReport", "RcptResult", "TlsLevel", "Transport"]

# Postfix's smtp_rset_timeout: a pooled connection that cannot answer RSET
# promptly is dropped rather than trusted with a transaction.
_RSET_TIMEOUT = 20.0
# Postfix's smtp_mx_address_limit and smtp_mx_session_limit: bound the time one
# delivery spends walking a long list of broken hosts.
_MAX_ADDRESSES = 5
_MAX_SESSIONS = 2


@dataclass(frozen=True)
class RcptResult:
    """The outcome for one recipient."""

    address: str
    status: Status
    code: int | None  # SMTP reply code; None when no server replied (DNS, connect)
    text: str  # starts with an enhanced status code, e.g. "4.4.1 Connection refused to ..."


@dataclass(frozen=True)
class DeliveryReport:
    """Per-recipient outcomes of one delivery, with the server and TLS facts behind them."""

    results: tuple[RcptResult, ...]
    remote: str  # "mx1.example [127.0.0.2]:25", or "" when no server answered
    # version, cipher, verified, verify_error, peer, fingerprint_sha256, and the
    # requirement: level, mta_sts, dane, policy; None = no TLS
    tls: dict[str, Any] | None
    # Set (a 4.7.x reason) when no host could be used because none met the TLS
    # requirement; the recipients are then transient. A caller with another
    # way to reach them (the portal) takes it; never plaintext.
    tls_failure: str | None = None


@dataclass(frozen=True)
class _Message:
    mail_from: str
    data: bytes
    smtputf8: bool
    body_8bitmime: bool


class _StaleSession(Exception):
    """A pooled connection did not answer the RSET that began a pipelined transaction."""


def _facts(session: Session, plan: Plan, hop_tls: HopTls) -> dict[str, Any] | None:
    """The session's TLS facts with the requirement it was held to, for the delivery record."""
    if session.tls is None:
        return None
    facts = dict(session.tls)
    facts.update(hop_tls.facts)
    facts["level"] = hop_tls.level
    facts["policy"] = plan.policy
    facts["mta_sts"] = plan.sts.mode if plan.sts is not None else None
    facts.setdefault("dane", None)
    if session.tls.get("dane") is not None:
        facts["dane"] = session.tls["dane"]
    return facts


@dataclass
class _Outcome:
    """What one session did: final results, and who must try the next host and why."""

    results: dict[str, RcptResult] = field(default_factory=dict)
    retry: list[str] = field(default_factory=list)
    failure: HopFailure | None = None
    reusable: bool = True


# Anything that could break out of the SMTP command line (RFC 5321 section 4.1.2
# allows none of these in a path).
_BAD_ADDRESS_RE = re.compile(r"[\x00-\x1f\x7f<>]")


def _bad_address(address: str) -> bool:
    return _BAD_ADDRESS_RE.search(address) is not None


@functools.lru_cache(maxsize=256)
def _ip_literal(host: str) -> bool:
    """Whether host is an IP address (a relay host given by address needs no lookup)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _mail_options(session: Session, msg: _Message) -> list[bytes]:
    options: list[bytes] = []
    if session.supports("size"):
        options.append(f"SIZE={len(msg.data)}".encode())  # RFC 1870
    if (msg.body_8bitmime or msg.smtputf8) and session.supports("8bitmime"):
        options.append(b"BODY=8BITMIME")  # RFC 6152
    if msg.smtputf8:
        options.append(b"SMTPUTF8")  # RFC 6531
    return options


class Transport:
    """SMTP client for outbound mail: routes, sessions, TLS and connection reuse."""

    def __init__(
        self,
        cfg: DeliveryConfig,
        hostname: str,
        resolver: Resolver,
        tls_policy: TlsPolicy | None = None,
    ) -> None:
        self._cfg = cfg
        self._resolver = resolver
        self._tls_policy = tls_policy
        self._settings = SessionSettings(
            hostname=hostname,
            connect_timeout=cfg.connect_timeout,
            command_timeout=cfg.command_timeout,
        )
        self._pool = SessionPool(cfg.connection_reuse_time)
        self._contexts: ClientContexts | None = None

    async def deliver(
        self,
        domain: str,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        *,
        smtputf8: bool = False,
        body_8bitmime: bool = False,
        tls: TlsLevel = "opportunistic",
    ) -> DeliveryReport:
        """Deliver data to rcpts (all at domain) and report each recipient's outcome."""
        unique = list(dict.fromkeys(rcpts))
        # A non-ASCII address can only travel with SMTPUTF8 (RFC 6531 section 3.4).
        if not all(a.isascii() for a in [mail_from, *unique]):
            smtputf8 = True
        msg = _Message(mail_from, data, smtputf8, body_8bitmime)
        try:
            return await self._deliver(domain, msg, unique, tls)
        except Exception as exc:
            # A bug here must cost a retry, never the message (fail closed).
            log.event(
                "smtp_internal_error",
                logging.ERROR,
                domain=domain,
                error=f"{type(exc).__name__}: {exc}",
            )
            text = "4.3.0 Internal error during delivery"
            return DeliveryReport(
                tuple(RcptResult(a, "transient", None, text) for a in unique), "", None
            )

    async def close(self) -> None:
        """Close idle connections; call once at shutdown."""
        await self._pool.close()
        # A transport closed just now releases its socket on the next loop
        # turn; give it that turn before the caller stops the loop.
        await asyncio.sleep(0)

    @property
    def idle_connections(self) -> int:
        """How many connections wait for reuse (for metrics and tests)."""
        return self._pool.idle_count

    async def _client_contexts(self) -> ClientContexts:
        if self._contexts is None:
            self._contexts = await asyncio.to_thread(build_contexts, self._cfg.tls_ca_file)
        return self._contexts

    async def _policy(self) -> TlsPolicy:
        if self._tls_policy is None:
            context = await asyncio.to_thread(https_context, self._cfg.tls_ca_file)
            fetcher = HttpsFetcher(
                self._resolver,
                context,
                timeout=self._cfg.https_timeout,
                max_size=self._cfg.https_max_size,
            )
            self._tls_policy = TlsPolicy(self._cfg, self._resolver, fetcher)
        return self._tls_policy

    async def _deliver(
        self, domain: str, msg: _Message, rcpts: list[str], tls: TlsLevel
    ) -> DeliveryReport:
        done: dict[str, RcptResult] = {}
        if _bad_address(msg.mail_from):
            text = "5.1.7 Bad sender address syntax"
            return DeliveryReport(
                tuple(RcptResult(a, "permanent", None, text) for a in rcpts), "", None
            )
        pending = []
        for address in rcpts:
            if _bad_address(address):
                done[address] = RcptResult(
                    address, "permanent", None, "5.1.3 Bad recipient address syntax"
                )
            else:
                pending.append(address)

        def report(
            remote: str, tls_facts: dict[str, Any] | None, tls_failure: str | None = None
        ) -> DeliveryReport:
            return DeliveryReport(tuple(done[a] for a in rcpts), remote, tls_facts, tls_failure)

        if not pending:
            return report("", None)
        route = await find_route(domain, self._resolver, self._cfg.relay_host, self._cfg.mx_port)
        if isinstance(route, NoRoute):
            for address in pending:
                done[address] = RcptResult(address, route.status, route.code, route.text)
            return report("", None)

        contexts = await self._client_contexts()
        policy = await self._policy()
        plan = await policy.plan(domain, tls)
        last = HopFailure("transient", None, f"4.4.4 No usable host for {domain}", reached=False)
        tls_failure: HopFailure | None = None
        remote, tls_facts = "", None
        addresses_tried = sessions = 0
        for hop in route:
            if addresses_tried >= _MAX_ADDRESSES or sessions >= _MAX_SESSIONS:
                break
            try:
                hop_tls = await policy.hop(plan, hop)
            except HopFailure as failure:
                # Never tried: the host cannot meet the requirement (MTA-STS, DANE).
                last = tls_failure = failure
                self._log_failure(domain, f"{hop.host}:{hop.port}", failure)
                continue
            try:
                if _ip_literal(hop.host):
                    ips = [hop.host]
                else:
                    ips = await self._resolver.addresses(hop.host)
            except DnsTemporaryError as exc:
                last = HopFailure(
                    "transient",
                    None,
                    f"4.4.3 Address lookup for {hop.host} failed: {exc}",
                    reached=False,
                )
                continue
            if not ips:
                last = HopFailure(
                    "transient",
                    None,
                    f"4.4.4 Host {hop.host} has no address records",
                    reached=False,
                )
                continue
            for ip in ips:
                if addresses_tried >= _MAX_ADDRESSES or sessions >= _MAX_SESSIONS:
                    break
                addresses_tried += 1
                target = Target(hop.host, ip, hop.port)
                key: PoolKey = (target.host, target.ip, target.port, hop_tls.key)
                try:
                    session, outcome = await self._exchange(
                        key, target, hop_tls, contexts, msg, pending
                    )
                except HopFailure as failure:
                    last = failure
                    if failure.tls:
                        tls_failure = failure
                    if failure.reached:
                        remote, tls_facts = str(target), None
                    self._log_failure(domain, str(target), failure)
                    continue
                sessions += 1
                remote = str(target)
                tls_facts = _facts(session, plan, hop_tls)
                if outcome.reusable and session.alive:
                    self._pool.give(key, session)
                else:
                    session.abort()
                done.update(outcome.results)
                pending = outcome.retry
                if not pending:
                    return report(remote, tls_facts)
                if outcome.failure is not None:
                    last = outcome.failure
                    self._log_failure(domain, str(target), last)
        failed_tls: str | None = None
        if sessions == 0 and tls_failure is not None:
            # No host took a session because none met the TLS requirement
            # (others may have been unreachable): say so, with a 4.7.x reason.
            last = tls_failure
            failed_tls = tls_failure.text
        for address in pending:
            done[address] = RcptResult(address, last.status, last.code, last.text)
        return report(remote, tls_facts, failed_tls)

    async def _exchange(
        self,
        key: PoolKey,
        target: Target,
        tls: HopTls,
        contexts: ClientContexts,
        msg: _Message,
        rcpts: list[str],
    ) -> tuple[Session, _Outcome]:
        """A session with target (pooled or new) and the transaction on it; HopFailure if none."""
        while True:
            session, reset = await self._session(key, target, tls, contexts)
            try:
                return session, await self._transaction(session, msg, rcpts, reset=reset)
            except _StaleSession:
                session.abort()  # then the next pooled connection, or a new one
            except BaseException:
                session.abort()  # cancelled mid-transaction: the connection is unusable
                raise

    async def _session(
        self, key: PoolKey, target: Target, tls: HopTls, contexts: ClientContexts
    ) -> tuple[Session, bool]:
        """A pooled session that still answers RSET, else a new one; True: RSET still to send.

        With PIPELINING the RSET goes out in the transaction's first write
        instead of a round trip of its own.
        """
        limit = min(_RSET_TIMEOUT, self._settings.command_timeout)
        while (session := self._pool.take(key)) is not None:
            if session.pipelining:
                return session, True
            try:
                alive = await session.reset(limit)
            except BaseException:
                session.abort()
                raise
            if alive:
                return session, False
            session.abort()
        session = await open_session(
            target,
            tls.level,
            contexts,
            self._settings,
            dane_records=tls.dane,
            starttls=tls.starttls,
        )
        return session, False

    async def _transaction(
        self, session: Session, msg: _Message, rcpts: list[str], *, reset: bool = False
    ) -> _Outcome:
        """MAIL, RCPT for each recipient, DATA; per-recipient results or a hop failure."""
        target = session.target
        if msg.smtputf8 and not session.supports("smtputf8"):
            # RFC 6531 section 3.4: without SMTPUTF8 this message cannot go here.
            failure = HopFailure(
                "permanent",
                None,
                f"5.6.7 SMTPUTF8 is required, but was not offered by {target}",
                reached=True,
            )
            return _Outcome(retry=list(rcpts), failure=failure)
        limit = session.size_limit()
        if limit is not None and len(msg.data) > limit:
            failure = HopFailure(
                "permanent",
                None,
                f"5.3.4 Message size exceeds the limit of {target} ({limit} bytes)",
                reached=True,
            )
            return _Outcome(retry=list(rcpts), failure=failure)

        encoding = "utf-8" if msg.smtputf8 else "ascii"
        mail = command_line(
            b"MAIL",
            b"FROM:<" + msg.mail_from.encode(encoding) + b">",
            *_mail_options(session, msg),
        )
        rcpt_lines = [command_line(b"RCPT", b"TO:<" + a.encode(encoding) + b">") for a in rcpts]
        outcome = _Outcome()
        accepted: list[str] = []
        stage = "MAIL FROM"
        try:
            if session.pipelining:
                # RFC 2920: [RSET,] MAIL and every RCPT in one write, then their replies
                # in order. DATA follows on its own, so that a server slow to answer
                # it is handled as without pipelining (the message may be there).
                try:
                    session.send(*([b"RSET\r\n"] if reset else []), mail, *rcpt_lines)
                except NETWORK_ERRORS:
                    if reset:
                        raise _StaleSession() from None
                    raise
                if reset:
                    await self._pooled_reset(session)
                reply = await session.reply()
            else:
                session.send(mail)
                reply = await session.reply()
            status = classify(reply.code)
            if status == "transient":
                # RFC 5321 section 5.1: another exchanger may take it now.
                failure = HopFailure(
                    "transient", reply.code, reply_text(reply.code, reply.message), reached=True
                )
                # Pipelined RCPTs are answered too: rather than read those back into
                # step, the connection is dropped.
                reusable = reply.code != 421 and not session.pipelining
                return _Outcome(retry=list(rcpts), failure=failure, reusable=reusable)
            if status == "permanent":
                text = reply_text(reply.code, reply.message)
                for address in rcpts:
                    outcome.results[address] = RcptResult(address, "permanent", reply.code, text)
                outcome.reusable = not session.pipelining
                return outcome

            stage = "RCPT TO"
            for address, line in zip(rcpts, rcpt_lines, strict=True):
                if not session.pipelining:
                    session.send(line)
                reply = await session.reply()
                if reply.code in (250, 251):
                    accepted.append(address)
                    continue
                text = reply_text(reply.code, reply.message)
                if reply.code == 421:
                    return self._abandon(
                        outcome, rcpts, HopFailure("transient", reply.code, text, reached=True)
                    )
                outcome.results[address] = RcptResult(
                    address, classify(reply.code), reply.code, text
                )
            if not accepted:
                return outcome
        except NETWORK_ERRORS as exc:
            failure = HopFailure(
                "transient",
                None,
                f"4.4.2 Lost connection with {target} during {stage}: {describe_error(exc)}",
                reached=True,
            )
            outcome = self._abandon(outcome, rcpts, failure)
            outcome.reusable = False
            return outcome
        return await self._data(session, msg, outcome, rcpts, accepted)

    @staticmethod
    async def _pooled_reset(session: Session) -> None:
        """Read the reply to the RSET that began a pipelined transaction on a pooled session."""
        try:
            reply = await session.reply(min(_RSET_TIMEOUT, session.timeout))
        except NETWORK_ERRORS:
            raise _StaleSession() from None
        if reply.code != 250:
            raise _StaleSession()

    async def _data(
        self,
        session: Session,
        msg: _Message,
        outcome: _Outcome,
        rcpts: list[str],
        accepted: list[str],
    ) -> _Outcome:
        """DATA and the message; the final reply is every accepted recipient's result."""
        try:
            session.send(b"DATA\r\n")
            reply = await session.reply()
            if reply.code == 354:
                session.send(data_block(msg.data))
                reply = await session.reply()
        except NETWORK_ERRORS as exc:
            # The server may already hold the message (RFC 1047): defer rather than
            # hand a second copy to the next host right now.
            text = f"4.4.2 Lost connection with {session.target} during DATA: {describe_error(exc)}"
            for address in accepted:
                outcome.results[address] = RcptResult(address, "transient", None, text)
            outcome.reusable = False
            return outcome
        text = reply_text(reply.code, reply.message)
        if reply.code == 421:
            return self._abandon(
                outcome, rcpts, HopFailure("transient", reply.code, text, reached=True)
            )
        status: Status = "delivered" if reply.code == 250 else classify(reply.code)
        for address in accepted:
            outcome.results[address] = RcptResult(address, status, reply.code, text)
        return outcome

    @staticmethod
    def _abandon(outcome: _Outcome, rcpts: list[str], failure: HopFailure) -> _Outcome:
        """The session broke off: recipients not refused for good go to the next host."""
        kept = {a: r for a, r in outcome.results.items() if r.status == "permanent"}
        return _Outcome(
            results=kept,
            retry=[a for a in rcpts if a not in kept],
            failure=failure,
            reusable=False,
        )

    @staticmethod
    def _log_failure(domain: str, remote: str, failure: HopFailure) -> None:
        log.event(
            "smtp_hop_failed",
            domain=domain,
            remote=remote,
            status=failure.status,
            code=failure.code,
            reason=failure.text,
        )
