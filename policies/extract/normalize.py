"""Text normalisation and tolerant byte decoding shared by every extractor.

Normalised text is what detectors see: Unicode NFKC (full-width digits become
ASCII digits), invisible format characters removed (a zero-width space inside
an identifier must not hide it), control characters removed, whitespace runs
collapsed to one space while line breaks stay, because line structure helps
detectors find labels next to values.
"""

from __future__ import annotations

import codecs
import re
import unicodedata

# Every Unicode "Cf" (format) character plus the other code points that render as
# nothing (combining grapheme joiner, Hangul fillers, Khmer inherent vowels) and the
# C1 controls. A test checks this class against unicodedata so it cannot fall behind.
_INVISIBLE = re.compile(
    "["
    "\u0080-\u009f\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    "\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
    "\ud800-\udfff"  # lone surrogates (undecodable bytes) cannot be encoded downstream
    "]+"
)
# C0 controls other than the whitespace ones; NUL bytes between digits are a
# known way to split an identifier, so they go rather than becoming spaces.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f]+")
# Only runs that need rewriting match: a lone ASCII space is left alone (speed).
_HSPACE = re.compile(r"(?: [^\S\n]+|[^\S\n ][^\S\n]*)")
_SPACES = re.compile(r"  +")
_EDGE = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize(text: str) -> str:
    """Return `text` as detectors expect it: NFKC, no invisible characters, tidy whitespace."""
    if text.isascii() and text.isprintable():
        # One line of plain ASCII (most table cells and rows): only spaces to tidy.
        if "  " in text:
            text = _SPACES.sub(" ", text)
        return text.strip()
    text = _CONTROL.sub("", text)
    if not text.isascii():
        # Invisible characters go first: left in place they would stop NFKC from
        # composing the characters on either side ("e", ZWSP, combining acute).
        text = _INVISIBLE.sub("", text)
        text = unicodedata.normalize("NFKC", text)
        text = text.replace("\u2028", "\n").replace("\u2029", "\n")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.isascii() and "\t" not in text and "\x0b" not in text and "\x0c" not in text:
        # Plain spaces are the only horizontal whitespace left (the C0 controls that
        # count as whitespace went above): the patterns below, tried at every
        # position, reduce to substring tests and runs of spaces.
        if "  " in text:
            text = _SPACES.sub(" ", text)
        if " \n" in text or "\n " in text:
            text = _EDGE.sub("\n", text)
    else:
        text = _HSPACE.sub(" ", text)
        text = _EDGE.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


# Labels mail clients declare that name a narrower charset than the one they
# really use; decoding with the superset (as browsers do) loses nothing.
_SUPERSETS = {
    "iso8859-1": "cp1252",
    "latin-1": "cp1252",
    "ascii": "utf-8",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
}


def _codec(charset: str | None) -> str | None:
    """Return the Python codec name for a declared charset, or None if unknown or not text."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").lower()
    if label.endswith("-i"):
        label = label[:-2]
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    # Byte-to-byte codecs (zlib, base64, rot13...) are not charsets; a hostile
    # label must not make us run them.
    if not getattr(info, "_is_text_encoding", True):
        return None
    return _SUPERSETS.get(info.name, info.name)


def _utf16_without_bom(data: bytes) -> str | None:
    """Guess UTF-16 from NUL bytes at alternate positions (Excel's "Unicode text")."""
    sample = data[:2048]
    if len(sample) < 8:
        return None
    half = len(sample) // 2
    odd_nuls = sample[1::2].count(0)
    even_nuls = sample[0::2].count(0)
    if odd_nuls > half * 0.4 and even_nuls < half * 0.05:
        return "utf-16-le"
    if even_nuls > half * 0.4 and odd_nuls < half * 0.05:
        return "utf-16-be"
    return None


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode bytes as text, never raising: BOM, declared charset, UTF-8, then cp1252."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return data.decode("utf-32", "replace")
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", "replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", "replace")
    codec = _codec(charset)
    if codec is None or codec == "utf-8":
        guessed = _utf16_without_bom(data) if b"\x00" in data[:2048] else None
        if guessed:
            return data.decode(guessed, "replace")
    if codec is not None and codec != "utf-8":
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError, ValueError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    fallback = codec if codec not in (None, "utf-8") else "cp1252"
    try:
        return data.decode(fallback or "cp1252", "replace")
    except (LookupError, ValueError):
        return data.decode("utf-8", "replace")


# Control bytes that text does not contain (ESC is allowed: ISO-2022 encodings use it).
_BINARY_BYTES = bytes(range(0, 9)) + bytes(range(14, 27)) + bytes(range(28, 32)) + b"\x7f"


def looks_like_text(data: bytes) -> bool:
    """Tell whether an unknown blob is text worth scanning (sampled, cheap)."""
    if not data:
        return True
    if _utf16_without_bom(data) or data.startswith(
        (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    ):
        return True
    sample = data[:4096]
    if len(data) > 8192:
        middle = len(data) // 2
        sample += data[middle : middle + 4096]
    binary = len(sample) - len(sample.translate(None, _BINARY_BYTES))
    return binary <= len(sample) // 100
