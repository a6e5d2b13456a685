"""The `sealgate` command: parses arguments and hands each subcommand its config.

Each command module registers its own subcommands through `add_commands`, and
each subcommand function has the shape `func(cfg, args) -> exit code`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway import config as config_mod
from gateway.config import Config, ConfigError

CommandFunc = Callable[[Config, argparse.Namespace], int]

# Modules that contribute subcommands; each exposes add_commands(subparsers).
_COMMAND_MODULES = (
    "gateway.basecli",
    "gateway.queuecli",
    "gateway.keyscli",
    "gateway.dnsrecords",
    "gateway.scancli",
    "gateway.quarantinecli",
    "gateway.portalcli",
    "gateway.auditcli",
    "gateway.webhooks.cli",
    "portal.cli",
    "gateway.apikeycli",
    "api.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every module's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="configuration file (default: the embedded default, data in ./sealgate-data)",
    )
    parser = argparse.ArgumentParser(
        prog="sealgate",
        description="Secure email gateway: finds PHI, enforces encryption, signs and delivers.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.set_defaults(common_parser=common)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # that feature is not part of this build
            raise
        module.add_commands(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: CommandFunc = args.func
    try:
        cfg = config_mod.load(getattr(args, "config", None))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return 2
    # Commands that change mail or keys are recorded in the audit trail.
    from gateway.audit.admin import run_audited

    try:
        return run_audited(cfg, args, func)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
