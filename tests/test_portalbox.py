"""Portal messages at rest, against SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.config import StorageConfig
from gateway.portalbox import (
    GoneError,
    KeyRequiredError,
    PortalBox,
    PortalError,
    RevokedError,
    expire_periodically,
    token_hash,
)
from gateway.sealing import MasterKey, SealError
from gateway.store import Store, open_store
from tests.peers.postgres import PostgresServer, server_for_tests

SECRET = b"Diagnosis: confidential-marker-5521 (oncology)"
MESSAGE = b"Subject: your results\r\nFrom: dr@clinic.example\r\n\r\n" + SECRET + b"\r\n"
QID = "0123456789ABCDEFGH"
QID2 = "0123456789ABCDEFGJ"
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    yield from server_for_tests()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        storage = StorageConfig()
    else:
        server: PostgresServer = request.getfixturevalue("pg_server")
        storage = StorageConfig(url=server.create_database())
    s = await open_store(storage, tmp_path)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def box(store: Store, master: MasterKey, clock: Clock) -> PortalBox:
    return PortalBox(store, master, clock=clock)


async def stored_bodies(store: Store) -> list[bytes]:
    rows = await store.fetchall("SELECT body FROM portal_messages")
    return [bytes(r["body"]) for r in rows]


# --- deposit and lookup ------------------------------------------------------------------


async def test_deposit_then_open_by_token(box: PortalBox, clock: Clock) -> None:
    dep = await box.deposit(QID, "pat@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    assert not dep.reused and dep.key is None
    assert len(dep.token) == 43  # 256 bits, base64url
    assert dep.link("https://portal.example/") == f"https://portal.example/m/{dep.token}"
    found = await box.by_token(dep.token)
    assert found is not None and found == dep.message
    assert found.queue_id == QID and found.recipient == "pat@mail.example"
    assert found.sender == "dr@clinic.example"
    assert found.size == len(MESSAGE) and not found.sealed_link
    assert found.expires_at == clock.now + DAY
    assert found.state(clock.now) == "active"
    assert await box.read_body(found) == MESSAGE


async def test_unknown_or_malformed_tokens_find_nothing(box: PortalBox) -> None:
    await box.deposit(QID, "pat@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    assert await box.by_token("A" * 43) is None
    assert await box.by_token("../../etc/passwd") is None
    assert await box.by_token("") is None


async def test_tokens_are_stored_hashed_and_bodies_sealed(
    box: PortalBox, store: Store, tmp_path: Path
) -> None:
    dep = await box.deposit(QID, "pat@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    row = await store.fetchone("SELECT token_hash, body FROM portal_messages")
    assert row is not None
    assert bytes(row["token_hash"]) == hashlib.sha256(dep.token.encode()).digest()
    assert SECRET not in bytes(row["body"]) and b"your results" not in bytes(row["body"])
    if store.backend == "sqlite":
        # The database file and its write-ahead log, byte for byte.
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("sealgate.db*"))
        assert raw, "no database file found"
        assert SECRET not in raw and b"your results" not in raw
        assert dep.token.encode() not in raw
    else:
        text = await store.fetchall("SELECT CAST(body AS TEXT) AS b FROM portal_messages")
        assert "confidential-marker" not in str(text)


async def test_addresses_match_in_any_case(box: PortalBox, clock: Clock) -> None:
    await box.deposit(QID, "Pat@Mail.Example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    clock.now += 1
    await box.deposit(QID2, "pat@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    await box.deposit(QID, "other@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    inbox = await box.for_recipient("PAT@mail.example")
    assert [m.queue_id for m in inbox] == [QID, QID2]
    assert len(await box.list_messages()) == 3
    assert len(await box.list_messages(queue_id=QID)) == 2


async def test_retry_reuses_the_copy_with_a_new_token(box: PortalBox, store: Store) -> None:
    first = await box.deposit(QID, "pat@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    again = await box.deposit(QID, "pat@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    assert again.reused and again.message.id == first.message.id
    assert again.token != first.token
    assert await box.by_token(first.token) is None  # the earlier link no longer works
    reopened = await box.by_token(again.token)
    assert reopened is not None
    assert await box.read_body(reopened) == MESSAGE
    rows = await store.fetchall("SELECT id FROM portal_messages")
    assert len(rows) == 1


async def test_concurrent_deposits_of_one_copy_make_one_row(box: PortalBox, store: Store) -> None:
    results = await asyncio.gather(
        *(
            box.deposit(QID, "pat@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
            for _ in range(5)
        ),
        return_exceptions=True,
    )
    assert any(not isinstance(r, BaseException) for r in results)
    assert len(await store.fetchall("SELECT id FROM portal_messages")) == 1


async def test_deposit_needs_a_key(store: Store) -> None:
    with pytest.raises(PortalError):
        await PortalBox(store, None).deposit(QID, "p@x.example", "", MESSAGE, expires_in=DAY)


# --- sealed links ---------------------------------------------------------------------------


async def test_sealed_link_opens_only_with_the_key_from_the_link(
    box: PortalBox, store: Store, master: MasterKey
) -> None:
    dep = await box.deposit(
        QID, "pat@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY, sealed_link=True
    )
    assert dep.key is not None and len(dep.key) == 43
    assert dep.link("https://p.example") == f"https://p.example/m/{dep.token}#{dep.key}"
    msg = await box.by_token(dep.token)
    assert msg is not None and msg.sealed_link
    with pytest.raises(KeyRequiredError):
        await box.read_body(msg)
    with pytest.raises(KeyRequiredError):
        await box.read_body(msg, "A" * 43)
    with pytest.raises(KeyRequiredError):
        await box.read_body(msg, "not base64 at all!")
    assert await box.read_body(msg, dep.key) == MESSAGE
    # Neither the database nor the master key holds what opens it.
    (body,) = await stored_bodies(store)
    aad = b"sealgate portal v1\n" + QID.encode() + b"\npat@mail.example"
    with pytest.raises(SealError):
        master.unseal(body, aad)
    row = await store.fetchone("SELECT * FROM portal_messages")
    assert row is not None
    assert not any(
        isinstance(v, (str, bytes))
        and dep.key in (v if isinstance(v, str) else v.decode("latin-1"))
        for v in row.values()
    )


async def test_sealed_link_retry_gets_a_new_key(box: PortalBox) -> None:
    first = await box.deposit(
        QID, "pat@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY, sealed_link=True
    )
    again = await box.deposit(
        QID, "pat@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY, sealed_link=True
    )
    assert again.reused and again.key != first.key
    msg = await box.by_token(again.token)
    assert msg is not None
    assert first.key is not None and again.key is not None
    with pytest.raises(KeyRequiredError):
        await box.read_body(msg, first.key)
    assert await box.read_body(msg, again.key) == MESSAGE


# --- revoke and expire -------------------------------------------------------------------------


async def test_revoke_withdraws_every_copy(box: PortalBox, store: Store) -> None:
    a = await box.deposit(QID, "a@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    await box.deposit(QID, "b@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    other = await box.deposit(QID2, "a@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    result = await box.revoke(QID, "admin")
    assert (result.found, result.revoked) == (2, 2)
    msg = await box.by_token(a.token)
    assert msg is not None and msg.state() == "revoked" and msg.revoked_by == "admin"
    with pytest.raises(RevokedError):
        await box.read_body(msg)
    rows = await store.fetchall("SELECT queue_id, body FROM portal_messages ORDER BY queue_id")
    assert [len(bytes(r["body"])) for r in rows if r["queue_id"] == QID] == [0, 0]
    # A retried delivery does not bring it back; other messages are untouched.
    with pytest.raises(RevokedError):
        await box.deposit(QID, "a@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    kept = await box.by_token(other.token)
    assert kept is not None and await box.read_body(kept) == MESSAGE
    again = await box.revoke(QID, "admin")
    assert (again.found, again.revoked) == (2, 0)
    assert (await box.revoke("ZZZZZZZZZZZZZZZZZZ", "admin")).found == 0


async def test_revoke_one_recipient(box: PortalBox) -> None:
    await box.deposit(QID, "a@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    b = await box.deposit(QID, "b@mail.example", "dr@clinic.example", MESSAGE, expires_in=DAY)
    result = await box.revoke(QID, "admin", recipient="A@mail.example")
    assert (result.found, result.revoked) == (1, 1)
    msg = await box.by_token(b.token)
    assert msg is not None and msg.state() == "active"


async def test_expiry_erases_the_body(box: PortalBox, store: Store, clock: Clock) -> None:
    short = await box.deposit(QID, "a@mail.example", "dr@x.example", MESSAGE, expires_in=3600)
    long = await box.deposit(QID2, "a@mail.example", "dr@x.example", MESSAGE, expires_in=DAY)
    clock.now += 3601
    msg = await box.by_token(short.token)
    assert msg is not None and msg.state(clock.now) == "expired"
    with pytest.raises(GoneError):
        await box.read_body(msg)  # expired even before the sweep erases it
    assert await box.expire() == 1
    assert await box.expire() == 0
    bodies = await store.fetchall("SELECT queue_id, body FROM portal_messages")
    assert {r["queue_id"]: len(bytes(r["body"])) for r in bodies}[QID] == 0
    kept = await box.by_token(long.token)
    assert kept is not None and await box.read_body(kept) == MESSAGE
    # A retry for a recipient who was never told stores the copy again, with a new expiry.
    back = await box.deposit(QID, "a@mail.example", "dr@x.example", MESSAGE, expires_in=3600)
    assert back.reused and back.message.state(clock.now) == "active"
    assert await box.read_body(back.message) == MESSAGE


async def test_mark_viewed_once(box: PortalBox, clock: Clock) -> None:
    dep = await box.deposit(QID, "a@mail.example", "dr@x.example", MESSAGE, expires_in=DAY)
    assert await box.mark_viewed(dep.message.id)
    clock.now += 10
    assert not await box.mark_viewed(dep.message.id)
    msg = await box.get(dep.message.id)
    assert msg is not None and msg.first_viewed_at == clock.now - 10


def test_token_hash_is_sha256() -> None:
    assert token_hash("abc") == hashlib.sha256(b"abc").digest()


async def test_expiry_sweep_runs_until_cancelled(box: PortalBox, clock: Clock) -> None:
    dep = await box.deposit(QID, "a@mail.example", "dr@x.example", MESSAGE, expires_in=60)
    clock.now += 61
    task = asyncio.create_task(expire_periodically(box, interval=0.01))
    for _ in range(6000):  # a generous bound: the sweep's first pass is immediate
        msg = await box.get(dep.message.id)
        if msg is not None and msg.purged_at is not None:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    msg = await box.get(dep.message.id)
    assert msg is not None and msg.purged_at is not None
