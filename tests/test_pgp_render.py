"""PGP/MIME output: what the handler renders, decrypted by the recipient's own gpg."""

from __future__ import annotations

import base64
import email
import email.policy
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.config import PgpConfig
from gateway.message import ClientInfo, Envelope, QueuedMessage, RecipientStatus
from gateway.outbound.methods import LocalOutcome, Method, Outgoing
from gateway.pgp import PgpDirectory, PgpHandler
from gateway.pgp.mime import inner_entity, split_message
from tests.peers.gpg import GpgUser, pgp_mime_parts

ATTACHMENT = bytes(range(256)) * 40
REAL_SUBJECT = "Lab results for Jane Roe, MRN 4471923"
NEUTRAL = "Secure message from Clinic"


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GpgUser]]:
    base = tmp_path_factory.mktemp("gpgr")
    users = {
        "bob": GpgUser.create(base / "bob", "bob@mail.example", "Bob"),
        "org": GpgUser.create(base / "org", "security@clinic.example", "Clinic", encrypt=False),
        "old": GpgUser.create(base / "old", "old@mail.example", "Old", expire="seconds=2"),
    }
    try:
        yield users
    finally:
        for u in users.values():
            u.close()


def original() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Dr Who <drwho@clinic.example>"
    msg["To"] = "Bob <bob@mail.example>"
    msg["Cc"] = "nurse@clinic.example"
    msg["Bcc"] = "hidden@elsewhere.example"
    msg["Subject"] = REAL_SUBJECT
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = "<abc.123@clinic.example>"
    msg["Received"] = "from app.clinic.example by gw.clinic.example"
    msg.set_content("Patient Jane Roe, DOB 1970-01-02: HbA1c 9.1%.\nFollow up.\n")
    msg.add_attachment(ATTACHMENT, maintype="application", subtype="pdf", filename="labs.pdf")
    return msg.as_bytes(policy=email.policy.SMTP)


def queued(rcpt: str) -> QueuedMessage:
    env = Envelope("drwho@clinic.example", (rcpt,), time.time(), ClientInfo("127.0.0.1"))
    return QueuedMessage("T1", env, 100, (RecipientStatus(rcpt),), 0.0)


def directory(tmp_path: Path, sign_key: str | None = None) -> PgpDirectory:
    cfg = PgpConfig(wkd=False, openpgpkey_dns=False, sign_key=sign_key)
    return PgpDirectory(tmp_path / "data", cfg, None, None)


def import_for(d: PgpDirectory, user: GpgUser) -> None:
    d.keyring.import_key(user.public_key())
    d.state.bind(user.address, user.fingerprint, "admin")


async def test_recipient_decrypts_the_original(tmp_path: Path, people: dict[str, GpgUser]) -> None:
    bob = people["bob"]
    d = directory(tmp_path)
    import_for(d, bob)
    assert await d.key_for("Bob@Mail.Example") == bob.fingerprint
    data = original()
    method = Method("pgp", subject=NEUTRAL, key=bob.fingerprint)
    result = await PgpHandler(d).render(method, queued(bob.address), data, [bob.address])
    assert isinstance(result, Outgoing)
    assert result.tls == "opportunistic"
    out = result.data
    assert b"Jane Roe" not in out and b"HbA1c" not in out and b"4471923" not in out
    assert b"hidden@elsewhere.example" not in out
    outer, payload = pgp_mime_parts(out)
    assert outer["Subject"] == NEUTRAL
    assert outer["From"] == "Dr Who <drwho@clinic.example>"
    assert outer["To"] == "Bob <bob@mail.example>"
    assert outer["Cc"] == "nurse@clinic.example"
    assert outer["Message-ID"] == "<abc.123@clinic.example>"
    assert outer["Received"] is not None
    assert outer["Bcc"] is None
    plain, _ = bob.decrypt(payload)
    inner = email.message_from_bytes(plain, policy=email.policy.default)
    assert inner["Subject"] == REAL_SUBJECT
    assert inner["From"] == "Dr Who <drwho@clinic.example>"
    assert inner.get_param("protected-headers") == "v1"
    assert inner["Bcc"] is None
    orig = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(inner, EmailMessage) and isinstance(orig, EmailMessage)
    body = inner.get_body(("plain",))
    assert body is not None
    assert body.get_content() == orig.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    attachments = list(inner.iter_attachments())
    assert len(attachments) == 1
    assert attachments[0].get_filename() == "labs.pdf"
    assert attachments[0].get_content() == ATTACHMENT
    # The entity inside is the original's, byte for byte below its header fields.
    assert split_message(plain)[1] == split_message(data)[1]


async def test_original_subject_outside_when_not_replaced(
    tmp_path: Path, people: dict[str, GpgUser]
) -> None:
    bob = people["bob"]
    d = directory(tmp_path)
    import_for(d, bob)
    data = b"From: a@clinic.example\r\nTo: bob@mail.example\r\nSubject: hello\r\n\r\nbody\r\n"
    method = Method("pgp", key=bob.fingerprint)
    result = await PgpHandler(d).render(method, queued(bob.address), data, [bob.address])
    assert isinstance(result, Outgoing)
    outer, payload = pgp_mime_parts(result.data)
    assert outer["Subject"] == "hello"
    plain, _ = bob.decrypt(payload)
    inner = email.message_from_bytes(plain, policy=email.policy.default)
    assert inner.get_content_type() == "text/plain"  # no Content-Type: RFC 2045's default
    assert inner.get_content().replace("\r\n", "\n") == "body\n"


async def test_non_ascii_neutral_subject_is_encoded(
    tmp_path: Path, people: dict[str, GpgUser]
) -> None:
    bob = people["bob"]
    d = directory(tmp_path)
    import_for(d, bob)
    method = Method("pgp", subject="Nachricht für Sie", key=bob.fingerprint)
    result = await PgpHandler(d).render(method, queued(bob.address), original(), [bob.address])
    assert isinstance(result, Outgoing)
    assert result.data.isascii()
    outer = email.message_from_bytes(result.data, policy=email.policy.default)
    assert outer["Subject"] == "Nachricht für Sie"


async def test_signed_with_the_organisation_key(tmp_path: Path, people: dict[str, GpgUser]) -> None:
    bob, org = people["bob"], people["org"]
    d = directory(tmp_path, sign_key=org.fingerprint)
    import_for(d, bob)
    d.keyring.import_key(org.secret_key(), secret=True)
    bob.import_key(org.public_key())
    try:
        method = Method("pgp", subject=NEUTRAL, key=bob.fingerprint)
        result = await PgpHandler(d).render(method, queued(bob.address), original(), [bob.address])
    finally:
        d.close()
    assert isinstance(result, Outgoing)
    _, payload = pgp_mime_parts(result.data)
    plain, status = bob.decrypt(payload)
    assert f"VALIDSIG {org.fingerprint}" in status or "GOODSIG" in status
    assert b"Subject: " + REAL_SUBJECT.encode() in plain


async def test_missing_signing_key_fails_closed(tmp_path: Path, people: dict[str, GpgUser]) -> None:
    bob, org = people["bob"], people["org"]
    d = directory(tmp_path, sign_key=org.fingerprint)  # configured, never imported
    import_for(d, bob)
    method = Method("pgp", subject=NEUTRAL, key=bob.fingerprint)
    try:
        result = await PgpHandler(d).render(method, queued(bob.address), original(), [bob.address])
    finally:
        d.close()
    assert isinstance(result, LocalOutcome)
    assert result.status == "transient"
    assert result.text.startswith("4.7.0")


async def test_unknown_or_unusable_key_is_a_temporary_failure(
    tmp_path: Path, people: dict[str, GpgUser]
) -> None:
    old = people["old"]
    d = directory(tmp_path)
    import_for(d, old)
    handler = PgpHandler(d)
    unknown = Method("pgp", key="0" * 40)
    result = await handler.render(unknown, queued(old.address), original(), [old.address])
    assert isinstance(result, LocalOutcome) and result.status == "transient"
    assert result.text.startswith("4.7.0")
    time.sleep(2.5)  # the key was made to expire two seconds after creation
    fresh = directory(tmp_path)
    assert await fresh.key_for(old.address) is None
    expired = Method("pgp", key=old.fingerprint)
    result = await PgpHandler(fresh).render(expired, queued(old.address), original(), [old.address])
    assert isinstance(result, LocalOutcome) and result.status == "transient"


async def test_several_recipients_are_refused(tmp_path: Path, people: dict[str, GpgUser]) -> None:
    bob = people["bob"]
    d = directory(tmp_path)
    import_for(d, bob)
    method = Method("pgp", key=bob.fingerprint)
    result = await PgpHandler(d).render(
        method, queued(bob.address), original(), [bob.address, "x@mail.example"]
    )
    assert isinstance(result, LocalOutcome) and result.status == "transient"


def test_inner_entity_keeps_content_fields_and_marks_protected() -> None:
    data = (
        b"From: a@x.example\r\nSubject: s\r\nX-Other: y\r\nContent-Type: text/plain;\r\n"
        b" charset=utf-8\r\nContent-Transfer-Encoding: base64\r\nMIME-Version: 1.0\r\n\r\n"
        + base64.b64encode("héllo".encode())
        + b"\r\n"
    )
    inner = inner_entity(data)
    msg = email.message_from_bytes(inner, policy=email.policy.default)
    assert msg.get_content() == "héllo"
    assert msg["Subject"] == "s"
    assert msg["X-Other"] is None
    assert msg.get_param("protected-headers") == "v1"
