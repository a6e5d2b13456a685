"""The self-signed certificate made on first start, and the listeners' TLS contexts."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from gateway import tlsfiles


def test_self_signed_is_made_once_and_reused(tmp_path: Path) -> None:
    first = tlsfiles.ensure_self_signed(tmp_path, "gw.clinic.example")
    assert first.cert == tmp_path / "tls" / "selfsigned.crt"
    assert stat.S_IMODE(first.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(first.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.clinic.example"]
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    pem = first.cert.read_bytes()

    again = tlsfiles.ensure_self_signed(tmp_path, "gw.clinic.example")
    assert again == first and again.cert.read_bytes() == pem

    # A new hostname (or a damaged file) gets a new certificate.
    renamed = tlsfiles.ensure_self_signed(tmp_path, "mail.clinic.example")
    assert renamed.cert.read_bytes() != pem
    renamed.key.write_bytes(b"garbage")
    repaired = tlsfiles.ensure_self_signed(tmp_path, "mail.clinic.example")
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(repaired.cert, repaired.key)


def test_ip_hostname_gets_an_ip_san(tmp_path: Path) -> None:
    files = tlsfiles.ensure_self_signed(tmp_path, "192.0.2.1")
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.1"]


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[str, bytes | None]:
    """A real TLS handshake over a loopback socket pair; (client's version, client cert seen)."""
    seen: list[bytes | None] = []
    a, b = socket.socketpair()

    def serve() -> None:
        with server_ctx.wrap_socket(a, server_side=True) as s:
            seen.append(s.getpeercert(binary_form=True))
            s.recv(1)

    t = threading.Thread(target=serve)
    t.start()
    with client_ctx.wrap_socket(b, server_hostname="gw.test") as c:
        version = c.version() or ""
        c.sendall(b"x")
    t.join(30)
    return version, seen[0]


def test_server_context(tmp_path: Path, tls_ca: trustme.CA, tls_ca_file: Path) -> None:
    leaf = tls_ca.issue_cert("gw.test")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    tls_ca.configure_trust(client)

    plain = tlsfiles.server_context(cert, key)
    assert plain.minimum_version == ssl.TLSVersion.TLSv1_2
    assert plain.verify_mode == ssl.CERT_NONE
    assert _handshake(plain, client) == ("TLSv1.3", None)

    asking = tlsfiles.server_context(cert, key, tls_ca_file)
    assert asking.verify_mode == ssl.CERT_OPTIONAL
    assert _handshake(asking, client)[1] is None  # a certificate is optional
    tls_ca.issue_cert("upstream.test").configure_cert(client)
    assert _handshake(asking, client)[1] is not None

    system = tlsfiles.server_context(cert, key, request_client_cert=True)
    assert system.verify_mode == ssl.CERT_OPTIONAL


def test_server_context_reports_bad_files(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate")
    with pytest.raises(ssl.SSLError):
        tlsfiles.server_context(tmp_path / "c.pem", tmp_path / "c.pem")
