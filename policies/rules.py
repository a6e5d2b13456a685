"""Policy rules in YAML: loading with line-numbered validation, and evaluation.

Semantics: rules are tried in order; a rule matches when every condition in
its `when` holds and its `unless` (if any) does not. The first matching rule
decides, unless it says `continue: true`, in which case its actions are kept
and evaluation goes on (useful for add_header / notify_sender). A rule with
`shadow: true` is only recorded. `unscannable: true` ignores small pictures
(reason "small-image"); a list of reasons tests for any of them. When no
rule decides, the message is delivered. `encrypt_everything` then raises any outcome that is not a
rejection or quarantine to at least the given encryption strength. In
`mode: shadow` the whole rule list is only recorded, and the `baseline`
rules (by default: PHI and sensitive mail needs verified TLS at least) are
enforced instead.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from policies.decision import (
    ACTION_NAMES,
    STRENGTHS,
    Action,
    AddHeader,
    Decision,
    Deliver,
    Finding,
    NotifySender,
    OpportunisticTls,
    Quarantine,
    Reject,
    RequireEncryption,
    Strength,
    StripSubjectTag,
    Verdict,
)
from policies.detect.provider import npi_valid
from policies.detect.verdict import VERDICTS, Thresholds

DEFAULT_POLICY = Path(__file__).resolve().parent / "default.yaml"
# Why a part could not be read: extraction's reasons, plus "small-image" for
# pictures too small to be a scanned document (logos, banners).
UNSCANNABLE_REASONS = frozenset(
    {
        "encrypted-archive",
        "encrypted-pdf",
        "image-only",
        "parse-error",
        "limit-exceeded",
        "unsupported-type",
        "small-image",
    }
)
Mode = Literal["enforce", "shadow"]


class RulesError(ValueError):
    """A ruleset failed validation; `problems` lists "file:line: key.path: reason"."""

    def __init__(self, problems: Sequence[str]):
        self.problems = tuple(problems)
        super().__init__("invalid policy:\n  " + "\n  ".join(self.problems))


# --- what rules look at -----------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """Everything a condition may test about one message."""

    verdict: Verdict
    findings: tuple[Finding, ...] = ()
    categories: frozenset[str] = frozenset()  # finding categories and kinds
    detectors: frozenset[str] = frozenset()  # finding rule ids
    phi_in_subject: bool = False
    unscannable: bool = False  # some part could not be read (small pictures aside)
    unscannable_reasons: frozenset[str] = frozenset()  # every reason, "small-image" included
    mail_from: str = ""
    rcpt_to: tuple[str, ...] = ()
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    attachments: tuple[tuple[str, str], ...] = ()  # (filename, content type), lower case
    size: int = 0


class AddressMatcher:
    """Addresses, domains and groups: "a@x.org", "x.org" or "@x.org", "*.x.org", "group:g"."""

    def __init__(self, exact: Iterable[str], domains: Iterable[str], suffixes: Iterable[str]):
        self.exact = frozenset(exact)
        self.domains = frozenset(domains)
        self.suffixes = tuple(suffixes)

    def matches(self, address: str) -> bool:
        """Does this address (any case) match?"""
        a = address.strip().strip("<>").lower()
        if a in self.exact:
            return True
        domain = a.rpartition("@")[2]
        return domain in self.domains or (bool(self.suffixes) and domain.endswith(self.suffixes))


@dataclass(frozen=True)
class Condition:
    """The tests of one `when` (all must hold) or `unless` block."""

    tests: tuple[tuple[str, Callable[[Facts], bool]], ...] = ()

    def matches(self, facts: Facts) -> bool:
        """True when every test holds (an empty condition always holds)."""
        return all(test(facts) for _, test in self.tests)


@dataclass(frozen=True)
class Rule:
    """One policy rule."""

    id: str
    when: Condition
    then: tuple[Action, ...]
    unless: Condition | None = None
    description: str = ""
    continue_: bool = False
    shadow: bool = False

    def matches(self, facts: Facts) -> bool:
        """Does this rule apply to the message?"""
        return self.when.matches(facts) and not (self.unless and self.unless.matches(facts))


_DECIDING = ("deliver", "require_encryption", "opportunistic_tls", "quarantine", "reject")


def run_rules(rules: Sequence[Rule], facts: Facts) -> tuple[list[Action], list[str], list[Action]]:
    """(actions, matched rule ids, recorded-only actions) of an ordered rule list."""
    actions: list[Action] = []
    matched: list[str] = []
    recorded: list[Action] = []
    for rule in rules:
        if not rule.matches(facts):
            continue
        matched.append(rule.id)
        if rule.shadow:
            recorded.extend(rule.then)
            continue
        actions.extend(rule.then)
        if not rule.continue_:
            break
    if not any(a.name in _DECIDING for a in actions):
        actions.append(Deliver())
    return actions, matched, recorded


def _raise_to(actions: list[Action], strength: Strength) -> list[Action]:
    """At least `strength` of encryption unless the message is refused or held."""
    names = {a.name for a in actions}
    if "reject" in names or "quarantine" in names:
        return actions
    kept: list[Action] = [
        a for a in actions if not isinstance(a, Deliver | OpportunisticTls | RequireEncryption)
    ]
    required = [a.min_strength for a in actions if isinstance(a, RequireEncryption)]
    best = "message-level" if "message-level" in (*required, strength) else "tls-verified"
    return [RequireEncryption(cast(Strength, best)), *kept]


_BUILTIN_BASELINE = (
    Rule(
        id="baseline-phi",
        when=Condition((("verdict", lambda f: f.verdict in ("phi", "sensitive")),)),
        then=(RequireEncryption("tls-verified"),),
        description="Built-in baseline: PHI is never delivered in plaintext.",
    ),
)


@dataclass(frozen=True)
class Ruleset:
    """A validated policy: rules, groups, allow-lists, thresholds and mode."""

    rules: tuple[Rule, ...]
    name: str = "default"
    mode: Mode = "enforce"
    encrypt_everything: Strength | None = None
    thresholds: Thresholds = Thresholds()  # noqa: RUF009 - frozen, shared safely
    groups: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    own_npis: frozenset[str] = frozenset()
    baseline: tuple[Rule, ...] = _BUILTIN_BASELINE

    @classmethod
    def load(cls, path: str | Path) -> Ruleset:
        """Read and validate a policy file; raises RulesError naming file and line."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise RulesError([f"{p}: cannot read: {e.strerror or e}"]) from e
        return cls.from_yaml(text, source=str(p), default_name=p.stem)

    @classmethod
    def default(cls) -> Ruleset:
        """The policy shipped with Sealgate (policies/default.yaml), parsed once."""
        return _default_ruleset()

    @classmethod
    def from_yaml(
        cls, text: str, source: str = "<policy>", default_name: str = "policy"
    ) -> Ruleset:
        """Parse and validate policy YAML text."""
        return _Loader(source).load(text, default_name)

    def decide(self, facts: Facts, **details: Any) -> Decision:
        """Apply the rules to a message's facts."""
        actions, matched, recorded = run_rules(self.rules, facts)
        if self.encrypt_everything is not None:
            actions = _raise_to(actions, self.encrypt_everything)
        if self.mode == "shadow":
            would = actions + recorded
            actions, base_matched, _ = run_rules(self.baseline, facts)
            matched = base_matched + [m for m in matched if m not in base_matched]
        else:
            would = recorded
        return Decision(
            verdict=facts.verdict,
            findings=facts.findings,
            actions=tuple(actions),
            shadow=bool(would),
            would_apply=tuple(would),
            matched_rules=tuple(matched),
            phi_in_subject=facts.phi_in_subject,
            policy=self.name,
            **details,
        )


# --- loading ----------------------------------------------------------------------------

_TOP_KEYS = frozenset(
    {
        "version",
        "name",
        "mode",
        "encrypt_everything",
        "thresholds",
        "groups",
        "allow",
        "rules",
        "baseline",
    }
)
_RULE_KEYS = frozenset({"id", "description", "when", "unless", "then", "continue", "shadow"})
_CONDITION_KEYS = frozenset(
    {
        "verdict",
        "verdict_at_least",
        "category",
        "detector",
        "sender",
        "recipient",
        "all_recipients",
        "header",
        "subject_tag",
        "attachment_type",
        "size_over",
        "size_under",
        "unscannable",
        "phi_in_subject",
    }
)
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_GROUP_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_Node = yaml.Node


class _Loader:
    """Turns composed YAML nodes into a Ruleset, collecting every problem with its line."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []
        self.groups: dict[str, tuple[str, ...]] = {}

    # --- reporting and node helpers ---

    def error(self, node: _Node | None, path: str, msg: str) -> None:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        self.problems.append(
            f"{self.source}{line}: {path}: {msg}" if path else f"{self.source}{line}: {msg}"
        )

    def mapping(
        self, node: _Node, path: str, allowed: frozenset[str]
    ) -> dict[str, tuple[_Node, _Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, "expected a mapping")
            return None
        out: dict[str, tuple[_Node, _Node]] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            sub = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                self.error(k, path, "keys must be strings")
            elif key in out:
                self.error(k, sub, "duplicate key")
            elif allowed and key not in allowed:
                self.error(k, sub, f"unknown key (expected one of: {', '.join(sorted(allowed))})")
            else:
                out[key] = (k, v)
        return out

    def scalar(self, node: _Node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, path, "expected a single value")
            return None
        return yaml.safe_load(yaml.serialize(node))

    def string(self, node: _Node, path: str) -> str | None:
        v = self.scalar(node, path)
        if v is None:
            return None
        if isinstance(v, bool | dict | list):
            self.error(node, path, "expected text")
            return None
        return str(v)

    def boolean(self, node: _Node, path: str) -> bool | None:
        v = self.scalar(node, path)
        if not isinstance(v, bool):
            if v is not None:
                self.error(node, path, "expected true or false")
            return None
        return v

    def number(self, node: _Node, path: str, kind: type[int] | type[float]) -> float | None:
        v = self.scalar(node, path)
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            self.error(
                node, path, f"expected a non-negative {'integer' if kind is int else 'number'}"
            )
            return None
        if kind is int and not isinstance(v, int):
            self.error(node, path, "expected an integer")
            return None
        return v

    def strings(self, node: _Node, path: str) -> list[str]:
        """A string or a list of strings."""
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        out = []
        for i, item in enumerate(items):
            s = self.string(item, f"{path}[{i}]" if isinstance(node, yaml.SequenceNode) else path)
            if s is not None:
                out.append(s)
        return out

    def size(self, node: _Node, path: str) -> int | None:
        v = self.scalar(node, path)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
        if isinstance(v, str) and (m := _SIZE_RE.match(v)):
            unit = (m.group(2) or "b").lower()[0]
            return int(m.group(1)) * {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
        self.error(node, path, "expected a size such as 512k, 10MB or 1G")
        return None

    # --- sections ---

    def load(self, text: str, default_name: str) -> Ruleset:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise RulesError(
                [f"{self.source}{line}: not valid YAML: {getattr(e, 'problem', e)}"]
            ) from e
        if root is None:
            raise RulesError([f"{self.source}: the policy is empty"])
        top = self.mapping(root, "", _TOP_KEYS)
        if top is None:
            raise RulesError(self.problems)
        kw: dict[str, Any] = {"name": default_name}
        if "version" in top:
            v = self.scalar(top["version"][1], "version")
            if v != 1:
                self.error(top["version"][1], "version", "only version 1 is understood")
        if "name" in top:
            kw["name"] = self.string(top["name"][1], "name") or default_name
        if "mode" in top:
            mode = self.string(top["mode"][1], "mode")
            if mode not in ("enforce", "shadow"):
                self.error(top["mode"][1], "mode", "expected enforce or shadow")
            else:
                kw["mode"] = mode
        if "encrypt_everything" in top:
            kw["encrypt_everything"] = self.encrypt_everything(top["encrypt_everything"][1])
        if "thresholds" in top:
            kw["thresholds"] = self.thresholds(top["thresholds"][1])
        own_npis: set[str] = set()
        baa: list[str] = []
        if "allow" in top:
            baa, own_npis = self.allow(top["allow"][1])
        if "groups" in top:
            self.read_groups(top["groups"][1])
        if baa:
            self.groups["baa_partners"] = tuple(baa) + self.groups.get("baa_partners", ())
        else:
            self.groups.setdefault("baa_partners", ())
        kw["groups"] = dict(self.groups)
        kw["own_npis"] = frozenset(own_npis)
        if "rules" not in top:
            self.error(root, "rules", "missing: a policy needs a rules list")
            rules: tuple[Rule, ...] = ()
        else:
            rules = self.rule_list(top["rules"][1], "rules")
        if "baseline" in top:
            kw["baseline"] = self.rule_list(top["baseline"][1], "baseline")
        if self.problems:
            raise RulesError(self.problems)
        return Ruleset(rules=rules, **kw)

    def encrypt_everything(self, node: _Node) -> Strength | None:
        v = self.scalar(node, "encrypt_everything")
        if v is False or v is None:
            return None
        if v is True:
            return "tls-verified"
        if v in STRENGTHS:
            return cast(Strength, v)
        self.error(
            node, "encrypt_everything", "expected false, true, tls-verified or message-level"
        )
        return None

    def thresholds(self, node: _Node) -> Thresholds:
        fields = {f.name: f.type for f in dataclasses.fields(Thresholds)}
        m = self.mapping(node, "thresholds", frozenset(fields))
        values: dict[str, Any] = {}
        for key, (_, v) in (m or {}).items():
            kind: type[int] | type[float] = int if fields[key] in (int, "int") else float
            n = self.number(v, f"thresholds.{key}", kind)
            if n is not None:
                values[key] = n
        return Thresholds(**values)

    def allow(self, node: _Node) -> tuple[list[str], set[str]]:
        m = self.mapping(node, "allow", frozenset({"baa_partners", "own_npis"}))
        baa: list[str] = []
        npis: set[str] = set()
        if m and "baa_partners" in m:
            baa = self.address_patterns(m["baa_partners"][1], "allow.baa_partners", groups=False)
        if m and "own_npis" in m:
            items = m["own_npis"][1]
            seq = items.value if isinstance(items, yaml.SequenceNode) else [items]
            for i, item in enumerate(seq):
                s = self.string(item, f"allow.own_npis[{i}]")
                if s is None:
                    continue
                if not npi_valid(s.strip()):
                    self.error(
                        item, f"allow.own_npis[{i}]", "not a valid NPI (10 digits, check digit)"
                    )
                else:
                    npis.add(s.strip())
        return baa, npis

    def read_groups(self, node: _Node) -> None:
        m = self.mapping(node, "groups", frozenset())
        for key, (k, v) in (m or {}).items():
            if not _GROUP_RE.match(key):
                self.error(k, f"groups.{key}", "group names use a-z, 0-9, '_' and '-'")
                continue
            self.groups[key] = tuple(self.address_patterns(v, f"groups.{key}", groups=False))

    def address_patterns(self, node: _Node, path: str, groups: bool) -> list[str]:
        out = []
        for s in self.strings(node, path):
            p = s.strip().lower()
            if p.startswith("group:"):
                if not groups:
                    self.error(node, path, "groups cannot contain other groups")
                elif p[6:] not in self.groups:
                    self.error(node, path, f"unknown group {p[6:]!r}")
                else:
                    out.append(p)
                continue
            if not p or " " in p or p.count("@") > 1 or p.endswith("@"):
                self.error(node, path, f"{s!r} is not an address, domain or group:name")
                continue
            out.append(p)
        return out

    def matcher(self, node: _Node, path: str) -> AddressMatcher | None:
        patterns = self.address_patterns(node, path, groups=True)
        exact: list[str] = []
        domains: list[str] = []
        suffixes: list[str] = []
        expanded: list[str] = []
        for p in patterns:
            expanded.extend(self.groups[p[6:]] if p.startswith("group:") else [p])
        for p in expanded:
            if p.startswith("*."):
                suffixes.append(p[1:])
            elif p.startswith("."):
                suffixes.append(p)
            elif p.startswith("@"):
                domains.append(p[1:])
            elif "@" in p:
                exact.append(p)
            else:
                domains.append(p)
        return AddressMatcher(exact, domains, suffixes)

    def rule_list(self, node: _Node, path: str) -> tuple[Rule, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, path, "expected a list of rules")
            return ()
        rules = []
        seen: set[str] = set()
        for i, item in enumerate(node.value):
            rule = self.rule(item, f"{path}[{i}]")
            if rule is None:
                continue
            if rule.id in seen:
                self.error(item, f"{path}[{i}].id", f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
            rules.append(rule)
        return tuple(rules)

    def rule(self, node: _Node, path: str) -> Rule | None:
        if isinstance(node, yaml.MappingNode):
            # Name the rule in every message about it: "rules[3](phi).then".
            for k, v in node.value:
                if getattr(k, "value", None) == "id" and isinstance(v, yaml.ScalarNode):
                    path = f"{path}({v.value})"
        m = self.mapping(node, path, _RULE_KEYS)
        if m is None:
            return None
        rule_id = self.string(m["id"][1], f"{path}.id") if "id" in m else None
        if "id" not in m:
            self.error(node, path, "missing: id")
        when = self.condition(m["when"][1], f"{path}.when") if "when" in m else Condition()
        unless = self.condition(m["unless"][1], f"{path}.unless") if "unless" in m else None
        if "then" not in m:
            self.error(node, path, "missing: then (the actions)")
            then: tuple[Action, ...] = ()
        else:
            then = self.actions(m["then"][1], f"{path}.then")
        description = (
            self.string(m["description"][1], f"{path}.description") if "description" in m else ""
        )
        cont = self.boolean(m["continue"][1], f"{path}.continue") if "continue" in m else False
        shadow = self.boolean(m["shadow"][1], f"{path}.shadow") if "shadow" in m else False
        if rule_id is None or when is None:
            return None
        return Rule(
            id=rule_id,
            when=when,
            unless=unless,
            then=then,
            description=description or "",
            continue_=bool(cont),
            shadow=bool(shadow),
        )

    def condition(self, node: _Node, path: str) -> Condition | None:
        if isinstance(node, yaml.ScalarNode) and node.value in ("", "null", "~"):
            return Condition()
        m = self.mapping(node, path, _CONDITION_KEYS)
        if m is None:
            return None
        tests: list[tuple[str, Callable[[Facts], bool]]] = []
        for key, (_, v) in m.items():
            test = self.test(key, v, f"{path}.{key}")
            if test is not None:
                tests.append((key, test))
        return Condition(tuple(tests))

    def test(self, key: str, node: _Node, path: str) -> Callable[[Facts], bool] | None:
        if key == "verdict":
            verdicts = self.strings(node, path)
            bad = [v for v in verdicts if v not in VERDICTS]
            if bad:
                self.error(
                    node,
                    path,
                    f"unknown verdict {bad[0]!r} (expected one of {', '.join(VERDICTS)})",
                )
                return None
            vs = frozenset(verdicts)
            return lambda f: f.verdict in vs
        if key == "verdict_at_least":
            v = self.string(node, path)
            if v not in VERDICTS:
                self.error(node, path, f"expected one of {', '.join(VERDICTS)}")
                return None
            floor = VERDICTS.index(v)
            return lambda f: VERDICTS.index(f.verdict) >= floor
        if key == "category":
            cats = frozenset(c.lower() for c in self.strings(node, path))
            return lambda f: bool(cats & f.categories)
        if key == "detector":
            ids = frozenset(self.strings(node, path))
            return lambda f: bool(ids & f.detectors)
        if key in ("sender", "recipient", "all_recipients"):
            am = self.matcher(node, path)
            if am is None:
                return None
            if key == "sender":
                return lambda f: am.matches(f.mail_from)
            if key == "recipient":
                return lambda f: any(am.matches(r) for r in f.rcpt_to)
            return lambda f: bool(f.rcpt_to) and all(am.matches(r) for r in f.rcpt_to)
        if key == "header":
            return self.header_test(node, path)
        if key == "subject_tag":
            tags = tuple(t.lower() for t in self.strings(node, path))
            return lambda f: any(t in f.headers.get("subject", "").lower() for t in tags)
        if key == "attachment_type":
            globs = tuple(g.lower() for g in self.strings(node, path))
            return lambda f: any(
                fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(ctype, g)
                for name, ctype in f.attachments
                for g in globs
            )
        if key in ("size_over", "size_under"):
            limit = self.size(node, path)
            if limit is None:
                return None
            if key == "size_over":
                return lambda f: f.size > limit
            return lambda f: f.size < limit
        if key == "unscannable" and not (
            isinstance(node, yaml.ScalarNode) and node.tag.endswith(":bool")
        ):
            reasons = frozenset(self.strings(node, path))
            unknown = sorted(reasons - UNSCANNABLE_REASONS)
            if unknown:
                self.error(
                    node,
                    path,
                    f"unknown reason {unknown[0]!r} (expected true, false or a list of: "
                    f"{', '.join(sorted(UNSCANNABLE_REASONS))})",
                )
                return None
            return lambda f: bool(reasons & f.unscannable_reasons)
        if key in ("unscannable", "phi_in_subject"):
            want = self.boolean(node, path)
            if want is None:
                return None
            if key == "unscannable":
                return lambda f: f.unscannable == want
            return lambda f: f.phi_in_subject == want
        raise AssertionError(key)  # pragma: no cover - keys were checked against _CONDITION_KEYS

    def header_test(self, node: _Node, path: str) -> Callable[[Facts], bool] | None:
        m = self.mapping(node, path, frozenset())
        if m is None:
            return None
        checks: list[tuple[str, re.Pattern[str]]] = []
        for name, (_, v) in m.items():
            pattern = self.string(v, f"{path}.{name}")
            if pattern is None:
                continue
            try:
                checks.append((name.lower(), re.compile(pattern, re.IGNORECASE)))
            except re.error as e:
                self.error(v, f"{path}.{name}", f"bad regular expression: {e}")
        return lambda f: all(
            (value := f.headers.get(name)) is not None and rx.search(value) is not None
            for name, rx in checks
        )

    def actions(self, node: _Node, path: str) -> tuple[Action, ...]:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        out = []
        for i, item in enumerate(items):
            a = self.action(item, f"{path}[{i}]")
            if a is not None:
                out.append(a)
        if not out and not self.problems:
            self.error(node, path, "expected at least one action")
        return tuple(out)

    def action(self, node: _Node, path: str) -> Action | None:
        if isinstance(node, yaml.ScalarNode):
            name, arg = str(node.value), None
        elif isinstance(node, yaml.MappingNode) and len(node.value) == 1:
            k, arg = node.value[0]
            name = str(k.value) if isinstance(k, yaml.ScalarNode) else ""
        else:
            self.error(
                node, path, "expected an action name or a one-key mapping such as {reject: reason}"
            )
            return None
        if name not in ACTION_NAMES:
            self.error(
                node, path, f"unknown action {name!r} (expected one of: {', '.join(ACTION_NAMES)})"
            )
            return None
        sub = f"{path}.{name}"
        if name == "deliver":
            return Deliver()
        if name == "opportunistic_tls":
            return OpportunisticTls()
        if name == "require_encryption":
            strength: Any = "tls-verified"
            if isinstance(arg, yaml.MappingNode):
                m = self.mapping(arg, sub, frozenset({"min_strength"}))
                if m and "min_strength" in m:
                    strength = self.string(m["min_strength"][1], f"{sub}.min_strength")
            elif arg is not None:
                strength = self.string(arg, sub)
            if strength not in STRENGTHS:
                self.error(arg or node, sub, "expected tls-verified or message-level")
                return None
            return RequireEncryption(cast(Strength, strength))
        if name in ("reject", "quarantine", "notify_sender"):
            text = self.string(arg, sub) if arg is not None else None
            if name == "reject":
                return Reject(text or "Message refused by policy")
            if name == "quarantine":
                return Quarantine(text or "")
            return NotifySender(text or "")
        if name == "add_header":
            return self.add_header(arg, sub, node)
        tags: tuple[str, ...] = ("[secure]", "[encrypt]")
        if arg is not None and not (
            isinstance(arg, yaml.ScalarNode) and arg.value in ("", "~", "null")
        ):
            tags = tuple(self.strings(arg, sub))
        return StripSubjectTag(tags)

    def add_header(self, arg: _Node | None, path: str, node: _Node) -> Action | None:
        header = value = None
        if isinstance(arg, yaml.MappingNode):
            m = self.mapping(arg, path, frozenset({"name", "value"}))
            if m is not None:
                header = self.string(m["name"][1], f"{path}.name") if "name" in m else None
                value = self.string(m["value"][1], f"{path}.value") if "value" in m else ""
        elif arg is not None:
            text = self.string(arg, path) or ""
            header, _, value = text.partition(":")
            value = value.strip()
        if not header or not re.fullmatch(r"[!-9;-~]+", header.strip()) or "\n" in (value or ""):
            self.error(
                arg or node,
                path,
                "expected {name: Header-Name, value: text} or 'Header-Name: text'",
            )
            return None
        return AddHeader(header.strip(), value or "")


@cache
def _default_ruleset() -> Ruleset:
    # A Ruleset is immutable, so one parsed copy serves every caller.
    return Ruleset.load(DEFAULT_POLICY)
