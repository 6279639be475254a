"""ESMTP keywords and parameter validation (RFC 1870, 3461, 6152, 6531, 8689, 4954)."""

from __future__ import annotations

import pytest

from mailmoat.smtp.extensions import (
    Advertised,
    ParameterError,
    ehlo_keywords,
    parse_mail_params,
    parse_rcpt_params,
)

FULL = Advertised(size=1000, eightbitmime=True, smtputf8=True, pipelining=True, chunking=True,
                  dsn=True, starttls=True, requiretls=True, auth=("PLAIN",))


def test_ehlo_keywords_order_and_content() -> None:
    assert ehlo_keywords(FULL) == [
        "PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING",
        "DSN", "STARTTLS", "REQUIRETLS", "AUTH PLAIN", "VRFY", "HELP",
    ]
    assert ehlo_keywords(Advertised(enhancedstatuscodes=False, vrfy=False, help=False)) == []


def test_size_zero_limit_means_no_fixed_maximum() -> None:
    # RFC 1870 §4: "SIZE 0" means no fixed maximum.
    params = parse_mail_params((("SIZE", "99999999"),), Advertised(size=0), tls_active=False)
    assert params.size == 99999999


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ((("SIZE", "1" * 21),), 501),  # RFC 1870 §3: 1*20DIGIT
        ((("SIZE", None),), 501),
        ((("SIZE", "٣"),), 501),  # a non-ASCII digit
        ((("SIZE", "1001"),), 552),
        ((("REQUIRETLS", None),), 555),  # not TLS here
        ((("REQUIRETLS", "x"),), 555),
        ((("ENVID", None),), 501),
        ((("BODY", None),), 501),
    ],
)
def test_mail_param_errors(params: tuple[tuple[str, str | None], ...], code: int) -> None:
    with pytest.raises(ParameterError) as err:
        parse_mail_params(params, FULL, tls_active=False)
    assert err.value.reply.code == code


def test_requiretls_with_value_inside_tls_is_501() -> None:
    with pytest.raises(ParameterError) as err:
        parse_mail_params((("REQUIRETLS", "yes"),), FULL, tls_active=True)
    assert err.value.reply.code == 501


def test_rcpt_params_without_dsn_or_esmtp() -> None:
    with pytest.raises(ParameterError) as err:
        parse_rcpt_params((("NOTIFY", "NEVER"),), Advertised(esmtp=False, dsn=True))
    assert err.value.reply.code == 555
    assert parse_rcpt_params((), Advertised()).notify is None
