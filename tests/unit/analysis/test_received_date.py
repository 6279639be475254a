"""RFC 5322 §3.3 date-time (and the §4.3 obsolete forms) after the ";" of a stamp."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailmoat.analysis._date import parse_date_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # RFC 5322 Appendix A.1.1: "Fri, 21 Nov 1997 09:55:06 -0600"
        (b"Fri, 21 Nov 1997 09:55:06 -0600", datetime(1997, 11, 21, 15, 55, 6, tzinfo=UTC)),
        # A.5: "Thu, 13 Feb 1969 23:32:54 -0330" (the example with white space and comments)
        (b"Thu,\r\n  13\r\n    Feb\r\n      1969\r\n  23:32\r\n           :54 -0330",
         datetime(1969, 2, 14, 3, 2, 54, tzinfo=UTC)),
        (b"1 Jan 2020 10:00:00 +0000 extra", None),  # words after the zone
        (b"Thu, 13 Feb 1969 23:32:54 -0330", datetime(1969, 2, 14, 3, 2, 54, tzinfo=UTC)),
        # A.6.2 obsolete: "21 Nov 97 09:55:06 GMT" (two-digit year, obs-zone)
        (b"21 Nov 97 09:55:06 GMT", datetime(1997, 11, 21, 9, 55, 6, tzinfo=UTC)),
        (b"Tue, 1 Jul 2003 10:52:37 +0200", datetime(2003, 7, 1, 8, 52, 37, tzinfo=UTC)),
        # qmail: no day of week, "-0000"
        (b"24 May 2016 12:30:11 -0000", datetime(2016, 5, 24, 12, 30, 11, tzinfo=UTC)),
        # obs-zone EST = -0500; two-digit 49 -> 2049, three-digit 117 -> 2017
        (b"Mon, 7 Mar 2011 14:23:18 EST", datetime(2011, 3, 7, 19, 23, 18, tzinfo=UTC)),
        (b"1 Jan 49 00:00 +0000", datetime(2049, 1, 1, tzinfo=UTC)),
        (b"1 Jan 117 00:00:00 +0000", datetime(2017, 1, 1, tzinfo=UTC)),
        # military zone: -0000 (RFC 5322 §4.3); leap second read as :59
        (b"1 Jan 2020 00:00:00 Z", datetime(2020, 1, 1, tzinfo=UTC)),
        (b"31 Dec 2016 23:59:60 +0000", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),
        (b"Wed , 8 Mar 2017 16:46:25 -0000", datetime(2017, 3, 8, 16, 46, 25, tzinfo=UTC)),
    ],
)
def test_dates(text: bytes, expected: datetime | None) -> None:
    assert parse_date_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        b"31 Feb 2020 00:00:00 +0000",  # no such day
        b"1 Jan 2020 25:00:00 +0000",  # no such hour
        b"1 Jan 2020 00:00:00 +9960",  # zone minutes
        b"1 Jan 2020 00:00:00 CET",  # not an RFC 5322 zone
        b"1 Foo 2020 00:00:00 +0000",
        b"yesterday",
        b"",
        b"1 Jan 2020 00:00:00 +0000" + b" x" * 200,  # beyond ANALYSIS_DATE_MAX
    ],
)
def test_bad_dates_give_none(text: bytes) -> None:
    assert parse_date_time(text) is None
