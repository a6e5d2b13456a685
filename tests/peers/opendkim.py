"""OpenDKIM's opendkim-testmsg as an independent DKIM verifier.

opendkim-testmsg has no option for a name server: libopendkim asks the C
library's resolver, which reads /etc/resolv.conf (name servers on port 53
only). Each run therefore gets a private mount namespace (`unshare -m`) in
which a resolv.conf naming the test DNS server is bind-mounted over the real
one; the machine's own file is never touched. OpenDKIM also insists on
RFC 5322's mandatory Date: and From: fields, or it reports a syntax error.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

TESTMSG = shutil.which("opendkim-testmsg") or "/usr/sbin/opendkim-testmsg"

TestMsg = Callable[[bytes], "subprocess.CompletedProcess[bytes]"]


def available() -> bool:
    """Whether opendkim-testmsg is installed (opendkim-tools)."""
    return Path(TESTMSG).exists()


class CannotIsolate(RuntimeError):
    """This machine does not allow the private mount namespace the verifier needs."""


def verifier(resolver_ip: str, workdir: Path) -> TestMsg:
    """A function that runs opendkim-testmsg (verify mode) against the DNS server at resolver_ip:53.

    The result's returncode is 0 when every signature verifies.
    """
    resolv = workdir / "resolv.conf"
    resolv.write_text(f"nameserver {resolver_ip}\noptions attempts:3 timeout:5\n")
    probe = subprocess.run(
        ["unshare", "-m", "mount", "--bind", str(resolv), "/etc/resolv.conf"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise CannotIsolate(probe.stderr.strip())
    script = f'mount --bind "{resolv}" /etc/resolv.conf && exec "{TESTMSG}"'

    def run(message: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["unshare", "-m", "sh", "-c", script],
            input=message,
            capture_output=True,
            timeout=120,
        )

    return run
