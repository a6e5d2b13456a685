"""`sealgate queue list|show|retry|delete`: inspect and manage the spool.

Reading works at any time. Changes go through the running gateway when there is
one (a request file it picks up within seconds), else straight to the files
while holding the gateway's lock so that a gateway cannot start meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, TextIO

from gateway.cliguard import Command, guarded
from gateway.config import Config
from gateway.idargs import UserError as _UserError
from gateway.idargs import add_bulk_action, parse_id, select_ids
from gateway.message import QueuedMessage, RecipientStatus
from gateway.sealing import KeyFileError, MasterKey, default_key_path
from gateway.spool import (
    ALL,
    AlreadyRunning,
    ControlAction,
    Spool,
    SpoolError,
    lock_unless_running,
)

_PROG = "sealgate queue"
_REPLY_WIDTH = 60
_SLICE = 128


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `queue` and its actions on the main parser's subcommands."""
    queue = sub.add_parser(
        "queue",
        parents=[common],
        help="inspect and manage the mail queue",
        description="Inspect and manage the mail queue (also while the gateway runs).",
    )
    actions = queue.add_subparsers(dest="queue_command", metavar="ACTION", required=True)

    p = actions.add_parser(
        "list",
        parents=[common],
        help="one line per queued message",
        description="List queued messages: id, age, size, sender, pending/total "
        "recipients, next attempt and last reply.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per message and line")
    p.set_defaults(func=_guarded(cmd_list))

    p = actions.add_parser(
        "show",
        parents=[common],
        help="envelope and delivery state of one message",
        description="Show a message's envelope, per-recipient delivery state and TLS facts.",
    )
    p.add_argument("id", metavar="ID", help="queue id")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument(
        "--body",
        action="store_true",
        help="print the decrypted message exactly as queued, instead of the summary",
    )
    p.set_defaults(func=_guarded(cmd_show))

    for action, text in (
        ("retry", "try to deliver now"),
        ("delete", "remove from the queue without delivering or bouncing"),
    ):
        add_bulk_action(
            actions,
            common,
            action,
            text,
            noun="queued",
            ids_help="queue ids",
            func=_guarded(cmd_retry if action == "retry" else cmd_delete),
        )


def _guarded(func: Command) -> Command:
    return guarded(func, _PROG, {SpoolError: 1, KeyFileError: 1, AlreadyRunning: 1})


# --- formatting ---------------------------------------------------------------------


def _clean(text: str) -> str:
    # Replies and HELO names come from remote machines: keep escape sequences
    # and line breaks out of the operator's terminal.
    return "".join(c if c.isprintable() else "?" for c in text)


def _span(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _size(n: int) -> str:
    if n < 1024:
        return str(n)
    if n < 1024 * 1024:
        return f"{n / 1024:.1f}K"
    return f"{n / 1024 / 1024:.1f}M"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _sender(msg: QueuedMessage) -> str:
    return _clean(msg.envelope.mail_from) or "<>"


def _reply(r: RecipientStatus) -> str:
    code = str(r.last_code) if r.last_code is not None else ""
    return _clean(" ".join(p for p in (code, r.last_reply) if p))


def _last_reply(msg: QueuedMessage) -> str:
    for group in (msg.pending, msg.recipients):
        for r in group:
            if r.last_reply or r.last_code is not None:
                return _reply(r)
    return ""


def _next(msg: QueuedMessage, now: float) -> str:
    if not msg.pending:
        return "-"
    if msg.next_attempt <= now:
        return "now"
    return "in " + _span(msg.next_attempt - now)


def _as_json(msg: QueuedMessage, now: float) -> dict[str, Any]:
    return {
        "id": msg.id,
        "queued_at": msg.envelope.received_at,
        "age": round(max(0.0, now - msg.envelope.received_at), 3),
        "size": msg.size,
        "sender": msg.envelope.mail_from,
        "pending": len(msg.pending),
        "total": len(msg.recipients),
        "attempts": msg.attempts,
        "next_attempt": msg.next_attempt,
        "delay_warned": msg.delay_warned,
        "last_reply": _last_reply(msg),
        "client": msg.envelope.to_json()["client"],
        "smtputf8": msg.envelope.smtputf8,
        "body_8bitmime": msg.envelope.body_8bitmime,
        "is_dsn": msg.envelope.is_dsn,
        "meta": msg.meta,
        "recipients": [r.to_json() for r in msg.recipients],
    }


def _write_json(obj: Any, out: TextIO) -> None:
    out.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


# --- commands ------------------------------------------------------------------------


def _load_listing(spool: Spool) -> tuple[list[QueuedMessage], list[str]]:
    """Every message that loads, and the ids of those that exist but do not."""
    loaded, unreadable = [], []
    for msg_id in spool.ids():
        msg = spool.load(msg_id)
        if msg is not None:
            loaded.append(msg)
        elif (spool.qdir / msg_id).exists():
            unreadable.append(msg_id)
    return loaded, unreadable


def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    """List the queue like `postqueue -p`, one line per message."""
    spool = Spool(cfg.data_dir, None)
    msgs, unreadable = _load_listing(spool)
    for msg_id in unreadable:
        print(
            f"{_PROG}: warning: message {msg_id} cannot be read (see the gateway log)",
            file=sys.stderr,
        )
    now = time.time()
    out = sys.stdout
    if args.json:
        for msg in msgs:
            _write_json(_as_json(msg, now), out)
        return 0
    if not msgs:
        out.write("Mail queue is empty\n")
        return 0
    head = f"{'Queue ID':<18}  {'Age':>6}  {'Size':>6}  {'Rcpt':>7}  {'Next':<9}"
    out.write(f"{head}  Sender (last reply)\n")
    total_size = pending = 0
    for msg in msgs:
        total_size += msg.size
        pending += len(msg.pending)
        rcpt = f"{len(msg.pending)}/{len(msg.recipients)}"
        line = (
            f"{msg.id:<18}  {_span(now - msg.envelope.received_at):>6}  {_size(msg.size):>6}  "
            f"{rcpt:>7}  {_next(msg, now):<9}  {_sender(msg)}"
        )
        reply = _last_reply(msg)
        if reply:
            if len(reply) > _REPLY_WIDTH:
                reply = reply[: _REPLY_WIDTH - 3] + "..."
            line += f"  ({reply})"
        out.write(line + "\n")
    noun = "message" if len(msgs) == 1 else "messages"
    out.write(f"-- {len(msgs)} {noun}, {_size(total_size)} bytes, {pending} recipients pending\n")
    return 0


def _parse_id(text: str) -> str:
    return parse_id(text, "queue")


def _require(spool: Spool, text: str) -> QueuedMessage:
    msg_id = _parse_id(text)
    msg = spool.load(msg_id)
    if msg is None:
        if (spool.qdir / msg_id).exists():
            raise _UserError(f"message {msg_id} cannot be read (see the gateway log)")
        raise _UserError(f"no message {msg_id} in the queue")
    return msg


def cmd_show(cfg: Config, args: argparse.Namespace) -> int:
    """Print one message's envelope and delivery state, or its decrypted content."""
    if args.body:
        key = MasterKey.load(default_key_path(cfg.data_dir))
        spool = Spool(cfg.data_dir, key)
        msg = _require(spool, args.id)
        body = asyncio.run(_read_body(spool, msg.id))
        sys.stdout.flush()
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return 0
    spool = Spool(cfg.data_dir, None)
    msg = _require(spool, args.id)
    now = time.time()
    if args.json:
        _write_json(_as_json(msg, now), sys.stdout)
        return 0
    env = msg.envelope
    c = env.client
    client = " ".join(
        f"{k}={_clean(v)}"
        for k, v in (
            ("helo", c.helo),
            ("tls", c.tls),
            ("auth", c.auth_user),
            ("connector", c.connector),
        )
        if v
    )
    flags = [n for n, on in (("smtputf8", env.smtputf8), ("8bitmime", env.body_8bitmime)) if on]
    if env.is_dsn:
        flags.append("dsn")
    lines = [
        f"id:           {msg.id}",
        f"queued:       {_when(env.received_at)} ({_span(now - env.received_at)} ago)",
        f"size:         {msg.size} bytes",
        f"sender:       <{_clean(env.mail_from)}>",
        f"client:       {_clean(c.ip)} {client}".rstrip(),
        f"flags:        {' '.join(flags) or '-'}",
        f"attempts:     {msg.attempts}",
        f"next attempt: {_next(msg, now)}"
        + (f" ({_when(msg.next_attempt)})" if msg.pending and msg.next_attempt > now else ""),
        f"delay warned: {'yes' if msg.delay_warned else 'no'}",
    ]
    if msg.meta:
        lines.append(
            f"meta:         {_clean(json.dumps(msg.meta, ensure_ascii=False, default=str))}"
        )
    lines.append(f"recipients:   {len(msg.pending)} pending of {len(msg.recipients)}")
    for r in msg.recipients:
        lines.append(f"  <{_clean(r.address)}>  {r.state}  attempts={r.attempts}")
        if r.method:
            why = f" ({_clean(r.method_reason)})" if r.method_reason else ""
            lines.append(f"      method: {_clean(r.method)}{why}")
        if r.remote:
            lines.append(f"      remote: {_clean(r.remote)}")
        reply = _reply(r)
        if reply:
            lines.append(f"      reply:  {reply}")
        if r.tls:
            facts = " ".join(f"{k}={_clean(str(v))}" for k, v in r.tls.items())
            lines.append(f"      tls:    {facts}")
        elif r.attempts:
            lines.append("      tls:    none")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


async def _read_body(spool: Spool, msg_id: str) -> bytes:
    try:
        return await spool.read_body(msg_id)
    finally:
        await spool.close()


def _targets(spool: Spool, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The ids to act on and the ids given that are not queued."""
    return select_ids(args, spool.ids, spool.qdir, "queue")


def cmd_retry(cfg: Config, args: argparse.Namespace) -> int:
    """Make queued messages due for delivery now."""
    return _change(cfg, args, "retry")


def cmd_delete(cfg: Config, args: argparse.Namespace) -> int:
    """Remove queued messages without delivering them."""
    return _change(cfg, args, "delete")


def _change(cfg: Config, args: argparse.Namespace, action: ControlAction) -> int:
    spool = Spool(cfg.data_dir, None)
    ids, missing = _targets(spool, args)
    for msg_id in missing:
        print(f"{_PROG}: no message {msg_id} in the queue", file=sys.stderr)
    status = 1 if missing else 0
    if not ids:
        if args.all:
            print("Mail queue is empty")
        return status
    lock = lock_unless_running(cfg.data_dir)
    if lock is None:
        return _request(spool, action, ids, args) or status
    with lock:
        done = asyncio.run(_apply(spool, action, ids))
    if args.all:
        print(f"{action}: {_count(len(done))}")
    else:
        for msg_id in done:
            print(f"{action}: {msg_id}")
    return status


async def _apply(spool: Spool, action: ControlAction, ids: Iterable[str]) -> list[str]:
    """No gateway runs and we hold its lock: change the files directly."""
    await spool.start()
    try:

        async def one(msg_id: str) -> bool:
            msg = spool.load(msg_id)
            if msg is None:
                return False
            if action == "delete":
                await spool.remove(msg_id)
            else:
                await spool.save_state(replace(msg, next_attempt=0.0))
            return True

        done: list[str] = []
        todo = list(ids)
        # Slices of concurrent operations share directory fsyncs (group commit).
        for start in range(0, len(todo), _SLICE):
            part = todo[start : start + _SLICE]
            results = await asyncio.gather(*(one(i) for i in part))
            done.extend(i for i, ok in zip(part, results, strict=True) if ok)
        return done
    finally:
        await spool.close()


def _request(spool: Spool, action: ControlAction, ids: list[str], args: argparse.Namespace) -> int:
    """A gateway runs: ask it to act, and wait (a little) until it has."""
    paths = (
        [spool.request_control(action, ALL)]
        if args.all
        else [spool.request_control(action, msg_id) for msg_id in ids]
    )
    count = _count(len(ids))
    if args.wait <= 0:
        print(f"{action}: requested for {count}; the running gateway will act on it shortly")
        return 0
    deadline = time.monotonic() + args.wait
    while any(p.exists() for p in paths) and time.monotonic() < deadline:
        time.sleep(0.1)
    # A request nobody took in time is withdrawn: one left lying around would be
    # acted on by whichever gateway starts next, maybe days later.
    withdrawn = 0
    for p in paths:
        try:
            p.unlink()
            withdrawn += 1
        except FileNotFoundError:
            pass  # taken by the gateway after all
    if withdrawn:
        print(
            f"{_PROG}: the running gateway did not take the {action} request within "
            f"{args.wait:g}s; {'nothing' if withdrawn == len(paths) else 'not everything'} "
            "was changed",
            file=sys.stderr,
        )
        return 1
    if action == "delete":
        while any((spool.qdir / i).exists() for i in ids) and time.monotonic() < deadline:
            time.sleep(0.1)
        if any((spool.qdir / i).exists() for i in ids):
            print(f"delete: {count} being deleted by the running gateway")
            return 0
    done = "deleted" if action == "delete" else "scheduled for delivery now"
    print(f"{action}: {count} {done} by the running gateway")
    return 0


def _count(n: int) -> str:
    return f"{n} {'message' if n == 1 else 'messages'}"
