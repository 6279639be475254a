"""The byte-preserving header-section parser (RFC 5322 §2.1, §2.2, §3.6.8, §4.5.8)."""

from __future__ import annotations

import pytest

from mailmoat.errors import LimitExceeded, ParseError
from mailmoat.message import (
    Defect,
    LineEnding,
    find_header_end,
    normalise_crlf,
    parse_headers,
    split_message,
    unfold,
)

MSG = (
    b"Received: from a.example (a.example [192.0.2.1])\r\n"
    b"\tby b.example with ESMTPS id X;\r\n"
    b"\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"From: Alice <alice@example.org>\r\n"
    b"subject: Hello\r\n"
    b"SUBJECT: again\r\n"
    b"\r\n"
    b"body line\r\n"
)


def test_fields_keep_their_exact_bytes() -> None:
    headers, body = split_message(MSG)
    assert [f.name for f in headers] == [b"Received", b"From", b"subject", b"SUBJECT"]
    first = headers[0]
    # RFC 6376 §3.4.1 "simple": the raw field, folding and CRLFs included, unchanged.
    assert first.raw == MSG[: MSG.index(b"From:")]
    assert first.value == (
        b" from a.example (a.example [192.0.2.1])\r\n\tby b.example with ESMTPS id X;\r\n"
        b"\tMon, 1 Jan 2024 00:00:00 +0000"
    )
    assert b"".join(f.raw for f in headers) + b"\r\n" + body == MSG
    assert body == b"body line\r\n"
    assert headers.line_ending is LineEnding.CRLF
    assert headers.end == MSG.index(b"body")
    assert headers.defects == ()


def test_case_insensitive_lookup_keeps_order() -> None:
    headers = parse_headers(MSG)
    assert [f.value for f in headers.get_all("Subject")] == [b" Hello", b" again"]
    assert headers.get(b"FROM") is not None
    assert headers.get("Cc") is None
    assert "subject" in headers
    assert b"to" not in headers
    assert [i for i, _ in headers.indexed("subject")] == [2, 3]


def test_unfolding_removes_only_the_line_breaks() -> None:
    # RFC 5322 §2.2.3: "removing any CRLF that is immediately followed by WSP"
    assert unfold(b" a\r\n\tb\r\n  c") == b" a\tb  c"
    assert parse_headers(MSG)[0].unfolded().startswith(b" from a.example (a.example")


def test_lf_only_and_mixed_line_endings_are_recorded() -> None:
    lf = parse_headers(b"A: 1\nB: 2\n\nbody")
    assert lf.line_ending is LineEnding.LF
    assert lf.end == 11  # 5 + 5 + the empty line
    mixed = parse_headers(b"A: 1\r\nB: 2\n\n")
    assert mixed.line_ending is LineEnding.MIXED
    assert Defect.MIXED_LINE_ENDINGS in {d.kind for d in mixed.defects}
    assert normalise_crlf(b"A: 1\nB: 2\r\n\n") == b"A: 1\r\nB: 2\r\n\r\n"


def test_obsolete_white_space_before_colon_is_accepted_and_flagged() -> None:
    # RFC 5322 §4.5.8: obs-optional = field-name *WSP ":" unstructured CRLF
    headers = parse_headers(b"Subject \t: hi\r\n\r\n")
    assert headers[0].name == b"Subject"
    assert headers[0].value == b" hi"
    assert [d.kind for d in headers.defects] == [Defect.WSP_BEFORE_COLON]


@pytest.mark.parametrize(
    ("data", "defect"),
    [
        (b"no colon here\r\nA: 1\r\n\r\n", Defect.NO_COLON),
        (b": empty name\r\n\r\n", Defect.BAD_FIELD_NAME),
        (b"Bad Name: x\r\n\r\n", Defect.BAD_FIELD_NAME),
        (b" leading continuation\r\nA: 1\r\n\r\n", Defect.LEADING_CONTINUATION),
        (b"A: x\x00y\r\n\r\n", Defect.NUL),
        (b"A: x\ry\r\n\r\n", Defect.BARE_CR),
        (b"A: " + b"x" * 996 + b"\r\n\r\n", Defect.LINE_TOO_LONG),  # 999 octets
    ],
)
def test_malformed_lines_are_flagged_or_refused(data: bytes, defect: Defect) -> None:
    headers = parse_headers(data)
    assert defect in {d.kind for d in headers.defects}
    with pytest.raises(ParseError):
        parse_headers(data, strict=True)


def test_998_octet_line_is_fine() -> None:
    headers = parse_headers(b"A: " + b"x" * 995 + b"\r\n\r\n")
    assert headers.defects == ()


def test_malformed_line_is_kept_aside_with_its_continuations() -> None:
    headers = parse_headers(b"A: 1\r\nnot a field\r\n more\r\nB: 2\r\n\r\n")
    assert [f.name for f in headers] == [b"A", b"B"]
    assert headers.malformed == (b"not a field\r\n more\r\n",)


def test_message_without_body_and_last_line_without_break() -> None:
    headers, body = split_message(b"A: 1\r\nB: 2")
    assert [f.value for f in headers] == [b" 1", b" 2"]
    assert headers[1].raw == b"B: 2"
    assert headers.end is None
    assert body == b""


def test_pasted_headers_skip_leading_blank_lines_and_ignore_trailing_text() -> None:
    headers = parse_headers(b"\n\n  \nReceived: from x by y; date\n\nsome text\n", pasted=True)
    assert [f.name for f in headers] == [b"Received"]
    assert Defect.TRAILING_TEXT in {d.kind for d in headers.defects}
    assert headers.start == 5


def test_mbox_from_line_is_skipped() -> None:
    headers = parse_headers(b"From someone Sun Sep 17 12:29:51 2017\nA: 1\n\n")
    assert [f.name for f in headers] == [b"A"]
    assert [d.kind for d in headers.defects] == [Defect.MBOX_FROM_LINE]


def test_bounds_raise_limit_exceeded() -> None:
    with pytest.raises(LimitExceeded):
        parse_headers(b"A: 1\r\n" * 11, max_fields=10)
    with pytest.raises(LimitExceeded):
        parse_headers(b"A: " + b"x" * 2000 + b"\r\n\r\n", max_size=1000)
    parse_headers(b"A: 1\r\n" * 10, max_fields=10)  # exactly at the bound: fine


def test_find_header_end() -> None:
    assert find_header_end(b"A: 1\r\n\r\nbody") == 8
    assert find_header_end(b"A: 1\n\nbody") == 6
    assert find_header_end(b"\r\nbody") == 2
    assert find_header_end(b"A: 1\r\nB: 2\r\n") is None
