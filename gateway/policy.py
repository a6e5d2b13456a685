"""The policy stage: classify every accepted message off the event loop, then enforce.

Between inbound and the spool, each message goes to `policies.engine.evaluate`
in a worker process (the scan of attachments is CPU-bound, and a process can be
killed when it overruns; a thread cannot). The ruleset is read and validated
once, at startup; every worker builds its ruleset from that same text, so a
worker started later never sees an edited file. Failing closed: a scan that
raises, overruns `policy.timeout` or loses its worker is `PolicyUnavailable`,
which inbound answers with 451; unclassified mail is never spooled.

The DATA-time effects of a Decision on the bytes (added headers, subject tags,
application control headers) and the notice to the sender are built here too;
inbound/handler.py decides, in order, what happens to the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header, decode_header, make_header
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Literal

from gateway import log
from gateway.config import PolicyConfig
from gateway.message import ClientInfo, Envelope
from gateway.quarantine import QuarantineStore
from policies.decision import AddHeader, Decision, NotifySender, StripSubjectTag
from policies.engine import evaluate
from policies.extract import Limits
from policies.rules import DEFAULT_POLICY, RulesError, Ruleset

# How long a worker may take to start (import, build the ruleset, load lexicons).
WORKER_START_TIMEOUT = 120.0
# How long close() lets an idle worker exit by itself before killing it.
_WORKER_EXIT_GRACE = 5.0
# The warm-up message a new worker classifies before it says it is ready, so the
# first real message does not pay for loading the lexicons.
_WARM_UP = b"Subject: warm-up\r\n\r\nWarm-up message for the policy engine.\r\n"
_CONTROL_PREFIX = b"x-sealgate-"
# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with its code and CRLF.
_MAX_REPLY_TEXT = 400
_UNPRINTABLE_RE = re.compile(r"[^\x20-\x7e]+")

FailureKind = Literal["timeout", "crashed", "error", "unavailable"]


class PolicyUnavailable(Exception):
    """The message could not be classified (timeout, crashed worker, engine error)."""

    def __init__(self, kind: FailureKind, detail: str = "") -> None:
        self.kind = kind
        self.detail = detail  # an exception type name or our own words; never content
        super().__init__(f"{kind}: {detail}" if detail else kind)


class PolicyStartError(Exception):
    """The ruleset is invalid or the scanning workers could not start."""


# --- the ruleset --------------------------------------------------------------------


@dataclass(frozen=True)
class RulesSource:
    """The ruleset's YAML text as read once at startup, and where it came from."""

    text: str
    source: str
    default_name: str

    def build(self) -> Ruleset:
        """Validate and build the ruleset; raises RulesError naming file and line."""
        return Ruleset.from_yaml(self.text, source=self.source, default_name=self.default_name)


def read_rules(cfg: PolicyConfig) -> RulesSource:
    """Read the configured ruleset file (or the shipped default); raises RulesError."""
    path = Path(cfg.rules) if cfg.rules is not None else DEFAULT_POLICY
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise RulesError([f"{path}: not UTF-8 text"]) from None
    # The same naming as Ruleset.load, so `sealgate scan` reports the same policy name.
    return RulesSource(text, str(path), path.stem)


def ruleset_problems(cfg: PolicyConfig) -> list[str]:
    """Every problem of the configured ruleset as "policy.rules: FILE:LINE: reason"."""
    try:
        read_rules(cfg).build()
    except RulesError as exc:
        return [f"policy.rules: {p}" for p in exc.problems]
    return []


def scan_limits(timeout: float) -> Limits:
    """Extraction limits whose time budget leaves room inside the scan timeout.

    A message whose attachments take too long to read is then classified
    (the rest marked unscannable, which the rules treat as possibly PHI) rather
    than refused with 451 on every retry.
    """
    default = Limits()
    return Limits(timeout_s=max(0.001, min(default.timeout_s, timeout / 2)))


# --- worker processes -------------------------------------------------------------------


def _worker_main(
    conn: multiprocessing.connection.Connection, rules: RulesSource, budget: float
) -> None:
    """A scanning process: build the ruleset, then classify messages until told to stop."""
    # The daemon stops its workers itself once inbound has drained; a terminal's
    # Ctrl-C or the service manager's SIGTERM must not cut scans short before that.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        ruleset = rules.build()
        limits = scan_limits(budget)
        evaluate(_WARM_UP, "", ("warm-up@invalid",), ruleset, limits)
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
            if request is None:
                return
            mail_from, rcpt_to = request
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the gateway went away
        try:
            reply: tuple[str, Any] = (
                "ok",
                evaluate(raw, mail_from, rcpt_to, ruleset, limits).to_json(),
            )
        except Exception as exc:
            # The type only: an exception's text may quote the message.
            reply = ("error", type(exc).__name__)
        try:
            conn.send(reply)
        except OSError:
            return


class _Worker:
    """One scanning process and its pipe; its methods block, so they run in threads."""

    def __init__(
        self, ctx: Any, index: int, rules: RulesSource, budget: float, start_timeout: float
    ) -> None:
        self._ctx = ctx
        self.index = index
        self._rules = rules
        self._budget = budget
        self._start_timeout = start_timeout
        self._proc: Any = None
        self._conn: multiprocessing.connection.Connection | None = None

    @property
    def alive(self) -> bool:
        """True while a started process serves this slot."""
        return self._proc is not None and self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        """The process id, while there is a process."""
        return int(self._proc.pid) if self._proc is not None else None

    def spawn(self) -> None:
        """Start the process and wait until it has built its ruleset."""
        self.kill()
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child, self._rules, self._budget),
            name=f"sealgate-scan-{self.index}",
            daemon=True,
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        try:
            if not parent.poll(self._start_timeout):
                raise PolicyStartError(
                    f"policy worker did not start within {self._start_timeout:g}s"
                )
            status, value = parent.recv()
            if status != "ready":
                raise PolicyStartError(f"policy worker failed to start: {value}")
        except (EOFError, OSError):
            self.kill()
            raise PolicyStartError(
                f"policy worker exited while starting (exit code {proc.exitcode})"
            ) from None
        except PolicyStartError:
            self.kill()
            raise

    def scan(self, raw: bytes, mail_from: str, rcpt_to: Sequence[str], timeout: float) -> Any:
        """Classify one message: the decision's JSON, or PolicyUnavailable."""
        deadline = time.monotonic() + timeout
        conn = self._conn
        if conn is None or not self.alive:
            # Its replacement failed to start (and is tried again after this scan).
            self.kill()
            raise PolicyUnavailable("unavailable", "policy worker is not running")
        try:
            conn.send((mail_from, list(rcpt_to)))
            conn.send_bytes(raw)
            left = deadline - time.monotonic()
            if left <= 0 or not conn.poll(left):
                # Overran: the process may be stuck (a pathological regular expression,
                # say). Killing it is the only way to get the CPU back.
                self.kill()
                raise PolicyUnavailable("timeout", f"no decision within {timeout:g}s")
            status, value = conn.recv()
        except (EOFError, OSError):
            code = self._proc.exitcode if self._proc is not None else None
            self.kill()
            raise PolicyUnavailable("crashed", f"policy worker died (exit code {code})") from None
        if status != "ok":
            raise PolicyUnavailable("error", str(value))
        return value

    def stop(self) -> None:
        """Ask the process to exit; kill it if it does not within a grace period."""
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
        if self._proc is not None:
            self._proc.join(_WORKER_EXIT_GRACE)
        self.kill()

    def kill(self) -> None:
        """End the process at once (it may be busy) and forget it."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join()
            proc.close()
        if conn is not None:
            conn.close()


class Scanner:
    """A pool of scanning processes; `classify` never blocks the event loop."""

    def __init__(
        self,
        rules: RulesSource,
        *,
        workers: int,
        timeout: float,
        start_timeout: float = WORKER_START_TIMEOUT,
    ) -> None:
        self._rules = rules
        self._timeout = timeout
        self._count = max(1, workers)
        # spawn, not fork: the daemon has threads (spool I/O, logging) whose locks
        # a forked child could inherit held.
        ctx = multiprocessing.get_context("spawn")
        self._workers = [_Worker(ctx, i, rules, timeout, start_timeout) for i in range(self._count)]
        # One thread per scan in flight and one per worker being replaced.
        self._threads = ThreadPoolExecutor(
            max_workers=2 * self._count, thread_name_prefix="policy-scan"
        )
        self._idle: asyncio.Queue[_Worker] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def size(self) -> int:
        """How many worker processes scan in parallel."""
        return self._count

    def pids(self) -> list[int]:
        """Process ids of the running workers (for operators and tests)."""
        return [pid for w in self._workers if w.alive and (pid := w.pid) is not None]

    async def start(self) -> None:
        """Start every worker; raise PolicyStartError if any cannot start."""
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Queue()
        results = await asyncio.gather(
            *(self._loop.run_in_executor(self._threads, w.spawn) for w in self._workers),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.close()
            first = failures[0]
            raise (
                first
                if isinstance(first, PolicyStartError)
                else PolicyStartError(
                    f"policy workers could not start: {type(first).__name__}: {first}"
                )
            )
        for w in self._workers:
            self._idle.put_nowait(w)
        log.event(
            "policy_ready",
            workers=self._count,
            pids=self.pids(),
            timeout=self._timeout,
            policy=self._rules.source,
        )

    async def close(self) -> None:
        """Stop the workers (scans still running are cut short) and the threads."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._threads, w.stop) for w in self._workers),
            return_exceptions=True,
        )
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def classify(self, raw: bytes, mail_from: str, rcpt_to: Sequence[str]) -> Decision:
        """The decision for one message; raises PolicyUnavailable (fail closed)."""
        if self._closed or self._idle is None or self._loop is None:
            raise PolicyUnavailable("unavailable", "policy scanner is not running")
        loop = self._loop
        deadline = loop.time() + self._timeout
        try:
            async with asyncio.timeout_at(deadline):
                worker = await self._idle.get()
        except TimeoutError:
            raise PolicyUnavailable(
                "timeout", f"no policy worker free within {self._timeout:g}s"
            ) from None
        left = max(0.0, deadline - loop.time())
        try:
            cf = self._threads.submit(worker.scan, raw, mail_from, tuple(rcpt_to), left)
        except RuntimeError:
            self._idle.put_nowait(worker)
            raise PolicyUnavailable("unavailable", "policy scanner is shutting down") from None
        # The worker goes back to the pool when its thread is done, not when this
        # coroutine is: a cancelled caller must not hand out a busy worker.
        cf.add_done_callback(lambda _: self._after_scan(worker))
        value = await asyncio.wrap_future(cf)
        try:
            return Decision.from_json(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyUnavailable("error", f"unreadable decision: {type(exc).__name__}") from None

    def _after_scan(self, worker: _Worker) -> None:
        """Called in the scan's thread: return the worker, replacing a killed process first."""
        if self._closed:
            return
        if worker.alive:
            self._give_back(worker)
            return
        try:
            replacement = self._threads.submit(self._replace, worker)
        except RuntimeError:
            return  # shutting down
        replacement.add_done_callback(lambda _: self._give_back(worker))

    def _replace(self, worker: _Worker) -> None:
        if self._closed:
            return
        started = time.monotonic()
        try:
            worker.spawn()
        except PolicyStartError as exc:
            # The slot returns all the same: its next scan fails fast (451), and the
            # slot is replaced again after it.
            log.event("policy_worker_failed", logging.ERROR, worker=worker.index, reason=str(exc))
            return
        log.event(
            "policy_worker_replaced",
            logging.WARNING,
            worker=worker.index,
            pid=worker.pid,
            seconds=round(time.monotonic() - started, 3),
        )

    def _give_back(self, worker: _Worker) -> None:
        loop, idle = self._loop, self._idle
        if loop is None or idle is None or self._closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
            loop.call_soon_threadsafe(idle.put_nowait, worker)


def worker_count(cfg: PolicyConfig) -> int:
    """policy.workers, where 0 means one per CPU."""
    return cfg.workers or os.cpu_count() or 1


async def start_scanner(cfg: PolicyConfig) -> Scanner:
    """Read and validate the ruleset once, then start the workers; raises PolicyStartError."""
    try:
        rules = await asyncio.to_thread(read_rules, cfg)
        await asyncio.to_thread(rules.build)
    except RulesError as exc:
        raise PolicyStartError(
            "invalid policy ruleset: " + "; ".join(f"policy.rules: {p}" for p in exc.problems)
        ) from None
    scanner = Scanner(rules, workers=worker_count(cfg), timeout=cfg.timeout)
    await scanner.start()
    return scanner


class PolicyStage:
    """What inbound needs from the policy: a decision per message, and the quarantine."""

    def __init__(self, scanner: Scanner, quarantine: QuarantineStore) -> None:
        self._scanner = scanner
        self._quarantine = quarantine

    async def classify(self, data: bytes, mail_from: str, rcpt_to: Sequence[str]) -> Decision:
        """The decision for one message; raises PolicyUnavailable."""
        return await self._scanner.classify(data, mail_from, rcpt_to)

    async def quarantine(self, envelope: Envelope, data: bytes, meta: dict[str, Any]) -> str:
        """Hold the message (sealed, fsynced) and return its quarantine id."""
        held = await asyncio.to_thread(self._quarantine.put, envelope, data, meta)
        return held.id


# --- what the decision does to the bytes ---------------------------------------------------


def _split_header(data: bytes) -> tuple[bytes, bytes]:
    """(header section with its final CRLF, the rest from the blank line on)."""
    if data.startswith(b"\r\n"):
        return b"", data
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data, b""
    return data[: end + 2], data[end + 2 :]


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-cased name, raw bytes with folded lines and CRLF) of each header field.

    Lines that are not fields keep their place, with an empty name.
    """
    out: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n")[:-1] if head.endswith(b"\r\n") else head.split(b"\r\n"):
        raw = line + b"\r\n"
        if line[:1] in (b" ", b"\t") and out:
            name, prev = out[-1]
            out[-1] = (name, prev + raw)
            continue
        name, colon, _ = line.partition(b":")
        out.append((name.strip().lower() if colon else b"", raw))
    return out


def _unfold(raw: bytes) -> str:
    value = raw.partition(b":")[2]
    text = value.replace(b"\r\n", b"").decode("utf-8", "surrogateescape")
    return text.strip()


def _strip_tags(text: str, tags: Sequence[str]) -> str | None:
    """text without the tags (and the spaces they leave), or None if it has none."""
    lowered = text.lower()
    present = [t for t in tags if t.lower() in lowered]
    if not present:
        return None
    for tag in present:
        text = re.sub(r"[ \t]*" + re.escape(tag) + r"[ \t]*", " ", text, flags=re.IGNORECASE)
    return text.strip()


def _header_field(name: str, value: str) -> bytes:
    """A header field, RFC 2047-encoded when not ASCII, folded, ending in CRLF."""
    charset = "us-ascii" if value.isascii() else "utf-8"
    encoded = Header(value, charset, header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n".encode("ascii")


def _new_subject(raw: bytes, tags: Sequence[str]) -> bytes | None:
    """The Subject field without the tags, or None when none of them is there."""
    text = _unfold(raw)
    if "=?" in text:
        try:
            decoded = str(make_header(decode_header(text)))
        except (ValueError, LookupError, UnicodeError):
            return None  # a subject we cannot decode is left as it is
        stripped = _strip_tags(decoded, tags)
        return None if stripped is None else _header_field("Subject", stripped)
    stripped = _strip_tags(text, tags)
    if stripped is None:
        return None
    if stripped.isascii():
        return _header_field("Subject", stripped)
    # Raw 8-bit text (SMTPUTF8, or undeclared): written back in the form it came in.
    return b"Subject: " + stripped.encode("utf-8", "surrogateescape") + b"\r\n"


def rewrite(data: bytes, decision: Decision | None) -> tuple[bytes, bytes]:
    """(header fields to add, the message) as the decision says it leaves.

    Application control headers (X-Sealgate-*) are removed always: rules have
    seen them already (`header:` conditions), and they are not for recipients.
    Subject tags are stripped and headers added only for enforced actions.
    """
    added = b""
    tags: list[str] = []
    if decision is not None:
        for a in decision.actions:
            if isinstance(a, AddHeader):
                added += _header_field(a.header, a.value.replace("\r", " ").replace("\n", " "))
            elif isinstance(a, StripSubjectTag):
                tags.extend(t for t in a.tags if t)
    head, rest = _split_header(data)
    if not head:
        return added, data
    lowered = head.lower()
    if _CONTROL_PREFIX not in lowered and not (tags and b"subject" in lowered):
        return added, data
    out: list[bytes] = []
    changed = False
    for name, raw in _fields(head):
        if name.startswith(_CONTROL_PREFIX):
            changed = True
            continue
        if name == b"subject" and tags:
            new = _new_subject(raw, tags)
            if new is not None:
                out.append(new)
                changed = True
                continue
        out.append(raw)
    if not changed:
        return added, data
    return added, b"".join(out) + rest


# --- replies and log fields --------------------------------------------------------------


def _reply_text(text: str) -> str:
    clean = _UNPRINTABLE_RE.sub(" ", " ".join(text.split())).strip()
    if len(clean) > _MAX_REPLY_TEXT:
        clean = clean[: _MAX_REPLY_TEXT - 3].rstrip() + "..."
    return clean or "Message refused by policy"


def reject_reply(decision: Decision) -> str:
    """The SMTP reply refusing a message, with the reason the rule gives the sender."""
    # RFC 3463 X.7.1: delivery not authorized, message refused (by our policy).
    return f"550 5.7.1 {_reply_text(decision.reject_reason or '')}"


def log_fields(decision: Decision) -> dict[str, Any]:
    """The `policy` log event's fields: rule ids, counts, locations, masked values only."""
    by_rule = Counter(f.rule for f in decision.findings)
    return {
        "verdict": decision.verdict,
        "action": decision.action,
        "actions": [a.name for a in decision.actions],
        "min_strength": decision.min_strength,
        "matched_rules": list(decision.matched_rules),
        "shadow": decision.shadow,
        "would_apply": [a.name for a in decision.would_apply],
        "phi_in_subject": decision.phi_in_subject,
        "findings": dict(by_rule),
        "findings_total": decision.findings_total,
        "locations": [
            {"rule": f.rule, "location": f.location, "masked": f.masked} for f in decision.findings
        ],
        "policy": decision.policy,
    }


# --- notices to the sender ------------------------------------------------------------------

Outcome = Literal["queued", "quarantined", "refused"]

_OUTCOME_TEXT: dict[Outcome, str] = {
    "queued": "It was accepted for delivery (queue id {id}).",
    "quarantined": "It is held for review by your mail administrators (id {id}).",
    "refused": "It was refused and not sent to anyone.",
}


def notification(
    *,
    hostname: str,
    envelope: Envelope,
    decision: Decision,
    outcome: Outcome,
    msg_id: str | None,
    now: float | None = None,
) -> tuple[Envelope, bytes] | None:
    """A short notice to the envelope sender about a notify_sender action, or None.

    It names the rules, never what they matched, and carries nothing of the
    message but its recipients (whom the sender chose): no subject, no body.
    """
    texts = [a.message for a in decision.actions if isinstance(a, NotifySender)]
    if not texts or not envelope.mail_from or envelope.is_dsn:
        return None
    now = time.time() if now is None else now
    utf8 = not (envelope.mail_from.isascii() and all(r.isascii() for r in envelope.rcpt_to))
    lines = [
        f"This is the mail gateway at {hostname}, about a message you sent on "
        f"{format_datetime(datetime.fromtimestamp(envelope.received_at, UTC))}.",
        "",
        *(t.strip() for t in texts if t.strip()),
        "",
        _OUTCOME_TEXT[outcome].format(id=msg_id or "-"),
        "",
        "Recipients: " + ", ".join(f"<{r}>" for r in envelope.rcpt_to),
        "Policy rules: " + (", ".join(decision.matched_rules) or "-"),
        "",
    ]
    msg = EmailMessage(policy=SMTPUTF8 if utf8 else SMTP)
    msg["From"] = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    msg["To"] = f"<{envelope.mail_from}>"
    msg["Subject"] = "Notice about a message you sent"
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = make_msgid(domain=hostname)
    # RFC 3834 §5: an automatic message, so that no one auto-replies to it.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content("\n".join(lines), charset="utf-8")
    data = msg.as_bytes()
    notice = Envelope(
        mail_from="",
        rcpt_to=(envelope.mail_from,),
        received_at=now,
        client=ClientInfo(ip="127.0.0.1", helo=hostname),
        smtputf8=utf8,
        body_8bitmime=not data.isascii(),
        # Generated here: it is not scanned and never bounced (like a DSN).
        is_dsn=True,
    )
    return notice, data
