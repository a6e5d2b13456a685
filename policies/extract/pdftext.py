"""Fast text extraction for ordinary PDF pages, giving the same text as pypdf.

pypdf's `extract_text` reads a content stream one byte at a time into objects
and interprets each operator through several layers of calls: about a
millisecond per page, most of the time of a PDF-heavy message. This module
reads the same operators with one regular expression over the decoded stream,
keeps the text state in local variables, decodes strings with tables built
once per font, and applies the same layout rules as pypdf's plain extraction
(a line break when text moves down by most of a line, a space when it moves
right by more than half a space), so its output is pypdf's.

Fonts are decoded by pypdf itself (`Font.from_font_resource`: encodings,
ToUnicode maps, widths). Whatever this module does not handle exactly as
pypdf does (inline images, form XObjects, Type3 fonts, right-to-left scripts,
operands of an unexpected type, unbalanced strings, a token budget) raises
`Unsupported`, and that page goes to pypdf; tests compare both on generated
content streams.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from pypdf._codecs import encoding_dict_from_named_encoding
from pypdf.generic import DictionaryObject
from pypdf.generic._font import Font

# pypdf's own defaults for `extract_text()`.
_SPACE_WIDTH_DEFAULT = 200.0
_MAX_TOKENS = 1_000_000  # beyond this, pypdf's own parsing budget decides
_IDENTITY = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)

# Between tokens pypdf skips these; names and operators end at \s (which has
# \v but not NUL) or a delimiter. A stream with \v goes to pypdf.
_WS = rb"\x00\t\n\f\r "
_SPACE = rb"\t\n\f\r "
_DELIM = rb"()<>\[\]{}/%"
_TOKEN_RE = re.compile(
    rb"[" + _WS + rb"]*(?:"
    rb"(?P<num>[+-]?(?:\d+\.?\d*|\.\d+))(?=[" + _WS + _DELIM + rb"]|\Z)"
    rb"|(?P<name>/[^" + _SPACE + _DELIM + rb"]*)"
    rb"|(?P<op>[A-Za-z'\"][^" + _SPACE + _DELIM + rb"]*)"
    rb"|(?P<str>\()"
    rb"|(?P<dopen><<)|(?P<dclose>>>)"
    rb"|(?P<hex><[0-9A-Fa-f" + _WS + rb"]*>)"
    rb"|(?P<aopen>\[)|(?P<aclose>\])"
    rb"|(?P<comment>%[^\r\n]*)"
    rb"|(?P<end>\Z)"
    rb")",
)
_STRING_SPECIAL = re.compile(rb"[()\\]")
_ESCAPE_RE = re.compile(rb"\\(?:([0-7]{1,3})|([\r\n][\r\n]?)|(.))", re.S)
_ESCAPES = {
    b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f", b"(": b"(", b")": b")",
    b"/": b"/", b"\\": b"\\", b" ": b" ", b"%": b"%", b"<": b"<", b">": b">", b"[": b"[",
    b"]": b"]", b"#": b"#", b"_": b"_", b"&": b"&", b"$": b"$",
}  # fmt: skip
_NAME_ESCAPE = re.compile(rb"#([0-9A-Fa-f]{2})")
# pypdf only parses a stream that holds one of these bytes sequences.
_TEXT_OPERATOR = re.compile(rb"T[jJ]|Do|['\"]")
# Text in these scripts is reordered by pypdf; such pages are left to it.
_RTL = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufeff]")


class Unsupported(Exception):
    """The page uses something only pypdf handles: extract it with pypdf."""


class _FontInfo:
    """One font's decoding tables: bytes to text, bytes to glyph widths."""

    __slots__ = ("by_byte", "decode", "font", "half_space", "widths")

    def __init__(self, font: Font) -> None:
        """Precompute what every string shown in this font needs."""
        self.font = font
        self.half_space = font.space_width / 2
        encoding = font.encoding
        cmap = font.character_map
        default = font.character_widths["default"]
        self.by_byte = isinstance(encoding, dict)
        if isinstance(encoding, dict):
            table: dict[int, str] = {}
            widths: list[float] = []
            lengths: list[int] = []
            for code in range(256):
                char = encoding.get(code, chr(code))
                lengths.append(len(char))
                table[code] = "".join(cmap.get(c, c) for c in char) if cmap else char
                raw = chr(code)
                widths.append(
                    font.space_width
                    if raw == font.space_char
                    else font.character_widths.get(raw, default)
                )
            self.widths = widths
            self.decode: Callable[[bytes], tuple[str, int, float]] = self._by_byte(
                table, None if max(lengths) == 1 else lengths
            )
        else:
            self.widths = []
            self.decode = self._by_codec(encoding)

    def _by_byte(
        self, table: dict[int, str], lengths: list[int] | None
    ) -> Callable[[bytes], tuple[str, int, float]]:
        get = self.widths.__getitem__

        def decode(data: bytes) -> tuple[str, int, float]:
            # (text, length of the text before ToUnicode mapping, sum of glyph widths)
            length = len(data) if lengths is None else sum(map(lengths.__getitem__, data))
            return data.decode("latin-1").translate(table), length, sum(map(get, data))

        return decode

    def _by_codec(self, codec: str) -> Callable[[bytes], tuple[str, int, float]]:
        font = self.font
        cmap = font.character_map
        char_widths = font.character_widths
        default = char_widths["default"]
        space_char, space_width = font.space_char, font.space_width

        def decode(data: bytes) -> tuple[str, int, float]:
            try:
                text = data.decode(codec, "surrogatepass")
            except UnicodeDecodeError:
                text = data.decode(codec, "replace")
            width = 0.0
            for c in text:
                width += space_width if c == space_char else char_widths.get(c, default)
            shown = "".join([cmap.get(c, c) for c in text]) if cmap else text
            return shown, len(text), width

        return decode


def _unknown_font() -> Font:
    """The stand-in pypdf uses when Tf names a font the page does not have."""
    return Font("Unknown", encoding=dict.fromkeys(range(256), "\ufffd"), space_width=250)


def _initial_font() -> Font:
    """pypdf's font before the first Tf: WinAnsi encoding, default widths."""
    return Font(
        "NotInitialized", encoding=encoding_dict_from_named_encoding("cp1252"), sub_type="Unknown"
    )


class FontCache:
    """Decoding tables of the fonts of one document, shared by its pages."""

    def __init__(self) -> None:
        """Start empty; fonts are read when a page first uses them."""
        self._by_object: dict[int, _FontInfo | None] = {}
        self.unknown = _FontInfo(_unknown_font())
        self.initial = _FontInfo(_initial_font())

    def page_fonts(self, resources: DictionaryObject) -> dict[str, _FontInfo]:
        """The fonts a page's resources name, as pypdf builds them for that page."""
        fonts = resources.get("/Font")
        if fonts is None:
            return {}
        fonts = fonts.get_object()
        if not isinstance(fonts, DictionaryObject):
            raise Unsupported("font resources are not a dictionary")
        out: dict[str, _FontInfo] = {}
        for name in fonts:
            try:
                obj = fonts[name].get_object()
            except (AttributeError, TypeError):
                continue  # pypdf leaves such a font out, as if it were missing
            key = id(obj)
            if key not in self._by_object:
                self._by_object[key] = self._read(obj)
            info = self._by_object[key]
            if info is not None:
                out[name] = info
        return out

    @staticmethod
    def _read(obj: Any) -> _FontInfo | None:
        if not isinstance(obj, DictionaryObject):
            return None
        if obj.get("/Subtype") == "/Type3":
            raise Unsupported("Type3 font")
        try:
            font = Font.from_font_resource(obj)
        except (AttributeError, TypeError):
            return None  # pypdf leaves such a font out, as if it were missing
        if font.character_widths.get(font.space_char, 0) == 0:
            font.space_width = _SPACE_WIDTH_DEFAULT
        return _FontInfo(font)


def _mult(m: tuple[float, ...], n: tuple[float, ...]) -> tuple[float, ...]:
    # The operations and their order are pypdf's, so positions compare exactly.
    return (
        m[0] * n[0] + m[1] * n[2],
        m[0] * n[1] + m[1] * n[3],
        m[2] * n[0] + m[3] * n[2],
        m[2] * n[1] + m[3] * n[3],
        m[4] * n[0] + m[5] * n[2] + n[4],
        m[4] * n[1] + m[5] * n[3] + n[5],
    )


def _literal(data: bytes, start: int) -> tuple[bytes, int]:
    """The bytes of the literal string opening at data[start] and the index after it."""
    depth = 1
    i = start + 1
    while True:
        m = _STRING_SPECIAL.search(data, i)
        if m is None:
            raise Unsupported("unterminated string")
        j = m.start()
        c = data[j]
        if c == 0x5C:  # backslash: the next byte is escaped, whatever it is
            i = j + 2
            continue
        depth += 1 if c == 0x28 else -1
        i = j + 1
        if depth == 0:
            raw = data[start + 1 : j]
            return (_ESCAPE_RE.sub(_unescape, raw) if b"\\" in raw else raw), i


def _unescape(m: re.Match[bytes]) -> bytes:
    octal, newline, char = m.groups()
    if octal is not None:
        value = int(octal, 8)
        # Over 255 pypdf keeps the backslash and reads the digits as text.
        return b"\\" + octal if value > 255 else bytes([value])
    if newline is not None:
        return b""
    return _ESCAPES.get(char, b"\\" + char)


def _hex(token: bytes) -> bytes:
    digits = bytes(c for c in token[1:-1] if c not in b"\x00\t\n\f\r ")
    if len(digits) % 2:
        digits += b"0"
    return bytes.fromhex(digits.decode("ascii"))


def _name(token: bytes) -> str:
    if b"#" in token:
        token = _NAME_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), token)
    return token.decode("utf-8", "surrogateescape")


def _operations(data: bytes) -> list[tuple[bytes, list[Any]]]:
    """(operator, operands) of a content stream; strings are bytes, numbers floats."""
    ops: list[tuple[bytes, list[Any]]] = []
    operands: list[Any] = []
    stack: list[list[Any]] = []  # open arrays and dictionaries
    pos = 0
    size = len(data)
    count = 0
    match = _TOKEN_RE.match
    while True:
        m = match(data, pos)
        if m is None:
            raise Unsupported("unexpected byte in content stream")
        count += 1
        if count > _MAX_TOKENS:
            raise Unsupported("content stream too long")
        kind = m.lastgroup
        pos = m.end()
        value: Any
        if kind == "num":
            value = float(m.group(kind))
        elif kind == "op":
            op = m.group(kind)
            if stack:
                raise Unsupported("operator inside an array or dictionary")
            if op in (b"BI", b"ID", b"EI", b"R"):
                raise Unsupported("inline image or object reference")
            ops.append((op, operands))
            operands = []
            continue
        elif kind == "str":
            value, pos = _literal(data, m.start(kind))
        elif kind == "name":
            value = _Name(_name(m.group(kind)))
        elif kind == "hex":
            value = _hex(m.group(kind))
        elif kind in ("aopen", "dopen"):
            stack.append(operands)
            operands = []
            continue
        elif kind in ("aclose", "dclose"):
            if not stack:
                raise Unsupported("unbalanced array or dictionary")
            inner = operands
            operands = stack.pop()
            value = inner if kind == "aclose" else _Dict()
        elif kind == "comment":
            continue
        else:  # end of data
            if pos < size or stack:
                raise Unsupported("truncated content stream")
            return ops
        operands.append(value)


class _Name(str):
    """A name operand (pypdf's NameObject is a str too)."""


class _Dict:
    """A dictionary operand (marked content properties): never text."""


def page_text(page: Any, fonts: FontCache) -> str:
    """The text of one page, as pypdf's `page.extract_text()` gives it.

    Raises Unsupported when the page needs pypdf.
    """
    resources = page.get_inherited("/Resources", None)
    if resources is None:
        return ""
    resources = resources.get_object()
    if not isinstance(resources, DictionaryObject) or not resources:
        return ""
    page_fonts = fonts.page_fonts(resources)
    contents = page.get_contents()
    if contents is None:
        if "/Contents" in page:
            raise Unsupported("contents pypdf may read differently")
        return ""
    data = contents.get_data()
    if not _TEXT_OPERATOR.search(data):
        return ""
    if b"\x0b" in data:
        raise Unsupported("vertical tab")
    return _Interpreter(page_fonts, fonts, resources).run(_operations(data))


def _number(operands: list[Any], index: int, default: float) -> float:
    if index < len(operands) and isinstance(operands[index], float):
        return float(operands[index])
    return default


class _Interpreter:
    """The text state machine of one page (PDF 32000-1, 9.3 and 9.4)."""

    def __init__(
        self, page_fonts: dict[str, _FontInfo], cache: FontCache, resources: DictionaryObject
    ) -> None:
        """Fresh state, as at the start of every page."""
        self.page_fonts = page_fonts
        self.cache = cache
        self.resources = resources
        self.cm: tuple[float, ...] = _IDENTITY
        self.tm: tuple[float, ...] = _IDENTITY
        self.cm_stack: list[tuple[Any, ...]] = []
        self.m_prev: tuple[float, ...] = _IDENTITY  # text x transform at the last check
        self.scale_prev = (1.0, 1.0)  # its x and y scale factors
        self.char_scale = 1.0
        self.space_scale = 1.0
        self.char_spacing = 0.0
        self.info = cache.initial
        self.half_space = 500.0  # pypdf's value until the first Tf
        self.previous_font_space: float | None = None
        self.str_widths = 0.0
        self.str_height = 0.0
        self.leading = 0.0
        self.font_size = 12.0
        self.line_span: tuple[int, float, float] | None = None
        # The pending text run and the page's output, as pieces (joining strings
        # one by one would be quadratic on a page of many short strings), with
        # the last character of each, which the layout rules look at.
        self.text: list[str] = []
        self.text_last = ""
        self.output: list[str] = []
        self.output_last = ""

    def run(self, ops: list[tuple[bytes, list[Any]]]) -> str:
        """Interpret every operation and return the page's text."""
        for op, operands in ops:
            if op == b"Tj":
                self.show(operands)
            elif op == b"TJ":
                self.show_array(operands)
            elif op == b"Td":
                self.move(operands)
            elif op == b"T*":
                self.next_line()
            elif op == b"Tf":
                self.set_font(operands)
            elif op == b"BT":
                self.tm = _IDENTITY
                self.flush()
            elif op == b"ET":
                self.flush()
            elif op == b"Tm":
                self.set_matrix(operands)
            elif op == b"cm":
                self.concat(operands)
            elif op == b"q":
                self.cm_stack.append(
                    (
                        self.cm,
                        self.info,
                        self.font_size,
                        self.char_scale,
                        self.space_scale,
                        self.char_spacing,
                        self.leading,
                    )
                )
            elif op == b"Q":
                if self.cm_stack:
                    (
                        self.cm,
                        self.info,
                        self.font_size,
                        self.char_scale,
                        self.space_scale,
                        self.char_spacing,
                        self.leading,
                    ) = self.cm_stack.pop()
                else:
                    self.cm = _IDENTITY
            elif op == b"TL":
                self.leading = _number(operands, 0, 0.0)
            elif op == b"Tc":
                self.char_spacing = _number(operands, 0, 0.0)
            elif op == b"Tw":
                self.space_scale = 1.0 + _number(operands, 0, 0.0)
            elif op == b"Tz":
                self.char_scale = _number(operands, 0, 100.0) / 100
            elif op == b"TD":
                if len(operands) >= 2:
                    if isinstance(operands[1], float):
                        self.leading = -operands[1]
                    self.move(operands)
            elif op == b"'":
                self.next_line()
                self.show(operands)
            elif op == b'"':
                if len(operands) >= 3:
                    self.space_scale = 1.0 + _number(operands, 0, 0.0)
                    self.char_spacing = _number(operands, 1, 0.0)
                    self.next_line()
                    self.show(operands[2:])
            elif op == b"Do":
                self.paint(operands)
        return "".join(self.output) + "".join(self.text)

    # --- state ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Move the pending text to the output."""
        if self.text_last:
            self.output_last = self.text_last
        self.output += self.text
        self.text = []
        self.text_last = ""

    def add_text(self, piece: str) -> None:
        """Append to the pending text run."""
        if piece:
            self.text.append(piece)
            self.text_last = piece[-1]

    def set_font(self, operands: list[Any]) -> None:
        """Tf: a new font and size."""
        if self.text_last:
            self.previous_font_space = self.font_size * self.half_space
        self.flush()
        if not operands or not isinstance(operands[0], _Name):
            raise Unsupported("Tf without a font name")
        self.info = self.page_fonts.get(str(operands[0]), self.cache.unknown)
        self.half_space = self.info.half_space
        if len(operands) < 2 or not isinstance(operands[1], float):
            raise Unsupported("Tf without a size")
        self.font_size = operands[1]

    def concat(self, operands: list[Any]) -> None:
        """cm: transform the user space."""
        self.flush()
        if len(operands) != 6 or not all(isinstance(x, float) for x in operands):
            raise Unsupported("cm operands")
        self.cm = _mult(tuple(operands), self.cm)

    def set_matrix(self, operands: list[Any]) -> None:
        """Tm: set the text matrix."""
        if len(operands) < 6 or not all(isinstance(x, float) for x in operands[:6]):
            raise Unsupported("Tm operands")
        self.tm = tuple(operands[:6])
        widths, self.str_widths = self.str_widths / 1000, 0.0
        self.check(widths)

    def move(self, operands: list[Any]) -> None:
        """Td: move to the start of the next line, offset from this one."""
        tx = _number(operands, 0, 0.0)
        ty = _number(operands, 1, 0.0)
        tm = self.tm
        self.tm = (
            tm[0],
            tm[1],
            tm[2],
            tm[3],
            tm[4] + (tx * tm[0] + ty * tm[2]),
            tm[5] + (tx * tm[1] + ty * tm[3]),
        )
        widths, self.str_widths = self.str_widths / 1000, 0.0
        self.check(widths)

    def next_line(self) -> None:
        """T*: move down by the leading."""
        tm = self.tm
        self.tm = (
            tm[0],
            tm[1],
            tm[2],
            tm[3],
            tm[4] - self.leading * tm[2],
            tm[5] - self.leading * tm[3],
        )
        widths, self.str_widths = self.str_widths / 1000, 0.0
        self.check(widths)

    def paint(self, operands: list[Any]) -> None:
        """Do: an image adds a line break; a form (which may hold text) needs pypdf."""
        self.flush()
        if self.output_last and self.output_last != "\n":
            self.output.append("\n")
            self.output_last = "\n"
        xobjects = self.resources.get("/XObject")
        if xobjects is None or not operands or not isinstance(operands[0], _Name):
            return
        xobjects = xobjects.get_object()
        if not isinstance(xobjects, DictionaryObject):
            raise Unsupported("XObject resources")
        target = xobjects.get(str(operands[0]))
        if target is None:
            return
        target = target.get_object()
        if not isinstance(target, DictionaryObject) or target.get("/Subtype") != "/Image":
            raise Unsupported("form XObject")

    # --- showing text ----------------------------------------------------------------------

    def show(self, operands: list[Any]) -> None:
        """Tj: show a string."""
        if not operands or not isinstance(operands[0], bytes):
            if operands and isinstance(operands[0], (str, _Name)):
                raise Unsupported("Tj with a name")
            self.check(0.0)
            return
        self.previous_font_space = None
        shown, length, widths = self.info.decode(operands[0])
        if _RTL.search(shown):
            raise Unsupported("right-to-left text")
        self.add_text(shown)
        self.str_widths += widths * self.font_size + 1000 * self.char_spacing * length
        self.str_height = self.font_size
        self.check(0.0)

    def show_space(self) -> None:
        """The space pypdf adds for a wide gap inside a TJ array (a Tj of " ")."""
        self.previous_font_space = None
        font = self.info.font
        width = (
            font.space_width
            if font.space_char == " "
            else font.character_widths.get(" ", font.character_widths["default"])
        )
        self.add_text(" ")
        self.str_widths += width * self.font_size + 1000 * self.char_spacing * 1
        self.str_height = self.font_size
        self.check(0.0)

    def show_array(self, operands: list[Any]) -> None:
        """TJ: strings with position adjustments; a wide gap reads as a space."""
        gap = self.half_space * 0.95
        if not operands or not isinstance(operands[0], list):
            return
        for item in operands[0]:
            if isinstance(item, bytes):
                self.show([item])
            elif isinstance(item, float):
                widths = self.str_widths - item * self.font_size
                previous = self.text_last or self.output_last
                if -item >= gap and previous and previous not in " \n":
                    self.show_space()
                self.str_widths = widths

    # --- layout ----------------------------------------------------------------------------

    def check(self, str_widths: float) -> None:
        """After each move or string: start a new line, or add a space, as pypdf does."""
        space_width = self.font_size * self.half_space
        if self.previous_font_space is not None:
            space_width = min(space_width, self.previous_font_space)
        spacewidth = space_width / 1000
        m_prev = self.m_prev
        # With the identity as CTM the product is the text matrix itself (up to
        # the sign of a zero, which no comparison below can see).
        m = self.tm if self.cm is _IDENTITY else _mult(self.tm, self.cm)
        # Upright or upside down (m[3] clearly non-zero) reads along x; turned, along y.
        upright = m[3] > 1e-6 or m[3] < -1e-6
        delta_x = m[4] - m_prev[4]
        delta_y = m[5] - m_prev[5]
        scale_prev_x, scale_prev_y = self.scale_prev
        if m[:4] == m_prev[:4]:
            scale_y = scale_prev_y  # moved, not scaled: the usual case
        else:
            scale_y = math.sqrt(m[2] ** 2 + m[3] ** 2)
            self.scale_prev = (math.sqrt(m[0] ** 2 + m[1] ** 2), scale_y)
        self.m_prev = m
        if upright:
            moved_height, moved_width, axis_index = delta_y, delta_x, 5
        else:
            moved_height, moved_width, axis_index = delta_x, delta_y, 4
        axis = m[axis_index]
        span = self.line_span
        if span is None or span[0] != axis_index:
            distance = abs(moved_height)
        else:
            lower, upper = span[1], span[2]
            distance = 0.0 if lower <= axis <= upper else min(abs(axis - lower), abs(axis - upper))
        last = self.text_last or self.output_last
        threshold = 0.8 * min(self.str_height * scale_prev_y, self.font_size * scale_y)
        if distance > threshold:
            if last not in ("", "\n"):
                self.flush()
                self.output.append("\n")
                self.output_last = "\n"
            self.line_span = (axis_index, axis, axis)
            return
        moved_to_other_baseline = abs(moved_height) > threshold
        if (
            moved_to_other_baseline or moved_width >= (spacewidth + str_widths) * scale_prev_x
        ) and last not in ("", " "):
            self.add_text(" ")
        if last in ("", "\n") or span is None or span[0] != axis_index:
            self.line_span = (axis_index, axis, axis)
        else:
            self.line_span = (axis_index, min(span[1], axis), max(span[2], axis))
