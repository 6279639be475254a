"""The engine's fast paths keep every check of the slow ones (RFC 5321 §4.1.2, §4.5.3.1;
RFC 5890 §2.3.2.1).

* ``_abnf._fast_path``: the plain ``<Dot-string@Domain>`` pattern; at each RFC 5321 length
  bound it accepts the last legal size and leaves the first illegal one to the full scanner,
  which refuses it with its own error;
* ``_abnf._ASCII_PARAMS``: the ESMTP-parameter pattern;
* U-labels must be in NFC (RFC 5890 §2.3.2.1), not silently normalised;
* the content checks (bare CR / bare LF by regular expression, text line length by
  ``rfind`` windows) at the edges of each window;
* ``Framer.next_raw`` (command lines as bare bytes) and ``next_item`` agree.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mailmoat.smtp._abnf import (
    _ASCII_PARAMS,
    Address,
    AddressSyntaxError,
    _fast_path,
    parse_mail_args,
    parse_rcpt_args,
)
from mailmoat.smtp._receive import (
    ChunkEnd,
    ContentFault,
    ContentPiece,
    ContentPolicy,
    Framer,
    Line,
    LineRefused,
)

# --- envelope fast path -----------------------------------------------------------------


def test_fast_path_accepts_the_plain_form() -> None:
    text = "<Alice.B+tag@Mail.Example.ORG> SIZE=10"
    found = _fast_path(text)
    assert found is not None
    address, end = found
    # RFC 5321 §2.4: the local part is case-sensitive, the domain is not (lower-cased).
    assert address == Address(local_part="Alice.B+tag", domain="mail.example.org",
                              raw=b"Alice.B+tag@Mail.Example.ORG", is_utf8=False, literal=None)
    assert text[end:] == " SIZE=10"


@pytest.mark.parametrize(
    "text",
    [
        "<>",  # null reverse-path
        "<Postmaster>",  # RFC 5321 §4.1.1.3 special recipient
        '<"a b"@example.org>',  # Quoted-string
        "<a@[192.0.2.1]>",  # address literal
        "<@relay.example:a@example.org>",  # source route
        "<a..b@example.org>",  # not a Dot-string: the full scanner names the error
        "<.a@example.org>",
        "<a.@example.org>",
        "<a@-example.org>",  # sub-domain = Let-dig [Ldh-str]
        "<a@example-.org>",
        "<a@example.org.>",  # trailing dot
        "<a@example..org>",
        "a@example.org",  # no angle brackets
        "  <a@example.org>",  # one SP is tolerated, not two
        "<a@example.org",
        "<a@exam_ple.org>",
    ],
)
def test_fast_path_leaves_everything_else_to_the_full_scanner(text: str) -> None:
    assert _fast_path(text) is None


def _label(n: int) -> str:
    return "a" * n


@pytest.mark.parametrize("parse", [parse_mail_args, parse_rcpt_args])
def test_length_bounds_at_the_edges(parse: Callable[..., tuple[Address | None, object]]) -> None:
    # RFC 5321 §4.5.3.1.1: local-part at most 64 octets.
    ok = f"<{'l' * 64}@example.org>"
    assert _fast_path(ok) is not None
    address = parse(ok.encode(), smtputf8=False)[0]
    assert address is not None
    assert address.local_part == "l" * 64
    bad = f"<{'l' * 65}@example.org>"
    assert _fast_path(bad) is None
    with pytest.raises(AddressSyntaxError, match="local part longer than 64"):
        parse(bad.encode(), smtputf8=False)
    # RFC 1035 §2.3.4 (RFC 5321 §4.5.3.1.2 by reference): a label is at most 63 octets.
    ok = f"<a@{_label(63)}.org>"
    assert _fast_path(ok) is not None
    bad = f"<a@{_label(64)}.org>"
    assert _fast_path(bad) is None
    with pytest.raises(AddressSyntaxError, match="longer than 63"):
        parse(bad.encode(), smtputf8=False)
    # RFC 5321 §4.5.3.1.3: the path, "<" and ">" included, is at most 256 octets.
    domain = ".".join([_label(63)] * 3) + "." + _label(55)  # 247 octets
    ok = f"<{'l' * 6}@{domain}>"
    assert len(ok) == 256
    assert _fast_path(ok) is not None
    address = parse(ok.encode(), smtputf8=False)[0]
    assert address is not None
    assert address.domain == domain
    bad = f"<{'l' * 7}@{domain}>"
    assert _fast_path(bad) is None
    with pytest.raises(AddressSyntaxError, match="path longer than 256"):
        parse(bad.encode(), smtputf8=False)


def test_domain_over_255_is_refused() -> None:
    # RFC 5321 §4.5.3.1.2: a domain is at most 255 octets.
    domain = ".".join([_label(63)] * 4)  # 255 octets: legal as a domain...
    assert len(domain) == 255
    with pytest.raises(AddressSyntaxError, match="path longer than 256"):
        parse_rcpt_args(f"<a@{domain}>".encode(), smtputf8=False)  # ...but not in a path
    longer = domain + ".b"
    assert _fast_path(f"<a@{longer}>") is None
    with pytest.raises(AddressSyntaxError, match="domain too long"):
        parse_rcpt_args(f"<a@{longer}>".encode(), smtputf8=False)


def test_public_functions_keep_their_checks_around_the_fast_path() -> None:
    # RFC 5321 §4.1.2: exactly one SP between the path and the first parameter.
    with pytest.raises(AddressSyntaxError, match="expected SP"):
        parse_mail_args(b"<a@example.org>SIZE=1", smtputf8=False)
    with pytest.raises(AddressSyntaxError, match="duplicate"):
        parse_mail_args(b"<a@example.org> SIZE=1 size=2", smtputf8=False)
    with pytest.raises(AddressSyntaxError, match="bad ESMTP parameter"):
        parse_mail_args(b"<a@example.org> SIZE=1  BODY=8BITMIME", smtputf8=False)
    with pytest.raises(AddressSyntaxError, match="value"):
        parse_mail_args(b"<a@example.org> ENVID=a=b", smtputf8=False)  # "=" is not esmtp-value
    # The argument bound applies before any pattern runs.
    with pytest.raises(AddressSyntaxError, match="too long"):
        parse_mail_args(b"<a@example.org> X=" + b"v" * 2000, smtputf8=False)


@pytest.mark.parametrize(
    ("text", "params"),
    [
        (" SIZE=10240", (("SIZE", "10240"),)),
        (" size=1 body=8BITMIME smtputf8",
         (("SIZE", "1"), ("BODY", "8BITMIME"), ("SMTPUTF8", None))),
        # esmtp-value = 1*(%d33-60 / %d62-126): "<" (60) and ">" (62) are in, "=" (61) out.
        (" X-Y=!<>~", (("X-Y", "!<>~"),)),
    ],
)
def test_params_pattern(text: str, params: tuple[tuple[str, str | None], ...]) -> None:
    assert _ASCII_PARAMS.fullmatch(text) is not None
    assert parse_rcpt_args(("<a@b.example>" + text).encode(), smtputf8=False)[1] == params


@pytest.mark.parametrize("text", [" X=a=b", " =a", " -X", " X=", "  X", " X ", " X=\x7f"])
def test_params_pattern_refuses(text: str) -> None:
    assert _ASCII_PARAMS.fullmatch(text) is None
    with pytest.raises(AddressSyntaxError):
        parse_rcpt_args(("<a@b.example>" + text).encode(), smtputf8=False)


# --- U-labels must be NFC ---------------------------------------------------------------


@pytest.mark.parametrize(
    "domain",
    [
        # "e" + U+0301 COMBINING ACUTE ACCENT composes to U+00E9 under NFC: not a U-label.
        "e\u0301xample.org",
        # U+212B ANGSTROM SIGN is a singleton decomposing to U+00C5: never in NFC.
        "\u212bngstrom.example",
    ],
)
def test_non_nfc_u_label_is_refused(domain: str) -> None:
    # RFC 5890 §2.3.2.1: 'A "U-label" is an IDNA-valid string of Unicode characters, in
    # Normalization Form C (NFC)'; RFC 6531 §3.3 allows only U-labels in a sub-domain.
    with pytest.raises(AddressSyntaxError, match="not in NFC") as err:
        parse_rcpt_args(f"<a@{domain}>".encode(), smtputf8=True)
    assert (err.value.reply_code, err.value.status) == (501, "5.1.3")
    with pytest.raises(AddressSyntaxError, match="not in NFC") as err:
        parse_mail_args(f"<a@{domain}> SMTPUTF8".encode(), smtputf8=True)
    assert (err.value.reply_code, err.value.status) == (501, "5.1.7")


def test_nfc_u_labels_are_accepted() -> None:
    # U+00E9 precomposed: the NFC form of the refused label above.
    address, _ = parse_rcpt_args("<a@\u00e9xample.org>".encode(), smtputf8=True)
    assert address.domain == "\u00e9xample.org"
    # "x" + U+0301 has no precomposed form, so it *is* NFC; IDNA2008 lets a combining mark
    # follow a base character (RFC 5891 §4.2.3.2 forbids it only at the start of a label).
    address, _ = parse_rcpt_args("<a@ex\u0301ample.org>".encode(), smtputf8=True)
    assert address.domain == "ex\u0301ample.org"
    with pytest.raises(AddressSyntaxError):
        parse_rcpt_args("<a@\u0301example.org>".encode(), smtputf8=True)


# --- content checks ---------------------------------------------------------------------

POLICY = ContentPolicy(max_size=1 << 20, max_line=1000)


def _bdat(pieces: list[bytes], policy: ContentPolicy = POLICY) -> ChunkEnd:
    framer = Framer(line_limit=512, policy=policy)
    framer.start_bdat(sum(map(len, pieces)), last=True, new_message=True)
    for piece in pieces:
        framer.feed(piece)
    ends = []
    while (item := framer.next_item()) is not None:
        if isinstance(item, ChunkEnd):
            ends.append(item)
    assert len(ends) == 1
    return ends[0]


@pytest.mark.parametrize(
    ("content", "fault"),
    [
        (b"a\r\nb\r\n", None),
        (b"a\rb\r\n", ContentFault.BARE_CR),
        (b"a\nb\r\n", ContentFault.BARE_LF),
        (b"\nb\r\n", ContentFault.BARE_LF),  # LF at the very start
        (b"a\r\r\n", ContentFault.BARE_CR),  # CR before a CRLF
        (b"a\r\n\n", ContentFault.BARE_LF),  # LF after a CRLF
        (b"a\r\nb\r", ContentFault.BARE_CR),  # CR at the very end
        (b"a\n\rb", ContentFault.BARE_LF),  # LF CR is not CRLF (bare LF reported first)
    ],
)
def test_bare_newlines(content: bytes, fault: ContentFault | None) -> None:
    assert _bdat([content]).fault is fault
    for cut in range(1, len(content)):  # any split
        assert _bdat([content[:cut], content[cut:]]).fault is fault


@pytest.mark.parametrize("short", [1, 10, 500, 997])
def test_line_length_edges_among_short_lines(short: int) -> None:
    # RFC 5321 §4.5.3.1.6: "The maximum total length of a text line including the <CRLF> is
    # 1000 octets": 998 octets of text are allowed, 999 are not, wherever the line lies
    # among shorter ones (each placement lands on a different rfind window).
    filler = (b"x" * short + b"\r\n") * (3000 // (short + 2) + 2)
    for pad in range(0, 990, 97):
        head = filler[: 7 * (short + 2)] + b"z" * pad + b"\r\n"  # shifts the long line
        assert _bdat([head + b"y" * 998 + b"\r\n" + filler]).fault is None
        assert _bdat([head + b"y" * 999 + b"\r\n" + filler]).fault is ContentFault.LINE_TOO_LONG


def test_line_length_across_pieces() -> None:
    line = b"y" * 998 + b"\r\n"
    for cut in (1, 500, 997, 998, 999):
        assert _bdat([b"a\r\n" + line[:cut], line[cut:] + b"b\r\n"]).fault is None
    line = b"y" * 999 + b"\r\n"
    for cut in (1, 500, 999, 1000):
        end = _bdat([b"a\r\n" + line[:cut], line[cut:] + b"b\r\n"])
        assert end.fault is ContentFault.LINE_TOO_LONG


def test_data_after_a_command_reuses_its_crlf() -> None:
    # The <CRLF> ending DATA is the one before the terminator (RFC 5321 §4.1.1.4): an empty
    # message is just ".<CRLF>", whether DATA's <CRLF> is still in the buffer or not.
    for wire in ([b"DATA\r\n.\r\nNOOP\r\n"], [b"DATA\r\n", b".\r\nNOOP\r\n"]):
        framer = Framer(line_limit=512, policy=POLICY)
        framer.feed(wire[0])
        assert framer.next_item() == Line(data=b"DATA")
        framer.start_data()
        for part in wire[1:]:
            framer.feed(part)
        found = []
        while (item := framer.next_item()) is not None:
            found.append(item)
        assert found == [ChunkEnd(last=True, fault=None, size=0, chunk_size=0),
                         Line(data=b"NOOP")]
    # ...and "<CRLF>." alone (no second <CRLF>) never ends it.
    framer = Framer(line_limit=512, policy=POLICY)
    framer.feed(b"DATA\r\n.x\r\n.\r\n")
    assert framer.next_item() == Line(data=b"DATA")
    framer.start_data()
    assert framer.next_item() == ContentPiece(data=b"x\r\n")


def test_next_raw_gives_bare_lines() -> None:
    framer = Framer(line_limit=512, policy=POLICY)
    framer.feed(b"NOOP\r\nA\rB\r\nQUIT\r\n")
    assert framer.next_raw() == b"NOOP"
    assert isinstance(framer.next_raw(), LineRefused)
    assert framer.next_item() == Line(data=b"QUIT")
    assert framer.next_raw() is None
