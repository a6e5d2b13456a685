"""The policy stage's pieces: scanning processes, byte rewriting, replies, notices, methods."""

from __future__ import annotations

import asyncio
import email
import os
import signal
import time
from email.policy import default as default_policy
from pathlib import Path

import pytest

from gateway.config import PolicyConfig
from gateway.message import ClientInfo, Envelope, QueuedMessage, RecipientStatus
from gateway.outbound.methods import HELD_ENCRYPTION, HELD_UNREADABLE, MethodStage
from gateway.policy import (
    PolicyStartError,
    PolicyUnavailable,
    RulesSource,
    Scanner,
    log_fields,
    notification,
    reject_reply,
    rewrite,
    ruleset_problems,
    start_scanner,
)
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

PATIENT = "Margaret Thornton"
WAIT = 120.0
PHI_MESSAGE = (
    b"From: Dr Alice <dr.alice@clinic.example>\r\n"
    b"To: Bob <bob@partner.example>\r\n"
    b"Subject: Referral\r\n"
    b"\r\n"
    b"Patient: Margaret Thornton, DOB 04/12/1958, MRN 00482913.\r\n"
    b"Diagnosis: type 2 diabetes mellitus (E11.9), hypertension (I10).\r\n"
)
PLAIN_MESSAGE = (
    b"From: Dr Alice <dr.alice@clinic.example>\r\n"
    b"To: Bob <bob@partner.example>\r\n"
    b"Subject: Lunch on Tuesday\r\n"
    b"\r\n"
    b"Shall we meet on Tuesday to go through the facilities budget?\r\n"
)
# A header condition whose regular expression backtracks exponentially on "aaa...!":
# an honest way to make the engine run (practically) forever.
REDOS_RULES = """\
version: 1
name: redos
rules:
  - id: ticket
    when: {header: {x-ticket: "^(a+)+$"}}
    then: [deliver]
"""
REDOS_MESSAGE = (
    b"From: app@clinic.example\r\nTo: bob@partner.example\r\nSubject: ticket\r\n"
    b"X-Ticket: " + b"a" * 64 + b"!\r\n\r\nTicket update.\r\n"
)


def envelope(sender: str = "dr.alice@clinic.example", *rcpts: str) -> Envelope:
    return Envelope(
        mail_from=sender,
        rcpt_to=rcpts or ("bob@partner.example",),
        received_at=1_700_000_000.0,
        client=ClientInfo(ip="127.0.0.1", helo="client.test"),
    )


def rules_source(text: str) -> RulesSource:
    return RulesSource(text, "<test policy>", "test")


# --- the scanner: real worker processes ----------------------------------------------


async def test_scanner_classifies_in_a_worker_process() -> None:
    scanner = await start_scanner(PolicyConfig(workers=1))
    try:
        assert len(scanner.pids()) == 1 and os.getpid() not in scanner.pids()
        phi = await scanner.classify(PHI_MESSAGE, "dr.alice@clinic.example", ["bob@x.example"])
        plain = await scanner.classify(PLAIN_MESSAGE, "dr.alice@clinic.example", ["b@x.example"])
    finally:
        await scanner.close()
    assert phi.verdict == "phi" and phi.min_strength == "tls-verified"
    assert "phi" in phi.matched_rules
    assert plain.verdict == "none" and plain.action == "deliver"
    assert scanner.pids() == []


async def test_scanner_runs_several_scans_at_once() -> None:
    scanner = await start_scanner(PolicyConfig(workers=2))
    try:
        decisions = await asyncio.gather(
            *(scanner.classify(PHI_MESSAGE, "a@clinic.example", ["b@x.example"]) for _ in range(8))
        )
    finally:
        await scanner.close()
    assert {d.verdict for d in decisions} == {"phi"}


async def test_large_messages_and_any_addresses_cross_the_pipes_intact() -> None:
    # Several times a pipe's buffer, with the PHI at the very end; addresses in
    # UTF-8 and with undecodable bytes (surrogate escapes) as inbound may pass them.
    filler = b"Shall we meet on Tuesday to go through the facilities budget?\r\n" * 40_000
    big = PHI_MESSAGE.replace(b"\r\n\r\n", b"\r\n\r\n" + filler, 1)
    scanner = await start_scanner(PolicyConfig(workers=1))
    try:
        phi = await scanner.classify(big, "j\u00fcrgen@klinik.example", ["b\udcff@x.example"])
        plain = await scanner.classify(PLAIN_MESSAGE, "", ["b@x.example"])
    finally:
        await scanner.close()
    assert len(big) > 2_000_000
    assert phi.verdict == "phi" and plain.verdict == "none"


async def test_a_caller_giving_up_does_not_hand_out_a_busy_worker() -> None:
    scanner = await start_scanner(PolicyConfig(workers=1))
    try:
        slow = PLAIN_MESSAGE + b"Nothing to see here, just a long letter.\r\n" * 100_000
        waiting = asyncio.create_task(scanner.classify(slow, "a@clinic.example", ["b@x.example"]))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # The worker finishes the abandoned scan first; its reply is not taken for this one.
        decision = await scanner.classify(PHI_MESSAGE, "a@clinic.example", ["b@x.example"])
        assert decision.verdict == "phi"
        assert len(scanner.pids()) == 1
    finally:
        await scanner.close()


async def classify_eventually(scanner: Scanner, raw: bytes) -> Decision:
    """Classify as an SMTP client would retry after a 451: until it works (or WAIT passes).

    Right after a worker was replaced, a scan may wait for the new process to start.
    """
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return await scanner.classify(raw, "a@clinic.example", ["b@x.example"])
        except PolicyUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_scan_overrunning_the_timeout_fails_closed_and_the_worker_is_replaced() -> None:
    scanner = Scanner(rules_source(REDOS_RULES), workers=1, timeout=2.0)
    await scanner.start()
    try:
        (stuck,) = scanner.pids()
        with pytest.raises(PolicyUnavailable) as err:
            await scanner.classify(REDOS_MESSAGE, "app@clinic.example", ["bob@partner.example"])
        assert err.value.kind == "timeout"
        # The stuck process was killed and a new one serves the next message.
        decision = await classify_eventually(scanner, PLAIN_MESSAGE)
        assert decision.verdict == "none"
        assert stuck not in scanner.pids() and len(scanner.pids()) == 1
    finally:
        await scanner.close()
    with pytest.raises(ProcessLookupError):
        os.kill(stuck, 0)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_busy(pid: int, cpu: float = 1.0, timeout: float = 120.0) -> None:
    """Until the process has used `cpu` seconds of CPU: it is inside the scan."""
    deadline = time.monotonic() + timeout
    start = _cpu_seconds(pid)
    while _cpu_seconds(pid) - start < cpu:
        assert time.monotonic() < deadline, "the worker never got busy"
        await asyncio.sleep(0.1)


async def test_a_worker_dying_mid_scan_fails_closed() -> None:
    scanner = Scanner(rules_source(REDOS_RULES), workers=1, timeout=600.0)
    await scanner.start()
    try:
        (pid,) = scanner.pids()
        scan = asyncio.create_task(
            scanner.classify(REDOS_MESSAGE, "app@clinic.example", ["bob@partner.example"])
        )
        await wait_busy(pid)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(PolicyUnavailable) as err:
            await asyncio.wait_for(scan, 60)
        assert err.value.kind == "crashed"
        decision = await classify_eventually(scanner, PLAIN_MESSAGE)
        assert decision.verdict == "none"
    finally:
        await scanner.close()


async def test_an_invalid_ruleset_stops_the_scanner_from_starting(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        "version: 1\nrules:\n  - id: x\n    when: {verdict: maybe}\n    then: [deliver]\n"
    )
    with pytest.raises(PolicyStartError) as err:
        await start_scanner(PolicyConfig(rules=bad, workers=1))
    assert f"{bad}:4" in str(err.value)
    assert ruleset_problems(PolicyConfig(rules=bad)) == [
        f"policy.rules: {bad}:4: rules[0](x).when.verdict: unknown verdict 'maybe' "
        "(expected one of none, pii, phi, sensitive)"
    ]
    assert ruleset_problems(PolicyConfig()) == []


# --- what the decision does to the bytes ---------------------------------------------------


def subject_of(data: bytes) -> str:
    return str(email.message_from_bytes(data, policy=default_policy)["Subject"])


def test_control_headers_are_removed_whatever_the_decision() -> None:
    data = (
        b"From: app@clinic.example\r\n"
        b"X-Sealgate-Encrypt: yes\r\n"
        b"x-sealgate-portal-expiry: 7d\r\n"
        b"\tfolded\r\n"
        b"Subject: Hello\r\n"
        b"X-Other: kept\r\n"
        b"\r\n"
        b"X-Sealgate-In-Body: stays\r\n"
    )
    added, out = rewrite(data, Decision("none"))
    assert added == b""
    assert out == (
        b"From: app@clinic.example\r\nSubject: Hello\r\nX-Other: kept\r\n\r\n"
        b"X-Sealgate-In-Body: stays\r\n"
    )
    assert rewrite(data, None)[1] == out


def test_a_message_with_nothing_to_change_is_returned_as_is() -> None:
    added, out = rewrite(PLAIN_MESSAGE, Decision("none", actions=(OpportunisticTls(),)))
    assert added == b"" and out is PLAIN_MESSAGE


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (b"[secure] Lab results", "Lab results"),
        (b"Re: [SECURE]  Lab results", "Re: Lab results"),
        (b"Lab results [encrypt]", "Lab results"),
        (b"=?utf-8?q?=5Bsecure=5D_R=C3=A9sultats?=", "Résultats"),
        (b"Lab results", "Lab results"),
    ],
)
def test_subject_tags_are_stripped(subject: bytes, expected: str) -> None:
    data = b"From: a@clinic.example\r\nSubject: " + subject + b"\r\n\r\nbody\r\n"
    decision = Decision("none", actions=(StripSubjectTag(("[secure]", "[encrypt]")), Deliver()))
    _, out = rewrite(data, decision)
    assert subject_of(out) == expected
    assert out.endswith(b"\r\n\r\nbody\r\n")


@pytest.mark.parametrize("subject", [b"Lab results", b"Lab  results  (2 of 3)", b"[Secure"])
def test_a_subject_without_the_tags_is_left_alone(subject: bytes) -> None:
    data = b"From: a@clinic.example\r\nSubject: " + subject + b"\r\n\r\nbody\r\n"
    decision = Decision("none", actions=(StripSubjectTag(("[secure]",)),))
    assert rewrite(data, decision) == (b"", data)


def test_a_raw_utf8_subject_keeps_its_form() -> None:
    data = "Subject: [secure] Résultats du labo\r\n\r\nbody\r\n".encode()
    _, out = rewrite(data, Decision("none", actions=(StripSubjectTag(("[secure]",)),)))
    assert out == "Subject: Résultats du labo\r\n\r\nbody\r\n".encode()


def test_shadow_decisions_change_nothing_but_control_headers() -> None:
    data = b"Subject: [secure] Lab results\r\n\r\nbody\r\n"
    decision = Decision(
        "none",
        actions=(Deliver(),),
        shadow=True,
        would_apply=(StripSubjectTag(), AddHeader("X-Would", "yes")),
    )
    assert rewrite(data, decision) == (b"", data)


def test_added_headers_are_encoded_and_folded() -> None:
    decision = Decision(
        "phi",
        actions=(
            AddHeader("X-Clinic-Policy", "encrypted"),
            AddHeader("X-Note", "Données protégées"),
            AddHeader("X-Long", "word " * 40),
        ),
    )
    added, out = rewrite(PLAIN_MESSAGE, decision)
    assert out is PLAIN_MESSAGE
    assert added.isascii()
    assert all(len(line) <= 78 for line in added.split(b"\r\n"))
    parsed = email.message_from_bytes(added + b"\r\n", policy=default_policy)
    assert parsed["X-Clinic-Policy"] == "encrypted"
    assert parsed["X-Note"] == "Données protégées"
    assert " ".join(str(parsed["X-Long"]).split()) == " ".join(["word"] * 40)


def test_a_rule_may_add_an_x_sealgate_header_itself() -> None:
    data = b"X-Sealgate-Classified: forged by the client\r\nSubject: hi\r\n\r\nbody\r\n"
    decision = Decision("pii", actions=(AddHeader("X-Sealgate-Classified", "yes"), Deliver()))
    added, out = rewrite(data, decision)
    assert added == b"X-Sealgate-Classified: yes\r\n"
    assert out == b"Subject: hi\r\n\r\nbody\r\n"


# --- replies, log fields and notices ------------------------------------------------------------


def test_reject_reply_is_one_clean_line() -> None:
    d = Decision("phi", actions=(Reject("Message refused:\n the subject\x1b[2J is — bad " * 30),))
    reply = reject_reply(d)
    assert reply.startswith("550 5.7.1 Message refused: the subject")
    assert reply.isascii() and reply.isprintable() and len(reply) <= 510
    assert reject_reply(Decision("phi", actions=(Reject(""),))) == (
        "550 5.7.1 Message refused by policy"
    )


def test_log_fields_carry_masked_values_only() -> None:
    d = Decision(
        "phi",
        findings=(
            Finding("patient-name", "name", "body/1 text/plain", "M*** T***", 0.9),
            Finding("dob", "dob", "body/1 text/plain", "**/**/****", 0.9),
            Finding("dob", "dob", "attachment:scan.pdf", "**/**/****", 0.9),
        ),
        actions=(RequireEncryption(),),
        matched_rules=("phi",),
        findings_total=3,
    )
    fields = log_fields(d)
    assert fields["findings"] == {"patient-name": 1, "dob": 2}
    assert fields["actions"] == ["require_encryption"]
    assert fields["locations"][2] == {
        "rule": "dob",
        "location": "attachment:scan.pdf",
        "masked": "**/**/****",
    }
    assert PATIENT not in str(fields)


def test_notification_names_rules_not_content() -> None:
    d = Decision(
        "phi",
        actions=(RequireEncryption(), NotifySender("Your message was sent securely.")),
        matched_rules=("phi",),
        findings=(Finding("patient-name", "name", "subject", "M*** T***", 0.9),),
    )
    notice = notification(
        hostname="gw.clinic.example",
        envelope=envelope(),
        decision=d,
        outcome="queued",
        msg_id="01ABCDEFGHJKMNPQRS",
    )
    assert notice is not None
    env, data = notice
    assert env.mail_from == "" and env.rcpt_to == ("dr.alice@clinic.example",)
    assert env.is_dsn
    msg = email.message_from_bytes(data, policy=default_policy)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["To"] == "dr.alice@clinic.example"
    text = msg.get_content()
    assert "Your message was sent securely." in text
    assert "Policy rules: phi" in text and "01ABCDEFGHJKMNPQRS" in text
    assert "M***" not in text and "Referral" not in text


def test_no_notification_without_the_action_or_to_the_null_sender() -> None:
    d = Decision("none", actions=(Deliver(), NotifySender("hi")))
    kw = {"hostname": "gw", "decision": d, "outcome": "queued", "msg_id": None}
    assert notification(envelope=envelope(""), **kw) is None  # type: ignore[arg-type]
    kw["decision"] = Decision("none")
    assert notification(envelope=envelope(), **kw) is None  # type: ignore[arg-type]


# --- the method stage reads the decision ------------------------------------------------------


def queued(meta: dict[str, object], *, is_dsn: bool = False) -> QueuedMessage:
    env = Envelope(
        mail_from="" if is_dsn else "a@clinic.example",
        rcpt_to=("b@partner.example",),
        received_at=time.time(),
        client=ClientInfo(ip="127.0.0.1"),
        is_dsn=is_dsn,
    )
    return QueuedMessage(
        id="01ABCDEFGHJKMNPQRS",
        envelope=env,
        size=10,
        recipients=(RecipientStatus("b@partner.example"),),
        next_attempt=0.0,
        meta=dict(meta),
    )


@pytest.mark.parametrize(
    ("decision", "method"),
    [
        (Decision("none"), "smtp"),
        (Decision("pii", actions=(OpportunisticTls(),)), "smtp"),
        (Decision("phi", actions=(RequireEncryption(),)), "hold"),
        (Decision("none", actions=(RequireEncryption("message-level"),)), "hold"),
        # Released from quarantine: a person let it out, the PHI baseline still holds.
        (Decision("phi", actions=(Quarantine("review"),)), "hold"),
        (Decision("none", actions=(Quarantine("review"),)), "smtp"),
        (Decision("phi", actions=(Reject("no"),)), "hold"),
    ],
)
async def test_the_method_follows_the_decision(decision: Decision, method: str) -> None:
    stage = MethodStage()
    msg = queued({"decision": decision.to_json()})
    chosen = (await stage.plan(msg, b"data", ["b@partner.example"]))["b@partner.example"].method
    assert chosen.name == method
    out = await stage.render(chosen, msg, b"data", ["b@partner.example"])
    if method == "hold":
        assert out.status == "transient"  # type: ignore[union-attr]
        assert out.text.startswith(HELD_ENCRYPTION)  # type: ignore[union-attr]
        assert out.text.startswith("4.7.0 Held")  # type: ignore[union-attr]
    else:
        assert out.data == b"data" and out.tls == "opportunistic"  # type: ignore[union-attr]


async def test_an_unreadable_decision_holds_the_message() -> None:
    stage = MethodStage()
    msg = queued({"decision": {"verdict": "catastrophic"}})
    chosen = (await stage.plan(msg, b"data", ["b@partner.example"]))["b@partner.example"].method
    assert chosen.name == "hold"
    out = await stage.render(chosen, msg, b"data", ["b@partner.example"])
    assert out.text == HELD_UNREADABLE  # type: ignore[union-attr]


async def test_messages_without_a_decision_leave_as_before() -> None:
    stage = MethodStage()
    rcpt = "b@partner.example"
    # Queued by a version without the policy stage, and the gateway's own notices.
    for msg in (queued({}), queued({"dsn_for": "X"}, is_dsn=True)):
        assert (await stage.plan(msg, b"data", [rcpt]))[rcpt].method.name == "smtp"
