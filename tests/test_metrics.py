"""Prometheus metrics: the queue collector, labels, and a real gateway's endpoint.

The gateway runs as its own processes (inbound and policy in the main one,
deliveries in another), so the scrape shows what several processes counted.
Mail goes to an SMTP sink on 127.0.97.22 found through the test DNS server; the
scrape is checked with `promtool check metrics` when promtool is installed
(Debian: the prometheus package).
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics.collect import label
from gateway.metrics.queue import QueueCollector
from gateway.spool import new_id
from tests.peers.dns import DnsServer
from tests.peers.gateway import GatewayConfigFile, GatewayFactory, free_port, write_config
from tests.peers.sink import SinkFactory

MX = "127.0.97.22"
METRICS_HOST = "127.0.97.21"
WAIT = 90.0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from the text exposition format."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_queue_collector_counts_messages_and_the_oldest_age(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(QueueCollector(tmp_path))
    empty = samples(generate_latest(registry).decode())
    assert empty[("sealgate_queue_messages", ())] == 0
    assert empty[("sealgate_queue_oldest_age_seconds", ())] == 0
    qdir = tmp_path / "spool" / "q"
    qdir.mkdir(parents=True)
    old, new = qdir / new_id(), qdir / new_id()
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    (qdir / f"{new.name}.state").write_bytes(b"{}")  # state files are not messages
    (qdir / ".tmp-leftover").write_bytes(b"")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    text = generate_latest(registry).decode()
    got = samples(text)
    assert got[("sealgate_queue_messages", ())] == 2
    assert 3500 < got[("sealgate_queue_oldest_age_seconds", ())] < 7200
    promtool_check(text)


def test_labels_are_short_and_plain() -> None:
    assert label("TLS") == "tls"
    assert label(None) == "unknown"
    assert label("a b/c") == "a_b_c"
    assert len(label("x" * 100)) == 40


def send(cfg: GatewayConfigFile, rcpt: str) -> None:
    data = (
        f"From: <app@clinic.example>\r\nTo: <{rcpt}>\r\nSubject: Chairs\r\n"
        f"Message-ID: <m-{time.monotonic_ns()}@clinic.example>\r\n\r\n"
        "The waiting room chairs arrive on Tuesday.\r\n"
    ).encode()
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=WAIT) as client:
        client.sendmail("app@clinic.example", [rcpt], data)


def scrape(url: str) -> str:
    response = httpx.get(url, timeout=10.0)
    assert response.status_code == 200
    return response.text


def wait_for_sample(url: str, key: tuple[str, tuple[tuple[str, str], ...]], value: float) -> str:
    deadline = time.monotonic() + WAIT
    while True:
        text = scrape(url)
        if samples(text).get(key, 0) >= value:
            return text
        assert time.monotonic() < deadline, text
        time.sleep(0.2)


@pytest.mark.slow
def test_a_running_gateway_serves_metrics_from_all_its_processes(
    tmp_path: Path,
    dns_server: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
) -> None:
    dns_server.add("partner.example", "MX", "10 mx.partner.example.")
    dns_server.add("mx.partner.example", "A", MX)
    sink = sink_factory(MX, tls=True, cert_names=["mx.partner.example"])
    sink.reply_rcpt["carol@partner.example"] = "451 4.2.0 Mailbox busy, try later"
    port = free_port(METRICS_HOST)
    cfg = write_config(
        tmp_path / "gw",
        nameserver=dns_server,
        smtp_host="127.0.97.20",
        extra={
            "delivery": {"retry": {"first": "30s"}},
            "metrics": {"enabled": True, "listen": f"{METRICS_HOST}:{port}"},
        },
    )
    # Leftovers of an earlier run are cleared at start.
    stale = cfg.data_dir / "metrics"
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"junk")
    gateway_factory(cfg)
    url = f"http://{METRICS_HOST}:{port}/metrics"

    for _ in range(2):
        send(cfg, "bob@partner.example")
    send(cfg, "carol@partner.example")
    sink.wait_for(2, WAIT)
    received = ("sealgate_messages_received_total", ())
    wait_for_sample(url, received, 3)
    text = wait_for_sample(
        url, ("sealgate_deliveries_total", (("method", "unknown"), ("result", "deferred"))), 1
    )
    got = samples(text)
    delivered = {k: v for k, v in got.items() if k[0] == "sealgate_deliveries_total" and v}
    delivered_methods = [dict(k[1])["method"] for k in delivered if ("result", "delivered") in k[1]]
    assert len(delivered_methods) == 1
    method = delivered_methods[0]
    assert got[("sealgate_deliveries_total", (("method", method), ("result", "delivered")))] == 2
    assert got[("sealgate_delivery_delay_seconds_count", (("method", method),))] == 2
    classified = {k: v for k, v in got.items() if k[0] == "sealgate_messages_classified_total"}
    assert sum(classified.values()) == 3
    assert any(("verdict", "none") in k[1] for k in classified)
    # The deferred message waits in the queue.
    assert got[("sealgate_queue_messages", ())] == 1
    assert got[("sealgate_queue_oldest_age_seconds", ())] >= 0
    assert "carol" not in text and "partner.example" not in text
    promtool_check(text)
