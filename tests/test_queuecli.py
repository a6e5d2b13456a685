"""`sealgate queue list|show|retry|delete`, through gateway.cli.main with a real spool."""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.message import ClientInfo, Envelope, QueuedMessage, RecipientStatus
from gateway.sealing import MasterKey, default_key_path
from gateway.spool import Spool, acquire_daemon_lock
from tests.peers.gateway import GatewayFactory, free_port, write_config

SECRET = b"Diagnosis: confidential-marker-7731"
WAIT = 60.0


def message(n: int = 0) -> bytes:
    return f"Subject: results {n}\r\nTo: p@mail.example\r\n\r\n".encode() + SECRET + b"\r\n"


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    path = tmp_path / "sealgate.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data", "hostname": "gw.clinic.example"}))
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def queue(data_dir: Path, *envelopes: Envelope, state: bool = False) -> list[QueuedMessage]:
    """Put messages in the spool as the gateway would; with state, one delivery attempt."""

    async def run() -> list[QueuedMessage]:
        spool = Spool(data_dir, MasterKey.load_or_create(default_key_path(data_dir)))
        await spool.start()
        try:
            out = []
            for i, env in enumerate(envelopes):
                msg = await spool.put(env, message(i), {"verdict": "phi"})
                if state:
                    msg = replace(msg, attempts=1, next_attempt=time.time() + 3600)
                    msg = msg.with_recipients(
                        [
                            RecipientStatus(
                                env.rcpt_to[0],
                                "delivered",
                                1,
                                250,
                                "2.0.0 Ok: queued",
                                "mx.mail.example",
                                {"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256"},
                            ),
                            RecipientStatus(
                                env.rcpt_to[-1],
                                "pending",
                                1,
                                451,
                                "4.7.1 greylisted\x1b[2J try later",
                                "mx.other.example",
                            ),
                        ]
                    )
                    await spool.save_state(msg)
                out.append(msg)
            return out
        finally:
            await spool.close()

    return asyncio.run(run())


def envelope(sender: str = "desk@clinic.example", *rcpts: str) -> Envelope:
    return Envelope(
        mail_from=sender,
        rcpt_to=rcpts or ("p@mail.example", "q@other.example"),
        received_at=time.time() - 125,
        client=ClientInfo("127.0.0.1", "m365.test", "TLSv1.3", None, "m365"),
    )


def run(cfg_path: Path, *args: str) -> int:
    return main(["-c", str(cfg_path), "queue", *args])


def loaded(data_dir: Path) -> list[QueuedMessage]:
    return Spool(data_dir, None).load_all()


# --- list ---------------------------------------------------------------------------


def test_list_empty(cfg_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(cfg_path, "list") == 0
    assert capsys.readouterr().out == "Mail queue is empty\n"
    assert run(cfg_path, "list", "--json") == 0
    assert capsys.readouterr().out == ""


def test_list(cfg_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, bounce = queue(data_dir, envelope(), envelope(""), state=True)
    assert run(cfg_path, "list") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("Queue ID")
    assert lines[1].startswith(first.id) and lines[2].startswith(bounce.id)
    assert "desk@clinic.example" in lines[1] and "<>" in lines[2]
    assert "1/2" in lines[1] and "in 59m" in lines[1] and "2m" in lines[1]
    assert "451 4.7.1 greylisted?[2J try later" in lines[1]  # no escape reaches the terminal
    total = len(message(0)) + len(message(1))
    assert lines[-1] == f"-- 2 messages, {total} bytes, 2 recipients pending"
    assert SECRET.decode() not in out and "\x1b" not in out

    # Options also work after the action.
    assert main(["queue", "list", "--json", "-c", str(cfg_path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == [first.id, bounce.id]
    assert rows[0]["pending"] == 1 and rows[0]["total"] == 2 and rows[0]["size"] == len(message(0))
    assert rows[0]["recipients"][0]["tls"]["version"] == "TLSv1.3"
    assert rows[1]["sender"] == "" and rows[0]["meta"] == {"verdict": "phi"}
    assert rows[0]["next_attempt"] > time.time()


def test_list_reports_unreadable_messages(
    cfg_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (good,) = queue(data_dir, envelope())
    bad = good.id[:-1] + ("0" if good.id[-1] != "0" else "1")
    (data_dir / "spool" / "q" / bad).write_bytes(b"not a message")
    assert run(cfg_path, "list") == 0
    captured = capsys.readouterr()
    assert good.id in captured.out
    assert f"message {bad} cannot be read" in captured.err
    assert (data_dir / "spool" / "q" / bad).exists()  # the CLI reports, the daemon quarantines


# --- show ---------------------------------------------------------------------------


def test_show(cfg_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (msg,) = queue(data_dir, envelope(), state=True)
    assert run(cfg_path, "show", msg.id) == 0
    out = capsys.readouterr().out
    assert f"id:           {msg.id}" in out
    assert "sender:       <desk@clinic.example>" in out
    assert "client:       127.0.0.1 helo=m365.test tls=TLSv1.3 connector=m365" in out
    assert "<p@mail.example>  delivered  attempts=1" in out
    assert "tls:    version=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256" in out
    assert "<q@other.example>  pending  attempts=1" in out
    assert "reply:  451 4.7.1 greylisted" in out
    assert "recipients:   1 pending of 2" in out
    assert SECRET.decode() not in out

    assert run(cfg_path, "show", msg.id.lower(), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == msg.id and shown["client"]["connector"] == "m365"


def test_show_body(
    cfg_path: Path, data_dir: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    (msg,) = queue(data_dir, envelope())
    assert run(cfg_path, "show", msg.id, "--body") == 0
    assert capsysbinary.readouterr().out == message(0)


def test_show_body_refuses_an_unsafe_key(
    cfg_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (msg,) = queue(data_dir, envelope())
    default_key_path(data_dir).chmod(0o644)
    assert run(cfg_path, "show", msg.id, "--body") == 1
    err = capsys.readouterr().err
    assert str(default_key_path(data_dir)) in err and "Traceback" not in err


@pytest.mark.parametrize("bad", ["0123456789ABCDEFGH", "../../etc/passwd", "x", "-"])
def test_show_unknown(
    cfg_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    queue(data_dir, envelope())
    assert run(cfg_path, "show", "--", bad) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("sealgate queue: ")
    assert "Traceback" not in captured.err


# --- retry and delete without a running gateway --------------------------------------------


def test_retry_and_delete_directly(
    cfg_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c = queue(data_dir, envelope(), envelope(), envelope(), state=True)
    assert run(cfg_path, "retry", b.id) == 0
    assert capsys.readouterr().out == f"retry: {b.id}\n"
    after = {m.id: m for m in loaded(data_dir)}
    assert after[b.id].next_attempt == 0 and after[a.id].next_attempt > time.time()
    assert after[b.id].recipients == b.recipients  # only the schedule changes

    missing = "0" * 18
    assert run(cfg_path, "delete", a.id, missing) == 1
    captured = capsys.readouterr()
    assert captured.out == f"delete: {a.id}\n"
    assert f"no message {missing} in the queue" in captured.err
    assert [m.id for m in loaded(data_dir)] == [b.id, c.id]

    assert run(cfg_path, "retry", "--all") == 0
    assert all(m.next_attempt == 0 for m in loaded(data_dir))
    assert run(cfg_path, "delete", "--all") == 0
    assert "delete: 2 messages" in capsys.readouterr().out
    assert loaded(data_dir) == []
    assert sorted(os.listdir(data_dir / "spool" / "q")) == []


def test_retry_delete_usage_errors(
    cfg_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (msg,) = queue(data_dir, envelope())
    assert run(cfg_path, "delete") == 1
    assert run(cfg_path, "delete", msg.id, "--all") == 1
    assert run(cfg_path, "retry", "../" + msg.id) == 1
    err = capsys.readouterr().err
    assert "give one or more queue ids, or --all" in err and "not both" in err
    assert "Traceback" not in err
    assert [m.id for m in loaded(data_dir)] == [msg.id]
    with pytest.raises(SystemExit) as info:
        main(["-c", str(cfg_path), "queue"])
    assert info.value.code == 2


def test_requests_go_to_the_lock_holder(
    cfg_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While a gateway holds the lock, the CLI leaves requests instead of touching files."""
    a, b = queue(data_dir, envelope(), envelope())
    spool = Spool(data_dir, None)
    with acquire_daemon_lock(data_dir):
        assert run(cfg_path, "delete", a.id, "--wait", "0") == 0
        assert run(cfg_path, "retry", "--all", "--wait", "0") == 0
        out = capsys.readouterr().out
        assert "the running gateway will act on it shortly" in out
        assert [m.id for m in loaded(data_dir)] == [a.id, b.id]  # untouched
        assert spool.take_control_requests() == [("delete", a.id), ("retry", a.id), ("retry", b.id)]

        # Nobody takes it: the request is withdrawn rather than left for a later gateway.
        assert run(cfg_path, "delete", b.id, "--wait", "0.2") == 1
        err = capsys.readouterr().err
        assert "did not take the delete request within 0.2s; nothing was changed" in err
        assert spool.take_control_requests() == []
        assert os.listdir(spool.control_dir) == []


def test_files_made_as_root_belong_to_the_gateway_user(
    cfg_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: checks what root leaves behind in the gateway's data_dir")
    (msg,) = queue(data_dir, envelope())
    gateway_user = 65534  # nobody
    for path in [data_dir, *data_dir.rglob("*")]:
        os.chown(path, gateway_user, gateway_user)
    (data_dir / "sealgate.lock").unlink(missing_ok=True)
    assert run(cfg_path, "retry", msg.id) == 0
    made = [data_dir / "sealgate.lock", data_dir / "spool" / "q" / f"{msg.id}.state"]
    with acquire_daemon_lock(data_dir):
        assert run(cfg_path, "delete", msg.id, "--wait", "0") == 0
    made += list((data_dir / "spool" / "control").iterdir())
    assert len(made) == 3
    for path in made:
        assert (path.stat().st_uid, path.stat().st_gid) == (gateway_user, gateway_user), path


# --- against the real gateway ----------------------------------------------------------------


@pytest.mark.slow
def test_queue_commands_with_running_gateway(
    tmp_path: Path, gateway_factory: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Mail deferred by a real gateway is listed, retried and deleted through it."""
    dead_end = f"127.0.44.1:{free_port('127.0.44.1')}"  # nothing listens there
    cfg = write_config(
        tmp_path,
        extra={"delivery": {"relay_host": dead_end, "retry": {"first": "1h", "max_backoff": "1h"}}},
    )
    gw = gateway_factory(cfg)
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=WAIT) as client:
        client.sendmail("desk@clinic.example", ["p@mail.example"], message())
    gw.wait_for_event("deferred", WAIT)

    assert main(["-c", str(cfg.path), "queue", "list", "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["pending"] == 1 and row["attempts"] >= 1 and row["next_attempt"] > time.time()
    msg_id = row["id"]

    assert main(["-c", str(cfg.path), "queue", "retry", msg_id]) == 0
    assert "by the running gateway" in capsys.readouterr().out
    gw.wait_for_event("retry_requested", WAIT, id=msg_id)
    gw.wait_for_event("deferred", WAIT, count=2)

    assert main(["-c", str(cfg.path), "queue", "show", msg_id, "--body"]) == 0
    assert SECRET.decode() in capsys.readouterr().out

    assert main(["-c", str(cfg.path), "queue", "delete", msg_id]) == 0
    assert "deleted by the running gateway" in capsys.readouterr().out
    assert main(["-c", str(cfg.path), "queue", "list"]) == 0
    assert capsys.readouterr().out == "Mail queue is empty\n"
    assert gw.stop() == 0
    assert SECRET.decode() not in gw.log_text()
