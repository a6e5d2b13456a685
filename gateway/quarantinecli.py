"""`sealgate quarantine list|show|release|delete`: messages a policy rule held for review.

Reading works at any time. Release and delete go through the running gateway
when there is one (a request file it picks up within a second), else straight
to the files while holding the gateway's lock so that a gateway cannot start
meanwhile. A released message enters the delivery queue with its policy
decision, which may still forbid plaintext delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, TextIO

from gateway.cliguard import Command, guarded
from gateway.config import Config
from gateway.idargs import UserError as _UserError
from gateway.idargs import add_bulk_action, parse_id, select_ids
from gateway.quarantine import (
    Held,
    NotQuarantined,
    QuarantineError,
    QuarantineStore,
    RequestAction,
    delete,
    release,
)
from gateway.sealing import KeyFileError, MasterKey, default_key_path
from gateway.spool import (
    ALL,
    AlreadyRunning,
    Spool,
    SpoolError,
    lock_unless_running,
)

_PROG = "sealgate quarantine"
_RULES_WIDTH = 40


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `quarantine` and its actions on the main parser's subcommands."""
    quarantine = sub.add_parser(
        "quarantine",
        parents=[common],
        help="review messages a policy rule held: list, show, release, delete",
        description="Review messages a policy rule quarantined (also while the gateway runs).",
    )
    actions = quarantine.add_subparsers(dest="quarantine_command", metavar="ACTION", required=True)

    p = actions.add_parser(
        "list",
        parents=[common],
        help="one line per quarantined message",
        description="List quarantined messages: id, age, sender, recipients, verdict and "
        "the policy rules that matched.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per message and line")
    p.set_defaults(func=_guarded(cmd_list))

    p = actions.add_parser(
        "show",
        parents=[common],
        help="envelope and policy decision of one message",
        description="Show a quarantined message's envelope and policy decision (findings are "
        "masked), or with --body the decrypted message.",
    )
    p.add_argument("id", metavar="ID", help="quarantine id")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument(
        "--body",
        action="store_true",
        help="print the decrypted message exactly as it would be delivered",
    )
    p.set_defaults(func=_guarded(cmd_show))

    for action, text in (
        ("release", "move into the delivery queue (the policy decision still applies)"),
        ("delete", "remove without delivering"),
    ):
        add_bulk_action(
            actions,
            common,
            action,
            text,
            noun="quarantined",
            ids_help="quarantine ids",
            func=_guarded(cmd_release if action == "release" else cmd_delete),
        )


def _guarded(func: Command) -> Command:
    errors: dict[type[Exception], int] = dict.fromkeys(
        (QuarantineError, SpoolError, KeyFileError, AlreadyRunning), 1
    )
    return guarded(func, _PROG, errors)


# --- formatting ---------------------------------------------------------------------


def _clean(text: str) -> str:
    # Addresses and rule texts end up on the operator's terminal: no escape sequences.
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


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _rules(held: Held) -> list[str]:
    return [str(r) for r in held.decision.get("matched_rules", [])]


def _as_json(held: Held, now: float) -> dict[str, Any]:
    out = held.to_json()
    out["age"] = round(max(0.0, now - held.quarantined_at), 3)
    out["sender"] = held.envelope.mail_from
    out["recipients"] = list(held.envelope.rcpt_to)
    out["verdict"] = held.decision.get("verdict")
    out["rules"] = _rules(held)
    return out


def _write_json(obj: Any, out: TextIO) -> None:
    out.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


def _parse_id(text: str) -> str:
    return parse_id(text, "quarantine")


def _require(store: QuarantineStore, text: str) -> Held:
    msg_id = _parse_id(text)
    held = store.load(msg_id)
    if held is None:
        raise _UserError(f"no message {msg_id} in the quarantine")
    return held


# --- commands ------------------------------------------------------------------------


def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    """List quarantined messages, one line each."""
    store = QuarantineStore(cfg.data_dir, None)
    held, unreadable = store.load_all()
    for msg_id in unreadable:
        print(f"{_PROG}: warning: message {msg_id} cannot be read", file=sys.stderr)
    now = time.time()
    out = sys.stdout
    if args.json:
        for h in held:
            _write_json(_as_json(h, now), out)
        return 0
    if not held:
        out.write("Quarantine is empty\n")
        return 0
    out.write(f"{'Quarantine ID':<18}  {'Age':>6}  {'Rcpt':>4}  {'Verdict':<9}  Sender (rules)\n")
    for h in held:
        rules = ", ".join(_rules(h)) or "-"
        if len(rules) > _RULES_WIDTH:
            rules = rules[: _RULES_WIDTH - 3] + "..."
        verdict = str(h.decision.get("verdict", "?"))
        out.write(
            f"{h.id:<18}  {_span(now - h.quarantined_at):>6}  {len(h.envelope.rcpt_to):>4}  "
            f"{_clean(verdict):<9}  {_clean(h.envelope.mail_from) or '<>'} ({_clean(rules)})\n"
        )
    noun = "message" if len(held) == 1 else "messages"
    out.write(f"-- {len(held)} {noun} quarantined\n")
    return 0


def cmd_show(cfg: Config, args: argparse.Namespace) -> int:
    """Print one message's envelope and decision, or its decrypted content."""
    if args.body:
        key = MasterKey.load(default_key_path(cfg.data_dir))
        store = QuarantineStore(cfg.data_dir, key)
        held = _require(store, args.id)
        try:
            body = store.read_body(held.id)
        except NotQuarantined:
            raise _UserError(f"no message {held.id} in the quarantine") from None
        sys.stdout.flush()
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return 0
    store = QuarantineStore(cfg.data_dir, None)
    held = _require(store, args.id)
    now = time.time()
    if args.json:
        _write_json(_as_json(held, now), sys.stdout)
        return 0
    env, d = held.envelope, held.decision
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
    lines = [
        f"id:           {held.id}",
        f"received:     {_when(env.received_at)}",
        f"quarantined:  {_when(held.quarantined_at)} ({_span(now - held.quarantined_at)} ago)",
        f"size:         {held.size} bytes",
        f"sender:       <{_clean(env.mail_from)}>",
        f"client:       {_clean(c.ip)} {client}".rstrip(),
        f"recipients:   {len(env.rcpt_to)}",
        *(f"  <{_clean(r)}>" for r in env.rcpt_to),
        f"verdict:      {_clean(str(d.get('verdict', '?')))}",
        f"rules:        {_clean(', '.join(_rules(held))) or '-'}",
        f"policy:       {_clean(str(d.get('policy', '')))}"
        + (" (shadow)" if d.get("shadow") else ""),
    ]
    for a in d.get("actions", []):
        detail = {k: v for k, v in a.items() if k != "action"}
        text = f" {json.dumps(detail, ensure_ascii=False)}" if detail else ""
        lines.append(f"  action:     {_clean(str(a.get('action')))}{_clean(text)}")
    findings = d.get("findings", [])
    total = int(d.get("findings_total", len(findings)) or len(findings))
    lines.append(f"findings:     {total}")
    for f in findings:
        lines.append(
            f"  {_clean(str(f.get('rule'))):<18} {_clean(str(f.get('masked'))):<16} "
            f"{float(f.get('score', 0)):4.2f}  {_clean(str(f.get('location')))}"
        )
    if total > len(findings):
        lines.append(f"  ... {total - len(findings)} more")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _targets(store: QuarantineStore, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The ids to act on and the ids given that are not quarantined."""
    return select_ids(args, store.ids, store.dir, "quarantine")


def cmd_release(cfg: Config, args: argparse.Namespace) -> int:
    """Move quarantined messages into the delivery queue."""
    return _change(cfg, args, "release")


def cmd_delete(cfg: Config, args: argparse.Namespace) -> int:
    """Remove quarantined messages without delivering them."""
    return _change(cfg, args, "delete")


def _change(cfg: Config, args: argparse.Namespace, action: RequestAction) -> int:
    store = QuarantineStore(cfg.data_dir, None)
    ids, missing = _targets(store, args)
    for msg_id in missing:
        print(f"{_PROG}: no message {msg_id} in the quarantine", file=sys.stderr)
    status = 1 if missing else 0
    if not ids:
        if args.all:
            print("Quarantine is empty")
        return status
    lock = lock_unless_running(cfg.data_dir)
    if lock is None:
        return _request(store, action, ids, args) or status
    with lock:
        # Only a release opens a message (to queue it); a delete needs no key.
        key = MasterKey.load(default_key_path(cfg.data_dir)) if action == "release" else None
        done = asyncio.run(_apply(cfg, key, action, ids))
    for msg_id, result in done:
        print(f"{action}: {msg_id}{result}")
    return status if len(done) == len(ids) else 1


async def _apply(
    cfg: Config, key: MasterKey | None, action: RequestAction, ids: list[str]
) -> list[tuple[str, str]]:
    """No gateway runs and we hold its lock: change the files directly."""
    store = QuarantineStore(cfg.data_dir, key)
    await asyncio.to_thread(store.prepare)
    spool = Spool(cfg.data_dir, key) if key is not None else None
    if spool is not None:
        await spool.start()
    done: list[tuple[str, str]] = []
    try:
        for msg_id in ids:
            try:
                if action == "release":
                    assert spool is not None
                    queued = await release(store, spool, msg_id)
                    done.append((msg_id, f" queued as {queued.id}"))
                elif await delete(store, msg_id):
                    done.append((msg_id, ""))
                else:
                    print(f"{_PROG}: no message {msg_id} in the quarantine", file=sys.stderr)
            except NotQuarantined:
                print(f"{_PROG}: no message {msg_id} in the quarantine", file=sys.stderr)
            except (QuarantineError, SpoolError) as exc:
                print(f"{_PROG}: {msg_id}: {exc}", file=sys.stderr)
    finally:
        if spool is not None:
            await spool.close()
    return done


def _request(
    store: QuarantineStore, action: RequestAction, ids: list[str], args: argparse.Namespace
) -> int:
    """A gateway runs: ask it to act, and wait (a little) until it has."""
    paths = [store.request(action, ALL)] if args.all else [store.request(action, i) for i in ids]
    count = f"{len(ids)} {'message' if len(ids) == 1 else 'messages'}"
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
    while any((store.dir / i).exists() for i in ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [i for i in ids if (store.dir / i).exists()]
    if left:
        print(
            f"{_PROG}: the running gateway took the request but {len(left)} of {count} "
            "are still quarantined (see the gateway log)",
            file=sys.stderr,
        )
        return 1
    done = "released into the delivery queue" if action == "release" else "deleted"
    print(f"{action}: {count} {done} by the running gateway")
    return 0
