"""Message ids given on the command line: validation and selection, shared by CLI modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.cliguard import CommandFailed
from gateway.spool import valid_id


class UserError(CommandFailed):
    """A problem to report in one line on stderr (exit 1), never as a traceback."""


def parse_id(text: str, noun: str) -> str:
    """A validated message id (ids from outside never reach a path unchecked)."""
    msg_id = text.strip().upper()
    if not valid_id(msg_id):
        raise UserError(f"{text!r} is not a {noun} id")
    return msg_id


def select_ids(
    args: argparse.Namespace, all_ids: Callable[[], list[str]], directory: Path, noun: str
) -> tuple[list[str], list[str]]:
    """The ids to act on (args.ids or --all) and the ids given that do not exist."""
    if args.all and args.ids:
        raise UserError(f"give {noun} ids or --all, not both")
    if args.all:
        return all_ids(), []
    if not args.ids:
        raise UserError(f"give one or more {noun} ids, or --all")
    found: list[str] = []
    missing: list[str] = []
    for text in dict.fromkeys(args.ids):
        msg_id = parse_id(text, noun)
        (found if (directory / msg_id).exists() else missing).append(msg_id)
    return found, missing


def add_bulk_action(
    actions: Any,
    common: argparse.ArgumentParser,
    action: str,
    text: str,
    *,
    noun: str,
    ids_help: str,
    func: Callable[..., int],
) -> None:
    """A subcommand acting on ids or --all, handed to a running gateway with --wait."""
    p = actions.add_parser(
        action,
        parents=[common],
        help=f"{text}: ID... or --all",
        description=f"{action.capitalize()} {noun} messages: {text}.",
    )
    p.add_argument("ids", nargs="*", metavar="ID", help=ids_help)
    p.add_argument("--all", action="store_true", help=f"every {noun} message")
    p.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with a running gateway: how long to wait for it to take the request "
        "(default 10; an untaken request is withdrawn); 0 leaves the request and returns",
    )
    p.set_defaults(func=func)
