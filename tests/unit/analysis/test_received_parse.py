"""One Received stamp at a time: clauses (RFC 5321 §4.4), TLS evidence, transport."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime

import pytest

from mailmoat.analysis import TLSStatus, Transport, normalise_tls_version, parse_received
from mailmoat.analysis.received import classify_protocol


def test_rfc5321_stamp_clauses() -> None:
    stamp = parse_received(
        b" from mail.example.org (mail.example.org [192.0.2.7])\r\n"
        b"\tby mx.example.net (Postfix) via TCP with ESMTP id 4AbC\r\n"
        b"\tfor <bob@example.net>; Tue, 1 Dec 2020 10:00:00 +0100"
    )
    assert stamp.from_name == "mail.example.org"
    assert stamp.from_rdns == "mail.example.org"
    assert stamp.from_ip == "192.0.2.7"
    assert stamp.by_name == "mx.example.net"
    assert stamp.by_software == "Postfix"
    assert stamp.via == "TCP"
    assert stamp.protocol == "ESMTP"
    assert stamp.id == "4AbC"
    assert stamp.recipient == "bob@example.net"
    assert stamp.timestamp == datetime(2020, 12, 1, 9, 0, tzinfo=UTC)
    assert stamp.tls is TLSStatus.NO
    assert stamp.transport is Transport.NETWORK
    assert stamp.problems == ()


@pytest.mark.parametrize(
    ("keyword", "tls"),
    [
        # RFC 3848 §1 and RFC 6531 §3.7.3
        ("ESMTPS", TLSStatus.YES), ("ESMTPSA", TLSStatus.YES), ("LMTPS", TLSStatus.YES),
        ("LMTPSA", TLSStatus.YES), ("UTF8SMTPS", TLSStatus.YES), ("UTF8SMTPSA", TLSStatus.YES),
        ("UTF8LMTPS", TLSStatus.YES), ("esmtps", TLSStatus.YES),
        ("SMTP", TLSStatus.NO), ("ESMTP", TLSStatus.NO), ("ESMTPA", TLSStatus.NO),
        ("LMTP", TLSStatus.NO), ("UTF8SMTP", TLSStatus.NO), ("UTF8SMTPA", TLSStatus.NO),
        ("local", TLSStatus.NOT_APPLICABLE), ("local-esmtp", TLSStatus.NOT_APPLICABLE),
        ("FQDP", TLSStatus.UNKNOWN), ("HTTP", TLSStatus.UNKNOWN), ("mapi", TLSStatus.UNKNOWN),
        ("Microsoft SMTPSVC", TLSStatus.UNKNOWN),
    ],
)
def test_with_keywords(keyword: str, tls: TLSStatus) -> None:
    assert classify_protocol(keyword)[0] is tls
    stamp = parse_received(f"from a (a [192.0.2.1]) by b with {keyword} id 1; "
                           "1 Jan 2020 00:00:00 +0000".encode())
    assert stamp.tls is tls


@pytest.mark.parametrize(
    ("comment", "version", "cipher", "bits"),
    [
        ("(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))",
         "TLSv1.3", "TLS_AES_256_GCM_SHA384", 256),
        ("(version=TLSv1.2 cipher=ECDHE-RSA-AES256-GCM-SHA384 bits=256 verify=NOT)",
         "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384", 256),
        ("(version=TLS1_3 cipher=TLS_AES_128_GCM_SHA256 bits=128/128)",
         "TLSv1.3", "TLS_AES_128_GCM_SHA256", 128),
        ("(version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)",
         "TLSv1.2", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", None),
        ("(TLS1.2:ECDHE-RSA-AES256-GCM-SHA384:256)", "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384",
         256),
        ("(TLSv1.3 cipher TLS_AES_256_GCM_SHA384 bits=256)", "TLSv1.3", "TLS_AES_256_GCM_SHA384",
         256),
        ("(TLS1.3)", "TLSv1.3", None, None),
        ("(TLS)", None, None, None),
        ("(Google Transport Security)", None, None, None),
        ("(ECDHE-RSA-AES256-GCM-SHA384 encrypted)", None, "ECDHE-RSA-AES256-GCM-SHA384", None),
    ],
)
def test_tls_comments_anywhere(comment: str, version: str | None, cipher: str | None,
                               bits: int | None) -> None:
    for text in (
        f"from a (a [192.0.2.1]) {comment} by b with ESMTP id 1; 1 Jan 2020 00:00:00 +0000",
        f"from a (a [192.0.2.1]) by b with ESMTP id 1; {comment} 1 Jan 2020 00:00:00 +0000",
    ):
        stamp = parse_received(text.encode())
        assert stamp.tls is TLSStatus.YES, text
        assert (stamp.tls_version, stamp.cipher, stamp.tls_bits) == (version, cipher, bits)
        assert stamp.timestamp == datetime(2020, 1, 1, tzinfo=UTC)


def test_unrelated_comments_say_nothing_about_tls() -> None:
    stamp = parse_received(b"from a (a [192.0.2.1]) (envelope-from <x@y>) by b (Exim 4.96) "
                           b"with XYZ id 1; 1 Jan 2020 00:00:00 +0000")
    assert stamp.tls is TLSStatus.UNKNOWN
    assert stamp.tls_version is None


@pytest.mark.parametrize(
    ("written", "normal"),
    [("TLS1_2", "TLSv1.2"), ("TLSv1.2", "TLSv1.2"), ("TLS1.3", "TLSv1.3"), ("TLSv1", "TLSv1.0"),
     ("tls13", "TLSv1.3"), ("SSLv3", "SSLv3"), ("TLSv1/SSLv3", "TLSv1/SSLv3")],
)
def test_version_normalisation(written: str, normal: str) -> None:
    assert normalise_tls_version(written) == normal


def test_loopback_local_and_origin_stamps() -> None:
    loop = parse_received(b"from localhost (localhost [127.0.0.1]) by a with ESMTP; "
                          b"1 Jan 2020 00:00:00 +0000")
    assert loop.transport is Transport.LOOPBACK
    assert loop.tls is TLSStatus.NO
    qmail = parse_received(b"(qmail 123 invoked from network); 1 Jan 2020 00:00:00 -0000")
    assert (qmail.transport, qmail.tls) == (Transport.LOCAL, TLSStatus.NOT_APPLICABLE)
    assert qmail.problems == ()
    origin = parse_received(b"by mail-x.google.com with SMTP id abc; 1 Jan 2020 00:00:00 +0000")
    assert (origin.transport, origin.tls) == (Transport.LOCAL, TLSStatus.NOT_APPLICABLE)


def test_helo_argument_is_not_the_peer_address() -> None:
    stamp = parse_received(b"from unknown (HELO 10.1.1.1) (203.0.113.9) by q with SMTP; "
                           b"1 Jan 2020 00:00:00 -0000")
    assert stamp.from_helo == "10.1.1.1"
    assert stamp.from_ip == "203.0.113.9"


def test_authenticated_submissions() -> None:
    for text in (b"from a ([192.0.2.1]) by b with ESMTPSA id 1; 1 Jan 2020 00:00:00 +0000",
                 b"from a (a [192.0.2.1]) (Authenticated sender: u) by b (Postfix) with ESMTP; "
                 b"1 Jan 2020 00:00:00 +0000"):
        assert parse_received(text).authenticated


def test_problems_are_reported_not_raised() -> None:
    stamp = parse_received(b"from a (unclosed by b")
    assert "no ';' and date-time (RFC 5321 §4.4)" in stamp.problems
    assert "unclosed comment, quote or bracket" in stamp.problems
    assert stamp.tls is TLSStatus.UNKNOWN
    bad_date = parse_received(b"from a by b with ESMTP; not a date")
    assert any("date not understood" in p for p in bad_date.problems)


def test_control_characters_never_reach_the_output() -> None:
    stamp = parse_received(b"from evil\x1b[31m (x [192.0.2.1]) by b\x07 with ESMTP; "
                           b"1 Jan 2020 00:00:00 +0000")
    assert "\x1b" not in (stamp.from_name or "")
    assert "\x07" not in (stamp.by_name or "")
    assert "\x1b" not in stamp.text


def test_mailmoat_gateway_stamps_round_trip() -> None:
    """Stamps written by gateway/received.py read back with the values that went in."""
    try:
        module = importlib.import_module("mailmoat.gateway.received")
    except ModuleNotFoundError:
        pytest.skip("mailmoat.gateway.received is not built yet")
    field = module.received_field(
        helo="client.example", client_ip="2001:db8::25", client_rdns="rdns.example",
        by_host="mx.mailmoat.example", protocol="ESMTPSA", queue_id="Q1",
        recipients=("bob@mailmoat.example",),
        tls=module.TLSInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", bits=256),
        timestamp=1_700_000_000.0,
    )
    assert field.startswith(b"Received:")
    stamp = parse_received(field[len(b"Received:"):])
    assert (stamp.from_name, stamp.from_rdns, stamp.from_ip) == (
        "client.example", "rdns.example", "2001:db8::25")
    assert (stamp.by_name, stamp.protocol, stamp.id, stamp.recipient) == (
        "mx.mailmoat.example", "ESMTPSA", "Q1", "bob@mailmoat.example")
    assert (stamp.tls, stamp.tls_version, stamp.cipher, stamp.tls_bits) == (
        TLSStatus.YES, "TLSv1.3", "TLS_AES_256_GCM_SHA384", 256)
    assert stamp.timestamp == datetime.fromtimestamp(1_700_000_000, UTC)
    assert stamp.authenticated
    plain = module.received_field(
        helo="h", client_ip="192.0.2.5", client_rdns=None, by_host="mx", protocol="ESMTP",
        queue_id="Q2", recipients=(), tls=None, timestamp=1_700_000_000.0,
    )
    assert parse_received(plain[len(b"Received:"):]).tls is TLSStatus.NO
