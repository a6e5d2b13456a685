"""`sealgate portal revoke|list`: withdraw and review messages stored for the portal.

Both work on the shared store directly (SQLite under data_dir or PostgreSQL),
also while gateways and portals run: revoking erases the stored copies at
once, and every portal node sees that on the recipient's next click.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.cliguard import Command, guarded
from gateway.config import Config
from gateway.idargs import parse_id
from gateway.portalbox import PortalBox, PortalMessage, RevokeResult
from gateway.store import Store, StoreError, open_store, sqlite_path

_PROG = "sealgate portal"
T = TypeVar("T")


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `portal` and its actions on the main parser's subcommands."""
    portal = sub.add_parser(
        "portal",
        parents=[common],
        help="manage messages stored for the recipient portal",
        description="Manage messages stored for the recipient portal (also while the "
        "gateway runs).",
    )
    actions = portal.add_subparsers(dest="portal_command", metavar="ACTION", required=True)

    p = actions.add_parser(
        "revoke",
        parents=[common],
        help="withdraw a portal message from every recipient (exit 1 when unknown)",
        description="Withdraw a portal message: every recipient's copy is erased and its "
        "link stops working. MESSAGE_ID is the queue id the sender and the logs show.",
    )
    p.add_argument("id", metavar="MESSAGE_ID", help="queue id of the message")
    p.add_argument("--recipient", metavar="ADDRESS", help="withdraw only this recipient's copy")
    p.set_defaults(func=_guarded(cmd_revoke))

    p = actions.add_parser(
        "list",
        parents=[common],
        help="one line per stored portal copy",
        description="List portal copies: queue id, recipient, state, stored, expires, "
        "first viewed. Never shows content.",
    )
    p.add_argument("--id", metavar="MESSAGE_ID", help="only this queue id's copies")
    p.add_argument("--recipient", metavar="ADDRESS", help="only this recipient's copies")
    p.add_argument("--json", action="store_true", help="one JSON object per copy and line")
    p.set_defaults(func=_guarded(cmd_list))


def _guarded(func: Command) -> Command:
    return guarded(func, _PROG, {StoreError: 1})


def _with_box(cfg: Config, work: Callable[[PortalBox], Awaitable[T]]) -> T | None:
    """Run work against the configured store; None when there is no database yet."""
    path = sqlite_path(cfg.storage, cfg.data_dir)
    if path is not None and not path.exists():
        # Nothing was ever stored; and creating the file here (as root, say) could
        # leave the gateway's own user unable to open it.
        return None

    async def main() -> T:
        store: Store = await open_store(cfg.storage, cfg.data_dir)
        try:
            return await work(PortalBox(store, None))
        finally:
            await store.close()

    return asyncio.run(main())


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid {os.getuid()}"


def cmd_revoke(cfg: Config, args: argparse.Namespace) -> int:
    """Withdraw every copy (or one recipient's) of a queue id; exit 1 when there is none."""
    msg_id = parse_id(args.id, "message")
    by = _operator()
    result = _with_box(cfg, lambda box: box.revoke(msg_id, by, recipient=args.recipient))
    if result is None:
        result = RevokeResult(0, 0)
    whose = f" for {args.recipient}" if args.recipient else ""
    if result.found == 0:
        print(f"{_PROG}: no portal message {msg_id}{whose}", file=sys.stderr)
        return 1
    if result.revoked == 0:
        print(f"{msg_id}: already revoked ({result.found} copies{whose})")
    else:
        print(f"{msg_id}: revoked {result.revoked} of {result.found} copies{whose}")
    return 0


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def _as_json(m: PortalMessage, now: float) -> dict[str, Any]:
    return {
        "id": m.queue_id,
        "portal_id": m.id,
        "recipient": m.recipient,
        "sender": m.sender,
        "state": m.state(now),
        "sealed_link": m.sealed_link,
        "size": m.size,
        "stored": m.created_at,
        "expires": m.expires_at,
        "first_viewed": m.first_viewed_at,
        "revoked": m.revoked_at,
        "revoked_by": m.revoked_by,
    }


def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    """Print stored portal copies, oldest first (metadata only)."""
    msg_id = parse_id(args.id, "message") if args.id else None
    messages = _with_box(
        cfg, lambda box: box.list_messages(queue_id=msg_id, recipient=args.recipient)
    )
    now = time.time()
    for m in messages or []:
        if args.json:
            print(json.dumps(_as_json(m, now), ensure_ascii=False))
            continue
        mode = " sealed-link" if m.sealed_link else ""
        print(
            f"{m.queue_id}  {m.state(now):<7}  stored {_when(m.created_at)}  "
            f"expires {_when(m.expires_at)}  viewed {_when(m.first_viewed_at)}  "
            f"{m.recipient}{mode}"
        )
    return 0
