"""Encryption at rest: format, tamper detection and the master key file."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sealing import (
    KEY_SIZE,
    KeyFileError,
    MasterKey,
    SealError,
    WrongKeyError,
    default_key_path,
)

RAW_KEY = bytes(range(32))


@pytest.fixture
def key() -> MasterKey:
    return MasterKey(RAW_KEY)


@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3_000_017])
def test_roundtrip(key: MasterKey, size: int) -> None:
    plaintext = os.urandom(size)
    blob = key.seal(plaintext, b"msg-1")
    assert size < 16 or plaintext[:16] not in blob
    assert key.unseal(blob, b"msg-1") == plaintext
    assert b"".join(key.seal_parts(plaintext, b"x")) != blob  # fresh key and nonces each time


@settings(max_examples=50, deadline=None)
@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=64))
def test_roundtrip_property(plaintext: bytes, aad: bytes) -> None:
    key = MasterKey(RAW_KEY)
    assert key.unseal(key.seal(plaintext, aad), aad) == plaintext


@pytest.mark.parametrize("size", [100, 3_000_000])
def test_documented_format(key: MasterKey, size: int) -> None:
    """Small and streamed blobs share one format that plain AES-GCM opens."""
    plaintext = os.urandom(size)
    blob = key.seal(plaintext, b"id")
    assert blob[0] == 1
    key_id, wrap_nonce, wrapped = blob[1:9], blob[9:21], blob[21:69]
    body_nonce, body = blob[69:81], blob[81:]
    assert key_id == key.key_id
    data_key = AESGCM(RAW_KEY).decrypt(wrap_nonce, wrapped, blob[:9] + b"id")
    assert len(data_key) == KEY_SIZE
    assert AESGCM(data_key).decrypt(body_nonce, body, blob[:81] + b"id") == plaintext
    assert len(blob) == 81 + size + 16


@pytest.mark.parametrize("size", [50, 2_000_000])
def test_every_byte_is_authenticated(key: MasterKey, size: int) -> None:
    blob = key.seal(os.urandom(size), b"aad")
    positions = [*range(9, 81), 81, 81 + size // 2, len(blob) - 17, len(blob) - 1]
    for pos in positions:
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises(SealError):
            key.unseal(bytes(bad), b"aad")


def test_wrong_aad_and_truncation(key: MasterKey) -> None:
    blob = key.seal(b"hello", b"message-A")
    with pytest.raises(SealError, match="authentication"):
        key.unseal(blob, b"message-B")
    for cut in (0, 1, 40, 81, len(blob) - 1):
        with pytest.raises(SealError):
            key.unseal(blob[:cut], b"message-A")
    with pytest.raises(SealError):
        key.unseal(blob + b"\0", b"message-A")


def test_unknown_version(key: MasterKey) -> None:
    blob = bytearray(key.seal(b"hello", b""))
    blob[0] = 2
    with pytest.raises(SealError, match="version 2"):
        key.unseal(bytes(blob), b"")


def test_wrong_master_key(key: MasterKey) -> None:
    blob = key.seal(b"hello", b"")
    with pytest.raises(WrongKeyError):
        MasterKey.generate().unseal(blob, b"")
    # A forged key id does not help: the wrap is still authenticated.
    other = MasterKey.generate()
    forged = blob[:1] + other.key_id + blob[9:]
    with pytest.raises(SealError):
        other.unseal(forged, b"")


def test_key_is_not_in_repr(key: MasterKey) -> None:
    assert RAW_KEY.hex() not in repr(key)
    assert key.key_id.hex() in repr(key)


# --- key file --------------------------------------------------------------------------


def test_load_or_create_makes_private_file(tmp_path: Path) -> None:
    path = default_key_path(tmp_path / "data")
    old_umask = os.umask(0)
    try:
        key = MasterKey.load_or_create(path)
    finally:
        os.umask(old_umask)
    st_ = path.stat()
    assert stat.S_IMODE(st_.st_mode) == 0o600
    assert st_.st_size == KEY_SIZE
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    again = MasterKey.load_or_create(path)
    assert again.key_id == key.key_id
    assert MasterKey.load(path).unseal(key.seal(b"x", b"a"), b"a") == b"x"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_refuses_key_readable_by_others(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    MasterKey.load_or_create(path)
    path.chmod(mode)
    for loader in (MasterKey.load, MasterKey.load_or_create):
        with pytest.raises(KeyFileError, match=str(path)) as info:
            loader(path)
        assert "chmod 600" in str(info.value)


def test_missing_or_malformed_key(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    with pytest.raises(KeyFileError, match="does not exist"):
        MasterKey.load(path)
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="exactly 32 bytes"):
        MasterKey.load_or_create(path)
    assert path.read_bytes() == b"short"  # never overwritten
    path.unlink()
    path.mkdir()
    with pytest.raises(KeyFileError):
        MasterKey.load_or_create(path)


def test_refuses_symlinked_key(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    MasterKey.load_or_create(target)
    link = tmp_path / "master.key"
    link.symlink_to(target)
    with pytest.raises(KeyFileError):
        MasterKey.load_or_create(link)


def _create_and_report(path: str, queue: multiprocessing.Queue[str]) -> None:
    queue.put(MasterKey.load_or_create(Path(path)).key_id.hex())


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_create_and_report, args=(str(path), queue)) for _ in range(8)]
    for p in procs:
        p.start()
    ids = {queue.get(timeout=60) for _ in procs}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert ids == {MasterKey.load(path).key_id.hex()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]
