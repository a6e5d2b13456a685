"""A small asyncio SMTP load client that measures time-to-250 per message.

smtp-source gives throughput but no per-message latency, so the benchmark
uses this client for the latency figures, against Sealgate and Postfix alike.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """What one load run measured."""

    sent: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, end of DATA -> 250
    elapsed: float = 0.0

    def percentile(self, p: float) -> float:
        """The p-th percentile latency in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[k] * 1000


def make_message(size: int, n: int, sender: str, rcpt: str) -> bytes:
    """A plain message of about size bytes, dot-stuffing-safe."""
    head = (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: load test {n}\r\n"
        f"Message-ID: <load{n}.{time.time_ns()}@bench.example>\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def _session(
    host: str,
    port: int,
    jobs: asyncio.Queue[int],
    size: int,
    sender: str,
    rcpt: str,
    result: LoadResult,
    per_session: int,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await _reply(reader)
        writer.write(b"EHLO bench.example\r\n")
        await _reply(reader)
        done_here = 0
        while True:
            try:
                n = jobs.get_nowait()
            except asyncio.QueueEmpty:
                break
            if done_here and done_here % per_session == 0:
                writer.write(b"QUIT\r\n")
                await _reply(reader)
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                await _reply(reader)
                writer.write(b"EHLO bench.example\r\n")
                await _reply(reader)
            msg = make_message(size, n, sender, rcpt)
            writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
            if await _reply(reader) != 250:
                result.failed += 1
                continue
            writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
            if await _reply(reader) != 250:
                result.failed += 1
                writer.write(b"RSET\r\n")
                await _reply(reader)
                continue
            writer.write(b"DATA\r\n")
            if await _reply(reader) != 354:
                result.failed += 1
                continue
            writer.write(msg + b".\r\n")
            t0 = time.perf_counter()
            code = await _reply(reader)
            if code == 250:
                result.latencies.append(time.perf_counter() - t0)
                result.sent += 1
            else:
                result.failed += 1
            done_here += 1
        writer.write(b"QUIT\r\n")
        await _reply(reader)
    finally:
        writer.close()


async def run_load(
    host: str,
    port: int,
    *,
    messages: int,
    sessions: int,
    size: int,
    sender: str,
    rcpt: str,
    per_session: int = 100,
) -> LoadResult:
    """Send messages over concurrent sessions; per_session messages per connection."""
    jobs: asyncio.Queue[int] = asyncio.Queue()
    for i in range(messages):
        jobs.put_nowait(i)
    result = LoadResult()
    t0 = time.perf_counter()
    await asyncio.gather(
        *(
            _session(host, port, jobs, size, sender, rcpt, result, per_session)
            for _ in range(sessions)
        )
    )
    result.elapsed = time.perf_counter() - t0
    return result
