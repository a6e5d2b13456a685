"""The storage interface against SQLite and a real PostgreSQL: same SQL, same results."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.config import StorageConfig
from gateway.store import ConflictError, SchemaTooNew, Store, StoreError, open_store, sqlite_path
from gateway.store.postgres import redact, translate
from gateway.store.schema import LATEST, MIGRATIONS, Migration, current_version, migrate
from gateway.store.sqlite import SqliteStore
from tests.peers.postgres import PostgresServer, server_for_tests

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    yield from server_for_tests()


def storage_for(backend: str, request: pytest.FixtureRequest) -> StorageConfig:
    if backend == "sqlite":
        return StorageConfig()
    server: PostgresServer = request.getfixturevalue("pg_server")
    return StorageConfig(url=server.create_database())


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest) -> StorageConfig:
    """A config naming a fresh, empty database of each backend."""
    return storage_for(request.param, request)


@pytest.fixture
async def store(storage: StorageConfig, tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(storage, tmp_path)
    try:
        yield s
    finally:
        await s.close()


async def make_table(store: Store) -> None:
    await store.execute(
        "CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL, f DOUBLE PRECISION, b BYTEA)"
    )


# --- the dialect both accept ------------------------------------------------------------


async def test_values_round_trip(store: Store) -> None:
    await make_table(store)
    blob = bytes(range(256)) * 4
    assert (
        await store.execute(
            "INSERT INTO t (k, n, f, b) VALUES (?, ?, ?, ?)", ("ключ-1", 2**40, 1.5, blob)
        )
        == 1
    )
    await store.execute("INSERT INTO t (k, n, f, b) VALUES (?, ?, ?, ?)", ("k2", -3, None, None))
    row = await store.fetchone("SELECT k, n, f, b FROM t WHERE k = ?", ("ключ-1",))
    assert row == {"k": "ключ-1", "n": 2**40, "f": 1.5, "b": blob}
    rows = await store.fetchall("SELECT k, f FROM t ORDER BY n")
    assert rows == [{"k": "k2", "f": None}, {"k": "ключ-1", "f": 1.5}]
    assert await store.fetchone("SELECT k FROM t WHERE k = ?", ("none",)) is None
    assert await store.execute("UPDATE t SET n = n + 1") == 2
    assert await store.execute("DELETE FROM t WHERE k = ?", ("nobody",)) == 0


async def test_percent_signs_and_question_marks_in_values(store: Store) -> None:
    await make_table(store)
    await store.execute("INSERT INTO t (k, n) VALUES (?, ?)", ("100% sure?", 1))
    row = await store.fetchone("SELECT k FROM t WHERE k LIKE ?", ("100%",))
    assert row == {"k": "100% sure?"}


async def test_upsert_and_returning(store: Store) -> None:
    await make_table(store)
    sql = (
        "INSERT INTO t (k, n) VALUES (?, ?) "
        "ON CONFLICT (k) DO UPDATE SET n = t.n + excluded.n RETURNING n"
    )
    assert await store.fetchone(sql, ("a", 5)) == {"n": 5}
    assert await store.fetchone(sql, ("a", 2)) == {"n": 7}
    assert (
        await store.execute(
            "INSERT INTO t (k, n) VALUES (?, ?) ON CONFLICT (k) DO NOTHING", ("a", 1)
        )
        == 0
    )


async def test_unique_violation_is_a_conflict(store: Store) -> None:
    await make_table(store)
    await store.execute("INSERT INTO t (k, n) VALUES (?, ?)", ("a", 1))
    with pytest.raises(ConflictError):
        await store.execute("INSERT INTO t (k, n) VALUES (?, ?)", ("a", 2))
    # The store is still usable after the error.
    assert await store.fetchone("SELECT n FROM t") == {"n": 1}


async def test_bad_sql_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.fetchone("SELECT * FROM no_such_table")
    assert await store.fetchone("SELECT 1 AS one") == {"one": 1}


# --- transactions --------------------------------------------------------------------------


async def test_transaction_commits_or_rolls_back(store: Store) -> None:
    await make_table(store)
    async with store.transaction() as tx:
        await tx.execute("INSERT INTO t (k, n) VALUES (?, ?)", ("kept", 1))
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO t (k, n) VALUES (?, ?)", ("dropped", 1))
            assert await tx.fetchone("SELECT k FROM t WHERE k = ?", ("dropped",))
            raise RuntimeError("abandon")
    with pytest.raises(ConflictError):
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO t (k, n) VALUES (?, ?)", ("also dropped", 1))
            await tx.execute("INSERT INTO t (k, n) VALUES (?, ?)", ("kept", 2))
    assert await store.fetchall("SELECT k, n FROM t") == [{"k": "kept", "n": 1}]


async def test_concurrent_transactions_all_commit(store: Store) -> None:
    await make_table(store)
    await store.execute("INSERT INTO t (k, n) VALUES (?, ?)", ("c", 0))

    async def bump(i: int) -> None:
        async with store.transaction() as tx:
            await tx.fetchone("SELECT n FROM t WHERE k = ?", ("c",))
            await asyncio.sleep(0)  # let the other transactions run meanwhile
            await tx.execute("UPDATE t SET n = n + 1 WHERE k = ?", ("c",))
            await tx.execute("INSERT INTO t (k, n) VALUES (?, ?)", (f"x{i}", i))

    await asyncio.gather(*(bump(i) for i in range(20)))
    assert await store.fetchone("SELECT n FROM t WHERE k = ?", ("c",)) == {"n": 20}
    assert len(await store.fetchall("SELECT k FROM t")) == 21


async def test_sqlite_cancelled_transaction_leaves_the_store_usable(tmp_path: Path) -> None:
    store = await open_store(StorageConfig(), tmp_path)
    try:
        await make_table(store)
        entered = asyncio.Event()

        async def stuck() -> None:
            async with store.transaction() as tx:
                await tx.execute("INSERT INTO t (k, n) VALUES (?, ?)", ("cancelled", 1))
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(stuck())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO t (k, n) VALUES (?, ?)", ("after", 1))
        assert await store.fetchall("SELECT k FROM t") == [{"k": "after"}]
    finally:
        await store.close()


# --- migrations ------------------------------------------------------------------------------


async def test_open_applies_the_schema(store: Store) -> None:
    assert await current_version(store) == LATEST
    rows = await store.fetchall("SELECT version, name FROM sealgate_schema ORDER BY version")
    assert [r["version"] for r in rows] == [m.version for m in MIGRATIONS]
    assert await store.fetchall("SELECT address FROM portal_recipients") == []
    assert await store.fetchall("SELECT id FROM portal_messages") == []


async def test_migrations_are_idempotent(storage: StorageConfig, tmp_path: Path) -> None:
    for _ in range(3):
        store = await open_store(storage, tmp_path)
        try:
            assert await migrate(store) == []
            rows = await store.fetchall("SELECT version FROM sealgate_schema")
            assert len(rows) == len(MIGRATIONS)
        finally:
            await store.close()


async def test_a_later_migration_applies_once(store: Store) -> None:
    extra = (
        *MIGRATIONS,
        Migration(LATEST + 1, "test table", ("CREATE TABLE later (k TEXT PRIMARY KEY)",)),
    )
    assert await migrate(store, extra) == [LATEST + 1]
    assert await migrate(store, extra) == []
    await store.execute("INSERT INTO later (k) VALUES (?)", ("x",))


async def test_failed_migration_changes_nothing(store: Store) -> None:
    broken = (
        *MIGRATIONS,
        Migration(
            LATEST + 1,
            "half good",
            ("CREATE TABLE half (k TEXT PRIMARY KEY)", "CREATE TABLE syntax error here"),
        ),
    )
    with pytest.raises(StoreError):
        await migrate(store, broken)
    assert await current_version(store) == LATEST
    with pytest.raises(StoreError):
        await store.fetchone("SELECT k FROM half")


async def test_newer_schema_is_refused(storage: StorageConfig, tmp_path: Path) -> None:
    store = await open_store(storage, tmp_path)
    try:
        await store.execute(
            "INSERT INTO sealgate_schema (version, name, applied_at) VALUES (?, ?, ?)",
            (LATEST + 5, "from the future", 0.0),
        )
    finally:
        await store.close()
    with pytest.raises(SchemaTooNew, match="upgrade Sealgate"):
        await open_store(storage, tmp_path)


async def test_concurrent_migrations_in_one_process(storage: StorageConfig, tmp_path: Path) -> None:
    stores = await asyncio.gather(*(open_store(storage, tmp_path, migrate=False) for _ in range(4)))
    try:
        extra = (
            *MIGRATIONS,
            Migration(LATEST + 1, "race", ("CREATE TABLE race (k TEXT PRIMARY KEY)",)),
        )
        results = await asyncio.gather(*(migrate(s, extra) for s in stores))
        applied = sorted(v for r in results for v in r)
        assert applied == [*(m.version for m in MIGRATIONS), LATEST + 1]
    finally:
        for s in stores:
            await s.close()


_OPEN_SCRIPT = """
import asyncio, sys
from pathlib import Path
from gateway.config import StorageConfig
from gateway.store import open_store

async def main():
    store = await open_store(StorageConfig(url=sys.argv[1] or None), Path(sys.argv[2]))
    await store.close()

asyncio.run(main())
"""


@pytest.mark.slow
def test_nodes_starting_at_once_migrate_once(storage: StorageConfig, tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_SCRIPT, storage.url or "", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(6)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()

    async def check() -> None:
        store = await open_store(storage, tmp_path, migrate=False)
        try:
            rows = await store.fetchall("SELECT version FROM sealgate_schema ORDER BY version")
            assert [r["version"] for r in rows] == [m.version for m in MIGRATIONS]
        finally:
            await store.close()

    asyncio.run(check())


# --- backend specifics -------------------------------------------------------------------------


async def test_sqlite_file_is_private_and_in_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = await open_store(StorageConfig(), data_dir)
    await store.close()
    db = data_dir / "sealgate.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o077 == 0


def test_sqlite_urls(tmp_path: Path) -> None:
    assert sqlite_path(StorageConfig(url="sqlite:///db/x.db"), tmp_path) == tmp_path / "db/x.db"
    assert sqlite_path(StorageConfig(url="sqlite:////srv/x.db"), tmp_path) == Path("/srv/x.db")
    assert sqlite_path(StorageConfig(url="postgresql://h/db"), tmp_path) is None
    with pytest.raises(StoreError):
        sqlite_path(StorageConfig(url="sqlite:///"), tmp_path)


async def test_sqlite_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError):
        await SqliteStore.open(blocker / "sealgate.db")


async def test_sqlite_two_processes_share_the_file(tmp_path: Path) -> None:
    store = await open_store(StorageConfig(), tmp_path)
    try:
        await make_table(store)
        code = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=30); "
            "c.execute(\"INSERT INTO t (k, n) VALUES ('other', 1)\"); c.commit()"
        )
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO t (k, n) VALUES (?, ?)", ("mine", 1))
            # Another process writes meanwhile: it waits for our write lock, not fails.
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, str(tmp_path / "sealgate.db")
            )
            await asyncio.sleep(0.2)
        assert await proc.wait() == 0
        rows = await store.fetchall("SELECT k FROM t ORDER BY k")
        assert rows == [{"k": "mine"}, {"k": "other"}]
    finally:
        await store.close()


def test_placeholders_translate_in_one_place() -> None:
    assert translate("SELECT a FROM t WHERE b = ? AND c LIKE '%x'") == (
        "SELECT a FROM t WHERE b = %s AND c LIKE '%%x'"
    )


def test_redacted_url_has_no_password() -> None:
    text = redact("postgresql://gw:s3cr3t-pw@db.example:5433/sealgate")
    assert "s3cr3t" not in text
    assert text == "postgresql://gw@db.example:5433/sealgate"


async def test_postgres_wrong_password_names_no_secret(pg_server: PostgresServer) -> None:
    url = pg_server.url().replace(pg_server.password, "wrong-password-123")
    with pytest.raises(StoreError) as info:
        await open_store(StorageConfig(url=url), Path(os.devnull))
    assert "wrong-password-123" not in str(info.value)
    assert pg_server.password not in str(info.value)
    assert "authentication" in str(info.value)


async def test_postgres_unreachable_is_a_store_error() -> None:
    # Nothing listens on this loopback corner's .2.
    with pytest.raises(StoreError):
        await open_store(StorageConfig(url="postgresql://u:p@127.0.86.2:1/db"), Path(os.devnull))
