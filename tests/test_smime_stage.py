"""The method stage with the real S/MIME directory and handler: choice, rendering, pass-through."""

from __future__ import annotations

import email
import email.policy
import time
from pathlib import Path

from gateway.config import EncryptionConfig
from gateway.message import ClientInfo, Envelope, QueuedMessage, RecipientStatus
from gateway.outbound.methods import MethodStage, Outgoing
from gateway.outbound.selection import Selector
from gateway.smime import SmimeDirectory, SmimeHandler
from gateway.smime.store import CertStore
from policies.decision import Decision, Finding, RequireEncryption
from tests.smime_certs import issue, openssl, rsa_key

ANN, BO = "ann@mail.example", "bo@mail.example"
SUBJECT = "SSN 219-09-9999 results"
PHI_SUBJECT = Decision(
    "phi",
    findings=(Finding("us-ssn", "identifier", "subject", "***-**-9999", 1.0, "identifier"),),
    actions=(RequireEncryption(),),
)
RAW = (
    f"From: dr@clinic.example\r\nTo: {ANN}\r\nBcc: {BO}\r\nSubject: {SUBJECT}\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nDiagnosis: E11.9\r\n"
).encode()


def queued(rcpts: tuple[str, ...]) -> QueuedMessage:
    env = Envelope("dr@clinic.example", rcpts, time.time(), ClientInfo("127.0.84.1"))
    return QueuedMessage(
        "01SMIMESTAGE0000000",
        env,
        len(RAW),
        tuple(RecipientStatus(r) for r in rcpts),
        0.0,
        meta={"decision": PHI_SUBJECT.to_json()},
    )


def stage(data_dir: Path) -> MethodStage:
    enc = EncryptionConfig(preference=["smime"])
    directory = SmimeDirectory(data_dir, enc.smime)
    selector = Selector(enc, smime=directory)
    return MethodStage({"smime": SmimeHandler(directory, enc.smime)}, selector=selector)


async def test_each_recipient_gets_a_copy_encrypted_to_their_own_certificate(
    tmp_path: Path,
) -> None:
    ann, bo = issue(ANN), issue(BO, key=rsa_key(2048, 12))
    store = CertStore(tmp_path / "data")
    store.add(ann.cert, "import")
    store.add(bo.cert, "import")
    methods = stage(tmp_path / "data")
    msg = queued((ANN, BO))
    plan = await methods.plan(msg, RAW, [ANN, BO])
    assert plan[ANN].method.name == "smime" and plan[ANN].method.key == ann.fingerprint
    assert plan[BO].method.key == bo.fingerprint
    assert plan[ANN].method.subject == "Secure message"
    assert methods.per_recipient(plan[ANN].method)
    for rcpt, who in ((ANN, ann), (BO, bo)):
        out = await methods.render(plan[rcpt].method, msg, RAW, [rcpt])
        assert isinstance(out, Outgoing)
        assert b"219-09-9999" not in out.data and b"E11.9" not in out.data
        assert b"Bcc" not in out.data
        cert_path, key_path = who.write(tmp_path, rcpt)
        inner = openssl(
            "cms", "-decrypt", "-recip", str(cert_path), "-inkey", str(key_path), data=out.data
        )
        parsed = email.message_from_bytes(inner, policy=email.policy.default)
        assert parsed["Subject"] == SUBJECT and parsed["Bcc"] is None
        assert inner.endswith(b"\r\n\r\nDiagnosis: E11.9\r\n")


async def test_no_certificate_means_hold(tmp_path: Path) -> None:
    methods = stage(tmp_path / "data")
    plan = await methods.plan(queued((ANN,)), RAW, [ANN])
    assert plan[ANN].method.name == "hold"


async def test_mail_the_sender_encrypted_passes_untouched(tmp_path: Path) -> None:
    ann = issue(ANN)
    CertStore(tmp_path / "data").add(ann.cert, "import")
    cert_path, _ = ann.write(tmp_path, "ann")
    sealed = b"From: dr@clinic.example\r\nTo: ann@mail.example\r\n" + openssl(
        "cms", "-encrypt", "-aes256", str(cert_path), data=b"Diagnosis: E11.9\r\n"
    )
    methods = stage(tmp_path / "data")
    plan = await methods.plan(queued((ANN,)), sealed, [ANN])
    assert plan[ANN].method.name == "smtp"
    assert "already encrypted" in plan[ANN].reason
    out = await methods.render(plan[ANN].method, queued((ANN,)), sealed, [ANN])
    assert isinstance(out, Outgoing) and out.data == sealed
