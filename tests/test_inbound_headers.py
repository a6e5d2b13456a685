"""The pure pieces of DATA handling: header scanning, address syntax, the Received field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.inbound import handler


def test_header_facts_read_only_the_header_block() -> None:
    data = (
        b"Received: from a.example\r\n\tby b.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"RECEIVED: from c.example by d.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"X-MS-Exchange-CrossTenant-Id:\r\n 0A1B2C3D-0000-4000-8000-000000000001 \r\n"
        b"Received : not a field name (space before the colon)\r\n"
        b"Subject: x\r\n"
        b"\r\n"
        b"Received: from the.body.example\r\n"
        b"X-MS-Exchange-CrossTenant-Id: ffffffff-0000-4000-8000-000000000002\r\n"
    )
    facts = handler.header_facts(data)
    assert facts.received == 2
    assert facts.tenant_ids == ("0A1B2C3D-0000-4000-8000-000000000001",)
    assert handler.header_facts(b"\r\nReceived: body only\r\n").received == 0
    assert handler.header_facts(b"Received: x\r\nReceived: y\r\n").received == 2  # no body


@pytest.mark.parametrize(
    ("address", "smtputf8", "recipient", "problem"),
    [
        ("a@example.net", False, True, None),
        ("a.b+tag@sub.example.net.", False, True, None),
        ('"quoted local"@example.net', False, True, None),
        ("a@[192.0.2.1]", False, True, None),
        ("a@[IPv6:2001:db8::1]", False, True, None),
        ("a@[IPv6:192.0.2.1]", False, True, handler.BAD_RECIPIENT),
        ("a@[2001:db8::1]", False, True, handler.BAD_RECIPIENT),
        ("a@exa_mple.net", False, False, handler.BAD_SENDER),
        ("a@" + "x" * 64 + ".net", False, True, handler.BAD_RECIPIENT),
        ("a@example..net", False, True, handler.BAD_RECIPIENT),
        ("@example.net", False, True, handler.BAD_RECIPIENT),
        ("zoë@exämple.net", False, True, handler.NEEDS_SMTPUTF8),
        ("zoë@exämple.net", True, True, None),
        ("a\udcff@example.net", True, True, handler.BAD_RECIPIENT),  # undecodable byte
    ],
)
def test_address_syntax(address: str, smtputf8: bool, recipient: bool, problem: str | None) -> None:
    assert handler.address_problem(address, smtputf8, recipient=recipient) == problem


def test_received_field() -> None:
    field = handler.received_header(
        helo="mail.clinic.example",
        ip="2001:db8::25",
        hostname="gw.example.org",
        protocol=handler.with_protocol(extended=True, tls=True, authenticated=True, smtputf8=False),
        tls="TLSv1.3 TLS_AES_128_GCM_SHA256",
        trace_id="abc.1",
        recipients=["pat@example.net"],
        when=datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC),
    )
    assert field == (
        b"Received: from mail.clinic.example ([IPv6:2001:db8::25])\r\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n"
        b"\tby gw.example.org with ESMTPSA id abc.1\r\n"
        b"\tfor <pat@example.net>;\r\n"
        b"\tFri, 01 Mar 2024 12:00:00 +0000\r\n"
    )


@pytest.mark.parametrize(
    ("flags", "keyword"),
    [
        ({"extended": False, "tls": False, "authenticated": False, "smtputf8": False}, "SMTP"),
        ({"extended": True, "tls": False, "authenticated": False, "smtputf8": False}, "ESMTP"),
        ({"extended": True, "tls": True, "authenticated": False, "smtputf8": False}, "ESMTPS"),
        ({"extended": True, "tls": False, "authenticated": True, "smtputf8": False}, "ESMTPA"),
        ({"extended": True, "tls": True, "authenticated": True, "smtputf8": True}, "UTF8SMTPSA"),
    ],
)
def test_with_protocol_keywords(flags: dict[str, bool], keyword: str) -> None:
    assert handler.with_protocol(**flags) == keyword
