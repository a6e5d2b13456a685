"""The files an admin installs: the systemd unit and the console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "sealgate.service"


def directives(text: str) -> dict[str, list[str]]:
    """Key -> values of a unit file (repeated keys accumulate)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_is_hardened() -> None:
    d = directives(UNIT.read_text())
    assert d["User"] == ["sealgate"]
    assert d["StateDirectory"] == ["sealgate"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["true"]
    assert d["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert d["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert d["Restart"] == ["on-failure"]
    # `sealgate check` and `run` exit 2 on a bad config: restarting cannot fix that.
    assert d["RestartPreventExitStatus"] == ["2"]
    assert d["Type"] == ["notify"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("sealgate")
    if not script.exists():
        pytest.skip("the sealgate console script is not installed in this environment")
    unit = tmp_path / "sealgate.service"
    unit.write_text(UNIT.read_text().replace("/opt/sealgate/bin/sealgate", str(script)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        # Unrelated units on a build machine may have their own complaints.
        if "sealgate.service" in line
    ]
    assert not problems, "\n".join(problems)


def test_console_script_runs_check(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(cfg)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
