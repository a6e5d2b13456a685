"""Plain text parts: format=flowed unwrapping and uuencoded files hidden in the text."""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

_UU_BEGIN = re.compile(r"^begin [0-7]{3,4} ([^\r\n]+?)[ \t]*\r?$", re.MULTILINE)
_UU_END = re.compile(r"^end[ \t]*\r?$", re.MULTILINE)
_FLOWED_BREAK = re.compile(r" \r?\n(?!-- ?\r?\n)")


@dataclass(frozen=True)
class UuFile:
    """A file that was uuencoded inside a text body."""

    name: str
    data: bytes


def unflow(text: str, delsp: bool) -> str:
    """Join RFC 3676 soft line breaks, so a wrapped identifier is one token again."""
    return _FLOWED_BREAK.sub("" if delsp else " ", text)


def _uudecode_line(line: str) -> bytes:
    try:
        return binascii.a2b_uu(line)
    except binascii.Error:
        # Some encoders pad lines wrongly; the length byte says how much is data.
        if not line:
            return b""
        length = (ord(line[0]) - 32) & 63
        return binascii.a2b_uu(line[: 1 + (length * 4 + 2) // 3])[:length]


def split_uuencoded(text: str) -> tuple[str, list[UuFile]]:
    """Remove uuencoded blocks from `text` and return them decoded."""
    if "begin " not in text:
        return text, []
    files: list[UuFile] = []
    kept: list[str] = []
    position = 0
    for begin in _UU_BEGIN.finditer(text):
        if begin.start() < position:
            continue
        end = _UU_END.search(text, begin.end())
        if end is None:
            break
        lines = text[begin.end() : end.start()].split("\n")
        try:
            data = b"".join(_uudecode_line(line.rstrip("\r")) for line in lines if line.strip())
        except (binascii.Error, ValueError):
            continue
        kept.append(text[position : begin.start()])
        files.append(UuFile(begin.group(1), data))
        position = end.end()
    kept.append(text[position:])
    return "".join(kept), files
