"""The outbound process: deliveries run apart from the listeners, supervised by the daemon.

The real gateway as a child process, mail to a loopback sink through the
relay host: killing the outbound process costs nothing acknowledged (it is
logged and restarted), killing the main process takes the outbound process
with it (so the daemon lock is free for the next start), and SIGTERM stops both.
"""

from __future__ import annotations

import os
import signal
import smtplib
import time
from pathlib import Path

import pytest

from gateway.spool import daemon_running
from tests.peers.gateway import GatewayFactory, write_config
from tests.peers.sink import SinkFactory

# Our corner of 127.0.0.0/8.
SINK = "127.0.42.2"
WAIT = 60.0


def send(host: str, port: int, n: int) -> None:
    """Submit one small message."""
    with smtplib.SMTP(host, port, timeout=WAIT) as client:
        client.sendmail(
            "desk@clinic.example",
            ["patient@example.net"],
            f"From: desk@clinic.example\r\nSubject: n{n}\r\n\r\nSee you.\r\n".encode(),
        )


def alive(pid: int) -> bool:
    """Whether a process with this pid still exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_outbound_process_is_restarted_after_a_crash(
    tmp_path: Path, sink_factory: SinkFactory, gateway_factory: GatewayFactory
) -> None:
    sink = sink_factory(SINK)
    cfg = write_config(
        tmp_path,
        extra={"log": {"level": "info"}, "delivery": {"relay_host": f"{SINK}:25"}},
    )
    gw = gateway_factory(cfg)
    (started,) = gw.wait_for_event("outbound_started", WAIT)
    first = int(started["pid"])
    assert first != gw.pid
    send(cfg.smtp_host, cfg.smtp_port, 1)
    sink.wait_for(1, WAIT)

    os.kill(first, signal.SIGKILL)
    (exited,) = gw.wait_for_event("outbound_exited", WAIT)
    assert exited["pid"] == first and exited["signal"] == "SIGKILL"
    # Mail accepted while no outbound process runs waits in the spool.
    send(cfg.smtp_host, cfg.smtp_port, 2)
    restarted = gw.wait_for_event("outbound_started", WAIT, count=2)[-1]
    assert int(restarted["pid"]) not in (first, gw.pid)
    sink.wait_for(2, WAIT)
    send(cfg.smtp_host, cfg.smtp_port, 3)
    sink.wait_for(3, WAIT)

    assert gw.stop() == 0
    assert not alive(int(restarted["pid"]))
    assert gw.events("scheduler_stopped")


@pytest.mark.slow
def test_outbound_process_dies_with_the_main_process(
    tmp_path: Path, sink_factory: SinkFactory, gateway_factory: GatewayFactory
) -> None:
    sink_factory(SINK)
    cfg = write_config(tmp_path, extra={"delivery": {"relay_host": f"{SINK}:25"}})
    gw = gateway_factory(cfg)
    (started,) = gw.wait_for_event("outbound_started", WAIT)
    child = int(started["pid"])
    assert daemon_running(cfg.data_dir)

    gw.kill()
    deadline = time.monotonic() + WAIT
    while (alive(child) or daemon_running(cfg.data_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)
    assert not daemon_running(cfg.data_dir)  # the next start finds the lock free
    gw.start()
    assert gw.stop() == 0
