"""The gateway's own OpenPGP keyring: a GnuPG home under data_dir/keys/pgp/.

Every method here runs gpg and blocks: call them in a thread. gpg is told
never to look keys up on its own (no keyservers, no WKD): the gateway decides
which keys it trusts and always names the key to use by fingerprint.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import gnupg

# python-gnupg logs the data it passes to gpg at debug level: message content
# must never reach our log, whatever level the gateway runs at.
logging.getLogger("gnupg").setLevel(logging.ERROR)

# gpg's own discovery would bypass the trust decisions made in gateway.pgp.directory.
_GPG_OPTIONS = [
    "--no-auto-key-retrieve",
    "--auto-key-locate",
    "clear,local",
    "--no-greeting",
    "--no-permission-warning",
    "--keyid-format",
    "long",
]
_FPR_RE = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")
# Validity letters (gpg DETAILS, field 2) that make a key unusable whatever its flags.
_BAD_VALIDITY = {"e": "expired", "r": "revoked", "i": "invalid", "d": "disabled", "n": "invalid"}


class KeyringError(Exception):
    """gpg could not do what was asked; the text names the operation, never any content."""


def normalize_fingerprint(text: str) -> str | None:
    """The fingerprint in upper-case hex without spaces, or None when text is not one."""
    value = "".join(text.split()).upper().removeprefix("0X")
    return value if _FPR_RE.fullmatch(value) else None


@dataclass(frozen=True)
class KeyInfo:
    """What gpg reports about one key (public, or with secret part when secret is set)."""

    fingerprint: str
    uids: tuple[str, ...]
    created: float
    expires: float | None
    validity: str
    capabilities: str
    secret: bool = False

    @property
    def emails(self) -> tuple[str, ...]:
        """The addresses the user ids name, lower-cased."""
        out: list[str] = []
        for uid in self.uids:
            _, addr = parseaddr(uid)
            if not addr and "@" in uid and " " not in uid.strip():
                addr = uid.strip()
            if addr and "@" in addr:
                addr = addr.lower()
                if addr not in out:
                    out.append(addr)
        return tuple(out)

    def status(self, now: float | None = None) -> str:
        """'usable', or why the key cannot be encrypted to (expired, revoked, ...)."""
        bad = _BAD_VALIDITY.get(self.validity[:1])
        if bad:
            return bad
        if self.expires is not None and self.expires <= (time.time() if now is None else now):
            return "expired"
        if "D" in self.capabilities:
            return "disabled"
        # Upper-case letters on the primary key are the usable capabilities of the
        # whole key, subkeys included (gpg DETAILS, field 12).
        if "E" not in self.capabilities:
            return "no encryption subkey"
        return "usable"

    @property
    def usable(self) -> bool:
        """Whether a message can be encrypted to this key now."""
        return self.status() == "usable"


def _timestamp(text: str) -> float | None:
    text = (text or "").strip()
    if not text or not text.isdigit():
        return None
    return float(text)


def _info(raw: dict[str, Any], secret: bool = False) -> KeyInfo | None:
    fpr = normalize_fingerprint(str(raw.get("fingerprint") or ""))
    if fpr is None:
        return None
    return KeyInfo(
        fingerprint=fpr,
        uids=tuple(str(u) for u in raw.get("uids", [])),
        created=_timestamp(str(raw.get("date", ""))) or 0.0,
        expires=_timestamp(str(raw.get("expires", ""))),
        validity=str(raw.get("trust", "") or ""),
        capabilities=str(raw.get("cap", "") or ""),
        secret=secret,
    )


def make_home(path: Path) -> None:
    """Create a GnuPG home (and its parents) readable by the gateway's user only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.mkdir(exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


class Keyring:
    """python-gnupg on one GnuPG home; blocking, so callers run it in a thread.

    Public-key work (scan, import, list, encrypt) runs with --no-autostart: it
    needs no gpg-agent, and none is left running after a `sealgate keys` command.
    Only secret-key work (signing, importing the signing key) starts the agent.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self._plain: gnupg.GPG | None = None
        self._agent: gnupg.GPG | None = None

    def _make(self, extra: list[str]) -> gnupg.GPG:
        make_home(self.home)
        try:
            g = gnupg.GPG(gnupghome=str(self.home), options=[*_GPG_OPTIONS, *extra])
        except (OSError, ValueError) as exc:
            raise KeyringError(f"cannot run gpg: {exc}") from None
        g.encoding = "utf-8"
        g.decode_errors = "replace"
        return g

    def _g(self) -> gnupg.GPG:
        if self._plain is None:
            self._plain = self._make(["--no-autostart"])
        return self._plain

    def _with_agent(self) -> gnupg.GPG:
        if self._agent is None:
            self._agent = self._make([])
        return self._agent

    def scan(self, data: bytes) -> list[KeyInfo]:
        """The keys in data (armored or binary) without importing them."""
        if not data.strip():
            return []
        raw = self._g().scan_keys_mem(data)
        keys: list[KeyInfo] = []
        for entry in raw:
            info = _info(entry, secret=entry.get("type") == "sec")
            if info is not None:
                keys.append(info)
        return keys

    def import_key(
        self, data: bytes, fingerprint: str | None = None, *, secret: bool = False
    ) -> list[str]:
        """Import data (only the key fingerprint when given); the fingerprints imported.

        secret: the data holds a secret key to keep (the organisation's signing key).
        """
        if fingerprint is not None and not secret:
            data = self._only(data, fingerprint)
        g = self._with_agent() if secret else self._g()
        # Without an agent (--no-autostart) gpg cannot store secret material: a
        # recipient's key file that holds some brings only its public key in.
        result = g.import_keys(data, extra_args=["--import-options", "import-clean"])
        found = [f for f in (normalize_fingerprint(x or "") for x in result.fingerprints) if f]
        if not found:
            raise KeyringError("gpg imported no key")
        return list(dict.fromkeys(found))

    def _only(self, data: bytes, fingerprint: str) -> bytes:
        """One public key out of data that may hold several: sorted out in a scratch home."""
        keys = self.scan(data)
        if fingerprint not in {k.fingerprint for k in keys}:
            raise KeyringError(f"key {fingerprint} is not in the data")
        if len(keys) == 1 and not keys[0].secret:
            return data
        with tempfile.TemporaryDirectory(prefix="sgpgp-") as scratch:
            other = gnupg.GPG(gnupghome=scratch, options=[*_GPG_OPTIONS, "--no-autostart"])
            other.import_keys(data)
            out = other.export_keys(fingerprint, armor=False)
        if not isinstance(out, bytes) or not out:
            raise KeyringError(f"could not separate key {fingerprint}")
        return out

    def get(self, fingerprint: str) -> KeyInfo | None:
        """The key with this fingerprint in the keyring, or None."""
        for entry in self._g().list_keys(keys=[fingerprint]):
            info = _info(entry)
            if info is not None and info.fingerprint == fingerprint:
                return replace(info, secret=self._has_secret(entry))
        return None

    def _has_secret(self, entry: dict[str, Any]) -> bool:
        # gpg-agent keeps one file per secret key, named by keygrip; looking there
        # needs no agent (listing secret keys through gpg would start one).
        grips = [str(entry.get("keygrip") or "")]
        grips += [str(sub[3] or "") for sub in entry.get("subkeys", [])]
        store = self.home / "private-keys-v1.d"
        return any(g and (store / f"{g}.key").exists() for g in grips)

    def keys(self) -> list[KeyInfo]:
        """Every public key in the keyring (secret set where we also hold the secret key)."""
        out: list[KeyInfo] = []
        for entry in self._g().list_keys():
            info = _info(entry)
            if info is not None:
                out.append(replace(info, secret=self._has_secret(entry)))
        return out

    def export(self, fingerprint: str) -> bytes:
        """The public key, binary."""
        out = self._g().export_keys(fingerprint, armor=False)
        if not isinstance(out, bytes) or not out:
            raise KeyringError(f"key {fingerprint} is not in the keyring")
        return out

    def delete(self, fingerprint: str) -> bool:
        """Remove a public key (never a key whose secret part we hold); whether it went."""
        info = self.get(fingerprint)
        if info is None or info.secret:
            return False
        result = self._g().delete_keys(fingerprint)
        return str(result) == "ok"

    def encrypt(self, data: bytes, fingerprint: str, sign: str | None = None) -> bytes:
        """Encrypt (and sign, in the same pass) data to one key; ASCII-armored."""
        # --trust-model always: the caller only names keys the gateway has accepted;
        # gpg's web of trust knows nothing of those decisions.
        g = self._with_agent() if sign else self._g()
        result = g.encrypt(
            data,
            [fingerprint],
            sign=sign,
            always_trust=True,
            armor=True,
            extra_args=["--no-auto-key-retrieve"],
        )
        if not result.ok or not result.data:
            raise KeyringError(f"gpg could not encrypt: {result.status or 'failed'}")
        return bytes(result.data)

    def verify_with(self, keydata: bytes, signed: bytes, signature: bytes) -> str | None:
        """The primary fingerprint of the key in keydata if it made signature over signed."""
        with tempfile.TemporaryDirectory(prefix="sgpgp-") as scratch:
            other = gnupg.GPG(gnupghome=scratch, options=[*_GPG_OPTIONS, "--no-autostart"])
            other.import_keys(keydata)
            sig_path = Path(scratch) / "message.sig"
            sig_path.write_bytes(signature)
            verified = other.verify_data(str(sig_path), signed)
        if not verified.valid:
            return None
        return normalize_fingerprint(str(verified.pubkey_fingerprint or ""))

    def close(self) -> None:
        """Stop the gpg-agent this home may have started (used for signing)."""
        if self.home.exists():
            _kill_agent(str(self.home))


def _kill_agent(home: str) -> None:
    try:
        subprocess.run(
            ["gpgconf", "--homedir", home, "--kill", "gpg-agent"],
            check=False,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        pass  # no agent to stop, or gpgconf missing: nothing is left running then
