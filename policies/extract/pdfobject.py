"""Plain PDF objects read with regular expressions, giving the objects pypdf's parser gives.

pypdf reads every indirect object a byte at a time through several layers of
calls: page dictionaries and content stream headers cost it about 0.2 ms a page,
a good part of a PDF-heavy message. Most objects a page needs are dictionaries
of names, numbers, references and arrays of those, and streams whose /Length is
a number. `QuickReader` reads exactly those from the file's bytes, mirroring
pypdf's `read_object` step by step (same whitespace, same delimiters, the same
number and reference patterns, the same constructors), and hands anything else
(strings, comments, indirect lengths, repairs, encryption, object streams,
strict mode) to pypdf unchanged. Tests compare both readers object by object.
"""

from __future__ import annotations

import re
from typing import Any

from pypdf import PdfReader
from pypdf._configuration import get_configuration
from pypdf.generic import (
    ArrayObject,
    DictionaryObject,
    FloatObject,
    IndirectObject,
    NameObject,
    NumberObject,
    PdfObject,
    StreamObject,
)
from pypdf.generic._data_structures import IndirectPattern

# pypdf's WHITESPACES; \v, which only arrays skip, sends the object to pypdf.
_WS = rb"[\x00\t\n\f\r ]*"
_HEADER = re.compile(_WS + rb"(\d{1,10})[\x00\t\n\f\r ]+(\d{1,5})[\x00\t\n\f\r ]+obj" + _WS)
_SKIP = re.compile(_WS)
# A name without # escapes, ended as pypdf ends it: at bytes whitespace or a delimiter.
_NAME = re.compile(rb"/[A-Za-z0-9_.+\-*:;,'\"!?@$^&=|~`]{0,100}(?=[ \t\n\r\f\v()<>\[\]{}/%])")
_NUMBER_END = NumberObject.NumberPattern
# pypdf skips spaces after the keyword, then takes CR LF, CR or LF.
_STREAM_EOL = re.compile(rb"stream *(?:\r\n?|\n)")
_MAX_ENTRIES = 1000  # far below pypdf's element limits, so they never apply here
_MAX_DEPTH = 16


def _skip(data: bytes, pos: int) -> int:
    """The index of the first byte at or after `pos` that pypdf does not skip as whitespace."""
    match = _SKIP.match(data, pos)
    return match.end() if match is not None else pos


class _NotPlain(Exception):
    """The object uses something only pypdf's own parser handles."""


class _Parser:
    """One object's bytes, read as pypdf's read_object reads them."""

    __slots__ = ("data", "pdf")

    def __init__(self, data: bytes, pdf: PdfReader) -> None:
        self.data = data
        self.pdf = pdf

    def value(self, pos: int, depth: int) -> tuple[PdfObject, int]:
        """The direct object at `pos` (no whitespace before it) and the index after it."""
        data = self.data
        first = data[pos : pos + 1]
        if first == b"/":
            m = _NAME.match(data, pos)
            if m is None:
                raise _NotPlain
            return NameObject(m.group().decode("ascii")), m.end()
        if first == b"<":
            if data[pos + 1 : pos + 2] != b"<":
                raise _NotPlain  # a hex string
            return self.dictionary(pos, depth + 1)
        if first == b"[":
            return self.array(pos, depth + 1)
        if first and first in b"0123456789+-.":
            peek = data[pos : pos + 20]
            ref = IndirectPattern.match(peek)
            if ref is not None:
                # pypdf continues after the "R" (its match takes one byte more).
                return IndirectObject(int(peek[: ref.end(1)]), int(ref[2]), self.pdf), (
                    pos + ref.end() - 1
                )
            end = _NUMBER_END.search(peek)
            if end is None:
                raise _NotPlain  # a number longer than pypdf's peek
            num = peek[: end.start()]
            return (FloatObject(num) if b"." in num else NumberObject(num)), pos + len(num)
        raise _NotPlain  # strings, booleans, null, comments, garbage

    def array(self, pos: int, depth: int) -> tuple[ArrayObject, int]:
        if depth > _MAX_DEPTH:
            raise _NotPlain
        data = self.data
        arr = ArrayObject()
        pos = _skip(data, pos + 1)
        while data[pos : pos + 1] != b"]":
            if len(arr) >= _MAX_ENTRIES:
                raise _NotPlain
            item, pos = self.value(pos, depth)
            arr.append(item)
            pos = _skip(data, pos)
        return arr, pos + 1

    def entries(self, pos: int, depth: int) -> tuple[dict[Any, Any], int]:
        """The entries of the dictionary opening at `pos`, and the index after its >>."""
        if depth > _MAX_DEPTH:
            raise _NotPlain
        data = self.data
        found: dict[Any, Any] = {}
        pos = _skip(data, pos + 2)
        while data[pos : pos + 1] != b">":
            if len(found) >= _MAX_ENTRIES:
                raise _NotPlain
            key = _NAME.match(data, pos)
            if key is None:
                raise _NotPlain
            name = NameObject(key.group().decode("ascii"))
            if name in found:
                raise _NotPlain  # pypdf warns and keeps the first
            pos = _skip(data, key.end())
            found[name], pos = self.value(pos, depth)
            pos = _skip(data, pos)
        if data[pos + 1 : pos + 2] != b">":
            raise _NotPlain
        return found, pos + 2

    def dictionary(self, pos: int, depth: int) -> tuple[DictionaryObject, int]:
        found, pos = self.entries(pos, depth)
        out = DictionaryObject()
        out.update(found)
        return out, pos

    def top(self, pos: int, max_stream: int) -> PdfObject:
        """The object at `pos`: a dictionary, or a stream with a direct /Length."""
        data = self.data
        if data[pos : pos + 2] != b"<<":
            raise _NotPlain
        found, pos = self.entries(pos, 0)
        pos = _skip(data, pos)
        if not data.startswith(b"stream", pos):
            out = DictionaryObject()
            out.update(found)
            return out
        eol = _STREAM_EOL.match(data, pos)
        length = found.get("/Length")
        if eol is None or type(length) is not NumberObject or not 0 <= length <= max_stream:
            raise _NotPlain
        start = eol.end()
        end = start + length
        if not data.startswith(b"endstream", _skip(data, end)):
            raise _NotPlain  # a wrong length: pypdf looks for the end itself
        found["__streamdata__"] = data[start:end]
        return StreamObject.initialize_from_dictionary(found)


class QuickReader(PdfReader):
    """pypdf's reader, with plain dictionaries and streams read by `_Parser`."""

    def __init__(self, data: bytes, stream: Any, strict: bool = False) -> None:
        """Read the file in `stream`, whose bytes are `data`."""
        self._quick_data = data
        super().__init__(stream, strict=strict)

    def get_object(self, indirect_reference: int | IndirectObject) -> PdfObject | None:
        """The object pypdf's get_object returns, read quickly when it is plain."""
        if isinstance(indirect_reference, IndirectObject) and not self.strict:
            quick = self._quick(indirect_reference.idnum, indirect_reference.generation)
            if quick is not None:
                return quick
        return super().get_object(indirect_reference)

    def _quick(self, idnum: int, generation: int) -> PdfObject | None:
        if (
            (generation, idnum) in self.resolved_objects
            or self._encryption is not None
            or (generation == 0 and idnum in self.xref_objStm)
            or self.xref_free_entry.get(generation, {}).get(idnum, False)
        ):
            return None
        start = self.xref.get(generation, {}).get(idnum)
        if type(start) is not int:
            return None
        data = self._quick_data
        if data[start : start + 1] == b"%":
            return None
        header = _HEADER.match(data, start)
        if header is None or (int(header[1]), int(header[2])) != (idnum, generation):
            return None
        try:
            obj = _Parser(data, self).top(
                header.end(), get_configuration().maximum_declared_stream_length
            )
        except _NotPlain:
            return None
        return self.cache_indirect_object(generation, idnum, obj)
