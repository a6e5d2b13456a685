"""Relay benchmark: Sealgate against Postfix, same load, same sink, one invocation.

    python bench/relay_bench.py [--messages 5000] [--sessions 20] [--size 4096] [--dkim rsa2048]

Both relays are durable (fsync before 250) and forward everything to their own
`smtp-sink`. Load comes from Postfix's `smtp-source` (throughput) and from
bench/smtpload.py (time-to-250 per message). Figures are printed as Sealgate's
ratio to Postfix, so they compare on any machine. Run as root (binds 127.0.0.x:25).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from smtpload import run_load  # noqa: E402

from tests.peers.gateway import GatewayProcess, write_config  # noqa: E402
from tests.peers.postfix import durable_relay  # noqa: E402

SENDER = "bench@clinic.example"
RCPT = "someone@partner.example"


class Sink:
    """Postfix's smtp-sink on addr:port, counting the messages it receives."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.count = 0
        self._proc = subprocess.Popen(
            ["smtp-sink", "-c", "-u", "nobody", address, "1024"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        buf = b""
        while chunk := self._proc.stdout.read1(4096):  # type: ignore[attr-defined]
            buf = (buf + chunk)[-256:]
            found = re.findall(rb"mesg=(\d+)", buf)
            if found:
                self.count = int(found[-1])

    def wait_for(self, n: int, timeout: float) -> bool:
        """Wait until n messages arrived."""
        deadline = time.monotonic() + timeout
        while self.count < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.count >= n

    def close(self) -> None:
        """Stop the sink."""
        self._proc.terminate()
        self._proc.wait(10)


@dataclass
class Figures:
    """What one system achieved."""

    accept_rate: float  # messages/s acknowledged with 250 (smtp-source)
    e2e_rate: float  # messages/s from first connect to last arrival at the sink
    p50_ms: float
    p99_ms: float


def smtp_source(address: str, messages: int, sessions: int, size: int) -> float:
    """Run smtp-source; return seconds it took."""
    t0 = time.perf_counter()
    subprocess.run(
        ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
         "-f", SENDER, "-t", RCPT, "-M", "bench.example", address],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - t0


def measure(address: str, sink: Sink, args: argparse.Namespace) -> Figures:
    """Drive one relay: throughput with smtp-source, then latency with smtpload."""
    start_count = sink.count
    t0 = time.perf_counter()
    accept_s = smtp_source(address, args.messages, args.sessions, args.size)
    if not sink.wait_for(start_count + args.messages, timeout=600):
        raise SystemExit(f"{address}: only {sink.count - start_count} of {args.messages} arrived")
    e2e_s = time.perf_counter() - t0
    host, port = address.rsplit(":", 1)
    load = asyncio.run(
        run_load(host, int(port), messages=args.latency_messages, sessions=args.latency_sessions,
                 size=args.size, sender=SENDER, rcpt=RCPT)
    )  # fmt: skip
    if load.failed:
        raise SystemExit(f"{address}: {load.failed} messages refused during the latency run")
    sink.wait_for(start_count + args.messages + args.latency_messages, timeout=600)
    return Figures(
        accept_rate=args.messages / accept_s,
        e2e_rate=args.messages / e2e_s,
        p50_ms=load.percentile(50),
        p99_ms=load.percentile(99),
    )


@contextmanager
def sealgate(workdir: Path, next_hop: str, dkim: str) -> Iterator[str]:
    """A Sealgate relaying everything to next_hop, DKIM-signing for clinic.example."""
    extra: dict[str, object] = {
        "log": {"level": "info"},
        "delivery": {"relay_host": next_hop},
    }
    cfg = write_config(workdir / "sealgate", extra=extra)
    if dkim != "none":
        subprocess.run(
            [sys.executable, "-m", "gateway.cli", "-c", str(cfg.path), "keys", "dkim", "generate",
             "--domain", "clinic.example", "--selector", "bench", "--algorithm", dkim],
            check=True, stdout=subprocess.DEVNULL, cwd=REPO,
        )  # fmt: skip
        key = next((cfg.data_dir / "dkim").glob("*.key"))
        extra["dkim"] = [{"domain": "clinic.example", "selector": "bench", "key": str(key)}]
        cfg = write_config(workdir / "sealgate", extra=extra)
    gw = GatewayProcess(cfg.path)
    gw.start()
    try:
        yield cfg.smtp_address
    finally:
        gw.stop()


def main() -> int:
    """Run both systems and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--latency-messages", type=int, default=1000)
    parser.add_argument("--latency-sessions", type=int, default=4)
    parser.add_argument("--dkim", choices=["rsa2048", "ed25519", "none"], default="rsa2048")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the systems this often")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("smtp-source"):
        print("run as root with Postfix installed (smtp-source, smtp-sink)", file=sys.stderr)
        return 2

    results: dict[str, list[Figures]] = {"sealgate": [], "postfix": []}
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        work = Path(tmp)
        sg_sink, pf_sink = Sink("127.0.0.60:2526"), Sink("127.0.0.61:2526")
        postfix = durable_relay("[127.0.0.61]:2526", listen="127.0.0.62", port=2525)
        try:
            postfix.start()
            with sealgate(work, "127.0.0.60:2526", args.dkim) as sg_address:
                for _ in range(args.rounds):
                    results["sealgate"].append(measure(sg_address, sg_sink, args))
                    results["postfix"].append(measure(postfix.address, pf_sink, args))
        finally:
            postfix.stop()
            sg_sink.close()
            pf_sink.close()

    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(f, attr) for f in results[name])

    print(
        f"\n{args.messages} messages of {args.size} bytes, {args.sessions} sessions "
        f"(smtp-source); latency: {args.latency_messages} messages over "
        f"{args.latency_sessions} sessions; DKIM {args.dkim}; {args.rounds} round(s), medians"
    )
    print(f"{'':28}{'sealgate':>12}{'postfix':>12}{'ratio':>10}")
    rows = [
        ("accepted msgs/s", "accept_rate", True),
        ("delivered msgs/s (e2e)", "e2e_rate", True),
        ("time-to-250 p50 ms", "p50_ms", False),
        ("time-to-250 p99 ms", "p99_ms", False),
    ]
    for label, attr, higher_better in rows:
        s, p = med("sealgate", attr), med("postfix", attr)
        ratio = s / p if higher_better else p / s
        print(f"{label:28}{s:12.1f}{p:12.1f}{ratio:10.2f}")
    print("ratio > 1 means Sealgate is better (faster, or lower latency)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
