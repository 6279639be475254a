"""Hostile input: bounded time, bounded work, a clear answer (issue #8 "Bad input")."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.analysis import TLSStatus, analyse_headers, parse_received, report_to_dict
from mailmoat.analysis.authres_summary import parse_authentication_results
from mailmoat.errors import LimitExceeded
from mailmoat.limits import ANALYSIS_FIELD_MAX, ANALYSIS_MAX_HOPS, MESSAGE_MAX_HEADER_FIELDS
from mailmoat.message import parse_headers, tokenize

# ~85 octets: 10,000 of them fit in MESSAGE_HEADER_MAX (1 MiB)
STAMP = b"Received: from a (a [192.0.2.1])\r\n by b.example with ESMTPS id %d; 1 Jan 2024 10:00 Z\r\n"


def test_ten_thousand_received_fields() -> None:
    data = b"".join(STAMP % i for i in range(MESSAGE_MAX_HEADER_FIELDS)) + b"\r\n"
    start = time.perf_counter()
    report = analyse_headers(parse_headers(data))
    elapsed = time.perf_counter() - start
    assert report.received_total == 10_000
    assert report.analysed == ANALYSIS_MAX_HOPS
    assert any("only the topmost" in w for w in report.warnings)
    assert elapsed < 5.0
    with pytest.raises(LimitExceeded):  # one field more than the bound: refused, clearly
        parse_headers(b"X: y\r\n" + data)


def test_one_megabyte_header_line() -> None:
    line = b"Received: from " + b"a" * 1_000_000 + b" by b with ESMTPS; 1 Jan 2024 00:00 +0000"
    start = time.perf_counter()
    headers = parse_headers(line + b"\r\nSubject: " + b"x" * 1000 + b"\r\n\r\n")
    report = analyse_headers(headers)
    assert time.perf_counter() - start < 2.0
    hop = report.hops[0]
    assert hop.stamp.tls is TLSStatus.UNKNOWN
    assert any(str(ANALYSIS_FIELD_MAX) in p for p in hop.stamp.problems)
    assert {d.kind.name for d in headers.defects} == {"LINE_TOO_LONG"}


def test_header_section_over_the_bound_is_refused() -> None:
    with pytest.raises(LimitExceeded):
        parse_headers(b"A: " + b"x" * (2 * 1024 * 1024) + b"\r\n\r\n")


@pytest.mark.parametrize(
    "value",
    [
        b"(" * 100_000,
        b")" * 100_000,
        b'"' + b"\\" * 100_000,
        b"[" * 100_000,
        b"from " + b"(a " * 5000 + b"by b with ESMTPS;",
        b";" * 100_000,
        b"version=" * 2000,
        b"using " * 2000,
    ],
)
def test_pathological_values_take_bounded_time(value: bytes) -> None:
    start = time.perf_counter()
    tokenize(value)
    parse_received(value[:ANALYSIS_FIELD_MAX])
    parse_authentication_results(value[:ANALYSIS_FIELD_MAX])
    assert time.perf_counter() - start < 2.0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        headers = parse_headers(data, pasted=True)
    except LimitExceeded:
        return
    report = analyse_headers(headers)
    report_to_dict(report)  # serialisable, whatever came in


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([
    b"from", b"by", b"with", b"id", b"for", b"via", b"tls", b"(", b")", b"[", b"]", b";",
    b"<", b">", b'"', b"\\", b"ESMTPS", b"SMTP", b"TLSv1.3", b"cipher=", b"version=",
    b"192.0.2.1", b"[::1]", b"1 Jan 2024 00:00:00 +0000", b" ", b"\r\n\t", b"\x00", b"\xff",
]), max_size=60))
def test_stamp_shaped_noise_never_crashes(parts: list[bytes]) -> None:
    stamp = parse_received(b" ".join(parts))
    assert stamp.tls in set(TLSStatus)
