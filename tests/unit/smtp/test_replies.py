"""The reply catalogue: RFC 3463 enhanced codes on every 2xx/4xx/5xx, names that match codes."""

from __future__ import annotations

import pytest

from mailmoat.errors import LocalProtocolError
from mailmoat.smtp.replies import EXEMPT_CODES, Replies, Reply, catalogue, printable

CATALOGUE = catalogue()

#: Name fragments and the reply codes RFC 5321 §4.2.2/§4.2.3, RFC 4954 §6, RFC 3207 §4 and
#: RFC 1870 give them (a name saying one thing must not carry another code).
NAME_CODES = {
    "TOO_BIG": {552},  # RFC 1870 §6.1 / RFC 5321 "552 Too much mail data"
    "BAD_SEQUENCE": {503},
    "NEED_": {503},
    "NESTED_MAIL": {503},
    "NOT_IMPLEMENTED": {502},
    "UNRECOGNIZED": {500},
    "LINE_TOO_LONG": {500, 550},
    "AUTH_FAILED": {535},
    "AUTH_REQUIRED": {530},
    "MUST_STARTTLS": {530},
    "ENCRYPTION_REQUIRED": {538},
    "AUTH_SUCCEEDED": {235},
    "TLS_NOT_AVAILABLE": {454},
    "TOO_MANY_RECIPIENTS": {452},
    "SHUTTING_DOWN": {421},
    "TOO_MANY_ERRORS": {421},
    "TOO_MANY_AUTH": {421},
    "START_MAIL_INPUT": {354},
    "PARAMETERS_NOT_RECOGNIZED": {555},
    "SYNTAX": {500, 501},
    "CONTENT_": {550, 552},
    "OK": {250},
    "HELP": {214},
    "CANNOT_VRFY": {252},
    "CLOSING": {221},
}


def test_catalogue_is_not_empty() -> None:
    assert len(CATALOGUE) > 40


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_enhanced_status_class_matches_code(name: str) -> None:
    reply = CATALOGUE[name]
    if reply.code in EXEMPT_CODES:
        # RFC 2034 §3 / RFC 4954 §4: 354 and 334 are intermediate, without status.
        assert reply.status is None
        return
    # RFC 3463 §3.1: class 2/4/5 equals the reply's first digit.
    assert reply.status is not None, name
    assert reply.status.split(".")[0] == str(reply.code)[0], name


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_names_match_codes(name: str) -> None:
    code = CATALOGUE[name].code
    matched = [frag for frag in NAME_CODES if frag in name]
    for frag in matched:
        assert code in NAME_CODES[frag], (name, frag, code)


def test_to_bytes_single_and_multi_line() -> None:
    # RFC 5321 §4.2.1: "250-First line" ... "250 Last line".
    assert Replies.OK.to_bytes() == b"250 2.0.0 OK\r\n"
    multi = Reply(code=250, status=None, text="mx.example\nPIPELINING\nSIZE 10")
    assert multi.to_bytes() == b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
    assert multi.lines == ("mx.example", "PIPELINING", "SIZE 10")
    status_multi = Reply(code=550, status="5.7.1", text="a\nb")
    # RFC 2034 §3: every line carries the status code.
    assert status_multi.to_bytes() == b"550-5.7.1 a\r\n550 5.7.1 b\r\n"


def test_reply_helpers() -> None:
    assert Replies.OK.is_positive
    assert not Replies.BAD_SEQUENCE.is_positive
    assert Replies.SHUTTING_DOWN.closes
    assert not Replies.OK.closes
    assert Replies.OK.with_text("fine") == Reply(code=250, status="2.0.0", text="fine")
    assert Replies.greeting("mx.example").to_bytes() == b"220 mx.example ESMTP\r\n"
    assert Replies.helo_ok("mx.example").to_bytes() == b"250 mx.example\r\n"
    assert Replies.auth_challenge("").to_bytes() == b"334 \r\n"
    assert Replies.chunk_received(5).to_bytes() == b"250 2.0.0 5 octets received\r\n"
    assert Replies.closing("mx").code == 221


@pytest.mark.parametrize(
    "kwargs",
    [
        {"code": 199, "status": None, "text": "x"},
        {"code": 600, "status": None, "text": "x"},
        {"code": 250, "status": "2.0", "text": "x"},
        {"code": 250, "status": "5.0.0", "text": "x"},
        {"code": 250, "status": None, "text": "a\r\nb"},
        {"code": 250, "status": None, "text": "a\0"},
        {"code": 250, "status": None, "text": "é"},
    ],
)
def test_bad_replies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        Reply(**kwargs)  # type: ignore[arg-type]


def test_printable_escapes_and_bounds() -> None:
    assert printable("label 'ä\r\n'") == "label '\\xe4\\x0d\\x0a'"
    assert len(printable("x" * 1000)) == 200
    Reply(code=501, status="5.5.4", text=printable("\u2028\0 é"))  # constructs
