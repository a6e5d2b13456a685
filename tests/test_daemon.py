"""The daemon end to end: `python -m gateway.cli run -c CONFIG` as a child process.

Mail goes in over SMTP (smtplib, swaks), out through the real scheduler and
transport to loopback sinks found via the test DNS server; SIGTERM must end
it with exit code 0, and startup problems with one log line and exit code 1.
"""

from __future__ import annotations

import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.dkim import generate_key
from tests.peers.dns import DnsServer
from tests.peers.gateway import REPO, GatewayFactory, GatewayProcess, write_config
from tests.peers.sink import SinkFactory

# Our corner of 127.0.0.0/8 (other suites use 127.0.0.2-20 for their sinks).
MX = "127.0.41.2"
WAIT = 60.0


def message(subject: str = "Appointment") -> bytes:
    """A small message from the clinic."""
    return (
        "From: Front desk <desk@clinic.example>\r\n"
        "To: patient@example.net\r\n"
        f"Subject: {subject}\r\n"
        "Message-ID: <daemon-test@clinic.example>\r\n"
        "\r\n"
        "See you on Monday.\r\n"
    ).encode()


def send(host: str, port: int, rcpts: list[str]) -> None:
    """Submit one message the way an upstream MTA would."""
    with smtplib.SMTP(host, port, timeout=WAIT) as client:
        client.ehlo("upstream.clinic.example")
        client.sendmail("desk@clinic.example", rcpts, message())


def run_once(
    config: os.PathLike[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the gateway expecting it to exit by itself (a startup failure)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "-c", os.fspath(config)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def log_events(stderr: str) -> list[dict[str, object]]:
    """The JSON lines of a captured log."""
    out = []
    for line in stderr.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


@pytest.fixture
def mx(dns_server: DnsServer) -> DnsServer:
    """example.net and clinic.example both served by the sink at MX."""
    for domain in ("example.net", "clinic.example"):
        dns_server.add(domain, "MX", f"10 mx.{domain}.")
        dns_server.add(f"mx.{domain}", "A", MX)
    return dns_server


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket standing where systemd's NOTIFY_SOCKET would be."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(WAIT)
    try:
        yield sock
    finally:
        sock.close()


@pytest.mark.slow
def test_relays_signed_mail_and_stops_cleanly(
    tmp_path: Path,
    mx: DnsServer,
    sink_factory: SinkFactory,
    gateway_factory: GatewayFactory,
    notify_socket: socket.socket,
) -> None:
    """SMTP in, DKIM-signed SMTP out, systemd told READY and STOPPING, SIGTERM → exit 0."""
    sink = sink_factory(MX)
    key, _ = generate_key(tmp_path / "keys", "clinic.example", "s1", "rsa2048")
    cfg = write_config(
        tmp_path,
        nameserver=mx.nameserver,
        extra={"dkim": [{"domain": "clinic.example", "selector": "s1", "key": str(key)}]},
    )
    gw = gateway_factory(cfg, env={"NOTIFY_SOCKET": notify_socket.getsockname()})
    assert notify_socket.recv(4096).split(b"\n")[0] == b"READY=1"
    assert gw.wait_for_event("ready", WAIT)

    send(cfg.smtp_host, cfg.smtp_port, ["patient@example.net"])
    (got,) = sink.wait_for(1, WAIT)
    assert got.rcpt_tos == ["patient@example.net"]
    assert got.data.startswith(b"DKIM-Signature:")
    assert b"Received: " in got.data
    (delivered,) = gw.wait_for_event("delivered", WAIT, rcpt="patient@example.net")
    assert delivered["code"] == 250

    assert gw.stop() == 0
    assert notify_socket.recv(4096) == b"STOPPING=1"
    assert gw.events("stopped")
    assert "Traceback" not in gw.log_text()
    assert "See you on Monday" not in gw.log_text()


@pytest.mark.slow
def test_queued_mail_survives_restart(
    tmp_path: Path, mx: DnsServer, sink_factory: SinkFactory, gateway_factory: GatewayFactory
) -> None:
    """Mail deferred before a restart is delivered by the next run (at-least-once)."""
    cfg = write_config(
        tmp_path,
        nameserver=mx.nameserver,
        extra={"delivery": {"retry": {"first": "1s", "max_backoff": "2s"}}},
    )
    gw = gateway_factory(cfg)
    send(cfg.smtp_host, cfg.smtp_port, ["patient@example.net"])
    gw.wait_for_event("deferred", WAIT, rcpt="patient@example.net")  # nobody listens at MX yet
    assert gw.stop() == 0

    sink = sink_factory(MX)
    gw.start()
    (got,) = sink.wait_for(1, WAIT)
    assert got.rcpt_tos == ["patient@example.net"]
    gw.wait_for_event("removed", WAIT)
    assert gw.stop() == 0


@pytest.mark.slow
def test_swaks_with_starttls(
    tmp_path: Path, mx: DnsServer, sink_factory: SinkFactory, gateway_factory: GatewayFactory
) -> None:
    """swaks submits over STARTTLS with the self-signed certificate made on first start."""
    if shutil.which("swaks") is None:
        pytest.skip("swaks is not installed")
    sink = sink_factory(MX)
    cfg = write_config(tmp_path, nameserver=mx.nameserver)
    gateway_factory(cfg)
    done = subprocess.run(
        [
            "swaks",
            "--server",
            cfg.smtp_address,
            "--tls",
            "--from",
            "desk@clinic.example",
            "--to",
            "patient@example.net",
            "--body",
            "See you on Monday.",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (got,) = sink.wait_for(1, WAIT)
    assert got.rcpt_tos == ["patient@example.net"]
    assert (cfg.data_dir / "tls").is_dir()


# --- startup failures: one clear line, exit 1, no traceback ------------------------------


def assert_clean_failure(done: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 1 with a startup_failed log line containing words, and no traceback."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    failed = [e for e in log_events(done.stderr) if e.get("event") == "startup_failed"]
    assert len(failed) == 1, done.stderr
    for word in words:
        assert word in str(failed[0]["reason"])


@pytest.mark.slow
def test_second_instance_is_refused(tmp_path: Path, gateway_factory: GatewayFactory) -> None:
    """Two daemons on one data_dir: the second exits 1 naming the lock; the first runs on."""
    cfg = write_config(tmp_path)
    gw: GatewayProcess = gateway_factory(cfg)
    assert_clean_failure(run_once(cfg), "another sealgate process")
    assert gw.returncode is None
    assert gw.stop() == 0


def test_port_in_use(tmp_path: Path) -> None:
    """A listener address already taken: exit 1 with the address in the reason."""
    cfg = write_config(tmp_path)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((cfg.smtp_host, cfg.smtp_port))
        taken.listen()
        assert_clean_failure(run_once(cfg), "address already in use")


def test_unsafe_master_key(tmp_path: Path) -> None:
    """A master key readable by others is refused with a hint, not a traceback."""
    cfg = write_config(tmp_path)
    cfg.data_dir.mkdir(parents=True)
    key = cfg.data_dir / "master.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    assert_clean_failure(run_once(cfg), "master.key")


def test_data_dir_is_private(tmp_path: Path) -> None:
    """data_dir is created with mode 0700 even when startup fails later."""
    cfg = write_config(tmp_path)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((cfg.smtp_host, cfg.smtp_port))
        taken.listen()
        run_once(cfg)
    assert cfg.data_dir.stat().st_mode & 0o777 == 0o700


def test_invalid_dkim_key(tmp_path: Path) -> None:
    """A DKIM key file that is not a key stops startup, naming the file."""
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    cfg = write_config(
        tmp_path, extra={"dkim": [{"domain": "clinic.example", "selector": "s1", "key": str(bad)}]}
    )
    assert_clean_failure(run_once(cfg), "bad.key")
    # Nothing was started: no spool was created for a gateway that never ran.
    assert not (cfg.data_dir / "spool").exists()
