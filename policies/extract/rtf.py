"""RTF to text: a small tokenizer that keeps the document text and drops control data.

Hand-written rather than a dependency because RTF's text rules are few (groups,
control words, hex and Unicode escapes, destinations to skip) and a tokenizer
we control can honour \\bin lengths and check the time budget as it goes.
"""

from __future__ import annotations

import re

from policies.extract.context import Context
from policies.extract.model import SegmentKind
from policies.extract.normalize import decode_bytes

_TOKEN = re.compile(
    rb"\\([a-zA-Z]{1,32})(-?\d{1,10})? ?"  # control word with optional parameter
    rb"|\\'([0-9a-fA-F]{2})"  # hex-escaped byte in the document code page
    rb"|\\([^a-zA-Z'])"  # control symbol
    rb"|([{}])"
    rb"|[\r\n]+"
    rb"|([^\\{}\r\n]+)"
)
# Destinations whose content is not document text (fonts, colours, pictures,
# embedded objects' binary data, revision tables...).
_SKIP_DESTINATIONS = frozenset(
    b"fonttbl colortbl stylesheet listtable listoverridetable rsidtbl generator pict object "
    b"objdata themedata colorschememapping datastore xmlnsstore latentstyles pgdsctbl filetbl "
    b"revtbl fldinst bkmkstart bkmkend pntext pntxta pntxtb protusertbl mmathPr".split()
)
_CHARS = {
    b"par": "\n",
    b"pard": "\n",
    b"line": "\n",
    b"sect": "\n\n",
    b"page": "\n\n",
    b"row": "\n",
    b"cell": " | ",
    b"tab": "\t",
    b"emdash": "\u2014",
    b"endash": "\u2013",
    b"lquote": "\u2018",
    b"rquote": "\u2019",
    b"ldblquote": "\u201c",
    b"rdblquote": "\u201d",
    b"bullet": "\u2022",
    b"emspace": " ",
    b"enspace": " ",
}
_SYMBOLS = {b"~": " ", b"_": "-", b"-": "", b"\\": "\\", b"{": "{", b"}": "}", b"\n": "\n"}
_TIME_CHECK_EVERY = 4096
_MAX_GROUP_DEPTH = 1000


def rtf_to_text(data: bytes, ctx: Context) -> str:
    """Return the text of an RTF document."""
    out: list[str] = []
    pending: bytearray = bytearray()  # \'hh bytes, decoded together (DBCS code pages)
    codepage = "cp1252"
    # Per group: (skipping?, unicode fallback length)
    stack: list[tuple[bool, int]] = []
    skipping = False
    uc = 1
    to_skip = 0  # fallback characters still to drop after a \uN
    pos = 0
    end = len(data)
    count = 0

    def flush() -> None:
        """Decode the pending \\'hh bytes together (a DBCS character spans two)."""
        if pending:
            out.append(decode_bytes(bytes(pending), codepage))
            pending.clear()

    while pos < end:
        match = _TOKEN.match(data, pos)
        if match is None:
            pos += 1
            continue
        pos = match.end()
        count += 1
        if count % _TIME_CHECK_EVERY == 0:
            ctx.check_time()
        word, param, hexbyte, symbol, brace, plain = match.groups()
        if brace is not None:
            flush()
            to_skip = 0
            if brace == b"{":
                if len(stack) >= _MAX_GROUP_DEPTH:
                    raise ValueError("RTF groups nested too deeply")
                stack.append((skipping, uc))
            elif stack:
                skipping, uc = stack.pop()
            continue
        if word is not None:
            if word == b"bin" and param:
                # Raw binary follows; its length is the parameter.
                pos += max(0, int(param))
                continue
            if word in _SKIP_DESTINATIONS:
                skipping = True
                continue
            if word == b"ansicpg" and param:
                codepage = f"cp{int(param)}"
                continue
            if skipping:
                continue
            if word == b"u" and param is not None:
                flush()
                # A signed 16-bit UTF-16 code unit; pairs are joined below.
                out.append(chr(int(param) % 65536))
                to_skip = uc
                continue
            if word == b"uc" and param is not None:
                uc = max(0, int(param))
                continue
            text = _CHARS.get(word)
            if text is not None:
                flush()
                out.append(text)
            continue
        if symbol is not None:
            if symbol == b"*":
                # An ignorable destination: skipped unless we know it (we know none).
                skipping = True
                continue
            if skipping:
                continue
            if to_skip:
                to_skip -= 1
                continue
            flush()
            out.append(_SYMBOLS.get(symbol, ""))
            continue
        if skipping:
            continue
        if hexbyte is not None:
            if to_skip:
                to_skip -= 1
                continue
            pending.append(int(hexbyte, 16))
            continue
        if plain is not None:
            flush()
            if to_skip:
                dropped = min(to_skip, len(plain))
                plain = plain[dropped:]
                to_skip -= dropped
            out.append(decode_bytes(plain, codepage))
    flush()
    text = "".join(out)
    # \uN escapes write astral characters as two surrogate code units.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def extract_rtf(data: bytes, location: str, kind: SegmentKind, ctx: Context) -> None:
    """Emit the RTF document's text as one segment."""
    ctx.text(location, rtf_to_text(data, ctx), kind)
