"""How the portal runs: as a child of `sealgate run`, and alone as `sealgate portal-server`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.peers.gateway import REPO, GatewayFactory, free_port, write_config

HOST = "127.0.90.30"
WAIT = 60.0


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - our own loopback URL
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


def _portal_config(tmp_path: Path) -> tuple[Path, str]:
    port = free_port(HOST)
    cfg = write_config(
        tmp_path,
        smtp_host=HOST,
        extra={"portal": {"listen": f"{HOST}:{port}", "base_url": f"http://{HOST}:{port}"}},
    )
    return cfg.path, f"http://{HOST}:{port}"


@pytest.mark.slow
def test_sealgate_run_serves_the_portal_and_restarts_it(
    tmp_path: Path, gateway_factory: GatewayFactory
) -> None:
    path, base = _portal_config(tmp_path)
    gw = gateway_factory(path)
    (listening,) = gw.wait_for_event("listening", WAIT, service="portal")
    assert listening["address"] == base.removeprefix("http://")
    # The portal is up before the gateway says it is ready.
    gw.wait_for_event("ready", WAIT)
    names = [e.get("event") for e in gw.events()]
    assert names.index("portal_started") < names.index("ready")
    status, headers, body = _get(f"{base}/healthz")
    assert status == 200 and body == b"ok"
    assert headers["x-content-type-options"] == "nosniff"
    # A crashed portal is started again.
    (started,) = gw.wait_for_event("portal_started", WAIT)
    os.kill(int(started["pid"]), signal.SIGKILL)
    gw.wait_for_event("portal_exited", WAIT)
    gw.wait_for_event("portal_started", WAIT, count=2)
    assert _get(f"{base}/healthz")[0] == 200
    assert gw.stop() == 0
    assert gw.events("stopped")


@pytest.mark.slow
def test_portal_server_command(tmp_path: Path) -> None:
    path, base = _portal_config(tmp_path)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Without the gateway's master key a portal node cannot open messages: it says so.
    failed = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "portal-server", "-c", str(path)],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert failed.returncode == 1
    assert b"master key" in failed.stderr and b"Traceback" not in failed.stderr
    key = data / "master.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "portal-server", "-c", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + WAIT
        ready = False
        while time.monotonic() < deadline and not ready:
            line = proc.stderr.readline()
            if not line:
                break
            try:
                event = json.loads(line)
            except ValueError:
                continue
            ready = event.get("event") == "listening" and event.get("service") == "portal"
        assert ready, "portal-server did not log its listening line"
        assert _get(f"{base}/signin")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
