"""DANE for SMTP (RFC 7672): match a server's certificate chain against its TLSA records.

Only DNSSEC-validated TLSA records reach this module (the caller checks the
resolver's AD bit). The TLS handshake itself runs without certificate checks;
this module then decides. DANE-EE(3) pins the server's own key and ignores
names and expiry; DANE-TA(2) pins an issuer in the chain the server sends, and
the chain up to it must be signed correctly, current and name the MX host.
PKIX-TA(0) and PKIX-EE(1) are not used for SMTP (RFC 7672 section 3.1.3).
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from gateway.resolver import TlsaRecord

DANE_TA = 2
DANE_EE = 3
_SELECTORS = (0, 1)  # full certificate, SubjectPublicKeyInfo
_MATCHING = (0, 1, 2)  # exact, SHA-256, SHA-512
# The DER encoding of the ssl module's certificate objects (ssl._ssl.ENCODING_DER).
_ENCODING_DER = 2


@dataclass(frozen=True)
class DaneResult:
    """Whether the chain matched, and the usage that matched or why nothing did."""

    matched: bool
    detail: str


def usable(records: Sequence[TlsaRecord]) -> tuple[TlsaRecord, ...]:
    """The records an SMTP client may use: DANE-TA or DANE-EE with known selector and type."""
    return tuple(
        r
        for r in records
        if r.usage in (DANE_TA, DANE_EE) and r.selector in _SELECTORS and r.mtype in _MATCHING
    )


def peer_chain(ssl_object: ssl.SSLObject | None) -> list[bytes]:
    """The certificates the server sent, leaf first, as DER; [] when unavailable.

    Python 3.13 made get_unverified_chain() public; 3.11 and 3.12 only have it on
    the private _sslobj. The leaf alone is the fallback (enough for DANE-EE).
    """
    if ssl_object is None:
        return []
    source: Any = ssl_object
    if not hasattr(source, "get_unverified_chain"):
        source = getattr(ssl_object, "_sslobj", None)
    getter = getattr(source, "get_unverified_chain", None)
    if getter is not None:
        try:
            chain = getter() or []
            return [_der(cert) for cert in chain]
        except (ssl.SSLError, ValueError, TypeError, AttributeError):
            pass
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _der(cert: Any) -> bytes:
    if isinstance(cert, bytes):
        return cert
    der = cert.public_bytes(_ENCODING_DER)
    if not isinstance(der, bytes):
        raise TypeError("certificate did not encode to DER")
    return der


def _selected(cert: x509.Certificate, der: bytes, selector: int) -> bytes:
    if selector == 0:
        return der
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _digest(data: bytes, mtype: int) -> bytes:
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return data


def _matches(record: TlsaRecord, cert: x509.Certificate, der: bytes) -> bool:
    return _digest(_selected(cert, der, record.selector), record.mtype) == record.data


def match(records: Sequence[TlsaRecord], chain_der: Sequence[bytes], host: str) -> DaneResult:
    """Check the server's chain (leaf first) against usable TLSA records for MX host."""
    records = usable(records)
    if not records:
        return DaneResult(False, "no usable TLSA records")
    if not chain_der:
        return DaneResult(False, "the server sent no certificate")
    try:
        chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError:
        return DaneResult(False, "the server sent a malformed certificate")
    leaf, leaf_der = chain[0], chain_der[0]
    # RFC 7672 section 3.1.1: DANE-EE pins the key; names and dates do not matter.
    for record in records:
        if record.usage == DANE_EE and _matches(record, leaf, leaf_der):
            return DaneResult(True, "DANE-EE")
    why = "no TLSA record matches the server certificate"
    for record in records:
        if record.usage != DANE_TA:
            continue
        for depth in range(1, len(chain)):
            if not _matches(record, chain[depth], chain_der[depth]):
                continue
            problem = _chain_problem(chain[: depth + 1], host)
            if problem is None:
                return DaneResult(True, "DANE-TA")
            why = problem
    return DaneResult(False, why)


def _chain_problem(chain: list[x509.Certificate], host: str) -> str | None:
    """Why leaf..anchor is not a valid chain for host (RFC 7672 section 3.1.2), or None."""
    now = datetime.datetime.now(datetime.UTC)
    for i, cert in enumerate(chain):
        if i + 1 < len(chain):
            try:
                cert.verify_directly_issued_by(chain[i + 1])
            except (ValueError, TypeError, InvalidSignature):
                return "the certificate chain does not lead to the TLSA trust anchor"
        if i < len(chain) - 1 and not (
            cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
        ):
            return "a certificate below the TLSA trust anchor has expired or is not yet valid"
    if not name_matches(chain[0], host):
        return f"certificate not valid for {host}"
    return None


def name_matches(cert: x509.Certificate, host: str) -> bool:
    """Whether cert names host (DNS subjectAltName, else subject CN; leftmost-label wildcard)."""
    host = host.rstrip(".").lower()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [
            a.value if isinstance(a.value, str) else a.value.decode(errors="replace")
            for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return any(_name_match(pattern, host) for pattern in names)


def _name_match(pattern: str, host: str) -> bool:
    pattern = pattern.rstrip(".").lower()
    if pattern == host:
        return True
    # RFC 6125 section 6.4.3: "*" only as the whole leftmost label, matching one label.
    if pattern.startswith("*.") and "*" not in pattern[2:]:
        first, sep, rest = host.partition(".")
        return bool(sep) and bool(first) and rest == pattern[2:] and rest.count(".") >= 1
    return False
