"""Extraction from the MIME structure: headers, charsets, bodies, attached messages, damage."""

from __future__ import annotations

import base64
import binascii
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

import pytest

from policies.extract import Limits, extract
from tests.policies.fixtures.build import make_message
from tests.policies.fixtures.look import all_text, reasons, texts


def test_subject_and_people_headers_become_segments() -> None:
    result = extract(make_message("body", subject="Results for patient 4471"))
    found = {s.location: (s.kind, s.text) for s in result.segments}
    assert found["subject"] == ("subject", "Results for patient 4471")
    assert found["header:from"] == ("header", "Dr Alice <alice@clinic.example>")
    assert found["header:to"] == ("header", "bob@partner.example")
    assert found["body/1 text/plain"] == ("body", "body")


def test_header_map_has_labels_and_gateway_headers() -> None:
    raw = make_message(
        "x",
        headers={
            "Sensitivity": "Company-Confidential",
            "msip_labels": "MSIP_Label_abc_Enabled=true; MSIP_Label_abc_Name=PHI",
            "X-Sealgate-Encrypt": "yes",
            "CC": "carol@clinic.example",
        },
    )
    headers = extract(raw).headers
    assert headers["sensitivity"] == "Company-Confidential"
    assert headers["msip_labels"] == "MSIP_Label_abc_Enabled=true; MSIP_Label_abc_Name=PHI"
    assert headers["x-sealgate-encrypt"] == "yes"
    assert headers["cc"] == "carol@clinic.example"
    assert headers["subject"] == "Test"


def test_rfc2047_headers_in_several_charsets() -> None:
    raw = (
        b"From: =?utf-8?b?SsO2cmc=?= <j@x.example>\r\n"
        b"To: =?iso-2022-jp?b?GyRCJUYlOSVIGyhC?= <t@x.example>\r\n"
        b"Subject: =?iso-8859-1?q?Patient_r=E9sum=E9?= =?windows-1252?q?=93quoted=94?=\r\n"
        b"\r\n"
        b"body\r\n"
    )
    found = texts(extract(raw))
    assert found["subject"] == "Patient résumé\u201cquoted\u201d"
    assert found["header:from"] == "Jörg <j@x.example>"
    assert found["header:to"] == "テスト <t@x.example>"


def test_raw_utf8_and_unknown_charset_in_headers() -> None:
    raw = (
        "Subject: Überweisung für Müller\r\n".encode()
        + b"To: =?x-unknown?q?Caf=C3=A9?= <c@x.example>\r\n"
        + b"\r\nbody\r\n"
    )
    found = texts(extract(raw))
    assert found["subject"] == "Überweisung für Müller"
    assert found["header:to"] == "Café <c@x.example>"


def _single_part(body: bytes, content_type: str, cte: str = "8bit") -> bytes:
    return (
        b"Subject: s\r\nMIME-Version: 1.0\r\n"
        + f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode()
        + body
    )


def test_body_charsets() -> None:
    cases = [
        ("Gr\u00fc\u00dfe Fran\u00e7ois".encode("latin-1"), "text/plain; charset=iso-8859-1"),
        ("\u201cSmart\u201d \u20ac5".encode("cp1252"), "text/plain; charset=windows-1252"),
        ("患者の記録".encode("iso-2022-jp"), "text/plain; charset=iso-2022-jp"),
        ("naïve café".encode(), "text/plain; charset=utf-8"),
    ]
    expected = ["Grüße François", "\u201cSmart\u201d \u20ac5", "患者の記録", "naïve café"]
    for (body, content_type), want in zip(cases, expected, strict=True):
        assert texts(extract(_single_part(body, content_type)))["body/1 text/plain"] == want


def test_unknown_or_wrong_charset_is_still_scanned() -> None:
    unknown = extract(_single_part("SSN 123-45-6789 é".encode(), "text/plain; charset=x-bogus"))
    assert texts(unknown)["body/1 text/plain"] == "SSN 123-45-6789 é"
    # Declared UTF-8 but really cp1252: replacement characters, the digits survive.
    wrong = extract(_single_part(b"MRN 5551234 \xe9t\xe9", "text/plain; charset=utf-8"))
    assert texts(wrong)["body/1 text/plain"].startswith("MRN 5551234 ")
    # A byte-to-byte codec name must not be run as a charset.
    hostile = extract(_single_part(b"eJwLycgsVgCi4pL8ggwA", "text/plain; charset=zlib"))
    assert texts(hostile)["body/1 text/plain"] == "eJwLycgsVgCi4pL8ggwA"


def test_transfer_encodings() -> None:
    qp = _single_part(b"Patient: Jane=\r\n Roe DOB 01/02/1980=3D", "text/plain", "quoted-printable")
    assert texts(extract(qp))["body/1 text/plain"] == "Patient: Jane Roe DOB 01/02/1980="
    # Missing padding and a stray character: decoded leniently.
    b64 = base64.b64encode(b"MRN 77812").rstrip(b"=")
    assert "MRN 77812" in all_text(extract(_single_part(b64 + b"!", "text/plain", "base64")))


def test_format_flowed_lines_are_joined() -> None:
    raw = _single_part(
        b"Patient SSN is 123-45-\r\n6789 ok\r\n", "text/plain; format=flowed; delsp=yes"
    )
    # delsp=yes: the space before the soft break is not part of the text.
    assert texts(extract(raw))["body/1 text/plain"] == "Patient SSN is 123-45-\n6789 ok"
    flowed = _single_part(b"Patient name Jane \r\nRoe\r\n", "text/plain; format=flowed")
    assert texts(extract(flowed))["body/1 text/plain"] == "Patient name Jane Roe"


def test_html_body_and_alternative_both_scanned() -> None:
    raw = make_message("plain part", html="<p>html <b>part</b></p>")
    found = texts(extract(raw))
    assert found["body/1 text/plain"] == "plain part"
    assert found["body/2 text/html"] == "html part"


@pytest.mark.parametrize("encoded", [False, True], ids=["7bit", "base64"])
def test_attached_message_is_walked_recursively(encoded: bool) -> None:
    inner = make_message("inner body SSN 123-45-6789", subject="Fwd: labs")
    outer = EmailMessage()
    outer["Subject"] = "outer"
    outer.set_content("see forwarded")
    if encoded:
        # Bytes make the email package base64 the message/rfc822 part (RFC 2046
        # forbids it, clients do it anyway).
        outer.add_attachment(inner, maintype="message", subtype="rfc822", filename="fwd.eml")
    else:
        parsed = message_from_bytes(inner, policy=default)
        outer.add_attachment(parsed, filename="fwd.eml")
    result = extract(outer.as_bytes())
    found = {s.location: (s.kind, s.text) for s in result.segments}
    assert found["attachment 2 (.eml)/subject"] == ("attachment", "Fwd: labs")
    assert found["attachment 2 (.eml)/body/1 text/plain"] == (
        "attachment",
        "inner body SSN 123-45-6789",
    )
    assert found["attachment 2 (.eml)/header:to"] == ("attachment", "bob@partner.example")
    assert [a.location for a in result.attachments] == ["attachment 2 (.eml)"]


def test_eml_attachment_as_octet_stream_is_parsed() -> None:
    inner = make_message("hidden forwarded text", subject="inner")
    raw = make_message("x", attachments=[("old.eml", inner, "application/octet-stream")])
    found = texts(extract(raw))
    assert found["attachment 2 (.eml)/subject"] == "inner"
    assert "hidden forwarded text" in all_text(extract(raw))


def test_attached_messages_nested_too_deep_are_unscannable() -> None:
    raw = make_message("level 0")
    for level in range(1, 8):
        raw = make_message(f"level {level}", attachments=[(f"m{level}.eml", raw, "message/rfc822")])
    result = extract(raw, Limits(max_depth=3))
    text = all_text(result)
    assert "level 7" in text and "level 4" in text
    assert "level 3" not in text
    assert "limit-exceeded" in reasons(result).values()


def test_preamble_and_epilogue_are_scanned() -> None:
    raw = (
        b"Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"hidden preamble MRN 1234567\r\n--b\r\nContent-Type: text/plain\r\n\r\nvisible\r\n"
        b"--b--\r\nhidden epilogue\r\n"
    )
    found = texts(extract(raw))
    assert found["body/preamble"] == "hidden preamble MRN 1234567"
    assert found["body/epilogue"] == "hidden epilogue"
    assert found["body/1 text/plain"] == "visible"


def test_broken_boundaries_still_scan_the_text() -> None:
    no_parts = (
        b"Subject: s\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=nothere\r\n\r\n"
        b"Patient Jane Roe SSN 123-45-6789\r\n"
    )
    assert "SSN 123-45-6789" in all_text(extract(no_parts))
    unterminated = (
        b"Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\ntruncated part MRN 99812\r\n"
    )
    text = all_text(extract(unterminated))
    assert "first part" in text and "truncated part MRN 99812" in text


def test_malformed_headers_do_not_stop_extraction() -> None:
    raw = (
        b"Subject: =?utf-8?b?!!!notbase64?= x\r\n"
        b'Content-Type: text/plain; charset="unterminated\r\n'
        b"Content-Disposition: attachment; filename*=bogus''%ZZ\r\n"
        b"From: <<<@@@>>>\r\n"
        b"\r\nstill here\r\n"
    )
    result = extract(raw)
    assert "still here" in all_text(result)
    assert "subject" in texts(result)


def test_uuencoded_file_in_body_is_extracted() -> None:
    data = b"Patient,SSN\nJane Roe,123-45-6789\n"
    lines = [binascii.b2a_uu(data[i : i + 45]) for i in range(0, len(data), 45)]
    body = b"see below\r\nbegin 644 list.csv\r\n" + b"".join(lines) + b"`\r\nend\r\nbye\r\n"
    result = extract(_single_part(body, "text/plain"))
    found = texts(result)
    assert found["body/1 text/plain"] == "see below\n\nbye"
    assert (
        found["body/1 text/plain/uuencoded 1 (.csv)/row 2"]
        == "Patient: Jane Roe | SSN: 123-45-6789"
    )


def test_tnef_smime_and_signatures() -> None:
    message = EmailMessage()
    message["Subject"] = "s"
    message.set_content("text")
    message.add_attachment(
        b"\x78\x9f\x3e\x22\x00\x00",
        maintype="application",
        subtype="ms-tnef",
        filename="winmail.dat",
    )
    message.add_attachment(
        b"0\x82\x01\x00" + bytes(20),
        maintype="application",
        subtype="pkcs7-signature",
        filename="smime.p7s",
    )
    message.add_attachment(
        b"0\x82\x02\x00" + bytes(40),
        maintype="application",
        subtype="pkcs7-mime",
        filename="smime.p7m",
        params={"smime-type": "enveloped-data"},
    )
    message.add_attachment(
        b"-----BEGIN PGP MESSAGE-----\n\nhQEMA\n-----END PGP MESSAGE-----\n",
        maintype="application",
        subtype="octet-stream",
        filename="msg.asc",
    )
    found = reasons(extract(message.as_bytes()))
    assert found == {
        "attachment 2 (.dat)": "unsupported-type",
        "attachment 4 (.p7m)": "encrypted-archive",
        "attachment 5 (.asc)": "encrypted-archive",
    }


def test_a_fake_signature_part_is_scanned_not_skipped() -> None:
    raw = make_message(
        "x", attachments=[("sig.p7s", b"Patient SSN 123-45-6789\n", "application/pkcs7-signature")]
    )
    assert "123-45-6789" in all_text(extract(raw))


def test_images_unknown_binaries_and_text_like_files() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    raw = make_message(
        "x",
        attachments=[
            ("scan.png", png, "image/png"),
            ("blob.bin", bytes(range(256)) * 8, "application/octet-stream"),
            ("notes.dat", b"Patient John Smith, MRN 448812\n", "application/octet-stream"),
            ("record.json", b'{"patient": "Jane Roe", "dob": "1980-02-01"}', "application/json"),
            ("fake.txt", png, "text/plain"),
        ],
    )
    result = extract(raw)
    assert reasons(result) == {
        "attachment 2 (.png)": "image-only",
        "attachment 3 (.bin)": "unsupported-type",
        "attachment 6 (.txt)": "image-only",
    }
    found = texts(result)
    assert found["attachment 4 (.dat)"] == "Patient John Smith, MRN 448812"
    assert found["attachment 5 (.json)"] == '{"patient": "Jane Roe", "dob": "1980-02-01"}'
    sizes = {a.filename: a.size for a in result.attachments}
    assert sizes["scan.png"] == len(png)


def test_empty_and_garbage_input_never_raise() -> None:
    for raw in (b"", b"\x00\xff" * 100, b"\r\n\r\n", b"Subject: only headers", b"--\r\n--"):
        result = extract(raw)
        assert isinstance(result.segments, tuple)


def test_headers_only_message_without_mime() -> None:
    result = extract(b"Subject: hello\r\n\r\nplain old body\r\n")
    assert texts(result) == {"subject": "hello", "body/1 text/plain": "plain old body"}


def test_attachments_are_located_by_position_and_type_not_name() -> None:
    raw = make_message(
        "x",
        attachments=[
            ("scan.txt", b"first MRN 1", "text/plain"),
            ("scan.txt", b"second MRN 2", "text/plain"),
        ],
    )
    result = extract(raw)
    assert texts(result)["attachment 2 (.txt)"] == "first MRN 1"
    assert texts(result)["attachment 3 (.txt)"] == "second MRN 2"
    assert [(a.location, a.filename) for a in result.attachments] == [
        ("attachment 2 (.txt)", "scan.txt"),
        ("attachment 3 (.txt)", "scan.txt"),
    ]
