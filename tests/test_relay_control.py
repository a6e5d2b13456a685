"""Who may relay: accounts, connectors (network, client certificate), M365 tenant pinning.

The rules are unit-tested as pure functions, then end to end against a running
server: each scenario checks the SMTP reply and what did (or did not) reach the spool.
"""

from __future__ import annotations

import functools
import hashlib
import smtplib
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from argon2 import PasswordHasher
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.config import ClientCert, Connector, SmtpConfig
from gateway.inbound import relay
from tests.test_inbound_helpers import MESSAGE, in_thread, running_gateway, smtp_client

TENANT = "0a1b2c3d-0000-4000-8000-000000000001"
OTHER_TENANT = "ffffffff-0000-4000-8000-000000000002"


def _der(cert: trustme.LeafCert) -> bytes:
    pem = cert.cert_chain_pems[0].bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


# --- pure rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "address", "expected"),
    [
        (["*"], "anyone@anywhere.example", True),
        (["@clinic.example"], "Dr.Who@Clinic.Example", True),
        (["@clinic.example"], "a@sub.clinic.example", False),  # subdomains are not implied
        (["@clinic.example"], "a@clinic.example.evil", False),
        (["billing@clinic.example"], "billing@clinic.example", True),
        (["billing@clinic.example"], "other@clinic.example", False),
        (["@a.example", "x@b.example"], "x@b.example", True),
        (["@clinic.example"], "clinic.example", False),
    ],
)
def test_sender_patterns(patterns: list[str], address: str, expected: bool) -> None:
    assert relay.sender_matches(patterns, address) is expected


def test_connector_needs_network_and_certificate(tls_ca: trustme.CA) -> None:
    good = tls_ca.issue_cert("upstream.test", "relay.upstream.test")
    other = tls_ca.issue_cert("other.test")
    by_net = Connector.model_validate({"name": "lan", "networks": ["192.0.2.0/24"]})
    by_cert = Connector.model_validate(
        {
            "name": "m365",
            "networks": ["198.51.100.0/24"],
            "client_cert": {"subject": "RELAY.upstream.test"},
        }
    )
    pinned = Connector.model_validate(
        {
            "name": "pinned",
            "networks": ["0.0.0.0/0"],
            "client_cert": {"fingerprint_sha256": hashlib.sha256(_der(good)).hexdigest()},
        }
    )
    conns = [by_net, by_cert]
    assert relay.find_connector(conns, "192.0.2.7", None) is by_net
    assert relay.find_connector(conns, "::ffff:192.0.2.7", None) is by_net  # dual-stack socket
    assert relay.find_connector(conns, "203.0.113.1", _der(good)) is None
    assert relay.find_connector(conns, "198.51.100.9", None) is None
    assert relay.find_connector(conns, "198.51.100.9", _der(other)) is None
    assert relay.find_connector(conns, "198.51.100.9", _der(good)) is by_cert  # SAN, any case
    assert relay.find_connector([pinned], "203.0.113.1", _der(good)) is pinned
    assert relay.find_connector([pinned], "203.0.113.1", _der(other)) is None
    assert relay.find_connector(conns, "not an ip", None) is None


def test_certificate_rule_with_both_criteria_needs_both(tls_ca: trustme.CA) -> None:
    cert = tls_ca.issue_cert("upstream.test")
    fp = hashlib.sha256(_der(cert)).hexdigest()
    assert relay.cert_matches(
        ClientCert(subject="upstream.test", fingerprint_sha256=fp), _der(cert)
    )
    assert not relay.cert_matches(
        ClientCert(subject="other.test", fingerprint_sha256=fp), _der(cert)
    )
    assert not relay.cert_matches(ClientCert(subject="upstream.test"), b"not a certificate")


def test_tenant_pinning_rule() -> None:
    m365 = Connector.model_validate(
        {"name": "m365", "networks": ["192.0.2.0/24"], "m365_tenant_ids": [TENANT]}
    )
    plain = Connector.model_validate({"name": "lan", "networks": ["192.0.2.0/24"]})
    assert relay.tenant_allowed(m365, [TENANT.upper()])
    assert not relay.tenant_allowed(m365, [])
    assert not relay.tenant_allowed(m365, [OTHER_TENANT])
    assert not relay.tenant_allowed(m365, [TENANT, OTHER_TENANT])  # a forged second stamp
    assert relay.tenant_allowed(plain, [])
    assert relay.tenant_allowed(None, [])  # authenticated accounts are not M365 connectors


def test_authority_decisions() -> None:
    cfg = SmtpConfig.model_validate(
        {
            "users": [
                {
                    "username": "app1",
                    "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
                    "allowed_senders": ["@clinic.example"],
                }
            ],
            "connectors": [
                {
                    "name": "lan",
                    "networks": ["192.0.2.0/24"],
                    "allowed_senders": ["x@clinic.example"],
                }
            ],
        }
    )
    policy = relay.RelayPolicy(cfg)

    def decide(**kw: Any) -> relay.Authority:
        args: dict[str, Any] = {"ip": "203.0.113.5", "auth_user": None, "cert_der": None}
        args.update(kw)
        return policy.authority(**args)

    ok = decide(auth_user="app1", mail_from="a@clinic.example")
    assert ok.allowed and ok.name == "app1"
    assert decide(auth_user="app1", mail_from="").allowed  # bounces from an account
    bad = decide(auth_user="app1", mail_from="a@elsewhere.example")
    assert not bad.allowed and bad.reply == relay.SENDER_NOT_ALLOWED_USER
    assert decide(auth_user="ghost", mail_from="a@clinic.example").reply == relay.RELAY_DENIED
    lan = decide(ip="192.0.2.9", mail_from="x@clinic.example")
    assert lan.allowed and lan.name == "lan"
    assert decide(ip="192.0.2.9", mail_from="y@clinic.example").reply == (
        relay.SENDER_NOT_ALLOWED_CONNECTOR
    )
    stranger = decide(mail_from="")
    assert not stranger.allowed and stranger.reply is None  # refused at RCPT


# --- end to end ------------------------------------------------------------------------


def _attempt(port: int, sender: str, rcpt: str, *, source: str | None = None, **tls: Any) -> Any:
    """MAIL, RCPT and (if both pass) DATA; returns the first non-2xx reply or the final one."""
    with smtp_client(port, source) as c:
        c.ehlo()
        if tls.get("context") is not None:
            c.starttls(context=tls["context"])
            c.ehlo()
        if tls.get("login"):
            c.login(*tls["login"])
        code, text = c.mail(sender)
        if code != 250:
            return code, text
        code, text = c.rcpt(rcpt)
        if code != 250:
            return code, text
        return c.data(tls.get("message", MESSAGE))


async def test_open_relay_is_refused(tmp_path: Path, tls_ca: trustme.CA) -> None:
    async with running_gateway(tmp_path, tls_ca) as gw:
        for sender in ("app@clinic.example", "<>"):
            reply = await in_thread(functools.partial(_attempt, gw.port, sender, "pat@example.net"))
            assert reply == (550, b"5.7.1 Relaying denied")
        # Not even over TLS: encryption is not authorisation.
        reply = await in_thread(
            lambda: _attempt(
                gw.port, "a@clinic.example", "p@example.net", context=gw.client_context()
            )
        )
        assert reply == (550, b"5.7.1 Relaying denied")
        assert gw.messages() == []


async def test_account_may_send_only_from_its_addresses(tmp_path: Path, tls_ca: trustme.CA) -> None:
    users = [
        {
            "username": "ehr",
            "password_hash": PasswordHasher().hash("s3cret pass"),
            "allowed_senders": ["@clinic.example", "billing@partner.example"],
        }
    ]
    async with running_gateway(tmp_path, tls_ca, users=users) as gw:
        tls: dict[str, Any] = {"context": gw.client_context(), "login": ("ehr", "s3cret pass")}
        for sender in ("nurse@clinic.example", "billing@partner.example", "<>"):
            code, _ = await in_thread(
                functools.partial(_attempt, gw.port, sender, "pat@example.net", **tls)
            )
            assert code == 250
        for sender in ("ceo@partner.example", "a@clinic.example.evil"):
            reply = await in_thread(functools.partial(_attempt, gw.port, sender, "p@ex.net", **tls))
            assert reply == (553, b"5.7.1 Sender address not allowed for this account")
        msgs = gw.messages()
        assert [m.envelope.mail_from for m in msgs] == [
            "nurse@clinic.example",
            "billing@partner.example",
            "",
        ]
        assert {m.envelope.client.auth_user for m in msgs} == {"ehr"}
        assert b"with ESMTPSA" in await gw.body(msgs[0])

        def wrong_password() -> Any:
            with smtp_client(gw.port) as c:
                c.ehlo()
                c.starttls(context=gw.client_context())
                c.ehlo()
                with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                    c.login("ehr", "guess")
                return err.value.smtp_code, err.value.smtp_error

        assert await in_thread(wrong_password) == (
            535,
            b"5.7.8 Authentication credentials invalid",
        )


async def test_connector_by_network(tmp_path: Path, tls_ca: trustme.CA) -> None:
    connectors = [
        {"name": "ehr", "networks": ["127.0.0.5/32"], "allowed_senders": ["@clinic.example"]}
    ]
    async with running_gateway(tmp_path, tls_ca, connectors=connectors) as gw:
        ok = await in_thread(
            lambda: _attempt(gw.port, "a@clinic.example", "p@example.net", source="127.0.0.5")
        )
        assert ok[0] == 250
        outsider = await in_thread(
            lambda: _attempt(gw.port, "a@clinic.example", "p@example.net", source="127.0.0.6")
        )
        assert outsider == (550, b"5.7.1 Relaying denied")
        spoofed = await in_thread(
            lambda: _attempt(gw.port, "a@bank.example", "p@example.net", source="127.0.0.5")
        )
        assert spoofed == (553, b"5.7.1 Sender address not allowed for this connection")
        (msg,) = gw.messages()
        assert msg.envelope.client.connector == "ehr"
        assert msg.envelope.client.ip == "127.0.0.5"


async def test_connector_by_client_certificate(
    tmp_path: Path, tls_ca: trustme.CA, tls_ca_file: Path
) -> None:
    upstream = tls_ca.issue_cert("relay.upstream.test")
    impostor = tls_ca.issue_cert("impostor.test")
    connectors = [
        {
            "name": "upstream",
            "networks": ["127.0.0.0/8"],
            "client_cert": {"subject": "relay.upstream.test"},
        },
        {
            "name": "pinned",
            "networks": ["127.0.0.0/8"],
            "client_cert": {"fingerprint_sha256": hashlib.sha256(_der(impostor)).hexdigest()},
            "allowed_senders": ["@pinned.example"],
        },
    ]
    async with running_gateway(
        tmp_path, tls_ca, connectors=connectors, client_ca=tls_ca_file
    ) as gw:

        def send(cert: trustme.LeafCert | None, tls: bool = True) -> Any:
            ctx = gw.client_context(cert) if tls else None
            return _attempt(gw.port, "a@pinned.example", "p@example.net", context=ctx)

        assert (await in_thread(lambda: send(upstream)))[0] == 250
        assert (await in_thread(lambda: send(impostor)))[0] == 250  # matched by fingerprint
        assert await in_thread(lambda: send(None)) == (550, b"5.7.1 Relaying denied")
        assert await in_thread(lambda: send(None, tls=False)) == (550, b"5.7.1 Relaying denied")
        assert [m.envelope.client.connector for m in gw.messages()] == ["upstream", "pinned"]


async def test_untrusted_client_certificate_fails_the_handshake(
    tmp_path: Path, tls_ca: trustme.CA, tls_ca_file: Path
) -> None:
    rogue = trustme.CA().issue_cert("relay.upstream.test")  # right name, wrong issuer
    connectors = [
        {
            "name": "upstream",
            "networks": ["127.0.0.0/8"],
            "client_cert": {"subject": "relay.upstream.test"},
        }
    ]
    async with running_gateway(
        tmp_path, tls_ca, connectors=connectors, client_ca=tls_ca_file
    ) as gw:

        def send() -> Any:
            return _attempt(
                gw.port, "a@x.example", "p@example.net", context=gw.client_context(rogue)
            )

        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            await in_thread(send)
        assert gw.messages() == []


def _tenant_message(*tenants: str) -> bytes:
    stamps = b"".join(b"X-MS-Exchange-CrossTenant-Id: " + t.encode() + b"\r\n" for t in tenants)
    return stamps + MESSAGE


async def test_m365_tenant_pinning(tmp_path: Path, tls_ca: trustme.CA) -> None:
    connectors = [{"name": "m365", "networks": ["127.0.0.0/8"], "m365_tenant_ids": [TENANT]}]
    async with running_gateway(tmp_path, tls_ca, connectors=connectors) as gw:
        refused = (550, b"5.7.1 Message from an unrecognised Microsoft 365 tenant")
        for message in (
            MESSAGE,
            _tenant_message(OTHER_TENANT),
            _tenant_message(OTHER_TENANT, TENANT),
        ):
            reply = await in_thread(
                functools.partial(
                    _attempt, gw.port, "a@clinic.example", "p@ex.net", message=message
                )
            )
            assert reply == refused
        assert gw.messages() == []
        ok = await in_thread(
            lambda: _attempt(
                gw.port, "a@clinic.example", "p@ex.net", message=_tenant_message(TENANT.upper())
            )
        )
        assert ok[0] == 250
        assert len(gw.messages()) == 1
