"""Policy YAML: validation with line numbers, and rule semantics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policies.decision import (
    AddHeader,
    Decision,
    Deliver,
    Finding,
    NotifySender,
    OpportunisticTls,
    Quarantine,
    Reject,
    RequireEncryption,
    StripSubjectTag,
)
from policies.rules import Facts, RulesError, Ruleset


def load(text: str) -> Ruleset:
    return Ruleset.from_yaml(text, source="test.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        load(text)
    return list(info.value.problems)


def facts(**kw: object) -> Facts:
    base: dict[str, object] = {"verdict": "none", "mail_from": "a@clinic.example"}
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


# --- validation --------------------------------------------------------------------------


def test_default_policy_loads() -> None:
    rs = Ruleset.default()
    assert rs.name == "default"
    assert rs.mode == "enforce"
    ids = [r.id for r in rs.rules]
    assert ids[0] == "phi-in-subject"
    assert {"phi", "sensitive", "unscannable"} <= set(ids)


def test_unknown_keys_name_their_line() -> None:
    p = problems("version: 1\nrules:\n  - id: a\n    when: {verdict: phi}\n    thn: [deliver]\n")
    assert any(x.startswith("test.yaml:5: rules[0](a).thn: unknown key") for x in p), p
    p = problems("rulez: []\n")
    assert p[0].startswith("test.yaml:1: rulez: unknown key")


def test_unknown_condition_and_action() -> None:
    p = problems(
        "rules:\n"
        "  - id: a\n"
        "    when: {verdit: phi}\n"
        "    then: [encrypt_it]\n"
    )  # fmt: skip
    assert any("test.yaml:3:" in x and "verdit: unknown key" in x for x in p), p
    assert any("test.yaml:4:" in x and "unknown action 'encrypt_it'" in x for x in p), p


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("when: {verdict: maybe}\n    then: [deliver]", "unknown verdict 'maybe'"),
        ("when: {size_over: lots}\n    then: [deliver]", "expected a size"),
        ("when: {unscannable: perhaps}\n    then: [deliver]", "unknown reason 'perhaps'"),
        ("when: {phi_in_subject: 2}\n    then: [deliver]", "expected true or false"),
        ("when: {header: {subject: '(['}}\n    then: [deliver]", "bad regular expression"),
        ("when: {sender: 'group:nope'}\n    then: [deliver]", "unknown group 'nope'"),
        ("when: {recipient: 'a b'}\n    then: [deliver]", "is not an address"),
        ("then: [{require_encryption: strong}]", "expected tls-verified or message-level"),
        ("then: [{add_header: 'no colon'}]", "Header-Name"),
        ("when: {verdict: phi}", "missing: then"),
    ],
)
def test_bad_values(snippet: str, message: str) -> None:
    p = problems(f"rules:\n  - id: a\n    {snippet}\n")
    assert any(message in x for x in p), p
    assert all(x.startswith("test.yaml:") for x in p)


def test_every_problem_is_reported_at_once() -> None:
    p = problems(
        "mode: loud\n"
        "allow: {own_npis: ['1234567890']}\n"
        "rules:\n"
        "  - id: a\n"
        "    then: [deliver]\n"
        "  - id: a\n"
        "    then: [deliver]\n"
    )
    assert any(x.startswith("test.yaml:1: mode") for x in p)
    assert any(x.startswith("test.yaml:2: allow.own_npis[0]: not a valid NPI") for x in p)
    assert any("duplicate rule id 'a'" in x for x in p)


def test_yaml_syntax_error_has_a_line() -> None:
    p = problems("rules:\n  - id: a\n    then: [deliver\n")
    assert p[0].startswith("test.yaml:") and "not valid YAML" in p[0]


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError):
        Ruleset.load(tmp_path / "nope.yaml")


def test_thresholds_and_groups() -> None:
    rs = load(
        "thresholds: {window: 500, bulk_rows: 3}\n"
        "groups: {partners: ['lab.example', '*.hosp.example', 'x@y.example']}\n"
        "allow: {baa_partners: [partner.example], own_npis: ['1234567893']}\n"
        "rules: []\n"
    )
    assert rs.thresholds.window == 500 and rs.thresholds.bulk_rows == 3
    assert rs.groups["partners"] == ("lab.example", "*.hosp.example", "x@y.example")
    assert rs.groups["baa_partners"] == ("partner.example",)
    assert rs.own_npis == frozenset({"1234567893"})


# --- semantics ---------------------------------------------------------------------------


RULES = """
groups:
  partners: ["partner.example", "*.hosp.example"]
rules:
  - id: tag-header
    when: {verdict_at_least: pii}
    then: [{add_header: {name: X-Classified, value: "yes"}}]
    continue: true
  - id: subject-phi
    when: {phi_in_subject: true}
    then: [{reject: "No PHI in subjects"}]
  - id: partner-phi
    when: {verdict: phi, all_recipients: "group:partners"}
    then: [{require_encryption: tls-verified}]
  - id: phi
    when: {verdict: [phi, sensitive]}
    unless: {sender: "noreply@clinic.example"}
    then: [{require_encryption: message-level}, {notify_sender: "Sent securely"}]
  - id: big-pdf
    when: {attachment_type: ["*.pdf"], size_over: 1MB}
    then: [{quarantine: "large PDF"}]
  - id: labelled
    when: {header: {msip_labels: "Name=Highly Confidential"}}
    then: [{require_encryption: message-level}]
  - id: hiv
    when: {category: hiv}
    then: [{quarantine: "review"}]
  - id: ssn-rule
    when: {detector: us-ssn}
    then: [opportunistic_tls]
  - id: secure-tag
    when: {subject_tag: "[secure]"}
    then: [{require_encryption: message-level}, strip_subject_tag]
"""


def test_first_match_wins_and_continue_keeps_actions() -> None:
    rs = load(RULES)
    d = rs.decide(facts(verdict="phi", rcpt_to=("a@partner.example", "b@x.hosp.example")))
    assert d.matched_rules == ("tag-header", "partner-phi")
    assert d.actions == (AddHeader("X-Classified", "yes"), RequireEncryption("tls-verified"))
    assert d.action == "require_encryption"
    assert d.min_strength == "tls-verified"


def test_all_recipients_means_all() -> None:
    rs = load(RULES)
    d = rs.decide(facts(verdict="phi", rcpt_to=("a@partner.example", "c@other.example")))
    assert "phi" in d.matched_rules
    assert d.min_strength == "message-level"
    assert NotifySender("Sent securely") in d.actions


def test_unless() -> None:
    rs = load(RULES)
    d = rs.decide(
        facts(verdict="phi", mail_from="noreply@clinic.example", rcpt_to=("c@o.example",))
    )
    assert "phi" not in d.matched_rules
    assert d.action == "deliver"


def test_phi_in_subject_rejects() -> None:
    d = load(RULES).decide(facts(verdict="phi", phi_in_subject=True))
    assert d.action == "reject"
    assert d.reject_reason == "No PHI in subjects"


def test_attachment_size_header_category_detector_tag() -> None:
    rs = load(RULES)
    d = rs.decide(facts(attachments=(("scan.pdf", "application/pdf"),), size=2 << 20))
    assert d.actions == (Quarantine("large PDF"),)
    d = rs.decide(facts(attachments=(("scan.pdf", "application/pdf"),), size=1000))
    assert d.action == "deliver"
    d = rs.decide(facts(headers={"msip_labels": "MSIP_Label_1_Name=Highly Confidential;"}))
    assert d.min_strength == "message-level"
    assert rs.decide(facts(categories=frozenset({"hiv"}))).action == "quarantine"
    assert rs.decide(facts(detectors=frozenset({"us-ssn"}))).actions == (OpportunisticTls(),)
    d = rs.decide(facts(headers={"subject": "[SECURE] results"}))
    assert StripSubjectTag() in d.actions


def test_nothing_matches_delivers() -> None:
    d = load(RULES).decide(facts())
    assert d.actions == (Deliver(),)
    assert d.matched_rules == ()


def test_encrypt_everything() -> None:
    rs = load(
        "encrypt_everything: true\n"
        "rules:\n"
        "  - {id: r, when: {verdict: sensitive}, then: [{require_encryption: message-level}]}\n"
    )
    assert rs.decide(facts()).actions == (RequireEncryption("tls-verified"),)
    assert rs.decide(facts(verdict="sensitive")).min_strength == "message-level"
    rs = load(
        "encrypt_everything: message-level\n"
        "rules: [{id: r, when: {verdict: pii}, then: [{reject: nope}]}]\n"
    )
    assert rs.decide(facts()).min_strength == "message-level"
    assert rs.decide(facts(verdict="pii")).action == "reject"


def test_shadow_mode_records_and_enforces_baseline() -> None:
    rs = load("mode: shadow\nrules:\n  - {id: r, when: {verdict: pii}, then: [{reject: nope}]}\n")
    d = rs.decide(facts(verdict="pii"))
    assert d.shadow
    assert d.would_apply == (Reject("nope"),)
    assert d.actions == (Deliver(),)
    d = rs.decide(facts(verdict="phi"))
    assert d.actions == (RequireEncryption("tls-verified"),)
    assert "baseline-phi" in d.matched_rules


def test_shadow_rule_is_only_recorded() -> None:
    rs = load(
        "rules:\n"
        "  - {id: trial, when: {verdict: pii}, then: [{quarantine: trial}], shadow: true}\n"
        "  - {id: real, when: {verdict: pii}, then: [opportunistic_tls]}\n"
    )
    d = rs.decide(facts(verdict="pii"))
    assert d.matched_rules == ("trial", "real")
    assert d.actions == (OpportunisticTls(),)
    assert d.would_apply == (Quarantine("trial"),) and d.shadow


def test_decision_json_round_trip() -> None:
    d = Decision(
        verdict="sensitive",
        findings=(Finding("us-ssn", "ssn", "body/1", "***-**-6781", 1.0, "identifier", 2),),
        actions=(RequireEncryption("message-level"), AddHeader("X-A", "b"), StripSubjectTag()),
        shadow=True,
        would_apply=(Reject("why"), Quarantine("q"), NotifySender("n"), OpportunisticTls()),
        matched_rules=("a", "b"),
        phi_in_subject=True,
        reasons=("co-occurrence",),
        findings_total=3,
        policy="default",
    )
    j = json.loads(json.dumps(d.to_json()))
    assert j["action"] == "require_encryption"
    assert Decision.from_json(j) == d
    with pytest.raises(ValueError):
        Decision.from_json({"verdict": "maybe"})
    with pytest.raises(ValueError):
        Decision.from_json({"verdict": "phi", "actions": [{"action": "teleport"}]})
