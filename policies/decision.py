"""What the policy engine decided about one message, in a form the spool can store.

A Decision is plain data: the verdict, the findings that explain it (masked,
never the matched text), the actions to enforce and, in shadow mode, the
actions the rules would have taken. `to_json`/`from_json` round-trip it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias, cast

Verdict = Literal["none", "pii", "phi", "sensitive"]
Strength = Literal["tls-verified", "message-level"]
STRENGTHS: tuple[Strength, ...] = ("tls-verified", "message-level")


@dataclass(frozen=True)
class Finding:
    """One reason for the verdict: rule, category, where, masked value, confidence."""

    rule: str
    category: str
    location: str
    masked: str
    score: float
    kind: str = ""  # identifier / health / sensitive / provider / unscannable
    version: int = 1

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "rule": self.rule,
            "version": self.version,
            "category": self.category,
            "kind": self.kind,
            "location": self.location,
            "masked": self.masked,
            "score": round(self.score, 3),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Finding:
        """Inverse of to_json."""
        return cls(
            rule=str(d["rule"]),
            category=str(d["category"]),
            location=str(d["location"]),
            masked=str(d["masked"]),
            score=float(d["score"]),
            kind=str(d.get("kind", "")),
            version=int(d.get("version", 1)),
        )


# --- actions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Deliver:
    """Deliver as usual (opportunistic TLS where offered)."""

    name: ClassVar[str] = "deliver"


@dataclass(frozen=True)
class RequireEncryption:
    """Never deliver in plaintext: verified TLS, or message-level (S/MIME, OpenPGP, portal)."""

    min_strength: Strength = "tls-verified"
    name: ClassVar[str] = "require_encryption"


@dataclass(frozen=True)
class OpportunisticTls:
    """Deliver with TLS when the peer offers it; plaintext is acceptable."""

    name: ClassVar[str] = "opportunistic_tls"


@dataclass(frozen=True)
class Quarantine:
    """Hold the message for a person to release or delete."""

    reason: str = ""
    name: ClassVar[str] = "quarantine"


@dataclass(frozen=True)
class Reject:
    """Refuse the message; reason is what the sender is told (no message content)."""

    reason: str = "Message refused by policy"
    name: ClassVar[str] = "reject"


@dataclass(frozen=True)
class NotifySender:
    """Tell the sender what happened (e.g. "sent through the secure portal")."""

    message: str = ""
    name: ClassVar[str] = "notify_sender"


@dataclass(frozen=True)
class AddHeader:
    """Add a header to every delivered copy."""

    header: str
    value: str
    name: ClassVar[str] = "add_header"


@dataclass(frozen=True)
class StripSubjectTag:
    """Remove trigger tags such as "[secure]" from the subject before delivery."""

    tags: tuple[str, ...] = ("[secure]", "[encrypt]")
    name: ClassVar[str] = "strip_subject_tag"


Action: TypeAlias = (
    Deliver
    | RequireEncryption
    | OpportunisticTls
    | Quarantine
    | Reject
    | NotifySender
    | AddHeader
    | StripSubjectTag
)
ACTION_NAMES = (
    "deliver",
    "require_encryption",
    "opportunistic_tls",
    "quarantine",
    "reject",
    "notify_sender",
    "add_header",
    "strip_subject_tag",
)
# Which action names the message's fate when several apply.
_PRIMARY_ORDER = ("reject", "quarantine", "require_encryption", "opportunistic_tls", "deliver")


def action_to_json(a: Action) -> dict[str, Any]:
    """{"action": name, ...parameters}."""
    out: dict[str, Any] = {"action": a.name}
    if isinstance(a, RequireEncryption):
        out["min_strength"] = a.min_strength
    elif isinstance(a, Quarantine | Reject):
        out["reason"] = a.reason
    elif isinstance(a, NotifySender):
        out["message"] = a.message
    elif isinstance(a, AddHeader):
        out["header"], out["value"] = a.header, a.value
    elif isinstance(a, StripSubjectTag):
        out["tags"] = list(a.tags)
    return out


def action_from_json(d: dict[str, Any]) -> Action:
    """Inverse of action_to_json."""
    name = d.get("action")
    if name == "deliver":
        return Deliver()
    if name == "require_encryption":
        strength = d.get("min_strength", "tls-verified")
        if strength not in STRENGTHS:
            raise ValueError(f"unknown encryption strength {strength!r}")
        return RequireEncryption(cast(Strength, strength))
    if name == "opportunistic_tls":
        return OpportunisticTls()
    if name == "quarantine":
        return Quarantine(str(d.get("reason", "")))
    if name == "reject":
        return Reject(str(d.get("reason", "")))
    if name == "notify_sender":
        return NotifySender(str(d.get("message", "")))
    if name == "add_header":
        return AddHeader(str(d["header"]), str(d["value"]))
    if name == "strip_subject_tag":
        return StripSubjectTag(tuple(str(t) for t in d.get("tags", ())))
    raise ValueError(f"unknown action {name!r}")


@dataclass(frozen=True)
class Decision:
    """The policy outcome for one message."""

    verdict: Verdict
    findings: tuple[Finding, ...] = ()
    actions: tuple[Action, ...] = (Deliver(),)  # what the gateway enforces
    shadow: bool = False  # True: `would_apply` was recorded but not enforced
    would_apply: tuple[Action, ...] = ()
    matched_rules: tuple[str, ...] = ()
    phi_in_subject: bool = False
    reasons: tuple[str, ...] = ()  # how the verdict was reached, e.g. "co-occurrence"
    findings_total: int = 0  # before the findings list was capped
    policy: str = ""  # name of the ruleset that decided

    @property
    def action(self) -> str:
        """The name of the action that decides the message's fate."""
        names = {a.name for a in self.actions}
        return next((n for n in _PRIMARY_ORDER if n in names), "deliver")

    @property
    def min_strength(self) -> Strength | None:
        """The strongest encryption any enforced action requires, or None."""
        required = [a.min_strength for a in self.actions if isinstance(a, RequireEncryption)]
        if not required:
            return None
        return "message-level" if "message-level" in required else "tls-verified"

    @property
    def reject_reason(self) -> str | None:
        """The explanation for the sender when the message is refused."""
        return next((a.reason for a in self.actions if isinstance(a, Reject)), None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (stored with the queued message)."""
        return {
            "verdict": self.verdict,
            "action": self.action,
            "actions": [action_to_json(a) for a in self.actions],
            "shadow": self.shadow,
            "would_apply": [action_to_json(a) for a in self.would_apply],
            "matched_rules": list(self.matched_rules),
            "phi_in_subject": self.phi_in_subject,
            "reasons": list(self.reasons),
            "findings": [f.to_json() for f in self.findings],
            "findings_total": self.findings_total,
            "policy": self.policy,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Decision:
        """Inverse of to_json."""
        verdict = d["verdict"]
        if verdict not in ("none", "pii", "phi", "sensitive"):
            raise ValueError(f"unknown verdict {verdict!r}")
        return cls(
            verdict=verdict,
            findings=tuple(Finding.from_json(f) for f in d.get("findings", ())),
            actions=tuple(action_from_json(a) for a in d.get("actions", ())) or (Deliver(),),
            shadow=bool(d.get("shadow", False)),
            would_apply=tuple(action_from_json(a) for a in d.get("would_apply", ())),
            matched_rules=tuple(str(r) for r in d.get("matched_rules", ())),
            phi_in_subject=bool(d.get("phi_in_subject", False)),
            reasons=tuple(str(r) for r in d.get("reasons", ())),
            findings_total=int(d.get("findings_total", 0)),
            policy=str(d.get("policy", "")),
        )
