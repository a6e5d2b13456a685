"""The counters and histograms, updated from the gateway's events in each process.

Labels are small, fixed vocabularies (verdicts, actions, methods, results,
endpoint names): never addresses, ids or anything from a message. Values go
to prometheus_client's multiprocess files (gateway/metrics/__init__.py), so
the main process's endpoint sums what every process counted.
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import Counter, Histogram

# Delivery latency (received → accepted by the next hop), from instant to days of retries.
DELAY_BUCKETS = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0,
    86400.0, 5 * 86400.0,
)  # fmt: skip
_LABEL_RE = re.compile(r"[^a-z0-9_.-]+")
_DELIVERY_RESULTS = {
    "delivered": "delivered",
    "deferred": "deferred",
    "bounced": "bounced",
    "expired": "expired",
}
_PORTAL_ACTIONS = {
    "portal_deposited": "deposited",
    "portal_viewed": "viewed",
    "portal_downloaded": "downloaded",
    "portal_replied": "replied",
}
_WEBHOOK_RESULTS = {
    "webhook_delivered": "delivered",
    "webhook_deferred": "deferred",
    "webhook_failed": "failed",
}


def label(value: Any, default: str = "unknown") -> str:
    """A safe, short label value (lower case, no spaces)."""
    if value is None or value == "":
        return default
    return _LABEL_RE.sub("_", str(value).lower())[:40] or default


class GatewayMetrics:
    """This process's metrics, and the event listener that updates them."""

    def __init__(self) -> None:
        # registry=None: the multiprocess collector reads the values from files.
        self.received = Counter(
            "sealgate_messages_received", "Messages accepted and queued.", registry=None
        )
        self.classified = Counter(
            "sealgate_messages_classified",
            "Messages classified by the policy engine, by verdict, action and outcome.",
            ["verdict", "action", "outcome"],
            registry=None,
        )
        self.quarantined = Counter(
            "sealgate_messages_quarantined", "Messages held in quarantine.", registry=None
        )
        self.deliveries = Counter(
            "sealgate_deliveries",
            "Delivery attempts per recipient, by method and result.",
            ["method", "result"],
            registry=None,
        )
        self.delay = Histogram(
            "sealgate_delivery_delay_seconds",
            "Time from acceptance to delivery of each recipient's copy.",
            ["method"],
            buckets=DELAY_BUCKETS,
            registry=None,
        )
        self.portal_logins = Counter(
            "sealgate_portal_logins",
            "Portal sign-ins, by method and result.",
            ["method", "result"],
            registry=None,
        )
        self.portal_actions = Counter(
            "sealgate_portal_actions",
            "Portal messages deposited, viewed, downloaded and replied to.",
            ["action"],
            registry=None,
        )
        self.webhooks = Counter(
            "sealgate_webhook_attempts",
            "Webhook POSTs, by endpoint and result.",
            ["endpoint", "result"],
            registry=None,
        )

    def listen(self, name: str, level: int, fields: dict[str, Any]) -> None:
        """A gateway.log listener: count the event."""
        if name in _DELIVERY_RESULTS:
            method = label(fields.get("method"))
            self.deliveries.labels(method, _DELIVERY_RESULTS[name]).inc()
            delay = fields.get("delay")
            if name == "delivered" and isinstance(delay, int | float) and delay >= 0:
                self.delay.labels(method).observe(float(delay))
        elif name == "received":
            self.received.inc()
        elif name == "policy":
            self.classified.labels(
                label(fields.get("verdict")),
                label(fields.get("action")),
                label(fields.get("outcome")),
            ).inc()
        elif name == "quarantined":
            self.quarantined.inc()
        elif name == "portal_login":
            self.portal_logins.labels(label(fields.get("method")), "success").inc()
        elif name == "portal_login_failed":
            self.portal_logins.labels(label(fields.get("method")), "failure").inc()
        elif name in _PORTAL_ACTIONS:
            self.portal_actions.labels(_PORTAL_ACTIONS[name]).inc()
        elif name in _WEBHOOK_RESULTS:
            self.webhooks.labels(label(fields.get("endpoint")), _WEBHOOK_RESULTS[name]).inc()
