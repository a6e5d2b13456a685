"""Message ids given on the command line: validation and selection, shared by CLI modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

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
