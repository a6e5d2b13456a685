"""Extraction from each attachment and body format."""

from __future__ import annotations

import codecs
import datetime
import logging

import pytest

from policies.extract import extract
from tests.policies.fixtures.build import (
    encrypt_pdf,
    make_docx,
    make_message,
    make_odt,
    make_pdf,
    make_pptx,
    make_xlsx,
    make_zip,
    pdf_with_attachment,
)
from tests.policies.fixtures.look import all_text, reasons, rows, texts

# --- HTML ----------------------------------------------------------------------------


def _html(html: str) -> dict[str, str]:
    return texts(extract(make_message(None, html=html)))


def test_hidden_html_text_is_kept() -> None:
    html = """<html><head><title>Visit summary</title>
    <style>p { color: red } .x { display:none }</style></head><body>
    <p>Dear colleague,</p>
    <div style="display:none">Patient SSN 123-45-6789</div>
    <span style="color:#ffffff;background:#ffffff">white text MRN 55120</span>
    <font size="1" style="font-size:1px">tiny DOB 01/02/1980</font>
    <img src="cid:x" alt="X-ray of Jane Roe" title="scan 2024">
    <!-- comment: chart 991 -->
    <!--[if mso]><p>Outlook only: Jane Roe</p><![endif]-->
    </body></html>"""
    body = _html(html)["body/1 text/html"]
    for expected in (
        "Visit summary",
        "Dear colleague,",
        "Patient SSN 123-45-6789",
        "white text MRN 55120",
        "tiny DOB 01/02/1980",
        "X-ray of Jane Roe",
        "scan 2024",
        "comment: chart 991",
        "Outlook only: Jane Roe",
    ):
        assert expected in body
    assert "color: red" not in body


def test_html_data_table_rows_are_row_segments_with_labels() -> None:
    html = """<p>Patients seen today:</p>
    <table><tr><th>Name</th><th>DOB</th><th>MRN</th></tr>
    <tr><td>Jane Roe</td><td>01/02/1980</td><td>448812</td></tr>
    <tr><td>John Smith<td>03/04/1975<td>551203
    </table><p>Regards</p>"""
    result = extract(make_message(None, html=html))
    assert rows(result, "body/1 text/html/table 1/") == [
        "Name | DOB | MRN",
        "Name: Jane Roe | DOB: 01/02/1980 | MRN: 448812",
        "Name: John Smith | DOB: 03/04/1975 | MRN: 551203",
    ]
    body = texts(result)["body/1 text/html"]
    assert body == "Patients seen today:\n\nRegards"
    assert all(s.kind == "body" for s in result.segments if s.location.startswith("body/"))


def test_layout_tables_read_as_running_text() -> None:
    html = """<table><tr><td><table width="600">
      <tr><td><p>Hello Jane,</p><p>Your results are ready.</p></td></tr>
      <tr><td>Clinic footer</td></tr></table></td></tr></table>"""
    result = extract(make_message(None, html=html))
    assert not any(s.is_row for s in result.segments)
    body = texts(result)["body/1 text/html"]
    assert "Hello Jane," in body and "Your results are ready." in body and "Clinic footer" in body


def test_entities_and_broken_markup() -> None:
    html = "<p>SSN&nbsp;123&#45;45&#x2d;6789 &amp; more<p>unclosed <b>bold <i>italic</table></td>"
    body = _html(html)["body/1 text/html"]
    assert "SSN 123-45-6789 & more" in body
    assert "unclosed bold italic" in body


def test_cdata_noscript_and_raw_text_elements() -> None:
    html = (
        "<svg><text><![CDATA[chart for MRN 448812]]></text></svg>"
        "<noscript><p>no <b>script</b> text</p></noscript>"
        "<script>var ssn = '123-45-6789';</script><textarea>typed &amp; kept</textarea>"
        "<style>.x{color:red}</style>"
    )
    body = _html(html)["body/1 text/html"]
    assert "chart for MRN 448812" in body
    assert "no script text" in body
    assert "var ssn = '123-45-6789';" in body
    assert "typed & kept" in body
    assert "color" not in body


# --- PDF -----------------------------------------------------------------------------


def _attach(name: str, data: bytes, content_type: str = "application/octet-stream") -> bytes:
    return make_message("see attached", attachments=[(name, data, content_type)])


def test_pdf_pages_fields_and_properties() -> None:
    pdf = make_pdf(
        ["Patient: Jane Roe\nDOB 01/02/1980", "Page two MRN 448812", None],
        fields={"PatientName": "John Smith"},
        title="Lab report",
    )
    result = extract(_attach("labs.pdf", pdf, "application/pdf"))
    found = texts(result)
    assert found["attachment 2 (.pdf)/page 1"] == "Patient: Jane Roe\nDOB 01/02/1980"
    assert found["attachment 2 (.pdf)/page 2"] == "Page two MRN 448812"
    assert found["attachment 2 (.pdf)/form"] == "PatientName: John Smith"
    assert found["attachment 2 (.pdf)/properties"] == "Title: Lab report"
    assert "attachment 2 (.pdf)/page 3" not in found  # blank page: nothing to scan, nothing hidden
    assert result.unscannable == ()


def test_pdf_scanned_page_is_image_only() -> None:
    pdf = make_pdf(["typed cover page", None], image_pages=[1])
    assert reasons(extract(_attach("scan.pdf", pdf))) == {
        "attachment 2 (.pdf)/page 2": "image-only"
    }


def test_encrypted_pdf() -> None:
    pdf = make_pdf(["secret SSN 123-45-6789"])
    locked = extract(_attach("locked.pdf", encrypt_pdf(pdf, "pw", "owner")))
    assert reasons(locked) == {"attachment 2 (.pdf)": "encrypted-pdf"}
    assert "123-45-6789" not in all_text(locked)
    # Only an owner password (printing/copying restrictions): readable, so read.
    restricted = extract(_attach("restricted.pdf", encrypt_pdf(pdf, "", "owner")))
    assert texts(restricted)["attachment 2 (.pdf)/page 1"] == "secret SSN 123-45-6789"


def test_pdf_embedded_file_is_extracted() -> None:
    pdf = pdf_with_attachment(make_pdf(["cover"]), "list.csv", b"Name,MRN\nJane Roe,448812\n")
    result = extract(_attach("bundle.pdf", pdf))
    assert rows(result, "attachment 2 (.pdf)/embedded 1 (.csv)") == [
        "Name | MRN",
        "Name: Jane Roe | MRN: 448812",
    ]


def test_broken_pdf_is_parse_error() -> None:
    result = extract(_attach("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog garbage"))
    assert reasons(result) == {"attachment 2 (.pdf)": "parse-error"}


# --- Office ------------------------------------------------------------------------


def test_docx_body_tables_headers_comments_and_deleted_text() -> None:
    docx = make_docx(
        ["Discharge summary", "Patient: Jane\u200b Roe"],
        table=[["Name", "MRN"], ["John Smith", "551203"]],
        header="St. Elsewhere clinic",
        comment="check DOB with patient",
        deleted="old SSN 123-45-6789",
        title="Summary for J. Roe",
    )
    result = extract(_attach("summary.docx", docx))
    found = texts(result)
    assert found["attachment 2 (.docx)"] == (
        "Discharge summary\nPatient: Jane Roe\nold SSN 123-45-6789"
    )
    assert rows(result, "attachment 2 (.docx)/table 1/") == [
        "Name | MRN",
        "Name: John Smith | MRN: 551203",
    ]
    assert found["attachment 2 (.docx)/header1"] == "St. Elsewhere clinic"
    assert found["attachment 2 (.docx)/comments"] == "check DOB with patient"
    assert found["attachment 2 (.docx)/properties"] == "Title: Summary for J. Roe"


def test_docx_billion_laughs_is_a_parse_error_and_cheap() -> None:
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(
            f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
            for i in range(1, 10)
        )
        + ']><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>"
    )
    result = extract(_attach("lol.docx", make_docx([], document_xml=laughs)))
    assert reasons(result) == {"attachment 2 (.docx)": "parse-error"}


def test_docx_in_utf16_goes_through_the_defused_parser() -> None:
    xml = (
        '<?xml version="1.0" encoding="UTF-16"?><w:document xmlns:w="http://schemas.'
        'openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>utf16 text'
        "</w:t></w:r></w:p></w:body></w:document>"
    )
    docx = make_zip(
        {
            "word/document.xml": codecs.BOM_UTF16_LE + xml.encode("utf-16-le"),
            "[Content_Types].xml": "<Types/>",
        }
    )
    assert texts(extract(_attach("u.docx", docx)))["attachment 2 (.docx)"] == "utf16 text"


def test_xlsx_every_sheet_row_by_row_with_dates() -> None:
    xlsx = make_xlsx(
        {
            "Patients": [
                ["Name", "DOB", "MRN"],
                ["Jane Roe", datetime.date(1980, 1, 2), 448812],
                ["John Smith", datetime.datetime(1975, 5, 6, 13, 30), 1.5e10],
                [],
                ["", "", "orphan"],
            ],
            "Hidden": [["SSN", "123-45-6789"]],
        },
        hidden=["Hidden"],
    )
    result = extract(_attach("pts.xlsx", xlsx))
    found = texts(result)
    assert found["attachment 2 (.xlsx)/sheet 1/row 2"] == (
        "Name: Jane Roe | DOB: 1980-01-02 | MRN: 448812"
    )
    assert found["attachment 2 (.xlsx)/sheet 1/row 3"] == (
        "Name: John Smith | DOB: 1975-05-06 13:30:00 | MRN: 15000000000"
    )
    assert found["attachment 2 (.xlsx)/sheet 1/row 5"] == "MRN: orphan"
    assert found["attachment 2 (.xlsx)/sheet 2/row 1"] == "SSN | 123-45-6789"
    assert all(s.is_row for s in result.segments if "/row " in s.location)


def test_xlsx_shared_strings_written_by_hand() -> None:
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    xlsx = make_zip(
        {
            "[Content_Types].xml": "<Types/>",
            "xl/workbook.xml": f'<workbook {ns} {rel}><sheets><sheet name="Q1" sheetId="1" '
            'r:id="rId1"/></sheets></workbook>',
            "xl/_rels/workbook.xml.rels": '<Relationships xmlns="http://schemas.openxmlformats.'
            'org/package/2006/relationships"><Relationship Id="rId1" Target="worksheets/s.xml"/>'
            "</Relationships>",
            "xl/sharedStrings.xml": f"<sst {ns}><si><t>Patient</t></si><si><r><t>Jane </t></r>"
            "<r><t>Roe</t></r><rPh><t>ジェーン</t></rPh></si></sst>",
            "xl/worksheets/s.xml": f'<worksheet {ns}><sheetData><row r="7"><c r="B7" t="s"><v>0'
            '</v></c><c r="D7" t="s"><v>1</v></c><c r="E7" t="b"><v>1</v></c><c r="F7">'
            '<v>1.2345678E8</v></c><c r="G7" t="s"><v>99</v></c></row></sheetData></worksheet>',
        }
    )
    found = texts(extract(_attach("q.xlsx", xlsx)))
    assert found["attachment 2 (.xlsx)/sheet 1/row 7"] == "Patient | Jane Roe | TRUE | 123456780"


def test_xlsx_text_boxes_and_comments() -> None:
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    drawing = (
        '<xdr:wsDr xmlns:xdr="http://schemas.openxmlformats.org/drawingml/2006/'
        'spreadsheetDrawing" xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main">'
        "<xdr:sp><xdr:txBody><a:p><a:r><a:t>Note: MRN 448812</a:t></a:r></a:p></xdr:txBody>"
        "</xdr:sp></xdr:wsDr>"
    )
    xlsx = make_zip(
        {
            "xl/workbook.xml": f"<workbook {ns}/>",
            "xl/worksheets/sheet1.xml": f"<worksheet {ns}><sheetData/></worksheet>",
            "xl/drawings/drawing1.xml": drawing,
            "xl/comments1.xml": f"<comments {ns}><commentList><comment ref='A1'><text><r><t>"
            "call Jane Roe</t></r></text></comment></commentList></comments>",
        }
    )
    found = texts(extract(_attach("n.xlsx", xlsx)))
    assert found["attachment 2 (.xlsx)/drawing 1"] == "Note: MRN 448812"
    assert found["attachment 2 (.xlsx)/comments 1"] == "call Jane Roe"


def test_pptx_slides_and_notes() -> None:
    pptx = make_pptx(["Case review: Jane Roe", "Outcomes"], notes=["MRN 448812"])
    found = texts(extract(_attach("case.pptx", pptx)))
    assert found["attachment 2 (.pptx)/slide 1"] == "Case review: Jane Roe"
    assert found["attachment 2 (.pptx)/slide 2"] == "Outcomes"
    assert found["attachment 2 (.pptx)/notes 1"] == "MRN 448812"


def test_odt_mixed_content_and_tables() -> None:
    odt = make_odt(
        "<text:p>Patient <text:span>Jane</text:span><text:s/>Roe<text:line-break/>"
        "MRN 448812</text:p>"
        "<table:table><table:table-row><table:table-cell><text:p>Name</text:p></table:table-cell>"
        "<table:table-cell><text:p>SSN</text:p></table:table-cell></table:table-row>"
        "<table:table-row><table:table-cell><text:p>John</text:p></table:table-cell>"
        "<table:table-cell><text:p>123-45-6789</text:p></table:table-cell></table:table-row>"
        "</table:table>"
    )
    result = extract(_attach("letter.odt", odt))
    assert texts(result)["attachment 2 (.odt)"] == "Patient Jane Roe\nMRN 448812"
    assert rows(result, "attachment 2 (.odt)/table 1/") == [
        "Name | SSN",
        "Name: John | SSN: 123-45-6789",
    ]


def test_encrypted_odt() -> None:
    result = extract(_attach("secret.odt", make_odt("<text:p>x</text:p>", encrypted=True)))
    assert reasons(result) == {"attachment 2 (.odt)": "encrypted-archive"}


def test_password_protected_ooxml_is_encrypted() -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100) + "EncryptionInfo".encode("utf-16-le")
    legacy = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100) + "WordDocument".encode("utf-16-le")
    result = extract(
        make_message(
            "x",
            attachments=[
                ("p.xlsx", ole, "application/octet-stream"),
                ("old.doc", legacy, "application/msword"),
            ],
        )
    )
    assert reasons(result) == {
        "attachment 2 (.xlsx)": "encrypted-archive",
        "attachment 3 (.doc)": "unsupported-type",
    }


# --- Text formats ------------------------------------------------------------------


def test_csv_sniffs_delimiter_and_encoding() -> None:
    semicolon = 'Name;DOB;Note\nJosé Ñúñez;01/02/1980;"a;b"\n'.encode("cp1252")
    utf16 = "Name\tMRN\nJane Roe\t448812\n".encode("utf-16")
    result = extract(
        make_message(
            "x",
            attachments=[
                ("a.csv", semicolon, "text/csv"),
                ("b.tsv", utf16, "application/octet-stream"),
            ],
        )
    )
    found = texts(result)
    assert found["attachment 2 (.csv)/row 2"] == "Name: José Ñúñez | DOB: 01/02/1980 | Note: a;b"
    assert found["attachment 3 (.tsv)/row 2"] == "Name: Jane Roe | MRN: 448812"


def test_csv_without_header_row_and_with_huge_field() -> None:
    plain = b"448812,Jane Roe,1980-01-02\n551203,John Smith,1975-05-06\n"
    huge = b'a,b\n1,"' + b"x" * 200_000 + b'"\n2,after the big field\n'
    result = extract(
        make_message("x", attachments=[("n.csv", plain, "text/csv"), ("h.csv", huge, "text/csv")])
    )
    assert rows(result, "attachment 2 (.csv)/") == [
        "448812 | Jane Roe | 1980-01-02",
        "551203 | John Smith | 1975-05-06",
    ]
    assert "after the big field" in all_text(result)


def test_rtf() -> None:
    rtf = (
        rb"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0 Times New Roman;}}"
        rb"{\colortbl;\red0\green0\blue0;}"
        rb"{\*\generator Riched20;}{\info{\title Referral}}"
        rb"\pard Patient: Ren\'e9e Dupont\par DOB 01/02/1980\tab MRN\~448812\par "
        rb"Unicode \u8364? sign and \u-10179?\u-8704?\par{\*\bogusdest hidden}"
        rb"{\pict\pngblip 89504e47}\trowd\cellx1000 A1\cell B1\cell\row}"
    )
    text = texts(extract(_attach("ref.rtf", rtf)))["attachment 2 (.rtf)"]
    assert "Referral\n" in text
    assert "Patient: Renée Dupont\nDOB 01/02/1980 MRN 448812" in text
    assert "Unicode € sign and \U0001f600" in text
    assert "89504e47" not in text and "Times New Roman" not in text
    assert "A1 | B1 |" in text


def test_calendar_invite() -> None:
    ics = (
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:Follow-up Jane Roe\r\n"
        b"DESCRIPTION:Bring MRN 448812\\, insurance card\\nand labs\r\nLOCATION:Room 4\r\n"
        b'ATTENDEE;CN="Roe, Jane";ROLE=REQ-PARTICIPANT:mailto:jane@example.org\r\n'
        b"DTSTART:20240102T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    found = texts(extract(_attach("invite.ics", ics, "text/calendar")))
    assert found["attachment 2 (.ics)/event 1"] == (
        "Summary: Follow-up Jane Roe\nDescription: Bring MRN 448812, insurance card\nand labs\n"
        "Location: Room 4\nAttendee: Roe, Jane jane@example.org"
    )


def test_zip_members_nested_archives_and_gzip() -> None:
    import gzip

    inner = make_zip({"deep/notes.txt": "deep MRN 448812"})
    archive = make_zip(
        {
            "list.csv": "Name,SSN\nJane Roe,123-45-6789\n",
            "inner.zip": inner,
            "log.txt.gz": gzip.compress(b"gz text DOB 01/02/1980"),
            "folder/": "",
        }
    )
    result = extract(_attach("bundle.zip", archive, "application/zip"))
    found = texts(result)
    # Members by their place in the archive, never by their names.
    assert found["attachment 2 (.zip)/member 1 (.csv)/row 2"] == "Name: Jane Roe | SSN: 123-45-6789"
    assert found["attachment 2 (.zip)/member 2 (.zip)/member 1 (.txt)"] == "deep MRN 448812"
    assert found["attachment 2 (.zip)/member 3 (.gz)/member 1 (.txt)"] == "gz text DOB 01/02/1980"
    info = {a.location: a.filename for a in result.attachments}
    assert info["attachment 2 (.zip)/member 2 (.zip)/member 1 (.txt)"] == "notes.txt"
    assert result.unscannable == ()


def test_pdf_with_a_broken_page_is_not_silently_empty(caplog: pytest.LogCaptureFixture) -> None:
    pdf = make_pdf(["Patient Jane Roe MRN 448812", "second page"])
    # Cut page 1's dictionary short: the page exists, its text cannot be reached.
    broken = pdf.replace(b"/Resources << /Font", b"/Resources < /Font", 1)
    with caplog.at_level(logging.DEBUG):
        result = extract(_attach("broken.pdf", broken))
    assert reasons(result).get("attachment 2 (.pdf)/page 1") == "parse-error"
    # pypdf's own warnings quote the file; none may reach the log.
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]
    assert "448812" not in caplog.text


def test_file_embedded_in_a_word_document_is_extracted() -> None:
    sheet = make_xlsx({"Pts": [["Name", "MRN"], ["Jane Roe", 448812]]})
    docx = make_zip(
        {
            "word/document.xml": '<w:document xmlns:w="http://schemas.openxmlformats.org/'
            'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>see table</w:t></w:r></w:p>'
            "</w:body></w:document>",
            "word/embeddings/Microsoft_Excel_Worksheet.xlsx": sheet,
            "word/media/image1.png": b"\x89PNG\r\n\x1a\n" + bytes(16),
        }
    )
    result = extract(_attach("letter.docx", docx))
    found = texts(result)
    assert found["attachment 2 (.docx)"] == "see table"
    embedded = "attachment 2 (.docx)/embedded 1 (.xlsx)"
    assert found[f"{embedded}/sheet 1/row 2"] == "Name: Jane Roe | MRN: 448812"
    # Pictures in documents are decoration far more often than scans: not reported.
    assert result.unscannable == ()


def test_pdf_without_any_readable_page_is_flagged() -> None:
    pdf = make_pdf(["Patient Jane Roe", "MRN 448812"])
    # A mangled page tree: pypdf finds no real page, yet the text is in the file.
    broken_tree = pdf.replace(b"/Type /Pages /Kids", b"/Pages /Kids", 1).replace(
        b"/Pages 7 0 R >>", b"/Pages 7 0 R!>>", 1
    )
    assert reasons(extract(_attach("tree.pdf", broken_tree))) == {
        "attachment 2 (.pdf)": "parse-error"
    }
    # Text drawn as outlines: pages paint paths only, nothing to read without OCR.
    outlines = make_pdf([None]).replace(
        b"<< /Length 0 >>\nstream\n\n", b"<< /Length 24 >>\nstream\n0 0 m 10 10 l S 1 1 m f\n", 1
    )
    assert reasons(extract(_attach("outlines.pdf", outlines))) == {
        "attachment 2 (.pdf)": "image-only"
    }
