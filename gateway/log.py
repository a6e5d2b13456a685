"""Structured logging: one JSON object per line, written off the event loop.

Log records carry ids, addresses, codes and reasons; never message content.

A record is turned into its JSON line where it is logged; a background thread
writes the finished lines, as many as have piled up in one system call, so a
slow or full stderr never blocks the event loop and a busy gateway does not pay
a thread hand-off per line. While that handler is the only one (the daemon's
setup), event() writes its line directly, without building a LogRecord first.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

_EVENT_LOGGER = logging.getLogger("sealgate.event")

# Writes no longer than this are atomic on a pipe (POSIX PIPE_BUF on Linux): lines
# from several processes sharing stderr never interleave within a line.
_ATOMIC_WRITE = 4096
# After waking, the writer waits this long for more lines to write them together.
_LINGER = 0.005


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line: time, level, event, then its fields."""

    def __init__(self) -> None:
        super().__init__()
        # Lines come many a second: the date and time part is made once per second
        # (one tuple, replaced whole, so that threads never see half an update).
        self._stamp = (-1, "")

    def timestamp(self, created: float) -> str:
        """The "ts" value: UTC to the millisecond."""
        second = int(created)
        stamp = self._stamp
        if stamp[0] != second:
            stamp = self._stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{stamp[1]}.{int((created - second) * 1000):03d}Z"

    def format_event(self, created: float, level: int, name: str, fields: dict[str, Any]) -> str:
        """An event's line, as format() renders the record of log.event()."""
        out: dict[str, Any] = {
            "ts": self.timestamp(created),
            "level": logging.getLevelName(level).lower(),
            "event": name,
        }
        out.update(fields)
        return json.dumps(out, default=str, ensure_ascii=False)

    def format(self, record: logging.LogRecord) -> str:
        """Serialise the record."""
        out: dict[str, Any] = {
            "ts": self.timestamp(record.created),
            "level": record.levelname.lower(),
        }
        fields = getattr(record, "fields", None)
        if fields is not None:
            out["event"] = record.getMessage()
            out.update(fields)
        else:
            out["logger"] = record.name
            out["msg"] = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            # Exception text goes to the log (for operators), never to a client.
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _LineWriter:
    """A thread that writes finished lines to a stream, batching what piles up."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        try:
            self._fd: int | None = stream.fileno()
            stream.flush()
        except (AttributeError, OSError, ValueError):
            self._fd = None  # not a file (a test's StringIO): write through the stream
        self._lines: collections.deque[bytes] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def put(self, line: bytes) -> None:
        """Queue one line (with its newline); never blocks."""
        self._lines.append(line)
        if not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait()
            time.sleep(_LINGER)
            # Cleared before taking the lines: a line queued after this point sets it again.
            self._wake.clear()
            self._flush()
        self._flush()

    def _flush(self) -> None:
        lines = self._lines
        while lines:
            batch = [lines.popleft()]
            size = len(batch[0])
            while lines and size + len(lines[0]) <= _ATOMIC_WRITE:
                line = lines.popleft()
                batch.append(line)
                size += len(line)
            self._write(b"".join(batch))

    def _write(self, data: bytes) -> None:
        try:
            if self._fd is None:
                self._stream.write(data.decode("utf-8", "replace"))
                self._stream.flush()
                return
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except (OSError, ValueError):
            pass  # stderr is gone: there is nowhere left to report it

    def stop(self) -> None:
        """Write everything queued, then end the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join()


class _JsonLineHandler(logging.Handler):
    """Formats each record as it is logged and hands the line to the writer thread."""

    def __init__(self, writer: _LineWriter) -> None:
        super().__init__()
        self.writer = writer
        self.json = JsonFormatter()
        self.setFormatter(self.json)

    def event(self, level: int, name: str, fields: dict[str, Any]) -> None:
        """Queue an event's line straight away (see event())."""
        try:
            line = self.json.format_event(time.time(), level, name, fields)
        except Exception:
            # As a record would be reported: logging's own error path, with a traceback.
            record = _event_record(level, name, fields)
            self.handleError(record)
            return
        self.writer.put(line.encode("utf-8", "replace") + b"\n")

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record's JSON line."""
        try:
            line = self.format(record).encode("utf-8", "replace") + b"\n"
        except Exception:
            self.handleError(record)
            return
        self.writer.put(line)


_handler: _JsonLineHandler | None = None

# Called with (name, level, fields) for every event, whatever the log level: the
# audit trail records what happened even when the log shows warnings only.
Listener = Callable[[str, int, dict[str, Any]], None]
# Replaced whole, never changed in place: event() reads it without a lock.
_listeners: tuple[Listener, ...] = ()


def add_listener(listener: Listener) -> None:
    """Have every event passed to listener, which must be quick and must not block."""
    global _listeners
    _listeners = (*_listeners, listener)


def remove_listener(listener: Listener) -> None:
    """Stop passing events to listener (no error when it was not added)."""
    global _listeners
    _listeners = tuple(x for x in _listeners if x is not listener)


def setup(level: str = "info", stream: TextIO | None = None) -> None:
    """Route all logging to JSON lines on a stream (stderr by default), written by a thread."""
    global _handler
    stop()
    # The JSON lines show neither thread nor process names: do not collect them per record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    _handler = _JsonLineHandler(_LineWriter(stream or sys.stderr))
    root = logging.getLogger()
    root.handlers[:] = [_handler]
    root.setLevel(level.upper())
    # Library chatter (per-command traces) would drown the event log.
    for noisy in ("mail.log", "aiosmtpd", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stop() -> None:
    """Write out every queued line and stop the background writer."""
    global _handler
    if _handler is not None:
        root = logging.getLogger()
        if _handler in root.handlers:
            root.removeHandler(_handler)
        _handler.writer.stop()
        _handler = None


def _event_record(level: int, name: str, fields: dict[str, Any]) -> logging.LogRecord:
    # makeRecord, not Logger.log: no stack walk for the caller's file and line,
    # which an event line never shows.
    return _EVENT_LOGGER.makeRecord(
        _EVENT_LOGGER.name, level, "(event)", 0, name, (), None, extra={"fields": fields}
    )


def _only_handler() -> _JsonLineHandler | None:
    """Our handler when nothing else would see an event record (no other handler, no filter)."""
    handler = _handler
    if handler is None or handler.filters:
        return None
    root = logging.getLogger()
    if root.handlers != [handler] or root.filters:
        return None
    logger = _EVENT_LOGGER
    if logger.handlers or logger.filters or not logger.propagate or logger.disabled:
        return None
    return handler


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event, e.g. event("delivered", id=..., rcpt=..., tls=...)."""
    if _listeners:
        _notify(name, level, fields)
    if not _EVENT_LOGGER.isEnabledFor(level):
        return
    handler = _only_handler()
    if handler is not None and level >= handler.level:
        handler.event(level, name, fields)
    else:
        _EVENT_LOGGER.handle(_event_record(level, name, fields))


def _notify(name: str, level: int, fields: dict[str, Any]) -> None:
    for listener in _listeners:
        try:
            listener(name, level, fields)
        except Exception:
            # A listener's bug must not stop the event from being logged or the caller.
            logging.getLogger(__name__).debug("event listener failed", exc_info=True)
