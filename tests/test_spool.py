"""The durable spool, with real files: roundtrips, group commit, full disks, crashes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.message import ClientInfo, Envelope, QueuedMessage, RecipientStatus
from gateway.sealing import MasterKey
from gateway.spool import (
    ALL,
    AlreadyRunning,
    MessageCorrupt,
    MessageNotFound,
    Spool,
    SpoolError,
    SpoolFull,
    acquire_daemon_lock,
    daemon_running,
    new_id,
    valid_id,
)

REPO = Path(__file__).resolve().parent.parent


def envelope(*rcpts: str, sender: str = "doctor@clinic.example") -> Envelope:
    return Envelope(
        mail_from=sender,
        rcpt_to=rcpts or ("patient@mail.example",),
        received_at=time.time(),
        client=ClientInfo(ip="127.0.0.1", helo="m365.test", tls="TLSv1.3", connector="m365"),
        smtputf8=True,
    )


def body(n: int = 0, size: int = 300) -> bytes:
    head = f"Subject: lab result {n}\r\n\r\n".encode()
    return head + (f"confidential {n} ".encode() * (size // 14 + 1))[:size]


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
async def spool(tmp_path: Path, key: MasterKey) -> AsyncIterator[Spool]:
    s = Spool(tmp_path, key)
    await s.start()
    yield s
    await s.close()


def qfiles(s: Spool) -> list[str]:
    return sorted(os.listdir(s.qdir))


# --- ids ------------------------------------------------------------------------------


def test_ids_are_safe_unique_and_time_ordered() -> None:
    first = [new_id() for _ in range(2000)]
    assert len(set(first)) == len(first)
    assert all(valid_id(i) and len(i) == 18 for i in first)
    time.sleep(0.01)
    later = new_id()
    assert all(i < later for i in first)
    for bad in ("", "../../etc/passwd", first[0].lower(), first[0] + "A", "I" * 18, "0" * 17 + "/"):
        assert not valid_id(bad)


# --- roundtrip ------------------------------------------------------------------------


async def test_put_load_state_remove(tmp_path: Path, spool: Spool, key: MasterKey) -> None:
    seen: list[QueuedMessage] = []
    spool.on_new(seen.append)
    env = envelope("a@x.example", "b@y.example", "a@x.example", "A@x.example")
    data = body(1, 5000)
    msg = await spool.put(env, data, {"verdict": "phi", "findings": 2})

    assert seen == [msg]
    assert valid_id(msg.id)
    assert msg.envelope.rcpt_to == ("a@x.example", "b@y.example", "A@x.example")
    assert [r.address for r in msg.pending] == list(msg.envelope.rcpt_to)
    assert msg.size == len(data) and msg.next_attempt == 0 and msg.attempts == 0
    assert qfiles(spool) == [msg.id]
    raw = (spool.qdir / msg.id).read_bytes()
    assert b"confidential" not in raw  # the body is sealed at rest
    assert os.stat(spool.qdir / msg.id).st_mode & 0o777 == 0o600

    assert spool.load(msg.id) == msg
    assert await spool.read_body(msg.id) == data

    tls = {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "verified": True}
    updated = replace(msg, attempts=1, next_attempt=time.time() + 300, delay_warned=True)
    updated = updated.with_recipients(
        [
            RecipientStatus("a@x.example", "delivered", 1, 250, "2.0.0 ok", "mx.x.example", tls),
            RecipientStatus("b@y.example", "pending", 1, 451, "4.7.1 later", "mx.y.example"),
        ]
    )
    await spool.save_state(updated)
    assert spool.load(msg.id) == updated

    # Another process (the CLI, a restarted daemon) sees the same.
    reopened = Spool(tmp_path, key)
    assert reopened.load_all() == [updated]
    assert await reopened.read_body(msg.id) == data
    await reopened.close()

    await spool.remove(msg.id)
    assert spool.load(msg.id) is None
    assert qfiles(spool) == []
    with pytest.raises(MessageNotFound):
        await spool.read_body(msg.id)
    with pytest.raises(MessageNotFound):
        await spool.save_state(updated)
    assert qfiles(spool) == []  # no orphan state written for a removed message


async def test_big_message_roundtrip(spool: Spool) -> None:
    data = os.urandom(6 * 1024 * 1024 + 3)
    msg = await spool.put(envelope(), data)
    assert await spool.read_body(msg.id) == data
    assert spool.load_all() == [msg]


async def test_load_all_is_ordered_and_ids_outside_are_validated(spool: Spool) -> None:
    msgs = [await spool.put(envelope(), body(i)) for i in range(5)]
    assert [m.id for m in spool.load_all()] == sorted(m.id for m in msgs)
    assert spool.load("../../etc/passwd") is None
    assert spool.load(msgs[0].id.lower()) is None
    for bad in ("../q/" + msgs[0].id, "..", msgs[0].id + ".state"):
        with pytest.raises(ValueError):
            await spool.read_body(bad)
        with pytest.raises(ValueError):
            await spool.remove(bad)
        with pytest.raises(ValueError):
            spool.request_control("delete", bad)


async def test_put_needs_recipients_and_json_meta(spool: Spool) -> None:
    with pytest.raises(ValueError):
        await spool.put(replace(envelope(), rcpt_to=()), b"x")
    with pytest.raises(SpoolError):
        await spool.put(envelope(), b"x", {"bad": object()})
    assert qfiles(spool) == []


async def test_concurrent_state_writes_for_one_message(spool: Spool) -> None:
    msg = await spool.put(envelope("a@x.example"), body())
    versions = [replace(msg, attempts=i) for i in range(1, 51)]
    await asyncio.gather(*(spool.save_state(v) for v in versions))
    loaded = spool.load(msg.id)
    assert loaded is not None and loaded.attempts == 50  # the last one asked for wins
    assert qfiles(spool) == [msg.id, f"{msg.id}.state"]


# --- group commit ------------------------------------------------------------------------


async def test_group_commit_200_concurrent_puts(tmp_path: Path, spool: Spool) -> None:
    new: list[str] = []
    spool.on_new(lambda m: new.append(m.id))
    msgs = await asyncio.gather(*(spool.put(envelope(), body(i)) for i in range(200)))
    ids = [m.id for m in msgs]
    assert len(set(ids)) == 200 and sorted(new) == sorted(ids)
    # One directory fsync served many puts.
    assert spool.stats.puts == 200
    assert spool.stats.dir_syncs < 200
    assert qfiles(spool) == sorted(ids)
    for i, m in enumerate(msgs):
        assert await spool.read_body(m.id) == body(i)


async def test_close_waits_for_puts_in_flight(tmp_path: Path, key: MasterKey) -> None:
    s = Spool(tmp_path, key)
    await s.start()
    tasks = [asyncio.create_task(s.put(envelope(), body(i))) for i in range(50)]
    await asyncio.sleep(0)
    await s.close()
    msgs = await asyncio.gather(*tasks)
    assert sorted(m.id for m in Spool(tmp_path, key).load_all()) == sorted(m.id for m in msgs)
    with pytest.raises(SpoolError):
        await s.put(envelope(), b"x")


async def test_cancelled_put_leaves_nothing(tmp_path: Path, key: MasterKey) -> None:
    s = Spool(tmp_path, key)
    await s.start()
    task = asyncio.create_task(s.put(envelope(), body(size=2_000_000)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await s.close()
    assert os.listdir(s.qdir) == []


# --- failures --------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem, so that writes fail with ENOSPC as on a full disk."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small filesystem for the ENOSPC test")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"this machine forbids mounting a small tmpfs: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_disk_full_is_spoolfull_and_leaves_nothing_behind(small_fs: Path) -> None:
    key = MasterKey.load_or_create(small_fs / "master.key")
    s = Spool(small_fs, key)
    await s.start()
    try:
        with pytest.raises(SpoolFull):
            await s.put(envelope(), os.urandom(2 * 1024 * 1024))
        assert qfiles(s) == []

        stored: list[tuple[QueuedMessage, bytes]] = []
        with pytest.raises(SpoolFull):
            for i in range(20):
                data = os.urandom(200_000) + bytes([i])
                stored.append((await s.put(envelope(), data), data))
        assert 1 <= len(stored) < 20
        assert qfiles(s) == sorted(m.id for m, _ in stored)  # no partial or temporary file
        for msg, data in stored:
            assert await s.read_body(msg.id) == data

        # Space comes back when delivered mail leaves.
        await s.remove(stored[0][0].id)
        msg = await s.put(envelope(), b"small")
        assert await s.read_body(msg.id) == b"small"
        concurrent = await asyncio.gather(
            *(s.put(envelope(), os.urandom(150_000)) for _ in range(10)), return_exceptions=True
        )
        assert any(isinstance(r, SpoolFull) for r in concurrent)
        assert all(isinstance(r, QueuedMessage | SpoolFull) for r in concurrent)
        ok = {r.id for r in concurrent if isinstance(r, QueuedMessage)}
        assert set(qfiles(s)) == ok | {m.id for m, _ in stored[1:]} | {msg.id}
    finally:
        await s.close()


async def test_other_storage_failure_is_spoolerror(spool: Spool) -> None:
    shutil.rmtree(spool.qdir)
    with pytest.raises(SpoolError) as info:
        await spool.put(envelope(), body())
    assert not isinstance(info.value, SpoolFull)
    assert "confidential" not in str(info.value)


# --- crash leftovers and corrupt files ----------------------------------------------------


async def test_start_cleans_leftovers_and_quarantines_corrupt_files(
    tmp_path: Path, key: MasterKey
) -> None:
    s = Spool(tmp_path, key)
    await s.start()
    good = await s.put(envelope(), body())
    await s.close()

    orphan, broken, foreign = new_id(), new_id(), new_id()
    (s.qdir / f".{new_id()}.tmp").write_bytes(b"half a message")
    (s.qdir / f".{good.id}.state.tmp123").write_bytes(b"{")
    (s.qdir / f"{orphan}.state").write_text("{}")
    (s.qdir / broken).write_bytes(b"this is not a spool file\n")
    (s.qdir / foreign).write_bytes(
        json.dumps({"v": 1, "id": good.id, "envelope": {}, "size": 1}).encode() + b"\n"
    )

    s2 = Spool(tmp_path, key)
    await s2.start()
    try:
        assert s2.load_all() == [good]
        assert qfiles(s2) == [good.id]
        assert sorted(os.listdir(s2.corrupt_dir)) == sorted([broken, foreign])
        assert await s2.read_body(good.id) == body()
    finally:
        await s2.close()


async def test_read_only_users_never_move_files(tmp_path: Path, key: MasterKey) -> None:
    s = Spool(tmp_path, key)
    await s.start()
    await s.close()
    broken = new_id()
    (s.qdir / broken).write_bytes(b"garbage")
    reader = Spool(tmp_path, None)
    assert reader.load_all() == []
    assert qfiles(reader) == [broken]


async def test_tampered_body_is_quarantined(tmp_path: Path, spool: Spool, key: MasterKey) -> None:
    msg = await spool.put(envelope(), body(size=10_000))
    path = spool.qdir / msg.id
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(MessageCorrupt):
        await spool.read_body(msg.id)
    assert qfiles(spool) == []
    assert os.listdir(spool.corrupt_dir) == [msg.id]


async def test_changed_envelope_fails_authentication(spool: Spool) -> None:
    msg = await spool.put(envelope("patient@mail.example"), body())
    path = spool.qdir / msg.id
    path.write_bytes(path.read_bytes().replace(b"patient@mail.example", b"attacker@evil.examp"))
    loaded = spool.load(msg.id)
    assert loaded is not None and loaded.envelope.rcpt_to == ("attacker@evil.examp",)
    with pytest.raises(MessageCorrupt):
        await spool.read_body(msg.id)


async def test_wrong_master_key_does_not_quarantine(tmp_path: Path, spool: Spool) -> None:
    msg = await spool.put(envelope(), body())
    other = Spool(tmp_path, MasterKey.generate())
    await other.start()
    try:
        with pytest.raises(SpoolError, match="another master key"):
            await other.read_body(msg.id)
        assert qfiles(other) == [msg.id]
    finally:
        await other.close()


async def test_corrupt_state_resets_to_pending(spool: Spool) -> None:
    msg = await spool.put(envelope("a@x.example", "b@x.example"), body())
    await spool.save_state(
        replace(msg, attempts=3).with_recipients([RecipientStatus("a@x.example", "delivered")])
    )
    (spool.qdir / f"{msg.id}.state").write_bytes(b'{"recipients": [')
    loaded = spool.load(msg.id)
    assert loaded == msg  # delivery is at-least-once: retried to everyone
    assert os.listdir(spool.corrupt_dir) == [f"{msg.id}.state"]


# --- control requests and the daemon lock ---------------------------------------------------


async def test_control_requests(spool: Spool) -> None:
    before = [await spool.put(envelope(), body(i)) for i in range(3)]
    assert spool.take_control_requests() == []
    await asyncio.sleep(0.01)  # ids order by millisecond: make "before" unambiguous
    spool.request_control("retry", before[1].id)
    spool.request_control("delete", ALL)
    spool.request_control("retry", before[1].id)
    (spool.control_dir / "garbage").write_text("x")
    (spool.control_dir / f"{new_id()}.chmod.{before[0].id}").write_text("")
    await asyncio.sleep(0.01)
    after = await spool.put(envelope(), body(9))

    taken = spool.take_control_requests()
    assert taken == [("retry", before[1].id)] + [("delete", m.id) for m in before]
    assert after.id not in {i for _, i in taken}  # queued after the request was made
    assert os.listdir(spool.control_dir) == []
    assert spool.take_control_requests() == []


def test_daemon_lock(tmp_path: Path) -> None:
    assert not daemon_running(tmp_path)
    with acquire_daemon_lock(tmp_path) as lock:
        assert daemon_running(tmp_path)
        with pytest.raises(AlreadyRunning, match=str(tmp_path)) as info:
            acquire_daemon_lock(tmp_path)
        assert str(os.getpid()) in str(info.value)
        assert lock.path.read_text().strip() == str(os.getpid())
    assert not daemon_running(tmp_path)


def test_daemon_lock_across_processes(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from gateway.spool import acquire_daemon_lock
        lock = acquire_daemon_lock(Path({str(tmp_path)!r}))
        print("locked", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        assert daemon_running(tmp_path)
        with pytest.raises(AlreadyRunning):
            acquire_daemon_lock(tmp_path)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    # The kernel drops a dead process's lock: no stale pid files to clean up.
    assert not daemon_running(tmp_path)
    acquire_daemon_lock(tmp_path).release()


# --- kill -9 ---------------------------------------------------------------------------


CHILD = """
import asyncio, sys
from pathlib import Path
from gateway.message import ClientInfo, Envelope
from gateway.sealing import MasterKey
from gateway.spool import Spool

def body(n):
    return b"message %d " % n * (1 + n % 4000)

async def main(data_dir):
    spool = Spool(data_dir, MasterKey.load_or_create(data_dir / "master.key"))
    await spool.start()
    env = Envelope("a@clinic.example", ("b@mail.example",), 0.0, ClientInfo("127.0.0.1"))
    counter = iter(range(10**9))

    async def worker():
        while True:
            n = next(counter)
            msg = await spool.put(env, body(n))
            sys.stdout.write(f"{msg.id} {n}\\n")
            sys.stdout.flush()

    print("ready", flush=True)
    await asyncio.gather(*(worker() for _ in range(16)))

asyncio.run(main(Path(sys.argv[1])))
"""


@pytest.mark.parametrize("round_", range(6))
async def test_kill_9_never_loses_an_acknowledged_message(tmp_path: Path, round_: int) -> None:
    data_dir = tmp_path / "data"
    rng = random.Random()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    acknowledged: dict[str, int] = {}
    try:
        assert proc.stdout.readline() == b"ready\n"
        kill_after = rng.randint(1, 400)
        while len(acknowledged) < kill_after:
            line = proc.stdout.readline()
            assert line, "child died before it was killed"
            raw_id, raw_n = line.split()
            acknowledged[raw_id.decode()] = int(raw_n)
    finally:
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait(timeout=60)
    for line in rest.split(b"\n")[:-1]:  # complete lines printed before the kill count too
        raw_id, raw_n = line.split()
        acknowledged[raw_id.decode()] = int(raw_n)

    key = MasterKey.load(data_dir / "master.key")
    s = Spool(data_dir, key)
    await s.start()
    try:
        queued = {m.id for m in s.load_all()}
        missing = set(acknowledged) - queued
        assert not missing, f"lost {len(missing)} acknowledged messages"
        for msg_id, n in acknowledged.items():
            assert await s.read_body(msg_id) == b"message %d " % n * (1 + n % 4000)
        assert os.listdir(s.corrupt_dir) == []
        assert not [n for n in os.listdir(s.qdir) if n.startswith(".")]
    finally:
        await s.close()
