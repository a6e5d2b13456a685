"""The portal delivery method: deposit, notification, retries, failures, and the CLI."""

from __future__ import annotations

import asyncio
import email
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest
import yaml

from gateway.config import PortalConfig, StorageConfig
from gateway.message import ClientInfo, Envelope, QueuedMessage, RecipientStatus
from gateway.outbound.methods import LocalOutcome, Method, MethodStage, Outgoing
from gateway.outbound.portalmethod import (
    STORAGE_UNAVAILABLE,
    PortalHandler,
    parse_expiry,
    sender_notice,
)
from gateway.portalbox import PortalBox
from gateway.sealing import MasterKey, default_key_path
from gateway.store import Store, open_store
from tests.peers.postgres import PostgresServer, server_for_tests

QID = "0123456789ABCDEFGH"
SECRET = "HbA1c 9.2% confidential-marker-8812"
SUBJECT = "Lab results for Jane Roe, MRN 4471"
ATTACHMENT = "roe-jane-biopsy.pdf"
PORTAL = PortalConfig(
    base_url="https://portal.clinic.example/",
    organisation="Riverside Clinic",
    logo_url="https://clinic.example/logo.png",
    colour="#aa3300",
)
RCPT = "pat@mail.example"


def original_message(extra_headers: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Dr Ada Smith <ada@clinic.example>"
    msg["To"] = RCPT
    msg["Subject"] = SUBJECT
    msg.set_content(f"Dear Jane,\n\n{SECRET}\n")
    msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename=ATTACHMENT)
    data = msg.as_bytes(policy=default_policy.clone(linesep="\r\n"))
    return extra_headers.encode() + data


def queued(msg_id: str = QID, rcpts: tuple[str, ...] = (RCPT,), **meta: object) -> QueuedMessage:
    env = Envelope(
        mail_from="ada@clinic.example",
        rcpt_to=rcpts,
        received_at=time.time(),
        client=ClientInfo(ip="127.0.86.10", helo="m365.example"),
    )
    return QueuedMessage(
        id=msg_id,
        envelope=env,
        size=0,
        recipients=tuple(RecipientStatus(r) for r in rcpts),
        next_attempt=0,
        meta=dict(meta),
    )


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    yield from server_for_tests()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest) -> StorageConfig:
    if request.param == "sqlite":
        return StorageConfig()
    server: PostgresServer = request.getfixturevalue("pg_server")
    return StorageConfig(url=server.create_database())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def store(storage: StorageConfig, data_dir: Path) -> AsyncIterator[Store]:
    s = await open_store(storage, data_dir)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def box(store: Store, data_dir: Path) -> PortalBox:
    return PortalBox(store, MasterKey.load_or_create(default_key_path(data_dir)))


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    return msg


def link_in(text: str) -> str:
    match = re.search(
        r"https://portal\.clinic\.example/m/[A-Za-z0-9_-]{43}(#[A-Za-z0-9_-]{43})?", text
    )
    assert match, text
    return match[0]


async def render(handler: PortalHandler, msg: QueuedMessage, data: bytes) -> Outgoing:
    out = await handler.render(Method("portal"), msg, data, [RCPT])
    assert isinstance(out, Outgoing), out
    return out


# --- the notification -----------------------------------------------------------------------


async def test_notification_carries_the_link_and_no_phi(box: PortalBox) -> None:
    data = original_message()
    out = await render(PortalHandler(box, PORTAL, hostname="gw.clinic.example"), queued(), data)
    assert out.tls == "opportunistic"
    raw = out.data.decode("ascii")
    for leak in (SECRET, "confidential-marker", SUBJECT, "Jane", "4471", ATTACHMENT, "biopsy"):
        assert leak not in raw
    note = parse(out.data)
    assert note["To"] == RCPT
    assert note["From"].addresses[0].addr_spec == "ada@clinic.example"
    assert note["Subject"] == "Secure message from Riverside Clinic"
    assert note["Message-ID"] and note["Date"]
    assert note.get_content_type() == "multipart/alternative"
    text = note.get_body(("plain",))
    html = note.get_body(("html",))
    assert text is not None and html is not None
    text_content, html_content = text.get_content(), html.get_content()
    link = link_in(text_content)
    assert "Dr Ada Smith <ada@clinic.example> sent you a secure message" in text_content
    assert f'href="{link}"' in html_content
    assert "Riverside Clinic" in html_content and "#aa3300" in html_content
    assert 'src="https://clinic.example/logo.png"' in html_content
    # The link opens the deposited original, exactly as queued.
    stored = await box.by_token(link.rsplit("/", 1)[1])
    assert stored is not None and stored.queue_id == QID and stored.recipient == RCPT
    assert await box.read_body(stored) == data


async def test_configured_wording_and_sender(box: PortalBox) -> None:
    portal = PORTAL.model_copy(
        update={
            "notification_from": "Riverside secure mail <secure@clinic.example>",
            "notification_subject": "{organisation}: message from {sender}\r\nBcc: x@evil",
            "notification_text": "Hello <b>there</b>.\n\n{sender} wrote. Link: {link}",
        }
    )
    out = await render(
        PortalHandler(box, portal, hostname="gw.example"), queued(), original_message()
    )
    note = parse(out.data)
    assert note["From"].addresses[0].addr_spec == "secure@clinic.example"
    assert note["Bcc"] is None  # a line break in the template cannot add a header
    assert note["Subject"].startswith("Riverside Clinic: message from Dr Ada Smith")
    html = note.get_body(("html",))
    assert html is not None
    assert "Hello &lt;b&gt;there&lt;/b&gt;." in html.get_content()


async def test_sealed_link_mode(box: PortalBox) -> None:
    handler = PortalHandler(box, PORTAL, sealed_links=True, hostname="gw.example")
    data = original_message()
    out = await render(handler, queued(), data)
    text = parse(out.data).get_body(("plain",))
    assert text is not None
    link = link_in(text.get_content())
    token, key = link.rsplit("/", 1)[1].split("#")
    stored = await box.by_token(token)
    assert stored is not None and stored.sealed_link
    assert await box.read_body(stored, key) == data


async def test_sealed_link_per_message(box: PortalBox) -> None:
    handler = PortalHandler(box, PORTAL, hostname="gw.example")
    out = await render(
        handler, queued(control={"x-sealgate-portal": "sealed-link"}), original_message()
    )
    assert "#" in link_in(out.data.decode())


# --- expiry ---------------------------------------------------------------------------------


def test_parse_expiry() -> None:
    assert parse_expiry("7d") == 7 * 86400
    assert parse_expiry(" 12h ") == 12 * 3600
    assert parse_expiry("90m") == 5400
    assert parse_expiry("2W") == 14 * 86400
    assert parse_expiry("365d") == 365 * 86400
    for bad in ("366d", "0d", "7", "d", "-1d", "7 days", "1e3d", ""):
        assert parse_expiry(bad) is None, bad


async def test_expiry_from_the_message(box: PortalBox) -> None:
    handler = PortalHandler(box, PORTAL, hostname="gw.example")
    before = time.time()
    await render(handler, queued(), original_message("X-Sealgate-Expires: 7d\r\n"))
    await render(
        handler, queued("0123456789ABCDEFGJ"), original_message("X-Sealgate-Expires: 400d\r\n")
    )
    await render(
        handler,
        queued("0123456789ABCDEFGK", control={"x-sealgate-expires": "90d"}),
        original_message(),
    )
    after = time.time()
    by_id = {m.queue_id: m for m in await box.list_messages()}
    seven = by_id[QID].expires_at - by_id[QID].created_at
    assert seven == pytest.approx(7 * 86400)
    default = by_id["0123456789ABCDEFGJ"]
    assert default.expires_at - default.created_at == pytest.approx(PORTAL.expiry)
    ninety = by_id["0123456789ABCDEFGK"]
    assert ninety.expires_at - ninety.created_at == pytest.approx(90 * 86400)
    assert before <= by_id[QID].created_at <= after


async def test_read_notice_wish_travels_with_the_stored_copy(box: PortalBox) -> None:
    handler = PortalHandler(box, PORTAL, hostname="gw.example")
    await render(handler, queued(control={"x-sealgate-read-notice": "yes"}), original_message())
    await render(handler, queued("0123456789ABCDEFGJ"), original_message())
    by_id = {m.queue_id: m for m in await box.list_messages()}
    wanted = parse(await box.read_body(by_id[QID]))
    assert wanted["X-Sealgate-Read-Notice"] == "yes"
    plain = parse(await box.read_body(by_id["0123456789ABCDEFGJ"]))
    assert plain["X-Sealgate-Read-Notice"] is None


# --- retries and failures -------------------------------------------------------------------


async def test_retry_sends_a_new_link_for_the_same_copy(box: PortalBox, store: Store) -> None:
    handler = PortalHandler(box, PORTAL, hostname="gw.example")
    first = link_in((await render(handler, queued(), original_message())).data.decode())
    second = link_in((await render(handler, queued(), original_message())).data.decode())
    assert first != second
    assert await box.by_token(first.rsplit("/", 1)[1]) is None
    assert await box.by_token(second.rsplit("/", 1)[1]) is not None
    assert len(await store.fetchall("SELECT id FROM portal_messages")) == 1


async def test_storage_failure_is_temporary(box: PortalBox, store: Store) -> None:
    await store.close()
    out = await PortalHandler(box, PORTAL, hostname="gw.example").render(
        Method("portal"), queued(), original_message(), [RCPT]
    )
    assert out == LocalOutcome("transient", None, STORAGE_UNAVAILABLE)
    assert out.text.startswith("4.3.0")


async def test_revoked_before_notification_is_permanent(box: PortalBox) -> None:
    handler = PortalHandler(box, PORTAL, hostname="gw.example")
    await render(handler, queued(), original_message())
    await box.revoke(QID, "admin")
    out = await handler.render(Method("portal"), queued(), original_message(), [RCPT])
    assert isinstance(out, LocalOutcome) and out.status == "permanent"
    assert out.text.startswith("5.7.0")


async def test_one_recipient_per_copy(box: PortalBox) -> None:
    out = await PortalHandler(box, PORTAL, hostname="gw.example").render(
        Method("portal"),
        queued(rcpts=(RCPT, "b@mail.example")),
        original_message(),
        [RCPT, "b@mail.example"],
    )
    assert isinstance(out, LocalOutcome) and out.status == "transient"
    assert await box.list_messages() == []


async def test_method_stage_dispatches_to_portal(box: PortalBox) -> None:
    stage = MethodStage({"portal": PortalHandler(box, PORTAL, hostname="gw.example")})
    out = await stage.render(
        Method("portal", subject="ignored"), queued(), original_message(), [RCPT]
    )
    assert isinstance(out, Outgoing)
    assert len(await box.list_messages()) == 1


# --- the sender's notice ----------------------------------------------------------------------


def test_sender_notice_names_recipients_only() -> None:
    msg = queued(rcpts=(RCPT, "b@mail.example"))
    data = sender_notice(msg, [RCPT, "b@mail.example"], PORTAL, "gw.clinic.example")
    note = parse(data)
    assert note["To"] == "ada@clinic.example"
    assert note["From"].addresses[0].addr_spec == "MAILER-DAEMON@gw.clinic.example"
    assert note["Auto-Submitted"] == "auto-generated"
    body = note.get_content()
    assert "<pat@mail.example>" in body and "<b@mail.example>" in body
    assert QID in body and "Riverside Clinic" in body
    for leak in (SECRET, SUBJECT, ATTACHMENT):
        assert leak not in data.decode()
    with pytest.raises(ValueError):
        sender_notice(
            queued().__class__(
                **{
                    **queued().__dict__,
                    "envelope": Envelope("", (RCPT,), 0.0, ClientInfo("127.0.0.1")),
                }
            ),
            [RCPT],
            PORTAL,
            "gw",
        )


# --- sealgate portal revoke|list ----------------------------------------------------------------


def sealgate(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "sealgate"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
    return subprocess.run(
        [*cmd, *args, "-c", str(cfg)], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow
async def test_cli_revoke_and_list(
    box: PortalBox, storage: StorageConfig, data_dir: Path, tmp_path: Path
) -> None:
    cfg = tmp_path / "sealgate.yaml"
    doc: dict[str, object] = {"data_dir": str(data_dir), "hostname": "gw.clinic.example"}
    if storage.url:
        doc["storage"] = {"url": storage.url}
    cfg.write_text(yaml.safe_dump(doc))
    handler = PortalHandler(box, PORTAL, hostname="gw.example")
    out = await render(handler, queued(rcpts=(RCPT, "b@mail.example")), original_message())
    await handler.render(
        Method("portal"),
        queued(rcpts=(RCPT, "b@mail.example")),
        original_message(),
        ["b@mail.example"],
    )
    token = link_in(out.data.decode()).rsplit("/", 1)[1]

    listed = await asyncio.to_thread(sealgate, cfg, "portal", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {(r["id"], r["recipient"], r["state"]) for r in rows} == {
        (QID, RCPT, "active"),
        (QID, "b@mail.example", "active"),
    }

    done = await asyncio.to_thread(sealgate, cfg, "portal", "revoke", QID.lower())
    assert done.returncode == 0, done.stderr
    assert "revoked 2 of 2" in done.stdout
    stored = await box.by_token(token)
    assert stored is not None and stored.state() == "revoked"

    again = await asyncio.to_thread(sealgate, cfg, "portal", "revoke", QID)
    assert again.returncode == 0 and "already revoked" in again.stdout

    unknown = await asyncio.to_thread(sealgate, cfg, "portal", "revoke", "ZZZZZZZZZZZZZZZZZZ")
    assert unknown.returncode == 1 and "no portal message" in unknown.stderr
    bad = await asyncio.to_thread(sealgate, cfg, "portal", "revoke", "../etc")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr

    text = await asyncio.to_thread(sealgate, cfg, "portal", "list")
    assert text.returncode == 0 and text.stdout.count("revoked") == 2
    assert SECRET not in text.stdout


def test_cli_without_a_database(tmp_path: Path) -> None:
    cfg = tmp_path / "sealgate.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": "data", "hostname": "gw.example"}))
    assert sealgate(cfg, "portal", "list").stdout == ""
    result = sealgate(cfg, "portal", "revoke", QID)
    assert result.returncode == 1 and "no portal message" in result.stderr
