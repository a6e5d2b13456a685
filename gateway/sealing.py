"""Encryption at rest: blobs sealed with a per-blob key that a master key wraps.

Blob format, version 1 (all lengths in bytes):

    1   version (0x01)
    8   key id: names the master key without revealing it (HMAC of a constant)
    12  nonce for the data key wrap
    48  data key (32) wrapped with AES-256-GCM under the master key, plus its tag
    12  nonce for the body
    n   body ciphertext (AES-256-GCM under the data key), then its 16-byte tag

The body's associated data is the 81-byte header followed by the caller's aad, so
a blob moved to another record (another message id) or with a swapped header
fails to open. The data key wrap also binds the caller's aad.

cryptography holds the GIL while it encrypts, so bodies above a megabyte go
through the streaming interface in slices: a worker thread sealing a 50 MB
message then leaves the event loop room to run between slices.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.safeio import fsync_dir

VERSION = 1
KEY_SIZE = 32
KEY_FILENAME = "master.key"

_KEY_ID_SIZE = 8
_NONCE_SIZE = 12
_TAG_SIZE = 16
_WRAPPED_SIZE = KEY_SIZE + _TAG_SIZE
_HEADER_SIZE = 1 + _KEY_ID_SIZE + _NONCE_SIZE + _WRAPPED_SIZE + _NONCE_SIZE
_STREAM_THRESHOLD = 1 << 20
_SLICE = 256 * 1024


class SealError(Exception):
    """A blob cannot be opened: tampered, truncated, unknown format or wrong key."""


class WrongKeyError(SealError):
    """The blob was sealed under a different master key."""


class KeyFileError(Exception):
    """The master key file is missing, unsafe or malformed."""


def default_key_path(data_dir: Path) -> Path:
    """Where the gateway keeps its master key inside data_dir."""
    return data_dir / KEY_FILENAME


def _check_key_file(path: Path, fd: int) -> bytes:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: master key is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: master key file is readable or writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`"
        )
    raw = os.read(fd, KEY_SIZE + 1)
    if len(raw) != KEY_SIZE:
        raise KeyFileError(
            f"{path}: master key file must hold exactly {KEY_SIZE} bytes, found {len(raw)}"
        )
    return raw


class MasterKey:
    """The long-lived key that wraps every blob's data key."""

    __slots__ = ("_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"a master key is {KEY_SIZE} bytes")
        self._key = bytes(key)
        self.key_id = hmac.digest(self._key, b"sealgate master key id", hashlib.sha256)[
            :_KEY_ID_SIZE
        ]

    def __repr__(self) -> str:
        return f"MasterKey(id={self.key_id.hex()})"

    @classmethod
    def generate(cls) -> MasterKey:
        """A fresh random key (not stored anywhere)."""
        return cls(secrets.token_bytes(KEY_SIZE))

    @classmethod
    def load(cls, path: Path) -> MasterKey:
        """Read an existing key file; refuse one that group or others can access."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise KeyFileError(f"{path}: master key file does not exist") from None
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot open master key: {exc.strerror}") from None
        try:
            return cls(_check_key_file(path, fd))
        finally:
            os.close(fd)

    @classmethod
    def load_or_create(cls, path: Path) -> MasterKey:
        """Load the key at path, or create it (mode 0600, fsynced) on first start."""
        try:
            return cls.load(path)
        except KeyFileError:
            if path.exists() or path.is_symlink():
                raise
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(KEY_SIZE)
        # Written under a temporary name and linked into place, so a crash never
        # leaves a short key file and two processes starting together agree on one key.
        tmp = path.with_name(f".{path.name}.new{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            if os.write(fd, key) != KEY_SIZE:
                raise KeyFileError(f"{path}: short write while creating the master key")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return cls.load(path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
        return cls(key)

    # --- sealing ---------------------------------------------------------------

    def seal_parts(self, plaintext: bytes | memoryview, aad: bytes) -> Iterator[bytes]:
        """Seal plaintext; yield the blob in pieces (write them out without joining)."""
        data_key = secrets.token_bytes(KEY_SIZE)
        prefix = bytes([VERSION]) + self.key_id
        wrap_nonce = secrets.token_bytes(_NONCE_SIZE)
        wrapped = AESGCM(self._key).encrypt(wrap_nonce, data_key, prefix + aad)
        body_nonce = secrets.token_bytes(_NONCE_SIZE)
        header = prefix + wrap_nonce + wrapped + body_nonce
        yield header
        if len(plaintext) <= _STREAM_THRESHOLD:
            yield AESGCM(data_key).encrypt(body_nonce, plaintext, header + aad)
            return
        enc = Cipher(algorithms.AES(data_key), modes.GCM(body_nonce)).encryptor()
        enc.authenticate_additional_data(header + aad)
        view = memoryview(plaintext)
        for start in range(0, len(view), _SLICE):
            yield enc.update(view[start : start + _SLICE])
        yield enc.finalize() + enc.tag

    def seal(self, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        """Encrypt and authenticate plaintext, bound to aad (e.g. a record id)."""
        return b"".join(self.seal_parts(plaintext, aad))

    def unseal_record(self, raw: bytes, aad_prefix: bytes) -> bytes:
        """Open a record stored as a header line, then its body sealed with aad_prefix + header.

        The spool and the quarantine keep their files this way, so that the
        readable header (envelope, state) cannot be swapped between bodies.
        """
        end = raw.find(b"\n")
        if end < 0:
            raise SealError("no header line")
        return self.unseal(memoryview(raw)[end + 1 :], aad_prefix + raw[:end])

    def unseal(self, blob: bytes | memoryview, aad: bytes) -> bytes:
        """Open a blob made by seal with the same aad; raise SealError otherwise."""
        view = memoryview(blob)
        if len(view) < 1:
            raise SealError("empty blob")
        if view[0] != VERSION:
            raise SealError(f"unsupported sealed format version {view[0]}")
        if len(view) < _HEADER_SIZE + _TAG_SIZE:
            raise SealError("sealed blob is truncated")
        header = bytes(view[:_HEADER_SIZE])
        prefix = header[: 1 + _KEY_ID_SIZE]
        if not hmac.compare_digest(prefix[1:], self.key_id):
            raise WrongKeyError(
                f"sealed under master key {prefix[1:].hex()}, not {self.key_id.hex()}"
            )
        pos = len(prefix)
        wrap_nonce = header[pos : pos + _NONCE_SIZE]
        pos += _NONCE_SIZE
        wrapped = header[pos : pos + _WRAPPED_SIZE]
        body_nonce = header[pos + _WRAPPED_SIZE :]
        try:
            data_key = AESGCM(self._key).decrypt(wrap_nonce, wrapped, prefix + aad)
        except InvalidTag:
            raise SealError("sealed blob failed authentication (tampered or wrong aad)") from None
        body = view[_HEADER_SIZE:]
        try:
            if len(body) <= _STREAM_THRESHOLD + _TAG_SIZE:
                return AESGCM(data_key).decrypt(body_nonce, body, header + aad)
            tag = bytes(body[-_TAG_SIZE:])
            dec = Cipher(algorithms.AES(data_key), modes.GCM(body_nonce, tag)).decryptor()
            dec.authenticate_additional_data(header + aad)
            ct = body[:-_TAG_SIZE]
            parts = [dec.update(ct[s : s + _SLICE]) for s in range(0, len(ct), _SLICE)]
            parts.append(dec.finalize())
            return b"".join(parts)
        except InvalidTag:
            raise SealError("sealed blob failed authentication (tampered or wrong aad)") from None
