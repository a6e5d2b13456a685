"""How every subcommand turns an expected failure into one line on stderr and an exit status.

A command raises; the guard prints "sealgate WORDS: reason" and returns the
status the exception type maps to (1: it did not work, 2: it was asked
wrongly), so no admin ever sees a traceback for a missing file, a stopped
database or a bad argument. A reader that goes away (`... | head`) is not an
error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping

from gateway.config import Config

Command = Callable[[Config, argparse.Namespace], int]


class UsageError(Exception):
    """The command was asked for something it cannot do as asked (exit 2)."""


class CommandFailed(Exception):
    """The command could not do what it was asked (exit 1)."""


def stdout_closed() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def guarded(
    func: Command,
    prog: str,
    statuses: Mapping[type[Exception], int] | None = None,
    *,
    os_status: int = 1,
    label: Mapping[type[Exception], str] | None = None,
) -> Command:
    """func, with expected exceptions reported as "prog: reason" and an exit status.

    statuses maps further exception types to their exit status (checked in
    order); label optionally prefixes a type's reason ("database error: ...").
    """
    table: dict[type[Exception], int] = {UsageError: 2, CommandFailed: 1, **(statuses or {})}
    prefixes = dict(label or {})

    def run(cfg: Config, args: argparse.Namespace) -> int:
        try:
            return func(cfg, args)
        except BrokenPipeError:
            stdout_closed()
            return 0
        except Exception as exc:
            for kind, status in table.items():
                if isinstance(exc, kind):
                    prefix = next((p for k, p in prefixes.items() if isinstance(exc, k)), "")
                    print(f"{prog}: {prefix}{exc}", file=sys.stderr)
                    return status
            if isinstance(exc, OSError):
                where = f" ({exc.filename})" if exc.filename else ""
                print(f"{prog}: {exc.strerror or exc}{where}", file=sys.stderr)
                return os_status
            raise

    run.__doc__ = func.__doc__
    return run
