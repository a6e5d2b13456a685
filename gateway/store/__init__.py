"""Shared state behind one small interface: SQLite under data_dir, or PostgreSQL.

`open_store` picks the backend from `storage.url` (importing it only then, so
psycopg stays optional for single-machine installs), opens it and applies any
pending schema migrations. Callers then use `Store` (gateway/store/base.py).
"""

from __future__ import annotations

from pathlib import Path

from gateway.config import StorageConfig
from gateway.store.base import ConflictError, Executor, Row, SchemaTooNew, Store, StoreError

__all__ = [
    "DEFAULT_FILENAME",
    "ConflictError",
    "Executor",
    "Row",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "open_store",
    "sqlite_path",
]

DEFAULT_FILENAME = "sealgate.db"
_SQLITE_PREFIX = "sqlite:///"


def sqlite_path(storage: StorageConfig, data_dir: Path) -> Path | None:
    """The SQLite file the config names, or None when it names PostgreSQL.

    As in SQLAlchemy, "sqlite:///rel/x.db" is relative (here: to data_dir) and
    "sqlite:////abs/x.db" is absolute.
    """
    url = storage.url
    if url is None:
        return data_dir / DEFAULT_FILENAME
    if url.startswith(_SQLITE_PREFIX):
        rest = url[len(_SQLITE_PREFIX) :]
        if not rest or rest.endswith("/"):
            raise StoreError(f"storage.url {url!r} names no file")
        return data_dir / rest  # an absolute rest replaces data_dir
    return None


async def open_store(storage: StorageConfig, data_dir: Path, *, migrate: bool = True) -> Store:
    """Open the configured database and bring its schema up to date."""
    path = sqlite_path(storage, data_dir)
    store: Store
    if path is not None:
        from gateway.store.sqlite import SqliteStore

        store = await SqliteStore.open(path)
    else:
        assert storage.url is not None
        from gateway.store.postgres import PostgresStore

        store = await PostgresStore.open(storage.url)
    if migrate:
        from gateway.store.schema import migrate as apply

        try:
            await apply(store)
        except BaseException:
            await store.close()
            raise
    return store
