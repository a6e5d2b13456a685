"""A real Postfix instance in a private directory, relaying everything to one next hop.

Postfix runs a second instance from its own `config_directory` (`postfix -c DIR
start`) without touching the system one. As root, `postfix -c`, `postqueue -c` and
`postconf -c` accept any directory: `alternate_config_directories` in
/etc/postfix/main.cf only guards the set-gid submission path (`sendmail -C`,
`postdrop`), which these peers never use because they take mail over SMTP.

Every daemon runs without chroot (a chroot would need copies of resolv.conf,
services and the TLS libraries' files), and logging goes to a file in the
instance's directory (`maillog_file`), since a test machine may have no syslog.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import trustme

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"

# The stock services, every one with chroot "n"; the SMTP listener is added per instance.
_MASTER_CF = """\
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


def postfix_available() -> bool:
    """Whether Postfix is installed (the CI script installs it)."""
    return Path(POSTFIX).exists() and shutil.which("postconf") is not None


class PostfixInstance:
    """One private Postfix: SMTP in on `listen:port`, everything out to `relayhost`."""

    def __init__(
        self,
        relayhost: str,
        *,
        listen: str = "127.0.0.40",
        port: int = 25,
        myhostname: str = "postfix.test",
        tls: str | None = None,
        ca_file: Path | None = None,
        sasl: tuple[str, str] | None = None,
        server_cert: trustme.LeafCert | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """Describe the instance; nothing is written or started until `start()`.

        relayhost is in Postfix syntax, e.g. "[127.0.0.1]:2525" (brackets: no MX lookup).
        tls is the client's smtp_tls_security_level ("may", "encrypt", "verify"...);
        ca_file lets "verify"/"secure" trust the test CA. sasl is (username, password)
        for AUTH to the relayhost. server_cert offers STARTTLS on the listener.
        settings are extra main.cf parameters, applied last.
        """
        self.relayhost = relayhost
        self.listen = listen
        self.port = port
        self.myhostname = myhostname
        self.tls = tls
        self.ca_file = ca_file
        self.sasl = sasl
        self.server_cert = server_cert
        self.settings = dict(settings or {})
        self.base: Path | None = None

    @property
    def address(self) -> str:
        """The SMTP listener as "host:port"."""
        return f"{self.listen}:{self.port}"

    @property
    def config_dir(self) -> Path:
        """The instance's config_directory (holds main.cf and master.cf)."""
        return self._base() / "etc"

    def _base(self) -> Path:
        if self.base is None:
            raise RuntimeError("the Postfix instance is not started")
        return self.base

    # --- configuration ----------------------------------------------------

    def main_cf(self) -> dict[str, str]:
        """The main.cf parameters this instance runs with."""
        base = self._base()
        params = {
            "compatibility_level": "3.6",
            "config_directory": str(base / "etc"),
            "queue_directory": str(base / "queue"),
            "data_directory": str(base / "data"),
            "maillog_file": str(base / "maillog"),
            "maillog_file_prefixes": str(base),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            # Listeners are explicit in master.cf; this only keeps Postfix from
            # claiming other addresses (and from checking that 127.0.0.x is an
            # interface address, which only 127.0.0.1 is).
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "myhostname": self.myhostname,
            "myorigin": "$myhostname",
            # A null client: nothing is delivered locally, everything is relayed.
            "mydestination": "",
            "local_recipient_maps": "",
            "local_transport": "error:local delivery is disabled",
            "alias_maps": "",
            "alias_database": "",
            "relayhost": self.relayhost,
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject",
            "biff": "no",
            "smtputf8_enable": "yes",
            "message_size_limit": str(50 * 1024 * 1024),
            "smtp_tls_security_level": self.tls or "none",
        }
        if self.ca_file is not None:
            params["smtp_tls_CAfile"] = str(self.ca_file)
        if self.sasl is not None:
            params.update(
                {
                    "smtp_sasl_auth_enable": "yes",
                    # texthash is read at start-up: no postmap, no Berkeley DB file.
                    "smtp_sasl_password_maps": f"texthash:{base / 'etc' / 'sasl_passwd'}",
                    # Allow PLAIN/LOGIN; whether TLS is required is the server's call.
                    "smtp_sasl_security_options": "noanonymous",
                    "smtp_sasl_tls_security_options": "noanonymous",
                }
            )
        if self.server_cert is not None:
            params.update(
                {
                    "smtpd_tls_security_level": "may",
                    "smtpd_tls_cert_file": str(base / "etc" / "server.pem"),
                    "smtpd_tls_key_file": str(base / "etc" / "server.key"),
                }
            )
        params.update(self.settings)
        return params

    def _write_config(self) -> None:
        base = self._base()
        etc = base / "etc"
        for sub in ("etc", "queue", "data"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        # Daemons drop to the postfix user and open data_directory by absolute path.
        shutil.chown(base / "data", user="postfix")
        main = "".join(f"{k} = {v}\n" for k, v in self.main_cf().items())
        (etc / "main.cf").write_text(main)
        listener = f"{self.listen}:{self.port} inet n - n - - smtpd\n"
        (etc / "master.cf").write_text(listener + _MASTER_CF)
        if self.sasl is not None:
            user, password = self.sasl
            path = etc / "sasl_passwd"
            path.write_text(f"{self.relayhost} {user}:{password}\n")
            path.chmod(0o600)
        if self.server_cert is not None:
            self.server_cert.cert_chain_pems[0].write_to_path(str(etc / "server.pem"))
            for pem in self.server_cert.cert_chain_pems[1:]:
                pem.write_to_path(str(etc / "server.pem"), append=True)
            self.server_cert.private_key_pem.write_to_path(str(etc / "server.key"))
            (etc / "server.key").chmod(0o600)

    # --- lifecycle --------------------------------------------------------

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"postfix {' '.join(args)} failed ({proc.returncode}): "
                f"{proc.stdout}{proc.stderr}\n--- maillog ---\n{self.log()}"
            )
        return proc

    def start(self, timeout: float = 60.0) -> None:
        """Write the configuration, start the master and wait until SMTP answers."""
        if self.base is not None:
            return
        # Not under pytest's tmp_path: its parents are 0700 and the postfix user must
        # reach data_directory by absolute path.
        self.base = Path(tempfile.mkdtemp(prefix="sealgate-postfix-"))
        self.base.chmod(0o755)
        try:
            self._write_config()
            self._postfix("check")
            self._postfix("start")
            self._wait_for_banner(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_for_banner(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.listen, self.port), timeout=10) as s:
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise RuntimeError(
            f"Postfix did not answer on {self.address} within {timeout:g}s ({last})\n"
            f"--- maillog ---\n{self.log()}"
        )

    def stop(self) -> None:
        """Stop the master (if running), wait until it is gone and remove the directory."""
        if self.base is None:
            return
        try:
            if (self.config_dir / "main.cf").exists() and self.running():
                self._postfix("stop", check=False)
                deadline = time.monotonic() + 60
                while self.running() and time.monotonic() < deadline:
                    time.sleep(0.2)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def running(self) -> bool:
        """Whether the master holds its lock (`postfix status`)."""
        return self._postfix("status", check=False).returncode == 0

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- inspection -------------------------------------------------------

    def log(self) -> str:
        """The instance's mail log so far ("" before the first line)."""
        if self.base is None:
            return ""
        try:
            return (self.base / "maillog").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def queue(self) -> list[dict[str, Any]]:
        """The queue as `postqueue -j` reports it: one dict per message."""
        proc = subprocess.run(
            [POSTQUEUE, "-c", str(self.config_dir), "-j"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    def flush(self) -> None:
        """Retry every deferred message now (`postqueue -f`)."""
        subprocess.run(
            [POSTQUEUE, "-c", str(self.config_dir), "-f"],
            capture_output=True,
            timeout=60,
            check=True,
        )


def null_client(
    relayhost: str,
    *,
    listen: str = "127.0.0.40",
    port: int = 25,
    tls: str | None = None,
    ca_file: Path | None = None,
    sasl: tuple[str, str] | None = None,
    settings: Mapping[str, str] | None = None,
) -> PostfixInstance:
    """An upstream that hands every message to a smarthost, as M365 or a site MTA does.

    Deferred mail is retried within seconds, so a test can watch a retry happen.
    """
    fast_retry = {
        "queue_run_delay": "1s",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "5s",
        "smtp_connect_timeout": "10s",
    }
    return PostfixInstance(
        relayhost,
        listen=listen,
        port=port,
        myhostname="upstream.test",
        tls=tls,
        ca_file=ca_file,
        sasl=sasl,
        settings={**fast_retry, **(settings or {})},
    )


def durable_relay(
    next_hop: str,
    *,
    listen: str = "127.0.0.41",
    port: int = 25,
    settings: Mapping[str, str] | None = None,
) -> PostfixInstance:
    """Postfix as a plain store-and-forward relay to one next hop, stock tuning.

    This is the reference the benchmark measures Sealgate against: Postfix's
    default queue (fsync before 250) and default concurrency, no TLS, no checks
    beyond relay permission.
    """
    stock = {
        # Benchmark clients (smtp-source) open many sessions at once; keep Postfix
        # from throttling them as it would an unknown Internet client.
        "smtpd_client_connection_count_limit": "0",
        "smtpd_client_connection_rate_limit": "0",
        "smtpd_client_message_rate_limit": "0",
        "smtpd_client_recipient_rate_limit": "0",
    }
    return PostfixInstance(
        next_hop,
        listen=listen,
        port=port,
        myhostname="relay.test",
        settings={**stock, **(settings or {})},
    )


class PostfixFactory:
    """Starts Postfix instances on demand and stops every one in `close()`."""

    def __init__(self) -> None:
        self.instances: list[PostfixInstance] = []

    def start(self, instance: PostfixInstance) -> PostfixInstance:
        """Start an instance built with `null_client`, `durable_relay` or `PostfixInstance`."""
        self.instances.append(instance)
        instance.start()
        return instance

    def close(self) -> None:
        """Stop every instance this factory started."""
        while self.instances:
            self.instances.pop().stop()
