"""DKIM conformance: the dkimpy and authheaders test data (../shared/conformance, SOURCES.md).

Expected results come from the suites' own tests (dkimpy ``dkim/tests/test_dkim*.py``,
authheaders ``authheaders/test/test_authentication.py``; not copied, cited per case), from the
RFCs, and - for messages we sign - from dkimpy verifying our signature as an independent peer.
The clock is fixed (t=/x= in the vectors). Files with LF line ends are normalised to CRLF, as
SOURCES.md asks.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from conftest import conformance
from mailmoat.auth.dkim import (
    DKIMResult,
    DKIMResultCode,
    DKIMSigningError,
    DKIMTagError,
    load_private_key,
    normalize_line_endings,
    parse_key_record,
    sign,
    verify,
)
from mailmoat.clock import FixedClock
from mailmoat.resolver.fake import FakeResolver

dkim = pytest.importorskip("dkim")

PASS, FAIL, PERM = DKIMResultCode.PASS, DKIMResultCode.FAIL, DKIMResultCode.PERMERROR
#: after every t= in the vectors (2011-2021), before any x=
CLOCK = FixedClock(wall=1_700_000_000)

#: RFC 8463 Appendix A.2: "brisbane._domainkey.football.example.com. IN TXT ("v=DKIM1;
#: k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")" - the RFC 8032 §7.1 TEST 1 key.
RFC8463_BRISBANE = b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
#: RFC 8032 §7.1 TEST 1 PUBLIC KEY (hex).
RFC8032_TEST1_PUBLIC = bytes.fromhex(
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
)
#: The 20120113._domainkey.gmail.com key that dkimpy's test_degenerate_folding publishes for
#: test2.message (a real Gmail signature; the key is public DNS data).
GMAIL_20120113 = (
    b"k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA1Kd87/UeJjenpabgbFwh"
    b"+eBCsSTrqmwIYYvywlbhbqoo2DymndFkbjOVIPIldNs/m40KF+yzMn1skyoxcTUGCQ"
    b"s8g3FgD2Ap3ZB5DekAo5wMmk4wimDO+U8QzI3SD07y2+07wlNWwIt8svnxgdxGkVbb"
    b"hzY8i+RQ9DpSVpPbF7ykQxtKXkv/ahW3KjViiAH+ghvvIhkx4xYSIc9oSwVmAl5Oct"
    b"MEeWUwg8Istjqz8BZeTWbf41fbNhte7Y+YqZOwq1Sd0DbvYAD9NOZK9vlfuac0598H"
    b"Y+vtSBczUiKERHv1yRbcaQtZFh5wtiRrN04BLUTD21MycBX5jYchHjPY/wIDAQAB"
)


def data(name: str) -> bytes:
    return conformance("dkimpy", "data", name).read_bytes()


def ah(name: str) -> bytes:
    return conformance("authheaders", "test", name).read_bytes()


def msg(raw: bytes) -> bytes:
    return normalize_line_endings(raw)


def resolver(records: dict[str, bytes]) -> FakeResolver:
    fake = FakeResolver()
    for name, value in records.items():
        fake.add_txt(name, value.strip())
    return fake


def run(message: bytes, records: dict[str, bytes]) -> tuple[DKIMResult, ...]:
    return asyncio.run(verify(message, resolver(records), clock=CLOCK))


def dkimpy_verifies(message: bytes, records: dict[str, bytes]) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip("."), b"")

    return bool(dkim.verify(message, dnsfunc=dnsfunc, minkey=1024))


# --- the RFC 6376 example message, signed with RFC 8463's Ed25519 key and dkimpy's RSA key ---


def test_listing_of_the_data_dir_is_what_this_runner_covers() -> None:
    names = sorted(p.name for p in conformance("dkimpy", "data").iterdir())
    assert names == sorted(
        [
            "badk.txt", "badversion.txt", "ed25519test.dns", "ed25519test.key",
            "ed25519test.msg", "ed25519test2.msg", "eximtest.dns", "message.mbox",
            "rfc6376.msg", "rfc6376.signed.msg", "rfc8032_7_1.key", "test.message",
            "test.private", "test.txt", "test2.message", "test2.private", "test2.txt",
            "test_bad.txt", "test_extra.message", "test_nofrom.message", "test_tlsrpt.txt",
        ]
    ), "new vectors: add them to this runner"


@pytest.fixture
def rfc_keys() -> dict[str, bytes]:
    return {
        "brisbane._domainkey.football.example.com": RFC8463_BRISBANE,
        "test._domainkey.football.example.com": data("test.txt"),
    }


def test_rfc8032_key_is_the_rfc8463_brisbane_key() -> None:
    """rfc8032_7_1.key is RFC 8032 §7.1 TEST 1; its public half is RFC 8463's brisbane key."""
    key = load_private_key(data("rfc8032_7_1.key"))
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert pub == RFC8032_TEST1_PUBLIC
    assert base64.b64encode(pub) == RFC8463_BRISBANE.split(b"p=")[1]


def test_rfc6376_signed_message_both_signatures_pass(rfc_keys: dict[str, bytes]) -> None:
    # dkimpy test_dkim.py (dnsfunc5): rfc6376.signed.msg verifies (ed25519 + rsa)
    results = run(msg(data("rfc6376.signed.msg")), rfc_keys)
    assert [(r.result, r.algorithm, r.selector) for r in results] == [
        (PASS, "ed25519-sha256", "brisbane"),
        (PASS, "rsa-sha256", "test"),
    ]
    assert results[0].header_d == "football.example.com"
    assert results[0].header_i == "@football.example.com"
    assert results[0].header_b == "9/dsDChY"
    # test.txt is a 1024-bit key: accepted, flagged (RFC 8301 §3.2)
    assert results[1].key_bits == 1024
    assert "weak_key" in results[1].flags
    assert results[0].key_bits == 256
    assert dkimpy_verifies(msg(data("rfc6376.signed.msg")), rfc_keys)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"We lost the game.", b"We won the game."),
        lambda m: m.replace(b"Subject: Is dinner ready?", b"Subject: Is lunch ready?"),
        lambda m: m + b"P.S. appended\r\n",
        lambda m: m.replace(b"From: Joe", b"From: Jim"),
    ],
    ids=["body", "subject", "appended", "from"],
)
def test_rfc6376_signed_message_tampered_fails(rfc_keys: dict[str, bytes], tamper: object) -> None:
    assert callable(tamper)
    results = run(tamper(msg(data("rfc6376.signed.msg"))), rfc_keys)
    assert [r.result for r in results] == [FAIL, FAIL]


def test_rfc6376_msg_signed_with_rfc8032_key(rfc_keys: dict[str, bytes]) -> None:
    message = msg(data("rfc6376.msg"))
    key = load_private_key(data("rfc8032_7_1.key"))
    for canon in (("simple", "simple"), ("relaxed", "relaxed")):
        field = sign(message, "football.example.com", "brisbane", key, canonicalization=canon)
        assert [r.result for r in run(field + message, rfc_keys)] == [PASS]
        assert dkimpy_verifies(field + message, rfc_keys)


def test_rfc6376_body_hashes_match_the_vector() -> None:
    # The vector's bh= (simple) is the hash of the canonical body; RFC 8463 A.3 gives the
    # relaxed one for the same body: 2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=.
    from mailmoat.message.dkim_canon import BodyCanonicalizer

    body = msg(data("rfc6376.msg")).split(b"\r\n\r\n", 1)[1]
    for kind, expected in (
        ("simple", "4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ="),
        ("relaxed", "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="),
    ):
        c = BodyCanonicalizer(kind)  # type: ignore[arg-type]
        c.update(body)
        assert base64.b64encode(c.digest()).decode() == expected


# --- RFC 8463 Ed25519: the Exim prototype signature and dkimpy's ed25519 key --------------


def test_exim_ed25519_signature_passes() -> None:
    # dkimpy test_dkim_ed25519.py test_verify_third_party: "Message signed by prototype Exim
    # implementation" verifies with sed._domainkey.test.ex = eximtest.dns
    results = run(msg(data("ed25519test2.msg")), {"sed._domainkey.test.ex": data("eximtest.dns")})
    assert [(r.result, r.algorithm, r.domain) for r in results] == [
        (PASS, "ed25519-sha256", "test.ex")
    ]


def test_ed25519_key_pair_matches_its_dns_record() -> None:
    key = load_private_key(data("ed25519test.key"))
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert b"p=" + base64.b64encode(pub) in data("ed25519test.dns")


@pytest.mark.parametrize("hc", ["simple", "relaxed"])
@pytest.mark.parametrize("bc", ["simple", "relaxed"])
def test_ed25519test_msg_sign_verify(hc: str, bc: str) -> None:
    # dkimpy test_dkim_ed25519.py test_verifies: every canonicalisation pair verifies
    keys = {"test._domainkey.example.com": data("ed25519test.dns")}
    message = msg(data("ed25519test.msg"))
    field = sign(message, "example.com", "test", load_private_key(data("ed25519test.key")),
                 canonicalization=(hc, bc))
    assert [r.result for r in run(field + message, keys)] == [PASS]
    assert dkimpy_verifies(field + message, keys)
    # test_altered_body_fails
    assert [r.result for r in run(field + message + b"foo", keys)] == [FAIL]


# --- RSA: test.message / test.private / test.txt, test2.*, message.mbox ---------------------

def rsa_keys(record: str = "test.txt") -> dict[str, bytes]:
    return {"test._domainkey.example.com": data(record)}


@pytest.mark.parametrize("hc", ["simple", "relaxed"])
@pytest.mark.parametrize("bc", ["simple", "relaxed"])
def test_test_message_sign_verify(hc: str, bc: str) -> None:
    # dkimpy test_dkim.py test_verifies / test_altered_body_fails
    message = msg(data("test.message"))
    field = sign(message, "example.com", "test", load_private_key(data("test.private")),
                 canonicalization=(hc, bc))
    assert [r.result for r in run(field + message, rsa_keys())] == [PASS]
    assert dkimpy_verifies(field + message, rsa_keys())
    assert [r.result for r in run(field + message + b"foo", rsa_keys())] == [FAIL]


def test_implicit_k_is_rsa() -> None:
    # dkimpy test_implicit_k: test2.txt has no k= (RFC 6376 §3.6.1 default "rsa")
    message = msg(data("test.message"))
    field = sign(message, "example.com", "test", load_private_key(data("test2.private")))
    assert [r.result for r in run(field + message, rsa_keys("test2.txt"))] == [PASS]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("badk.txt", "unknown key type"),  # k=ed25519-sha256 is not a key type
        ("badversion.txt", "version"),  # "v=DKIM1:" is not "DKIM1"
        ("test_bad.txt", "not a valid RSA public key"),  # truncated p=
        ("test_tlsrpt.txt", "not for the email service"),  # s=tlsrpt only
    ],
)
def test_bad_key_records_are_rejected(record: str, reason: str) -> None:
    # dkimpy test_dkim.py: dnsfunc3 (badversion), dnsfunc4 (badk), test_ignores_tlsrptsvc; the
    # dkimpy data README: "badk.txt, badversion.txt and test_bad.txt are invalid key records"
    message = msg(data("test.message"))
    field = sign(message, "example.com", "test", load_private_key(data("test.private")))
    results = run(field + message, rsa_keys(record))
    assert [r.result for r in results] == [PERM]
    assert reason in results[0].reason
    assert not dkimpy_verifies(field + message, rsa_keys(record))


@pytest.mark.parametrize("record", ["badk.txt", "badversion.txt", "test_bad.txt"])
def test_bad_key_records_do_not_parse(record: str) -> None:
    with pytest.raises(DKIMTagError):
        parse_key_record(data(record).strip())


def test_degenerate_folding_gmail_signature_passes() -> None:
    # dkimpy test_degenerate_folding (Debian bug #711751): "degenerate folding is ugly but
    # legal" - a real Gmail signature with a lone-TAB-folded b=
    results = run(msg(data("test2.message")), {"20120113._domainkey.gmail.com": GMAIL_20120113})
    assert [(r.result, r.domain, r.key_bits) for r in results] == [(PASS, "gmail.com", 2048)]
    assert results[0].flags == ()


@pytest.mark.parametrize("hc", ["simple", "relaxed"])
@pytest.mark.parametrize("bc", ["simple", "relaxed"])
def test_extra_headers_mbox_signing_all_headers(hc: str, bc: str) -> None:
    # dkimpy test_extra_headers (launchpad #737311): sign every header field including the
    # repeated Received fields; verification must select the same instances
    message = msg(data("message.mbox"))
    names = []
    for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line and line[0] not in b" \t":
            names.append(line.split(b":", 1)[0].decode())
    field = sign(message, "example.com", "test", load_private_key(data("test.private")),
                 headers=names, oversign=(), canonicalization=(hc, bc))
    results = run(field + message, rsa_keys())
    # message.mbox also carries the original kitterman.com signature (key not published)
    assert [r.result for r in results] == [PASS, PERM]
    assert results[1].domain == "kitterman.com"
    assert results[1].reason == "no key for signature"
    assert dkimpy_verifies(field + message, rsa_keys())


def test_extra_received_fields_above_from() -> None:
    message = msg(data("test_extra.message"))
    field = sign(message, "example.com", "test", load_private_key(data("test.private")))
    assert [r.result for r in run(field + message, rsa_keys())] == [PASS]


def test_no_from_cannot_be_signed() -> None:
    # dkimpy test_no_from_fails: "Body From is mandatory to be in the message and mandatory
    # to sign"
    with pytest.raises(DKIMSigningError, match="From"):
        sign(msg(data("test_nofrom.message")), "example.com", "test",
             load_private_key(data("test.private")))


def test_multiple_from_fails() -> None:
    # dkimpy test_multiple_from_fails (launchpad #644046): another From, above or below, fails;
    # an unrelated new field does not. dkimpy's signer over-signs From by default, as ours does.
    message = msg(data("test.message"))
    head, body = message.split(b"\r\n\r\n", 1)
    field = sign(message, "example.com", "test", load_private_key(data("test.private")))
    spoof = b'From: "Resident Evil" <sales@spammer.com>'
    for variant, expected in (
        (head + b"\r\nX-Foo: bar", PASS),
        (head + b"\r\n" + spoof, FAIL),
        (spoof + b"\r\n" + head, FAIL),
    ):
        signed = field + variant + b"\r\n\r\n" + body
        assert [r.result for r in run(signed, rsa_keys())] == [expected]
        assert dkimpy_verifies(signed, rsa_keys()) is (expected is PASS)


def test_without_oversigning_a_from_added_on_top_is_not_covered() -> None:
    # RFC 6376 §5.4.2: instances are selected from the bottom up, so without over-signing an
    # added From *above* the signed one leaves the signature valid (§8.15 is why we over-sign
    # by default). (dkimpy refuses any message with two From fields, a policy beyond RFC 6376;
    # DMARC, RFC 7489 §6.6.1, is where multiple From fields are judged.)
    message = msg(data("test.message"))
    head, body = message.split(b"\r\n\r\n", 1)
    field = sign(message, "example.com", "test", load_private_key(data("test.private")),
                 oversign=())
    signed = field + b"From: <evil@spammer.example>\r\n" + head + b"\r\n\r\n" + body
    assert [r.result for r in run(signed, rsa_keys())] == [PASS]


# --- authheaders ------------------------------------------------------------------------------

def ah_keys() -> dict[str, bytes]:
    txt = ah("test.txt")
    # np1/np2 claim d=example.biz: publish the same key there, so only the crypto decides
    return {"test._domainkey.example.com": txt, "test._domainkey.example.biz": txt}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # test_authenticate_dkim: "dkim=pass header.d=example.com header.i=@example.com"
        ("test.message_signed", PASS),
        # test_authenticate_dmarc_comma: dkim=pass
        ("testcomma.message", PASS),
        # the signed message with its From changed: the suite's A-R says dkim=fail
        ("test.message_multi", FAIL),
        ("test.message_multi2", FAIL),
        ("test.message_sub", FAIL),
        # the same signature with d= rewritten to example.biz: fails
        ("test.message_np1", FAIL),
        ("test.message_np2", FAIL),
    ],
)
def test_authheaders_signed_messages(name: str, expected: DKIMResultCode) -> None:
    results = run(msg(ah(name)), ah_keys())
    assert [r.result for r in results] == [expected]
    assert results[0].algorithm == "rsa-sha256"
    if expected is PASS:
        assert (results[0].header_d, results[0].header_i) == ("example.com", "@example.com")
    assert dkimpy_verifies(msg(ah(name)), ah_keys()) is (expected is PASS)


@pytest.mark.parametrize("name", ["test.message", "test.gov.message", "test.bad.message",
                                  "test_nop.message", "test.nofrom.message"])
def test_authheaders_sign_then_verify(name: str) -> None:
    message = msg(ah(name))
    field = sign(message, "example.com", "test", load_private_key(ah("test.private")))
    assert [r.result for r in run(field + message, ah_keys())] == [PASS]
    assert dkimpy_verifies(field + message, ah_keys())


def test_unsigned_message_is_none() -> None:
    results = run(msg(ah("test.message")), ah_keys())
    assert [r.result for r in results] == [DKIMResultCode.NONE]
