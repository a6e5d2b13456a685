"""`sealgate keys pgp import|list|remove|pending|accept|reject`: recipients' OpenPGP keys.

The keys live in the gateway's own keyring (data_dir/keys/pgp/). Every command
works while the gateway runs: the keyring and its state file are locked per
change, and the gateway reads the accepted key for an address at each delivery.
A key the gateway saw that differs from the accepted one for an address waits
in `pending` until an admin accepts or rejects it.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from gateway import log
from gateway.cliguard import Command, CommandFailed, UsageError, guarded
from gateway.config import Config
from gateway.pgp.directory import normalize_address, pgp_home
from gateway.pgp.keyring import KeyInfo, Keyring, KeyringError, normalize_fingerprint
from gateway.pgp.state import KeyState

_PROG = "sealgate keys pgp"
_MAX_KEY_FILE = 16 * 1024 * 1024


def add_key_commands(keys_sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `keys pgp` and its actions under `sealgate keys`."""
    group = keys_sub.add_parser(
        "pgp",
        parents=[common],
        help="recipients' OpenPGP public keys",
        description="Recipients' OpenPGP public keys in the gateway's own keyring.",
    )
    sub = group.add_subparsers(dest="pgp_command", metavar="ACTION", required=True)

    p = sub.add_parser(
        "import",
        parents=[common],
        help="add a recipient's public key (armored or binary) for the addresses it names",
        description="Add OpenPGP public keys from FILE ('-' for standard input), armored or "
        "binary. Each key is accepted for the e-mail addresses in its user ids, or for the "
        "addresses given with --address; it replaces any key accepted for them before.",
    )
    p.add_argument("file", metavar="FILE", help="key file, or - for standard input")
    p.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="ADDR",
        help="accept the key for this address instead of its user ids' (repeatable; the "
        "file must then hold one key)",
    )
    p.add_argument(
        "--secret",
        action="store_true",
        help="the file holds the organisation's secret key, to sign with (encryption.pgp.sign_key)",
    )
    p.set_defaults(func=_guarded(cmd_import))

    p = sub.add_parser(
        "list",
        parents=[common],
        help="the accepted key of each address, and signing keys",
        description="List each address's accepted key: fingerprint, how it was learnt, and "
        "whether it can be used (expired, revoked ...). Signing keys follow.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_guarded(cmd_list))

    p = sub.add_parser(
        "remove",
        parents=[common],
        help="forget the key of an address, or a key by fingerprint",
        description="Forget the key accepted for ADDRESS, or the key with fingerprint FPR for "
        "every address. A key no address uses any more leaves the keyring.",
    )
    p.add_argument("target", metavar="ADDRESS|FPR")
    p.set_defaults(func=_guarded(cmd_remove))

    p = sub.add_parser(
        "pending",
        parents=[common],
        help="keys seen that differ from an address's accepted key",
        description="List keys the gateway found (WKD, DNS, Autocrypt, signed mail) that "
        "differ from the key accepted for the address. They are not used until accepted.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_guarded(cmd_pending))

    for action, text in (
        ("accept", "use the pending key for ADDRESS from now on"),
        ("reject", "discard the pending key for ADDRESS and keep the accepted one"),
    ):
        p = sub.add_parser(
            action, parents=[common], help=text, description=text[0].upper() + text[1:] + "."
        )
        p.add_argument("address", metavar="ADDRESS")
        p.add_argument(
            "--fingerprint",
            metavar="FPR",
            help="which pending key, when there are several for the address",
        )
        p.set_defaults(func=_guarded(cmd_accept if action == "accept" else cmd_reject))


def _guarded(func: Command) -> Command:
    return guarded(
        func,
        _PROG,
        {KeyringError: 1, sqlite3.Error: 1},
        label={sqlite3.Error: "key state unavailable: "},
    )


def _stores(cfg: Config) -> tuple[Keyring, KeyState]:
    home = pgp_home(cfg.data_dir)
    keyring = Keyring(home / "gnupg")
    return keyring, KeyState(home / "state.sqlite")


def _clean(text: str) -> str:
    # User ids come from outside: no escape sequences on the operator's terminal.
    return "".join(c if c.isprintable() else "?" for c in text)


def _date(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts)) if ts else "-"


def _address(text: str) -> str:
    norm = normalize_address(text)
    if norm is None:
        raise UsageError(f"{text!r} is not an e-mail address")
    return norm[0]


def _read(path: str) -> bytes:
    if path == "-":
        data = sys.stdin.buffer.read(_MAX_KEY_FILE + 1)
    else:
        with Path(path).open("rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    if len(data) > _MAX_KEY_FILE:
        raise CommandFailed(f"{path} is larger than {_MAX_KEY_FILE} bytes")
    return data


def _drop_if_unused(keyring: Keyring, state: KeyState, fingerprint: str) -> None:
    if not state.addresses_of(fingerprint):
        keyring.delete(fingerprint)


# --- commands -------------------------------------------------------------------------


def cmd_import(cfg: Config, args: argparse.Namespace) -> int:
    """Import public keys (or with --secret the signing key) and accept them."""
    keyring, state = _stores(cfg)
    data = _read(args.file)
    keys = keyring.scan(data)
    if not keys:
        raise CommandFailed(f"{args.file} holds no OpenPGP key")
    if args.secret:
        return _import_secret(cfg, keyring, data, keys)
    if any(k.secret for k in keys):
        raise UsageError(
            f"{args.file} holds a secret key; recipients' keys are public. To sign with "
            "the organisation's key, import it with --secret"
        )
    addresses = [_address(a) for a in args.address]
    if addresses and len(keys) != 1:
        raise UsageError(f"--address needs a file with one key; {args.file} holds {len(keys)}")
    plan: list[tuple[KeyInfo, list[str]]] = []
    for key in keys:
        targets = addresses or list(key.emails)
        if not targets:
            raise UsageError(
                f"key {key.fingerprint} names no e-mail address; give one with --address"
            )
        plan.append((key, targets))
    for key, targets in plan:
        keyring.import_key(data, key.fingerprint)
        stored = keyring.get(key.fingerprint) or key
        status = stored.status()
        log.event("pgp_key_imported", fingerprint=key.fingerprint, addresses=targets)
        for addr in targets:
            old = state.binding(addr)
            state.bind(addr, key.fingerprint, "admin")
            note = ""
            if old is not None and old.fingerprint != key.fingerprint:
                note = f" (replaces {old.fingerprint})"
                _drop_if_unused(keyring, state, old.fingerprint)
            print(f"{addr}: {key.fingerprint}{note}")
        if status != "usable":
            print(
                f"{_PROG}: warning: key {key.fingerprint} is not usable ({status}); mail to "
                "its addresses will not be encrypted with it",
                file=sys.stderr,
            )
    return 0


def _import_secret(cfg: Config, keyring: Keyring, data: bytes, keys: list[KeyInfo]) -> int:
    secret = [k for k in keys if k.secret]
    if not secret:
        raise UsageError("--secret given but the file holds no secret key")
    for key in secret:
        keyring.import_key(data, key.fingerprint, secret=True)
        print(f"signing key: {key.fingerprint} {_clean(', '.join(key.uids))}")
    configured = normalize_fingerprint(cfg.encryption.pgp.sign_key or "")
    if configured not in {k.fingerprint for k in secret}:
        print("To sign encrypted mail with it, set in the configuration:")
        print("encryption:")
        print("  pgp:")
        print(f"    sign_key: {secret[0].fingerprint}")
    return 0


def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    """List accepted keys by address, then signing keys."""
    keyring, state = _stores(cfg)
    bindings = state.bindings()
    infos = {k.fingerprint: k for k in keyring.keys()} if bindings or keyring.home.exists() else {}
    signing = [k for k in infos.values() if k.secret]
    pending = state.pending()
    configured = normalize_fingerprint(cfg.encryption.pgp.sign_key or "")
    if args.json:
        for b in bindings:
            info = infos.get(b.fingerprint)
            _json(
                {
                    "address": b.address,
                    "fingerprint": b.fingerprint,
                    "source": b.source,
                    "added": b.added,
                    "status": info.status() if info else "missing from the keyring",
                    "expires": info.expires if info else None,
                    "uids": list(info.uids) if info else [],
                    "pending": [p.fingerprint for p in pending if p.address == b.address],
                }
            )
        for k in signing:
            _json(
                {
                    "signing_key": k.fingerprint,
                    "uids": list(k.uids),
                    "configured": k.fingerprint == configured,
                }
            )
        return 0
    if not bindings and not signing:
        print("No OpenPGP keys")
        return 0
    if bindings:
        print(f"{'Address':<36}  {'Fingerprint':<40}  {'Source':<10}  Status")
    for b in bindings:
        info = infos.get(b.fingerprint)
        status = info.status() if info else "missing from the keyring"
        if info and info.expires and status == "usable":
            status += f" until {_date(info.expires)}"
        if any(p.address == b.address for p in pending):
            status += ", changed key pending"
        print(f"{_clean(b.address):<36}  {b.fingerprint:<40}  {b.source:<10}  {status}")
    for k in signing:
        mark = " (encryption.pgp.sign_key)" if k.fingerprint == configured else ""
        print(f"signing key: {k.fingerprint} {_clean(', '.join(k.uids))}{mark}")
    if pending:
        print(f"-- {len(pending)} changed key(s) pending: sealgate keys pgp pending")
    return 0


def cmd_remove(cfg: Config, args: argparse.Namespace) -> int:
    """Forget an address's key, or a key (by fingerprint) for every address."""
    keyring, state = _stores(cfg)
    fingerprint = normalize_fingerprint(args.target)
    if fingerprint is not None:
        addresses = state.addresses_of(fingerprint)
        for addr in addresses:
            state.unbind(addr)
        deleted = keyring.home.exists() and keyring.get(fingerprint) is not None
        if deleted and not keyring.delete(fingerprint):
            raise CommandFailed(f"key {fingerprint} is a signing key; remove it with gpg")
        if not addresses and not deleted:
            raise CommandFailed(f"no key {fingerprint}")
        log.event("pgp_key_removed", fingerprint=fingerprint, addresses=addresses)
        for addr in addresses:
            print(f"removed: {addr} ({fingerprint})")
        if not addresses:
            print(f"removed: {fingerprint}")
        return 0
    addr = _address(args.target)
    old = state.unbind(addr)
    if old is None:
        raise CommandFailed(f"no key for {addr}")
    _drop_if_unused(keyring, state, old.fingerprint)
    log.event("pgp_key_removed", fingerprint=old.fingerprint, addresses=[addr])
    print(f"removed: {addr} ({old.fingerprint})")
    return 0


def cmd_pending(cfg: Config, args: argparse.Namespace) -> int:
    """List changed keys waiting for a decision."""
    _, state = _stores(cfg)
    pending = state.pending()
    if args.json:
        for p in pending:
            b = state.binding(p.address)
            _json(
                {
                    "address": p.address,
                    "fingerprint": p.fingerprint,
                    "accepted": b.fingerprint if b else None,
                    "source": p.source,
                    "seen": p.seen,
                }
            )
        return 0
    if not pending:
        print("No changed keys pending")
        return 0
    for p in pending:
        b = state.binding(p.address)
        print(
            f"{_clean(p.address)}: {p.fingerprint} from {p.source} on "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(p.seen))}"
            f" (accepted: {b.fingerprint if b else 'none'})"
        )
    print("-- accept with: sealgate keys pgp accept ADDRESS; keep the old key: reject ADDRESS")
    return 0


def _chosen(state: KeyState, args: argparse.Namespace) -> tuple[str, list[Any]]:
    addr = _address(args.address)
    pending = state.pending(addr)
    if args.fingerprint:
        fpr = normalize_fingerprint(args.fingerprint)
        if fpr is None:
            raise UsageError(f"{args.fingerprint!r} is not a fingerprint")
        pending = [p for p in pending if p.fingerprint == fpr]
    if not pending:
        raise CommandFailed(f"no pending key for {addr}")
    return addr, pending


def cmd_accept(cfg: Config, args: argparse.Namespace) -> int:
    """Use a pending key for its address from now on."""
    keyring, state = _stores(cfg)
    addr, pending = _chosen(state, args)
    if len(pending) > 1:
        choices = ", ".join(p.fingerprint for p in pending)
        raise UsageError(f"several keys pending for {addr} ({choices}); choose with --fingerprint")
    chosen = pending[0]
    keyring.import_key(chosen.keydata, chosen.fingerprint)
    old = state.binding(addr)
    state.bind(addr, chosen.fingerprint, "accepted")
    if old is not None and old.fingerprint != chosen.fingerprint:
        _drop_if_unused(keyring, state, old.fingerprint)
    log.event("pgp_key_accepted", fingerprint=chosen.fingerprint, address=addr)
    print(f"{addr}: {chosen.fingerprint}")
    return 0


def cmd_reject(cfg: Config, args: argparse.Namespace) -> int:
    """Discard pending keys for an address."""
    _, state = _stores(cfg)
    addr, pending = _chosen(state, args)
    for p in pending:
        state.reject_pending(addr, p.fingerprint)
        log.event("pgp_key_rejected", fingerprint=p.fingerprint, address=addr)
        print(f"rejected: {addr} {p.fingerprint}")
    return 0


def _json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
