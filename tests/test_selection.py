"""The per-recipient method choice for messages that must be encrypted.

The directories here are in-memory tables of what the real key stores would
answer; the stores themselves, the TLS policy and the handlers are tested
against real peers in their own suites and end to end in test_encryption_e2e.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from gateway.config import EncryptionConfig
from gateway.message import ClientInfo, Envelope, QueuedMessage, RecipientStatus
from gateway.outbound.methods import MethodStage, strip_control_headers
from gateway.outbound.selection import Selector, listed, sender_matches
from policies.decision import Decision, Finding, RequireEncryption


@dataclass(frozen=True)
class Facts:
    verifiable: bool
    source: str | None


class Table:
    """Answers lookups from dicts: address -> fingerprint, domain -> TLS facts."""

    def __init__(
        self,
        certs: dict[str, str] | None = None,
        keys: dict[str, str] | None = None,
        tls: dict[str, str] | None = None,
    ) -> None:
        self.certs = certs or {}
        self.keys = keys or {}
        self.tls = tls or {}
        self.key_lookups: list[str] = []

    def cert_for(self, address: str) -> str | None:
        return self.certs.get(address)

    async def key_for(self, address: str) -> str | None:
        self.key_lookups.append(address)
        return self.keys.get(address)

    async def domain(self, domain: str) -> Facts:
        source = self.tls.get(domain)
        return Facts(source is not None, source)


def message(
    decision: Decision, rcpts: tuple[str, ...], sender: str = "dr@clinic.example"
) -> QueuedMessage:
    env = Envelope(
        mail_from=sender, rcpt_to=rcpts, received_at=time.time(), client=ClientInfo("127.0.0.1")
    )
    return QueuedMessage(
        id="01SELECTIONTEST0000",
        envelope=env,
        size=100,
        recipients=tuple(RecipientStatus(r) for r in rcpts),
        next_attempt=0.0,
        meta={"decision": decision.to_json()},
    )


PHI = Decision("phi", actions=(RequireEncryption(),))
PHI_SUBJECT = Decision(
    "phi",
    findings=(Finding("us-ssn", "identifier", "subject", "***-**-1234", 1.0, "identifier"),),
    actions=(RequireEncryption("message-level"),),
)
RAW = b"From: dr@clinic.example\r\nSubject: x\r\n\r\nbody\r\n"


def stage(table: Table, cfg: EncryptionConfig | None = None, portal: bool = True) -> MethodStage:
    selector = Selector(
        cfg or EncryptionConfig(), tls_policy=table, smime=table, pgp=table, portal=portal
    )
    return MethodStage(selector=selector)


async def test_each_recipient_gets_the_best_method_it_can_receive() -> None:
    table = Table(
        certs={"a@smime.example": "C1"},
        keys={"b@pgp.example": "P1", "a@smime.example": "P2"},
        tls={"partner.example": "mta-sts"},
    )
    rcpts = ("a@smime.example", "b@pgp.example", "c@partner.example", "d@gmail.com", "e@x.example")
    plan = await stage(table).plan(message(PHI, rcpts), RAW, rcpts)
    got = {r: (p.method.name, p.method.tls, p.method.key) for r, p in plan.items()}
    assert got == {
        "a@smime.example": ("smime", "opportunistic", "C1"),
        "b@pgp.example": ("pgp", "opportunistic", "P1"),
        "c@partner.example": ("smtp", "verified", None),
        "d@gmail.com": ("portal", "opportunistic", None),
        "e@x.example": ("portal", "opportunistic", None),
    }
    assert "mta-sts" in plan["c@partner.example"].reason
    # S/MIME won first: no OpenPGP lookup was needed for that recipient.
    assert "a@smime.example" not in table.key_lookups
    # A consumer mailbox is never trusted with PHI over TLS, whatever its MX offers.
    assert "not trusted" in plan["d@gmail.com"].reason


async def test_message_level_policy_skips_tls_and_neutralises_the_subject() -> None:
    table = Table(keys={"b@pgp.example": "P1"}, tls={"partner.example": "dane"})
    rcpts = ("b@pgp.example", "c@partner.example")
    plan = await stage(table).plan(message(PHI_SUBJECT, rcpts), RAW, rcpts)
    assert plan["b@pgp.example"].method.subject == "Secure message"
    assert plan["c@partner.example"].method.name == "portal"
    assert plan["c@partner.example"].method.subject == "Secure message"
    assert "message-level" in plan["c@partner.example"].reason


async def test_preference_order_is_the_admins() -> None:
    table = Table(certs={"a@both.example": "C1"}, keys={"a@both.example": "P1"})
    cfg = EncryptionConfig(preference=["pgp", "smime", "portal"])
    plan = await stage(table, cfg).plan(message(PHI, ("a@both.example",)), RAW, ["a@both.example"])
    assert plan["a@both.example"].method.name == "pgp"


async def test_tls_only_sender_is_held_rather_than_sent_to_the_portal() -> None:
    table = Table(tls={"partner.example": "policy"})
    cfg = EncryptionConfig(tls_only_senders=["@billing.clinic.example"])
    rcpts = ("a@partner.example", "b@other.example")
    msg = message(PHI, rcpts, sender="statements@billing.clinic.example")
    plan = await stage(table, cfg).plan(msg, RAW, rcpts)
    assert plan["a@partner.example"].method.name == "smtp"
    assert plan["b@other.example"].method.name == "hold"
    assert "TLS-only" in plan["b@other.example"].reason
    assert stage(table, cfg).fallback(msg, plan["a@partner.example"].method) is None


async def test_without_a_portal_nothing_fits_and_the_copy_is_held() -> None:
    plan = await stage(Table(), portal=False).plan(
        message(PHI, ("a@x.example",)), RAW, ["a@x.example"]
    )
    held = plan["a@x.example"].method
    assert held.name == "hold"
    out = await stage(Table(), portal=False).render(
        held, message(PHI, ("a@x.example",)), RAW, ["a@x.example"]
    )
    assert out.status == "transient"  # type: ignore[union-attr]
    assert out.text.startswith("4.7.0 Held")  # type: ignore[union-attr]
    assert "no S/MIME certificate" in out.text  # type: ignore[union-attr]


async def test_verified_tls_failure_falls_back_to_the_portal() -> None:
    table = Table(tls={"partner.example": "mta-sts"})
    msg = message(PHI, ("a@partner.example",))
    s = stage(table)
    plan = await s.plan(msg, RAW, ["a@partner.example"])
    fallback = s.fallback(msg, plan["a@partner.example"].method)
    assert fallback is not None and fallback.method.name == "portal"


async def test_already_encrypted_mail_passes_through() -> None:
    sealed = (
        b"From: dr@clinic.example\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"\r\n'
        b"\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n"
        b"x\r\n-----END PGP MESSAGE-----\r\n--b--\r\n"
    )
    plan = await stage(Table()).plan(message(PHI, ("a@x.example",)), sealed, ["a@x.example"])
    assert plan["a@x.example"].method.name == "smtp"
    assert "already encrypted" in plan["a@x.example"].reason


def test_control_headers_are_removed_and_the_rest_kept() -> None:
    raw = (
        b"From: a@b.example\r\nX-Sealgate-Expires: 7d\r\nX-Sealgate-Read-Receipt: yes\r\n"
        b"  continued\r\nSubject: hi\r\n\r\nX-Sealgate-Expires: in the body stays\r\n"
    )
    assert strip_control_headers(raw) == (
        b"From: a@b.example\r\nSubject: hi\r\n\r\nX-Sealgate-Expires: in the body stays\r\n"
    )
    plain = b"From: a@b.example\r\n\r\nbody"
    assert strip_control_headers(plain) is plain


@pytest.mark.parametrize(
    ("domain", "entries", "expected"),
    [
        ("gmail.com", ["gmail.com"], True),
        ("mail.gmail.com", ["gmail.com"], False),
        ("mail.corp.example", [".corp.example"], True),
        ("corp.example", [".corp.example"], False),
    ],
)
def test_domain_lists(domain: str, entries: list[str], expected: bool) -> None:
    assert listed(domain, entries) is expected


def test_sender_patterns() -> None:
    assert sender_matches("A@Billing.Example", ["@billing.example"])
    assert sender_matches("a@billing.example", ["a@billing.example"])
    assert not sender_matches("a@other.example", ["@billing.example"])
    assert sender_matches("", ["*"])
