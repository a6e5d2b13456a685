"""iCalendar (.ics, text/calendar) to text: the human-written properties of each event."""

from __future__ import annotations

import html
import re

from policies.extract.context import Context
from policies.extract.model import SegmentKind

_UNFOLD = re.compile(r"\r?\n[ \t]")
_ESCAPE = re.compile(r"\\([\\;,nN])")
_CN = re.compile(r';CN=("[^"]*"|[^;:]*)', re.IGNORECASE)
_TAG = re.compile(r"<[^<>]*+>")
# Properties people write or that name people; everything else is scheduling data.
_WANTED = {
    "SUMMARY": "Summary",
    "DESCRIPTION": "Description",
    "X-ALT-DESC": "Description",
    "LOCATION": "Location",
    "COMMENT": "Comment",
    "CONTACT": "Contact",
    "CATEGORIES": "Categories",
    "ATTENDEE": "Attendee",
    "ORGANIZER": "Organizer",
}
_COMPONENTS = {"VEVENT": "event", "VTODO": "task", "VJOURNAL": "journal"}


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


def extract_ical(text: str, location: str, kind: SegmentKind, ctx: Context) -> None:
    """Emit one segment per event/task (`location/event N`), and one for loose properties."""
    counters: dict[str, int] = {}
    current: list[str] = []
    loose: list[str] = []
    where = ""
    for number, line in enumerate(_UNFOLD.sub("", text).splitlines(), 1):
        if number % 1024 == 0:
            ctx.check_time()
        name, sep, value = line.partition(":")
        if not sep:
            continue
        prop, _, params = name.partition(";")
        prop = prop.strip().upper()
        if prop == "BEGIN" and value.strip().upper() in _COMPONENTS:
            label = _COMPONENTS[value.strip().upper()]
            counters[label] = counters.get(label, 0) + 1
            where = f"{label} {counters[label]}"
            current = []
            continue
        if prop == "END" and where and value.strip().upper() in _COMPONENTS:
            ctx.text(f"{location}/{where}", "\n".join(current), kind)
            where = ""
            current = []
            continue
        wanted = _WANTED.get(prop)
        if wanted is None:
            continue
        if prop in ("ATTENDEE", "ORGANIZER"):
            cn = _CN.search(";" + params)
            person = cn.group(1).strip('"') if cn else ""
            value = f"{person} {value.removeprefix('mailto:').removeprefix('MAILTO:')}".strip()
        elif prop == "X-ALT-DESC":
            value = html.unescape(_TAG.sub(" ", value))
        entry = f"{wanted}: {_unescape(value)}"
        (current if where else loose).append(entry)
    if where:
        # Truncated calendar: keep what the unfinished component had.
        ctx.text(f"{location}/{where}", "\n".join(current), kind)
    ctx.text(location, "\n".join(loose), kind)
