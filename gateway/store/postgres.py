"""The scale-out backend: PostgreSQL through psycopg 3 and a connection pool.

Several gateway and portal nodes point `storage.url` at one database. SQL
arrives in the shared dialect with `?` placeholders and is translated here,
the one place that knows psycopg's `%s` style. Schema migrations serialise on
a transaction-scoped advisory lock, so nodes starting together take turns.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway.store.base import ConflictError, Executor, Param, Row, Store, StoreError

# pg_advisory_xact_lock key for schema migrations ("SEALGATE" in ASCII).
_MIGRATION_LOCK = 0x5345414C47415445
DEFAULT_CONNECT_TIMEOUT = 10.0


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """The shared dialect's `?` placeholders in psycopg's style (a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def redact(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
    except ValueError:
        return "postgresql://(unparsable URL)"
    return f"postgresql://{user}{host}{port}{parts.path}"


def _wrap(exc: Exception, where: str) -> StoreError:
    if isinstance(exc, psycopg.errors.IntegrityError):
        return ConflictError(f"{where}: {exc}")
    if isinstance(exc, PoolTimeout):
        return StoreError(f"{where}: no database connection available ({exc})")
    return StoreError(f"{where}: {exc}")


class _Conn(Executor):
    """Statements on one pooled connection (inside its transaction when there is one)."""

    def __init__(self, conn: psycopg.AsyncConnection[Row], where: str) -> None:
        self._conn = conn
        self._where = where

    async def _run(self, sql: str, params: Sequence[Param]) -> psycopg.AsyncCursor[Row]:
        try:
            return await self._conn.execute(translate(sql), tuple(params) if params else None)
        except psycopg.Error as exc:
            raise _wrap(exc, self._where) from None

    async def execute(self, sql: str, params: Sequence[Param] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        return (await self._run(sql, params)).rowcount

    async def fetchone(self, sql: str, params: Sequence[Param] = ()) -> Row | None:
        """Run a query; return its first row, or None."""
        cur = await self._run(sql, params)
        try:
            return await cur.fetchone()
        except psycopg.Error as exc:
            raise _wrap(exc, self._where) from None

    async def fetchall(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        """Run a query; return every row."""
        cur = await self._run(sql, params)
        try:
            return await cur.fetchall()
        except psycopg.Error as exc:
            raise _wrap(exc, self._where) from None


class PostgresStore(Store):
    """A pool of connections to one PostgreSQL database."""

    backend = "postgresql"

    def __init__(self, pool: AsyncConnectionPool[Any], where: str) -> None:
        self._pool = pool
        self._where = where

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> PostgresStore:
        """Connect to the database at url (fails with the server's reason, not a timeout)."""
        where = redact(url)
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": max(1, int(connect_timeout)),
        }
        # One direct connection first: a refused password or unknown database is
        # reported as such, where the pool would only say it timed out.
        try:
            probe = await psycopg.AsyncConnection.connect(url, **kwargs)
        except psycopg.Error as exc:
            raise _wrap(exc, where) from None
        await probe.close()
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs=kwargs,
            open=False,
            timeout=connect_timeout,
            # A node outlives database restarts: a connection is checked before use.
            check=AsyncConnectionPool.check_connection,
            name="sealgate",
        )
        try:
            await pool.open(wait=True, timeout=connect_timeout)
        except (PoolTimeout, psycopg.Error) as exc:
            await pool.close()
            raise _wrap(exc, where) from None
        return cls(pool, where)

    def describe(self) -> str:
        """Where the data lives (no password)."""
        return self._where

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Row]]:
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.Error) as exc:
            raise _wrap(exc, self._where) from None

    async def execute(self, sql: str, params: Sequence[Param] = ()) -> int:
        """Run one statement (committed at once); return the rows it changed."""
        async with self._connection() as conn:
            return await _Conn(conn, self._where).execute(sql, params)

    async def fetchone(self, sql: str, params: Sequence[Param] = ()) -> Row | None:
        """Run a query; return its first row, or None."""
        async with self._connection() as conn:
            return await _Conn(conn, self._where).fetchone(sql, params)

    async def fetchall(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        """Run a query; return every row."""
        async with self._connection() as conn:
            return await _Conn(conn, self._where).fetchall(sql, params)

    @asynccontextmanager
    async def _transaction(self, lock: bool) -> AsyncIterator[Executor]:
        async with self._connection() as conn:
            try:
                async with conn.transaction():
                    tx = _Conn(conn, self._where)
                    if lock:
                        await tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
                    yield tx
            except psycopg.Error as exc:
                raise _wrap(exc, self._where) from None

    def transaction(self) -> AbstractAsyncContextManager[Executor]:
        """A transaction on one pooled connection (READ COMMITTED)."""
        return self._transaction(lock=False)

    def exclusive(self) -> AbstractAsyncContextManager[Executor]:
        """A transaction holding the cluster-wide migration lock until it ends."""
        return self._transaction(lock=True)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._pool.close()
