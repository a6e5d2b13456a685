"""Quarantine through the real gateway: a rule holds mail, an admin reviews and releases it."""

from __future__ import annotations

import email
import json
from email.policy import default as default_policy
from pathlib import Path

import pytest

from tests.peers.dns import DnsServer
from tests.peers.gateway import GatewayFactory
from tests.peers.sink import SinkFactory
from tests.test_policy_gateway import (
    BUSINESS_BODY,
    MX_CLINIC,
    MX_PARTNER,
    PATIENT_LAST,
    PHI_BODY,
    SENDER,
    WAIT,
    assert_no_phi,
    config,
    message,
    publish,
    queued_id,
    sealgate,
    send,
    spooled,
)

MX_LAB = "127.0.44.4"
LAB = "results@lab.example"
REVIEW_RULES = """\
version: 1
name: review
rules:
  - id: lab-review
    description: Mail to the outside lab is reviewed by the privacy office first.
    when: {recipient: ["lab.example"]}
    then:
      - quarantine: "Mail to the lab is reviewed first"
      - notify_sender: "Your message to the lab is held for review by the privacy office."
  - id: phi
    when: {verdict: phi}
    then:
      - require_encryption: tls-verified
"""


@pytest.mark.slow
def test_quarantine_list_show_release_delete_while_the_gateway_runs(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
) -> None:
    publish(dns_server)
    dns_server.add("lab.example", "MX", "10 mx.lab.example.")
    dns_server.add("mx.lab.example", "A", MX_LAB)
    lab, clinic = sink_factory(MX_LAB), sink_factory(MX_CLINIC)
    partner = sink_factory(MX_PARTNER)
    cfg = config(tmp_path, dns_server, REVIEW_RULES)
    gw = gateway_factory(cfg)

    # Held: the client hears 250, nothing goes to the lab, the sender gets a notice.
    plain = queued_id(send(cfg, message("Supplies order", BUSINESS_BODY), (LAB,)))
    (notice,) = clinic.wait_for(1, WAIT)
    assert notice.mail_from == "" and notice.rcpt_tos == [SENDER]
    text = email.message_from_bytes(notice.data, policy=default_policy)
    notice_body = text.get_body().get_content()  # type: ignore[union-attr]
    assert "held for review by the privacy office" in notice_body
    assert plain in notice_body and "lab-review" in notice_body
    (event,) = gw.wait_for_event("quarantined", WAIT, id=plain)
    assert event["recipients"] == 1
    phi = queued_id(send(cfg, message("Referral", PHI_BODY), (LAB,)))
    gw.wait_for_event("policy", WAIT, id=phi, outcome="quarantined")
    # Mail to others is not held by this rule.
    queued_id(send(cfg, message("Chairs", BUSINESS_BODY)))
    partner.wait_for(1, WAIT)
    assert lab.messages == []
    stored = (cfg.data_dir / "quarantine" / phi).read_bytes()
    assert PATIENT_LAST.encode() not in stored  # sealed at rest

    listed = sealgate(cfg, "quarantine", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert set(rows) == {plain, phi}
    assert rows[plain]["verdict"] == "none" and rows[phi]["verdict"] == "phi"
    assert rows[phi]["rules"] == ["lab-review"] and rows[phi]["recipients"] == [LAB]
    human = sealgate(cfg, "quarantine", "list")
    assert plain in human.stdout and "(lab-review)" in human.stdout

    shown = sealgate(cfg, "quarantine", "show", phi)
    assert shown.returncode == 0, shown.stderr
    assert "verdict:      phi" in shown.stdout and "M*** T***" in shown.stdout
    assert PATIENT_LAST not in shown.stdout
    full = sealgate(cfg, "quarantine", "show", phi, "--body")
    assert PATIENT_LAST in full.stdout  # the reviewer reads the message itself

    # Released while the gateway runs: a message without PHI is delivered at once.
    out = sealgate(cfg, "quarantine", "release", plain)
    assert out.returncode == 0, out.stderr
    assert "released into the delivery queue by the running gateway" in out.stdout
    (released,) = gw.wait_for_event("released", WAIT, id=plain)
    (got,) = lab.wait_for(1, WAIT)
    assert b"facilities budget" in got.data
    assert email.message_from_bytes(got.data)["Subject"] == "Supplies order"
    gw.wait_for_event("delivered", WAIT, id=released["queue_id"])

    # The PHI message is released too, but its decision still forbids plaintext: the
    # lab (no certificate, key or verifiable TLS) gets a portal notice, not the message.
    out = sealgate(cfg, "quarantine", "release", phi)
    assert out.returncode == 0, out.stderr
    (released,) = gw.wait_for_event("released", WAIT, id=phi)
    (delivered,) = gw.wait_for_event("delivered", WAIT, id=released["queue_id"])
    assert delivered["method"] == "portal"
    notice = lab.wait_for(2, WAIT)[1]
    assert PATIENT_LAST.encode() not in notice.data and b"/m/" in notice.data
    shown = sealgate(cfg, "portal", "list", "--id", released["queue_id"], "--json")
    assert shown.returncode == 0 and LAB in shown.stdout, shown.stderr

    # Delete: gone without a trace of delivery.
    third = queued_id(send(cfg, message("Second order", BUSINESS_BODY), (LAB,)))
    out = sealgate(cfg, "quarantine", "delete", third)
    assert out.returncode == 0, out.stderr
    gw.wait_for_event("quarantine_deleted", WAIT, id=third)
    assert sealgate(cfg, "quarantine", "list", "--json").stdout == ""
    assert third not in spooled(cfg)
    assert len(lab.messages) == 2
    assert gw.stop() == 0
    assert_no_phi(gw)
