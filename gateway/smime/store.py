"""Recipients' S/MIME certificates on disk: one file per certificate, an index by address.

Layout under data_dir/keys/smime/: `<sha256 hex>.pem` for each certificate and
`index.json`, which lists every certificate's facts and, per email address, the
certificates that carry it. Writers (the CLI, the gateway harvesting) take an
exclusive lock on `.lock`, write the certificate file, then replace the index
atomically; readers never lock: they read whichever index is in place.

A certificate is kept only when it can serve as an encryption certificate
(RFC 8550 section 4.4): an email address in the subjectAltName (rfc822Name) or
the subject's emailAddress, an RSA key of at least 2048 bits (the CMS builder
encrypts to RSA keys only), keyUsage (if present) allowing keyEncipherment,
extendedKeyUsage (if present) naming emailProtection, not a CA. Validity in
time is checked when a certificate is chosen, since it changes by itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway import safeio

MIN_RSA_BITS = 2048
INDEX_NAME = "index.json"
_INDEX_VERSION = 1
# A certificate file or bundle larger than this is not a recipient certificate.
MAX_CERT_FILE = 1 << 20


class CertificateError(Exception):
    """A certificate (or file of them) that cannot be used; the text says why."""


@dataclass(frozen=True)
class CertInfo:
    """What the index records about one certificate (no key material)."""

    fingerprint: str  # SHA-256 of the DER encoding, lowercase hex
    emails: tuple[str, ...]
    subject: str
    issuer: str
    serial: str
    not_before: float
    not_after: float
    source: str  # "import" (an admin) or "harvest" (a signed message passing through)
    added: float

    def valid_at(self, now: float) -> bool:
        """Whether the certificate's validity period covers now."""
        return self.not_before <= now < self.not_after

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["emails"] = list(self.emails)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CertInfo:
        """Inverse of to_json."""
        return cls(
            fingerprint=str(d["fingerprint"]),
            emails=tuple(str(e) for e in d["emails"]),
            subject=str(d.get("subject", "")),
            issuer=str(d.get("issuer", "")),
            serial=str(d.get("serial", "")),
            not_before=float(d["not_before"]),
            not_after=float(d["not_after"]),
            source=str(d.get("source", "import")),
            added=float(d.get("added", 0.0)),
        )


def normalize_address(address: str) -> str:
    """The form addresses take in the index: trimmed, lowercase, no angle brackets."""
    return address.strip().strip("<>").strip().lower()


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint of a certificate, lowercase hex without separators."""
    return cert.fingerprint(hashes.SHA256()).hex()


def normalize_fingerprint(text: str) -> str | None:
    """A fingerprint as typed (any case, with colons or spaces) in index form, else None."""
    hexed = text.replace(":", "").replace(" ", "").strip().lower()
    if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
        return None
    return hexed


def cert_emails(cert: x509.Certificate) -> tuple[str, ...]:
    """The addresses a certificate speaks for: SAN rfc822Name, then subject emailAddress."""
    found: list[str] = []
    with contextlib.suppress(x509.ExtensionNotFound, ValueError):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found.extend(san.get_values_for_type(x509.RFC822Name))
    with contextlib.suppress(ValueError):
        for attr in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
            if isinstance(attr.value, str):
                found.append(attr.value)
    out: list[str] = []
    for email in found:
        addr = normalize_address(email)
        if "@" in addr and addr not in out:
            out.append(addr)
    return tuple(out)


def problems(cert: x509.Certificate) -> list[str]:
    """Why a certificate can never serve to encrypt mail to its owner (empty: it can)."""
    out: list[str] = []
    try:
        exts = cert.extensions
    except ValueError:
        return ["malformed extensions"]
    if not cert_emails(cert):
        out.append("no email address (subjectAltName rfc822Name or subject emailAddress)")
    try:
        key = cert.public_key()
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPublicKey):
        out.append("not an RSA key (only RSA key transport is supported)")
    elif key.key_size < MIN_RSA_BITS:
        out.append(f"RSA key of {key.key_size} bits ({MIN_RSA_BITS} needed)")
    with contextlib.suppress(x509.ExtensionNotFound):
        bc = exts.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            out.append("a CA certificate, not a recipient's")
    with contextlib.suppress(x509.ExtensionNotFound):
        ku = exts.get_extension_for_class(x509.KeyUsage).value
        if not ku.key_encipherment:
            out.append("keyUsage does not allow keyEncipherment")
    with contextlib.suppress(x509.ExtensionNotFound):
        eku = exts.get_extension_for_class(x509.ExtendedKeyUsage).value
        allowed = {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
        if not allowed.intersection(eku):
            out.append("extendedKeyUsage does not include emailProtection")
    return out


def time_problem(cert: x509.Certificate, now: float) -> str | None:
    """Why the certificate is not valid at now (expired, not yet valid), or None."""
    if now >= cert.not_valid_after_utc.timestamp():
        return f"expired {_day(cert.not_valid_after_utc.timestamp())}"
    if now < cert.not_valid_before_utc.timestamp():
        return f"not valid before {_day(cert.not_valid_before_utc.timestamp())}"
    return None


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def info_of(cert: x509.Certificate, source: str, added: float) -> CertInfo:
    """The index entry for a certificate."""
    return CertInfo(
        fingerprint=fingerprint(cert),
        emails=cert_emails(cert),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        source=source,
        added=added,
    )


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Certificates from PEM (one or more), DER, or a PKCS#7 bundle (.p7b/.p7c, PEM or DER)."""
    if len(data) > MAX_CERT_FILE:
        raise CertificateError("file too large for a certificate")
    text = data.lstrip()
    if text.startswith(b"-----BEGIN"):
        if b"-----BEGIN PKCS7-----" in data:
            with contextlib.suppress(ValueError):
                return list(pkcs7.load_pem_pkcs7_certificates(data))
        with contextlib.suppress(ValueError):
            return list(x509.load_pem_x509_certificates(data))
        raise CertificateError("no certificate found in the PEM file")
    with contextlib.suppress(ValueError):
        return [x509.load_der_x509_certificate(data)]
    with contextlib.suppress(ValueError):
        return list(pkcs7.load_der_pkcs7_certificates(data))
    raise CertificateError("not a certificate (PEM, DER) or PKCS#7 certificate bundle")


class CertStore:
    """The certificate files and their index under data_dir/keys/smime."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "keys" / "smime"
        self.index_path = self.root / INDEX_NAME

    # -- reading (no lock: files are replaced by rename) --

    def read_index(self) -> dict[str, CertInfo]:
        """Every certificate's entry, by fingerprint; empty when there is no store yet."""
        try:
            raw = json.loads(self.index_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CertificateError(f"unreadable certificate index {self.index_path}") from exc
        if not isinstance(raw, dict) or raw.get("version") != _INDEX_VERSION:
            raise CertificateError(f"unknown certificate index format in {self.index_path}")
        out: dict[str, CertInfo] = {}
        for fp, entry in dict(raw.get("certificates", {})).items():
            try:
                out[fp] = CertInfo.from_json(entry)
            except (KeyError, TypeError, ValueError):
                continue  # one bad entry does not hide the others
        return out

    def index_stamp(self) -> tuple[int, int, int] | None:
        """What changes whenever the index is replaced (inode, mtime, size), None if absent."""
        try:
            st = os.stat(self.index_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self, fp: str) -> x509.Certificate | None:
        """The certificate with this fingerprint, or None when its file is gone or damaged."""
        try:
            data = (self.root / f"{fp}.pem").read_bytes()
            cert = x509.load_pem_x509_certificate(data)
        except (OSError, ValueError):
            return None
        return cert if fingerprint(cert) == fp else None

    # -- writing (under the store's lock) --

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, CertInfo]]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                entries = self.read_index()
            except CertificateError:
                entries = self._rebuild()
            yield entries
        finally:
            os.close(fd)  # releases the lock

    def _rebuild(self) -> dict[str, CertInfo]:
        """Entries recovered from the certificate files when the index is unreadable."""
        out: dict[str, CertInfo] = {}
        for path in self.root.glob("*.pem"):
            cert = self.load(path.stem)
            if cert is not None and not problems(cert):
                out[path.stem] = info_of(cert, "import", path.stat().st_mtime)
        return out

    def _write_index(self, entries: Mapping[str, CertInfo]) -> None:
        addresses: dict[str, list[str]] = {}
        for fp, info in sorted(entries.items()):
            for email in info.emails:
                addresses.setdefault(email, []).append(fp)
        doc = {
            "version": _INDEX_VERSION,
            "certificates": {fp: info.to_json() for fp, info in sorted(entries.items())},
            "addresses": addresses,
        }
        safeio.write_file(self.index_path, json.dumps(doc, indent=1).encode(), mode=0o644)

    def add(
        self, cert: x509.Certificate, source: str, now: float | None = None
    ) -> tuple[CertInfo, bool]:
        """Store a usable certificate: (its entry, whether new); CertificateError if unusable."""
        now = time.time() if now is None else now
        found = problems(cert)
        late = time_problem(cert, now)
        if late is not None:
            found.append(late)
        if found:
            raise CertificateError("; ".join(found))
        fp = fingerprint(cert)
        with self._locked() as entries:
            existing = entries.get(fp)
            if existing is not None and (self.root / f"{fp}.pem").exists():
                return existing, False
            info = info_of(cert, source, now)
            safeio.write_file(
                self.root / f"{fp}.pem",
                cert.public_bytes(serialization.Encoding.PEM),
                mode=0o644,
            )
            entries[fp] = info
            self._write_index(entries)
            return info, True

    def remove(self, fps: list[str]) -> list[CertInfo]:
        """Drop these certificates; the entries that existed."""
        with self._locked() as entries:
            gone = [entries.pop(fp) for fp in fps if fp in entries]
            if gone:
                # Index first: a reader never finds an entry whose file is missing for long.
                self._write_index(entries)
            for info in gone:
                (self.root / f"{info.fingerprint}.pem").unlink(missing_ok=True)
            if gone:
                safeio.fsync_dir(self.root)
            return gone


def best_for(entries: Mapping[str, CertInfo], address: str, now: float) -> str | None:
    """The fingerprint to encrypt to for address: valid now, the latest notAfter wins."""
    addr = normalize_address(address)
    candidates = [i for i in entries.values() if addr in i.emails and i.valid_at(now)]
    if not candidates:
        return None
    return max(candidates, key=lambda i: (i.not_after, i.not_before, i.fingerprint)).fingerprint
