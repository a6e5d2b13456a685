"""S/MIME output: what the handler renders, decrypted again by `openssl cms -decrypt`."""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.config import SmimeConfig
from gateway.message import ClientInfo, Envelope, QueuedMessage, RecipientStatus
from gateway.outbound.encrypted import already_encrypted
from gateway.outbound.methods import LocalOutcome, Method, Outgoing
from gateway.smime import SmimeDirectory, SmimeHandler
from gateway.smime.envelope import inner_entity, outer_fields
from gateway.smime.store import CertStore
from tests.smime_certs import Issued, issue, openssl, rsa_key

RCPT = "ann@mail.example"
REAL_SUBJECT = "Lab results for Jane Roe, MRN 4471-22"
NEUTRAL = "Secure message"
ATTACHMENT = bytes(range(256)) * 300  # binary, with every byte value


def original() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Dr Who <dr@clinic.example>"
    msg["To"] = f"Ann <{RCPT}>"
    msg["Cc"] = "nurse@clinic.example"
    msg["Bcc"] = "hidden@clinic.example"
    msg["Subject"] = REAL_SUBJECT
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = "<m1@clinic.example>"
    msg.set_content("Diagnosis: E11.9. Please call.\n")
    msg.add_alternative("<p>Diagnosis: <b>E11.9</b>. Please call.</p>\n", subtype="html")
    msg.add_attachment(
        ATTACHMENT, maintype="application", subtype="octet-stream", filename="scan.bin"
    )
    return msg.as_bytes(policy=email.policy.SMTP)


def queued(data: bytes) -> QueuedMessage:
    env = Envelope("dr@clinic.example", (RCPT,), time.time(), ClientInfo("127.0.84.1"))
    return QueuedMessage("msg1", env, len(data), (RecipientStatus(RCPT),), 0.0)


@pytest.fixture
def recipient(tmp_path: Path) -> tuple[Issued, Path, Path]:
    ann = issue(RCPT)
    cert_path, key_path = ann.write(tmp_path, "ann")
    CertStore(tmp_path / "data").add(ann.cert, "import")
    return ann, cert_path, key_path


def decrypt(data: bytes, cert_path: Path, key_path: Path) -> bytes:
    return openssl(
        "cms", "-decrypt", "-recip", str(cert_path), "-inkey", str(key_path), "-binary", data=data
    )


@pytest.mark.parametrize("cipher", ["aes256", "aes128"])
async def test_rendered_copy_decrypts_to_the_original(
    tmp_path: Path, recipient: tuple[Issued, Path, Path], cipher: str
) -> None:
    ann, cert_path, key_path = recipient
    cfg = SmimeConfig(cipher=cipher)  # type: ignore[arg-type]
    directory = SmimeDirectory(tmp_path / "data", cfg)
    fp = directory.cert_for(RCPT)
    assert fp == ann.fingerprint
    data = original()
    out = await SmimeHandler(directory, cfg).render(
        Method("smime", subject=NEUTRAL, key=fp), queued(data), data, [RCPT]
    )
    assert isinstance(out, Outgoing) and out.tls == "opportunistic"

    # Outside: no trace of the content or the real subject; the neutral subject; no Bcc.
    assert b"E11.9" not in out.data and b"Jane Roe" not in out.data
    outer = email.message_from_bytes(out.data, policy=email.policy.default)
    assert outer["Subject"] == NEUTRAL
    assert outer["Bcc"] is None
    assert outer["From"] == "Dr Who <dr@clinic.example>"
    assert outer["Message-ID"] == "<m1@clinic.example>"
    assert outer.get_content_type() == "application/pkcs7-mime"
    assert outer.get_param("smime-type") == "enveloped-data"
    assert outer.get_param("name") == "smime.p7m"
    assert outer["Content-Transfer-Encoding"] == "base64"
    assert already_encrypted(out.data) == "smime"
    # Every line CRLF-terminated and short, as SMTP wants it.
    assert all(len(line) <= 998 for line in out.data.split(b"\r\n"))
    assert b"\n" not in out.data.replace(b"\r\n", b"")

    # The cipher asked for is the one used.
    printed = openssl("cms", "-cmsout", "-print", "-inform", "SMIME", data=out.data).decode()
    assert f"{cipher.replace('aes', 'aes-')}-cbc" in printed

    inner_bytes = decrypt(out.data, cert_path, key_path)
    inner = email.message_from_bytes(inner_bytes, policy=email.policy.default)
    assert inner["Subject"] == REAL_SUBJECT
    assert inner["From"] == "Dr Who <dr@clinic.example>"
    assert inner["To"] == f"Ann <{RCPT}>"
    assert inner["Date"] == "Mon, 23 Nov 2026 10:00:00 +0000"
    assert inner["Bcc"] is None
    assert inner.get_content_type() == "multipart/mixed"
    orig = email.message_from_bytes(data, policy=email.policy.default)
    # The body is the original's, byte for byte.
    assert inner_bytes.split(b"\r\n\r\n", 1)[1] == data.split(b"\r\n\r\n", 1)[1]
    parts = [p for p in inner.walk() if not p.is_multipart()]
    orig_parts = [p for p in orig.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "text/html",
        "application/octet-stream",
    ]
    for got, want in zip(parts, orig_parts, strict=True):
        assert got.get_payload(decode=True) == want.get_payload(decode=True)
    assert parts[2].get_payload(decode=True) == ATTACHMENT
    assert parts[2].get_filename() == "scan.bin"


async def test_subject_kept_when_not_neutral(
    tmp_path: Path, recipient: tuple[Issued, Path, Path]
) -> None:
    ann, cert_path, key_path = recipient
    directory = SmimeDirectory(tmp_path / "data", SmimeConfig())
    data = b"Subject: hello there\r\nFrom: a@clinic.example\r\nTo: ann@mail.example\r\n\r\nhi\r\n"
    out = await SmimeHandler(directory, SmimeConfig()).render(
        Method("smime", key=ann.fingerprint), queued(data), data, [RCPT]
    )
    assert isinstance(out, Outgoing)
    outer = email.message_from_bytes(out.data, policy=email.policy.default)
    assert outer["Subject"] == "hello there"
    inner = decrypt(out.data, cert_path, key_path)
    # No Content-Type in the original: the inner entity says what the default was.
    assert inner.startswith(b"Content-Type: text/plain; charset=us-ascii\r\n")
    assert inner.endswith(b"\r\n\r\nhi\r\n")


async def test_large_message_is_encrypted_too(
    tmp_path: Path, recipient: tuple[Issued, Path, Path]
) -> None:
    ann, cert_path, key_path = recipient
    directory = SmimeDirectory(tmp_path / "data", SmimeConfig())
    body = b"".join(b"line %d of the report\r\n" % i for i in range(100_000))
    data = b"Subject: big\r\nFrom: a@clinic.example\r\n\r\n" + body
    out = await SmimeHandler(directory, SmimeConfig()).render(
        Method("smime", key=ann.fingerprint), queued(data), data, [RCPT]
    )
    assert isinstance(out, Outgoing)
    assert decrypt(out.data, cert_path, key_path).endswith(body)


async def test_gone_or_invalid_certificate_is_a_temporary_failure(
    tmp_path: Path, recipient: tuple[Issued, Path, Path]
) -> None:
    ann, _, _ = recipient
    directory = SmimeDirectory(tmp_path / "data", SmimeConfig())
    handler = SmimeHandler(directory, SmimeConfig())
    data = original()
    # A certificate the store never had.
    out = await handler.render(Method("smime", key="00" * 32), queued(data), data, [RCPT])
    assert isinstance(out, LocalOutcome) and out.status == "transient"
    assert out.text.startswith("4.7.0")
    # Another recipient than the certificate's.
    out = await handler.render(
        Method("smime", key=ann.fingerprint), queued(data), data, ["bo@mail.example"]
    )
    assert isinstance(out, LocalOutcome) and out.status == "transient"
    # Two recipients in one copy: refused (each copy is for one recipient).
    out = await handler.render(
        Method("smime", key=ann.fingerprint), queued(data), data, [RCPT, "bo@mail.example"]
    )
    assert isinstance(out, LocalOutcome) and out.status == "transient"
    # Removed after the choice was made.
    CertStore(tmp_path / "data").remove([ann.fingerprint])
    out = await handler.render(Method("smime", key=ann.fingerprint), queued(data), data, [RCPT])
    assert isinstance(out, LocalOutcome) and out.status == "transient"
    assert out.code is None and "4.7.0" in out.text


async def test_expired_since_choice_is_a_temporary_failure(tmp_path: Path) -> None:
    # Stored while valid, expired by the time the copy is made.
    expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
    soon = issue(RCPT, key=rsa_key(2048, 8), not_after=expiry)
    CertStore(tmp_path).add(soon.cert, "import")
    directory = SmimeDirectory(tmp_path, SmimeConfig())
    assert directory.cert_for(RCPT) == soon.fingerprint
    while time.time() <= expiry.timestamp() + 1:
        await asyncio.sleep(0.2)
    data = original()
    out = await SmimeHandler(directory, SmimeConfig()).render(
        Method("smime", key=soon.fingerprint), queued(data), data, [RCPT]
    )
    assert isinstance(out, LocalOutcome) and out.status == "transient"
    assert directory.cert_for(RCPT) is None


def test_inner_and_outer_split_headers() -> None:
    data = (
        b"Received: from x\r\n\tby y\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain;\r\n charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"Bcc: secret@clinic.example\r\n"
        b"From: a@clinic.example\r\n"
        b"\r\n"
        b"body\r\n"
    )
    outer = outer_fields(data, "Sicher: Nachricht \u00fcber Befund")
    assert b"Received: from x\r\n\tby y\r\n" in outer
    assert b"Bcc" not in outer and b"Content-" not in outer and b"MIME-Version" not in outer
    assert b"Subject: =?utf-8?" in outer and b"Gr=C3" not in outer
    subject = email.message_from_bytes(outer + b"\r\n", policy=email.policy.default)["Subject"]
    assert subject == "Sicher: Nachricht \u00fcber Befund"
    inner = inner_entity(data)
    assert inner == (
        b"Content-Type: text/plain;\r\n charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"From: a@clinic.example\r\n"
        b"\r\n"
        b"body\r\n"
    )
    # A neutral subject is added even when the original had none.
    assert b"Subject: Secure message\r\n" in outer_fields(b"From: a@x\r\n\r\nhi", NEUTRAL)
    # Bare LF input is put in canonical form (CRLF) inside.
    assert inner_entity(b"Subject: s\n\nline1\nline2\n").endswith(b"\r\n\r\nline1\r\nline2\r\n")
