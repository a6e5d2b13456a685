"""Message-level accuracy of the default policy on the labelled corpus.

The corpus (tests/policies/corpus/, built by tools/make_corpus.py) holds
realistic synthetic mail: ordinary business mail, hard negatives that look like
PHI to a naive matcher, PHI, sensitive PHI, PII, unscannable attachments.
A message counts as protected when the decision keeps it from plaintext
delivery (require_encryption, reject or quarantine).

Goals: recall >= 99.5% on messages that need encryption, false positives
<= 1% on ordinary mail and <= 3% on hard negatives. Run with `-s` to see the
table even when the floors hold.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import default
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import pytest

from policies.engine import evaluate
from policies.rules import Ruleset

COMMITTED = Path(__file__).resolve().parent / "corpus"
REPO = COMMITTED.parents[2]
# A held-out corpus (`tools/make_corpus.py --seed 7 --out /tmp/heldout/7`) is
# scored the same way: SEALGATE_CORPUS=/tmp/heldout/7 pytest ... -k summary -s
CORPUS = Path(os.environ.get("SEALGATE_CORPUS") or COMMITTED)

RECALL_FLOOR = 0.995
FP_ORDINARY_CEILING = 0.01
FP_HARD_NEGATIVE_CEILING = 0.03
PROTECTED = frozenset({"require_encryption", "reject", "quarantine"})


@dataclass(frozen=True)
class Outcome:
    """What the engine did with one corpus message, beside what the label expects."""

    name: str
    label: dict[str, Any]
    verdict: str
    action: str
    rules: tuple[str, ...]
    evidence: tuple[str, ...]  # "rule/category@location" of the findings, no values
    decision: str  # the decision as stored with the queued message (JSON)

    @property
    def protected(self) -> bool:
        """Would the gateway keep this message from plaintext delivery?"""
        return self.action in PROTECTED

    @property
    def correct(self) -> bool:
        """Protected exactly when the label says it needs encryption."""
        return self.protected is bool(self.label["needs_encryption"])

    def describe(self) -> str:
        """One line for a report: file, expectation, outcome and why."""
        want = "encrypt" if self.label["needs_encryption"] else "plain"
        why = ", ".join(self.evidence[:4]) or "no findings"
        return (
            f"{self.name} [{self.label['group']}: {self.label['note']}] expected {want}/"
            f"{self.label['verdict']}, got {self.action}/{self.verdict} "
            f"(rules: {', '.join(self.rules) or '-'}; {why})"
        )


def envelope(raw: bytes) -> tuple[str, list[str]]:
    """MAIL FROM and RCPT TO as a relay would see them for this stored message."""
    msg = message_from_bytes(raw, policy=default)
    sender = getaddresses([str(msg.get("from", ""))])
    rcpts = getaddresses([str(v) for k in ("to", "cc") for v in msg.get_all(k, [])])
    return (sender[0][1] if sender else ""), [a for _, a in rcpts if a]


def load_labels() -> dict[str, dict[str, Any]]:
    """labels.json's per-file labels."""
    data = json.loads((CORPUS / "labels.json").read_text(encoding="utf-8"))
    messages: dict[str, dict[str, Any]] = data["messages"]
    return messages


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    """Run the default policy over every labelled message once."""
    ruleset = Ruleset.default()
    out = []
    for name, label in sorted(load_labels().items()):
        raw = (CORPUS / name).read_bytes()
        mail_from, rcpt_to = envelope(raw)
        d = evaluate(raw, mail_from, rcpt_to, ruleset)
        evidence = tuple(sorted({f"{f.rule}/{f.category}@{f.location}" for f in d.findings}))
        out.append(
            Outcome(
                name,
                label,
                d.verdict,
                d.action,
                d.matched_rules,
                evidence,
                json.dumps(d.to_json()),
            )
        )
    return out


def rate(hits: int, total: int) -> float:
    """hits / total, 0 for an empty group."""
    return hits / total if total else 0.0


def table(outcomes: Sequence[Outcome]) -> str:
    """The per-group summary: size, protected, verdict agreement."""
    groups = sorted({o.label["group"] for o in outcomes})
    lines = [f"{'group':<14}{'messages':>9}{'protected':>11}{'correct':>9}{'verdict ok':>12}"]
    for group in groups:
        members = [o for o in outcomes if o.label["group"] == group]
        prot = sum(o.protected for o in members)
        ok = sum(o.correct for o in members)
        verdict_ok = sum(o.verdict == o.label["verdict"] for o in members)
        lines.append(f"{group:<14}{len(members):>9}{prot:>11}{ok:>9}{verdict_ok:>12}")
    positives = [o for o in outcomes if o.label["needs_encryption"]]
    ordinary = [o for o in outcomes if o.label["group"] == "ordinary"]
    hard = [o for o in outcomes if o.label["group"] == "hard_negative"]
    recall = rate(sum(o.protected for o in positives), len(positives))
    fp_o = rate(sum(o.protected for o in ordinary), len(ordinary))
    fp_h = rate(sum(o.protected for o in hard), len(hard))
    lines += [
        "",
        f"recall (needs encryption): {recall:7.2%}  (goal >= {RECALL_FLOOR:.1%})",
        f"false positives, ordinary: {fp_o:7.2%}  (goal <= {FP_ORDINARY_CEILING:.0%})",
        f"false positives, hard neg: {fp_h:7.2%}  (goal <= {FP_HARD_NEGATIVE_CEILING:.0%})",
    ]
    wrong = [o for o in outcomes if not o.correct]
    if wrong:
        lines += ["", "misclassified:", *(f"  {o.describe()}" for o in wrong)]
    return "\n".join(lines)


def test_labels_cover_the_corpus() -> None:
    """Every .eml has a label, every label a file, and the corpus is big enough to measure."""
    labels = load_labels()
    files = {p.name for p in CORPUS.glob("*.eml")}
    assert files == set(labels)
    assert len(files) >= 300
    groups = Counter(v["group"] for v in labels.values())
    assert groups["ordinary"] >= 100 and groups["hard_negative"] >= 60
    assert sum(v["needs_encryption"] for v in labels.values()) >= 100
    for name, v in labels.items():
        assert v["verdict"] in ("none", "pii", "phi", "sensitive"), name
        assert isinstance(v["needs_encryption"], bool), name
        # Nothing that must stay out of plaintext is filed under the negative groups.
        assert not (v["needs_encryption"] and v["group"] in ("ordinary", "hard_negative")), name


def test_summary(outcomes: list[Outcome]) -> None:
    """Print the table (visible with -s); never fails on its own."""
    print("\n" + table(outcomes))


def test_recall_on_messages_that_need_encryption(outcomes: list[Outcome]) -> None:
    """>= 99.5% of messages that need encryption are kept from plaintext delivery."""
    positives = [o for o in outcomes if o.label["needs_encryption"]]
    recall = rate(sum(o.protected for o in positives), len(positives))
    assert recall >= RECALL_FLOOR, table(outcomes)


def test_false_positives_on_ordinary_mail(outcomes: list[Outcome]) -> None:
    """<= 1% of ordinary business mail is forced into encryption."""
    ordinary = [o for o in outcomes if o.label["group"] == "ordinary"]
    fp = rate(sum(o.protected for o in ordinary), len(ordinary))
    assert fp <= FP_ORDINARY_CEILING, table(outcomes)


def test_false_positives_on_hard_negatives(outcomes: list[Outcome]) -> None:
    """<= 3% of look-alikes (PO numbers, provider lists, blank forms...) are forced."""
    hard = [o for o in outcomes if o.label["group"] == "hard_negative"]
    fp = rate(sum(o.protected for o in hard), len(hard))
    assert fp <= FP_HARD_NEGATIVE_CEILING, table(outcomes)


def test_sensitive_mail_gets_message_level_protection(outcomes: list[Outcome]) -> None:
    """Sensitive categories need more than TLS: the verdict must say `sensitive`."""
    sensitive = [o for o in outcomes if o.label["group"] == "sensitive"]
    missed = [o.describe() for o in sensitive if o.verdict != "sensitive"]
    assert not missed, "\n".join(missed)


def test_no_matched_text_in_decisions(outcomes: list[Outcome]) -> None:
    """Decisions carry masked values: no SSN of a corpus message appears in its decision,
    locations included (they name attachments by position and type, not file name)."""
    for o in outcomes:
        raw = (CORPUS / o.name).read_text(encoding="utf-8", errors="replace")
        decision = json.loads(o.decision)
        for f in decision["findings"]:
            if f["category"] == "ssn":
                assert f["masked"].startswith("***-**-"), o.name
        dumped = json.dumps(decision)
        leaked = [s for s in _SSN_SHAPE.findall(raw) if s in dumped]
        assert not leaked, f"{o.name}: an identifier appears unmasked in the decision"
        for filename in _attachment_names(CORPUS / o.name):
            stem = filename.rsplit(".", 1)[0]
            assert stem.lower() not in dumped.lower(), f"{o.name}: {filename!r} in a location"
            for part in _NAME_PARTS.findall(stem):
                assert part not in dumped, f"{o.name}: part of {filename!r} in a location"


_SSN_SHAPE = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
# The parts of a file name that may name someone: numbers, capitalised words.
_NAME_PARTS = re.compile(r"\d{3,}|[A-Z][a-z]{2,}")


def _attachment_names(path: Path) -> list[str]:
    """The file names the sender gave the message's attachments (some name the patient)."""
    msg = message_from_bytes(path.read_bytes(), policy=default)
    return [name for part in msg.walk() if (name := part.get_filename())]


@pytest.mark.slow
def test_corpus_matches_its_generator(tmp_path: Path) -> None:
    """The committed corpus is exactly what tools/make_corpus.py produces."""
    if CORPUS != COMMITTED:
        pytest.skip("scoring a held-out corpus")
    pytest.importorskip("openpyxl")
    pytest.importorskip("docx")
    pytest.importorskip("pypdf")

    subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_corpus.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    fresh = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_bytes() for p in CORPUS.iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(committed)
    differ = [n for n in fresh if fresh[n] != committed[n]]
    assert not differ, f"regenerate with `python tools/make_corpus.py`: {differ[:5]}"
