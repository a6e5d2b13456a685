"""Relay benchmark: Sealgate against Postfix, same load, same sink, one invocation.

    python bench/relay_bench.py [--messages 5000] [--sessions 20] [--size 4096] [--dkim rsa2048]
                                [--rounds N] [--only sealgate|postfix] [--profile DIR]

Both relays are durable (fsync before 250) and forward everything to their own
`smtp-sink`. Load comes from Postfix's `smtp-source` (throughput) and from
bench/smtpload.py (time-to-250 per message). Figures are printed as Sealgate's
ratio to Postfix, so they compare on any machine. Run as root (binds 127.0.0.x:25).

"CPU ms per message" is the CPU time (user + system) the relay's processes used
during the throughput run, divided by the messages, also split by process (for
Postfix, the master's figure includes the daemons it has reaped). It moves less
than the rates when other work shares the machine, so it is the figure to watch
when tuning. --profile records a py-spy profile (raw format, samples holding the
GIL: time in C code that releases it, such as RSA signing, does not show) of the
gateway and its children during each throughput run into DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from smtpload import run_load  # noqa: E402

from tests.peers.gateway import GatewayProcess, write_config  # noqa: E402
from tests.peers.postfix import PostfixInstance, durable_relay  # noqa: E402

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
    cpu_ms: float  # CPU time of the relay's processes per message, throughput run
    sys_ms: float  # the part of cpu_ms spent in the kernel (system calls, loopback TCP)
    top_ms: float  # the part of cpu_ms used by the relay's main process alone
    by_process: dict[str, float]  # cpu_ms split by kind of process


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out.extend(int(c) for c in task.read_text().split())
        except OSError:
            continue
    return out


def _label(pid: int, root: int) -> str:
    """What kind of process pid is: main, outbound, scan worker, or a Postfix daemon's name."""
    if pid == root:
        return "main"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "other"
    text = b" ".join(argv).decode(errors="replace")
    if "gateway.daemon outbound" in text:
        return "outbound"
    if "worker_main" in text or "multiprocessing" in text:
        return "scan workers"
    if "portal.process" in text or "api.process" in text:
        return "portal and API"
    return Path(argv[0].decode(errors="replace")).name or "other"


def cpu_seconds(root: int, tree: bool = True) -> tuple[float, float]:
    """(user, system) CPU seconds of root and its descendants, alive or reaped by their parent."""
    user = system = 0.0
    for u, s, _ in cpu_tree(root) if tree else cpu_tree(root)[:1]:
        user += u
        system += s
    return user, system


def cpu_tree(root: int) -> list[tuple[float, float, str]]:
    """(user, system, label) CPU seconds per process of root's tree, root first.

    A process's reaped children count in its own figures (cutime, cstime).
    """
    tick = os.sysconf("SC_CLK_TCK")
    out: list[tuple[float, float, str]] = []
    todo = [root]
    while todo:
        pid = todo.pop(0)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # utime stime cutime cstime are fields 14-17; the name (field 2) may hold spaces.
        fields = stat[stat.rindex(")") + 2 :].split()
        utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
        out.append(((utime + cutime) / tick, (stime + cstime) / tick, _label(pid, root)))
        todo.extend(_children(pid))
    return out


def _by_label(tree: list[tuple[float, float, str]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for u, s, label in tree:
        totals[label] = totals.get(label, 0.0) + u + s
    return totals


class Relay:
    """One relay under test: where it listens, its sink and the process tree to account."""

    def __init__(self, name: str, address: str, sink: Sink, root_pid: Callable[[], int]) -> None:
        self.name = name
        self.address = address
        self.sink = sink
        self.root_pid = root_pid


def smtp_source(address: str, messages: int, sessions: int, size: int) -> float:
    """Run smtp-source; return seconds it took."""
    t0 = time.perf_counter()
    subprocess.run(
        ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
         "-f", SENDER, "-t", RCPT, "-M", "bench.example", address],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - t0


def measure(relay: Relay, args: argparse.Namespace, round_no: int) -> Figures:
    """Drive one relay: throughput with smtp-source, then latency with smtpload."""
    sink, address = relay.sink, relay.address
    start_count = sink.count
    pid = relay.root_pid()
    spy: subprocess.Popen[bytes] | None = None
    if args.profile is not None and relay.name == "sealgate":
        out = args.profile / f"{relay.name}-{round_no}.txt"
        spy = subprocess.Popen(
            ["py-spy", "record", "-p", str(pid), "-s", "-f", "raw", "--gil", "-r", "250",
             "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)  # py-spy attaches before the load starts
    cpu0, top0, labels0 = cpu_seconds(pid), cpu_seconds(pid, tree=False), _by_label(cpu_tree(pid))
    t0 = time.perf_counter()
    accept_s = smtp_source(address, args.messages, args.sessions, args.size)
    if not sink.wait_for(start_count + args.messages, timeout=600):
        raise SystemExit(f"{address}: only {sink.count - start_count} of {args.messages} arrived")
    e2e_s = time.perf_counter() - t0
    cpu1, top1, labels1 = cpu_seconds(pid), cpu_seconds(pid, tree=False), _by_label(cpu_tree(pid))
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    top = top1[0] + top1[1] - top0[0] - top0[1]
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
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
        cpu_ms=(user + system) * 1000 / args.messages,
        sys_ms=system * 1000 / args.messages,
        top_ms=top * 1000 / args.messages,
        by_process={
            k: (v - labels0.get(k, 0.0)) * 1000 / args.messages for k, v in labels1.items()
        },
    )


@contextmanager
def sealgate(workdir: Path, next_hop: str, dkim: str) -> Iterator[tuple[str, GatewayProcess]]:
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
        yield cfg.smtp_address, gw
    finally:
        gw.stop()


def _postfix_master_pid(postfix: PostfixInstance) -> int:
    assert postfix.base is not None
    text = (postfix.base / "queue" / "pid" / "master.pid").read_text()
    return int(text.split()[0])


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
    parser.add_argument("--only", choices=["sealgate", "postfix"], help="measure one system only")
    parser.add_argument("--profile", type=Path, help="write py-spy profiles of Sealgate here")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("smtp-source"):
        print("run as root with Postfix installed (smtp-source, smtp-sink)", file=sys.stderr)
        return 2
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    names = [args.only] if args.only else ["sealgate", "postfix"]

    results: dict[str, list[Figures]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        relays: list[Relay] = []
        if "sealgate" in names:
            sg_sink = Sink("127.0.0.60:2526")
            stack.callback(sg_sink.close)
            sg_address, gw = stack.enter_context(sealgate(work, "127.0.0.60:2526", args.dkim))
            relays.append(Relay("sealgate", sg_address, sg_sink, lambda: gw.pid or 0))
        if "postfix" in names:
            pf_sink = Sink("127.0.0.61:2526")
            stack.callback(pf_sink.close)
            postfix = durable_relay("[127.0.0.61]:2526", listen="127.0.0.62", port=2525)
            stack.callback(postfix.stop)
            postfix.start()
            relays.append(
                Relay("postfix", postfix.address, pf_sink, lambda: _postfix_master_pid(postfix))
            )
        for round_no in range(args.rounds):
            for relay in relays:
                results[relay.name].append(measure(relay, args, round_no))

    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(f, attr) for f in results[name])

    print(
        f"\n{args.messages} messages of {args.size} bytes, {args.sessions} sessions "
        f"(smtp-source); latency: {args.latency_messages} messages over "
        f"{args.latency_sessions} sessions; DKIM {args.dkim}; {args.rounds} round(s), medians"
    )
    rows = [
        ("accepted msgs/s", "accept_rate", True),
        ("delivered msgs/s (e2e)", "e2e_rate", True),
        ("time-to-250 p50 ms", "p50_ms", False),
        ("time-to-250 p99 ms", "p99_ms", False),
        ("CPU ms per message", "cpu_ms", False),
        ("  of which in the kernel", "sys_ms", False),
        ("  of which the main process", "top_ms", False),
    ]

    def split(name: str) -> str:
        last = results[name][-1].by_process
        parts = sorted(last.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{k} {v:.2f}" for k, v in parts if v >= 0.01)

    if len(names) == 1:
        print(f"{'':28}{names[0]:>12}")
        for label, attr, _ in rows:
            print(f"{label:28}{med(names[0], attr):12.1f}")
        print(f"CPU ms per message by process (last round): {split(names[0])}")
        return 0
    print(f"{'':28}{'sealgate':>12}{'postfix':>12}{'ratio':>10}")
    for label, attr, higher_better in rows:
        s, p = med("sealgate", attr), med("postfix", attr)
        ratio = s / p if higher_better else p / s
        print(f"{label:28}{s:12.1f}{p:12.1f}{ratio:10.2f}")
    print("ratio > 1 means Sealgate is better (faster, lower latency, less CPU)")
    for name in names:
        print(f"CPU ms per message by process, {name} (last round): {split(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
