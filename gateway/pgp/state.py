"""Which OpenPGP key the gateway trusts for which address, what changed, what was looked up.

A small SQLite file beside the GnuPG home (data_dir/keys/pgp/state.sqlite). The
gateway and the `sealgate keys pgp` commands open it from separate processes;
SQLite's locking keeps them apart. Every method blocks: call them in a thread.

- bindings: address -> the accepted key's fingerprint, and how it was learnt
  (admin, wkd, dns, autocrypt, attached).
- pending: keys seen for an address that differ from its accepted one; they are
  not used until an admin accepts them (the key data waits here, not in the keyring).
  A rejected one stays recorded so that seeing it again does not raise the alarm again.
- lookups: when discovery last ran for an address and what it found, so that
  absent keys are not looked up on every delivery and found ones are refreshed.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    address TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    source TEXT NOT NULL,
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    address TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    source TEXT NOT NULL,
    seen REAL NOT NULL,
    keydata BLOB NOT NULL,
    rejected INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (address, fingerprint)
);
CREATE TABLE IF NOT EXISTS lookups (
    address TEXT PRIMARY KEY,
    fingerprint TEXT,
    checked REAL NOT NULL
);
"""
_BUSY_TIMEOUT = 15.0


@dataclass(frozen=True)
class Binding:
    """The key accepted for an address."""

    address: str
    fingerprint: str
    source: str
    added: float


@dataclass(frozen=True)
class Pending:
    """A different key seen for an address that has an accepted one."""

    address: str
    fingerprint: str
    source: str
    seen: float
    keydata: bytes


@dataclass(frozen=True)
class Lookup:
    """The last discovery for an address: the fingerprint found (None: nothing) and when."""

    fingerprint: str | None
    checked: float


class KeyState:
    """The bindings, pending changes and lookup cache in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ready = False

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # One connection per call: methods run in whichever worker thread is free.
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None)
        try:
            if not self._ready:
                conn.executescript(_SCHEMA)
                self.path.chmod(0o600)
                self._ready = True
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def binding(self, address: str) -> Binding | None:
        """The accepted key for address, or None."""
        with self._db() as db:
            row = db.execute(
                "SELECT address, fingerprint, source, added FROM bindings WHERE address = ?",
                (address,),
            ).fetchone()
        return Binding(*row) if row else None

    def bindings(self) -> list[Binding]:
        """Every accepted key, by address."""
        with self._db() as db:
            rows = db.execute(
                "SELECT address, fingerprint, source, added FROM bindings ORDER BY address"
            ).fetchall()
        return [Binding(*r) for r in rows]

    def bind(self, address: str, fingerprint: str, source: str) -> None:
        """Accept fingerprint for address; pending changes for it are settled by that."""
        now = time.time()
        with self._db() as db:
            db.execute(
                "INSERT INTO bindings (address, fingerprint, source, added) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (address) DO UPDATE SET fingerprint = excluded.fingerprint, "
                "source = excluded.source, added = excluded.added",
                (address, fingerprint, source, now),
            )
            db.execute("DELETE FROM pending WHERE address = ?", (address,))
            db.execute(
                "INSERT INTO lookups (address, fingerprint, checked) VALUES (?, ?, ?) "
                "ON CONFLICT (address) DO UPDATE SET fingerprint = excluded.fingerprint, "
                "checked = excluded.checked",
                (address, fingerprint, now),
            )

    def unbind(self, address: str) -> Binding | None:
        """Forget the key accepted for address (and its pending changes); what was removed."""
        with self._db() as db:
            row = db.execute(
                "SELECT address, fingerprint, source, added FROM bindings WHERE address = ?",
                (address,),
            ).fetchone()
            db.execute("DELETE FROM bindings WHERE address = ?", (address,))
            db.execute("DELETE FROM pending WHERE address = ?", (address,))
            db.execute("DELETE FROM lookups WHERE address = ?", (address,))
        return Binding(*row) if row else None

    def addresses_of(self, fingerprint: str) -> list[str]:
        """The addresses whose accepted key is fingerprint."""
        with self._db() as db:
            rows = db.execute(
                "SELECT address FROM bindings WHERE fingerprint = ? ORDER BY address",
                (fingerprint,),
            ).fetchall()
        return [r[0] for r in rows]

    def add_pending(self, address: str, fingerprint: str, source: str, keydata: bytes) -> bool:
        """Record a changed key; True when it was not pending already (tell the admin then)."""
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO pending (address, fingerprint, source, seen, keydata) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (address, fingerprint) DO NOTHING",
                (address, fingerprint, source, time.time(), keydata),
            )
            return cur.rowcount > 0

    def pending(self, address: str | None = None) -> list[Pending]:
        """Changed keys waiting for a decision (for one address, or all)."""
        query = "SELECT address, fingerprint, source, seen, keydata FROM pending WHERE rejected = 0"
        params: tuple[str, ...] = ()
        if address is not None:
            query += " AND address = ?"
            params = (address,)
        with self._db() as db:
            rows = db.execute(query + " ORDER BY address, seen", params).fetchall()
        return [Pending(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]

    def reject_pending(self, address: str, fingerprint: str | None = None) -> int:
        """Mark pending changes for address (one, or all) as rejected; how many there were."""
        query = "UPDATE pending SET rejected = 1 WHERE rejected = 0 AND address = ?"
        params: tuple[str, ...] = (address,)
        if fingerprint is not None:
            query += " AND fingerprint = ?"
            params = (address, fingerprint)
        with self._db() as db:
            return db.execute(query, params).rowcount

    def lookup(self, address: str) -> Lookup | None:
        """The last discovery for address, or None when there was none."""
        with self._db() as db:
            row = db.execute(
                "SELECT fingerprint, checked FROM lookups WHERE address = ?", (address,)
            ).fetchone()
        return Lookup(row[0], row[1]) if row else None

    def set_lookup(self, address: str, fingerprint: str | None) -> None:
        """Remember that discovery ran now for address and what it found."""
        with self._db() as db:
            db.execute(
                "INSERT INTO lookups (address, fingerprint, checked) VALUES (?, ?, ?) "
                "ON CONFLICT (address) DO UPDATE SET fingerprint = excluded.fingerprint, "
                "checked = excluded.checked",
                (address, fingerprint, time.time()),
            )
