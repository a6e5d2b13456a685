"""Idle SMTP sessions kept for reuse, per (host, address, port, TLS requirement).

A session is either in the pool or lent to exactly one delivery, so no two
transactions ever share a connection at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.outbound.session import Session

# The last part names the TLS requirement the session was opened under (e.g.
# "verified/dane"): a session is only reused for the same requirement.
PoolKey = tuple[str, str, int, str]

# A goodbye to a server that stopped answering must not hold up shutdown.
_QUIT_TIMEOUT = 10.0


@dataclass
class _Idle:
    session: Session
    timer: asyncio.TimerHandle


class SessionPool:
    """Lends idle sessions and closes the ones left unused for idle_time seconds."""

    def __init__(self, idle_time: float) -> None:
        self._idle_time = idle_time
        self._idle: dict[PoolKey, list[_Idle]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def take(self, key: PoolKey) -> Session | None:
        """The most recently used idle session for key that still looks open, if any."""
        entries = self._idle.get(key)
        while entries:
            entry = entries.pop()
            entry.timer.cancel()
            if entry.session.alive:
                if not entries:
                    del self._idle[key]
                return entry.session
        self._idle.pop(key, None)
        return None

    def give(self, key: PoolKey, session: Session) -> None:
        """Return a session after a transaction; it is kept or closed."""
        if self._closed or not session.alive:
            session.abort()
            return
        if self._idle_time <= 0:
            self._retire(session)
            return
        loop = asyncio.get_running_loop()
        entry = _Idle(session, loop.call_later(self._idle_time, self._expire, key, session))
        self._idle.setdefault(key, []).append(entry)

    def _expire(self, key: PoolKey, session: Session) -> None:
        entries = self._idle.get(key, [])
        for i, entry in enumerate(entries):
            if entry.session is session:
                del entries[i]
                break
        if not entries:
            self._idle.pop(key, None)
        self._retire(session)

    def _retire(self, session: Session) -> None:
        task = asyncio.get_running_loop().create_task(session.quit(_QUIT_TIMEOUT))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def idle_count(self) -> int:
        """How many sessions are waiting for reuse."""
        return sum(len(entries) for entries in self._idle.values())

    async def close(self) -> None:
        """QUIT every idle session and wait for the goodbyes; later returns are dropped."""
        self._closed = True
        for entries in self._idle.values():
            for entry in entries:
                entry.timer.cancel()
                self._retire(entry.session)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
