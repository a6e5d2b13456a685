"""The recorder: events in, audited fields only, written off the loop, surviving a dead database.

The store is real SQLite in the test's folder; a "failing database" is a real
one (a data path that cannot be opened until the test repairs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import cli, log
from gateway.audit import trail
from gateway.audit.admin import action_fields, command_path, is_admin_command
from gateway.audit.catalog import CATALOG, EventFilter
from gateway.audit.chain import Record
from gateway.audit.recorder import AuditRecorder
from gateway.config import Config
from gateway.store import open_store

WAIT = 30.0


def make_config(data_dir: Path, **audit: Any) -> Config:
    return Config.model_validate(
        {"data_dir": data_dir, "hostname": "gw.clinic.example", "audit": audit}
    )


def read_trail(data_dir: Path) -> tuple[list[Record], bool]:
    """Every record, and whether the chain verifies."""

    async def main() -> tuple[list[Record], bool]:
        store = await open_store(make_config(data_dir).storage, data_dir)
        try:
            records = [r async for r in trail.records(store)]
            return records, (await trail.verify(store)).ok
        finally:
            await store.close()

    return asyncio.run(main())


@pytest.fixture
def events_seen() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every event logged during the test (a second listener)."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def listen(name: str, level: int, fields: dict[str, Any]) -> None:
        seen.append((name, dict(fields)))

    log.add_listener(listen)
    yield seen
    log.remove_listener(listen)


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# --- the log hook --------------------------------------------------------------------------


def test_listener_sees_events_whatever_the_log_level() -> None:
    seen: list[tuple[str, int, dict[str, Any]]] = []

    def listen(name: str, level: int, fields: dict[str, Any]) -> None:
        seen.append((name, level, fields))

    def broken(name: str, level: int, fields: dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    logger = logging.getLogger("sealgate.event")
    saved = logger.level
    logger.setLevel(logging.ERROR)
    log.add_listener(broken)
    log.add_listener(listen)
    try:
        log.event("delivered", id="q1", rcpt="bob@partner.example")
    finally:
        log.remove_listener(broken)
        log.remove_listener(listen)
        logger.setLevel(saved)
    assert seen == [("delivered", logging.INFO, {"id": "q1", "rcpt": "bob@partner.example"})]
    log.event("delivered", id="q2")
    assert len(seen) == 1
    log.remove_listener(listen)  # removing twice is harmless


# --- what is kept ----------------------------------------------------------------------------


def test_only_allowed_fields_are_kept() -> None:
    f = EventFilter.from_config(None)
    kept = f.select(
        "received",
        {"id": "q1", "sender": "a@clinic.example", "subject": "Margaret Thornton", "tls": None},
    )
    assert kept == {"id": "q1", "sender": "a@clinic.example", "tls": None}
    assert f.select("listening", {"address": "127.0.0.1:25"}) is None
    # Message rejections are audited, protocol noise is not.
    assert f.select("rejected", {"stage": "rcpt", "code": 554}) is None
    assert f.select("rejected", {"stage": "data", "code": 554, "reason": "policy"}) is not None


def test_catalogue_never_names_content_fields() -> None:
    forbidden = {"subject", "body", "text", "token", "password", "key_material", "match", "data"}
    for name, spec in CATALOG.items():
        assert not (spec.fields & forbidden), name


def test_event_list_overrides() -> None:
    only = EventFilter.from_config(["delivered", "custom_event"])
    assert only.names == {"delivered", "custom_event"}
    assert only.select("custom_event", {"id": "x", "secret": "y"}) == {"id": "x"}
    edited = EventFilter.from_config(["-auth_failed", "+custom_event"])
    assert "auth_failed" not in edited.names and "received" in edited.names
    # The trail's own records are kept whatever the list says.
    assert only.select("audit_purged", {"anchor_seq": 1}) == {"anchor_seq": 1}


def test_config_refuses_mixed_event_lists(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="either plain names"):
        make_config(tmp_path, events=["received", "-auth_failed"])
    with pytest.raises(ValueError, match="not an event name"):
        make_config(tmp_path, events=["Received!"])
    assert make_config(tmp_path, retention="30d").audit.retention == 30 * 86400


# --- the recorder ----------------------------------------------------------------------------


def test_recorder_appends_audited_events(tmp_path: Path) -> None:
    data = tmp_path / "data"
    recorder = AuditRecorder(make_config(data))
    recorder.start()
    try:
        log.event("received", id="q1", sender="a@clinic.example", subject="PHI here", size=10)
        log.event("listening", address="127.0.0.1:25")
        log.event("delivered", id="q1", rcpt="b@partner.example", method="smime", tls_verified=True)
        wait_until(lambda: len(read_trail(data)[0]) == 2)
    finally:
        assert recorder.stop() == 0
    log.event("delivered", id="q2")  # after stop: not recorded
    records, ok = read_trail(data)
    assert ok
    assert [(r.event, r.message_id) for r in records] == [("received", "q1"), ("delivered", "q1")]
    assert "subject" not in records[0].fields
    assert records[1].fields["tls_verified"] is True


def test_stop_writes_what_is_queued(tmp_path: Path) -> None:
    data = tmp_path / "data"
    recorder = AuditRecorder(make_config(data), flush_interval=60.0)
    recorder.start()
    for i in range(1200):
        log.event("received", id=f"q{i}")
    assert recorder.stop() == 0
    records, ok = read_trail(data)
    assert ok and len(records) == 1200


def test_dead_database_keeps_events_until_it_is_back(
    tmp_path: Path, events_seen: list[tuple[str, dict[str, Any]]]
) -> None:
    data = tmp_path / "data"
    data.write_text("not a directory")  # the store cannot be opened
    recorder = AuditRecorder(make_config(data), max_pending=5)
    recorder.start()
    try:
        for i in range(8):
            log.event("received", id=f"q{i}")
        wait_until(lambda: any(n == "audit_write_failed" for n, _ in events_seen))
        data.unlink()  # the database comes back
        wait_until(lambda: any(n == "audit_write_recovered" for n, _ in events_seen))
    finally:
        assert recorder.stop() == 0
    assert [n for n, _ in events_seen].count("audit_write_failed") == 1
    records, ok = read_trail(data)
    assert ok
    lost = records[0]
    assert lost.event == "audit_events_lost" and lost.fields["count"] == 3
    assert [r.message_id for r in records[1:]] == ["q0", "q1", "q2", "q3", "q4"]


def test_stop_reports_what_could_not_be_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text("not a directory")
    recorder = AuditRecorder(make_config(data))
    recorder.start()
    log.event("received", id="q1")
    assert recorder.stop() == 1
    assert recorder.last_error


def test_recorder_purges_past_retention(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def seed() -> None:
        store = await open_store(make_config(data).storage, data)
        old = time.time() - 40 * 86400
        await trail.append(
            store, [trail.Entry(old + i, "received", {"id": f"o{i}"}) for i in range(3)]
        )
        await store.close()

    asyncio.run(seed())
    recorder = AuditRecorder(make_config(data, retention="30d"), purge=True)
    recorder.start()
    try:
        wait_until(lambda: any(r.event == "audit_purged" for r in read_trail(data)[0]))
    finally:
        recorder.stop()
    records, ok = read_trail(data)
    assert ok
    assert [r.event for r in records] == ["audit_purged"]
    assert records[0].fields["anchor_seq"] == 3


# --- admin commands ----------------------------------------------------------------------------


def test_admin_command_paths() -> None:
    parser = cli.build_parser()
    for argv, admin in [
        (["queue", "delete", "X"], True),
        (["queue", "list"], False),
        (["quarantine", "release", "X"], True),
        (["audit", "export"], False),
        (["audit", "purge"], True),
        (["keys", "dkim", "generate", "--domain", "d", "--selector", "s"], True),
        (["keys", "pgp", "accept", "bob@partner.example"], True),
        (["keys", "pgp", "list"], False),
    ]:
        path = command_path(parser.parse_args(argv))
        assert is_admin_command(path) is admin, path
    args = parser.parse_args(["keys", "pgp", "import", "bob.asc", "--address", "b@p.example"])
    fields = action_fields(command_path(args), args, 0)
    assert fields["command"] == "keys pgp import" and fields["address"] == ["b@p.example"]
    assert "bob.asc" not in str(fields)  # file names are not recorded


def test_admin_action_is_recorded(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "sealgate.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(data), "hostname": "gw.clinic.example"}))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["queue", "delete", "NOSUCHID", "-c", str(config)])
        assert cli.main(["queue", "list", "-c", str(config)]) == 0
    records, ok = read_trail(data)
    assert ok
    (action,) = records
    assert action.event == "admin_action"
    assert action.fields["command"] == "queue delete"
    assert action.fields["ids"] == ["NOSUCHID"] and action.message_id == "NOSUCHID"
    assert action.fields["status"] == code and action.fields["actor"]


def test_disabled_audit_records_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "sealgate.yaml"
    config.write_text(
        yaml.safe_dump({"data_dir": str(data), "hostname": "gw.x", "audit": {"enabled": False}})
    )
    with contextlib.redirect_stderr(io.StringIO()):
        cli.main(["queue", "delete", "NOSUCHID", "-c", str(config)])
    assert not (data / "sealgate.db").exists()
