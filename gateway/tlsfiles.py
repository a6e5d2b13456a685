"""TLS material for the listeners: a self-signed certificate on first start, server contexts.

Everything here blocks (key generation, file I/O): call it at startup or in a thread.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.config import TLSFiles
from gateway.safeio import fsync_dir, write_file

TLS_DIRNAME = "tls"
CERT_FILENAME = "selfsigned.crt"
KEY_FILENAME = "selfsigned.key"
_VALIDITY = dt.timedelta(days=5 * 365)
_RENEW_BEFORE = dt.timedelta(days=30)


def _san(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname.encode("idna").decode("ascii"))


def _usable(cert_path: Path, key_path: Path, hostname: str) -> bool:
    """True when the stored pair exists, parses, names hostname and is not about to expire."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    if cert.not_valid_after_utc - _RENEW_BEFORE < dt.datetime.now(dt.UTC):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return _san(hostname) in list(san)


def _generate(hostname: str) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))  # tolerate clients with slow clocks
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(hostname)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_self_signed(data_dir: Path, hostname: str) -> TLSFiles:
    """The self-signed certificate under data_dir/tls, made (or renewed) when needed.

    Sending MTAs rarely verify a smarthost's certificate, but they do want STARTTLS:
    a fresh install must offer it before an admin has installed a real certificate.
    """
    directory = data_dir / TLS_DIRNAME
    cert_path, key_path = directory / CERT_FILENAME, directory / KEY_FILENAME
    if _usable(cert_path, key_path, hostname):
        return TLSFiles(cert=cert_path, key=key_path)
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fsync_dir(directory.parent)
    cert_pem, key_pem = _generate(hostname)
    # Key first: a crash between the two writes leaves a pair that fails _usable and
    # is regenerated, never a new certificate next to an old key.
    write_file(key_path, key_pem, mode=0o600)
    write_file(cert_path, cert_pem, mode=0o644)
    return TLSFiles(cert=cert_path, key=key_path)


def server_context(
    cert: Path,
    key: Path,
    client_ca: Path | None = None,
    *,
    request_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server-side context (TLS 1.2 or later) for STARTTLS and implicit TLS listeners.

    With client_ca (a PEM bundle) or request_client_cert (verify against the system
    store), clients are asked for a certificate but not required to send one;
    connectors with a client_cert rule then match on it. A certificate that does not
    verify fails the handshake, so client_ca must cover every upstream that sends one.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    elif request_client_cert:
        ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx
