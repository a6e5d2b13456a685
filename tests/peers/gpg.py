"""OpenPGP users for tests: real gpg homes holding a secret key, as a recipient's client would.

Keys are ed25519 (signing) with a cv25519 encryption subkey and no passphrase,
made with `gpg --quick-gen-key` in well under a second.
"""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
from dataclasses import dataclass
from email.message import Message
from pathlib import Path


def gpg(home: Path, *args: str, data: bytes | None = None, check: bool = True) -> bytes:
    """Run gpg in batch mode on home; stdout (stderr is in the error when check fails)."""
    proc = subprocess.run(
        [
            "gpg",
            "--homedir",
            str(home),
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            *args,
        ],
        input=data,
        capture_output=True,
        check=False,
        timeout=60,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


@dataclass
class GpgUser:
    """One person's gpg home with their key pair."""

    home: Path
    address: str
    fingerprint: str

    @classmethod
    def create(
        cls,
        home: Path,
        address: str,
        name: str = "Test User",
        expire: str = "1y",
        encrypt: bool = True,
    ) -> GpgUser:
        """Make a home and a key pair for address (expire as gpg takes it, e.g. 1y or seconds=5)."""
        home.mkdir(parents=True, mode=0o700)
        os.chmod(home, 0o700)
        gpg(home, "--quick-gen-key", f"{name} <{address}>", "ed25519", "sign", expire)
        listing = gpg(home, "--with-colons", "--list-secret-keys").decode()
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
        if encrypt:
            gpg(home, "--quick-add-key", fpr, "cv25519", "encr", expire)
        return cls(home, address, fpr)

    def public_key(self, armor: bool = False) -> bytes:
        """The public key, binary or armored."""
        return gpg(self.home, *(["--armor"] if armor else []), "--export", self.fingerprint)

    def secret_key(self) -> bytes:
        """The secret key, armored (for the organisation's signing key)."""
        return gpg(self.home, "--armor", "--export-secret-keys", self.fingerprint)

    def import_key(self, data: bytes) -> None:
        """Add someone's public key to this home."""
        gpg(self.home, "--import", data=data)

    def decrypt(self, data: bytes) -> tuple[bytes, str]:
        """The plaintext of an OpenPGP message and gpg's status lines."""
        proc = subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--status-fd", "2", "--decrypt"],
            input=data,
            capture_output=True,
            check=False,
            timeout=60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"gpg --decrypt failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout, proc.stderr.decode(errors="replace")

    def revoke(self) -> bytes:
        """Revoke the key in this home; the revoked public key."""
        cert = self.home / "openpgp-revocs.d" / f"{self.fingerprint}.rev"
        text = cert.read_bytes().replace(b":-----BEGIN", b"-----BEGIN")
        gpg(self.home, "--import", data=text)
        return self.public_key()

    def close(self) -> None:
        """Stop the gpg-agent this home started."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
            timeout=10,
        )


def pgp_mime_parts(data: bytes) -> tuple[Message, bytes]:
    """The outer message of a PGP/MIME message (RFC 3156) and its armored payload, checked."""
    outer = email.message_from_bytes(data, policy=email.policy.compat32)
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer.get_param("protocol") == "application/pgp-encrypted"
    parts = outer.get_payload()
    assert isinstance(parts, list) and len(parts) == 2
    version, body = parts
    assert isinstance(version, Message) and isinstance(body, Message)
    assert version.get_content_type() == "application/pgp-encrypted"
    assert str(version.get_payload()).strip() == "Version: 1"
    assert body.get_content_type() == "application/octet-stream"
    payload = body.get_payload(decode=True)
    assert isinstance(payload, bytes) and payload.startswith(b"-----BEGIN PGP MESSAGE-----")
    return outer, payload
