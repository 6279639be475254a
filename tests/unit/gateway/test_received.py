"""Our Received field: RFC 5321 §4.4 form, RFC 3848 / RFC 6531 ``with`` keywords, the TLS
comment, and a round trip through the header analyser (mailmoat.analysis.parse_received,
written independently from this module) which must read tls=yes, the version and the cipher.
"""

from __future__ import annotations

import datetime
import re

import pytest

from mailmoat.analysis import TLSStatus, parse_received
from mailmoat.gateway.received import received_field, rfc5322_date, with_protocol
from mailmoat.net.tls import TLSInfo

TLS13 = TLSInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", bits=256)
TLS12 = TLSInfo(version="TLSv1.2", cipher="ECDHE-ECDSA-AES128-GCM-SHA256", bits=128)
WHEN = 1795899600.0  # 2026-11-28 21:00:00 UTC


def field(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "helo": "client.example", "client_ip": "192.0.2.1", "client_rdns": None,
        "by_host": "mx.test", "protocol": "ESMTPS", "queue_id": "01M8J071AJ4HJBER2G20R3JMD8",
        "recipients": ("bob@mx.test",), "tls": TLS13, "timestamp": WHEN,
    }
    args.update(overrides)
    return received_field(**args)  # type: ignore[arg-type]


def value(raw: bytes) -> bytes:
    assert raw.startswith(b"Received:")
    return raw[len(b"Received:"):]


# RFC 3848 §1 and RFC 6531 §3.7.3 registrations.
@pytest.mark.parametrize(("esmtp", "tls", "auth", "utf8", "keyword"), [
    (False, False, False, False, "SMTP"),
    (True, False, False, False, "ESMTP"),
    (True, False, True, False, "ESMTPA"),
    (True, True, False, False, "ESMTPS"),
    (True, True, True, False, "ESMTPSA"),
    (True, False, False, True, "UTF8SMTP"),
    (True, False, True, True, "UTF8SMTPA"),
    (True, True, False, True, "UTF8SMTPS"),
    (True, True, True, True, "UTF8SMTPSA"),
])
def test_with_keyword(esmtp: bool, tls: bool, auth: bool, utf8: bool, keyword: str) -> None:
    assert with_protocol(esmtp=esmtp, tls=tls, authenticated=auth, smtputf8=utf8) == keyword


@pytest.mark.parametrize("tls", [TLS13, TLS12])
def test_round_trip_through_the_analyser(tls: TLSInfo) -> None:
    stamp = parse_received(value(field(tls=tls, protocol="ESMTPSA")))
    assert stamp.problems == ()
    assert stamp.tls is TLSStatus.YES
    assert stamp.tls_version == tls.version
    assert stamp.cipher == tls.cipher
    assert stamp.tls_bits == tls.bits
    assert stamp.protocol == "ESMTPSA"
    assert stamp.authenticated
    assert stamp.from_name == "client.example"
    assert stamp.from_ip == "192.0.2.1"
    assert stamp.by_name == "mx.test"
    assert stamp.id == "01M8J071AJ4HJBER2G20R3JMD8"
    assert stamp.recipient is not None
    assert stamp.recipient.strip("<>") == "bob@mx.test"
    assert stamp.timestamp == datetime.datetime(2026, 11, 28, 21, 0, tzinfo=datetime.UTC)


def test_plaintext_hop_reads_as_no_tls() -> None:
    stamp = parse_received(value(field(tls=None, protocol="ESMTP")))
    assert stamp.tls is TLSStatus.NO


def test_form_and_folding() -> None:
    raw = field()
    assert raw.endswith(b"\r\n")
    lines = raw[:-2].split(b"\r\n")
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith(b"\t") for line in lines[1:])
    text = raw.decode("ascii")
    assert "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))" in text
    # RFC 5322 §3.3 date-time after the ";", parsed by the standard library as the oracle.
    date = text.rsplit(";", 1)[1].strip()
    parsed = datetime.datetime.strptime(date, "%a, %d %b %Y %H:%M:%S %z")
    assert parsed.timestamp() == WHEN
    assert rfc5322_date(WHEN) == "Sat, 28 Nov 2026 21:00:00 +0000"


def test_several_recipients_are_not_disclosed() -> None:
    text = field(recipients=("a@mx.test", "b@mx.test")).decode()
    assert " for " not in text
    assert "a@mx.test" not in text


@pytest.mark.parametrize("helo", [
    "evil) by forged.example with ESMTPS (using TLSv1.3",
    "x\r\nReceived: forged",
    "a;b",
    "[1.2.3.4]",
    "\u00e9t\u00e9.example",
    "",
])
def test_peer_words_cannot_forge_clauses(helo: str) -> None:
    raw = field(helo=helo, tls=None, protocol="ESMTP")
    text = raw.decode("ascii")  # ASCII only
    assert text.count("\r\n") == text.count("\r\n\t") + 1  # no extra header line
    stamp = parse_received(value(raw))
    assert stamp.by_name == "mx.test"
    assert stamp.tls is TLSStatus.NO
    assert text.count("(") == text.count(")")
    assert re.search(r";[^;]*$", text)  # exactly the one ";" before the date
    assert text.count(";") == 1


def test_client_certificate_subject_is_comment_safe() -> None:
    tls = TLSInfo(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", bits=128,
                  peer_subject="CN=evil) by x (\\")
    raw = field(tls=tls)
    stamp = parse_received(value(raw))
    assert stamp.tls is TLSStatus.YES
    assert stamp.cipher == "TLS_AES_128_GCM_SHA256"
    assert stamp.by_name == "mx.test"


@pytest.mark.parametrize(("ip", "literal", "parsed"), [
    ("192.0.2.1", "[192.0.2.1]", "192.0.2.1"),
    ("2001:db8::1", "[IPv6:2001:db8::1]", "2001:db8::1"),  # RFC 5321 §4.1.3
    ("::ffff:192.0.2.7", "[192.0.2.7]", "192.0.2.7"),  # IPv4-mapped: the IPv4 client
])
def test_client_address_literal(ip: str, literal: str, parsed: str) -> None:
    raw = field(client_ip=ip)
    assert f"(unknown {literal})".encode() in raw
    assert parse_received(value(raw)).from_ip == parsed
