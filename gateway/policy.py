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
import gc
import json
import logging
import os
import re
import signal
import struct
import sys
import time
from collections import Counter
from collections.abc import Sequence
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
#
# A worker is a Python process of its own that reads requests on its stdin and
# answers on its stdout, in length-prefixed frames: the event loop writes and
# reads them itself, with no pickling and no thread per scan.
#   request: struct "!II" (header length, message length), the header as JSON
#            ({"from": ..., "rcpt": [...]}), then the raw message
#   reply:   struct "!I" (length), then JSON: {"ok": decision} or {"error": type name}
# The first request carries the ruleset instead ({"text", "source", "default_name",
# "budget"}, no message); its reply is {"ready": pid} or {"failed": reason}. End of
# input tells the worker to exit.

_REQUEST = struct.Struct("!II")
# Messages up to this size are copied behind their header and written at once.
_ONE_WRITE = 256 << 10
_REPLY = struct.Struct("!I")
# The worker imports from the daemon's own import path, as multiprocessing's spawn would.
_WORKER_CODE = (
    "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
    "from gateway.policy import worker_main; worker_main()"
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def worker_main() -> None:
    """A scanning process: read the ruleset, then classify messages until input ends."""
    # The daemon stops its workers itself once inbound has drained; a terminal's
    # Ctrl-C or the service manager's SIGTERM must not cut scans short before that.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The frames own stdin and stdout: anything a library prints goes to stderr.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

    def read(n: int) -> bytes:
        data = requests.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def receive() -> tuple[Any, bytes]:
        head, size = _REQUEST.unpack(read(_REQUEST.size))
        return json.loads(read(head)), read(size)

    def reply(value: Any) -> None:
        body = _dumps(value)
        replies.write(_REPLY.pack(len(body)) + body)
        replies.flush()

    try:
        init, _ = receive()
    except (EOFError, OSError, ValueError):
        return
    try:
        ruleset = RulesSource(init["text"], init["source"], init["default_name"]).build()
        limits = scan_limits(float(init["budget"]))
        evaluate(_WARM_UP, "", ("warm-up@invalid",), ruleset, limits)
    except Exception as exc:
        with contextlib.suppress(OSError):
            reply({"failed": f"{type(exc).__name__}: {exc}"})
        return
    # The modules, lexicons and ruleset live as long as the process: out of the
    # collector's sight, its full collections no longer walk them.
    gc.collect()
    gc.freeze()
    reply({"ready": os.getpid()})
    while True:
        try:
            header, raw = receive()
        except (EOFError, OSError, ValueError):
            return  # told to stop, or the gateway went away
        result: dict[str, Any]
        try:
            result = {
                "ok": evaluate(raw, header["from"], header["rcpt"], ruleset, limits).to_json()
            }
        except Exception as exc:
            # The type only: an exception's text may quote the message.
            result = {"error": type(exc).__name__}
        try:
            reply(result)
        except OSError:
            return


class _Worker:
    """One scanning process and its pipes, driven from the event loop."""

    def __init__(self, index: int, rules: RulesSource, budget: float, start_timeout: float) -> None:
        self.index = index
        self._rules = rules
        self._budget = budget
        self._start_timeout = start_timeout
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def alive(self) -> bool:
        """True while a started process serves this slot."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The process id, while there is a process."""
        return self._proc.pid if self._proc is not None else None

    async def spawn(self) -> None:
        """Start the process and wait until it has built its ruleset."""
        await self.kill()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _WORKER_CODE,
                json.dumps(sys.path),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise PolicyStartError(f"policy worker could not start: {exc}") from None
        self._proc = proc
        init = {
            "text": self._rules.text,
            "source": self._rules.source,
            "default_name": self._rules.default_name,
            "budget": self._budget,
        }
        try:
            async with asyncio.timeout(self._start_timeout):
                status = await self._call(init, b"")
        except TimeoutError:
            await self.kill()
            raise PolicyStartError(
                f"policy worker did not start within {self._start_timeout:g}s"
            ) from None
        except (EOFError, OSError, ValueError):
            code = await self._exit_code()
            await self.kill()
            raise PolicyStartError(
                f"policy worker exited while starting (exit code {code})"
            ) from None
        if not isinstance(status, dict) or "ready" not in status:
            await self.kill()
            detail = status.get("failed") if isinstance(status, dict) else None
            raise PolicyStartError(f"policy worker failed to start: {detail}")

    async def _call(self, header: dict[str, Any], raw: bytes) -> Any:
        """Send one request and read its reply (raises EOFError or OSError on a dead pipe)."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise EOFError
        head = _dumps(header)
        frame = _REQUEST.pack(len(head), len(raw)) + head
        if len(raw) <= _ONE_WRITE:
            proc.stdin.write(frame + raw)  # one system call for most mail
        else:
            proc.stdin.write(frame)
            proc.stdin.write(raw)
        await proc.stdin.drain()
        (size,) = _REPLY.unpack(await proc.stdout.readexactly(_REPLY.size))
        return json.loads(await proc.stdout.readexactly(size))

    async def scan(self, raw: bytes, mail_from: str, rcpt_to: Sequence[str]) -> Any:
        """Classify one message: the decision's JSON, or PolicyUnavailable."""
        if not self.alive:
            # Its replacement failed to start (and is tried again after this scan).
            await self.kill()
            raise PolicyUnavailable("unavailable", "policy worker is not running")
        try:
            reply = await self._call({"from": mail_from, "rcpt": list(rcpt_to)}, raw)
        except (EOFError, OSError, ValueError):
            code = await self._exit_code()
            await self.kill()
            raise PolicyUnavailable("crashed", f"policy worker died (exit code {code})") from None
        if not isinstance(reply, dict) or "ok" not in reply:
            error = reply.get("error") if isinstance(reply, dict) else None
            raise PolicyUnavailable("error", str(error))
        return reply["ok"]

    async def _exit_code(self) -> int | None:
        """The exit code of a process whose pipe broke (it is about to be reaped)."""
        proc = self._proc
        if proc is None:
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(proc.wait(), 1.0)
        return proc.returncode

    async def stop(self) -> None:
        """Ask the process to exit; kill it if it does not within a grace period."""
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()  # end of input: the worker exits
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), _WORKER_EXIT_GRACE)
        await self.kill()

    async def kill(self) -> None:
        """End the process at once (it may be busy), reap it and forget it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        if proc.stdin is not None:
            proc.stdin.close()
        await proc.wait()


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
        self._workers = [_Worker(i, rules, timeout, start_timeout) for i in range(self._count)]
        self._idle: asyncio.Queue[_Worker] | None = None
        # Scans and replacements in flight (kept referenced until they end).
        self._tasks: set[asyncio.Task[Any]] = set()
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
        self._idle = asyncio.Queue()
        results = await asyncio.gather(*(w.spawn() for w in self._workers), return_exceptions=True)
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
        """Stop the workers (scans still running are cut short)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(w.stop() for w in self._workers), return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def classify(self, raw: bytes, mail_from: str, rcpt_to: Sequence[str]) -> Decision:
        """The decision for one message; raises PolicyUnavailable (fail closed)."""
        if self._closed or self._idle is None:
            raise PolicyUnavailable("unavailable", "policy scanner is not running")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        try:
            async with asyncio.timeout_at(deadline):
                worker = await self._idle.get()
        except TimeoutError:
            raise PolicyUnavailable(
                "timeout", f"no policy worker free within {self._timeout:g}s"
            ) from None
        # The scan is a task of its own, and the worker goes back to the pool when
        # the scan is over, not when this coroutine is: a cancelled caller must
        # not hand out a worker with a reply still on its way.
        task = loop.create_task(self._scan(worker, raw, mail_from, tuple(rcpt_to), deadline))
        self._track(task)
        value = await asyncio.shield(task)
        try:
            return Decision.from_json(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyUnavailable("error", f"unreadable decision: {type(exc).__name__}") from None

    async def _scan(
        self,
        worker: _Worker,
        raw: bytes,
        mail_from: str,
        rcpt_to: Sequence[str],
        deadline: float,
    ) -> Any:
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    return await worker.scan(raw, mail_from, rcpt_to)
            except TimeoutError:
                # Overran: the process may be stuck (a pathological regular expression,
                # say). Killing it is the only way to get the CPU back.
                await worker.kill()
                raise PolicyUnavailable(
                    "timeout", f"no decision within {self._timeout:g}s"
                ) from None
        finally:
            self._after_scan(worker)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _after_scan(self, worker: _Worker) -> None:
        """Return the worker to the pool, replacing a dead process first."""
        if self._closed or self._idle is None:
            return
        if worker.alive:
            self._idle.put_nowait(worker)
            return
        self._track(asyncio.get_running_loop().create_task(self._replace(worker)))

    async def _replace(self, worker: _Worker) -> None:
        started = time.monotonic()
        try:
            await worker.spawn()
        except PolicyStartError as exc:
            # The slot returns all the same: its next scan fails fast (451), and the
            # slot is replaced again after it.
            log.event("policy_worker_failed", logging.ERROR, worker=worker.index, reason=str(exc))
        else:
            log.event(
                "policy_worker_replaced",
                logging.WARNING,
                worker=worker.index,
                pid=worker.pid,
                seconds=round(time.monotonic() - started, 3),
            )
        finally:
            if not self._closed and self._idle is not None:
                self._idle.put_nowait(worker)


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
