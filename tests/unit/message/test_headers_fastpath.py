"""The clean-section fast path of parse_headers gives exactly what the line-by-line parser
gives (same Headers, same exceptions), on generated sections and on every message of the
test vectors and conformance corpora; and it is actually taken for ordinary mail."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import CONFORMANCE
from mailmoat.errors import LimitExceeded, ParseError
from mailmoat.limits import MESSAGE_LINE_MAX
from mailmoat.message import _headers
from mailmoat.message._headers import HeaderField, LineEnding, normalise_crlf, parse_headers

TESTS = Path(__file__).resolve().parents[2]


def _outcome(call: Callable[[], object]) -> tuple[Any, ...]:
    try:
        return ("ok", call())
    except (LimitExceeded, ParseError) as exc:
        return ("error", type(exc), str(exc))


def _both(data: bytes, **kw: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(result with the fast path available, result of the line-by-line parser alone)."""
    fast = _outcome(lambda: parse_headers(data, **kw))
    with patch.object(_headers, "_parse_clean", lambda *a: None):
        slow = _outcome(lambda: parse_headers(data, **kw))
    return fast, slow


_PIECES = [
    b"Subject", b"From", b"DKIM-Signature", b"X-a", b"Bad Name", b"a\x7fb", b"\xc3\xa9",
    b":", b": ", b" :", b"\t:", b" ", b"\t", b"  ", b"value", b"v=1; a=b",
    b"\r\n", b"\r\n", b"\r\n", b"\r\n ", b"\r\n\t", b"\n", b"\r", b"\r\r\n", b"\x00",
    b"\r\n\r\n", b"From ", b"body text", b"x" * (MESSAGE_LINE_MAX - 10), b"y" * 500,
]
_SECTIONS = st.one_of(
    st.lists(st.sampled_from(_PIECES), max_size=40).map(b"".join),
    # mostly well-formed fields, to reach the fast path's own decisions often
    st.lists(
        st.tuples(
            st.sampled_from([b"Subject", b"To", b"X-Y", b"DKIM-Signature", b"Bad Name", b""]),
            st.sampled_from([b":", b" :", b": "]),
            st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n ", b"\r\n\t", b"=;",
                                      b"z" * 400, b"\r", b"\n", b"\x00", b"\x7f\xff"]),
                     max_size=8).map(b"".join),
        ).map(lambda t: t[0] + t[1] + t[2] + b"\r\n"),
        max_size=12,
    ).map(b"".join).flatmap(
        lambda head: st.sampled_from([b"", b"\r\n", b"\r\nbody\r\n", b"\n", b" tail"]).map(
            lambda tail: head + tail)),
    st.binary(max_size=300),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_SECTIONS, pasted=st.booleans(), strict=st.booleans(),
       max_fields=st.sampled_from([1, 3, 1000]), max_size=st.sampled_from([40, 64 * 1024]))
@example(data=b"", pasted=False, strict=False, max_fields=1000, max_size=65536)
@example(data=b"\r\n", pasted=False, strict=False, max_fields=1000, max_size=65536)
@example(data=b"A: b", pasted=False, strict=False, max_fields=1000, max_size=65536)
@example(data=b"A: b\r\n ", pasted=False, strict=False, max_fields=1000, max_size=65536)
@example(data=b"A: b\r\nC: d\r\n\r\n", pasted=False, strict=True, max_fields=1, max_size=65536)
@example(data=b"A: b\x00\r\n\r\n", pasted=False, strict=False, max_fields=1000, max_size=65536)
@example(data=b"A: b\rc\r\n\r\n", pasted=False, strict=False, max_fields=1000, max_size=65536)
@example(data=b"A: b\nC: d\r\n\r\n", pasted=False, strict=False, max_fields=1000,
         max_size=65536)
def test_fast_path_matches_line_parser(
    data: bytes, pasted: bool, strict: bool, max_fields: int, max_size: int
) -> None:
    fast, slow = _both(data, pasted=pasted, strict=strict, max_fields=max_fields,
                       max_size=max_size)
    assert fast == slow


@pytest.mark.parametrize("length", [MESSAGE_LINE_MAX - 1, MESSAGE_LINE_MAX, MESSAGE_LINE_MAX + 1])
@pytest.mark.parametrize("folded", [False, True])
def test_line_length_boundary(length: int, folded: bool) -> None:
    line = b" " + b"x" * (length - 1) if folded else b"Subject: " + b"x" * (length - 9)
    assert len(line) == length
    data = (b"Subject: a\r\n" + line if folded else line) + b"\r\nTo: b\r\n\r\nbody"
    fast, slow = _both(data)
    assert fast == slow
    headers = fast[1]
    assert [d.kind for d in headers.defects] == (
        [_headers.Defect.LINE_TOO_LONG] if length > MESSAGE_LINE_MAX else [])


def test_field_count_limit_on_fast_path() -> None:
    data = b"".join(b"X-%d: v\r\n" % i for i in range(5)) + b"\r\n"
    assert _headers._parse_clean(data, len(data), 5) is not None
    with pytest.raises(LimitExceeded) as raised:
        _headers._parse_clean(data, len(data), 4)
    assert raised.value.limit == "MESSAGE_MAX_HEADER_FIELDS"
    assert _both(data, max_fields=4)[0] == _both(data, max_fields=4)[1]


def test_fields_built_slot_by_slot_equal_constructed_ones() -> None:
    data = b"Subject: hi\r\n there\r\nFrom: a@example.com\r\n\r\n"
    headers = parse_headers(data)
    assert headers.fields == (
        HeaderField(name=b"Subject", value=b" hi\r\n there", raw=b"Subject: hi\r\n there\r\n"),
        HeaderField(name=b"From", value=b" a@example.com", raw=b"From: a@example.com\r\n"),
    )
    assert hash(headers.fields[0]) == hash(
        HeaderField(name=b"Subject", value=b" hi\r\n there", raw=b"Subject: hi\r\n there\r\n"))
    assert headers.line_ending is LineEnding.CRLF
    assert headers.end == len(data)


def _corpus() -> Iterator[Path]:
    roots = [TESTS / "vectors", CONFORMANCE]
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if (path.is_file() and path.suffix in {".eml", ".message", ".msg", ".txt", ""}
                    and path.stat().st_size <= 1 << 20):
                yield path


CORPUS = list(_corpus())


def test_corpus_is_there() -> None:
    if not any(p.suffix == ".eml" for p in CORPUS):
        pytest.fail("no .eml vectors found under tests/vectors")


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.name))
def test_corpus_messages(path: Path) -> None:
    raw = path.read_bytes()
    for data in (raw, normalise_crlf(raw), normalise_crlf(raw).replace(b"\r\n", b"\n")):
        for kw in ({}, {"pasted": True}, {"strict": True}):
            fast, slow = _both(data, **kw)
            assert fast == slow, (path, kw)


def test_fast_path_taken_for_ordinary_mail() -> None:
    """The common case really avoids the line-by-line parser (the point of the fast path)."""
    emls = [p for p in CORPUS if p.suffix == ".eml"]
    taken = 0
    for path in emls:
        data = normalise_crlf(path.read_bytes())
        headers = parse_headers(data)
        if headers.defects or headers.malformed:
            continue
        end = headers.end
        section = data if end is None else data[:end]
        assert _headers._parse_clean(section, end, 1000) == headers, path
        taken += 1
    assert taken >= len(emls) // 2
