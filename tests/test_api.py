"""The HTTP API end to end: a real gateway process (with its API child), real SMTP sinks as MX.

Messages sent through the API pass the same pipeline as SMTP mail (policy,
quarantine, delivery); status, quarantine, queue and portal routes read what
the gateway recorded; schemathesis fuzzes every route from the served spec.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peers.dns import DnsServer
from tests.peers.gateway import (
    GatewayConfigFile,
    GatewayFactory,
    GatewayProcess,
    free_port,
    write_config,
)
from tests.peers.sink import SinkFactory, SmtpSink

REPO = Path(__file__).resolve().parents[1]
# This module's corner of 127.0.0.0/8.
GW = "127.0.96.1"
MX = "127.0.96.2"
REVIEW_MX = "127.0.96.3"
PATIENT_MX = "127.0.96.4"
WAIT = 60.0

RULES = """\
version: 1
name: api-test
rules:
  - id: refused-domain
    when: {recipient: ["refused.example"]}
    then:
      - reject: "Mail to refused.example is not allowed"
  - id: review-domain
    when: {recipient: ["review.example"]}
    then:
      - quarantine: "Mail to review.example is reviewed first"
  - id: phi
    when: {verdict: phi}
    then:
      - require_encryption: tls-verified
"""
PHI_TEXT = (
    "Results for patient Margaret Thornton (DOB 04/12/1958, SSN 219-09-9999, MRN 00482913).\n"
    "Diagnosis: type 2 diabetes mellitus (E11.9) with essential hypertension (I10).\n"
)


def sealgate(cfg: GatewayConfigFile, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a `sealgate` subcommand on the test configuration."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "-c", str(cfg.path), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def make_key(cfg: GatewayConfigFile, scopes: str, *senders: str) -> str:
    """A new API key with these scopes and senders."""
    args = ["apikey", "create", "--name", f"test {scopes}", "--scope", scopes]
    for s in senders:
        args += ["--sender", s]
    out = sealgate(cfg, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@dataclass
class Setup:
    """A running gateway with its API, MX sinks and keys."""

    cfg: GatewayConfigFile
    gw: GatewayProcess
    base: str
    mx: SmtpSink
    review: SmtpSink
    patient: SmtpSink
    key: str  # every scope, senders @clinic.example

    def client(self, key: str | None = None) -> httpx.Client:
        """An HTTP client for the API, authenticated with key (default: the all-scopes key)."""
        headers = {"Authorization": f"Bearer {key or self.key}"} if key != "" else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=WAIT)


@pytest.fixture
def setup(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
    tls_ca_file: Path,
) -> Iterator[Setup]:
    """Gateway on 127.0.96.1, partner.example's MX on .2 (STARTTLS), review.example's on .3."""
    dns_server.add("partner.example", "MX", "10 mx.partner.example.")
    dns_server.add("mx.partner.example", "A", MX)
    dns_server.add("review.example", "MX", "10 mx.review.example.")
    dns_server.add("mx.review.example", "A", REVIEW_MX)
    dns_server.add("patient.example", "MX", "10 mx.patient.example.")
    dns_server.add("mx.patient.example", "A", PATIENT_MX)
    mx = sink_factory(MX, tls=True, cert_names=["mx.partner.example"])
    review = sink_factory(REVIEW_MX)
    patient = sink_factory(PATIENT_MX)  # no STARTTLS: PHI goes to the portal
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    api_port = free_port(GW)
    cfg = write_config(
        tmp_path / "gw",
        nameserver=dns_server,
        smtp_host=GW,
        extra={
            "policy": {"rules": str(rules), "workers": 1},
            "delivery": {"tls_ca_file": str(tls_ca_file)},
            "api": {"listen": f"{GW}:{api_port}", "max_request_size": "2MB"},
        },
    )
    key = make_key(cfg, "send,status,quarantine,portal,queue", "@clinic.example")
    gw = gateway_factory(cfg)
    gw.wait_for_event("listening", WAIT, service="api")
    yield Setup(cfg, gw, f"http://{GW}:{api_port}", mx, review, patient, key)


def wait_status(s: Setup, msg_id: str, state: str) -> dict[str, Any]:
    """Poll the status route until the message reaches state."""
    deadline = time.monotonic() + WAIT
    with s.client() as c:
        while True:
            r = c.get(f"/v1/messages/{msg_id}")
            body: dict[str, Any] = r.json()
            if r.status_code == 200 and body["state"] == state:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"status of {msg_id} never became {state}: {body}")
            time.sleep(0.2)


@pytest.mark.slow
def test_json_message_with_attachment_is_delivered_with_status(setup: Setup) -> None:
    """POST fields + a PDF: the MX gets the MIME message; status shows method and TLS facts."""
    pdf = b"%PDF-1.4\n% test\n" + bytes(range(256))
    with setup.client() as c:
        r = c.post(
            "/v1/messages",
            json={
                "from": "billing@clinic.example",
                "from_name": "Clinic Billing",
                "to": ["bob@partner.example"],
                "bcc": ["audit@partner.example"],
                "subject": "Your invoice",
                "text": "Please find your invoice attached.",
                "html": "<p>Please find your invoice attached.</p>",
                "attachments": [
                    {
                        "filename": "invoice.pdf",
                        "content_type": "application/pdf",
                        "content": base64.b64encode(pdf).decode(),
                    }
                ],
                "headers": {"X-Invoice-Run": "42"},
            },
        )
    assert r.status_code == 202, r.text
    msg_id = r.json()["id"]
    assert r.json()["recipients"] == 2

    (got,) = setup.mx.wait_for(1, WAIT)
    assert got.mail_from == "billing@clinic.example"
    assert sorted(got.rcpt_tos) == ["audit@partner.example", "bob@partner.example"]
    msg = email.message_from_bytes(got.data, policy=email.policy.default)
    assert msg["Subject"] == "Your invoice"
    assert msg["X-Invoice-Run"] == "42"
    assert msg["Bcc"] is None and "audit@" not in str(msg["To"])
    assert "Clinic Billing" in str(msg["From"])
    parts = {p.get_filename(): p for p in msg.iter_attachments()}
    assert parts["invoice.pdf"].get_content() == pdf
    assert got.tls_info is not None  # delivered over STARTTLS

    status = wait_status(setup, msg_id, "delivered")
    assert status["sender"] == "billing@clinic.example"
    assert status["verdict"] is not None
    by_addr = {r["address"]: r for r in status["recipients"]}
    assert set(by_addr) == {"bob@partner.example", "audit@partner.example"}
    bob = by_addr["bob@partner.example"]
    assert bob["state"] == "delivered" and bob["method"]
    assert bob["tls"]["version"].startswith("TLS")
    assert bob["tls"]["cipher"]
    assert bob["tls"]["verified"] is True
    assert bob["delivered_at"] is not None
    (event,) = setup.gw.wait_for_event("api_message_submitted", WAIT)
    assert event["id"] == msg_id and setup.key not in json.dumps(event)


@pytest.mark.slow
def test_raw_mime_policy_refusal_and_quarantine(setup: Setup) -> None:
    """Raw MIME goes through; a policy reject is 422 with its reason; a quarantine is released."""
    raw = (
        b"From: app@clinic.example\nTo: carol@partner.example\nSubject: raw\n"
        b"Message-ID: <raw-1@clinic.example>\n\nHello from a raw message.\n"
    )
    with setup.client() as c:
        r = c.post(
            "/v1/messages/raw",
            json={
                "mail_from": "app@clinic.example",
                "rcpt_to": ["carol@partner.example"],
                "mime": base64.b64encode(raw).decode(),
            },
        )
        assert r.status_code == 202, r.text
        (got,) = setup.mx.wait_for(1, WAIT)
        assert b"Hello from a raw message." in got.data

        refused = c.post(
            "/v1/messages",
            json={"from": "app@clinic.example", "to": ["x@refused.example"], "text": "hi"},
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "rejected"
        assert "refused.example is not allowed" in refused.json()["reason"]

        held = c.post(
            "/v1/messages",
            json={"from": "app@clinic.example", "to": ["dan@review.example"], "text": "hi"},
        )
        assert held.status_code == 202, held.text
        held_id = held.json()["id"]
        listing = c.get("/v1/quarantine").json()
        assert [m["id"] for m in listing["messages"]] == [held_id]
        assert listing["messages"][0]["rules"] == ["review-domain"]
        assert wait_status(setup, held_id, "quarantined")["recipients"][0]["state"] == (
            "quarantined"
        )
        assert c.get("/v1/queue").json()["quarantined"] == 1
        released = c.post(f"/v1/quarantine/{held_id}/release")
        assert released.status_code == 200, released.text
        assert released.json()["action"] == "released"
        (delivered,) = setup.review.wait_for(1, WAIT)
        assert delivered.rcpt_tos == ["dan@review.example"]
        assert c.get(f"/v1/quarantine/{held_id}").status_code == 404
        new_id = released.json()["queue_id"]
        if new_id is not None:
            wait_status(setup, new_id, "delivered")


@pytest.mark.slow
def test_keys_scopes_limits_and_errors(setup: Setup) -> None:
    """Missing, revoked and unscoped keys, foreign senders, big bodies: JSON errors."""
    status_only = make_key(setup.cfg, "status")
    other_sender = make_key(setup.cfg, "send", "@elsewhere.example")
    revoked = make_key(setup.cfg, "queue")
    key_id = revoked.split("_")[1]
    assert sealgate(setup.cfg, "apikey", "revoke", key_id).returncode == 0
    message = {"from": "app@clinic.example", "to": ["bob@partner.example"], "text": "hi"}

    with setup.client("") as c:
        r = c.post("/v1/messages", json=message)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        spec = c.get("/openapi.json")
        assert spec.status_code == 200
        assert spec.json() == json.loads((REPO / "docs" / "openapi.json").read_text())
    with setup.client(revoked) as c:
        assert c.get("/v1/queue").status_code == 401
    with setup.client(status_only) as c:
        r = c.post("/v1/messages", json=message)
        assert r.status_code == 403 and "send scope" in r.json()["reason"]
    with setup.client(other_sender) as c:
        r = c.post("/v1/messages", json=message)
        assert r.status_code == 403 and r.json()["error"] == "sender_not_allowed"
    with setup.client() as c:
        big = {**message, "text": "x" * (3 * 1024 * 1024)}
        r = c.post("/v1/messages", json=big)
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        secret = "Patient John Q. Example, DOB 1970-01-01"
        r = c.post("/v1/messages", json={**message, "to": [secret]})
        assert r.status_code == 422 and r.json()["error"] == "invalid_request"
        assert "to.0" in r.json()["reason"] and secret not in r.text
        r = c.post(
            "/v1/messages",
            json={**message, "attachments": [{"filename": "a.bin", "content": "%%%"}]},
        )
        assert r.status_code == 422 and "attachments.0.content" in r.json()["reason"]
        r = c.post(
            "/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        assert c.get("/v1/messages/0000000000000000ZZ").status_code == 404
        assert c.post("/v1/messages/0000000000000000ZZ/portal/revoke").status_code == 404
        assert c.get("/v1/messages/not-an-id").status_code == 422
        assert c.get("/nowhere").json()["error"] == "not_found"
        summary = c.get("/v1/queue").json()
        assert summary["gateway_running"] is True and summary["messages"] >= 0
    denied = setup.gw.events("api_request_denied")
    assert denied and all(status_only not in json.dumps(e) for e in denied)


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors(setup: Setup, tmp_path: Path) -> None:
    """Every route, fuzzed from the served OpenAPI spec with a valid key: no 5xx, spec kept."""
    # Any sender: generated messages go all the way through the gateway's listener.
    key = make_key(setup.cfg, "send,status,quarantine,portal,queue", "*")
    out = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", f"{setup.base}/openapi.json",
            "--header", f"Authorization: Bearer {key}",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance",
            "--max-examples", "30",
            "--phases", "examples,coverage,fuzzing",
            "--workers", "1",
            "--seed", "1",
            "--no-color",
            "--generation-database", "none",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert not setup.gw.events("api_error"), setup.gw.log_text()


@pytest.mark.slow
def test_portal_copy_status_and_revoke(setup: Setup) -> None:
    """PHI without verified TLS goes to the portal; status shows the copy; the API revokes it."""
    with setup.client() as c:
        r = c.post(
            "/v1/messages",
            json={
                "from": "dr.alice@clinic.example",
                "to": ["margaret@patient.example"],
                "subject": "Your results",
                "text": PHI_TEXT,
            },
        )
        assert r.status_code == 202, r.text
        msg_id = r.json()["id"]
        (notice,) = setup.patient.wait_for(1, WAIT)
        assert b"219-09-9999" not in notice.data  # only a link reached the mailbox
        status = wait_status(setup, msg_id, "delivered")
        (rcpt,) = status["recipients"]
        assert status["verdict"] == "phi"
        assert rcpt["method"] == "portal"
        assert rcpt["portal"]["state"] == "active" and rcpt["portal"]["opened_at"] is None

        # A key for other senders cannot see or revoke it.
        other = make_key(setup.cfg, "status,portal", "@elsewhere.example")
        with setup.client(other) as o:
            assert o.get(f"/v1/messages/{msg_id}").status_code == 404
            assert o.post(f"/v1/messages/{msg_id}/portal/revoke").status_code == 404

        revoked = c.post(f"/v1/messages/{msg_id}/portal/revoke")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json() == {
            "id": msg_id,
            "action": "revoked",
            "queue_id": None,
            "copies": 1,
            "revoked": 1,
        }
        after = c.get(f"/v1/messages/{msg_id}").json()
        assert after["recipients"][0]["portal"]["state"] == "revoked"
        again = c.post(f"/v1/messages/{msg_id}/portal/revoke").json()
        assert again["copies"] == 1 and again["revoked"] == 0
