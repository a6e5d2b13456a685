"""The embedded backend: one SQLite file under data_dir, no server to run.

SQLite calls block, so every call runs in one dedicated thread with its own
connection; an asyncio lock gives a transaction that thread to itself until
it ends. Several processes (the gateway, its delivery process, the portal,
`sealgate portal ...`) share the file: WAL lets readers carry on while one
writer writes, transactions start with BEGIN IMMEDIATE so two writers queue
for the lock instead of deadlocking, and the busy timeout is how long they
queue. synchronous=FULL: a deposit the queue counts as delivered must survive
a power cut.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from gateway.store.base import ConflictError, Executor, Param, Row, Store, StoreError

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT = 30.0


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Set WAL mode, waiting out other connections that are setting it too.

    Changing the journal mode of a new file can fail at once with "database is
    locked" while another connection holds the lock, without SQLite's busy
    handler waiting: retry until the busy timeout.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


def _wrap(exc: sqlite3.Error, where: str) -> StoreError:
    if isinstance(exc, sqlite3.IntegrityError):
        return ConflictError(f"{where}: {exc}")
    return StoreError(f"{where}: {exc}")


class _Tx(Executor):
    """Statements inside a transaction (the caller holds the store's lock)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def execute(self, sql: str, params: Sequence[Param] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        return await self._store._call(self._store._execute, sql, params)

    async def fetchone(self, sql: str, params: Sequence[Param] = ()) -> Row | None:
        """Run a query; return its first row, or None."""
        return await self._store._call(self._store._fetchone, sql, params)

    async def fetchall(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        """Run a query; return every row."""
        return await self._store._call(self._store._fetchall, sql, params)


class SqliteStore(Store):
    """A SQLite database file, used from asyncio through one worker thread."""

    backend = "sqlite"

    def __init__(self, path: Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> SqliteStore:
        """Open (creating when needed, mode 0600) the database file at path."""
        store = cls(path, busy_timeout=busy_timeout)
        try:
            await store._call(store._connect)
        except BaseException:
            store._thread.shutdown(wait=False)
            raise
        return store

    def describe(self) -> str:
        """Where the data lives."""
        return f"sqlite:{self.path}"

    # --- runs in the worker thread ------------------------------------------------------

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Created 0600 before SQLite sees it: the -wal and -shm files copy its mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            raise StoreError(f"{self.describe()}: {exc.strerror or exc}") from None
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise _wrap(exc, self.describe()) from None
        try:
            conn.row_factory = _dict_row
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            _switch_to_wal(conn, self._busy_timeout)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            conn.close()
            raise _wrap(exc, self.describe()) from None
        self._conn = conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.describe()}: the store is closed")
        return self._conn

    def _guard(self, func: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return func(self._connection())
        except sqlite3.Error as exc:
            raise _wrap(exc, self.describe()) from None

    def _execute(self, sql: str, params: Sequence[Param]) -> int:
        return self._guard(lambda c: c.execute(sql, params).rowcount)

    def _fetchone(self, sql: str, params: Sequence[Param]) -> Row | None:
        row: Row | None = self._guard(lambda c: c.execute(sql, params).fetchone())
        return row

    def _fetchall(self, sql: str, params: Sequence[Param]) -> list[Row]:
        rows: list[Row] = self._guard(lambda c: c.execute(sql, params).fetchall())
        return rows

    def _clear_stale(self) -> None:
        # A caller cancelled in the middle of a transaction leaves it open on the
        # connection; whoever takes the lock next ends it before doing anything.
        conn = self._connection()
        if conn.in_transaction:
            self._guard(lambda c: c.rollback())

    def _begin(self) -> None:
        self._clear_stale()
        self._guard(lambda c: c.execute("BEGIN IMMEDIATE"))

    def _end(self, commit: bool) -> None:
        conn = self._connection()
        if not conn.in_transaction:
            return
        if commit:
            self._guard(lambda c: c.execute("COMMIT"))
        else:
            self._guard(lambda c: c.rollback())

    def _close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            if conn.in_transaction:
                conn.rollback()
            conn.close()

    # --- asyncio side ------------------------------------------------------------------------

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreError(f"{self.describe()}: the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, func, *args)

    async def _single(self, func: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            await self._call(self._clear_stale)
            return await self._call(func, *args)

    async def execute(self, sql: str, params: Sequence[Param] = ()) -> int:
        """Run one statement in its own transaction; return the rows it changed."""
        return await self._single(self._execute, sql, params)

    async def fetchone(self, sql: str, params: Sequence[Param] = ()) -> Row | None:
        """Run a query; return its first row, or None."""
        return await self._single(self._fetchone, sql, params)

    async def fetchall(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        """Run a query; return every row."""
        return await self._single(self._fetchall, sql, params)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Executor]:
        async with self._lock:
            await self._call(self._begin)
            try:
                yield _Tx(self)
            except BaseException:
                # The thread runs jobs in order: even when this wait is cancelled, the
                # rollback runs before the next lock holder's first statement.
                await asyncio.shield(self._call(self._end, False))
                raise
            await asyncio.shield(self._call(self._end, True))

    def transaction(self) -> AbstractAsyncContextManager[Executor]:
        """A write transaction (BEGIN IMMEDIATE: the file's single writer lock)."""
        return self._transaction()

    def exclusive(self) -> AbstractAsyncContextManager[Executor]:
        """Every SQLite write transaction is exclusive already."""
        return self._transaction()

    async def close(self) -> None:
        """Close the connection and stop the worker thread (again: nothing to do)."""
        if self._closed:
            return
        async with self._lock:
            await self._call(self._close)
            self._closed = True
        self._thread.shutdown(wait=False)
