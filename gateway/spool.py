"""The durable, encrypted queue: the only hand-off between inbound and outbound.

Layout under data_dir/spool/:

    q/<ID>            written once: one JSON header line (envelope, size, meta),
                      then the body sealed with gateway.sealing (aad: the header)
    q/<ID>.state      delivery state, replaced atomically; absent until the
                      first delivery attempt (every recipient pending)
    q/.<name>.tmp*    files being written; leftovers of a crash, removed at start
    control/<REQ>.<action>.<target>   requests from `sealgate queue` to the daemon
    corrupt/          files that could not be parsed, kept for an operator

Durability: a message file is written to a temporary name, fsynced and renamed;
put() returns only after the directory holding the new name is fsynced too.
Concurrent puts share that directory fsync (group commit), and every write and
fsync runs in a small thread pool, several at once: each put is one hand-off to
a thread, which writes, renames and waits for a directory fsync started after
its rename (its own, or one another thread started meanwhile).

Several processes may share one spool: the daemon's inbound side puts messages,
its outbound process delivers and removes them. A put's header line (with the
message bytes) is what the spool hands to `on_new_header` subscribers, and what
`message_from_header` turns back into a QueuedMessage in the other process;
`announce` can keep the bytes that came along, so that the first read_body of a
fresh message needs no disk read.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import queue
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Iterable
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from gateway import log
from gateway.message import Envelope, QueuedMessage, RecipientStatus
from gateway.safeio import fsync_dir, write_file
from gateway.sealing import MasterKey, SealError, WrongKeyError

SPOOL_DIRNAME = "spool"
LOCK_FILENAME = "sealgate.lock"
FORMAT_VERSION = 1

ControlAction = Literal["retry", "delete"]
CONTROL_ACTIONS: tuple[ControlAction, ...] = ("retry", "delete")
ALL = "ALL"  # control target meaning every message queued when the request was made

_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
_ID_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{18}")
_RANDOM_BITS = 40
_MAX_HEADER = 16 * 1024 * 1024
_WRITE_CHUNK = 1 << 20
_STATE_SUFFIX = ".state"
_AAD_PREFIX = b"sealgate spool v1\n"
_RECIPIENT_FIELDS = frozenset(f.name for f in fields(RecipientStatus))
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
# Bodies announced with a message are kept for its first read_body, up to this much.
_FRESH_BYTES = 64 * 1024 * 1024

_T = TypeVar("_T")


class SpoolError(Exception):
    """A storage failure; inbound answers 451 4.3.0."""


class SpoolFull(SpoolError):
    """The disk (or quota) is full; inbound answers 452 4.3.1."""


class MessageNotFound(SpoolError):
    """No queued message has that id (any more)."""


class MessageCorrupt(SpoolError):
    """A message file failed to parse or authenticate; it was moved to spool/corrupt/."""


class AlreadyRunning(Exception):
    """Another sealgate process holds the data directory's lock."""


# --- queue ids -------------------------------------------------------------------


class _IdClock:
    """Keeps the ids one process makes strictly increasing, even within a millisecond."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> int:
        value = ((time.time_ns() // 1_000_000) << _RANDOM_BITS) | secrets.randbits(_RANDOM_BITS)
        with self._lock:
            value = self._last = max(value, self._last + 1)
        return value


_ID_CLOCK = _IdClock()


def new_id() -> str:
    """A unique, filename-safe id that sorts by creation time (18 base32 characters)."""
    value = _ID_CLOCK.next()
    out = []
    for _ in range(18):
        out.append(_ID_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def valid_id(text: str) -> bool:
    """True if text has the shape of a queue id (and so is safe as a file name)."""
    return _ID_RE.fullmatch(text) is not None


def _check_id(msg_id: str) -> None:
    if not valid_id(msg_id):
        raise ValueError("not a queue id")


# --- the daemon lock ---------------------------------------------------------------


class DaemonLock:
    """An exclusive flock on data_dir/sealgate.lock, held while the gateway runs."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def fileno(self) -> int:
        """The locked file's descriptor; a child process given it holds the lock too."""
        if self._fd is None:
            raise ValueError("the lock was released")
        return self._fd

    def release(self) -> None:
        """Give the lock up (closing the file releases the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DaemonLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_daemon_lock(data_dir: Path, timeout: float = 0.0) -> DaemonLock:
    """Take the data directory's lock, waiting up to timeout seconds; else AlreadyRunning."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / LOCK_FILENAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _adopt_owner(path, data_dir)
    except BaseException:
        os.close(fd)
        raise
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise AlreadyRunning(
                    f"another sealgate process{who} is using {data_dir} (lock {path})"
                ) from None
            time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
    # The pid is only informative (error messages); the flock is what counts.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DaemonLock(fd, path)


def lock_unless_running(data_dir: Path) -> DaemonLock | None:
    """The daemon lock when no gateway runs (act on files directly); None when one does.

    With None the caller hands its request to the running gateway; a gateway
    that starts between the check and the lock counts as running.
    """
    if daemon_running(data_dir):
        return None
    try:
        return acquire_daemon_lock(data_dir)
    except AlreadyRunning:
        return None


def daemon_running(data_dir: Path) -> bool:
    """True while some process holds the data directory's lock."""
    try:
        fd = os.open(data_dir / LOCK_FILENAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock if we got it
    return False


# --- helpers -----------------------------------------------------------------------


def _storage_error(exc: BaseException, what: str) -> SpoolError:
    if isinstance(exc, SpoolError):
        return exc
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return SpoolFull(f"{what}: {exc.strerror}{where}")
        return SpoolError(f"{what}: {exc.strerror or exc}{where}")
    return SpoolError(f"{what}: {type(exc).__name__}")


def _adopt_owner(path: Path, like: Path) -> None:
    """Give path the owner of like when we run as root and they differ.

    An admin running `sealgate queue ...` as root must not leave files the
    gateway's own user cannot read or replace.
    """
    if os.geteuid() != 0:
        return
    want = os.stat(like)
    have = os.stat(path, follow_symlinks=False)
    if (have.st_uid, have.st_gid) != (want.st_uid, want.st_gid):
        os.chown(path, want.st_uid, want.st_gid, follow_symlinks=False)


def _write_all(fd: int, parts: list[bytes]) -> None:
    views = [memoryview(p) for p in parts if p]
    while views:
        written = os.writev(fd, views[:512])
        while written and views:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0


def _dumps(obj: Any) -> bytes:
    # ensure_ascii keeps the header one line whatever the addresses contain.
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode()


_LEAVES = (str, int, float, type(None))


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a dataclass tree (Envelope.to_json without asdict's deep copies)."""
    if isinstance(value, _LEAVES):
        return value
    names = _FIELD_NAMES.get(type(value))
    if names is None and is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in fields(value))
    if names is not None:
        return {n: _plain(getattr(value, n)) for n in names}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _envelope_json(envelope: Envelope) -> dict[str, Any]:
    # Same shape as Envelope.to_json, which costs a deep copy per field: on the
    # put() path of every message that adds up.
    out: dict[str, Any] = _plain(envelope)
    return out


def _parse_header(line: bytes) -> tuple[str, Envelope, int, dict[str, Any]]:
    """(id, envelope, size, meta) of a message file's header line; raises ValueError."""
    try:
        head = json.loads(line)
        if head.get("v") != FORMAT_VERSION:
            raise ValueError(f"unknown format version {head.get('v')!r}")
        msg_id = head["id"]
        if not isinstance(msg_id, str) or not valid_id(msg_id):
            raise ValueError("header holds no valid message id")
        envelope = _envelope(head["envelope"])
        size = int(head["size"])
        meta = head.get("meta") or {}
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a mapping")
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    return msg_id, envelope, size, meta


def _envelope(raw: Any) -> Envelope:
    env = Envelope.from_json(raw)
    if not isinstance(env.mail_from, str) or not isinstance(raw["rcpt_to"], list):
        raise ValueError("malformed envelope")
    if not env.rcpt_to or not all(isinstance(r, str) for r in env.rcpt_to):
        raise ValueError("malformed recipient list")
    return env


@dataclass
class SpoolStats:
    """Counters for tests and metrics."""

    puts: int = 0
    dir_syncs: int = 0


class _DirSync:
    """Makes renames and unlinks in one directory durable, one fsync serving many (group commit).

    Called from the spool's I/O threads: a thread that changed the directory takes
    a ticket, then waits for a directory fsync that started after its change. While
    one fsync runs, the threads that come in meanwhile queue up; the next fsync
    covers all of them.
    """

    def __init__(self, path: Path, stats: SpoolStats) -> None:
        self._path = path
        self._stats = stats
        self._count_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._changes = 0
        self._synced = 0

    def changed(self) -> int:
        """Note a rename or unlink just done; returns the ticket to pass to sync()."""
        with self._count_lock:
            self._changes += 1
            return self._changes

    def sync(self, ticket: int) -> None:
        """Return once the change with this ticket is durable; raises OSError."""
        with self._sync_lock:
            if self._synced >= ticket:
                return  # an fsync that started after that change has completed
            with self._count_lock:
                target = self._changes
            fsync_dir(self._path)
            self._stats.dir_syncs += 1
            self._synced = target


class _IoThreads:
    """A few threads doing the spool's blocking file work for the event loop.

    Leaner than a ThreadPoolExecutor behind run_in_executor, which builds a
    concurrent Future with its own locks and chains it to an asyncio one: the
    gateway makes several of these hand-offs per message. Threads start as work
    arrives, up to count.
    """

    def __init__(self, count: int, name: str) -> None:
        self._count = count
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def run(self, func: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """Run func(*args) in a thread; the future resolves on the calling event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        if len(self._threads) < self._count:
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        self._jobs.put((loop, future, func, args))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, func, args = job
            try:
                result = func(*args)
            except BaseException as exc:
                outcome: tuple[Any, BaseException | None] = (None, exc)
            else:
                outcome = (result, None)
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

    def shutdown(self) -> None:
        """Let the threads finish the queued work and exit."""
        for _ in self._threads:
            self._jobs.put(None)


def _settle(future: asyncio.Future[Any], outcome: tuple[Any, BaseException | None]) -> None:
    if future.cancelled():
        return
    result, exc = outcome
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class _DirSyncFailed(Exception):
    """The file was written, but the directory holding its new name could not be synced."""


class _KeyedLocks:
    """One asyncio.Lock per message id, dropped when nobody uses it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


# --- the spool -----------------------------------------------------------------------


class Spool:
    """Durable encrypted message queue under data_dir/spool."""

    def __init__(self, data_dir: Path, key: MasterKey | None, *, io_threads: int = 8) -> None:
        # key may be None for read-only users that never open bodies (`queue list`).
        self.dir = data_dir / SPOOL_DIRNAME
        self.qdir = self.dir / "q"
        self.control_dir = self.dir / "control"
        self.corrupt_dir = self.dir / "corrupt"
        self._key = key
        self._pool = _IoThreads(io_threads, "spool-io")
        self._callbacks: list[Callable[[QueuedMessage], None]] = []
        self._header_callbacks: list[Callable[[bytes, bytes], None]] = []
        self._fresh: dict[str, bytes] = {}  # insertion-ordered: the oldest goes first
        self._fresh_bytes = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._locks = _KeyedLocks()
        self._abandoned: set[str] = set()
        self._started = False
        self._closed = False
        self.stats = SpoolStats()
        self._qsync = _DirSync(self.qdir, self.stats)

    # --- lifecycle ---------------------------------------------------------------

    async def start(self, *, owner: bool = True) -> None:
        """Open the spool for writing; the owner also creates directories and clears leftovers.

        Exactly one process is the owner (the daemon's main process): clearing
        temporary files is only safe where no put can be under way.
        """
        if self._closed:
            raise SpoolError("spool is closed")
        if owner:
            try:
                await self._pool.run(self._prepare)
            except OSError as exc:
                raise _storage_error(exc, "cannot prepare the spool") from exc
        self._started = True

    async def close(self) -> None:
        """Wait for pending writes, then stop the I/O threads."""
        if self._closed:
            return
        self._closed = True
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._started = False
        self._pool.shutdown()

    def _prepare(self) -> None:
        for d in (self.dir, self.qdir, self.control_dir, self.corrupt_dir):
            if not d.is_dir():
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
                _adopt_owner(d, self.dir.parent)
                # A new directory's own name must be durable before files in it are.
                fsync_dir(d.parent)
        names = set(os.listdir(self.qdir))
        for name in sorted(names):
            path = self.qdir / name
            if name.startswith("."):
                path.unlink(missing_ok=True)
                log.event("spool_leftover_removed", logging.WARNING, file=str(path))
            elif name.endswith(_STATE_SUFFIX) and valid_id(name.removesuffix(_STATE_SUFFIX)):
                if name.removesuffix(_STATE_SUFFIX) not in names:
                    # Left by a crash between the two unlinks of remove().
                    path.unlink(missing_ok=True)
                    log.event("spool_orphan_state_removed", logging.WARNING, file=str(path))
            elif not valid_id(name):
                log.event("spool_unknown_file", logging.WARNING, file=str(path))
        for name in os.listdir(self.control_dir):
            if name.startswith("."):
                (self.control_dir / name).unlink(missing_ok=True)
                log.event(
                    "spool_leftover_removed", logging.WARNING, file=str(self.control_dir / name)
                )
        fsync_dir(self.qdir)
        fsync_dir(self.control_dir)

    def _spawn(self, coro: Coroutine[Any, Any, _T], *, internal: bool = False) -> asyncio.Task[_T]:
        # Storage operations run as tasks the spool owns, so a caller being
        # cancelled never interrupts a write halfway and close() can wait for them.
        if self._closed and not internal:
            coro.close()
            raise SpoolError("spool is closed")
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(_task_done)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, func: Callable[..., _T], *args: Any) -> _T:
        return await self._pool.run(func, *args)

    # --- put ---------------------------------------------------------------------------

    def on_new(self, callback: Callable[[QueuedMessage], None]) -> None:
        """Call callback (on the loop) with each message once its put() is durable."""
        self._callbacks.append(callback)

    def on_new_header(self, callback: Callable[[bytes, bytes], None]) -> None:
        """Call callback(header line, message bytes) for each put, once it is durable.

        The line (JSON, no newline) is what another process sharing the spool
        passes to message_from_header.
        """
        self._header_callbacks.append(callback)

    def message_from_header(self, line: bytes) -> QueuedMessage:
        """The new message a header line from on_new_header describes; raises ValueError."""
        msg_id, envelope, size, meta = _parse_header(line)
        return QueuedMessage(
            id=msg_id,
            envelope=envelope,
            size=size,
            recipients=tuple(RecipientStatus(a) for a in envelope.rcpt_to),
            next_attempt=0.0,
            meta=meta,
        )

    def announce(self, msg: QueuedMessage, body: bytes | None = None) -> None:
        """Tell on_new subscribers of a message another process put (see on_new_header).

        With body (the message bytes that process put), the first read_body of
        the message returns it without reading the file.
        """
        if body is not None:
            self._keep_fresh(msg.id, body)
        for callback in self._callbacks:
            try:
                callback(msg)
            except Exception:
                logging.getLogger(__name__).exception("on_new callback failed for %s", msg.id)

    async def put(
        self, envelope: Envelope, data: bytes, meta: dict[str, Any] | None = None
    ) -> QueuedMessage:
        """Queue a message; return only when it is on disk. Raise SpoolFull or SpoolError."""
        if not self._started:
            raise SpoolError("spool is not running")
        if self._key is None:
            raise SpoolError("spool was opened without a master key")
        rcpts = tuple(dict.fromkeys(envelope.rcpt_to))
        if not rcpts:
            raise ValueError("a message needs at least one recipient")
        if rcpts != envelope.rcpt_to:
            envelope = replace(envelope, rcpt_to=rcpts)
        msg_id = new_id()
        meta = dict(meta or {})
        try:
            header = _dumps(
                {
                    "v": FORMAT_VERSION,
                    "id": msg_id,
                    "created": time.time(),
                    "size": len(data),
                    "envelope": _envelope_json(envelope),
                    "meta": meta,
                }
            )
        except (TypeError, ValueError):
            raise SpoolError("message metadata cannot be stored as JSON") from None
        task = self._spawn(self._store(msg_id, header, data))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # The caller gave up (client gone, shutdown): nobody acknowledged this
            # message, so once the write finishes it is removed again.
            if not task.done():
                self._abandoned.add(msg_id)
            elif not task.cancelled() and task.exception() is None:
                with contextlib.suppress(SpoolError, RuntimeError):
                    self._spawn(self._remove_locked(msg_id), internal=True)
            raise
        msg = QueuedMessage(
            id=msg_id,
            envelope=envelope,
            size=len(data),
            recipients=tuple(RecipientStatus(a) for a in rcpts),
            next_attempt=0.0,
            meta=meta,
        )
        self.stats.puts += 1
        for header_callback in self._header_callbacks:
            try:
                header_callback(header, data)
            except Exception:
                logging.getLogger(__name__).exception("on_new_header callback failed")
        self.announce(msg)
        return msg

    async def _store(self, msg_id: str, header: bytes, data: bytes) -> None:
        try:
            await self._run(self._write_durably, msg_id, header, data)
        except _DirSyncFailed as failed:
            exc = failed.__cause__ or failed
            raise _storage_error(exc, "cannot sync spool directory") from exc
        except Exception as exc:
            raise _storage_error(exc, "cannot write message") from exc
        if msg_id in self._abandoned:
            self._abandoned.discard(msg_id)
            await self._remove_locked(msg_id)

    def _write_durably(self, msg_id: str, header: bytes, data: bytes) -> None:
        self._write_message(msg_id, header, data)
        try:
            self._qsync.sync(self._qsync.changed())
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._unlink_message(msg_id)
            raise _DirSyncFailed() from exc

    def _write_message(self, msg_id: str, header: bytes, data: bytes) -> None:
        assert self._key is not None
        # Plain strings: Path objects cost more than the system calls on this path.
        qdir = os.fspath(self.qdir)
        tmp = os.path.join(qdir, f".{msg_id}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            pending = [header, b"\n"]
            size = 0
            for part in self._key.seal_parts(data, _AAD_PREFIX + header):
                pending.append(part)
                size += len(part)
                if size >= _WRITE_CHUNK:
                    _write_all(fd, pending)
                    pending, size = [], 0
            _write_all(fd, pending)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.rename(tmp, os.path.join(qdir, msg_id))
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # --- reading -------------------------------------------------------------------------

    def load_all(self) -> list[QueuedMessage]:
        """Every queued message with its delivery state, oldest first."""
        try:
            names = os.listdir(self.qdir)
        except FileNotFoundError:
            return []
        out = []
        for name in sorted(n for n in names if valid_id(n)):
            msg = self._load(name)
            if msg is not None:
                out.append(msg)
        return out

    def load(self, msg_id: str) -> QueuedMessage | None:
        """One queued message with its state, or None if there is no such message."""
        return self._load(msg_id) if valid_id(msg_id) else None

    def ids(self) -> list[str]:
        """Ids of every queued message, oldest first (no file is opened)."""
        try:
            return sorted(n for n in os.listdir(self.qdir) if valid_id(n))
        except FileNotFoundError:
            return []

    def _load(self, msg_id: str) -> QueuedMessage | None:
        path = self.qdir / msg_id
        try:
            with path.open("rb") as f:
                line = f.readline(_MAX_HEADER)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.event("spool_read_failed", logging.ERROR, id=msg_id, error=str(exc))
            return None
        try:
            if not line.endswith(b"\n"):
                raise ValueError("header line is missing or too long")
            head_id, envelope, size, meta = _parse_header(line)
            if head_id != msg_id:
                raise ValueError("header names another message id")
        except ValueError as exc:
            self._quarantine(msg_id, f"unreadable header: {exc}")
            return None
        msg = QueuedMessage(
            id=msg_id,
            envelope=envelope,
            size=size,
            recipients=tuple(RecipientStatus(a) for a in envelope.rcpt_to),
            next_attempt=0.0,
            meta=meta,
        )
        return self._apply_state(msg)

    def _apply_state(self, msg: QueuedMessage) -> QueuedMessage:
        path = self.qdir / f"{msg.id}{_STATE_SUFFIX}"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return msg
        except OSError as exc:
            log.event("spool_read_failed", logging.ERROR, id=msg.id, error=str(exc))
            return msg
        try:
            state = json.loads(raw)
            recipients = [
                RecipientStatus(**{k: v for k, v in r.items() if k in _RECIPIENT_FIELDS})
                for r in state["recipients"]
            ]
            return replace(
                msg,
                next_attempt=float(state["next_attempt"]),
                attempts=int(state["attempts"]),
                delay_warned=bool(state.get("delay_warned", False)),
            ).with_recipients(recipients)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Without its state the message is retried to every recipient:
            # duplicates are better than losing mail (delivery is at-least-once).
            level = logging.ERROR if self._started else logging.INFO
            log.event("spool_state_corrupt", level, id=msg.id, error=str(exc), action="reset")
            if self._started:
                self._move_to_corrupt(path)
            return msg

    def _keep_fresh(self, msg_id: str, body: bytes) -> None:
        if len(body) > _FRESH_BYTES:
            return
        self._fresh[msg_id] = body
        self._fresh_bytes += len(body)
        while self._fresh_bytes > _FRESH_BYTES:
            self._fresh_bytes -= len(self._fresh.pop(next(iter(self._fresh))))

    def _forget_fresh(self, msg_id: str) -> bytes | None:
        body = self._fresh.pop(msg_id, None)
        if body is not None:
            self._fresh_bytes -= len(body)
        return body

    async def read_body(self, msg_id: str) -> bytes:
        """The unsealed message bytes. Raise MessageNotFound, MessageCorrupt or SpoolError."""
        _check_id(msg_id)
        body = self._forget_fresh(msg_id)
        if body is not None:
            return body
        if self._key is None:
            raise SpoolError("spool was opened without a master key")
        if self._closed:
            raise SpoolError("spool is closed")
        return await self._run(self._read_body, msg_id)

    def _read_body(self, msg_id: str) -> bytes:
        assert self._key is not None
        try:
            raw = (self.qdir / msg_id).read_bytes()
        except FileNotFoundError:
            raise MessageNotFound(f"no queued message {msg_id}") from None
        except OSError as exc:
            raise _storage_error(exc, f"cannot read message {msg_id}") from exc
        try:
            return self._key.unseal_record(raw, _AAD_PREFIX)
        except WrongKeyError as exc:
            # Most likely the operator replaced master.key: leave the file alone.
            raise SpoolError(f"message {msg_id} was sealed under another master key") from exc
        except SealError as exc:
            self._quarantine(msg_id, f"body does not open: {exc}")
            raise MessageCorrupt(f"message {msg_id} is corrupt: {exc}") from exc

    # --- state and removal --------------------------------------------------------------

    async def save_state(self, msg: QueuedMessage) -> None:
        """Persist per-recipient status, next attempt, attempts and delay_warned atomically."""
        _check_id(msg.id)
        state = json.dumps(
            {
                "v": FORMAT_VERSION,
                "next_attempt": msg.next_attempt,
                "attempts": msg.attempts,
                "delay_warned": msg.delay_warned,
                "recipients": [r.to_json() for r in msg.recipients],
            },
            ensure_ascii=True,
            separators=(",", ":"),
            default=str,
        ).encode()
        await asyncio.shield(self._spawn(self._save_state(msg.id, state)))

    async def _save_state(self, msg_id: str, state: bytes) -> None:
        async with self._locks.hold(msg_id):
            try:
                await self._run(self._write_state, msg_id, state)
            except Exception as exc:
                raise _storage_error(exc, f"cannot save state of {msg_id}") from exc

    def _write_state(self, msg_id: str, state: bytes) -> None:
        if not (self.qdir / msg_id).exists():
            raise MessageNotFound(f"no queued message {msg_id}")
        path = self.qdir / f"{msg_id}{_STATE_SUFFIX}"
        write_file(path, state, sync_dir=False)
        _adopt_owner(path, self.qdir)
        self._qsync.sync(self._qsync.changed())

    async def remove(self, msg_id: str) -> None:
        """Delete a message and its state durably (all recipients are final)."""
        _check_id(msg_id)
        self._forget_fresh(msg_id)
        await asyncio.shield(self._spawn(self._remove_locked(msg_id)))

    async def _remove_locked(self, msg_id: str) -> None:
        async with self._locks.hold(msg_id):
            await self._remove_unlocked(msg_id)

    async def _remove_unlocked(self, msg_id: str) -> None:
        try:
            await self._run(self._unlink_durably, msg_id)
        except Exception as exc:
            raise _storage_error(exc, f"cannot remove {msg_id}") from exc

    def _unlink_durably(self, msg_id: str) -> None:
        self._unlink_message(msg_id)
        self._qsync.sync(self._qsync.changed())

    def _unlink_message(self, msg_id: str) -> None:
        # Message first: a crash in between leaves an orphan state file (cleaned
        # at start), never a message without its state (which would resend it).
        (self.qdir / msg_id).unlink(missing_ok=True)
        (self.qdir / f"{msg_id}{_STATE_SUFFIX}").unlink(missing_ok=True)

    # --- corrupt files -----------------------------------------------------------------

    def _quarantine(self, msg_id: str, reason: str) -> None:
        if not self._started:
            # Read-only users (the CLI next to a running daemon) never move files;
            # they report unreadable ids themselves, the daemon logs them loudly.
            log.event("spool_corrupt", logging.INFO, id=msg_id, reason=reason, action="skipped")
            return
        dest = self._move_to_corrupt(self.qdir / msg_id)
        self._move_to_corrupt(self.qdir / f"{msg_id}{_STATE_SUFFIX}")
        log.event(
            "spool_corrupt", logging.ERROR, id=msg_id, reason=reason, moved_to=str(dest or "")
        )

    def _move_to_corrupt(self, path: Path) -> Path | None:
        dest = self.corrupt_dir / path.name
        if dest.exists():
            dest = self.corrupt_dir / f"{path.name}.{new_id()}"
        try:
            os.rename(path, dest)
            fsync_dir(self.corrupt_dir)
            fsync_dir(path.parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.event("spool_quarantine_failed", logging.ERROR, file=str(path), error=str(exc))
            return None
        return dest

    # --- control requests --------------------------------------------------------------

    def request_control(self, action: ControlAction, target: str) -> Path:
        """Ask the running daemon to retry or delete a message (target: an id or ALL).

        Returns the request file; it disappears once the daemon has taken the request.
        """
        if action not in CONTROL_ACTIONS:
            raise ValueError(f"unknown control action {action!r}")
        if target != ALL:
            _check_id(target)
        path = self.control_dir / f"{new_id()}.{action}.{target}"
        try:
            if not self.control_dir.is_dir():
                self.control_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                _adopt_owner(self.control_dir, self.dir)
            write_file(path, b"")
            _adopt_owner(path, self.control_dir)
        except OSError as exc:
            raise _storage_error(exc, "cannot write a control request") from exc
        return path

    def pending_control_requests(self) -> int:
        """How many control requests the daemon has not taken yet."""
        try:
            return sum(1 for n in os.listdir(self.control_dir) if not n.startswith("."))
        except FileNotFoundError:
            return 0

    def take_control_requests(self) -> list[tuple[str, str]]:
        """Daemon side: consume pending requests as [(action, id)], ALL expanded to ids."""
        return take_request_files(
            self.control_dir, CONTROL_ACTIONS, self.ids, "spool_bad_control_request"
        )


def take_request_files(
    directory: Path,
    actions: Collection[str],
    current_ids: Callable[[], list[str]],
    bad_event: str,
) -> list[tuple[str, str]]:
    """Consume request files "REQID.ACTION.TARGET" in directory as [(action, id)].

    A command asks the running daemon to act by writing such an empty file; the
    daemon takes it here. TARGET ALL stands for the messages present when the
    request was made (ids sort by time, so: those not newer than REQID).
    """
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    out: list[tuple[str, str]] = []
    present: list[str] | None = None
    for name in names:
        if name.startswith("."):
            continue
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
        parts = name.split(".")
        if (
            len(parts) != 3
            or not valid_id(parts[0])
            or parts[1] not in actions
            or not (parts[2] == ALL or valid_id(parts[2]))
        ):
            log.event(bad_event, logging.WARNING, file=name)
            continue
        req_id, action, target = parts
        if target == ALL:
            if present is None:
                present = current_ids()
            out.extend((action, i) for i in present if i <= req_id)
        else:
            out.append((action, target))
    return list(_unique(out))


def _task_done(task: asyncio.Task[Any]) -> None:
    # Mark the outcome as seen: a caller cancelled mid-operation never awaits it,
    # and the failure was already turned into a SpoolError for whoever did.
    if not task.cancelled():
        task.exception()


def _unique(items: Iterable[tuple[str, str]]) -> Iterable[tuple[str, str]]:
    return dict.fromkeys(items).keys()
