"""Administrative commands in the audit trail: who ran which one, on what, with what result.

`sealgate` runs every command through run_audited(). For commands that change
mail or keys (queue retry/delete, quarantine release/delete, key imports and
removals, pending key decisions, portal revocations, audit purges) it records an `admin_action`
(command, acting OS user, the ids or domain it named, exit status) and also the
audited events the command itself logs. Other commands run untouched.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
import time
from collections.abc import Callable
from typing import Any

from gateway.audit.trail import Entry
from gateway.config import Config

# Command paths (as typed) that are admin actions; "*" matches any one word.
ADMIN_COMMANDS = (
    ("queue", "retry"),
    ("queue", "delete"),
    ("quarantine", "release"),
    ("quarantine", "delete"),
    ("keys", "*", "import"),
    ("keys", "*", "remove"),
    ("keys", "pgp", "accept"),
    ("keys", "pgp", "reject"),
    ("keys", "dkim", "generate"),
    ("portal", "revoke"),
    ("audit", "purge"),
    ("webhooks", "retry"),
)
# Arguments worth keeping: ids, addresses, domains, fingerprints; never file names,
# file contents or secrets.
_ID_ARGS = ("ids", "id", "message_id")
_DETAIL_ARGS = (
    "domain",
    "selector",
    "address",
    "recipient",
    "target",
    "targets",
    "fingerprint",
    "all",
)
_MAX_IDS = 100
_MAX_LEN = 128


def command_path(args: argparse.Namespace) -> tuple[str, ...]:
    """The words of the subcommand run, e.g. ("keys", "pgp", "import")."""
    words: list[str] = []
    name = getattr(args, "command", None)
    while isinstance(name, str):
        words.append(name)
        name = getattr(args, f"{name}_command", None)
    return tuple(words)


def is_admin_command(path: tuple[str, ...]) -> bool:
    """True when path names a command that changes mail, keys or the trail."""
    return any(
        len(path) == len(pattern) and all(p in ("*", w) for p, w in zip(pattern, path, strict=True))
        for pattern in ADMIN_COMMANDS
    )


def actor() -> str:
    """Who runs this process: the OS user, and the user behind sudo when there is one."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid {uid}"
    sudo = os.environ.get("SUDO_USER")
    return f"{name} (sudo by {sudo})" if sudo and sudo != name else name


def action_fields(path: tuple[str, ...], args: argparse.Namespace, status: int) -> dict[str, Any]:
    """The admin_action record's fields for a finished command."""
    fields: dict[str, Any] = {"command": " ".join(path), "actor": actor(), "status": status}
    ids: list[str] = []
    for name in _ID_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            ids.append(value)
        elif isinstance(value, list):
            ids += [v for v in value if isinstance(v, str)]
    if ids:
        fields["ids"] = [i[:_MAX_LEN] for i in ids[:_MAX_IDS]]
    for name in _DETAIL_ARGS:
        value = getattr(args, name, None)
        if value is True or (isinstance(value, str) and value):
            fields[name] = value[:_MAX_LEN] if isinstance(value, str) else value
        elif isinstance(value, list) and value:
            fields[name] = [str(v)[:_MAX_LEN] for v in value[:_MAX_IDS]]
    return fields


def run_audited(
    cfg: Config, args: argparse.Namespace, func: Callable[[Config, argparse.Namespace], int]
) -> int:
    """Run a subcommand; when it is an admin action, record it (and its events)."""
    path = command_path(args)
    if not cfg.audit.enabled or not is_admin_command(path):
        return func(cfg, args)
    from gateway.audit.recorder import AuditRecorder

    recorder = AuditRecorder(cfg)
    recorder.start()
    status = 1
    try:
        status = func(cfg, args)
    finally:
        recorder.add(Entry(time.time(), "admin_action", action_fields(path, args, status)))
        unwritten = recorder.stop()
        if unwritten:
            print(
                "warning: this action could not be recorded in the audit trail "
                f"({recorder.last_error or 'the database did not answer'})",
                file=sys.stderr,
            )
    return status
