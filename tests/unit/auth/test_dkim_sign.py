"""DKIM signing (RFC 6376 §5, RFC 8301, RFC 8463): header choice, over-signing, folding, and
refusals. Every signature made here is checked by dkimpy (independent) too."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mailmoat.auth.dkim import (
    DKIMResultCode,
    DKIMSigningError,
    key_record,
    load_private_key,
    parse_signature,
    sign,
    sign_dual,
    txt_strings,
    verify,
)
from mailmoat.clock import FixedClock
from mailmoat.message.dkim_canon import canonicalize_body
from mailmoat.resolver.fake import FakeResolver

dkim = pytest.importorskip("dkim")
pytest.importorskip("nacl")

MESSAGE = (
    b"Received: from a\r\nFrom: Joe <joe@example.com>\r\nTo: sue@example.net\r\n"
    b"Subject: hello\r\nX-Mailer: test\r\n\r\nHi Sue,\r\n\r\n\r\n"
)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def dkimpy_ok(message: bytes, record: str) -> bool:
    return bool(dkim.verify(message, dnsfunc=lambda name, timeout=5: record.encode()))


def h_list(field: bytes) -> list[bytes]:
    return list(parse_signature(field).signed_headers)


def test_default_headers_and_oversigning(key: rsa.RSAPrivateKey) -> None:
    field = sign(MESSAGE, "example.com", "s", key)
    names = h_list(field)
    # present recommended fields (RFC 6376 §5.4.1), over-signed: count + 1
    assert names.count(b"from") == 2
    assert names.count(b"subject") == 2
    assert names.count(b"to") == 2
    # absent over-signed names are listed once (nobody can add them later)
    assert names.count(b"cc") == 1
    # Received and X-Mailer are not in the default set
    assert b"received" not in names
    assert b"x-mailer" not in names
    assert dkimpy_ok(field + MESSAGE, key_record(key))
    # adding a second Subject breaks it (RFC 6376 §8.15)
    head, body = MESSAGE.split(b"\r\n\r\n", 1)
    forged = field + head + b"\r\nSubject: other\r\n\r\n" + body
    assert not dkimpy_ok(forged, key_record(key))


def test_explicit_headers_without_oversigning(key: rsa.RSAPrivateKey) -> None:
    field = sign(MESSAGE, "example.com", "s", key, headers=["From", "X-Mailer", "Reply-To"],
                 oversign=())
    # an absent header named explicitly is signed once (asserting its absence)
    assert h_list(field) == [b"from", b"x-mailer", b"reply-to"]
    assert dkimpy_ok(field + MESSAGE, key_record(key))


def test_from_is_always_signed(key: rsa.RSAPrivateKey) -> None:
    # RFC 6376 §5.4: "The From header field MUST be signed"
    field = sign(MESSAGE, "example.com", "s", key, headers=["Subject"], oversign=())
    assert h_list(field)[0] == b"from"


def test_folding_and_tags(key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())  # dkimpy checks x= against the real clock
    field = sign(MESSAGE, "example.com", "s", key, timestamp=now, expire=now + 3600,
                 identity="joe@example.com", body_length=True,
                 canonicalization=("simple", "relaxed"))
    assert field.endswith(b"\r\n")
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))
    sig = parse_signature(field)
    assert (sig.timestamp, sig.expiration, sig.identity) == (now, now + 3600, "joe@example.com")
    assert (sig.header_canon, sig.body_canon) == ("simple", "relaxed")
    body = MESSAGE.split(b"\r\n\r\n", 1)[1]
    assert sig.length == len(canonicalize_body("relaxed", body))
    assert dkimpy_ok(field + MESSAGE, key_record(key))


def test_ed25519_and_dual(key: rsa.RSAPrivateKey) -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    both = sign_dual(MESSAGE, "example.com", rsa_selector="r", rsa_key=key,
                     ed25519_selector="e", ed25519_key=ed)
    fake = FakeResolver()
    fake.add_txt("r._domainkey.example.com", key_record(key))
    fake.add_txt("e._domainkey.example.com", key_record(ed))
    results = asyncio.run(verify(both + MESSAGE, fake, clock=FixedClock(wall=0)))
    assert [(r.result, r.algorithm) for r in results] == [
        (DKIMResultCode.PASS, "ed25519-sha256"), (DKIMResultCode.PASS, "rsa-sha256")]
    records = {b"r._domainkey.example.com.": key_record(key).encode(),
               b"e._domainkey.example.com.": key_record(ed).encode()}
    # dkimpy verifies the first signature (idx 0) and, with idx=1, the second
    for idx in (0, 1):
        assert dkim.DKIM(both + MESSAGE).verify(idx=idx, dnsfunc=lambda n, timeout=5: records[n])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithm": "rsa-sha1"}, "rsa-sha256"),  # RFC 8301 §3.1 "Signers MUST sign using rsa-sha256"
        ({"algorithm": "ed25519-sha256"}, "rsa-sha256"),
        ({"canonicalization": ("relaxed", "nowsp")}, "unknown canonicalization"),
        ({"timestamp": 200, "expire": 100}, "expire must be later"),
    ],
)
def test_refusals(key: rsa.RSAPrivateKey, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DKIMSigningError, match=message):
        sign(MESSAGE, "example.com", "s", key, **kwargs)  # type: ignore[arg-type]


def test_refuses_bad_domain_and_no_from(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(DKIMSigningError, match="valid signature"):
        sign(MESSAGE, "exa mple.com", "s", key)
    with pytest.raises(DKIMSigningError, match="no From"):
        sign(b"To: x\r\n\r\nbody\r\n", "example.com", "s", key)
    with pytest.raises(DKIMSigningError, match="RSA or Ed25519"):
        sign(MESSAGE, "example.com", "s", ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]


def test_load_private_key_formats(key: rsa.RSAPrivateKey) -> None:
    pkcs1 = key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    assert isinstance(load_private_key(pkcs1), rsa.RSAPrivateKey)
    ed = ed25519.Ed25519PrivateKey.generate()
    seed = ed.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    assert isinstance(load_private_key(base64.b64encode(seed) + b"\n"), ed25519.Ed25519PrivateKey)
    der = ed.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())
    assert isinstance(load_private_key(der), ed25519.Ed25519PrivateKey)
    for junk in (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                 base64.b64encode(b"short"), b"\x30" * 100):
        with pytest.raises(DKIMSigningError):
            load_private_key(junk)
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(DKIMSigningError, match="only RSA and Ed25519"):
        load_private_key(ec_pem)


def test_txt_strings_split_at_255(key: rsa.RSAPrivateKey) -> None:
    record = key_record(key)
    parts = txt_strings(record)
    assert "".join(parts) == record
    assert all(len(p) <= 255 for p in parts)  # RFC 1035 §3.3 <character-string>
    assert len(parts) == -(-len(record) // 255)
