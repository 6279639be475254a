"""Unit tests of the SMTP envelope grammar (RFC 5321 §4.1.2/§4.1.3, RFC 6531 §3.3, RFC 3461 §4).

The table-driven cases live in golden/abnf (see test_abnf_golden.py); these tests cover the
API: error attributes, ``Address`` rendering, ``raw``, bounds and timing.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from typing import Any

import pytest

from mailmoat.limits import SMTP_COMMAND_LINE_MAX, SMTP_COMMAND_PARAMS_EXTRA
from mailmoat.smtp._abnf import (
    Address,
    AddressSyntaxError,
    parse_helo_domain,
    parse_mail_args,
    parse_rcpt_args,
    xtext_decode,
    xtext_encode,
)


def test_error_carries_reply_code_status_and_reason() -> None:
    with pytest.raises(AddressSyntaxError) as info:
        parse_mail_args(b"user@example.com", smtputf8=False)
    err = info.value
    assert (err.reply_code, err.status) == (501, "5.1.7")
    assert "angle brackets" in err.reason
    assert isinstance(err, ValueError)


def test_recipient_errors_use_the_recipient_status() -> None:
    with pytest.raises(AddressSyntaxError) as info:
        parse_rcpt_args(b"<bad..dots@example.com>", smtputf8=False)
    assert (info.value.reply_code, info.value.status) == (501, "5.1.3")


@pytest.mark.parametrize(("parse", "code"), [(parse_mail_args, 550), (parse_rcpt_args, 553)])
def test_utf8_without_smtputf8_is_x_6_7(parse: Any, code: int) -> None:
    # RFC 6531 §3.5: RCPT needing an ASCII address gets 553, MAIL gets 550; status X.6.7.
    with pytest.raises(AddressSyntaxError) as info:
        parse("<ü@example.com>".encode(), smtputf8=False)
    assert (info.value.reply_code, info.value.status) == (code, "5.6.7")


def test_ehlo_errors_are_5_5_4() -> None:
    with pytest.raises(AddressSyntaxError) as info:
        parse_helo_domain(b"bad_host")
    assert (info.value.reply_code, info.value.status) == (501, "5.5.4")


def test_raw_is_exactly_the_octets_between_the_brackets() -> None:
    address, _ = parse_mail_args(b"<@relay.example:User@Example.COM> SIZE=10", smtputf8=False)
    assert address is not None
    assert address.raw == b"@relay.example:User@Example.COM"
    assert (address.local_part, address.domain) == ("User", "example.com")


def test_raw_keeps_utf8_octets() -> None:
    wire = "<ü@bücher.example>".encode()
    address, _ = parse_rcpt_args(wire, smtputf8=True)
    assert address.raw == wire[1:-1]
    assert address.is_utf8


def test_address_is_a_frozen_value() -> None:
    address, _ = parse_rcpt_args(b"<a@b>", smtputf8=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        address.domain = "c"  # type: ignore[misc]
    assert address == Address(local_part="a", domain="b", raw=b"a@b", is_utf8=False, literal=None)


@pytest.mark.parametrize(
    ("local", "rendered"),
    [
        ("user", "user@example.com"),
        ("a.b", "a.b@example.com"),
        ("a b", '"a b"@example.com'),
        ('a"b', '"a\\"b"@example.com'),
        ("a\\b", '"a\\\\b"@example.com'),
        ("", '""@example.com'),
        (".a", '".a"@example.com'),
        ("a..b", '"a..b"@example.com'),
        ("a@b", '"a@b"@example.com'),
    ],
)
def test_str_requotes_only_when_not_a_dot_string(local: str, rendered: str) -> None:
    # RFC 5321 §4.1.2: Local-part = Dot-string / Quoted-string; §4.1.2 also says a sender
    # SHOULD NOT quote a local part that is a Dot-string.
    address = Address(local_part=local, domain="example.com", raw=b"", is_utf8=False)
    assert str(address) == rendered


def test_str_of_postmaster_has_no_at_sign() -> None:
    address, _ = parse_rcpt_args(b"<postMaster>", smtputf8=False)
    assert str(address) == "postMaster"
    assert address.domain == ""


def test_literal_values_and_text() -> None:
    address, _ = parse_rcpt_args(b"<u@[IPv6:2001:DB8::1]>", smtputf8=False)
    assert address.literal == ipaddress.IPv6Address("2001:db8::1")
    assert address.domain == "[IPv6:2001:DB8::1]"
    assert str(address) == "u@[IPv6:2001:DB8::1]"
    general, _ = parse_rcpt_args(b"<u@[x400:c=de]>", smtputf8=False)
    assert general.literal is None


def test_mail_with_utf8_needs_the_smtputf8_parameter() -> None:
    # RFC 6531 §3.4: a UTF-8 reverse-path or forward-path needs SMTPUTF8 on MAIL.
    with pytest.raises(AddressSyntaxError) as info:
        parse_mail_args("<a@b> X=ü".encode(), smtputf8=True)
    assert (info.value.reply_code, info.value.status) == (550, "5.6.7")
    address, params = parse_mail_args("<a@b> X=ü SMTPUTF8".encode(), smtputf8=True)
    assert params == (("X", "ü"), ("SMTPUTF8", None))
    assert address is not None
    assert not address.is_utf8


def test_overlong_argument_is_refused_before_parsing() -> None:
    limit = SMTP_COMMAND_LINE_MAX + SMTP_COMMAND_PARAMS_EXTRA
    longest = b"<a@b> X=" + b"y" * (limit - 8)
    assert len(longest) == limit
    assert parse_mail_args(longest, smtputf8=False)[1] == (("X", "y" * (limit - 8)),)
    with pytest.raises(AddressSyntaxError, match="too long"):
        parse_mail_args(b"<a@b> X=" + b"y" * limit, smtputf8=False)
    with pytest.raises(AddressSyntaxError, match="too long"):
        parse_helo_domain(b"a" * 1000)


def test_many_parameters_parse_in_order() -> None:
    args = b"<a@b> " + b" ".join(b"K%d=%d" % (i, i) for i in range(50))
    _, params = parse_mail_args(args, smtputf8=False)
    assert params == tuple((f"K{i}", str(i)) for i in range(50))


@pytest.mark.parametrize(
    "hostile",
    [
        b"<" + b'"' * 900,
        b"<" + b"@a," * 300,
        b"<a@[" + b":" * 900,
        b"<a@[IPv6:" + b"1:" * 300 + b"]>",
        b"<" + b"a." * 450,
        b"<a@b> " + b"A " * 450,
    ],
)
def test_hostile_inputs_fail_fast(hostile: bytes) -> None:
    start = time.perf_counter()
    for _ in range(100):
        with pytest.raises(AddressSyntaxError):
            parse_mail_args(hostile, smtputf8=True)
    assert time.perf_counter() - start < 2.0


def test_xtext_round_trip_and_refusals() -> None:
    assert xtext_decode(xtext_encode("a+b=c ü\x00")) == "a+b=c ü\x00"
    assert xtext_encode("rfc822;a@b") == "rfc822;a@b"
    for bad in ("+", "+4", "+4g", "+4a", "a b", "=", "\x7f"):
        with pytest.raises(ValueError):
            xtext_decode(bad)


def test_helo_literal_is_returned_as_written() -> None:
    assert parse_helo_domain(b"[IPv6:::1]") == "[IPv6:::1]"
    assert parse_helo_domain(b"EXAMPLE.org") == "example.org"


@pytest.mark.parametrize(
    ("args", "utf8", "reason"),
    [
        (b'<"unterminated@example.com>', False, "unterminated quoted local part"),
        (b"<a@" + b"b" * 256 + b">", False, "domain too long"),
        # 5 labels of 20 x U+0130 are 204 octets; lower-casing makes each "i" + U+0307
        # (3 octets), 304 octets: the bound applies to the domain we hand on.
        (("<a@" + ".".join(["İ" * 20] * 5) + ">").encode(), True, "domain too long"),
        (b"<a@[IPv6:" + b"1" * 46 + b"]>", False, "bad IPv6 address literal"),
    ],
)
def test_bounds_and_unterminated_input(args: bytes, utf8: bool, reason: str) -> None:
    with pytest.raises(AddressSyntaxError) as info:
        parse_rcpt_args(args, smtputf8=utf8)
    assert info.value.reason == reason
