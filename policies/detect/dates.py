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


def _year(text: str, this_year: int) -> int:
    year = int(text)
    if len(text) == 2:
        # Two-digit years in clinical mail are birth or visit years: read the
        # ones ahead of this year as last century.
        year += 2000 if year <= this_year % 100 else 1900
    return year


def parse_date(m: re.Match[str], this_year: int = 0) -> dt.date | None:
    """The date a DATE_PATTERN match names, or None when it is no real date.

    this_year (default: today's) lets a caller parsing many dates ask the clock once.
    """
    this_year = this_year or dt.date.today().year
    group = m.group
    try:
        if (m1 := group("m1")) is not None:
            month, day, year = int(m1), int(group("d1")), _year(group("y1"), this_year)
            if month > 12 >= day:
                month, day = day, month  # "25/12/1970": written day first
        elif (y2 := group("y2")) is not None:
            year, month, day = int(y2), int(group("m2")), int(group("d2"))
        elif (mn3 := group("mn3")) is not None:
            month, day, year = _MONTHS[mn3[:3]], int(group("d3")), int(group("y3"))
        else:
            month, day = _MONTHS[group("mn4")[:3]], int(group("d4"))
            year = _year(group("y4"), this_year)
        if not 1880 <= year <= this_year + 1:
            return None
        return dt.date(year, month, day)
    except (ValueError, KeyError):
        return None
