"""Calendar dates as people write them in US clinical mail, parsed and checked."""

from __future__ import annotations

import datetime as dt
import re

_MONTHS = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "may": 5,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
}
_MONTH_RE = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
# Applied to lower-cased text. Numeric forms are US order (month first).
DATE_PATTERN = (
    r"(?:(?P<m1>\d{1,2})\s?[/.-]\s?(?P<d1>\d{1,2})\s?[/.-]\s?(?P<y1>\d{4}|\d{2})(?![\d/])"
    r"|(?P<y2>(?:19|20)\d{2})-(?P<m2>\d{1,2})-(?P<d2>\d{1,2})(?!\d)"
    rf"|(?P<mn3>{_MONTH_RE})\.?[\s-]+(?P<d3>\d{{1,2}})(?:st|nd|rd|th)?,?[\s-]+(?P<y3>\d{{4}})(?!\d)"
    rf"|(?P<d4>\d{{1,2}})(?:st|nd|rd|th)?[\s-]+(?P<mn4>{_MONTH_RE})\.?,?[\s-]+"
    r"(?P<y4>\d{4}|\d{2})(?![\d/]))"
)
DATE_RE = re.compile(rf"(?<![\w/.-]){DATE_PATTERN}")


def _year(text: str) -> int:
    year = int(text)
    if len(text) == 2:
        # Two-digit years in clinical mail are birth or visit years: read the
        # ones ahead of this year as last century.
        this = dt.date.today().year % 100
        year += 2000 if year <= this else 1900
    return year


def parse_date(m: re.Match[str]) -> dt.date | None:
    """The date a DATE_PATTERN match names, or None when it is no real date."""
    g = m.groupdict()
    try:
        if g["m1"] is not None:
            month, day, year = int(g["m1"]), int(g["d1"]), _year(g["y1"])
            if month > 12 >= day:
                month, day = day, month  # "25/12/1970": written day first
        elif g["y2"] is not None:
            year, month, day = int(g["y2"]), int(g["m2"]), int(g["d2"])
        elif g["mn3"] is not None:
            month, day, year = _MONTHS[g["mn3"][:3]], int(g["d3"]), int(g["y3"])
        else:
            month, day, year = _MONTHS[g["mn4"][:3]], int(g["d4"]), _year(g["y4"])
        if not 1880 <= year <= dt.date.today().year + 1:
            return None
        return dt.date(year, month, day)
    except (ValueError, KeyError):
        return None
