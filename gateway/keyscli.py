"""The `sealgate keys` command group: DKIM signing keys, and recipients' keys beside them.

`keys dkim generate` lives here. Recipient key stores (`keys pgp`, `keys smime`)
add their own groups: each module named in _KEY_MODULES exposes
`add_key_commands(keys_sub, common)` and is skipped when it is not installed,
as gateway.cli does for top-level commands.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import TYPE_CHECKING, TypeAlias

from gateway import dkim, dnsrecords
from gateway.config import Config

if TYPE_CHECKING:
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

_KEY_MODULES = (
    "gateway.pgpkeys",
    "gateway.smimekeys",
)


def add_commands(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    """Register `keys` and its groups (once, whichever module list names this)."""
    if "keys" in sub.choices:
        return
    keys = sub.add_parser(
        "keys",
        parents=[common],
        help="manage DKIM signing keys and recipients' encryption keys",
        description="Manage DKIM signing keys and recipients' encryption keys.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="KIND", required=True)
    _add_dkim(keys_sub, common)
    for name in _KEY_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # that key store is not part of this build
            raise
        module.add_key_commands(keys_sub, common)


def _add_dkim(keys_sub: SubParsers, common: argparse.ArgumentParser) -> None:
    group = keys_sub.add_parser(
        "dkim",
        parents=[common],
        help="DKIM signing keys",
        description="DKIM signing keys for the domains the gateway sends for.",
    )
    dkim_sub = group.add_subparsers(dest="dkim_command", metavar="ACTION", required=True)
    gen = dkim_sub.add_parser(
        "generate",
        parents=[common],
        help="create a signing key under data_dir/dkim/ and print the DNS record",
        description=(
            "Create a DKIM private key under data_dir/dkim/ (mode 0600), then print the "
            "DNS TXT record to publish and the configuration lines to add."
        ),
    )
    gen.add_argument("--domain", required=True, help="the sender domain, e.g. clinic.example")
    gen.add_argument("--selector", required=True, help="the key's selector, e.g. sg1")
    gen.add_argument(
        "--algorithm",
        choices=dkim.ALGORITHMS,
        default="rsa2048",
        help="rsa2048 (default; every receiver verifies it) or ed25519 (RFC 8463)",
    )
    gen.add_argument("--force", action="store_true", help="replace an existing key file")
    gen.add_argument("--json", action="store_true", help="print one JSON object instead")
    gen.set_defaults(func=_dkim_generate)


def _dkim_generate(cfg: Config, args: argparse.Namespace) -> int:
    """`keys dkim generate`: write the key, print the record and the config snippet."""
    try:
        path, value = dkim.generate_key(
            cfg.data_dir, args.domain, args.selector, args.algorithm, force=args.force
        )
    except dkim.DkimKeyError as exc:
        print(f"sealgate: {exc}", file=sys.stderr)
        return 1
    domain = dkim.ascii_domain(args.domain)
    name = f"{args.selector}._domainkey.{domain}"
    if args.json:
        out = {
            "path": str(path),
            "domain": domain,
            "selector": args.selector,
            "algorithm": args.algorithm,
            "name": name,
            "type": "TXT",
            "value": value,
        }
        print(json.dumps(out))
        return 0
    configured = any(
        dkim.ascii_domain(k.domain) == domain and k.selector == args.selector for k in cfg.dkim
    )
    print(f"Wrote the {args.algorithm} private key to {path} (mode 0600).")
    print()
    print(f"Publish this TXT record at {name}:")
    print(f"  {value}")
    print()
    print("As a zone-file line:")
    print(dnsrecords.zone_line(name, "TXT", value))
    print()
    if configured:
        print(f"The configuration already lists selector {args.selector} for {domain}.")
    else:
        print("Then add the key to the configuration and restart the gateway:")
        print("dkim:")
        print(f"  - {{domain: {domain}, selector: {args.selector}, key: {json.dumps(str(path))}}}")
    print()
    print(f"Check what is published with: sealgate dns check --domain {domain}")
    return 0
