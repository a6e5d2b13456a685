"""Queue depth and age, read from the spool directory when Prometheus scrapes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.spool import valid_id


class QueueCollector(Collector):
    """Messages in the queue and the age of the oldest (no file is opened or decrypted)."""

    def __init__(self, data_dir: Path) -> None:
        self._qdir = data_dir / "spool" / "q"

    def collect(self) -> Iterator[Metric]:
        """Called by the exposition thread at each scrape."""
        try:
            names = [n for n in os.listdir(self._qdir) if valid_id(n)]
        except OSError:
            names = []
        oldest: float | None = None
        for name in names:
            try:
                mtime = os.stat(self._qdir / name).st_mtime
            except OSError:
                continue  # delivered meanwhile
            oldest = mtime if oldest is None else min(oldest, mtime)
        yield GaugeMetricFamily(
            "sealgate_queue_messages", "Messages in the delivery queue.", value=len(names)
        )
        age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "sealgate_queue_oldest_age_seconds",
            "Age of the oldest message in the queue (0 when empty).",
            value=age,
        )
