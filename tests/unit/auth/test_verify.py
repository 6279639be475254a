"""mailmoat.auth.verify.authenticate: SPF, DKIM, ARC and DMARC for one message, and our
Authentication-Results field (parsed back with the RFC 8601 parser to check what it says).

Expected results follow from the published records and the RFCs (RFC 7208 for SPF, RFC 7489 /
RFC 9989 for DMARC alignment and policy, RFC 8617 for ARC), not from our own output.
"""

from __future__ import annotations

import asyncio
import functools

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mailmoat.auth.arc import ARCStatus, seal, validate
from mailmoat.auth.authres import parse
from mailmoat.auth.dkim import DKIMResultCode, key_record, sign, txt_strings
from mailmoat.auth.dmarc import Disposition, DMARCVerdict, Policy
from mailmoat.auth.spf import SPFVerdict
from mailmoat.auth.verify import Authentication, authenticate
from mailmoat.clock import FixedClock
from mailmoat.resolver.fake import FakeResolver

NOW = 1_700_000_000
CLOCK = FixedClock(wall=NOW)
ME = "mx.receiver.test"
GOOD_IP, OTHER_IP = "192.0.2.10", "198.51.100.7"
BODY = b"\r\nHello.\r\n"


def headers(author: str) -> bytes:
    return (f"From: Sender <{author}>\r\nTo: bob@receiver.test\r\nSubject: hi\r\n"
            "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <x@example.org>\r\n"
            ).encode("ascii")


@functools.cache
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def dns() -> FakeResolver:
    fake = FakeResolver()
    fake.add_txt("sel._domainkey.example.org", *txt_strings(key_record(key())))
    fake.add_txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all")
    fake.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    fake.add_txt("bank.example", "v=spf1 -all")
    fake.add_txt("_dmarc.bank.example", "v=DMARC1; p=reject")
    fake.add_txt("arc._domainkey.lists.example", *txt_strings(key_record(key())))
    return fake


def run(message: bytes, *, ip: str = OTHER_IP, mail_from: str = "bounce@other.example",
        resolver: FakeResolver | None = None) -> Authentication:
    return asyncio.run(authenticate(message, ip=ip, helo="mail.other.example",
                                    mail_from=mail_from, resolver=resolver or dns(),
                                    clock=CLOCK, authserv_id=ME))


def signed(message: bytes) -> bytes:
    return sign(message, "example.org", "sel", key(), timestamp=NOW - 60) + message


def test_aligned_dkim_passes_dmarc_without_spf() -> None:
    out = run(signed(headers("alice@example.org") + BODY))
    assert out.spf.result is SPFVerdict.NONE  # other.example publishes no SPF
    (d,) = out.dkim
    assert (d.result, d.domain, d.selector) == (DKIMResultCode.PASS, "example.org", "sel")
    # RFC 7489 §4.2: one aligned passing identifier is enough
    assert out.dmarc.result is DMARCVerdict.PASS
    assert out.arc.result is ARCStatus.NONE
    field = parse(out.authentication_results.partition(":")[2])
    assert field.authserv_id == ME
    assert [(r.method, r.result) for r in field.results] == [
        ("spf", "none"), ("dkim", "pass"), ("arc", "none"), ("dmarc", "pass")]
    assert field.first("dkim") is not None
    assert field.first("dkim").prop("header.d") == "example.org"  # type: ignore[union-attr]


def test_spf_alone_aligns() -> None:
    out = run(headers("alice@example.org") + BODY, ip=GOOD_IP,
              mail_from="alice@example.org")
    assert out.spf.result is SPFVerdict.PASS
    assert out.dkim[0].result is DKIMResultCode.NONE
    assert out.dmarc.result is DMARCVerdict.PASS


def test_spoofed_author_of_reject_domain_fails_with_reject() -> None:
    out = run(headers("ceo@bank.example") + BODY, mail_from="ceo@bank.example")
    assert out.spf.result is SPFVerdict.FAIL  # "v=spf1 -all"
    assert out.dmarc.result is DMARCVerdict.FAIL
    assert out.dmarc.policy is Policy.REJECT
    assert out.dmarc.disposition is Disposition.REJECT
    data = out.as_dict()
    assert data["dmarc"]["result"] == "fail"
    assert data["dmarc"]["disposition"] == "reject"
    assert "dmarc=fail" in out.authentication_results
    assert any("DMARC fail" in line for line in out.explain())


def test_tampered_signed_message_fails_dkim_and_dmarc() -> None:
    message = signed(headers("alice@example.org") + BODY).replace(b"Hello.", b"Pay me.")
    out = run(message)
    assert out.dkim[0].result is DKIMResultCode.FAIL
    assert out.dmarc.result is DMARCVerdict.FAIL


def test_arc_sealed_forward_is_reported() -> None:
    message = signed(headers("alice@example.org") + BODY)
    chain = asyncio.run(validate(message, dns(), clock=CLOCK))
    new = seal(message, chain, authserv_id="lists.example", results=["dkim=pass"],
               domain="lists.example", selector="arc", private_key=key(), timestamp=NOW)
    assert new is not None
    out = run(new.fields + message)
    assert out.arc.result is ARCStatus.PASS
    assert out.as_dict()["arc"]["result"] == "pass"
    arc = parse(out.authentication_results.partition(":")[2]).first("arc")
    assert arc is not None
    assert arc.result == "pass"
    assert arc.prop("header.oldest-pass") == "0"


def test_forged_authentication_results_are_counted() -> None:
    forged = f"Authentication-Results: {ME}; dkim=pass header.d=bank.example\r\n".encode()
    out = run(forged + headers("ceo@bank.example") + BODY)
    assert out.forged_authentication_results == 1
    assert any("RFC 8601 §5" in line for line in out.explain())


def test_null_reverse_path_checks_helo() -> None:
    out = run(headers("alice@example.org") + BODY, mail_from="<>")
    assert out.spf.identity.value == "helo"


def test_bad_ip_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="does not appear"):
        run(headers("alice@example.org") + BODY, ip="not-an-ip")
