"""The audit trail of a real gateway: mail in and out, then `sealgate audit export|verify`.

The gateway runs as its own process (main process and delivery process both
record); the MX host is an SMTP sink on 127.0.88.2, found through the test DNS
server.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.exchange import read_export
from tests.peers.dns import DnsServer
from tests.peers.gateway import GatewayConfigFile, GatewayFactory
from tests.peers.sink import SinkFactory
from tests.test_policy_gateway import (
    BUSINESS_BODY,
    PATIENT_FIRST,
    PATIENT_LAST,
    PHI_BODY,
    SSN,
    WAIT,
    config,
    message,
    queued_id,
    sealgate,
    send,
)

MX_PARTNER = "127.0.88.2"


def exported(cfg: GatewayConfigFile, fmt: str = "json") -> str:
    result = sealgate(cfg, "audit", "export", "--format", fmt)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_for_records(cfg: GatewayConfigFile, want: dict[str, str | None]) -> list[dict[str, Any]]:
    """Export until a record of each event in `want` (event -> message id) is there."""
    deadline = time.monotonic() + WAIT
    while True:
        records: list[dict[str, Any]] = json.loads(exported(cfg))
        have = {(r["event"], r["message_id"]) for r in records}
        if all(item in have for item in want.items()):
            return records
        assert time.monotonic() < deadline, f"missing {set(want.items()) - have}"
        time.sleep(0.3)


def first(records: list[dict[str, Any]], event: str, message_id: str) -> dict[str, Any]:
    found = [r for r in records if r["event"] == event and r["message_id"] == message_id]
    assert found, (event, message_id)
    return found[0]


@pytest.mark.slow
def test_gateway_records_each_step_and_the_trail_verifies(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
) -> None:
    dns_server.add("partner.example", "MX", "10 mx.partner.example.")
    dns_server.add("mx.partner.example", "A", MX_PARTNER)
    sink = sink_factory(MX_PARTNER, tls=True, cert_names=["mx.partner.example"])
    cfg = config(tmp_path, dns_server)
    gw = gateway_factory(cfg)

    plain = queued_id(send(cfg, message("Waiting room chairs", BUSINESS_BODY)))
    sink.wait_for(1, WAIT)
    # "ready" may come after the first message: listeners open just before it is logged.
    records = wait_for_records(
        cfg, {"ready": None, "received": plain, "policy": plain, "delivered": plain}
    )
    received = first(records, "received", plain)
    assert received["fields"]["sender"] == "dr.alice@clinic.example"
    assert received["fields"]["recipients"] == 1
    assert first(records, "policy", plain)["fields"]["verdict"] == "none"
    delivered = first(records, "delivered", plain)["fields"]
    assert delivered["rcpt"] == "bob@partner.example" and delivered["code"] == 250
    assert delivered["method"] and str(delivered["tls_version"]).startswith("TLS")
    assert "tls_cipher" in delivered and "tls_verified" in delivered

    # PHI: the decision is recorded with rule ids and masked values, never the PHI.
    phi = queued_id(send(cfg, message("Referral", PHI_BODY)))
    records = wait_for_records(cfg, {"policy": phi})
    decision = first(records, "policy", phi)["fields"]
    assert decision["verdict"] == "phi" and decision["matched_rules"] == ["phi"]
    assert {loc["masked"] for loc in decision["locations"]} >= {"M*** T***"}
    text = exported(cfg, "csv") + exported(cfg)
    for secret in (PATIENT_FIRST, PATIENT_LAST, SSN, "00482913", "metformin", "Referral"):
        assert secret not in text, f"{secret!r} leaked into the audit trail"

    # A temporary failure, an admin action recorded by the CLI, and its effect
    # recorded by the gateway's delivery process.
    sink.reply_rcpt["carol@partner.example"] = "451 4.3.0 Mailbox busy, try later"
    later = queued_id(send(cfg, message("Chairs", BUSINESS_BODY), ("carol@partner.example",)))
    records = wait_for_records(cfg, {"deferred": later})
    assert first(records, "deferred", later)["fields"]["code"] == 451
    deleted = sealgate(cfg, "queue", "delete", later)
    assert deleted.returncode == 0, deleted.stderr
    records = wait_for_records(cfg, {"admin_action": later, "deleted": later})
    action = first(records, "admin_action", later)["fields"]
    assert action["command"] == "queue delete" and action["status"] == 0

    # Checked while the gateway runs, and after it stopped.
    running = sealgate(cfg, "audit", "verify")
    assert running.returncode == 0, running.stdout + running.stderr
    checkpoint = running.stdout.split("head ", 1)[1].strip()
    assert gw.stop() == 0
    final = sealgate(cfg, "audit", "verify", "--expect-head", checkpoint)
    assert final.returncode == 0, final.stdout
    assert any(r["event"] == "stopping" for r in json.loads(exported(cfg)))
    # Both formats hold the same records.
    assert read_export(exported(cfg, "csv")) == read_export(exported(cfg))
