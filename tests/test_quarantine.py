"""The quarantine store and `sealgate quarantine` without a running gateway."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.message import ClientInfo, Envelope
from gateway.quarantine import (
    NotQuarantined,
    QuarantineError,
    QuarantineStore,
    RequestWatcher,
    release,
)
from gateway.sealing import MasterKey, default_key_path
from gateway.spool import ALL, Spool, acquire_daemon_lock
from policies.decision import Decision, Finding, NotifySender, Quarantine

SECRET = b"Patient: Margaret Thornton, DOB 04/12/1958, diagnosis E11.9"


def body(n: int = 0) -> bytes:
    return f"Subject: review {n}\r\nTo: results@lab.example\r\n\r\n".encode() + SECRET + b"\r\n"


def decision(verdict: str = "phi") -> Decision:
    return Decision(
        verdict,  # type: ignore[arg-type]
        findings=(Finding("patient-name", "name", "body/1 text/plain", "M*** T***", 0.9),),
        actions=(Quarantine("Mail to the lab is reviewed first"), NotifySender("held")),
        matched_rules=("lab-review",),
        findings_total=1,
        policy="review",
    )


def envelope(sender: str = "dr.alice@clinic.example") -> Envelope:
    return Envelope(
        mail_from=sender,
        rcpt_to=("results@lab.example", "archive@lab.example"),
        received_at=time.time() - 90,
        client=ClientInfo("127.0.0.1", "m365.test", "TLSv1.3", None, "m365"),
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    path = tmp_path / "sealgate.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data", "hostname": "gw.clinic.example"}))
    return path


def store(data_dir: Path) -> QuarantineStore:
    s = QuarantineStore(data_dir, MasterKey.load_or_create(default_key_path(data_dir)))
    s.prepare()
    return s


def run(cfg_path: Path, *args: str) -> int:
    return main(["-c", str(cfg_path), "quarantine", *args])


# --- the store --------------------------------------------------------------------------


def test_put_load_and_read_back(data_dir: Path) -> None:
    s = store(data_dir)
    held = s.put(envelope(), body(), {"decision": decision().to_json()})
    raw = (s.dir / held.id).read_bytes()
    assert SECRET not in raw and b"Thornton" not in raw  # sealed at rest
    assert (s.dir / held.id).stat().st_mode & 0o077 == 0
    loaded = s.load(held.id)
    assert loaded is not None and loaded.envelope == held.envelope
    assert loaded.decision["verdict"] == "phi" and loaded.size == len(body())
    assert s.read_body(held.id) == body()
    assert s.ids() == [held.id]
    # Readers without the key see records, never bodies.
    reader = QuarantineStore(data_dir, None)
    assert reader.load_all() == ([loaded], [])
    with pytest.raises(QuarantineError):
        reader.read_body(held.id)


def test_a_tampered_header_makes_the_body_unreadable(data_dir: Path) -> None:
    s = store(data_dir)
    held = s.put(envelope(), body(), {"decision": decision().to_json()})
    path = s.dir / held.id
    raw = path.read_bytes()
    # Redirect it to someone else: the body no longer opens.
    path.write_bytes(raw.replace(b"results@lab.example", b"attacker@evil.example", 1))
    with pytest.raises(QuarantineError, match="does not open"):
        s.read_body(held.id)


def test_unreadable_records_are_reported_not_hidden(data_dir: Path) -> None:
    s = store(data_dir)
    good = s.put(envelope(), body(), {})
    bad = good.id[:-1] + ("0" if good.id[-1] != "0" else "1")
    (s.dir / bad).write_bytes(b"garbage\n")
    held, unreadable = s.load_all()
    assert [h.id for h in held] == [good.id] and unreadable == [bad]


def test_prepare_removes_leftovers(data_dir: Path) -> None:
    s = store(data_dir)
    (s.dir / ".01ABCDEFGHJKMNPQRS.tmp123").write_bytes(b"half")
    s.prepare()
    assert not list(s.dir.glob(".*"))


def test_requests_expand_all_to_messages_held_before_the_request(data_dir: Path) -> None:
    s = store(data_dir)
    a = s.put(envelope(), body(0), {})
    s.request("release", a.id)
    s.request("delete", ALL)
    b = s.put(envelope(), body(1), {})  # held after the request: not included
    (s.requests_dir / "junk").write_bytes(b"")
    assert s.take_requests() == [("release", a.id), ("delete", a.id)]
    assert s.take_requests() == []
    assert b.id in s.ids()


async def test_release_moves_into_the_spool_with_the_decision(data_dir: Path) -> None:
    s = store(data_dir)
    control = {"x-sealgate-expires": "7d"}
    held = s.put(envelope(), body(), {"decision": decision().to_json(), "control": control})
    key = MasterKey.load(default_key_path(data_dir))
    spool = Spool(data_dir, key)
    await spool.start()
    try:
        queued = await release(s, spool, held.id)
        assert queued.meta["decision"]["verdict"] == "phi"
        assert queued.meta["released_from"] == held.id
        # The sender's instructions to the gateway (for the portal) survive the hold.
        assert queued.meta["control"] == control
        assert queued.envelope == held.envelope
        assert await spool.read_body(queued.id) == body()
        with pytest.raises(NotQuarantined):
            await release(s, spool, held.id)
    finally:
        await spool.close()
    assert s.ids() == []


async def test_the_watcher_carries_out_requests(data_dir: Path) -> None:
    s = store(data_dir)
    keep = s.put(envelope(), body(0), {"decision": decision("none").to_json()})
    drop = s.put(envelope(), body(1), {})
    spool = Spool(data_dir, MasterKey.load(default_key_path(data_dir)))
    await spool.start()
    queued: list[str] = []
    spool.on_new(lambda m: queued.append(m.id))
    watcher = RequestWatcher(s, spool, interval=0.05)
    await watcher.start()
    try:
        s.request("release", keep.id)
        s.request("delete", drop.id)
        deadline = time.monotonic() + 30
        while s.ids() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await watcher.stop()
        await spool.close()
    assert s.ids() == [] and len(queued) == 1
    assert Spool(data_dir, None).load(queued[0]).meta["released_from"] == keep.id  # type: ignore[union-attr]


# --- the command line, no gateway running -------------------------------------------------


def test_list_and_show(cfg_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(cfg_path, "list") == 0
    assert capsys.readouterr().out == "Quarantine is empty\n"
    s = store(data_dir)
    held = s.put(envelope(), body(), {"decision": decision().to_json()})

    assert run(cfg_path, "list") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("Quarantine ID")
    assert lines[1].startswith(held.id) and "phi" in lines[1] and "(lab-review)" in lines[1]
    assert "dr.alice@clinic.example" in lines[1]
    assert lines[-1] == "-- 1 message quarantined"

    assert run(cfg_path, "list", "--json") == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["id"] == held.id and row["verdict"] == "phi" and row["rules"] == ["lab-review"]
    assert len(row["recipients"]) == 2 and row["sender"] == "dr.alice@clinic.example"

    assert run(cfg_path, "show", held.id.lower()) == 0
    out = capsys.readouterr().out
    assert f"id:           {held.id}" in out
    assert "verdict:      phi" in out and "rules:        lab-review" in out
    assert "action:     quarantine" in out and "M*** T***" in out
    assert "Thornton" not in out


def test_show_body(
    cfg_path: Path, data_dir: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    held = store(data_dir).put(envelope(), body(), {"decision": decision().to_json()})
    assert run(cfg_path, "show", held.id, "--body") == 0
    assert capsysbinary.readouterr().out == body()


@pytest.mark.parametrize("bad", ["0123456789ABCDEFGH", "../../etc/passwd", "x"])
def test_unknown_or_malformed_ids(
    cfg_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    store(data_dir).put(envelope(), body(), {})
    for action in ("show", "release", "delete"):
        assert run(cfg_path, action, "--", bad) == 1
        err = capsys.readouterr().err
        assert err.startswith("sealgate quarantine: ") and "Traceback" not in err


def test_release_and_delete_act_directly(
    cfg_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = store(data_dir)
    a = s.put(envelope(), body(0), {"decision": decision("none").to_json()})
    b = s.put(envelope(), body(1), {"decision": decision().to_json()})
    assert run(cfg_path, "release", a.id) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"release: {a.id} queued as ")
    queued_id = out.split()[-1]
    (msg,) = Spool(data_dir, None).load_all()
    assert msg.id == queued_id and msg.meta["released_from"] == a.id
    assert msg.meta["decision"]["verdict"] == "none"

    assert run(cfg_path, "delete", "--all") == 0
    assert capsys.readouterr().out == f"delete: {b.id}\n"
    assert s.ids() == []
    assert run(cfg_path, "release", "--all") == 0
    assert capsys.readouterr().out == "Quarantine is empty\n"


def test_a_request_no_gateway_takes_is_withdrawn(
    cfg_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = store(data_dir)
    held = s.put(envelope(), body(), {})
    # Something holds the gateway's lock but does not act on requests.
    with acquire_daemon_lock(data_dir):
        assert run(cfg_path, "release", held.id, "--wait", "0.3") == 1
    err = capsys.readouterr().err
    assert "did not take the release request" in err and "nothing was changed" in err
    assert s.ids() == [held.id]
    assert list(s.requests_dir.iterdir()) == []
