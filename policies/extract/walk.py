"""The walk over one message: MIME tree, attached messages, archives, documents.

Every part is read inside a guard: whatever goes wrong in one part makes that
part unscannable ("parse-error", or "limit-exceeded" for budgets) and the walk
goes on. When a per-message budget runs out the walk stops, and the message as
a whole is marked "limit-exceeded" so the rest counts as unscanned.

Locations: `subject`, `header:to`, `body/N text/plain` (N numbers the message's
leaf parts), `attachment N (.pdf)` (the leaf part N), `attachment N (.zip)/member
M (.csv)`..., and for an attached message `attachment 2 (.eml)/subject`,
`attachment 2 (.eml)/body/1 text/plain`, `attachment 2 (.eml)/attachment 3
(.pdf)`. File names never appear in them (see `location`).
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message

from policies.extract import location as place
from policies.extract import mime
from policies.extract.context import BudgetExhausted, Context, LimitExceeded, Nested
from policies.extract.html import extract_html
from policies.extract.ical import extract_ical
from policies.extract.model import SegmentKind
from policies.extract.normalize import decode_bytes, normalize
from policies.extract.office import (
    extract_docx,
    extract_odf,
    extract_pptx,
    extract_xlsx,
    odf_encrypted,
    office_kind,
)
from policies.extract.pdf import extract_pdf
from policies.extract.rtf import extract_rtf
from policies.extract.sniff import Format, guess_type, sniff
from policies.extract.tabular import extract_csv
from policies.extract.text import split_uuencoded, unflow
from policies.extract.zipx import EncryptedMember, gunzip, members, open_zip, read_member

# Text parts a mail client shows inline as the message body.
_BODY_SUBTYPES = frozenset(("plain", "html", "enriched", "richtext", "markdown"))
# Headers people write or that name people: scanned as header segments.
_HUMAN_HEADERS = ("from", "to", "cc", "bcc", "reply-to", "comments", "keywords", "thread-topic")
# Headers too bulky or mechanical to be worth keeping in the header map.
_TRACE_HEADERS = frozenset(
    (
        "received",
        "dkim-signature",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        "authentication-results",
        "x-ms-exchange-organization-authas",
    )
)
_MAX_HEADER_VALUE = 64 << 10
_MAX_HEADERS = 1000
# Multipart containers nest a few levels in real mail; hundreds are an attack on recursion.
_MAX_MULTIPART_NESTING = 64
_PREAMBLE_BOILERPLATE = "this is a multi-part message in mime format."


@dataclass(frozen=True)
class _Scope:
    """Where the entities being walked live: the message itself or an attached message."""

    body_prefix: str  # "" or "attachment 2 (.eml)/"
    attachment_prefix: str  # "" or "attachment 2 (.eml)/"
    body_kind: SegmentKind  # "body" at top level, "attachment" inside attachments
    depth: int
    top: bool


class Walker:
    """Walks one message, filling a Context."""

    def __init__(self, ctx: Context) -> None:
        """Bind the walk to one message's budgets and output."""
        self.ctx = ctx
        self._leaf = 0
        self._taken: set[str] = set()

    def _unique(self, location: str) -> str:
        """A location not given out before (numbered locations are; this makes sure)."""
        candidate, number = location, 1
        while candidate in self._taken:
            number += 1
            candidate = f"{location}#{number}"
        self._taken.add(candidate)
        return candidate

    @contextmanager
    def _guard(self, location: str) -> Iterator[None]:
        """Turn any failure inside one part into an Unscannable for that part."""
        try:
            yield
        except BudgetExhausted:
            self.ctx.skip(location, "limit-exceeded")
            raise
        except LimitExceeded:
            self.ctx.skip(location, "limit-exceeded")
        except EncryptedMember:
            self.ctx.skip(location, "encrypted-archive")
        except Exception:
            self.ctx.skip(location, "parse-error")

    # --- messages ------------------------------------------------------------

    def walk(self, raw: bytes) -> None:
        """Extract the top-level message."""
        try:
            message = mime.parse(raw)
        except Exception:
            # The parser gave up (e.g. recursion): scan the bytes as text, mark it.
            self.ctx.skip("message", "parse-error")
            self.ctx.text("body/raw", decode_bytes(raw), "body")
            return
        scope = _Scope("", "", "body", 0, top=True)
        self._message(message, scope)

    def _message(self, message: Message, scope: _Scope) -> None:
        """Headers, then the entity tree, of one (possibly attached) message."""
        # Each message numbers its own parts, so `fwd.eml/body/1` is its first part.
        outer_leaf, self._leaf = self._leaf, 0
        try:
            self._headers(message, scope)
            self._entity(message, scope, 0)
        finally:
            self._leaf = outer_leaf

    def _headers(self, message: Message, scope: _Scope) -> None:
        collected: dict[str, list[str]] = {}
        for name, raw in mime.raw_headers(message)[:_MAX_HEADERS]:
            key = name.strip().lower()
            if key in _TRACE_HEADERS:
                continue
            collected.setdefault(key, []).append(mime.decode_value(raw[:_MAX_HEADER_VALUE]))
        for key, values in collected.items():
            value = ", ".join(values)
            if scope.top:
                self.ctx.headers[key] = normalize(value)
            if key == "subject":
                if scope.top:
                    self.ctx.text("subject", value, "subject")
                else:
                    self.ctx.text(f"{scope.body_prefix}subject", value, "attachment")
            elif key in _HUMAN_HEADERS:
                location = f"{scope.body_prefix}header:{key}"
                self.ctx.text(location, value, "header" if scope.top else "attachment")

    def _entity(self, part: Message, scope: _Scope, nesting: int) -> None:
        """Walk one MIME entity: containers recurse, leaves are read."""
        self.ctx.check_time()
        if nesting > _MAX_MULTIPART_NESTING:
            self.ctx.skip(f"{scope.body_prefix}body", "limit-exceeded")
            return
        facts = mime.facts(part)
        payload = part.get_payload()
        if (
            facts.content_type.startswith("message/")
            and isinstance(payload, list)
            and payload
            and isinstance(payload[0], Message)
        ):
            encoding = mime.transfer_encoding(part)
            if facts.content_type in ("message/partial", "message/external-body"):
                # A fragment or a reference: the content is not here to scan.
                self._leaf += 1
                location = self._unique(self._attachment(scope, facts))
                self.ctx.attachment(location, facts.filename, facts.content_type, 0)
                self.ctx.skip(location, "unsupported-type")
            elif encoding in ("base64", "quoted-printable"):
                # Not allowed for message/* (RFC 2046 5.2.1) but sent anyway; the
                # parser took the encoded text for a message, so decode and reparse.
                self._encoded_message(payload[0], facts, scope, encoding)
            else:
                self._attached_message(payload[0], facts, scope)
            return
        if part.is_multipart():
            self._multipart(part, scope, nesting)
            return
        self._leaf_part(part, facts, scope)

    def _multipart(self, part: Message, scope: _Scope, nesting: int) -> None:
        # Preamble and epilogue are invisible in mail clients, which makes them a
        # place to hide text; scan them like body text.
        for where, extra in (("preamble", part.preamble), ("epilogue", part.epilogue)):
            if extra and extra.strip().lower() != _PREAMBLE_BOILERPLATE:
                self.ctx.text(f"{scope.body_prefix}body/{where}", extra, scope.body_kind)
        payload = part.get_payload()
        if not isinstance(payload, list):
            return
        for child in payload:
            if isinstance(child, Message):
                self._entity(child, scope, nesting + 1)

    def _attachment(self, scope: _Scope, facts: mime.PartFacts) -> str:
        """The location of the leaf part just counted, as an attachment."""
        return place.attachment(
            scope.attachment_prefix, self._leaf, facts.filename, facts.content_type
        )

    def _attached_message(self, inner: Message, facts: mime.PartFacts, scope: _Scope) -> None:
        self._leaf += 1
        location = self._unique(self._attachment(scope, facts))
        with self._guard(location):
            self.ctx.count_part()
            size = mime.serialized_size(inner)
            self.ctx.attachment(location, facts.filename, facts.content_type, size)
            if scope.depth + 1 > self.ctx.limits.max_depth:
                raise LimitExceeded("attached messages nested too deeply")
            self._message(inner, self._inner_scope(location, scope))

    def _encoded_message(
        self, parsed: Message, facts: mime.PartFacts, scope: _Scope, encoding: str
    ) -> None:
        self._leaf += 1
        location = self._unique(self._attachment(scope, facts))
        with self._guard(location):
            self.ctx.count_part()
            data = mime.decode_transfer(parsed.as_bytes(), encoding)
            self.ctx.attachment(location, facts.filename, facts.content_type, len(data))
            self.ctx.charge_bytes(len(data))
            self._blob(data, location, facts, "attachment", scope)

    @staticmethod
    def _inner_scope(location: str, scope: _Scope) -> _Scope:
        prefix = f"{location}/"
        return _Scope(prefix, prefix, "attachment", scope.depth + 1, top=False)

    def _leaf_part(self, part: Message, facts: mime.PartFacts, scope: _Scope) -> None:
        self._leaf += 1
        maintype, _, subtype = facts.content_type.partition("/")
        is_body = (
            maintype == "text"
            and subtype in _BODY_SUBTYPES
            and not facts.filename
            and facts.disposition != "attachment"
        )
        if is_body:
            location = f"{scope.body_prefix}body/{self._leaf} {facts.content_type}"
            kind = scope.body_kind
        else:
            location = self._unique(self._attachment(scope, facts))
            kind = "attachment"
        with self._guard(location):
            self.ctx.count_part()
            data = part.get_payload(decode=True)
            if not isinstance(data, bytes):
                data = b""
            if not is_body:
                self.ctx.attachment(location, facts.filename, facts.content_type, len(data))
            self.ctx.charge_bytes(len(data))
            self._blob(data, location, facts, kind, scope)

    # --- blobs ---------------------------------------------------------------

    def _nested(self, kind: SegmentKind, scope: _Scope) -> Nested:
        """A callback through which containers hand back the files they hold."""

        def read(data: bytes, location: str, filename: str, content_type: str) -> None:
            """Read one embedded file one level deeper, as an attachment of its own."""
            location = self._unique(location)
            with self._guard(location):
                self.ctx.count_part()
                guessed = content_type or guess_type(filename)
                self.ctx.attachment(location, filename, guessed, len(data))
                if scope.depth + 1 > self.ctx.limits.max_depth:
                    raise LimitExceeded("containers nested too deeply")
                inner = _Scope(
                    scope.body_prefix, scope.attachment_prefix, kind, scope.depth + 1, False
                )
                member_facts = mime.PartFacts(
                    guessed, None, filename, "attachment", False, False, ""
                )
                self._blob(data, location, member_facts, kind, inner)

        return read

    def _blob(
        self,
        data: bytes,
        location: str,
        facts: mime.PartFacts,
        kind: SegmentKind,
        scope: _Scope,
    ) -> None:
        """Read one decoded part or member according to what it really is."""
        fmt = sniff(data, facts.filename, facts.content_type, facts.smime_type)
        ctx = self.ctx
        if fmt in (Format.EMPTY, Format.SIGNATURE):
            return
        if fmt is Format.TEXT:
            self._text(data, location, facts, kind, scope)
        elif fmt is Format.HTML:
            extract_html(decode_bytes(data, facts.charset), location, kind, ctx)
        elif fmt in (Format.CSV, Format.TSV):
            extract_csv(data, facts.charset, location, kind, ctx, fmt is Format.TSV)
        elif fmt is Format.CALENDAR:
            extract_ical(decode_bytes(data, facts.charset), location, kind, ctx)
        elif fmt is Format.RTF:
            extract_rtf(data, location, kind, ctx)
        elif fmt is Format.PDF:
            extract_pdf(data, location, kind, ctx, self._nested(kind, scope))
        elif fmt is Format.ZIP:
            self._zip(data, location, kind, scope)
        elif fmt is Format.GZIP:
            inner_name = (
                facts.filename[:-3] if facts.filename.lower().endswith(".gz") else "content"
            )
            self._nested(kind, scope)(
                gunzip(data, ctx), place.member(location, 1, inner_name), inner_name, ""
            )
        elif fmt is Format.MESSAGE:
            if scope.depth + 1 > ctx.limits.max_depth:
                raise LimitExceeded("attached messages nested too deeply")
            self._message(mime.parse(data), self._inner_scope(location, scope))
        elif fmt is Format.IMAGE:
            ctx.skip(location, "image-only")
        elif fmt is Format.ENCRYPTED:
            ctx.skip(location, "encrypted-archive")
        else:
            ctx.skip(location, "unsupported-type")

    def _text(
        self,
        data: bytes,
        location: str,
        facts: mime.PartFacts,
        kind: SegmentKind,
        scope: _Scope,
    ) -> None:
        text = decode_bytes(data, facts.charset)
        if facts.flowed:
            text = unflow(text, facts.delsp)
        text, files = split_uuencoded(text)
        self.ctx.text(location, text, kind)
        nested = self._nested("attachment", scope)
        for number, uu in enumerate(files, 1):
            where = f"{location}/uuencoded {number}{place.file_type(uu.name)}"
            nested(uu.data, where, uu.name, "")

    def _zip(self, data: bytes, location: str, kind: SegmentKind, scope: _Scope) -> None:
        archive = open_zip(data)
        names = set(archive.namelist())
        office = office_kind(names)
        ctx = self.ctx
        if office == "docx":
            extract_docx(archive, location, kind, ctx)
        elif office == "xlsx":
            extract_xlsx(archive, location, kind, ctx)
        elif office == "pptx":
            extract_pptx(archive, location, kind, ctx)
        elif office == "odf":
            if odf_encrypted(archive, ctx):
                ctx.skip(location, "encrypted-archive")
            else:
                extract_odf(archive, location, kind, ctx)
        if office is not None:
            self._embedded(archive, location, kind, scope)
            return
        nested = self._nested(kind, scope)
        for number, member in enumerate(members(archive), 1):
            member_location = place.member(location, number, member.name)
            with self._guard(member_location):
                content = read_member(archive, member, ctx)
                nested(content, member_location, posixpath.basename(member.name), "")

    def _embedded(
        self, archive: zipfile.ZipFile, location: str, kind: SegmentKind, scope: _Scope
    ) -> None:
        """Files embedded in an Office document (a spreadsheet pasted into a letter)."""
        nested = self._nested(kind, scope)
        embedded = (m for m in members(archive) if "/embeddings/" in f"/{m.name}")
        for number, member in enumerate(embedded, 1):
            member_location = place.embedded(location, number, member.name)
            with self._guard(member_location):
                content = read_member(archive, member, self.ctx)
                nested(content, member_location, posixpath.basename(member.name), "")
