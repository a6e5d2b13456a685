"""The storage interface every backend implements, and the errors it raises.

SQL is written once, in the subset SQLite and PostgreSQL both accept, with `?`
placeholders; a backend that needs another placeholder style translates in one
place (gateway/store/postgres.py). Rows come back as dicts keyed by column name.

Portable SQL habits this project keeps:
- column types BIGINT, DOUBLE PRECISION, TEXT, BYTEA (SQLite accepts any type
  name and stores bytes and text unchanged);
- no auto-increment keys (ids are random text, made by the caller);
- times are Unix seconds as DOUBLE PRECISION; flags are BIGINT 0/1;
- upserts as `INSERT ... ON CONFLICT (...) DO NOTHING|DO UPDATE`, never
  `INSERT OR REPLACE`; `RETURNING` is fine (SQLite >= 3.35).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

Param = str | bytes | int | float | None
Row = dict[str, Any]


class StoreError(Exception):
    """The database failed (unreachable, locked too long, constraint, corrupt)."""


class ConflictError(StoreError):
    """A write broke a uniqueness or foreign-key constraint."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer Sealgate than this one."""


class Executor(abc.ABC):
    """Runs statements: the store itself (each statement commits) or a transaction."""

    @abc.abstractmethod
    async def execute(self, sql: str, params: Sequence[Param] = ()) -> int:
        """Run one statement; return the number of rows it changed."""

    @abc.abstractmethod
    async def fetchone(self, sql: str, params: Sequence[Param] = ()) -> Row | None:
        """Run a query; return its first row, or None."""

    @abc.abstractmethod
    async def fetchall(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        """Run a query; return every row."""


class Store(Executor):
    """A database connection (or pool) shared by the gateway, the portal and the CLI."""

    backend: str  # "sqlite" or "postgresql"

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Executor]:
        """A transaction: committed when the block ends, rolled back when it raises.

        Inside the block use the executor it yields, not the store: on SQLite the
        store's own methods wait for the transaction to end (a deadlock).
        """

    @abc.abstractmethod
    def exclusive(self) -> AbstractAsyncContextManager[Executor]:
        """A transaction that no other node runs at the same time (schema migrations)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the data lives, for logs and messages (never a password)."""
