"""TLS for outbound SMTP: client contexts, and the facts recorded about each session."""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class ClientContexts:
    """One context that verifies the server and one that only encrypts."""

    verify: ssl.SSLContext
    noverify: ssl.SSLContext


def build_contexts(ca_file: Path | None) -> ClientContexts:
    """Contexts trusting the system CAs plus ca_file; reads files, so call it in a thread."""
    verify = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    # Levels "required" and "verified" need TLS 1.2 or later; older versions
    # are not worth negotiating for opportunistic mail either.
    verify.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        verify.load_verify_locations(cafile=str(ca_file))
    noverify = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    noverify.minimum_version = ssl.TLSVersion.TLSv1_2
    # Opportunistic TLS still beats plaintext when the certificate is not
    # trusted (RFC 7435): encrypt, and record that the peer was not verified.
    noverify.check_hostname = False
    noverify.verify_mode = ssl.CERT_NONE
    return ClientContexts(verify=verify, noverify=noverify)


def peer_name(der: bytes | None) -> str:
    """The certificate's subject CN, else its first DNS subjectAltName, else ""."""
    if not der:
        return ""
    try:
        cert = x509.load_der_x509_certificate(der)
        common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if common_names:
            value = common_names[0].value
            return value if isinstance(value, str) else value.decode(errors="replace")
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = san.get_values_for_type(x509.DNSName)
        return dns_names[0] if dns_names else ""
    except (ValueError, x509.ExtensionNotFound):
        # A malformed certificate from a peer must not break the delivery.
        return ""


def session_facts(
    ssl_object: ssl.SSLObject | None, *, verified: bool, verify_error: str | None
) -> dict[str, Any] | None:
    """What a delivery record keeps about a TLS session; None when there is none."""
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    der = ssl_object.getpeercert(binary_form=True)
    return {
        "version": ssl_object.version(),
        "cipher": cipher[0] if cipher else None,
        "verified": verified,
        "verify_error": verify_error,
        "peer": peer_name(der),
        "fingerprint_sha256": hashlib.sha256(der).hexdigest() if der else None,
    }
