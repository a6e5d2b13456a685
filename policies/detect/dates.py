"""Calendar dates as people write them in US clinical mail, parsed and checked."""

from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Any

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


# DATE_PATTERN's groups in order: match.groups() of a pattern that adds no
# capturing group of its own.
DATE_GROUPS = ("m1", "d1", "y1", "y2", "m2", "d2", "mn3", "d3", "y3", "d4", "mn4", "y4")


def parse_date(m: re.Match[str], this_year: int = 0) -> dt.date | None:
    """The date a DATE_PATTERN match names, or None when it is no real date.

    this_year (default: today's) lets a caller parsing many dates ask the clock once.
    """
    return date_groups(m.group(*DATE_GROUPS), this_year or dt.date.today().year)


def date_groups(groups: tuple[Any, ...], this_year: int) -> dt.date | None:
    """parse_date on the DATE_GROUPS of a match, in that order (one call to read them)."""
    # Any: each alternative of the pattern sets all of its groups, or none.
    m1, d1, y1, y2, m2, d2, mn3, d3, y3, d4, mn4, y4 = groups
    try:
        if m1 is not None:
            month, day, year = int(m1), int(d1), int(y1)
            if len(y1) == 2:
                year = _year(y1, this_year)
            if month > 12 >= day:
                month, day = day, month  # "25/12/1970": written day first
        elif y2 is not None:
            year, month, day = int(y2), int(m2), int(d2)
        elif mn3 is not None:
            month, day, year = _MONTHS[mn3[:3]], int(d3), int(y3)
        else:
            month, day = _MONTHS[mn4[:3]], int(d4)
            year = _year(y4, this_year)
        if not 1880 <= year <= this_year + 1:
            return None
        return dt.date(year, month, day)
    except (ValueError, KeyError):
        return None


# "month/day" as a numeric date may write them (one or two digits each) -> "MM-DD",
# for every day of a leap year: a dictionary look-up checks and pads both at once.
_MONTH_DAY = {
    f"{m}/{d}": f"{month:02d}-{day:02d}"
    for month in range(1, 13)
    for day in range(1, 32)
    if day <= (31 if month in (1, 3, 5, 7, 8, 10, 12) else 29 if month == 2 else 30)
    for m in {str(month), f"{month:02d}"}
    for d in {str(day), f"{day:02d}"}
}


def iso_date(groups: tuple[Any, ...], this_year: int) -> str | None:
    """date_groups(groups, this_year) as an ISO string, or None when it is no real date.

    Numeric dates with a four-digit year (nearly all dates in tables) are checked
    and written here without the general parser; every other shape goes to it.
    """
    m1, d1, y1, y2, m2, d2 = groups[:6]
    year: str
    if m1 is not None:
        # date_groups swaps day and month when month > 12 >= day: exactly when
        # month/day is no date and day/month is one.
        md = _MONTH_DAY.get(m1 + "/" + d1) or _MONTH_DAY.get(d1 + "/" + m1)
        year = y1
    elif y2 is not None:
        md = _MONTH_DAY.get(m2 + "/" + d2)
        year = y2
    else:
        md = None
    # A string comparison orders four ASCII digits as their numbers do; \d also
    # matches other scripts' digits, which the general parser reads.
    if (
        md is not None
        and len(year) == 4
        and year.isascii()
        and "1880" <= year <= str(this_year + 1)
        and (md != "02-29" or calendar.isleap(int(year)))
    ):
        return year + "-" + md
    date = date_groups(groups, this_year)
    return None if date is None else date.isoformat()
