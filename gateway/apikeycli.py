"""`sealgate apikey create|list|revoke`: keys applications use for the HTTP API.

`create` prints the key once; only its SHA-256 is stored (gateway/apikeys.py).
Creations and revocations are audit events (`api_key_created`,
`api_key_revoked`, with the key id and the acting OS user, never the key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway import apikeys, log
from gateway.apikeys import ApiKey, ApiKeyError
from gateway.config import Config
from gateway.store import open_store
from gateway.store.base import Store, StoreError

_PROG = "sealgate apikey"
T = TypeVar("T")


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register apikey create|list|revoke."""
    p = sub.add_parser(
        "apikey",
        parents=[common],
        help="keys for the HTTP API: create, list, revoke",
        description="Manage the keys applications present to the HTTP API (docs/api.md).",
    )
    cmds = p.add_subparsers(dest="apikey_command", metavar="ACTION", required=True)

    c = cmds.add_parser(
        "create",
        parents=[common],
        help="make a key and print it once",
        description="Make a key and print it once; only its hash is stored. Scopes: "
        f"{', '.join(apikeys.SCOPES)}.",
    )
    c.add_argument("--name", required=True, help="what the key is for (an application's name)")
    c.add_argument(
        "--scope",
        action="append",
        required=True,
        help="comma-separated scopes (repeatable): " + ",".join(apikeys.SCOPES),
    )
    c.add_argument(
        "--sender",
        action="append",
        default=[],
        help='envelope senders the key may use: "user@domain", "@domain" or "*" (repeatable; '
        "required with scope send)",
    )
    c.add_argument("--json", action="store_true", help="print the key and its details as JSON")
    c.set_defaults(func=_guarded(cmd_create))

    lst = cmds.add_parser("list", parents=[common], help="every key (never the secrets)")
    lst.add_argument("--json", action="store_true", help="one JSON object per key and line")
    lst.set_defaults(func=_guarded(cmd_list))

    r = cmds.add_parser("revoke", parents=[common], help="revoke a key at once, everywhere")
    r.add_argument("key_id", metavar="KEY_ID", help="the key id `apikey list` shows")
    r.set_defaults(func=_guarded(cmd_revoke))


def _guarded(
    func: Callable[[Config, argparse.Namespace], int],
) -> Callable[[Config, argparse.Namespace], int]:
    def run(cfg: Config, args: argparse.Namespace) -> int:
        try:
            return func(cfg, args)
        except (ApiKeyError, StoreError) as exc:
            print(f"{_PROG}: {exc}", file=sys.stderr)
            return 1

    run.__doc__ = func.__doc__
    return run


def _with_store(cfg: Config, work: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        store = await open_store(cfg.storage, cfg.data_dir)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


def _audited(cfg: Config, args: argparse.Namespace, work: Callable[[], int]) -> int:
    """Run work with its events going to the audit trail (unless `sealgate` already does)."""
    from gateway.audit.admin import command_path, is_admin_command

    if not cfg.audit.enabled or is_admin_command(command_path(args)):
        return work()
    from gateway.audit.recorder import AuditRecorder

    recorder = AuditRecorder(cfg)
    recorder.start()
    try:
        return work()
    finally:
        if recorder.stop():
            print(
                f"{_PROG}: warning: this action could not be recorded in the audit trail "
                f"({recorder.last_error or 'the database did not answer'})",
                file=sys.stderr,
            )


def _actor() -> str:
    from gateway.audit.admin import actor

    return f"cli:{actor()}"


def cmd_create(cfg: Config, args: argparse.Namespace) -> int:
    """Create a key and print it (the only time it is shown)."""
    scopes = apikeys.parse_scopes(args.scope)
    senders = apikeys.parse_senders(args.sender)
    actor = _actor()
    created: list[tuple[ApiKey, str]] = []

    def work() -> int:
        key, text = _with_store(
            cfg, lambda store: apikeys.create(store, args.name, scopes, senders, actor)
        )
        created.append((key, text))
        log.event(
            "api_key_created",
            key_id=key.key_id,
            key_name=key.name,
            scopes=sorted(key.scopes),
            senders=list(key.senders),
            actor=actor,
        )
        return 0

    status = _audited(cfg, args, work)
    key, text = created[0]
    if args.json:
        print(json.dumps({"key": text, **key.to_json()}))
    else:
        print(text)
        print(
            f"# key id {key.key_id}, scopes {','.join(sorted(key.scopes))}: store it now, "
            "it is not shown again",
            file=sys.stderr,
        )
    return status


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    """List keys, one line each."""
    keys = _with_store(cfg, apikeys.list_keys)
    if args.json:
        for k in keys:
            print(json.dumps(k.to_json()))
        return 0
    if not keys:
        print("No API keys")
        return 0
    print(f"{'Key id':<12}  {'Created (UTC)':<16}  {'Last used':<16}  {'State':<7}  Name (scopes)")
    for k in keys:
        state = "revoked" if k.revoked_at is not None else "active"
        name = "".join(c if c.isprintable() else "?" for c in k.name)
        print(
            f"{k.key_id:<12}  {_when(k.created_at):<16}  {_when(k.last_used_at):<16}  "
            f"{state:<7}  {name} ({','.join(sorted(k.scopes))})"
        )
    return 0


def cmd_revoke(cfg: Config, args: argparse.Namespace) -> int:
    """Revoke a key; exit 1 when there is no such key."""
    key_id = apikeys.parse_key_id(args.key_id)
    actor = _actor()
    outcome: list[bool | None] = []

    def work() -> int:
        result = _with_store(cfg, lambda store: apikeys.revoke(store, key_id, actor))
        outcome.append(result)
        if result:
            log.event("api_key_revoked", key_id=key_id, actor=actor)
        return 0 if result is not None else 1

    status = _audited(cfg, args, work)
    if outcome[0] is None:
        print(f"{_PROG}: no key {key_id}", file=sys.stderr)
    elif outcome[0]:
        print(f"{key_id}: revoked")
    else:
        print(f"{key_id}: already revoked")
    return status
