"""The basic subcommands: `run`, `check` and `hash-password`."""

from __future__ import annotations

import argparse
import getpass
import importlib
import sys
from typing import TYPE_CHECKING, TypeAlias

from gateway.config import Config

if TYPE_CHECKING:
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def add_commands(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    """Register run, check and hash-password."""
    run = sub.add_parser(
        "run",
        parents=[common],
        help="run the gateway in the foreground until SIGTERM or SIGINT",
        description="Run the gateway in the foreground until SIGTERM or SIGINT.",
    )
    run.set_defaults(func=_run)
    check = sub.add_parser(
        "check",
        parents=[common],
        help="validate the configuration (exit 0 when valid, 2 with every problem listed)",
        description="Validate the configuration: exit 0 when it is valid; otherwise print "
        "every problem (key path and reason) and exit 2.",
    )
    check.set_defaults(func=_check)
    hashpw = sub.add_parser(
        "hash-password",
        parents=[common],
        help="read a password on stdin and print an argon2 hash for smtp.users[].password_hash",
        description="Read a password on standard input (without echo on a terminal) and "
        "print its argon2id hash, for smtp.users[].password_hash.",
    )
    hashpw.set_defaults(func=_hash_password)


def _run(cfg: Config, args: argparse.Namespace) -> int:
    # Imported on use: the daemon pulls in every component, other commands need none.
    daemon = importlib.import_module("gateway.daemon")
    return int(daemon.run(cfg))


def _check(cfg: Config, args: argparse.Namespace) -> int:
    # gateway.cli has loaded and validated the file already; what it refers to is checked here.
    from gateway.policy import ruleset_problems

    problems = ruleset_problems(cfg.policy)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 2
    print("configuration OK")
    return 0


def _read_password() -> str | None:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first and getpass.getpass("Repeat password: ") != first:
            print("error: the passwords differ", file=sys.stderr)
            return None
        return first
    line = sys.stdin.readline()
    # Only the line ending is dropped: spaces can be part of a password.
    return line.removesuffix("\n").removesuffix("\r")


def _hash_password(cfg: Config, args: argparse.Namespace) -> int:
    from gateway.inbound.auth import hash_password

    password = _read_password()
    if password is None:
        return 2
    if not password:
        print("error: empty password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0
