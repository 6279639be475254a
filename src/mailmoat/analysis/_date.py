"""RFC 5322 date-time, as written after the ";" of a Received stamp (layer L2).

RFC 5322 §3.3::

    date-time       =   [ day-of-week "," ] date time [CFWS]
    day-of-week     =   ([FWS] day-name) / obs-day-of-week
    day-name        =   "Mon" / "Tue" / "Wed" / "Thu" / "Fri" / "Sat" / "Sun"
    date            =   day month year
    day             =   ([FWS] 1*2DIGIT FWS) / obs-day
    month           =   "Jan" / "Feb" / "Mar" / "Apr" / "May" / "Jun" /
                        "Jul" / "Aug" / "Sep" / "Oct" / "Nov" / "Dec"
    year            =   (FWS 4*DIGIT FWS) / obs-year
    time            =   time-of-day zone
    time-of-day     =   hour ":" minute [ ":" second ]
    zone            =   (FWS ( "+" / "-" ) 4DIGIT) / obs-zone

§4.3 (obsolete forms, which we accept)::

    obs-year        =   [CFWS] 2*DIGIT [CFWS]
    obs-zone        =   "UT" / "GMT" / "EST" / "EDT" / "CST" / "CDT" / "MST" / "MDT" /
                        "PST" / "PDT" / %d65-73 / %d75-90 / %d97-105 / %d107-122

"Where a two or three digit year occurs in a date, the year is to be interpreted as follows:
If a two digit year is encountered whose value is between 00 and 49, the year is interpreted
by adding 2000 ... between 50 and 99 ... adding 1900. If a three digit year is encountered,
the year is interpreted by adding 1900." Military zones "SHOULD all be considered equivalent
to "-0000" unless there is out-of-band information". A leap second (60) is read as 59.

SECURITY: the text is untrusted. It is bounded to ``limits.ANALYSIS_DATE_MAX`` octets, white
space is collapsed before matching, and one anchored regular expression without nested
quantifiers does the rest. Impossible dates (31 Feb, hour 25, a zone of +9999) give ``None``,
never an exception. The stdlib ``email.utils`` is not used (ARCHITECTURE.md).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

from mailmoat.limits import ANALYSIS_DATE_MAX

__all__ = ["parse_date_time"]

_MONTHS: Final = {
    m: i + 1
    for i, m in enumerate(
        (b"jan", b"feb", b"mar", b"apr", b"may", b"jun",
         b"jul", b"aug", b"sep", b"oct", b"nov", b"dec")
    )
}
# obs-zone names and their offsets in hours (RFC 5322 §4.3).
_NAMED_ZONES: Final = {
    b"ut": 0, b"utc": 0, b"gmt": 0, b"z": 0,
    b"est": -5, b"edt": -4, b"cst": -6, b"cdt": -5,
    b"mst": -7, b"mdt": -6, b"pst": -8, b"pdt": -7,
}
_DATE: Final = re.compile(
    rb"""(?:[A-Za-z]{3,9}\ ?,?\ ?)?          # day-of-week (obs: no comma)
         (?P<day>\d{1,2})\ ?-?\ ?
         (?P<month>[A-Za-z]{3,9})\ ?-?\ ?
         (?P<year>\d{2,4})[ ]
         (?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?(?:\.\d{1,9})?
         (?:\ ?(?P<zone>[+-]\d{4}|[A-Za-z]{1,5}(?:[+-]\d{1,4})?))?""",
    re.VERBOSE | re.DOTALL,
)


def _zone_offset(zone: bytes | None) -> timedelta | None:
    if zone is None:
        return timedelta(0)  # no zone at all: read as UTC (-0000, "no information")
    if zone[:1] in (b"+", b"-") and len(zone) == 5:
        hours, minutes = int(zone[1:3]), int(zone[3:5])
        if hours > 23 or minutes > 59:
            return None
        delta = timedelta(hours=hours, minutes=minutes)
        return -delta if zone[:1] == b"-" else delta
    lower = zone.lower()
    if lower in _NAMED_ZONES:
        return timedelta(hours=_NAMED_ZONES[lower])
    if len(lower) == 1 and lower != b"j":  # military zones: -0000 (RFC 5322 §4.3)
        return timedelta(0)
    return None  # CET, JST, GMT+1 ...: not RFC 5322, and ambiguous


def parse_date_time(text: bytes) -> datetime | None:
    """The UTC instant of an RFC 5322 date-time (obsolete forms accepted), or ``None``."""
    if len(text) > ANALYSIS_DATE_MAX:
        return None
    match = _DATE.fullmatch(text)  # the usual, single-spaced form
    if match is None:
        collapsed = b" ".join(text.replace(b",", b", ").split())
        # obs-hour / obs-minute / obs-second = [CFWS] 2DIGIT [CFWS]: white space around ":"
        collapsed = collapsed.replace(b" :", b":").replace(b": ", b":")
        match = _DATE.fullmatch(collapsed)
        if match is None:
            return None
    month = _MONTHS.get(match["month"][:3].lower())
    if month is None:
        return None
    year = int(match["year"])
    digits = len(match["year"])
    if digits == 2:
        year += 2000 if year < 50 else 1900
    elif digits == 3:
        year += 1900
    second = int(match["second"] or 0)
    offset = _zone_offset(match["zone"])
    if offset is None:
        return None
    try:
        local = datetime(
            year, month, int(match["day"]), int(match["hour"]), int(match["minute"]),
            min(second, 59), tzinfo=UTC,
        )
        return local - offset
    except (ValueError, OverflowError):
        return None
