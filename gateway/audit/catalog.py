"""Which events the audit trail keeps, and which of their fields.

An explicit allow-list, per event and per field: a field not named here never
reaches the trail, so a component that adds a field to its log line (a subject,
a token) does not leak it into the audit records. Allowed are addresses, ids,
codes, rule ids, masked finding values, methods, certificate and key
fingerprints and TLS facts: never subjects, bodies, matched text, tokens or keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Fields that tie a record to a message: the first present names the record's
# message, the second kind a related one (a released copy, a DSN's original).
MESSAGE_ID_FIELDS = ("id", "message_id", "ids")
RELATED_ID_FIELDS = ("queue_id", "original_id")

# Fields allowed on events the catalogue does not know (named in `audit.events`).
GENERIC_FIELDS = frozenset(
    {
        "id",
        "queue_id",
        "original_id",
        "session",
        "trace",
        "ip",
        "user",
        "sender",
        "rcpt",
        "recipient",
        "recipients",
        "to",
        "domain",
        "method",
        "action",
        "outcome",
        "code",
        "reason",
        "verdict",
        "fingerprint",
        "actor",
        "command",
    }
)

Condition = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class EventSpec:
    """An audited event: the fields kept, and optionally which occurrences count."""

    fields: frozenset[str]
    when: Condition | None = None


def _spec(*fields: str, when: Condition | None = None) -> EventSpec:
    return EventSpec(frozenset(fields), when)


def _message_rejection(fields: Mapping[str, Any]) -> bool:
    # Rejections of whole messages (policy refusals, failed classification); not the
    # relay-denied and protocol noise every Internet-facing listener collects.
    return fields.get("stage") == "data"


_DELIVERY_TLS = ("tls_version", "tls_cipher", "tls_verified")

CATALOG: Mapping[str, EventSpec] = {
    # inbound and the policy decision
    "received": _spec(
        "id", "session", "trace", "ip", "helo", "user", "connector", "tls", "sender",
        "recipients", "size",
    ),
    "policy": _spec(
        "id", "trace", "outcome", "verdict", "action", "actions", "min_strength",
        "matched_rules", "shadow", "would_apply", "phi_in_subject", "findings",
        "findings_total", "locations", "policy",
    ),
    "rejected": _spec(
        "session", "ip", "stage", "code", "reason", "sender", "trace", "rules", "failure",
        when=_message_rejection,
    ),
    "auth_failed": _spec("session", "ip", "user", "mechanism", "failures"),
    "notice_queued": _spec("id", "original_id", "to"),
    # quarantine
    "quarantined": _spec("id", "trace", "ip", "sender", "recipients", "size"),
    "released": _spec("id", "queue_id", "sender", "recipients", "verdict"),
    "quarantine_deleted": _spec("id"),
    # method per recipient, encryption and delivery
    "unclassified": _spec("id", "action"),
    "method_fallback": _spec("id", "rcpt", "method", "reason"),
    "smime_encrypted": _spec("id", "rcpt", "fingerprint", "cipher", "neutral_subject"),
    "smime_encrypt_failed": _spec("id", "rcpt", "fingerprint", "error"),
    "smime_certificate_gone": _spec("id", "rcpt", "fingerprint"),
    "smime_harvested": _spec("fingerprint", "emails", "not_after"),
    "pgp_encrypted": _spec("id", "key", "signed"),
    "pgp_encrypt_failed": _spec("id", "key"),
    "pgp_key_imported": _spec("fingerprint", "addresses", "actor"),
    "pgp_key_removed": _spec("fingerprint", "addresses", "actor"),
    "pgp_key_accepted": _spec("fingerprint", "address", "actor"),
    "pgp_key_rejected": _spec("fingerprint", "address", "actor"),
    "smime_certificate_imported": _spec("fingerprint", "emails", "not_after", "actor"),
    "smime_certificate_removed": _spec("fingerprint", "emails", "actor"),
    "pgp_key_learned": _spec("address_domain", "fingerprint", "source"),
    "pgp_key_changed": _spec(
        "address_domain", "old_fingerprint", "new_fingerprint", "source", "action"
    ),
    "delivered": _spec(
        "id", "rcpt", "remote", "code", "method", "reason", *_DELIVERY_TLS, "delay"
    ),
    "deferred": _spec("id", "rcpt", "code", "reason", "attempts", "next_attempt"),
    "bounced": _spec("id", "rcpt", "code", "reason", "attempts"),
    "expired": _spec("id", "rcpt", "code", "reason", "attempts"),
    "dsn_queued": _spec("id", "original_id", "action", "to", "rcpts"),
    "portal_notice_queued": _spec("id", "original_id", "rcpts"),
    "dropped": _spec("id", "reason"),
    "removed": _spec("id"),
    # the portal
    "portal_deposited": _spec(
        "id", "queue_id", "recipient", "sender", "size", "expires", "reused", "sealed_link"
    ),
    "portal_withdrawn": _spec("id", "rcpt"),
    "portal_failed": _spec("id", "rcpt", "error"),
    "portal_viewed": _spec("id", "queue_id", "recipient", "ip"),
    "portal_downloaded": _spec("id", "queue_id", "recipient", "ip", "part", "size"),
    "portal_replied": _spec(
        "id", "queue_id", "recipient", "ip", "reply_id", "rcpts", "attachments", "reply_all"
    ),
    "portal_read_notice": _spec("id", "queue_id", "recipient", "sender"),
    "portal_login": _spec("recipient", "ip", "method"),
    "portal_logout": _spec("recipient"),
    "portal_login_failed": _spec("recipient", "ip", "method", "reason"),
    "portal_locked": _spec("recipient", "ip", "seconds"),
    "portal_code_sent": _spec("recipient", "ip"),
    "portal_code_limited": _spec("recipient", "ip"),
    "portal_code_unknown_address": _spec("ip"),
    "portal_bad_link": _spec("ip"),
    # Only the first path segment is logged ("m", "messages"), never a link token.
    "portal_csrf_rejected": _spec("path", "ip", "session"),
    "portal_password_set": _spec("recipient"),
    "portal_totp_enabled": _spec("recipient"),
    "portal_totp_disabled": _spec("recipient"),
    "portal_revoked": _spec("id", "queue_id", "recipient", "actor"),
    "portal_expired": _spec("id", "queue_id", "recipient"),
    # the HTTP API (api/): key ids, never keys
    "api_message_submitted": _spec(
        "id", "key_id", "sender", "recipients", "size", "attachments", "ip"
    ),
    "api_submit_refused": _spec("key_id", "sender", "code", "reason", "ip"),
    "api_request_denied": _spec("key_id", "ip", "reason", "scope", "method", "path"),
    "api_action": _spec("id", "key_id", "action", "outcome", "ip"),
    "api_key_created": _spec("key_id", "key_name", "scopes", "senders", "actor"),
    "api_key_revoked": _spec("key_id", "actor"),
    # administration and the service itself
    "retry_requested": _spec("id"),
    "deleted": _spec("id", "known"),
    "admin_action": _spec(
        "command", "actor", "status", "ids", "all", "domain", "selector", "address",
        "recipient", "target", "targets", "fingerprint",
    ),
    "audit_hold": _spec("message_id", "actor", "reason"),
    "audit_hold_released": _spec("message_id", "actor"),
    "config_reloaded": _spec("changed", "actor"),
    "ready": _spec("hostname", "pid"),
    "stopping": _spec("signal"),
    "policy_ready": _spec("policy"),
}  # fmt: skip

# Records the trail writes about itself; always kept, whatever `audit.events` says.
INTERNAL: Mapping[str, EventSpec] = {
    "audit_purged": _spec("anchor_seq", "anchor_hash", "purged", "before", "held"),
    "audit_events_lost": _spec("count", "since"),
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def valid_event_name(name: str) -> bool:
    """True for names as events carry them (lower case, digits and underscores)."""
    return bool(_NAME_RE.match(name))


class EventFilter:
    """Picks the audited events and fields out of everything the gateway logs."""

    def __init__(self, specs: Mapping[str, EventSpec]) -> None:
        self._specs = dict(specs)

    @classmethod
    def from_config(cls, events: Iterable[str] | None) -> EventFilter:
        """The default catalogue, or the `audit.events` list applied to it.

        A list of plain names replaces the catalogue; "+name" and "-name" entries
        add to and remove from it. A name the catalogue does not know is kept
        with the generic fields only (ids, addresses, codes, methods).
        """
        if events is None:
            return cls(CATALOG)
        entries = list(events)
        edits = all(e[:1] in ("+", "-") for e in entries) and entries
        specs: dict[str, EventSpec] = dict(CATALOG) if edits else {}
        for entry in entries:
            sign, name = (entry[0], entry[1:]) if entry[:1] in ("+", "-") else ("+", entry)
            if sign == "-":
                specs.pop(name, None)
            else:
                specs[name] = CATALOG.get(name) or EventSpec(GENERIC_FIELDS)
        return cls(specs)

    @property
    def names(self) -> frozenset[str]:
        """The event names recorded."""
        return frozenset(self._specs)

    def select(self, name: str, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """The allowed fields of an audited event, or None when the event is not audited."""
        spec = self._specs.get(name) or INTERNAL.get(name)
        if spec is None or (spec.when is not None and not spec.when(fields)):
            return None
        allowed = spec.fields
        # None stays: "tls_version": null says the delivery was not encrypted.
        return {k: v for k, v in fields.items() if k in allowed}


def message_ids(fields: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The message a record is about, and a related one, from its fields."""
    return _first_id(fields, MESSAGE_ID_FIELDS), _first_id(fields, RELATED_ID_FIELDS)


def _first_id(fields: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = fields.get(name)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # an admin action on one message is about that message
        if isinstance(value, str) and value:
            return value
    return None
