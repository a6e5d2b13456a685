"""`sealgate keys smime import|list|remove`: recipients' S/MIME certificates.

The store lives under data_dir/keys/smime (gateway.smime.store); every command
works while the gateway runs: writes take the store's lock and replace the
index atomically, and the gateway notices the new index on its next lookup.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from gateway import log
from gateway.cliguard import Command, guarded
from gateway.config import Config
from gateway.smime.store import (
    CertificateError,
    CertInfo,
    CertStore,
    load_certificates,
    normalize_address,
    normalize_fingerprint,
)

if TYPE_CHECKING:
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

_PROG = "sealgate keys smime"


def add_key_commands(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    """Register `keys smime` and its actions on the `keys` subcommands."""
    group = sub.add_parser(
        "smime",
        parents=[common],
        help="recipients' S/MIME certificates: import, list, remove",
        description="Recipients' S/MIME certificates, used to encrypt protected mail to them.",
    )
    actions = group.add_subparsers(dest="smime_command", metavar="ACTION", required=True)

    p = actions.add_parser(
        "import",
        parents=[common],
        help="add certificates from files (PEM, DER, or a .p7b/.p7c bundle)",
        description=(
            "Add recipients' certificates from files: PEM (one or more certificates), DER, "
            "or a PKCS#7 bundle (.p7b/.p7c, PEM or DER); '-' reads standard input. A "
            "certificate is kept when it can encrypt mail: an email address, an RSA key of "
            "at least 2048 bits, key usage allowing key encipherment, extended key usage "
            "(if any) naming emailProtection, valid now. CA certificates in a bundle are "
            "skipped."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="certificate file, or - for stdin")
    p.add_argument("--json", action="store_true", help="one JSON object per certificate and line")
    p.set_defaults(func=_guarded(cmd_import))

    p = actions.add_parser(
        "list",
        parents=[common],
        help="one line per stored certificate",
        description="List stored certificates: fingerprint, status, expiry, source, addresses.",
    )
    p.add_argument("address", nargs="?", metavar="ADDRESS", help="only this address's")
    p.add_argument("--json", action="store_true", help="one JSON object per certificate and line")
    p.set_defaults(func=_guarded(cmd_list))

    p = actions.add_parser(
        "remove",
        parents=[common],
        help="remove certificates by fingerprint or by address",
        description=(
            "Remove certificates: a SHA-256 fingerprint (as `list` shows it; colons allowed) "
            "removes that certificate, an email address removes every certificate for it."
        ),
    )
    p.add_argument("targets", nargs="+", metavar="FINGERPRINT|ADDRESS")
    p.set_defaults(func=_guarded(cmd_remove))


def _guarded(func: Command) -> Command:
    return guarded(func, _PROG, {CertificateError: 1})


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    return Path(name).read_bytes()


def cmd_import(cfg: Config, args: argparse.Namespace) -> int:
    """`keys smime import FILE...`: add every usable certificate the files hold."""
    store = CertStore(cfg.data_dir)
    failed = False
    for name in args.files:
        try:
            certs = load_certificates(_read(name))
        except (CertificateError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            print(f"{_PROG}: {name}: {reason}", file=sys.stderr)
            failed = True
            continue
        kept = 0
        for cert in certs:
            subject = cert.subject.rfc4514_string() or "(empty subject)"
            try:
                info, new = store.add(cert, "import")
            except CertificateError as exc:
                # A bundle's CA certificates are expected; say so without failing the file.
                print(f"{_PROG}: {name}: skipped {subject}: {exc}", file=sys.stderr)
                continue
            kept += 1
            if new:
                log.event(
                    "smime_certificate_imported",
                    fingerprint=info.fingerprint,
                    emails=list(info.emails),
                    not_after=_day(info.not_after),
                )
            if args.json:
                print(json.dumps(_entry(info, time.time()) | {"new": new}))
            else:
                verb = "Imported" if new else "Already present:"
                until = _day(info.not_after)
                print(f"{verb} {info.fingerprint} for {', '.join(info.emails)} (until {until})")
        if not kept:
            print(f"{_PROG}: {name}: no usable certificate", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    """`keys smime list [ADDRESS]`: the stored certificates, newest expiry first."""
    entries = list(CertStore(cfg.data_dir).read_index().values())
    if args.address:
        addr = normalize_address(args.address)
        entries = [e for e in entries if addr in e.emails]
    entries.sort(key=lambda e: (e.emails, -e.not_after))
    now = time.time()
    for info in entries:
        if args.json:
            print(json.dumps(_entry(info, now)))
        else:
            print(
                f"{info.fingerprint}  {_status(info, now):<13} {_day(info.not_after)}  "
                f"{info.source:<7}  {', '.join(info.emails)}"
            )
    if args.address and not entries:
        print(f"{_PROG}: no certificate for {args.address}", file=sys.stderr)
        return 1
    return 0


def cmd_remove(cfg: Config, args: argparse.Namespace) -> int:
    """`keys smime remove FINGERPRINT|ADDRESS...`: drop certificates from the store."""
    store = CertStore(cfg.data_dir)
    entries = store.read_index()
    chosen: list[str] = []
    missing: list[str] = []
    for target in args.targets:
        fp = normalize_fingerprint(target)
        if fp is not None:
            found = [fp] if fp in entries else []
        elif "@" in target:
            addr = normalize_address(target)
            found = [f for f, info in entries.items() if addr in info.emails]
        else:
            print(f"{_PROG}: {target!r} is neither a fingerprint nor an address", file=sys.stderr)
            return 2
        if not found:
            missing.append(target)
        chosen.extend(f for f in found if f not in chosen)
    for info in store.remove(chosen):
        log.event(
            "smime_certificate_removed", fingerprint=info.fingerprint, emails=list(info.emails)
        )
        print(f"Removed {info.fingerprint} ({', '.join(info.emails)})")
    for target in missing:
        print(f"{_PROG}: no certificate for {target}", file=sys.stderr)
    return 1 if missing else 0


def _status(info: CertInfo, now: float) -> str:
    if now >= info.not_after:
        return "expired"
    if now < info.not_before:
        return "not-yet-valid"
    return "valid"


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _entry(info: CertInfo, now: float) -> dict[str, Any]:
    out = info.to_json()
    out["status"] = _status(info, now)
    for key in ("not_before", "not_after", "added"):
        out[key] = datetime.fromtimestamp(out[key], UTC).isoformat().replace("+00:00", "Z")
    return out
