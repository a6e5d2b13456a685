"""RFC 3464 delivery status notifications, parsed back with the email package."""

from __future__ import annotations

import email
import email.policy
import time
from email.message import EmailMessage, Message

from gateway.message import ClientInfo, Envelope, RecipientStatus
from gateway.outbound.dsn import (
    build_dsn,
    enhanced_status,
    header_block,
    recipient_entry,
)

ORIGINAL = (
    b"Received: from app [192.0.2.10] by gw.example.org; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    b"From: Dr Who <doctor@clinic.example>\r\n"
    b"To: patient@example.net\r\n"
    b"Subject: Lab results for J. Smith\r\n"
    b"Message-ID: <abc123@clinic.example>\r\n"
    b"\r\n"
    b"SECRET BODY: diagnosis follows\r\n"
)


def _envelope(mail_from: str = "doctor@clinic.example") -> Envelope:
    return Envelope(
        mail_from=mail_from,
        rcpt_to=("patient@example.net", "other@example.org"),
        received_at=1_700_000_000.0,
        client=ClientInfo(ip="192.0.2.10"),
    )


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _status_blocks(report: EmailMessage) -> list[Message]:
    parts = list(report.iter_parts())
    status = parts[1]
    assert status.get_content_type() == "message/delivery-status"
    payload = status.get_payload()
    assert isinstance(payload, list)
    return [block for block in payload if isinstance(block, Message)]


def test_failed_report_structure() -> None:
    """A bounce is multipart/report with text, delivery-status and headers only."""
    failed = RecipientStatus(
        "patient@example.net",
        attempts=1,
        last_code=550,
        last_reply="5.1.1 <patient@example.net>: user unknown",
        remote="mx1.example.net [127.0.0.2]:25",
    )
    now = time.time()
    dsn = build_dsn(
        hostname="gw.example.org",
        queue_id="Q123",
        envelope=_envelope(),
        recipients=[recipient_entry(failed, "failed", at=now)],
        original_headers=ORIGINAL,
        now=now,
    )
    assert not dsn.utf8
    assert b"SECRET BODY" not in dsn.data
    assert b"\n" not in dsn.data.replace(b"\r\n", b"")  # CRLF only

    report = _parse(dsn.data)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["From"].addresses[0].addr_spec == "MAILER-DAEMON@gw.example.org"
    assert report["To"].addresses[0].addr_spec == "doctor@clinic.example"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["Date"].datetime is not None
    assert report["Message-ID"].endswith("@gw.example.org>")
    assert report["In-Reply-To"] == "<abc123@clinic.example>"
    assert "Lab results" not in report["Subject"]

    parts = list(report.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    human = parts[0].get_content()
    assert "patient@example.net" in human
    assert "550 5.1.1" in human

    per_message, per_rcpt = _status_blocks(report)
    assert per_message["Reporting-MTA"] == "dns; gw.example.org"
    assert per_message["Arrival-Date"]
    assert per_rcpt["Final-Recipient"] == "rfc822; patient@example.net"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; mx1.example.net"
    assert per_rcpt["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert per_rcpt["Last-Attempt-Date"]

    headers = parts[2].get_payload(decode=True)
    assert isinstance(headers, bytes)
    assert b"Subject: Lab results" in headers  # the sender's own headers, for matching
    assert b"SECRET BODY" not in headers


def test_expired_and_delayed() -> None:
    """Expiry reports 5.4.7; a delay warning says delayed with Will-Retry-Until."""
    waiting = RecipientStatus(
        "other@example.org", attempts=3, last_code=None, last_reply="4.4.1 Connection refused"
    )
    now = time.time()
    expired = build_dsn(
        hostname="gw.example.org",
        queue_id="Q1",
        envelope=_envelope(),
        recipients=[recipient_entry(waiting, "failed", expired=True, at=now)],
        original_headers=ORIGINAL,
        now=now,
    )
    (_, rcpt) = _status_blocks(_parse(expired.data))
    assert rcpt["Status"] == "5.4.7"
    assert rcpt["Diagnostic-Code"] == "X-Sealgate; 4.4.1 Connection refused"
    assert "Remote-MTA" not in rcpt

    delayed = build_dsn(
        hostname="gw.example.org",
        queue_id="Q1",
        envelope=_envelope(),
        recipients=[recipient_entry(waiting, "delayed", at=now)],
        original_headers=ORIGINAL,
        now=now,
        retry_until=now + 86400,
    )
    report = _parse(delayed.data)
    assert "Delayed" in report["Subject"]
    (_, rcpt) = _status_blocks(report)
    assert rcpt["Action"] == "delayed"
    assert rcpt["Status"] == "4.4.1"
    assert rcpt["Will-Retry-Until"]


def test_utf8_sender_uses_global_types() -> None:
    """An internationalised address makes an RFC 6533 report with the utf-8 address type."""
    status = RecipientStatus("pätient@exämple.net", last_code=550, last_reply="5.1.1 unknown")
    now = time.time()
    dsn = build_dsn(
        hostname="gw.example.org",
        queue_id="Q2",
        envelope=_envelope("dr.müller@clinic.example"),
        recipients=[recipient_entry(status, "failed", at=now)],
        original_headers=ORIGINAL,
        now=now,
    )
    assert dsn.utf8
    report = _parse(dsn.data)
    types = [p.get_content_type() for p in report.iter_parts()]
    assert types[1] == "message/global-delivery-status"
    assert types[2] == "message/global-headers"
    assert "utf-8; pätient@exämple.net".encode() in dsn.data


def test_enhanced_status_mapping() -> None:
    """The reply's enhanced code is used when its class fits the action."""
    assert enhanced_status(550, "5.7.1 rejected", "failed") == "5.7.1"
    assert enhanced_status(550, "mailbox unavailable", "failed") == "5.0.0"
    assert enhanced_status(451, "4.3.0 later", "delayed") == "4.3.0"
    assert enhanced_status(None, "4.4.1 refused", "failed") == "5.4.1"
    assert enhanced_status(451, "4.3.0 later", "failed", expired=True) == "5.4.7"


def test_header_block_cuts_body_and_limits_size() -> None:
    """Only the header section is kept, CRLF-terminated, capped at a line boundary."""
    assert header_block(ORIGINAL).endswith(b"Message-ID: <abc123@clinic.example>\r\n")
    assert header_block(b"From: a@b\nTo: c@d\n\nbody\n") == b"From: a@b\r\nTo: c@d\r\n"
    big = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"x" * 60) for i in range(3000)) + b"\r\nbody"
    cut = header_block(big, limit=4096)
    assert len(cut) <= 4096
    assert cut.endswith(b"\r\n")
    assert b"body" not in cut


def test_reply_text_is_sanitised() -> None:
    """A hostile remote reply cannot inject header lines into the report."""
    evil = RecipientStatus(
        "patient@example.net",
        last_code=550,
        last_reply="5.1.1 nope\r\nX-Injected: yes",
        remote="mx.example.net [127.0.0.2]:25",
    )
    now = time.time()
    dsn = build_dsn(
        hostname="gw.example.org",
        queue_id="Q3",
        envelope=_envelope(),
        recipients=[recipient_entry(evil, "failed", at=now)],
        original_headers=ORIGINAL,
        now=now,
    )
    (_, rcpt) = _status_blocks(_parse(dsn.data))
    assert rcpt["X-Injected"] is None
    assert "X-Injected: yes" in rcpt["Diagnostic-Code"]
