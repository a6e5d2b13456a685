"""Budgets and hostile containers: bombs, encryption, depth, size, time, part counts."""

from __future__ import annotations

from policies.extract import Limits, extract
from tests.policies.fixtures.build import (
    gzip_bomb,
    make_message,
    make_zip,
    mark_encrypted,
    zero_bomb,
)
from tests.policies.fixtures.look import ALLOWED_REASONS, all_text, reasons, texts


def _attach(*files: tuple[str, bytes]) -> bytes:
    return make_message(
        "body text", attachments=[(n, d, "application/octet-stream") for n, d in files]
    )


def test_zip_bomb_is_limit_exceeded_without_inflating_it() -> None:
    # 1 GiB of zeros in about 1 MiB; the declared ratio alone condemns it, so
    # extraction never allocates the gigabyte (this would take seconds and memory).
    result = extract(_attach(("bomb.zip", zero_bomb(1 << 30))))
    assert reasons(result) == {"attachment 2 (.zip)/member 1 (.txt)": "limit-exceeded"}
    assert texts(result)["body/1 text/plain"] == "body text"


def test_zip_member_with_a_lying_small_size_is_capped_by_the_header() -> None:
    bomb = bytearray(zero_bomb(64 << 20))
    # Rewrite the declared uncompressed size (local and central headers) to 1000 bytes.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = bomb.find(signature)
        bomb[at + offset : at + offset + 4] = (1000).to_bytes(4, "little")
    result = extract(_attach(("liar.zip", bytes(bomb))))
    # zipfile stops at the declared size, then the CRC check fails: a parse error.
    assert reasons(result) == {"attachment 2 (.zip)/member 1 (.txt)": "parse-error"}


def test_gzip_bomb_stops_early() -> None:
    result = extract(_attach(("data.gz", gzip_bomb(1 << 30))))
    assert reasons(result) == {"attachment 2 (.gz)": "limit-exceeded"}


def test_nested_zip_depth_is_limited() -> None:
    archive = make_zip({"core.txt": "innermost MRN 448812"})
    for level in range(8):
        archive = make_zip({f"level{level}.zip": archive})
    result = extract(_attach(("matryoshka.zip", archive)), Limits(max_depth=3))
    assert "innermost" not in all_text(result)
    assert list(reasons(result).values()) == ["limit-exceeded"]


def test_encrypted_zip_members() -> None:
    archive = mark_encrypted(make_zip({"secret.csv": "Name,SSN\nJane,123-45-6789\n"}))
    result = extract(_attach(("secret.zip", archive)))
    assert reasons(result) == {"attachment 2 (.zip)/member 1 (.csv)": "encrypted-archive"}
    assert "123-45-6789" not in all_text(result)


def test_corrupt_zip_is_parse_error() -> None:
    archive = make_zip({"a.txt": "hello"})
    result = extract(_attach(("broken.zip", archive[: len(archive) // 2])))
    assert reasons(result) == {"attachment 2 (.zip)": "parse-error"}


def test_part_too_large() -> None:
    result = extract(_attach(("big.txt", b"MRN 448812\n" * 20_000)), Limits(max_part_bytes=100_000))
    assert reasons(result) == {"attachment 2 (.txt)": "limit-exceeded"}
    assert texts(result)["body/1 text/plain"] == "body text"


def test_total_bytes_budget_stops_the_walk() -> None:
    files = [(f"f{i}.txt", b"x" * 60_000) for i in range(5)]
    result = extract(_attach(*files), Limits(max_total_bytes=150_000))
    found = reasons(result)
    assert found["message"] == "limit-exceeded"
    assert "attachment 4 (.txt)" in found  # f2.txt, the message's fourth part
    assert "attachment 5 (.txt)" not in texts(result)


def test_too_many_parts() -> None:
    archive = make_zip({f"m{i}.txt": f"member {i}" for i in range(50)})
    result = extract(_attach(("many.zip", archive)), Limits(max_parts=10))
    assert reasons(result)["message"] == "limit-exceeded"
    assert sum(1 for s in result.segments if s.location.startswith("attachment 2 (.zip)/")) < 10


def test_text_budget_truncates_and_marks() -> None:
    result = extract(_attach(("long.txt", b"word " * 10_000)), Limits(max_text_chars=1000))
    assert sum(len(s.text) for s in result.segments) == 1000
    assert reasons(result)["message"] == "limit-exceeded"


def test_time_budget_marks_the_message() -> None:
    result = extract(_attach(("a.txt", b"text")), Limits(timeout_s=0.0))
    assert reasons(result)["message"] == "limit-exceeded"


def test_multipart_nesting_bomb() -> None:
    depth = 2000
    head = b"".join(
        f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n".encode()
        for i in range(depth)
    )
    raw = (
        b"Subject: deep\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n" + head + b"MRN 1\r\n"
    )
    result = extract(raw)
    assert set(reasons(result).values()) <= ALLOWED_REASONS
    assert result.unscannable  # too deep to walk: said so, not silently passed
