"""Bounded reading of ZIP members and gzip streams: bombs cost little and end as limit-exceeded.

Declared sizes are checked first (cheap rejection of the classic bomb), then
every member is decompressed in chunks against a cap, because headers can lie.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from policies.extract.context import Context, LimitExceeded

_CHUNK = 1 << 16
# Below this size the compression ratio says nothing: small, repetitive XML
# (spreadsheet cells, empty styles) compresses far beyond 100:1 harmlessly.
RATIO_FLOOR = 1 << 20
_ENCRYPTED_FLAG = 0x1
_AES_METHOD = 99  # WinZip AES: encrypted even when a tool forgets the flag


class EncryptedMember(Exception):
    """The member is encrypted; its content cannot be read."""


@dataclass(frozen=True)
class Member:
    """One file inside an archive, not yet decompressed."""

    name: str
    info: zipfile.ZipInfo


def open_zip(data: bytes) -> zipfile.ZipFile:
    """Open an in-memory ZIP archive (raises zipfile.BadZipFile on garbage)."""
    return zipfile.ZipFile(io.BytesIO(data))


def members(archive: zipfile.ZipFile) -> Iterator[Member]:
    """Yield the archive's files (directories left out), in central-directory order."""
    for info in archive.infolist():
        if not info.is_dir():
            yield Member(info.filename, info)


def _cap(ctx: Context, declared: int, compressed: int) -> int:
    """How many bytes this member may decompress to before it counts as a bomb."""
    by_ratio = max(RATIO_FLOOR, compressed * ctx.limits.max_ratio)
    return min(ctx.remaining_bytes(), by_ratio, max(declared, 0) + _CHUNK)


def read_member(archive: zipfile.ZipFile, member: Member, ctx: Context) -> bytes:
    """Decompress one member within the part, ratio and message budgets."""
    info = member.info
    if info.flag_bits & _ENCRYPTED_FLAG or info.compress_type == _AES_METHOD:
        raise EncryptedMember(member.name)
    if info.file_size > ctx.limits.max_part_bytes:
        raise LimitExceeded("member too large")
    if info.file_size > RATIO_FLOOR and info.file_size > info.compress_size * ctx.limits.max_ratio:
        raise LimitExceeded("member compression ratio too high")
    cap = _cap(ctx, info.file_size, info.compress_size)
    chunks: list[bytes] = []
    size = 0
    with archive.open(info) as stream:
        while True:
            ctx.check_time()
            chunk = stream.read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > cap:
                raise LimitExceeded("member decompresses beyond its cap")
            chunks.append(chunk)
    ctx.charge_bytes(size)
    return b"".join(chunks)


def read_named(archive: zipfile.ZipFile, name: str, ctx: Context) -> bytes | None:
    """Read the member called `name`, or return None if there is none."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    return read_member(archive, Member(name, info), ctx)


def gunzip(data: bytes, ctx: Context) -> bytes:
    """Decompress a gzip stream (all members) within the ratio and message budgets.

    gzip declares no trustworthy size, so the ratio is checked as we go against
    the compressed bytes consumed so far: a bomb stops after about a mebibyte.
    """
    cap = ctx.remaining_bytes()
    ratio = ctx.limits.max_ratio
    out: list[bytes] = []
    size = 0
    consumed = 0
    rest = data
    while rest:
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
        buffer = rest
        while True:
            ctx.check_time()
            chunk = decompressor.decompress(buffer, _CHUNK)
            consumed += len(buffer) - len(decompressor.unconsumed_tail)
            buffer = decompressor.unconsumed_tail
            size += len(chunk)
            if size > cap or (size > RATIO_FLOOR and size > consumed * ratio):
                raise LimitExceeded("gzip stream decompresses beyond its cap")
            out.append(chunk)
            # Output can still be pending after the input is consumed: loop until none comes.
            if decompressor.eof or (not buffer and not chunk):
                break
        if not decompressor.eof:
            raise zlib.error("truncated gzip stream")
        rest = decompressor.unused_data.lstrip(b"\x00")
    ctx.charge_bytes(size)
    return b"".join(out)
