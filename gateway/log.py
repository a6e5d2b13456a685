"""Structured logging: one JSON object per line, written off the event loop.

Log records carry ids, addresses, codes and reasons; never message content.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any, TextIO

_EVENT_LOGGER = logging.getLogger("sealgate.event")


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line: time, level, event, then its fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise the record."""
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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


_listener: logging.handlers.QueueListener | None = None


def setup(level: str = "info", stream: TextIO | None = None) -> None:
    """Route all logging through a queue to a JSON stream handler (stderr by default)."""
    global _listener
    stop()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
    root.setLevel(level.upper())
    # Library chatter (per-command traces) would drown the event log.
    for noisy in ("mail.log", "aiosmtpd", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _listener = logging.handlers.QueueListener(q, handler, respect_handler_level=False)
    _listener.start()


def stop() -> None:
    """Flush and stop the background log writer."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event, e.g. event("delivered", id=..., rcpt=..., tls=...)."""
    if _EVENT_LOGGER.isEnabledFor(level):
        _EVENT_LOGGER.log(level, name, extra={"fields": fields})
