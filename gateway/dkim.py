"""DKIM: signs outgoing messages (RFC 6376, RSA and Ed25519 per RFC 8463) and makes keys.

Canonicalisation comes from dkimpy; hashing uses hashlib and the private-key
operation uses `cryptography` (OpenSSL), which is many times faster than
dkimpy's pure-Python RSA. Signing is a few hundred microseconds of CPU work,
so callers may run it on the event loop for ordinary messages.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import functools
import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from gateway import log
from gateway.config import DkimKey
from gateway.safeio import fsync_dir, write_file

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
Algorithm = Literal["rsa2048", "ed25519"]
ALGORITHMS: tuple[Algorithm, ...] = ("rsa2048", "ed25519")

# RFC 8301 §3.2: verifiers must reject RSA keys under 1024 bits; 2048 is the norm.
MIN_RSA_BITS = 1024
RECOMMENDED_RSA_BITS = 2048

# Header fields signed whenever present (each instance), after RFC 6376 §5.4.1.
_SIGNED = (
    "from",
    "reply-to",
    "subject",
    "to",
    "cc",
    "sender",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-message-id",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
    "autocrypt",
    "openpgp",
)
# Listed once more than they occur, even when absent (RFC 6376 §8.15): nobody
# can add a second From, or a Reply-To, Subject, To or Cc that a reader would see,
# to a signed message without breaking the signature.
_GUARDED_ALWAYS = frozenset({"from", "reply-to", "subject", "to", "cc"})
# Listed once more than they occur when present: at most one instance is legitimate.
_GUARDED_WHEN_PRESENT = frozenset(
    {
        "sender",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "autocrypt",
        "openpgp",
    }
)

# RFC 5322 §3.6.8 field name, tolerating obsolete whitespace before the colon.
_FIELD_RE = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"
)
_SELECTOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LINE_LIMIT = 78
_SPACES_RE = re.compile(b"  +")
_WSP_RUN_RE = re.compile(b"[\t ]+")
# The From: fields nearly all mail has: "addr@domain", "<addr@domain>" or a plain
# display name before "<addr@domain>". Read with one regular expression; anything
# else goes to email.utils, which gives the same address for these.
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_HOST = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_SIMPLE_FROM_RE = re.compile(
    rf"[ \t]*(?:[A-Za-z0-9][A-Za-z0-9 ]*[ \t]*)?<{_DOT_ATOM}@({_HOST})>[ \t]*"
    rf"|[ \t]*{_DOT_ATOM}@({_HOST})[ \t]*"
)


class DkimKeyError(Exception):
    """A DKIM key cannot be read, parsed or created; the message names the file."""


@dataclass(frozen=True)
class SigningKey:
    """A loaded private key and where its public half is published."""

    domain: str  # ASCII (A-label) form, as it appears in d=
    selector: str
    private_key: PrivateKey
    path: Path

    @functools.cached_property
    def algorithm(self) -> str:
        """The a= tag value this key signs with."""
        # Cached: isinstance against the key's abstract class is slow, and asked per message.
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return "ed25519-sha256"
        return "rsa-sha256"


# --- keys ------------------------------------------------------------------


def ascii_domain(domain: str) -> str:
    """Lower-case A-label form of a domain, for comparisons and d= tags."""
    domain = domain.strip().rstrip(".").lower()
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def parse_private_key(data: bytes) -> PrivateKey:
    """An RSA or Ed25519 private key from PEM (PKCS#8 or PKCS#1) or a raw Ed25519 seed.

    The raw form (base64 of the 32-byte seed) is what dkimpy's dknewkey writes.
    """
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise ValueError("the key is encrypted; DKIM keys must be stored unencrypted") from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"not a valid PEM private key ({exc})") from None
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < MIN_RSA_BITS:
                raise ValueError(
                    f"RSA key of {key.key_size} bits is too short (receivers require"
                    f" {MIN_RSA_BITS}, use {RECOMMENDED_RSA_BITS})"
                )
            return key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key
        raise ValueError(f"unsupported key type {type(key).__name__}: use RSA or Ed25519")
    try:
        seed = base64.b64decode(b"".join(data.split()), validate=True)
    except binascii.Error:
        seed = b""
    if len(seed) != 32:
        raise ValueError("not a PEM private key nor a base64 Ed25519 seed")
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def load_private_key(path: Path) -> PrivateKey:
    """Read and parse a key file; DkimKeyError names the path on any problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"cannot read DKIM key {path}: {exc.strerror or exc}") from None
    try:
        return parse_private_key(data)
    except ValueError as exc:
        raise DkimKeyError(f"invalid DKIM key {path}: {exc}") from None


def dns_txt_value(private_key: PrivateKey) -> str:
    """The TXT record value publishing the public half: "v=DKIM1; k=...; p=..."."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        # RFC 8463 §4.2: p= carries the raw 32-byte public key.
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}"
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def key_path(data_dir: Path, domain: str, selector: str) -> Path:
    """Where generate_key stores the key for a domain and selector."""
    return data_dir / "dkim" / f"{domain}.{selector}.key"


def generate_key(
    data_dir: Path, domain: str, selector: str, algorithm: Algorithm, *, force: bool = False
) -> tuple[Path, str]:
    """Create a private key under data_dir/dkim/ (PKCS#8 PEM, mode 0600).

    Returns the file and the TXT record value to publish. Refuses to replace an
    existing key unless force is set: the old key may still sign mail in flight.
    """
    domain = ascii_domain(domain)
    if not _DOMAIN_RE.match(domain):
        raise DkimKeyError(f"{domain!r} is not a domain name")
    if not _SELECTOR_RE.match(selector) or len(selector) > 63:
        raise DkimKeyError(f"{selector!r} is not a valid selector (letters, digits, . _ -)")
    key: PrivateKey
    if algorithm == "rsa2048":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise DkimKeyError(f"unknown algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = key_path(data_dir, domain, selector)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.exists() and not force:
            raise DkimKeyError(f"{path} already exists (use --force to replace it)")
        write_file(path, pem, mode=0o600)
        fsync_dir(path.parent.parent)
    except OSError as exc:
        raise DkimKeyError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path, dns_txt_value(key)


# --- message parsing ---------------------------------------------------------


@dataclass(frozen=True)
class _Parsed:
    headers: list[tuple[bytes, bytes]]  # (name as written, raw value incl. folding)
    body: bytes
    linesep: bytes


def _split_message(data: bytes) -> _Parsed | None:
    """Headers and body; None when the header block is not RFC 5322 fields."""
    first_nl = data.find(b"\n")
    # New fields follow the message's own line ending (the spool keeps CRLF).
    linesep = b"\r\n" if first_nl > 0 and data[first_nl - 1] == 0x0D else b"\n"
    if data.startswith((b"\r\n", b"\n")):
        return None
    crlf_end = data.find(b"\n\r\n")
    lf_end = data.find(b"\n\n", 0, crlf_end if crlf_end >= 0 else len(data))
    cuts = [i for i in (crlf_end, lf_end) if i >= 0]
    if cuts:
        end = min(cuts) + 1
        block = data[:end]
        body = data[end + (2 if data.startswith(b"\r\n", end) else 1) :]
    else:
        block, body = data, b""
    headers: list[tuple[bytes, bytes]] = []
    for line in block.split(b"\n"):
        line = line.removesuffix(b"\r")
        if not line:
            continue
        if line[0] in b" \t":
            if not headers:
                return None
            name, value = headers[-1]
            headers[-1] = (name, value + b"\r\n" + line)
            continue
        m = _FIELD_RE.match(line)
        if m is None:
            return None
        headers.append((m.group(1), line[m.end() :]))
    return _Parsed(headers, body, linesep)


def _from_domain(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The domain of the (first) From: address, which DMARC aligns with."""
    for name, value in headers:
        if name.lower() != b"from":
            continue
        text = re.sub(r"\r?\n", "", value.decode("utf-8", "replace"))
        simple = _SIMPLE_FROM_RE.fullmatch(text)
        if simple is not None:
            return ascii_domain(simple.group(1) or simple.group(2))
        for _display, addr in email.utils.getaddresses([text]):
            if "@" in addr:
                return ascii_domain(addr.rpartition("@")[2])
        return None
    return None


def _body_hash(body: bytes) -> bytes:
    """SHA-256 of the relaxed-canonical body (RFC 6376 §3.4.4), as receivers will see it.

    Same result as dkimpy's Relaxed.canonicalize_body, reordered so that each step
    is a C-speed bytes operation: dkimpy's regexes take seconds on a 10 MB body.
    """
    if body.count(b"\n") != body.count(b"\r\n"):
        body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if body and not body.endswith(b"\r\n"):
        # SMTP clients end DATA with CRLF, so that is what verifiers hash.
        body += b"\r\n"
    # Compressing every run of WSP to one SP first leaves at most one SP to drop
    # before each CRLF, which equals stripping trailing WSP first.
    if b"\t" in body:
        body = body.replace(b"\t", b" ")
    if b"  " in body:
        body = _SPACES_RE.sub(b" ", body)
    body = body.replace(b" \r\n", b"\r\n")
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    h = hashlib.sha256(memoryview(body)[:end])
    if end:
        h.update(b"\r\n")
    return h.digest()


def _header_list(headers: list[tuple[bytes, bytes]]) -> list[str]:
    """The h= list: fields present, plus guard entries against added instances."""
    counts: dict[str, int] = {}
    for raw, _ in headers:
        key = raw.decode("ascii").lower()
        counts[key] = counts.get(key, 0) + 1
    out: list[str] = []
    for name in _SIGNED:
        n = counts.get(name, 0)
        if name in _GUARDED_ALWAYS or (n and name in _GUARDED_WHEN_PRESENT):
            n += 1
        out.extend([name] * n)
    return out


def _relaxed_header(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """RFC 6376 §3.4.2 relaxed header canonicalization, as dkimpy's Relaxed does it.

    Lower-cased name; the value unfolded, runs of WSP made one space, trimmed,
    then CRLF. Plain bytes methods where dkimpy runs two regular expressions.
    """
    if b"\n" in value:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN_RE.sub(b" ", value)
    return name.lower().rstrip(), value.strip() + b"\r\n"


def _signed_header_bytes(headers: list[tuple[bytes, bytes]], names: list[str]) -> bytes:
    """Relaxed-canonical fields named in h=, each name taking instances bottom-up (§5.4.2)."""
    wanted = {n.encode("ascii") for n in names}
    by_name: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for raw_name, raw_value in headers:
        if raw_name.lower().rstrip() not in wanted:
            continue
        canon_name, canon_value = _relaxed_header(raw_name, raw_value)
        by_name.setdefault(canon_name, []).append((canon_name, canon_value))
    parts: list[bytes] = []
    for name in names:
        instances = by_name.get(name.encode("ascii"))
        if instances:
            n, v = instances.pop()
            parts.append(n + b":" + v)
    return b"".join(parts)


def _fold(tokens: Iterable[tuple[str, str]], first_len: int, linesep: str) -> str:
    """Join (separator, text) tokens, breaking lines before tokens that would overflow."""
    out: list[str] = []
    col = first_len
    for sep, text in tokens:
        if out and col + len(sep) + len(text) > _LINE_LIMIT:
            out.append(linesep + " ")
            col = 1
        else:
            out.append(sep)
            col += len(sep)
        out.append(text)
        col += len(text)
    return "".join(out)


def _signature_header(
    key: SigningKey, names: list[str], body_hash: bytes, timestamp: int, linesep: str
) -> str:
    """The DKIM-Signature field up to and including an empty b= tag."""
    tokens: list[tuple[str, str]] = [
        (" ", "v=1;"),
        (" ", f"a={key.algorithm};"),
        (" ", "c=relaxed/relaxed;"),
        (" ", f"d={key.domain};"),
        (" ", f"s={key.selector};"),
        (" ", f"t={timestamp};"),
    ]
    for i, name in enumerate(names):
        text = (f"h={name}" if i == 0 else name) + (";" if i == len(names) - 1 else ":")
        tokens.append((" " if i == 0 else "", text))
    tokens.append((" ", f"bh={base64.b64encode(body_hash).decode('ascii')};"))
    head = "DKIM-Signature:" + _fold(tokens, len("DKIM-Signature:"), linesep)
    # b= starts its own line so that folding its value never touches hashed text.
    return head + linesep + " b="


def _fold_b64(value: str, linesep: str) -> str:
    """Fold a base64 value into lines that fit; FWS inside b= is ignored by verifiers."""
    first, rest = value[:72], value[72:]
    chunks = [first] + [rest[i : i + 74] for i in range(0, len(rest), 74)]
    return (linesep + "  ").join(c for c in chunks if c)


_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def _sign_digest(key: SigningKey, signed: bytes) -> bytes:
    # The algorithm names the key type (checked once, see SigningKey.algorithm).
    if key.algorithm == "ed25519-sha256":
        # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the canonical header data.
        ed = cast(ed25519.Ed25519PrivateKey, key.private_key)
        return ed.sign(hashlib.sha256(signed).digest())
    return cast(rsa.RSAPrivateKey, key.private_key).sign(signed, _PKCS1V15, _SHA256)


class DkimSigner:
    """Signs messages with the configured key(s) of the sender's domain."""

    def __init__(self, keys: list[DkimKey]) -> None:
        """Load and parse every key now, so a bad key fails at start-up, not per message."""
        self._keys: dict[str, list[SigningKey]] = {}
        for k in keys:
            private = load_private_key(k.key)
            if isinstance(private, rsa.RSAPrivateKey) and private.key_size < RECOMMENDED_RSA_BITS:
                log.event(
                    "dkim_key_short",
                    domain=k.domain,
                    selector=k.selector,
                    bits=private.key_size,
                    advice=f"generate a {RECOMMENDED_RSA_BITS}-bit key",
                )
            domain = ascii_domain(k.domain)
            self._keys.setdefault(domain, []).append(SigningKey(domain, k.selector, private, k.key))

    @property
    def domains(self) -> frozenset[str]:
        """Domains that have at least one signing key."""
        return frozenset(self._keys)

    def keys_for(self, from_domain: str | None, mail_from: str) -> list[SigningKey]:
        """Keys for the From: domain, else for the envelope sender's domain.

        Matching is exact: DMARC alignment is judged on the From: domain, and a
        parent domain's key only aligns under relaxed alignment, which we do not
        assume. The envelope sender's domain is the fall-back so that mail with a
        foreign From: (a patient-facing app sending "on behalf of") still carries
        a signature that the sending organisation answers for.
        """
        if from_domain and from_domain in self._keys:
            return self._keys[from_domain]
        if "@" in mail_from:
            return self._keys.get(ascii_domain(mail_from.rpartition("@")[2]), [])
        return []

    def sign(self, data: bytes, mail_from: str) -> bytes:
        """Data with DKIM-Signature field(s) prepended, or unchanged when no key applies."""
        if not self._keys:
            return data
        parsed = _split_message(data)
        if parsed is None:
            log.event("dkim_not_signed", reason="malformed header block", mail_from=mail_from)
            return data
        keys = self.keys_for(_from_domain(parsed.headers), mail_from)
        if not keys:
            return data
        names = _header_list(parsed.headers)
        body_hash = _body_hash(parsed.body)
        signed_headers = _signed_header_bytes(parsed.headers, names)
        linesep = parsed.linesep.decode("ascii")
        timestamp = int(time.time())
        fields: list[bytes] = []
        for key in keys:
            unsigned = _signature_header(key, names, body_hash, timestamp, linesep)
            name, value = unsigned.encode("ascii").split(b":", 1)
            canon_name, canon_value = _relaxed_header(name, value)
            # §3.7: the signature field itself is hashed last, without its trailing CRLF.
            to_sign = signed_headers + canon_name + b":" + canon_value.removesuffix(b"\r\n")
            sig = base64.b64encode(_sign_digest(key, to_sign)).decode("ascii")
            fields.append((unsigned + _fold_b64(sig, linesep) + linesep).encode("ascii"))
        return b"".join(fields) + data
