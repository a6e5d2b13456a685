"""The `sealgate scan` command: run the policy engine on stored mail without sending it.

Inputs are .eml files, directories searched recursively for .eml and .mbox
files, and mbox files (each message reported as "FILE#N", N counting from 1).
Everything runs in this one process, message after message. With --json,
each message yields one JSON object on its own line; a message that cannot
be read or classified yields an object with "error" instead, and the scan
goes on. Exit status: 0, or 1 when anything could not be read or classified,
or 2 when the policy file is invalid.
"""

from __future__ import annotations

import argparse
import json
import mailbox
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import default as default_policy
from email.utils import getaddresses
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeAlias

from gateway.config import Config
from policies.decision import Decision
from policies.engine import evaluate
from policies.rules import RulesError, Ruleset

if TYPE_CHECKING:
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

_MAIL_SUFFIXES = (".eml", ".mbox")
# Bytes an mbox file starts with; anything else given by name is one message.
_MBOX_MAGIC = b"From "


def add_commands(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    """Register `scan`."""
    scan = sub.add_parser(
        "scan",
        parents=[common],
        help="classify .eml/mbox files with the policy engine (nothing is sent)",
        description=(
            "Run the policy engine on .eml files, directories of them (searched recursively "
            "for .eml and .mbox files) or mbox files, and report the verdict, the action and "
            "the findings (masked) of every message. Nothing is sent or stored."
        ),
    )
    scan.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="policy file (default: policy.rules from the configuration, else the shipped policy)",
    )
    scan.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per message, one per line",
    )
    scan.add_argument(
        "--sender",
        metavar="ADDRESS",
        help="envelope sender to assume (default: the message's From address)",
    )
    scan.add_argument(
        "--recipient",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="envelope recipient to assume, repeatable (default: its To and Cc addresses)",
    )
    scan.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=".eml, mbox or directory")
    scan.set_defaults(func=_scan)


@dataclass(frozen=True)
class Item:
    """One message to classify, or the reason it could not be read."""

    path: str
    raw: bytes | None = None
    error: str | None = None


def iter_items(paths: Sequence[Path]) -> Iterator[Item]:
    """Every message named by the arguments, in order (directories sorted by path)."""
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in _MAIL_SUFFIXES and p.is_file()
            )
            for p in found:
                yield from _file_items(p)
        else:
            yield from _file_items(path)


def _file_items(path: Path) -> Iterator[Item]:
    try:
        with path.open("rb") as f:
            head = f.read(len(_MBOX_MAGIC))
    except OSError as exc:
        yield Item(str(path), error=f"cannot read: {exc.strerror or exc}")
        return
    if path.suffix.lower() == ".mbox" or head == _MBOX_MAGIC:
        yield from _mbox_items(path)
        return
    try:
        yield Item(str(path), raw=path.read_bytes())
    except OSError as exc:
        yield Item(str(path), error=f"cannot read: {exc.strerror or exc}")


def _mbox_items(path: Path) -> Iterator[Item]:
    try:
        box = mailbox.mbox(path, create=False)
        keys = box.keys()
    except (OSError, mailbox.Error) as exc:
        yield Item(str(path), error=f"cannot read mbox: {getattr(exc, 'strerror', None) or exc}")
        return
    try:
        for n, key in enumerate(keys, start=1):
            where = f"{path}#{n}"
            try:
                yield Item(where, raw=box.get_bytes(key))
            except (OSError, KeyError) as exc:
                yield Item(where, error=f"cannot read: {getattr(exc, 'strerror', None) or exc}")
    finally:
        box.close()


def envelope_of(raw: bytes) -> tuple[str, list[str]]:
    """The envelope a stored message implies: From, then To and Cc addresses."""
    msg = message_from_bytes(raw, policy=default_policy)
    try:
        senders = getaddresses([str(v) for v in msg.get_all("from", [])])
        rcpts = getaddresses([str(v) for k in ("to", "cc") for v in msg.get_all(k, [])])
    except Exception:
        # Malformed address headers are the engine's to judge, not a reason to skip.
        return "", []
    mail_from = next((a for _, a in senders if a), "")
    return mail_from, [a for _, a in rcpts if a]


def result_json(path: str, d: Decision) -> dict[str, Any]:
    """The documented JSON object for one classified message."""
    return {
        "path": path,
        "verdict": d.verdict,
        "action": d.action,
        "min_strength": d.min_strength,
        "findings": [
            {
                "rule": f.rule,
                "category": f.category,
                "location": f.location,
                "masked": f.masked,
                "score": round(f.score, 3),
            }
            for f in d.findings
        ],
        "findings_total": d.findings_total,
        "matched_rules": list(d.matched_rules),
        "reasons": list(d.reasons),
        "shadow": d.shadow,
        "would_apply": [a.name for a in d.would_apply],
        "policy": d.policy,
    }


def _human(path: str, d: Decision, out: TextIO) -> None:
    strength = f" ({d.min_strength})" if d.min_strength else ""
    rules = f"  [rules: {', '.join(d.matched_rules)}]" if d.matched_rules else ""
    out.write(f"{path}: {d.verdict} -> {d.action}{strength}{rules}\n")
    if d.shadow and d.would_apply:
        out.write(f"    shadow: would {', '.join(a.name for a in d.would_apply)}\n")
    for f in d.findings:
        out.write(f"    {f.rule:<18} {f.masked:<20} {f.score:4.2f}  {f.location}\n")
    if d.findings_total > len(d.findings):
        out.write(f"    ... {d.findings_total - len(d.findings)} more findings\n")


def _configured_policy(cfg: Config) -> Path | None:
    # Scanning with the ruleset the daemon enforces is what an admin expects.
    return cfg.policy.rules


def load_ruleset(path: Path | None) -> Ruleset:
    """The policy to scan with; raises RulesError naming file and line."""
    return Ruleset.load(path) if path is not None else Ruleset.default()


def scan(
    paths: Sequence[Path],
    ruleset: Ruleset,
    *,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    sender: str | None = None,
    recipients: Sequence[str] = (),
) -> int:
    """Classify every message; returns the exit status (0, or 1 when something failed)."""
    verdicts: Counter[str] = Counter()
    failures = 0
    for item in iter_items(paths):
        if item.raw is None:
            failures += 1
            _report_error(item.path, item.error or "cannot read", as_json, out, err)
            continue
        mail_from, rcpt_to = envelope_of(item.raw)
        try:
            d = evaluate(
                item.raw,
                mail_from if sender is None else sender,
                list(recipients) or rcpt_to,
                ruleset,
            )
        except Exception as exc:
            # Exception text may quote the message; the type is enough to file a bug.
            failures += 1
            _report_error(
                item.path, f"policy engine failed: {type(exc).__name__}", as_json, out, err
            )
            continue
        verdicts[d.verdict] += 1
        if as_json:
            out.write(json.dumps(result_json(item.path, d), ensure_ascii=False) + "\n")
        else:
            _human(item.path, d, out)
        out.flush()
    if not as_json:
        total = sum(verdicts.values())
        counts = ", ".join(f"{verdicts[v]} {v}" for v in ("none", "pii", "phi", "sensitive"))
        errors = f"; {failures} could not be read" if failures else ""
        out.write(f"\n{total} messages: {counts}{errors}\n")
    return 1 if failures else 0


def _report_error(path: str, error: str, as_json: bool, out: TextIO, err: TextIO) -> None:
    if as_json:
        out.write(json.dumps({"path": path, "error": error}, ensure_ascii=False) + "\n")
        out.flush()
    else:
        err.write(f"{path}: {error}\n")


def _scan(cfg: Config, args: argparse.Namespace) -> int:
    policy = args.policy if args.policy is not None else _configured_policy(cfg)
    try:
        ruleset = load_ruleset(policy)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    try:
        return scan(
            args.paths,
            ruleset,
            as_json=args.json,
            out=sys.stdout,
            err=sys.stderr,
            sender=args.sender,
            recipients=args.recipient,
        )
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as Unix tools do, and
        # keep the interpreter's final flush from failing on the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
