"""`sealgate scan`: the policy engine on stored mail, from the command line.

Driven through gateway.cli.main (in process) and as a real subprocess, over
messages of the labelled corpus.
"""

from __future__ import annotations

import json
import mailbox
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main

CORPUS = Path(__file__).resolve().parent / "corpus"
REPO = CORPUS.parents[2]
LABELS: dict[str, dict[str, Any]] = json.loads((CORPUS / "labels.json").read_text())["messages"]


def corpus_file(group: str, verdict: str | None = None) -> Path:
    """The first corpus message of a group (and verdict)."""
    for name, label in sorted(LABELS.items()):
        if label["group"] == group and verdict in (None, label["verdict"]):
            return CORPUS / name
    raise LookupError(group)


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    """Run `sealgate scan --json ARGS` in process; (exit status, one object per line)."""
    status = main(["scan", "--json", *args])
    out = capsys.readouterr().out
    return status, [json.loads(line) for line in out.splitlines()]


def test_json_line_per_message(capsys: pytest.CaptureFixture[str]) -> None:
    """Each message gives one object with the documented keys."""
    phi = corpus_file("phi", "phi")
    ordinary = corpus_file("ordinary")
    status, objs = run_json(capsys, str(phi), str(ordinary))
    assert status == 0
    assert [o["path"] for o in objs] == [str(phi), str(ordinary)]
    for o in objs:
        assert {"path", "verdict", "action", "findings"} <= o.keys()
        assert o["verdict"] in ("none", "pii", "phi", "sensitive")
        for f in o["findings"]:
            assert {"rule", "location", "masked", "score"} <= f.keys()
    assert objs[0]["verdict"] == "phi"
    assert objs[0]["action"] == "require_encryption"
    assert objs[0]["findings"]
    assert objs[1]["verdict"] == "none"


def test_directory_is_searched_recursively(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Directories yield their .eml files at any depth, in path order; other files are skipped."""
    names = sorted(LABELS)[:3]
    (tmp_path / "a" / "b").mkdir(parents=True)
    targets = [tmp_path / names[0], tmp_path / "a" / names[1], tmp_path / "a" / "b" / names[2]]
    for name, target in zip(names, targets, strict=True):
        target.write_bytes((CORPUS / name).read_bytes())
    (tmp_path / "a" / "notes.txt").write_text("not mail")
    status, objs = run_json(capsys, str(tmp_path))
    assert status == 0
    assert [o["path"] for o in objs] == sorted(str(t) for t in targets)


def test_mbox_messages_are_numbered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each message of an mbox is reported as FILE#N, N from 1, with its own verdict."""
    order = [corpus_file("ordinary"), corpus_file("sensitive"), corpus_file("ordinary")]
    box_path = tmp_path / "export.mbox"
    box = mailbox.mbox(box_path)
    for p in order:
        box.add(p.read_bytes())
    box.close()
    status, objs = run_json(capsys, str(box_path))
    assert status == 0
    assert [o["path"] for o in objs] == [f"{box_path}#{n}" for n in (1, 2, 3)]
    assert [o["verdict"] for o in objs] == ["none", "sensitive", "none"]


def test_mbox_detected_by_content(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that starts with an mbox "From " line is an mbox whatever its name."""
    box_path = tmp_path / "Inbox"
    box = mailbox.mbox(box_path)
    box.add(corpus_file("phi", "phi").read_bytes())
    box.add(corpus_file("ordinary").read_bytes())
    box.close()
    status, objs = run_json(capsys, str(box_path))
    assert status == 0
    assert [o["path"] for o in objs] == [f"{box_path}#1", f"{box_path}#2"]


def test_unreadable_input_is_reported_and_the_scan_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file gives an "error" object, the others are scanned, and the exit is 1."""
    missing = tmp_path / "gone.eml"
    good = corpus_file("ordinary")
    status, objs = run_json(capsys, str(missing), str(good))
    assert status == 1
    assert objs[0]["path"] == str(missing)
    assert "error" in objs[0] and "verdict" not in objs[0]
    assert objs[1]["path"] == str(good) and objs[1]["verdict"] == "none"


def test_garbage_is_classified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bytes that are not really mail still get a decision (extraction fails closed)."""
    junk = tmp_path / "junk.eml"
    junk.write_bytes(bytes(range(256)) * 40)
    status, objs = run_json(capsys, str(junk))
    assert status == 0
    assert objs[0]["verdict"] in ("none", "pii", "phi", "sensitive")


def test_policy_errors_name_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid policy exits 2 with file:line messages and scans nothing."""
    policy = tmp_path / "bad.yaml"
    policy.write_text(
        "version: 1\nrules:\n  - id: r1\n    when: {verdict: secret}\n    then: [deliver]\n"
    )
    status = main(["scan", "--policy", str(policy), "--json", str(corpus_file("ordinary"))])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert re.search(rf"{re.escape(str(policy))}:4: .*verdict", captured.err), captured.err


def test_custom_policy_and_envelope(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--policy replaces the default rules; --recipient sets the envelope the rules see."""
    policy = tmp_path / "partners.yaml"
    policy.write_text(
        "version: 1\n"
        "name: partners\n"
        "groups:\n  partners: ['@partner.example']\n"
        "rules:\n"
        "  - id: partner\n"
        "    when: {verdict_at_least: phi, all_recipients: ['group:partners']}\n"
        "    then: [{require_encryption: tls-verified}]\n"
        "  - id: phi\n"
        "    when: {verdict_at_least: phi}\n"
        "    then: [{require_encryption: message-level}]\n"
    )
    sensitive = str(corpus_file("sensitive"))
    _, (default_obj,) = run_json(capsys, "--policy", str(policy), sensitive)
    _, (partner_obj,) = run_json(
        capsys, "--policy", str(policy), "--recipient", "dr@partner.example", sensitive
    )
    assert default_obj["policy"] == "partners"
    assert default_obj["matched_rules"] == ["phi"]
    assert default_obj["min_strength"] == "message-level"
    assert partner_obj["matched_rules"] == ["partner"]
    assert partner_obj["min_strength"] == "tls-verified"


def test_human_readable_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json: a line per message, its findings indented, and a total."""
    phi = corpus_file("phi", "phi")
    status = main(["scan", str(phi), str(corpus_file("ordinary"))])
    out = capsys.readouterr().out
    assert status == 0
    assert f"{phi}: phi -> require_encryption" in out
    assert re.search(r"^    \S+ +\S+", out, re.MULTILINE), out
    assert out.rstrip().endswith("2 messages: 1 none, 0 pii, 1 phi, 0 sensitive")


def test_output_carries_no_identifiers(capsys: pytest.CaptureFixture[str]) -> None:
    """SSNs, MRNs and birth dates of the scanned messages never appear in the output."""
    files = [CORPUS / n for n, lab in sorted(LABELS.items()) if lab["group"] in ("pii", "phi")]
    status, objs = run_json(capsys, *map(str, files))
    assert status == 0 and len(objs) == len(files)
    for path, obj in zip(files, objs, strict=True):
        text = path.read_text(encoding="utf-8", errors="replace")
        secrets = set(re.findall(r"\b\d{3}-\d{2}-\d{4}\b|\b\d{2}/\d{2}/\d{4}\b", text))
        secrets |= set(re.findall(r"MRN:? ?([A-Z]{0,3}\d{6,})", text))
        # Attachment file names are the sender's own words and appear in locations.
        shown = json.dumps([{**f, "location": ""} for f in obj["findings"]])
        assert not [s for s in secrets if s in shown], path.name


@pytest.mark.slow
def test_subprocess_scans_the_whole_corpus_in_one_run() -> None:
    """The console entry point scans every corpus message in one process, one line each."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "scan", "--json", str(CORPUS)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(Path(o["path"]).name for o in objs) == sorted(LABELS)
    by_name = {Path(o["path"]).name: o for o in objs}
    for name, label in LABELS.items():
        if label["group"] == "sensitive":
            assert by_name[name]["verdict"] == "sensitive", name


def test_subprocess_bad_policy_exit_status(tmp_path: Path) -> None:
    """A broken policy file: exit 2 and the reason on stderr, from the real command."""
    policy = tmp_path / "broken.yaml"
    policy.write_text("rules: [\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "scan", "--policy", str(policy), str(CORPUS)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2
    assert str(policy) in proc.stderr
    assert proc.stdout == ""


def test_policies_in_the_documentation_are_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every YAML example in docs/policy.md loads and can drive a scan."""
    doc = (REPO / "docs" / "policy.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL)
    assert len(blocks) >= 3
    for n, block in enumerate(blocks):
        policy = tmp_path / f"example{n}.yaml"
        policy.write_text(block)
        status, objs = run_json(capsys, "--policy", str(policy), str(corpus_file("phi", "phi")))
        assert status == 0, block
        assert objs[0]["action"] != "deliver", block


def test_configured_ruleset_is_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With -c, the configuration's policy.rules is used unless --policy says otherwise."""
    (tmp_path / "strict.yaml").write_text(
        "version: 1\nname: strict\nrules:\n"
        "  - id: everything\n    then: [{require_encryption: message-level}]\n"
    )
    config = tmp_path / "sealgate.yaml"
    config.write_text("policy:\n  rules: strict.yaml\n")
    ordinary = str(corpus_file("ordinary"))
    status = main(["scan", "-c", str(config), "--json", ordinary])
    configured = json.loads(capsys.readouterr().out)
    assert status == 0
    assert configured["policy"] == "strict"
    assert configured["action"] == "require_encryption"
    _, (explicit,) = run_json(
        capsys, "-c", str(config), "--policy", str(REPO / "policies/default.yaml"), ordinary
    )
    assert explicit["policy"] == "default" and explicit["action"] == "deliver"
