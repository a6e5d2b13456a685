"""The audit trail against real databases: chain, tampering, export, purge and holds.

Every store test runs on SQLite and on a real PostgreSQL server (127.0.88.1,
this suite's corner of loopback). Tampering is done the way an intruder with
database access would: plain SQL on the tables.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gateway import cli
from gateway.audit import trail
from gateway.audit.chain import GENESIS, Record, check, parse_checkpoint
from gateway.audit.exchange import read_export, write_export
from gateway.audit.trail import AuditIntegrityError, Entry
from gateway.config import StorageConfig
from gateway.store import Store, open_store
from tests.peers.gateway import REPO
from tests.peers.postgres import PostgresServer, postgres_available

PG_HOST = "127.0.88.1"
BACKENDS = ["sqlite", "postgresql"]
DAY = 86400.0
T0 = 1_800_000_000.0  # an arbitrary fixed moment: records are made with explicit times


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on this suite's address (skipped, or failed in CI, without one)."""
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not postgres_available():
        if in_ci:
            pytest.fail("PostgreSQL is not installed; .ci/run installs it")
        pytest.skip("PostgreSQL is not installed (bash .ci/run installs it)")
    server = PostgresServer(PG_HOST)
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        if in_ci:
            pytest.fail(f"PostgreSQL did not start: {exc}")
        pytest.skip(f"PostgreSQL did not start: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest) -> StorageConfig:
    if request.param == "sqlite":
        return StorageConfig()
    server: PostgresServer = request.getfixturevalue("pg_server")
    return StorageConfig(url=server.create_database())


@pytest.fixture
async def store(storage: StorageConfig, tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(storage, tmp_path / "data")
    try:
        yield s
    finally:
        await s.close()


def entries(n: int, start: float = T0, step: float = 60.0, prefix: str = "m") -> list[Entry]:
    """n received/delivered pairs' worth of entries, one message each, step seconds apart."""
    out = []
    for i in range(n):
        event = "received" if i % 2 == 0 else "delivered"
        fields: dict[str, str | int] = {
            "id": f"{prefix}{i // 2}",
            "sender": "dr.alice@clinic.example",
        }
        if event == "delivered":
            fields.update(rcpt="bob@partner.example", method="smtp-tls-verified", code=250)
        out.append(Entry(start + i * step, event, fields))
    return out


async def all_records(store: Store) -> list[Record]:
    return [r async for r in trail.records(store)]


# --- the chain ------------------------------------------------------------------------


async def test_appended_records_chain_and_verify(store: Store) -> None:
    made = await trail.append(store, entries(6))
    assert [r.seq for r in made] == [1, 2, 3, 4, 5, 6]
    assert made[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(made))
    more = await trail.append(store, entries(2, prefix="n"))
    assert more[0].seq == 7 and more[0].prev_hash == made[-1].hash
    report = await trail.verify(store)
    assert report.ok, report.problems
    assert report.checked == 8
    assert await trail.head(store) == (8, more[-1].hash)
    stored = await all_records(store)
    assert stored == made + more
    assert stored[1].message_id == "m0" and stored[1].fields["code"] == 250


async def test_edited_field_is_named(store: Store) -> None:
    await trail.append(store, entries(6))
    await store.execute(
        "UPDATE audit_records SET fields = ? WHERE seq = 4",
        (json.dumps({"id": "m1", "sender": "mallory@evil.example"}),),
    )
    report = await trail.verify(store)
    assert [p.seq for p in report.problems] == [4]
    assert "do not match its hash" in str(report.problems[0])


async def test_edited_time_or_event_is_named(store: Store) -> None:
    await trail.append(store, entries(6))
    await store.execute("UPDATE audit_records SET at = at + 3600 WHERE seq = 2")
    await store.execute("UPDATE audit_records SET event = 'bounced' WHERE seq = 5")
    assert [p.seq for p in (await trail.verify(store)).problems] == [2, 5]


async def test_rehashed_edit_breaks_the_next_link(store: Store) -> None:
    # An intruder who recomputes the edited record's hash still breaks the next link.
    await trail.append(store, entries(6))
    (row,) = await store.fetchall("SELECT prev_hash FROM audit_records WHERE seq = 3")
    forged = Record.make(row["prev_hash"], 3, T0 + 120, "received", {"id": "x", "sender": "x@y"})
    await store.execute(
        "UPDATE audit_records SET fields = ?, message_id = 'x', hash = ? WHERE seq = 3",
        (json.dumps(forged.fields), forged.hash),
    )
    report = await trail.verify(store)
    assert [p.seq for p in report.problems] == [4]
    assert "link to the previous record is broken" in str(report.problems[0])


async def test_deleted_record_is_named(store: Store) -> None:
    await trail.append(store, entries(8))
    await store.execute("DELETE FROM audit_records WHERE seq = 5")
    report = await trail.verify(store)
    assert len(report.problems) == 1
    assert report.problems[0].seq == 6
    assert "record 5 is missing" in str(report.problems[0])


async def test_deleted_record_with_renumbering_is_named(store: Store) -> None:
    await trail.append(store, entries(6))
    await store.execute("DELETE FROM audit_records WHERE seq = 3")
    for seq in (4, 5, 6):
        await store.execute("UPDATE audit_records SET seq = ? WHERE seq = ?", (seq - 1, seq))
    report = await trail.verify(store)
    assert report.problems and report.problems[0].seq == 3


async def test_swapped_records_are_named(store: Store) -> None:
    await trail.append(store, entries(6))
    await store.execute("UPDATE audit_records SET seq = -1 WHERE seq = 3")
    await store.execute("UPDATE audit_records SET seq = 3 WHERE seq = 4")
    await store.execute("UPDATE audit_records SET seq = 4 WHERE seq = -1")
    report = await trail.verify(store)
    moved = [p.seq for p in report.problems if "do not match its hash" in p.text]
    assert moved == [3, 4]
    assert min(p.seq or 0 for p in report.problems) == 3


async def test_changed_message_id_column_is_named(store: Store) -> None:
    # The column legal holds use must agree with the hashed fields.
    await trail.append(store, entries(4))
    await store.execute("UPDATE audit_records SET message_id = 'other' WHERE seq = 2")
    report = await trail.verify(store)
    assert [p.seq for p in report.problems] == [2]


async def test_truncated_end_needs_the_checkpoint(store: Store) -> None:
    await trail.append(store, entries(6))
    seq, digest = await trail.head(store)
    await store.execute("DELETE FROM audit_records WHERE seq > 4")
    assert (await trail.verify(store)).ok  # a shorter chain is still a chain
    report = await trail.verify(store, expect_head=(seq, digest))
    assert not report.ok
    assert "ends at record 4, before the checkpoint 6" in str(report.problems[0])


async def test_checkpoint_matches_as_the_trail_grows(store: Store) -> None:
    await trail.append(store, entries(4))
    checkpoint = await trail.head(store)
    await trail.append(store, entries(4, prefix="n"))
    assert (await trail.verify(store, expect_head=checkpoint)).ok
    wrong = (checkpoint[0], "f" * 64)
    assert [p.seq for p in (await trail.verify(store, expect_head=wrong)).problems] == [4]


# --- purge and legal hold ----------------------------------------------------------------


async def test_purge_keeps_the_chain_verifiable(store: Store) -> None:
    await trail.append(store, entries(10, step=DAY))  # days 0..9
    removed = await trail.purge(store, 5 * DAY, now=T0 + 9.5 * DAY)  # keeps day 5 on
    assert removed == 5
    report = await trail.verify(store)
    assert report.ok, report.problems
    assert (report.anchor_seq, report.checked) == (5, 6)  # 5 left + the purge record
    remaining = await all_records(store)
    assert [r.seq for r in remaining] == [6, 7, 8, 9, 10, 11]
    purge_record = remaining[-1]
    assert purge_record.event == "audit_purged"
    assert purge_record.fields["anchor_seq"] == 5 and purge_record.fields["held"] == []
    # Nothing more is due: a second purge changes nothing.
    assert await trail.purge(store, 5 * DAY, now=T0 + 9.5 * DAY) == 0
    assert len(await all_records(store)) == 6


async def test_purge_in_steps(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trail, "PURGE_CHUNK", 4)
    await trail.append(store, entries(12, step=DAY))
    await trail.add_hold(store, "m2", "officer", None)  # seqs 5 and 6
    # Days 0..9 are due: 10 records, of which 2 held.
    assert await trail.purge(store, 2 * DAY, now=T0 + 11.5 * DAY) == 8
    report = await trail.verify(store)
    assert report.ok, report.problems
    assert report.anchor_seq == 10 and report.held == 2
    purges = [r for r in await all_records(store) if r.event == "audit_purged"]
    assert len(purges) == 3 and purges[-1].fields["held"][0][0] == 5


async def test_purge_removes_the_start_only_once_verified(store: Store) -> None:
    await trail.append(store, entries(10, step=DAY))
    await store.execute("UPDATE audit_records SET fields = '{}' WHERE seq = 3")
    with pytest.raises(AuditIntegrityError, match="record 3"):
        await trail.purge(store, 5 * DAY, now=T0 + 9.5 * DAY)
    assert len(await all_records(store)) == 10  # the evidence stays


async def test_legal_hold_survives_purge_and_is_checked(store: Store) -> None:
    await trail.append(store, entries(10, step=DAY))  # messages m0..m4, two records each
    assert await trail.add_hold(store, "m1", "officer", "case 42")
    assert not await trail.add_hold(store, "m1", "officer", None)
    assert [h.message_id for h in await trail.holds(store)] == ["m1"]
    await trail.purge(store, 3 * DAY, now=T0 + 9.5 * DAY)
    report = await trail.verify(store)
    assert report.ok, report.problems
    assert report.held == 2
    held = [r async for r in trail.records(store, message_id="m1")]
    assert [r.event for r in held] == ["received", "delivered", "audit_hold"]
    kept = [r for r in await all_records(store) if r.seq <= report.anchor_seq]
    assert [r.seq for r in kept] == [3, 4]

    # Tampering with a record kept under hold is still found...
    await store.execute(
        "UPDATE audit_records SET fields = ? WHERE seq = 3",
        (json.dumps({"id": "m1", "sender": "mallory@evil.example"}),),
    )
    assert 3 in [p.seq for p in (await trail.verify(store)).problems]


async def test_deleted_held_record_is_named(store: Store) -> None:
    await trail.append(store, entries(10, step=DAY))
    await trail.add_hold(store, "m1", "officer", None)
    await trail.purge(store, 3 * DAY, now=T0 + 9.5 * DAY)
    await store.execute("DELETE FROM audit_records WHERE seq = 4")
    report = await trail.verify(store)
    assert [p.seq for p in report.problems] == [4]
    assert "legal hold" in str(report.problems[0])


async def test_released_hold_is_purged_next_time(store: Store) -> None:
    await trail.append(store, entries(10, step=DAY))
    await trail.add_hold(store, "m1", "officer", None)
    await trail.purge(store, 3 * DAY, now=T0 + 9.5 * DAY)
    assert await trail.release_hold(store, "m1", "officer")
    assert not await trail.release_hold(store, "m1", "officer")
    assert await trail.purge(store, 3 * DAY, now=T0 + 9.5 * DAY) == 2
    report = await trail.verify(store)
    assert report.ok, report.problems
    assert report.held == 0


async def test_moved_anchor_is_found(store: Store) -> None:
    # Dropping the oldest live records and moving the anchor past them is noticed:
    # the latest purge record names the real anchor.
    await trail.append(store, entries(10, step=DAY))
    await trail.purge(store, 5 * DAY, now=T0 + 9.5 * DAY)
    (row,) = await store.fetchall("SELECT hash FROM audit_records WHERE seq = 7")
    await store.execute("DELETE FROM audit_records WHERE seq IN (6, 7)")
    await store.execute("UPDATE audit_state SET seq = 7, hash = ?", (row["hash"],))
    report = await trail.verify(store)
    assert not report.ok
    assert "purge anchor" in str(report.problems[0])


# --- export --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json"])
async def test_export_round_trips(store: Store, tmp_path: Path, fmt: str) -> None:
    batch = entries(6)
    batch.append(
        Entry(T0 + 999, "policy", {"id": "m9", "verdict": "phi", "matched_rules": ["phi"],
              "locations": [{"rule": "ssn", "location": "body", "masked": "***-**-9999"}],
              "findings": {"ssn": 1}, "shadow": False, "note": "ünïcödé, \"quoted\"\nline"})
    )  # fmt: skip
    await trail.append(store, batch)
    stored = await all_records(store)
    path = tmp_path / f"export.{fmt}"
    with path.open("w", encoding="utf-8", newline="") as out:
        assert write_export(stored, out, fmt) == 7
    back = read_export(path.read_text(encoding="utf-8"))
    assert back == stored
    assert check(back, 0, GENESIS).ok


async def test_export_window(store: Store) -> None:
    await trail.append(store, entries(10, step=DAY))
    picked = [r async for r in trail.records(store, since=T0 + 2 * DAY, until=T0 + 5 * DAY)]
    assert [r.seq for r in picked] == [3, 4, 5]
    # An export of a window checks on its own, from its first record's link.
    assert check(picked, 2, picked[0].prev_hash, whole=False).ok
    # A selection (one message's records) too: hashes checked, gaps expected.
    m1 = [r async for r in trail.records(store, message_id="m1")]
    assert [r.seq for r in m1] == [3, 4]
    one = check(m1 + picked[2:], 2, m1[0].prev_hash, whole=False)
    assert one.ok and one.gaps == 0


# --- concurrency ---------------------------------------------------------------------------

_WRITER = """
import asyncio, sys, time
from pathlib import Path
from gateway import cli
from gateway.audit import trail
from gateway.audit.trail import Entry
from gateway.config import StorageConfig
from gateway.store import open_store

async def main(url, data, tag):
    store = await open_store(StorageConfig(url=url or None), Path(data))
    for i in range(40):
        await trail.append(store, [Entry(time.time(), "received", {"id": f"{tag}{i}-{j}"})
                                   for j in range(3)])
    await store.close()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_processes_appending_at_once_keep_one_chain(
    storage: StorageConfig, store: Store, tmp_path: Path
) -> None:
    env = {"PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, storage.url or "", str(tmp_path / "data"), tag],
            env=env,
        )
        for tag in "abc"
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    report = await trail.verify(store)
    assert report.ok, report.problems
    assert report.checked == 3 * 40 * 3


# --- the command line (SQLite, on a copy of the data directory) ----------------------------


@dataclass(frozen=True)
class Ran:
    """What a command printed and its exit code."""

    returncode: int
    stdout: str
    stderr: str


def _cli(config: Path, *args: str) -> Ran:
    """`sealgate audit ARGS -c CONFIG`, run in this process (imports are slow to repeat)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["audit", *args, "-c", str(config)])
        except SystemExit as exc:  # argparse refusing the arguments
            code = int(exc.code or 0)
    return Ran(code, out.getvalue(), err.getvalue())


def test_console_script_exit_codes(tmp_path: Path) -> None:
    # The real command line once, as an admin's script runs it.
    config = tmp_path / "sealgate.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "hostname": "gw.x"}))
    run = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify", "-c", str(config),
         "--expect-head", f"3:{'a' * 64}"],
        capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "missing" in run.stdout


@pytest.fixture
async def trail_dir(tmp_path: Path) -> Path:
    """A configuration whose SQLite trail holds 8 records."""
    data = tmp_path / "data"
    store = await open_store(StorageConfig(), data)
    await trail.append(store, entries(8, start=time.time() - 3600))
    await store.close()
    (tmp_path / "sealgate.yaml").write_text(
        yaml.safe_dump({"data_dir": str(data), "hostname": "gw.clinic.example"})
    )
    return tmp_path


def _copy(src: Path, dst: Path) -> Path:
    """A copy of the configuration and its data (tamper with the copy, not the original)."""
    shutil.copytree(src / "data", dst / "data")
    (dst / "sealgate.yaml").write_text(
        yaml.safe_dump({"data_dir": str(dst / "data"), "hostname": "gw.clinic.example"})
    )
    return dst / "sealgate.yaml"


def _sql(config: Path, statement: str) -> None:
    with sqlite3.connect(config.parent / "data" / "sealgate.db") as db:
        db.executescript(statement)


@pytest.mark.parametrize(
    ("tamper", "where"),
    [
        ("UPDATE audit_records SET fields = '{\"id\":\"m2\",\"sender\":\"x@y\"}' WHERE seq = 5",
         "record 5:"),
        ("DELETE FROM audit_records WHERE seq = 3", "record 3 is missing"),
        ("UPDATE audit_records SET seq = -1 WHERE seq = 6; "
         "UPDATE audit_records SET seq = 6 WHERE seq = 7; "
         "UPDATE audit_records SET seq = 7 WHERE seq = -1", "record 6:"),
    ],
    ids=["edit", "delete", "reorder"],
)  # fmt: skip
def test_cli_verify_names_the_tampered_record(
    trail_dir: Path, tmp_path_factory: pytest.TempPathFactory, tamper: str, where: str
) -> None:
    ok = _cli(trail_dir / "sealgate.yaml", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "OK: 8 records checked" in ok.stdout
    copy = _copy(trail_dir, tmp_path_factory.mktemp("copy"))
    _sql(copy, tamper)
    bad = _cli(copy, "verify")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "TAMPERED" in bad.stdout and where in bad.stdout
    # The original is untouched.
    assert _cli(trail_dir / "sealgate.yaml", "verify").returncode == 0


def test_cli_checkpoint_catches_a_cut_end(
    trail_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = trail_dir / "sealgate.yaml"
    head = _cli(config, "head")
    assert head.returncode == 0
    checkpoint = head.stdout.strip()
    assert parse_checkpoint(checkpoint)[0] == 8
    assert f"head {checkpoint}" in _cli(config, "verify").stdout
    copy = _copy(trail_dir, tmp_path_factory.mktemp("copy"))
    _sql(copy, "DELETE FROM audit_records WHERE seq >= 7")
    assert _cli(copy, "verify").returncode == 0
    cut = _cli(copy, "verify", "--expect-head", checkpoint)
    assert cut.returncode == 1 and "before the checkpoint 8" in cut.stdout
    assert _cli(config, "verify", "--expect-head", "nonsense").returncode == 2


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_cli_export_round_trips_and_checks_offline(trail_dir: Path, fmt: str) -> None:
    config = trail_dir / "sealgate.yaml"
    out = trail_dir / f"audit.{fmt}"
    result = _cli(config, "export", "--since", "2h", "--format", fmt, "-o", str(out))
    assert result.returncode == 0, result.stderr
    records = read_export(out.read_text(encoding="utf-8"))
    assert [r.seq for r in records] == list(range(1, 9))
    assert records[1].fields["method"] == "smtp-tls-verified"
    assert _cli(config, "verify", "--file", str(out)).returncode == 0
    # Stdout gives the same document.
    assert _cli(config, "export", "--format", fmt).stdout == out.read_text(encoding="utf-8")
    # An edited export no longer checks.
    out.write_text(out.read_text(encoding="utf-8").replace("partner.example", "evil.example"))
    edited = _cli(config, "verify", "--file", str(out))
    assert edited.returncode == 1 and "record 2:" in edited.stdout
    # Windows and filters.
    assert "[]" in _cli(config, "export", "--until", "2000-01-01", "--format", "json").stdout
    one = _cli(config, "export", "--message-id", "m1", "--format", "json").stdout
    assert [r["seq"] for r in json.loads(one)] == [3, 4]
    assert _cli(config, "export", "--since", "yesterday-ish").returncode == 2


def test_cli_hold_release_and_purge_are_recorded(trail_dir: Path) -> None:
    config = trail_dir / "sealgate.yaml"
    assert _cli(config, "hold", "m1", "--reason", "case 42").returncode == 0
    listed = _cli(config, "holds").stdout
    assert listed.startswith("m1 ") and "case 42" in listed
    assert _cli(config, "release-hold", "m1").returncode == 0
    assert _cli(config, "release-hold", "m1").returncode == 2
    assert _cli(config, "purge").returncode == 0
    assert _cli(config, "hold", "bad id!").returncode == 2
    records = json.loads(_cli(config, "export").stdout)
    hold, release, purge = records[-3:]
    assert [r["event"] for r in records[-3:]] == [
        "audit_hold",
        "audit_hold_released",
        "admin_action",
    ]
    assert hold["fields"]["message_id"] == "m1" and hold["fields"]["reason"] == "case 42"
    assert release["fields"]["actor"]
    assert purge["event"] == "admin_action" and purge["fields"]["command"] == "audit purge"
    assert _cli(config, "verify").returncode == 0


def test_cli_without_a_trail(tmp_path: Path) -> None:
    config = tmp_path / "sealgate.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "hostname": "gw.x"}))
    result = _cli(config, "verify")
    assert result.returncode == 0 and "no audit trail yet" in result.stdout
    assert _cli(config, "export", "--format", "csv").stdout.startswith("seq,time,event")
    assert not (tmp_path / "data").exists()
