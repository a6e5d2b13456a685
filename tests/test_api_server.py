"""`sealgate api-server`: the API alone, until SIGTERM; and the committed OpenAPI document."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from api.cli import spec_text
from tests.peers.gateway import free_port

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.96.20"


def test_committed_spec_is_current() -> None:
    """docs/openapi.json is what `sealgate api-spec` prints (regenerate it after changes)."""
    assert (REPO / "docs" / "openapi.json").read_text() == spec_text()


def test_api_server_alone(tmp_path: Path) -> None:
    """It listens, answers with JSON errors, and exits 0 on SIGTERM."""
    port = free_port(HOST)
    config = tmp_path / "sealgate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "hostname": "gw.test",
                "api": {"listen": f"{HOST}:{port}"},
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "-c", str(config), "api-server"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        while True:
            line = proc.stderr.readline()
            assert line, "api-server exited before listening"
            event = json.loads(line)
            if event.get("event") == "listening" and event.get("service") == "api":
                break
            assert time.monotonic() < deadline
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=30) as c:
            assert c.get("/health").text == "ok"
            r = c.get("/v1/queue")
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
            r = c.get("/v1/queue", headers={"Authorization": "Bearer sgk_x"})
            assert r.status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
