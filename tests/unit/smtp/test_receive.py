"""The framer: command lines, DATA, BDAT, content checks (RFC 5321 §2.3.8, §4.1.1.4, §4.5.2)."""

from __future__ import annotations

import pytest

from mailmoat.smtp._receive import (
    ChunkEnd,
    ContentFault,
    ContentPiece,
    ContentPolicy,
    Framer,
    Item,
    Line,
    LineFault,
    LineRefused,
    dot_stuff,
)

POLICY = ContentPolicy(max_size=1_000_000, max_line=1000)


def items(framer: Framer) -> list[Item]:
    out = []
    while (item := framer.next_item()) is not None:
        out.append(item)
    return out


def content_of(found: list[Item]) -> tuple[bytes, ChunkEnd]:
    data = b"".join(i.data for i in found if isinstance(i, ContentPiece))
    ends = [i for i in found if isinstance(i, ChunkEnd)]
    assert len(ends) == 1
    return data, ends[0]


def test_lines_in_any_split() -> None:
    wire = b"EHLO a\r\nNOOP\r\n\r\nQUIT\r\n"
    for split in range(1, len(wire)):
        f = Framer(line_limit=512, policy=POLICY)
        got: list[Item] = []
        f.feed(wire[:split])
        got += items(f)
        f.feed(wire[split:])
        got += items(f)
        assert got == [Line(data=b"EHLO a"), Line(data=b"NOOP"), Line(data=b""), Line(data=b"QUIT")]


def test_line_faults() -> None:
    f = Framer(line_limit=20, policy=POLICY)
    f.feed(b"A\nB\rC\r\nD\x00\r\n" + b"x" * 21 + b"\r\nok\r\n")
    assert items(f) == [
        LineRefused(fault=LineFault.BARE_LF), LineRefused(fault=LineFault.BARE_CR),
        LineRefused(fault=LineFault.NUL), LineRefused(fault=LineFault.TOO_LONG), Line(data=b"ok"),
    ]


def test_overlong_line_is_dropped_as_it_arrives() -> None:
    f = Framer(line_limit=20, policy=POLICY)
    for _ in range(50):
        f.feed(b"y" * 15)
        assert items(f) == []
        assert f.buffered <= 35
    f.feed(b"\r")
    assert items(f) == []
    f.feed(b"\nNOOP\r\n")
    assert items(f) == [LineRefused(fault=LineFault.TOO_LONG), Line(data=b"NOOP")]


def test_feed_empty_and_discard_modes() -> None:
    f = Framer(line_limit=20, policy=POLICY)
    f.feed(b"")
    f.feed(b"STARTTLS\r\nMAIL FROM:<x>\r\n")
    assert items(f)[0] == Line(data=b"STARTTLS")
    f.discard_all()
    assert f.buffered == 0
    f.feed(b"RSET\r\n")
    assert f.next_item() is None
    assert f.buffered == 0
    f.lines()
    f.feed(b"EHLO x\r\n")
    assert items(f) == [Line(data=b"EHLO x")]


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b".\r\n", b""),
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b".a\r\n..b\r\n.\r\n", b"a\r\n.b\r\n"),
        (b"x\r\n.\r\nNOOP\r\n", b"x\r\n"),
    ],
)
def test_data_framing(wire: bytes, content: bytes) -> None:
    f = Framer(line_limit=512, policy=POLICY)
    f.feed(wire)
    f.start_data()
    found = items(f)
    data, end = content_of(found)
    assert data == content
    assert end.fault is None
    assert end.last
    assert end.size == len(content)
    rest = b"NOOP" if wire.endswith(b"NOOP\r\n") else None
    if rest:
        assert found[-1] == Line(data=rest)


@pytest.mark.parametrize(
    "fake",
    [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n",
     b"\r\n.\r\r\n", b"\r\r\n.\r\r\n"],
)
def test_fake_terminators_never_end_data(fake: bytes) -> None:
    for normalize in (False, True):
        policy = ContentPolicy(max_size=10_000, max_line=1000, normalize_newlines=normalize)
        f = Framer(line_limit=512, policy=policy)
        wire = b"a" + fake + b"MAIL FROM:<x@y>\r\n.\r\n"
        for i in range(len(wire)):
            f.feed(wire[i : i + 1])
            if i == 0:
                f.start_data()
            found = items(f)
            ends = [x for x in found if isinstance(x, ChunkEnd)]
            assert not ends or i == len(wire) - 1
        assert ends
        assert ends[0].last


def test_data_partial_overlong_line_is_bounded() -> None:
    f = Framer(line_limit=512, policy=POLICY)
    f.start_data()
    for _ in range(100):
        f.feed(b"z" * 700)
        assert items(f) == []
        assert f.buffered < 1800
    f.feed(b"\r\n.")
    assert items(f) == []
    f.feed(b"\r\n")
    (end,) = items(f)
    assert isinstance(end, ChunkEnd)
    assert end.fault is ContentFault.LINE_TOO_LONG


def test_data_partial_terminator_waits() -> None:
    f = Framer(line_limit=512, policy=POLICY)
    f.start_data()
    f.feed(b"abc\r\n.")
    assert items(f) == [ContentPiece(data=b"abc\r\n")]
    f.feed(b"\r")
    assert items(f) == []
    f.feed(b"\n")
    (end,) = items(f)
    assert isinstance(end, ChunkEnd)
    assert end.fault is None


def test_data_dots_beyond_the_cut_are_rescanned() -> None:
    f = Framer(line_limit=512, policy=POLICY)
    f.start_data()
    f.feed(b"..a\r\n..b")
    assert items(f) == [ContentPiece(data=b".a\r\n")]
    f.feed(b"\r\n.\r\n")
    data, _ = content_of(items(f))
    assert data == b".b\r\n"


def test_long_lines_found_by_block_scan_and_exact_check() -> None:
    # A 900-octet line hides no LF in a whole 500-octet block: the exact check runs and
    # accepts it; a 999-octet line is refused (RFC 5321 §4.5.3.1.6).
    for length, fault in ((900, None), (998, None), (999, ContentFault.LINE_TOO_LONG)):
        f = Framer(line_limit=512, policy=POLICY)
        f.feed(b"a\r\n" + b"q" * length + b"\r\nb\r\n.\r\n")
        f.start_data()
        _, end = content_of(items(f))
        assert end.fault is fault, length


def test_size_limit_and_faults_stop_content() -> None:
    f = Framer(line_limit=512, policy=ContentPolicy(max_size=5, max_line=1000))
    f.start_data()
    f.feed(b"abc\r\n")
    assert items(f) == [ContentPiece(data=b"abc\r\n")]
    f.feed(b"def\r\nghi\r\n.\r\n")
    data, end = content_of(items(f))
    assert data == b""
    assert end.fault is ContentFault.TOO_BIG
    assert end.size == 15


def test_bdat_pieces_and_held_cr() -> None:
    f = Framer(line_limit=512, policy=POLICY)
    f.start_bdat(4, last=False, new_message=True)
    f.feed(b"ab\r")
    assert items(f) == [ContentPiece(data=b"ab")]
    f.feed(b"\n")
    assert items(f) == [
        ContentPiece(data=b"\r\n"), ChunkEnd(last=False, fault=None, size=4, chunk_size=4)
    ]
    f.start_bdat(3, last=True, new_message=False)
    f.feed(b"\ncdNOOP\r\n")
    assert items(f) == [
        ChunkEnd(last=True, fault=ContentFault.BARE_LF, size=7, chunk_size=3),
        Line(data=b"NOOP"),
    ]


def test_bdat_skip() -> None:
    f = Framer(line_limit=512, policy=POLICY)
    f.skip_bdat(3)
    f.feed(b"a\nbQUIT\r\n")
    found = items(f)
    assert not any(isinstance(i, ContentPiece) for i in found)
    assert found[-1] == Line(data=b"QUIT")


@pytest.mark.parametrize(
    ("content", "wire"),
    [
        (b"", b".\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b".a\r\n.\r\n", b"..a\r\n..\r\n.\r\n"),
    ],
)
def test_dot_stuff(content: bytes, wire: bytes) -> None:
    # RFC 5321 §4.5.2: "Before sending a line of mail text, the SMTP client checks the first
    # character of the line. If it is a period, one additional period is inserted".
    assert dot_stuff(content) == wire


@pytest.mark.parametrize("step", [1 << 20, 37, 5])
def test_many_stuffed_lines_bulk_unstuffing(step: int) -> None:
    # More stuffed lines than one scan walks: unstuffing switches to bytes.replace and must
    # still give the same content and find the real terminator.
    content = b".first\r\n" + b"..x\r\n" * 100 + b"mid\r\n" + b".\r\n" * 50 + b"end\r\n"
    wire = dot_stuff(content) + b"NOOP\r\n"
    f = Framer(line_limit=512, policy=POLICY)
    f.start_data()
    found: list[Item] = []
    for i in range(0, len(wire), step):
        f.feed(wire[i : i + step])
        found += items(f)
    assert found[-1] == Line(data=b"NOOP")
    data, end = content_of(found[:-1])
    assert data == content
    assert end.fault is None


@pytest.mark.parametrize("first", [b"plain\r\n", b".dot\r\n"])
def test_bulk_unstuffing_without_terminator_yet(first: bytes) -> None:
    content = first + b"..y\r\n" * 80
    wire = dot_stuff(content)
    f = Framer(line_limit=512, policy=POLICY)
    f.start_data()
    f.feed(wire[:-3])  # everything but ".\r\n"
    found = items(f)
    f.feed(wire[-3:])
    found += items(f)
    data, end = content_of(found)
    assert data == content
    assert end.fault is None
