"""Certificates from signed mail passing through: only signers whose signature verifies.

A sender's S/MIME signature (RFC 8551 section 3.5) carries the signer's
certificate. The certificate is learned when the CMS signature over the signed
content verifies with that certificate's key (RFC 5652 section 5.4 and 5.6:
the messageDigest attribute matches the content, the signature covers the
signed attributes) and the certificate names the message's From address. No
chain validation is done: a learned certificate shows only that its key's
holder signed mail from that address through this gateway (admins who want
CA-vetted certificates only turn harvesting off and import them).

The signed content is taken from the raw bytes of the message (MIME
boundaries found in place), since re-serialising a parsed message changes the
bytes the signature covers.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import email.utils
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from typing import Any

from asn1crypto import cms  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from gateway.smime.store import cert_emails, normalize_address

_SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_MIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
# SHA-1 and MD5 signatures are not evidence enough to learn a key from.
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_MAX_DEPTH = 4
_MAX_PARTS = 64
_MAX_SIGNATURE = 1 << 20
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")


@dataclass(frozen=True)
class Signed:
    """One S/MIME signature found in a message: its CMS bytes and, if detached, the content."""

    cms_der: bytes
    content: bytes | None  # None: the content is inside the CMS (opaque signing)


def harvest(data: bytes) -> list[x509.Certificate]:
    """Signer certificates that verifiably signed this message and name its From address."""
    sender = from_address(data)
    if sender is None:
        return []
    out: list[x509.Certificate] = []
    seen: set[bytes] = set()
    for signed in signatures(data):
        for cert in verified_signers(signed):
            der = cert.tbs_certificate_bytes
            if der in seen or sender not in cert_emails(cert):
                continue
            seen.add(der)
            out.append(cert)
    return out


def from_address(data: bytes) -> str | None:
    """The single address in the From header, normalised; None when absent or several."""
    headers = _headers(_split(data)[0])
    values = headers.get_all("From") or []
    pairs = email.utils.getaddresses([str(v) for v in values])
    addrs = [normalize_address(a) for _, a in pairs if "@" in a]
    return addrs[0] if len(addrs) == 1 else None


def signatures(data: bytes) -> Iterator[Signed]:
    """Every S/MIME signature in the message's MIME tree (multipart/signed, signed-data)."""
    yield from _walk(data, 0)


def _walk(entity: bytes, depth: int) -> Iterator[Signed]:
    head, body = _split(entity)
    headers = _headers(head)
    ctype = headers.get_content_type()
    if ctype == "multipart/signed":
        protocol = str(headers.get_param("protocol", "", header="content-type") or "").lower()
        parts = _parts(body, headers.get_boundary())
        if protocol in _SIGNATURE_TYPES and len(parts) == 2:
            sig_head, sig_body = _split(parts[1])
            sig_headers = _headers(sig_head)
            if sig_headers.get_content_type() in _SIGNATURE_TYPES:
                der = _decode(sig_headers, sig_body)
                if der:
                    yield Signed(der, _BARE_LF.sub(b"\r\n", parts[0]))
        if parts and depth < _MAX_DEPTH:
            yield from _walk(parts[0], depth + 1)
    elif ctype in _MIME_TYPES:
        kind = str(headers.get_param("smime-type", "", header="content-type") or "").lower()
        if kind == "signed-data":
            der = _decode(headers, body)
            if der:
                yield Signed(der, None)
    elif headers.get_content_maintype() == "multipart" and depth < _MAX_DEPTH:
        for part in _parts(body, headers.get_boundary())[:_MAX_PARTS]:
            yield from _walk(part, depth + 1)


def _split(entity: bytes) -> tuple[bytes, bytes]:
    """Header block and body of a MIME entity (body empty when there is no blank line)."""
    if entity.startswith((b"\r\n", b"\n")):
        return b"", entity[2 if entity.startswith(b"\r\n") else 1 :]
    m = _HEADER_END.search(entity)
    if m is None:
        return entity, b""
    return entity[: m.start()], entity[m.end() :]


def _headers(head: bytes) -> Message:
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head + b"\r\n")


def _parts(body: bytes, boundary: str | None) -> list[bytes]:
    """The body parts of a multipart body, byte for byte (RFC 2046 section 5.1.1).

    The line break before a delimiter belongs to the delimiter, not to the part.
    """
    if not boundary:
        return []
    try:
        delim = re.escape(boundary.encode("ascii"))
    except UnicodeEncodeError:
        return []
    pattern = re.compile(rb"(?:^|\r?\n)--" + delim + rb"(--)?[ \t]*(?:\r?\n|$)")
    parts: list[bytes] = []
    start: int | None = None
    for m in pattern.finditer(body):
        if start is not None:
            parts.append(body[start : m.start()])
            if len(parts) > _MAX_PARTS:
                break
        if m.group(1):  # the close delimiter
            return parts
        start = m.end()
    return parts  # no close delimiter: the parts seen so far


def _decode(headers: Message, body: bytes) -> bytes:
    cte = str(headers.get("Content-Transfer-Encoding", "")).strip().lower()
    try:
        if cte == "base64":
            out = base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body))
        elif cte == "quoted-printable":
            out = quopri.decodestring(body)
        else:
            out = body
    except (binascii.Error, ValueError):
        return b""
    return out if len(out) <= _MAX_SIGNATURE else b""


def verified_signers(signed: Signed) -> list[x509.Certificate]:
    """The certificates in the CMS whose signer info verifies over the signed content."""
    try:
        info = cms.ContentInfo.load(signed.cms_der)
        if info["content_type"].native != "signed_data":
            return []
        sd = info["content"]
        encap = sd["encap_content_info"]
        if signed.content is not None:
            content = signed.content
        else:
            inner = encap["content"]
            if inner is None or inner.native is None:
                return []
            content = bytes(inner.native) if isinstance(inner.native, bytes) else inner.contents
        certs = [c.chosen for c in (sd["certificates"] or []) if c.name == "certificate"]
        out: list[x509.Certificate] = []
        for si in sd["signer_infos"]:
            cert = _signer_cert(si["sid"], certs)
            if cert is None:
                continue
            crypto_cert = x509.load_der_x509_certificate(cert.dump())
            if _verify(si, content, encap["content_type"].native, crypto_cert):
                out.append(crypto_cert)
        return out
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        OverflowError,
        UnsupportedAlgorithm,
    ):
        # Whatever a malformed or hostile structure raises: nothing is learned from it.
        return []


def _signer_cert(sid: Any, certs: list[Any]) -> Any:
    """The certificate a SignerIdentifier names (RFC 5652 section 5.3), or None."""
    kind, chosen = sid.name, sid.chosen
    for cert in certs:
        if kind == "issuer_and_serial_number":
            if (
                cert.issuer == chosen["issuer"]
                and cert.serial_number == chosen["serial_number"].native
            ):
                return cert
        elif kind == "subject_key_identifier" and cert.key_identifier == chosen.native:
            return cert
    return None


def _verify(si: Any, content: bytes, content_type: str, cert: x509.Certificate) -> bool:
    digest_name = si["digest_algorithm"]["algorithm"].native
    hash_cls = _HASHES.get(digest_name)
    if hash_cls is None:
        return False
    digest = hashes.Hash(hash_cls())
    digest.update(content)
    content_digest = digest.finalize()
    signed_attrs = si["signed_attrs"]
    if signed_attrs is not None and len(signed_attrs) > 0:
        attrs = {a["type"].native: a["values"] for a in signed_attrs}
        if "message_digest" not in attrs or "content_type" not in attrs:
            return False  # RFC 5652 section 5.3: both are required with signed attributes
        if attrs["message_digest"][0].native != content_digest:
            return False
        if attrs["content_type"][0].native != content_type:
            return False
        # The signature covers the DER of the attributes as a SET OF, not as [0] IMPLICIT.
        to_verify = signed_attrs.untag().dump()
    else:
        to_verify = content
    signature = si["signature"].native
    algo = si["signature_algorithm"]
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if algo.signature_algo == "rsassa_pss":
                params = algo["parameters"]
                pss_hash = _HASHES.get(params["hash_algorithm"]["algorithm"].native)
                if pss_hash is None:
                    return False
                pad: padding.AsymmetricPadding = padding.PSS(
                    mgf=padding.MGF1(pss_hash()), salt_length=params["salt_length"].native
                )
                key.verify(signature, to_verify, pad, pss_hash())
            elif algo.signature_algo == "rsassa_pkcs1v15":
                key.verify(signature, to_verify, padding.PKCS1v15(), hash_cls())
            else:
                return False
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if algo.signature_algo != "ecdsa":
                return False
            key.verify(signature, to_verify, ec.ECDSA(hash_cls()))
        else:
            return False
    except InvalidSignature:
        return False
    return True
