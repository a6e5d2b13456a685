"""`sealgate audit verify|head|export|hold|release-hold|holds|purge`: the audit trail.

All of them work on the configuration's shared store, also while the gateway
runs. Exit codes: 0 fine; 1 `verify` found tampering; 2 a usage or database error.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.cliguard import Command, UsageError, guarded
from gateway.config import Config, parse_duration

if TYPE_CHECKING:
    from gateway.audit.chain import Report
    from gateway.store.base import Store

T = TypeVar("T")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=-]{0,199}$")
_SHOWN_PROBLEMS = 50


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `audit` and its actions on the main parser's subcommands."""
    audit = sub.add_parser(
        "audit",
        parents=[common],
        help="check, export and manage the tamper-evident audit trail",
        description="Check, export and manage the audit trail (also while the gateway runs).",
    )
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    p = actions.add_parser(
        "verify",
        parents=[common],
        help="check the trail's hash chain (exit 1 naming each edited, deleted or moved record)",
        description="Check every record's hash and link, the purge anchor and records kept "
        "under legal hold. Exit 0 when intact, 1 when tampering is found (each place named). "
        "Prints the head (SEQ:HASH): keep it elsewhere and pass it to --expect-head later to "
        "also detect records cut off the end.",
    )
    p.add_argument(
        "--expect-head",
        metavar="SEQ:HASH",
        help="a head printed earlier: record SEQ must still exist with this hash",
    )
    p.add_argument(
        "--file", type=Path, metavar="EXPORT", help="check an exported CSV or JSON file instead"
    )
    p.set_defaults(func=_guarded(cmd_verify))

    p = actions.add_parser(
        "head",
        parents=[common],
        help="print the trail's head as SEQ:HASH (a checkpoint to keep elsewhere)",
        description="Print the last record's SEQ:HASH, for `audit verify --expect-head`.",
    )
    p.set_defaults(func=_guarded(cmd_head))

    p = actions.add_parser(
        "export",
        parents=[common],
        help="write records as CSV or JSON for compliance review",
        description="Write audit records, oldest first, as CSV or JSON. Times are ISO 8601 "
        "(a date, or a date and time; UTC unless a zone is given) or a duration meaning "
        "that long ago (7d, 12h).",
    )
    p.add_argument("--since", metavar="TIME", help="from this time (inclusive)")
    p.add_argument("--until", metavar="TIME", help="up to this time (exclusive)")
    p.add_argument("--format", choices=("csv", "json"), default="json", help="default: json")
    p.add_argument("--message-id", metavar="ID", help="only records about this message")
    p.add_argument("--event", action="append", metavar="NAME", help="only this event (repeatable)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here, not stdout")
    p.set_defaults(func=_guarded(cmd_export))

    p = actions.add_parser(
        "hold",
        parents=[common],
        help="put a message under legal hold (its records survive purges)",
        description="Keep every record about MESSAGE_ID (queue, quarantine or portal id) "
        "beyond audit.retention until release-hold.",
    )
    p.add_argument("message_id", metavar="MESSAGE_ID")
    p.add_argument("--reason", help="why (a case number; no patient data)")
    p.set_defaults(func=_guarded(cmd_hold))

    p = actions.add_parser(
        "release-hold",
        parents=[common],
        help="lift a legal hold (the next purge removes its expired records)",
        description="Lift the legal hold on MESSAGE_ID.",
    )
    p.add_argument("message_id", metavar="MESSAGE_ID")
    p.set_defaults(func=_guarded(cmd_release_hold))

    p = actions.add_parser(
        "holds",
        parents=[common],
        help="list legal holds",
        description="List the message ids under legal hold.",
    )
    p.set_defaults(func=_guarded(cmd_holds))

    p = actions.add_parser(
        "purge",
        parents=[common],
        help="remove records older than audit.retention now (the gateway does it every 6h)",
        description="Remove records older than audit.retention, except legal holds; "
        "the chain stays checkable.",
    )
    p.set_defaults(func=_guarded(cmd_purge))


def _guarded(func: Command) -> Command:
    from gateway.store.base import StoreError

    return guarded(
        func, "sealgate audit", {StoreError: 2}, os_status=2, label={StoreError: "database error: "}
    )


def _with_store(cfg: Config, work: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        from gateway.store import open_store

        store = await open_store(cfg.storage, cfg.data_dir)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


def _no_database(cfg: Config) -> Path | None:
    """The SQLite file when it does not exist yet (nothing recorded; do not create it)."""
    from gateway.store import sqlite_path

    path = sqlite_path(cfg.storage, cfg.data_dir)
    return path if path is not None and not path.exists() else None


def parse_time(text: str, now: float | None = None) -> float:
    """Unix time from ISO 8601 (UTC unless a zone is given) or a duration ago ("7d")."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            return (time.time() if now is None else now) - parse_duration(text)
        except ValueError:
            raise UsageError(
                f"{text!r} is neither a time (2026-11-01, 2026-11-01T08:00:00Z) "
                "nor a duration ago (7d)"
            ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _message_id(text: str) -> str:
    if not _ID_RE.match(text):
        raise UsageError(f"{text[:80]!r} is not a message id")
    return text


# --- verify and head -------------------------------------------------------------------


def cmd_verify(cfg: Config, args: argparse.Namespace) -> int:
    """Check the trail (or an export); print the outcome and the head."""
    from gateway.audit import trail
    from gateway.audit.chain import parse_checkpoint

    expect = None
    if args.expect_head:
        try:
            expect = parse_checkpoint(args.expect_head)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.file is not None:
        return _verify_file(args.file, expect)
    missing = _no_database(cfg)
    if missing is not None and expect is None:
        print(f"no audit trail yet ({missing} does not exist)")
        return 0
    if missing is not None:
        print(f"TAMPERED: the audit database {missing} is missing", file=sys.stdout)
        return 1
    report = _with_store(cfg, lambda store: trail.verify(store, expect))
    return _print_report(report, "audit trail")


def _verify_file(path: Path, expect: tuple[int, str] | None) -> int:
    from gateway.audit.chain import check
    from gateway.audit.exchange import ExportFormatError, read_export

    try:
        text = path.read_text(encoding="utf-8")
        records = read_export(text)
    except ExportFormatError as exc:
        raise UsageError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a UTF-8 text file") from None
    if not records:
        print(f"{path}: no records")
        return 0
    first = min(records, key=lambda r: r.seq)
    # An export may start anywhere (its first record's link is taken as given) and
    # leave records out (a window, one message): each record's hash is checked, and
    # the link between each two consecutive ones.
    report = check(records, first.seq - 1, first.prev_hash, expect, whole=False)
    return _print_report(report, str(path))


def _print_report(report: Report, what: str) -> int:
    if report.ok:
        held = f", {report.held} older kept under legal hold" if report.held else ""
        if report.gaps:
            held += f" ({report.gaps} gaps where records were not exported)"
        start = f" (after purge anchor {report.anchor_seq})" if report.anchor_seq else ""
        print(f"{what} OK: {report.checked} records checked{start}{held}")
        print(f"head {report.head}")
        return 0
    print(f"{what} TAMPERED: {len(report.problems)} problem(s)")
    for problem in report.problems[:_SHOWN_PROBLEMS]:
        print(f"  {problem}")
    if len(report.problems) > _SHOWN_PROBLEMS:
        print(f"  ... and {len(report.problems) - _SHOWN_PROBLEMS} more")
    print(f"head {report.head}")
    return 1


def cmd_head(cfg: Config, args: argparse.Namespace) -> int:
    """Print SEQ:HASH of the last record."""
    from gateway.audit import trail
    from gateway.audit.chain import GENESIS

    if _no_database(cfg) is not None:
        print(f"0:{GENESIS}")
        return 0
    seq, digest = _with_store(cfg, trail.head)
    print(f"{seq}:{digest}")
    return 0


# --- export ----------------------------------------------------------------------------


def cmd_export(cfg: Config, args: argparse.Namespace) -> int:
    """Write the selected records as CSV or JSON."""
    from gateway.audit import trail
    from gateway.audit.exchange import ExportWriter

    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    message_id = _message_id(args.message_id) if args.message_id else None
    events = set(args.event or ())

    async def export(store: Store, out: Any) -> int:
        writer = ExportWriter(out, args.format)
        async for record in trail.records(store, since=since, until=until, message_id=message_id):
            if not events or record.event in events:
                writer.write(record)
        writer.close()
        return writer.count

    def run(out: Any) -> int:
        if _no_database(cfg) is not None:
            from gateway.audit.exchange import write_export

            return write_export([], out, args.format)
        return _with_store(cfg, lambda store: export(store, out))

    if args.output is None:
        run(sys.stdout)
        return 0
    partial = args.output.with_name(args.output.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as out:
        count = run(out)
    partial.replace(args.output)
    print(f"{count} records written to {args.output}", file=sys.stderr)
    return 0


# --- legal holds and purge -------------------------------------------------------------


def cmd_hold(cfg: Config, args: argparse.Namespace) -> int:
    """Put a message id under legal hold."""
    from gateway.audit import trail
    from gateway.audit.admin import actor

    message_id = _message_id(args.message_id)
    reason = (args.reason or "").strip()[:200] or None
    added = _with_store(cfg, lambda s: trail.add_hold(s, message_id, actor(), reason))
    print(f"{message_id}: {'now under legal hold' if added else 'already under legal hold'}")
    return 0


def cmd_release_hold(cfg: Config, args: argparse.Namespace) -> int:
    """Lift a legal hold."""
    from gateway.audit import trail
    from gateway.audit.admin import actor

    message_id = _message_id(args.message_id)
    released = _with_store(cfg, lambda s: trail.release_hold(s, message_id, actor()))
    if not released:
        print(f"{message_id}: not under legal hold", file=sys.stderr)
        return 2
    print(f"{message_id}: legal hold lifted")
    return 0


def cmd_holds(cfg: Config, args: argparse.Namespace) -> int:
    """List legal holds."""
    from gateway.audit import trail
    from gateway.audit.chain import iso_time

    if _no_database(cfg) is not None:
        return 0
    for hold in _with_store(cfg, trail.holds):
        reason = f"  {hold.reason}" if hold.reason else ""
        print(f"{hold.message_id}  since {iso_time(hold.created_at)}  by {hold.created_by}{reason}")
    return 0


def cmd_purge(cfg: Config, args: argparse.Namespace) -> int:
    """Remove records past retention now."""
    from gateway.audit import trail

    if cfg.audit.retention <= 0:
        print("audit.retention is 0: records are kept forever; nothing to purge")
        return 0
    try:
        removed = _with_store(cfg, lambda s: trail.purge(s, cfg.audit.retention))
    except trail.AuditIntegrityError as exc:
        print(f"sealgate audit: {exc}; run `sealgate audit verify`", file=sys.stderr)
        return 1
    print(f"{removed} records purged")
    return 0
