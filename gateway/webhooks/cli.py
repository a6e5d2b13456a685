"""`sealgate webhooks list|test|retry`: endpoints, outbox state, a test POST, retries.

All work on the shared store directly, also while the gateway runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from gateway.config import Config, WebhookEndpoint
from gateway.store import StoreError, open_store
from gateway.webhooks import outbox
from gateway.webhooks.events import probe_event
from gateway.webhooks.sender import WebhookSetupError, client_for, post, read_secret

_PROG = "sealgate webhooks"


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `webhooks` and its actions on the main parser's subcommands."""
    webhooks = sub.add_parser(
        "webhooks",
        parents=[common],
        help="webhook endpoints and their outbox",
        description="Webhook endpoints and their outbox (also while the gateway runs).",
    )
    actions = webhooks.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "list",
        parents=[common],
        help="endpoints with their pending, delivered and failed events",
        description="One line per endpoint: name, URL host, events, and how many outbox "
        "rows are pending, delivered and failed (given up).",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per endpoint and line")
    p.set_defaults(func=cmd_list)
    p = actions.add_parser(
        "test",
        parents=[common],
        help="POST a signed test event to an endpoint now (exit 1 unless it answers 2xx)",
        description="POST a signed `test` event to the endpoint NAME and print the answer.",
    )
    p.add_argument("name", metavar="NAME", help="endpoint name (webhooks.endpoints[].name)")
    p.set_defaults(func=cmd_test)
    p = actions.add_parser(
        "retry",
        parents=[common],
        help="send given-up events again",
        description="Put events given up after webhooks.lifetime back in line, with a "
        "fresh lifetime; the running gateway sends them.",
    )
    p.add_argument("--endpoint", metavar="NAME", help="only this endpoint's events")
    p.set_defaults(func=cmd_retry)


def _endpoint(cfg: Config, name: str) -> WebhookEndpoint | None:
    return next((e for e in cfg.webhooks.endpoints if e.name == name), None)


def _host(url: str) -> str:
    # The URL's host only: a path or user info may carry a receiver's token.
    return url.partition("://")[2].split("/", 1)[0].rpartition("@")[2]


def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    """Print the endpoints and their outbox counts."""
    try:
        counts = asyncio.run(_counts(cfg))
    except StoreError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 1
    names = [e.name for e in cfg.webhooks.endpoints]
    names += sorted({n for n, _ in counts} - set(names))  # rows of removed endpoints
    for name in names:
        endpoint = _endpoint(cfg, name)
        row: dict[str, Any] = {
            "name": name,
            "host": _host(endpoint.url) if endpoint else None,
            "events": list(endpoint.events) if endpoint else None,
            "configured": endpoint is not None,
        }
        for state in (outbox.PENDING, outbox.DELIVERED, outbox.FAILED):
            row[state] = counts.get((name, state), 0)
        if args.json:
            print(json.dumps(row))
        else:
            events = ",".join(row["events"] or ["(not configured)"])
            print(
                f"{name}\t{row['host'] or '-'}\t{events}\tpending={row['pending']}"
                f"\tdelivered={row['delivered']}\tfailed={row['failed']}"
            )
    return 0


async def _counts(cfg: Config) -> dict[tuple[str, str], int]:
    store = await open_store(cfg.storage, cfg.data_dir)
    try:
        return await outbox.counts(store)
    finally:
        await store.close()


def cmd_test(cfg: Config, args: argparse.Namespace) -> int:
    """POST a test event to one endpoint."""
    endpoint = _endpoint(cfg, args.name)
    if endpoint is None:
        print(f"{_PROG}: no endpoint named {args.name!r}", file=sys.stderr)
        return 1
    try:
        status, error = asyncio.run(_test(endpoint))
    except WebhookSetupError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 1
    if error:
        print(f"{endpoint.name}: failed: {error}")
        return 1
    print(f"{endpoint.name}: delivered (HTTP {status})")
    return 0


async def _test(endpoint: WebhookEndpoint) -> tuple[int | None, str]:
    secret = read_secret(endpoint)
    event = probe_event()
    body = json.dumps(event.payload(), separators=(",", ":"), sort_keys=True).encode()
    async with client_for(endpoint) as client:
        result = await post(
            client, endpoint, secret, delivery=event.event_id, event=event.type, body=body,
            attempt=1,
        )  # fmt: skip
    return result.status, result.error


def cmd_retry(cfg: Config, args: argparse.Namespace) -> int:
    """Put given-up rows back in line."""
    try:
        count = asyncio.run(_retry(cfg, args.endpoint))
    except StoreError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 1
    print(f"{count} event(s) queued again")
    return 0


async def _retry(cfg: Config, endpoint: str | None) -> int:
    store = await open_store(cfg.storage, cfg.data_dir)
    try:
        return await outbox.retry_failed(store, time.time(), endpoint)
    finally:
        await store.close()
