"""The real gateway as a child process (`python -m gateway.cli run -c CONFIG`), and test configs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.peers.dns import DnsServer

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class GatewayConfigFile:
    """A written test configuration; usable wherever a path is (os.PathLike)."""

    path: Path
    data_dir: Path
    smtp_host: str
    smtp_port: int
    settings: dict[str, Any]

    def __fspath__(self) -> str:
        """The YAML file's path."""
        return str(self.path)

    @property
    def smtp_address(self) -> str:
        """The first SMTP listener as "host:port"."""
        return f"{self.smtp_host}:{self.smtp_port}"


def write_config(
    directory: Path,
    *,
    nameserver: str | DnsServer | None = None,
    extra: Mapping[str, Any] | None = None,
    smtp_host: str = "127.0.0.1",
    name: str = "sealgate.yaml",
) -> GatewayConfigFile:
    """Write a gateway config for tests into `directory` and return where things are.

    Defaults: data_dir inside `directory`, one SMTP listener on a free port of
    smtp_host, the portal on another free port, loopback trusted as a connector,
    delivery to MX hosts on port 25, DNS from `nameserver` (a DnsServer or
    "host:port"). `extra` is merged over these key by key (nested
    mappings merge, anything else replaces), so a test states only what it needs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port(smtp_host)
    settings: dict[str, Any] = {
        "data_dir": str(directory / "data"),
        "hostname": "gw.clinic.example",
        "log": {"level": "debug"},
        "smtp": {
            "listen": [f"{smtp_host}:{port}"],
            "connectors": [{"name": "loopback", "networks": ["127.0.0.0/8"]}],
        },
        "delivery": {"mx_port": 25, "connect_timeout": "10s"},
        "portal": {"listen": f"127.0.0.1:{free_port()}"},
        "api": {"listen": f"127.0.0.1:{free_port()}"},
    }
    if isinstance(nameserver, DnsServer):
        nameserver = nameserver.nameserver
    if nameserver is not None:
        settings["dns"] = {"nameservers": [nameserver], "timeout": "5s"}
    settings = _merge(settings, extra or {})
    path = directory / name
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    listen = settings["smtp"].get("listen") or [f"{smtp_host}:{port}"]
    host, _, port_text = str(listen[0]).rpartition(":")
    return GatewayConfigFile(
        path=path,
        data_dir=Path(settings["data_dir"]),
        smtp_host=host.strip("[]"),
        smtp_port=int(port_text),
        settings=settings,
    )


def _expected_listeners(config_path: Path) -> list[str]:
    from gateway import config

    try:
        cfg = config.load(config_path)
    except config.ConfigError:
        # The gateway will refuse it too: wait for it to exit and report its own words.
        return ["(a valid configuration)"]
    return [str(a) for a in (*cfg.smtp.listen, *cfg.smtp.listen_implicit_tls)]


class GatewayError(RuntimeError):
    """The gateway process did not do what the test waited for; carries its log."""


class GatewayProcess:
    """`sealgate run -c CONFIG` in a child process, its JSON log collected from stderr."""

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        *,
        start: bool = True,
        env: Mapping[str, str] | None = None,
        expect_listeners: Iterable[str] | None = None,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        """Start the gateway (unless start=False) and wait for every listener's line.

        expect_listeners overrides the addresses read from the config's
        smtp.listen and smtp.listen_implicit_tls.
        """
        self.config_path = Path(config_path).resolve()
        self.env = dict(env or {})
        self.expect_listeners = list(expect_listeners) if expect_listeners is not None else None
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._readers: list[threading.Thread] = []
        if start:
            self.start()

    # --- lifecycle ----------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The child's pid while one was started."""
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the child has ended."""
        return self.proc.poll() if self.proc else None

    def start(self) -> GatewayProcess:
        """Launch (again, after stop/kill) and wait until every listener is ready."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        expected = (
            self.expect_listeners
            if self.expect_listeners is not None
            else _expected_listeners(self.config_path)
        )
        env = {**os.environ, **self.env}
        # The working tree's package, even when another copy is installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        with self._cond:
            self._lines = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "-c", str(self.config_path)],
            cwd=self.config_path.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(s,), daemon=True)
            for s in (self.proc.stderr, self.proc.stdout)
        ]
        for t in self._readers:
            t.start()
        try:
            self._wait_listening(expected)
        except BaseException:
            self.kill()
            raise
        return self

    def _pump(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _wait_listening(self, expected: list[str]) -> None:
        want = set(expected)
        deadline = time.monotonic() + self.ready_timeout
        with self._cond:
            while True:
                seen = {str(e.get("address")) for e in self._events_locked("listening")}
                if want <= seen:
                    return
                exited = self.proc is None or self.proc.poll() is not None
                left = deadline - time.monotonic()
                if exited or left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
        if exited:
            # Let the readers drain the pipes so the error shows the whole log.
            self._join_readers()
            code = self.proc.returncode if self.proc else None
            why = f"exited ({code}) before listening"
        else:
            why = f"was not listening after {self.ready_timeout:g}s"
        raise GatewayError(f"gateway {why} on {sorted(want - seen)}\n{self.log_text()}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait for a clean exit and return its code (SIGKILL after timeout)."""
        if self.proc is None:
            raise GatewayError("gateway was never started")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise GatewayError(
                    f"gateway did not exit within {timeout:g}s of SIGTERM\n{self.log_text()}"
                ) from None
        self._join_readers()
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL (a crash, as far as the gateway can tell) and return the exit code."""
        if self.proc is None:
            raise GatewayError("gateway was never started")
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._join_readers()
        return self.proc.returncode

    def _join_readers(self) -> None:
        for t in self._readers:
            t.join(timeout=10)
        self._readers = []
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop()
            except GatewayError:
                pass

    # --- the log ---------------------------------------------------------------

    def log_lines(self) -> list[str]:
        """Every line the current run wrote to stderr or stdout so far."""
        with self._cond:
            return list(self._lines)

    def log_text(self) -> str:
        """The log as one string (for assertion messages)."""
        with self._cond:
            return self._log_text_locked()

    def _log_text_locked(self) -> str:
        return "--- gateway log ---\n" + "\n".join(self._lines)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines, optionally only those with "event": name."""
        with self._cond:
            return self._events_locked(name)

    def _events_locked(self, name: str | None) -> list[dict[str, Any]]:
        out = []
        for line in self._lines:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and (name is None or obj.get("event") == name):
                out.append(obj)
        return out

    def wait_for_event(
        self, name: str, timeout: float = 60.0, count: int = 1, **fields: Any
    ) -> list[dict[str, Any]]:
        """Block until `count` events called `name` with these field values were logged."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    e
                    for e in self._events_locked(name)
                    if all(e.get(k) == v for k, v in fields.items())
                ]
                if len(found) >= count:
                    return found
                exited = self.proc is None or self.proc.poll() is not None
                left = deadline - time.monotonic()
                if exited or left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
        if exited:
            self._join_readers()
            found = [e for e in self.events(name) if all(e.get(k) == v for k, v in fields.items())]
            if len(found) >= count:
                return found
        why = "exited" if exited else f"did not log it within {timeout:g}s"
        raise GatewayError(
            f"waiting for {count} {name!r} event(s) {fields}: gateway {why}\n{self.log_text()}"
        )


class GatewayFactory:
    """Starts gateway processes on demand and makes sure none outlives the test."""

    def __init__(self) -> None:
        self.processes: list[GatewayProcess] = []

    def __call__(self, config_path: str | os.PathLike[str], **kwargs: Any) -> GatewayProcess:
        """A started GatewayProcess for this config (see GatewayProcess for kwargs)."""
        gw = GatewayProcess(config_path, start=False, **kwargs)
        self.processes.append(gw)
        return gw.start()

    def close(self) -> None:
        """Stop (or, failing that, kill) every process started here."""
        while self.processes:
            gw = self.processes.pop()
            if gw.proc is None or gw.proc.poll() is not None:
                continue
            try:
                gw.stop(timeout=30)
            except GatewayError:
                gw.kill()
