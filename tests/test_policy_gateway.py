"""The policy stage inside the real gateway: SMTP in, classification, spool, delivery or hold.

Sealgate runs as its own process with real scanning workers; MX hosts are
SMTP sinks found through the test DNS server; clients are smtplib. Every test
ends by checking that the log carries no patient data.
"""

from __future__ import annotations

import asyncio
import email
import json
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

from gateway.message import ClientInfo, Envelope
from gateway.sealing import MasterKey, default_key_path
from gateway.spool import Spool
from tests.peers.dns import DnsServer
from tests.peers.gateway import (
    REPO,
    GatewayConfigFile,
    GatewayFactory,
    GatewayProcess,
    write_config,
)
from tests.peers.sink import SinkFactory

# This module's corner of 127.0.0.0/8.
MX_PARTNER = "127.0.44.2"
MX_CLINIC = "127.0.44.3"
WAIT = 90.0
SENDER = "dr.alice@clinic.example"
RCPT = "bob@partner.example"

# Realistic PHI: a patient's name, date of birth, diagnosis with ICD-10 code, SSN.
PATIENT_FIRST, PATIENT_LAST = "Margaret", "Thornton"
SSN = "219-09-9999"
PHI_BODY = (
    f"Dear Dr Bob,\r\n\r\n"
    f"I am referring my patient {PATIENT_FIRST} {PATIENT_LAST} (DOB 04/12/1958, "
    f"SSN {SSN}, MRN 00482913) for cardiology review.\r\n"
    f"Diagnosis: type 2 diabetes mellitus (E11.9) with essential hypertension (I10).\r\n"
    f"Current medication: metformin 500 mg twice daily.\r\n\r\nDr Alice\r\n"
)
BUSINESS_BODY = (
    "Hi Bob,\r\n\r\nThe facilities budget for the new waiting room is approved. "
    "Delivery of the chairs is planned for next Tuesday.\r\n\r\nAlice\r\n"
)


def message(subject: str, body: str, *extra: str, n: int = 0) -> bytes:
    """A plain-text message from Dr Alice to Bob."""
    headers = [
        f"From: Dr Alice <{SENDER}>",
        f"To: Bob <{RCPT}>",
        f"Subject: {subject}",
        "Date: Mon, 23 Nov 2026 09:00:00 +0000",
        f"Message-ID: <policy-{n}-{time.monotonic_ns()}@clinic.example>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        *extra,
    ]
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def send(cfg: GatewayConfigFile, data: bytes, rcpts: tuple[str, ...] = (RCPT,)) -> tuple[int, str]:
    """One SMTP transaction; the final reply to DATA (or to the first refusal)."""
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=WAIT) as client:
        client.ehlo("client.clinic.example")
        code, text = client.mail(SENDER)
        assert code == 250, text
        for r in rcpts:
            code, text = client.rcpt(r)
            assert code == 250, text
        code, text = client.data(data)
    return code, text.decode()


def queued_id(reply: tuple[int, str]) -> str:
    code, text = reply
    assert code == 250, reply
    return text.rsplit(" ", 1)[1]


def sealgate(cfg: GatewayConfigFile, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line, as an admin runs it next to the gateway."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args, "-c", str(cfg.path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=WAIT,
        check=False,
    )


def publish(dns: DnsServer) -> None:
    dns.add("partner.example", "MX", "10 mx.partner.example.")
    dns.add("mx.partner.example", "A", MX_PARTNER)
    dns.add("clinic.example", "MX", "10 mx.clinic.example.")
    dns.add("mx.clinic.example", "A", MX_CLINIC)


def config(
    tmp_path: Path, dns: DnsServer, rules: str | None = None, **policy: Any
) -> GatewayConfigFile:
    """A gateway config with one scanning worker and quick retries."""
    settings: dict[str, Any] = {"workers": 1, **policy}
    if rules is not None:
        path = tmp_path / "rules.yaml"
        path.write_text(rules)
        settings["rules"] = str(path)
    return write_config(
        tmp_path / "gw",
        nameserver=dns,
        extra={
            "policy": settings,
            "delivery": {"retry": {"first": "1s", "max_backoff": "2s"}},
        },
    )


def spooled(cfg: GatewayConfigFile) -> list[str]:
    """Ids of the messages in the gateway's queue directory."""
    qdir = cfg.data_dir / "spool" / "q"
    return sorted(n for n in os.listdir(qdir) if "." not in n) if qdir.is_dir() else []


def assert_no_phi(gw: GatewayProcess) -> None:
    text = gw.log_text()
    for secret in (PATIENT_FIRST, PATIENT_LAST, SSN, SSN.replace("-", ""), "00482913", "metformin"):
        assert secret not in text, f"{secret!r} leaked into the log"


def send_eventually(cfg: GatewayConfigFile, data: bytes) -> str:
    """Send as an MTA would, trying again after a 451, until the message is queued."""
    deadline = time.monotonic() + WAIT
    while True:
        code, text = send(cfg, data)
        if code != 451 or time.monotonic() > deadline:
            return queued_id((code, text))
        time.sleep(0.5)


def wait_until(predicate: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


# --- the default policy ----------------------------------------------------------------


@pytest.mark.slow
def test_default_policy_delivers_business_mail_protects_phi_refuses_phi_in_subject(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
) -> None:
    publish(dns_server)
    sink = sink_factory(MX_PARTNER)
    cfg = config(tmp_path, dns_server)
    gw = gateway_factory(cfg)

    # A plain business message is delivered.
    plain_id = queued_id(send(cfg, message("Waiting room chairs", BUSINESS_BODY)))
    (got,) = sink.wait_for(1, WAIT)
    assert b"waiting room is approved" in got.data
    (event,) = gw.wait_for_event("policy", WAIT, id=plain_id)
    assert event["verdict"] == "none" and event["outcome"] == "queued"

    # A message with PHI never leaves in plaintext: the partner has no certificate, no
    # key and no verifiable TLS, so the message waits in the portal and the MX only
    # gets a notification that names no patient.
    phi_id = queued_id(send(cfg, message("Referral", PHI_BODY)))
    (event,) = gw.wait_for_event("policy", WAIT, id=phi_id)
    assert event["verdict"] == "phi" and event["actions"] == ["require_encryption"]
    assert event["findings"]["patient-name"] >= 1 and event["matched_rules"] == ["phi"]
    (delivered,) = gw.wait_for_event("delivered", WAIT, id=phi_id)
    assert delivered["method"] == "portal"
    notice = sink.wait_for(2, WAIT)[1]
    assert PATIENT_LAST.encode() not in notice.data and b"/m/" in notice.data
    shown = sealgate(cfg, "portal", "list", "--id", phi_id, "--json")
    assert shown.returncode == 0, shown.stderr
    (copy,) = [json.loads(line) for line in shown.stdout.splitlines()]
    assert copy["recipient"] == "bob@partner.example"
    assert PATIENT_LAST not in shown.stdout

    # PHI in the subject line: refused at DATA with the rule's reason, nothing queued.
    before = spooled(cfg)
    code, text = send(
        cfg, message(f"{PATIENT_FIRST} {PATIENT_LAST} DOB 04/12/1958 E11.9 results", "See below.")
    )
    assert code == 550
    assert text.startswith("5.7.1 ") and "subject line" in text
    assert spooled(cfg) == before
    (refused,) = gw.wait_for_event("policy", WAIT, outcome="refused")
    assert refused["id"] is None and refused["matched_rules"] == ["phi-in-subject"]
    assert len(sink.messages) == 2
    assert gw.stop() == 0
    assert_no_phi(gw)


@pytest.mark.slow
def test_mail_queued_before_the_upgrade_is_delivered_as_before_and_logged(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
) -> None:
    """A message in the spool without a decision was accepted under the old rules."""
    publish(dns_server)
    sink = sink_factory(MX_PARTNER)
    cfg = config(tmp_path, dns_server)

    async def queue_the_old_way() -> str:
        spool = Spool(cfg.data_dir, MasterKey.load_or_create(default_key_path(cfg.data_dir)))
        await spool.start()
        try:
            env = Envelope(SENDER, (RCPT,), time.time(), ClientInfo("127.0.0.1", "old.client"))
            return (await spool.put(env, message("Old", BUSINESS_BODY))).id
        finally:
            await spool.close()

    old = asyncio.run(queue_the_old_way())
    gw = gateway_factory(cfg)
    (got,) = sink.wait_for(1, WAIT)
    assert email.message_from_bytes(got.data)["Subject"] == "Old"
    gw.wait_for_event("unclassified", WAIT, id=old)
    assert gw.stop() == 0


# --- custom rulesets ------------------------------------------------------------------------

TAGGING_RULES = """\
version: 1
name: tagging
rules:
  - id: tagged-secure
    description: The sender tagged the subject; say so in a header and remove the tag.
    when: {subject_tag: ["[secure]"]}
    then:
      - strip_subject_tag: ["[secure]"]
      - add_header: {name: X-Clinic-Policy, value: sender asked for protection}
      - notify_sender: "Your tagged message was accepted."
      - deliver
"""


@pytest.mark.slow
def test_headers_added_tags_stripped_control_headers_removed_sender_notified(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
) -> None:
    publish(dns_server)
    partner, clinic = sink_factory(MX_PARTNER), sink_factory(MX_CLINIC)
    cfg = config(tmp_path, dns_server, TAGGING_RULES)
    gw = gateway_factory(cfg)

    data = message(
        "[secure] Lab results",
        BUSINESS_BODY,
        "X-Sealgate-Encrypt: yes",
        "X-Sealgate-Portal-Expiry: 7d",
    )
    msg_id = queued_id(send(cfg, data))
    (got,) = partner.wait_for(1, WAIT)
    parsed = email.message_from_bytes(got.data, policy=default_policy)
    assert parsed["Subject"] == "Lab results"
    assert parsed["X-Clinic-Policy"] == "sender asked for protection"
    assert not [k for k in parsed if k.lower().startswith("x-sealgate-")]
    # Our Received stays the topmost trace field, the added header right below it.
    assert got.data.startswith(b"Received: from client.clinic.example")
    assert got.data.index(b"X-Clinic-Policy") < got.data.index(b"From: Dr Alice")

    # The notice to the sender: null sender, names the rule, nothing of the message.
    (notice,) = clinic.wait_for(1, WAIT)
    assert notice.mail_from == "" and notice.rcpt_tos == [SENDER]
    text = email.message_from_bytes(notice.data, policy=default_policy)
    body = text.get_body().get_content()  # type: ignore[union-attr]
    assert "Your tagged message was accepted." in body and "tagged-secure" in body
    assert msg_id in body and "Lab results" not in notice.data.decode()
    assert gw.wait_for_event("notice_queued", WAIT, original_id=msg_id)
    assert gw.stop() == 0


SHADOW_RULES = """\
version: 1
name: trial
mode: shadow
rules:
  - id: tagged-secure
    when: {subject_tag: ["[secure]"]}
    then:
      - require_encryption: message-level
      - strip_subject_tag: ["[secure]"]
"""


@pytest.mark.slow
def test_shadow_mode_records_what_rules_would_do_and_enforces_the_baseline(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
) -> None:
    publish(dns_server)
    sink = sink_factory(MX_PARTNER)
    cfg = config(tmp_path, dns_server, SHADOW_RULES)
    gw = gateway_factory(cfg)

    # The rule would require encryption; in shadow mode it is only recorded.
    tagged = queued_id(send(cfg, message("[secure] Quarterly figures", BUSINESS_BODY)))
    (got,) = sink.wait_for(1, WAIT)
    assert email.message_from_bytes(got.data)["Subject"] == "[secure] Quarterly figures"
    (event,) = gw.wait_for_event("policy", WAIT, id=tagged)
    assert event["shadow"] is True and event["actions"] == ["deliver"]
    assert event["would_apply"] == ["require_encryption", "strip_subject_tag"]
    assert event["matched_rules"] == ["tagged-secure"]

    # The baseline is enforced all the same: PHI is never sent in plaintext (here the
    # partner can only be reached through the portal, so its MX gets a notice).
    phi = queued_id(send(cfg, message("Referral", PHI_BODY)))
    (event,) = gw.wait_for_event("policy", WAIT, id=phi)
    assert event["actions"] == ["require_encryption"] and "baseline-phi" in event["matched_rules"]
    (delivered,) = gw.wait_for_event("delivered", WAIT, id=phi)
    assert delivered["method"] == "portal"
    notice = sink.wait_for(2, WAIT)[1]
    assert PATIENT_LAST.encode() not in notice.data
    assert gw.stop() == 0
    assert_no_phi(gw)


# --- failing closed ----------------------------------------------------------------------

# A header test whose regular expression backtracks exponentially on "aaaa...!":
# the engine really does run (practically) forever on such a message.
REDOS_RULES = """\
version: 1
name: tickets
rules:
  - id: ticket-header
    when: {header: {x-ticket: "^(a+)+$"}}
    then: [deliver]
"""


def worker_pids(gw: GatewayProcess) -> list[int]:
    """The scanning processes the gateway started."""
    assert gw.pid is not None
    children: list[int] = []
    for task in Path(f"/proc/{gw.pid}/task").iterdir():
        children += [int(p) for p in (task / "children").read_text().split()]
    # Workers run gateway.policy.worker_main (see the command line of _Worker.spawn).
    return [p for p in children if b"worker_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_a_scan_that_overruns_the_timeout_answers_451_and_queues_nothing(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
) -> None:
    publish(dns_server)
    sink = sink_factory(MX_PARTNER)
    cfg = config(tmp_path, dns_server, REDOS_RULES, timeout="2s")
    gw = gateway_factory(cfg)

    stuck = message("Ticket 7", BUSINESS_BODY, "X-Ticket: " + "a" * 64 + "!")
    code, text = send(cfg, stuck)
    assert (code, text) == (451, "4.3.0 Temporary server error, try again later")
    assert spooled(cfg) == []
    (event,) = gw.wait_for_event("rejected", WAIT, reason="policy unavailable")
    assert event["failure"] == "timeout"

    # The stuck worker was replaced: the next message is classified and delivered.
    gw.wait_for_event("policy_worker_replaced", WAIT)
    send_eventually(cfg, message("Waiting room chairs", BUSINESS_BODY))
    sink.wait_for(1, WAIT)
    assert gw.stop() == 0


@pytest.mark.slow
def test_a_scanning_process_that_dies_mid_scan_answers_451(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
) -> None:
    publish(dns_server)
    sink = sink_factory(MX_PARTNER)
    cfg = config(tmp_path, dns_server, REDOS_RULES, timeout="10m")
    gw = gateway_factory(cfg)
    (pid,) = worker_pids(gw)

    replies: list[tuple[int, str]] = []
    stuck = message("Ticket 8", BUSINESS_BODY, "X-Ticket: " + "a" * 64 + "!")
    client = threading.Thread(target=lambda: replies.append(send(cfg, stuck)))
    client.start()
    # Once it has burnt a second of CPU, the worker is inside this message's scan.
    start = cpu_seconds(pid)
    wait_until(lambda: cpu_seconds(pid) - start >= 1.0)
    os.kill(pid, signal.SIGKILL)
    client.join(WAIT)
    assert replies == [(451, "4.3.0 Temporary server error, try again later")]
    assert spooled(cfg) == []
    (event,) = gw.wait_for_event("rejected", WAIT, reason="policy unavailable")
    assert event["failure"] == "crashed"

    gw.wait_for_event("policy_worker_replaced", WAIT)
    send_eventually(cfg, message("Waiting room chairs", BUSINESS_BODY))
    sink.wait_for(1, WAIT)
    assert gw.stop() == 0


def test_a_broken_ruleset_is_caught_by_check_and_stops_startup(
    tmp_path: Path, sink_factory: SinkFactory
) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        "version: 1\nrules:\n  - id: phi\n    when: {verdict: phi}\n    then: [encrypt_please]\n"
    )
    cfg = write_config(tmp_path / "gw", extra={"policy": {"rules": str(bad), "workers": 1}})

    check = sealgate(cfg, "check")
    assert check.returncode == 2
    assert check.stderr.startswith(f"policy.rules: {bad}:5: rules[0](phi).then[0]: ")
    assert "unknown action 'encrypt_please'" in check.stderr
    assert "configuration OK" not in check.stdout

    run = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "-c", str(cfg.path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=WAIT,
        check=False,
    )
    assert run.returncode == 1
    failed = [json.loads(line) for line in run.stderr.splitlines() if "startup_failed" in line]
    assert len(failed) == 1 and f"{bad}:5" in failed[0]["reason"]
    assert "Traceback" not in run.stderr

    good = sealgate(write_config(tmp_path / "ok", extra={"policy": {"workers": 1}}), "check")
    assert (good.returncode, good.stdout.strip()) == (0, "configuration OK")
