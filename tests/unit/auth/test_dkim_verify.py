"""DKIM verification outcomes (RFC 6376 §6.1, RFC 8301, RFC 8463) and bad input.

Signatures under test come from our signer *and* from dkimpy (independent), so a result is
never checked only against our own output.
"""

from __future__ import annotations

import asyncio
import base64
import time
import tracemalloc

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailmoat.auth.dkim import (
    DKIMResult,
    DKIMResultCode,
    DKIMVerifier,
    VerifyPolicy,
    key_record,
    sign,
    split_message,
    verify,
)
from mailmoat.clock import FixedClock
from mailmoat.limits import DKIM_MAX_SIGNATURES
from mailmoat.resolver.fake import FakeResolver

dkim = pytest.importorskip("dkim")

R = DKIMResultCode
NOW = 1_700_000_000
CLOCK = FixedClock(wall=NOW)
KEY_NAME = "sel._domainkey.example.com"
MESSAGE = (
    b"From: Joe <joe@example.com>\r\nTo: sue@example.net\r\nSubject: hello\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\nHi Sue,\r\n\r\nsee you.\r\n"
)


@pytest.fixture(scope="module")
def rsa2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa1024() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def fake(record: str | bytes | None, name: str = KEY_NAME) -> FakeResolver:
    f = FakeResolver()
    if record is not None:
        f.add_txt(name, record)
    return f


def check(message: bytes, resolver: FakeResolver, **kw: object) -> tuple[DKIMResult, ...]:
    clock = kw.pop("clock", CLOCK)
    policy = kw.pop("policy", VerifyPolicy())
    return asyncio.run(verify(message, resolver, clock=clock, policy=policy))  # type: ignore[arg-type]


def test_unsigned_is_none() -> None:
    assert [r.result for r in check(MESSAGE, fake(None))] == [R.NONE]


def test_pass_2048_no_flags(rsa2048: rsa.RSAPrivateKey) -> None:
    signed = sign(MESSAGE, "example.com", "sel", rsa2048) + MESSAGE
    (res,) = check(signed, fake(key_record(rsa2048)))
    assert res.result is R.PASS
    assert (res.key_bits, res.flags) == (2048, ())
    assert (res.domain, res.selector, res.header_d, res.header_i) == (
        "example.com", "sel", "example.com", "@example.com")
    assert res.header_b is not None
    assert len(res.header_b) == 8


def test_1024_passes_flagged_weak(rsa1024: rsa.RSAPrivateKey) -> None:
    # RFC 8301 §3.2: 1024-2047 bits are valid; we flag them
    signed = sign(MESSAGE, "example.com", "sel", rsa1024) + MESSAGE
    (res,) = check(signed, fake(key_record(rsa1024)))
    assert (res.result, res.key_bits, res.flags) == (R.PASS, 1024, ("weak_key",))


#: A 512-bit RSA test key (dkimpy's test_dkim.py, test_dkim_signature_canonicalization);
#: cryptography refuses to generate keys this small.
SMALL_KEY = b"""-----BEGIN RSA PRIVATE KEY-----
MIIBOwIBAAJBANmBe10IgY+u7h3enWTukkqtUD5PR52Tb/mPfjC0QJTocVBq6Za/
PlzfV+Py92VaCak19F4WrbVTK5Gg5tW220MCAwEAAQJAYFUKsD+uMlcFu1D3YNaR
EGYGXjJ6w32jYGJ/P072M3yWOq2S1dvDthI3nRT8MFjZ1wHDAYHrSpfDNJ3v2fvZ
cQIhAPgRPmVYn+TGd59asiqG1SZqh+p+CRYHW7B8BsicG5t3AiEA4HYNOohlgWan
8tKgqLJgUdPFbaHZO1nDyBgvV8hvWZUCIQDDdCq6hYKuKeYUy8w3j7cgJq3ih922
2qNWwdJCfCWQbwIgTY0cBvQnNe0067WQIpj2pG7pkHZR6qqZ9SE+AjNTHX0CIQCI
Mgq55Y9MCq5wqzy141rnxrJxTwK9ABo3IAFMWEov3g==
-----END RSA PRIVATE KEY-----
"""
#: dkimpy stamps t= with the real time
REAL = FixedClock(wall=time.time())


def test_512_bit_key_is_refused() -> None:
    # RFC 8301 §3.2: "Verifiers MUST NOT consider signatures using RSA keys of less than 1024
    # bits as valid signatures." (dkimpy signs with a small key; our signer refuses to)
    small = serialization.load_pem_private_key(SMALL_KEY, None)
    assert isinstance(small, rsa.RSAPrivateKey)
    signed = dkim.sign(MESSAGE, b"sel", b"example.com", SMALL_KEY) + MESSAGE
    (res,) = check(signed, fake(key_record(small)), clock=REAL)
    assert res.result is R.PERMERROR
    assert "below 1024" in res.reason
    assert res.key_bits == 512


def test_rsa_sha1_policy(rsa2048: rsa.RSAPrivateKey) -> None:
    signed = dkim.sign(MESSAGE, b"sel", b"example.com", pem(rsa2048),
                       signature_algorithm=b"rsa-sha1") + MESSAGE
    (res,) = check(signed, fake(key_record(rsa2048)), clock=REAL)
    assert (res.result, res.algorithm) == (R.POLICY, "rsa-sha1")  # RFC 8301 §3.1
    (res,) = check(signed, fake(key_record(rsa2048)), policy=VerifyPolicy(allow_sha1=True),
                   clock=REAL)
    assert (res.result, res.flags) == (R.PASS, ("sha1",))


@pytest.mark.parametrize(
    ("record_extra", "identity", "code", "reason"),
    [
        ("h=sha1; ", None, R.PERMERROR, "inappropriate hash algorithm"),  # §6.1.2 step 5
        ("h=sha256; ", None, R.PASS, ""),
        ("s=email; ", None, R.PASS, ""),
        ("s=tlsrpt; ", None, R.PERMERROR, "not for the email service"),
        ("t=s; ", "@mail.example.com", R.PERMERROR, "t=s"),  # §3.6.1 t=s
        ("t=s; ", "@example.com", R.PASS, ""),
        ("t=y; ", None, R.PASS, ""),
    ],
)
def test_key_record_tags(rsa2048: rsa.RSAPrivateKey, record_extra: str, identity: str | None,
                         code: R, reason: str) -> None:
    signed = sign(MESSAGE, "example.com", "sel", rsa2048, identity=identity) + MESSAGE
    record = key_record(rsa2048).replace("v=DKIM1; ", "v=DKIM1; " + record_extra)
    (res,) = check(signed, fake(record))
    assert res.result is code
    assert reason in res.reason
    if "t=y" in record_extra:
        assert "testing" in res.flags


def test_key_type_mismatch(rsa2048: rsa.RSAPrivateKey) -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    signed = sign(MESSAGE, "example.com", "sel", ed) + MESSAGE
    (res,) = check(signed, fake(key_record(rsa2048)))
    assert (res.result, res.reason) == (
        R.PERMERROR, "inappropriate key algorithm (k= does not match a=)")


def test_revoked_and_missing_and_unreachable_keys(rsa2048: rsa.RSAPrivateKey) -> None:
    signed = sign(MESSAGE, "example.com", "sel", rsa2048) + MESSAGE
    assert check(signed, fake("v=DKIM1; p="))[0].reason == "key revoked"
    assert check(signed, fake(None))[0].result is R.PERMERROR  # NXDOMAIN: "no key"
    assert check(signed, fake(None))[0].reason == "no key for signature"
    f = fake(key_record(rsa2048))
    f.set_timeout(KEY_NAME)
    assert check(signed, f)[0].result is R.TEMPERROR  # §6.1.2 TEMPFAIL (key unavailable)
    bad = check(signed, fake("v=DKIM1; k=rsa; p=" + base64.b64encode(b"junk").decode()))
    assert bad[0].result is R.PERMERROR
    assert bad[0].reason.startswith("key syntax error")


def test_second_txt_record_is_tried(rsa2048: rsa.RSAPrivateKey) -> None:
    # RFC 6376 §3.6.2.2: with several records, the verifier "may cycle through" them
    signed = sign(MESSAGE, "example.com", "sel", rsa2048) + MESSAGE
    f = FakeResolver()
    f.add_txt(KEY_NAME, "v=spf1 -all")
    f.add_txt(KEY_NAME, key_record(rsa2048))
    assert check(signed, f)[0].result is R.PASS


def test_time_checks(rsa2048: rsa.RSAPrivateKey) -> None:
    signed = sign(MESSAGE, "example.com", "sel", rsa2048, timestamp=NOW, expire=NOW + 3600) + MESSAGE
    f = fake(key_record(rsa2048))
    assert check(signed, f, clock=FixedClock(wall=NOW + 100))[0].result is R.PASS
    late = check(signed, f, clock=FixedClock(wall=NOW + 3600 + 301))[0]
    assert (late.result, late.reason) == (R.PERMERROR, "signature expired (x=)")
    # within the skew: still valid
    assert check(signed, f, clock=FixedClock(wall=NOW + 3600 + 200))[0].result is R.PASS
    early = check(signed, f, clock=FixedClock(wall=NOW - 1000))[0]
    assert early.result is R.PERMERROR
    assert "future" in early.reason
    assert check(signed, f, clock=FixedClock(wall=NOW - 200))[0].result is R.PASS
    no_time = VerifyPolicy(check_time=False)
    assert check(signed, f, clock=FixedClock(wall=0), policy=no_time)[0].result is R.PASS


def test_body_length_limit(rsa2048: rsa.RSAPrivateKey) -> None:
    # dkimpy signs with l= (length=True); content appended after the signed length passes,
    # conservatively reported (RFC 6376 §8.2)
    signed = dkim.sign(MESSAGE, b"sel", b"example.com", pem(rsa2048), length=True) + MESSAGE
    f = fake(key_record(rsa2048))
    (res,) = check(signed, f, clock=REAL)
    assert res.result is R.PASS
    assert res.body_length_info is not None
    assert res.body_length_info.unsigned == 0
    appended = signed + b"Click http://evil.example/\r\n"
    (res,) = check(appended, f, clock=REAL)
    assert res.result is R.PASS
    assert "unsigned_content" in res.flags
    assert res.body_length_info is not None
    assert res.body_length_info.unsigned == len(b"Click http://evil.example/\r\n")
    assert "unsigned" in res.reason
    (res,) = check(appended, f, policy=VerifyPolicy(reject_unsigned_content=True), clock=REAL)
    assert res.result is R.POLICY
    # l= longer than the body: fail
    head, _ = split_message(signed)
    (res,) = check(head + b"Hi\r\n", f, clock=REAL)
    assert (res.result, res.reason) == (R.FAIL, "l= is longer than the body")


def test_several_signatures_each_reported(rsa2048: rsa.RSAPrivateKey) -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    f = fake(key_record(rsa2048))
    f.add_txt("ed._domainkey.example.com", key_record(ed))
    signed = sign(MESSAGE, "example.com", "ed", ed) + sign(MESSAGE, "example.com", "sel",
                                                           rsa2048) + MESSAGE
    bogus = b"DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=s; h=to; bh=AA==; b=AA==\r\n"
    results = check(bogus + signed, f)
    assert [(r.result, r.algorithm) for r in results] == [
        (R.PERMERROR, "rsa-sha256"), (R.PASS, "ed25519-sha256"), (R.PASS, "rsa-sha256")]
    assert results[0].domain == "x.example"  # salvaged for the report
    assert "From field not signed" in results[0].reason


@pytest.mark.timeout(30)
def test_a_thousand_signatures_are_capped(rsa2048: rsa.RSAPrivateKey) -> None:
    field = sign(MESSAGE, "example.com", "sel", rsa2048)
    signed = field * 1000 + MESSAGE
    header, body = split_message(signed)
    start = time.perf_counter()
    v = DKIMVerifier(header, clock=CLOCK)
    v.update(body)
    results = asyncio.run(v.finish(fake(key_record(rsa2048))))
    elapsed = time.perf_counter() - start
    assert len(results) == DKIM_MAX_SIGNATURES
    assert v.skipped == 1000 - DKIM_MAX_SIGNATURES
    assert v.signature_count == 1000
    assert all(r.result is R.PASS for r in results)
    assert elapsed < 10  # bounded: 10 evaluated, 990 only counted


def test_malformed_signatures_are_values_not_exceptions() -> None:
    f = fake(None)
    for raw in (
        b"DKIM-Signature: ",
        b"DKIM-Signature: ;;;;",
        b"DKIM-Signature: \x00\xff=\x01",
        b"DKIM-Signature: v=1; a=rsa-sha256; h=" + b"from:" * 100_000 + b"x; d=a; s=b; bh=AA==; b=AA==",
        b"DKIM-Signature: v=1; " + b"x" * 20_000,
        b"DKIM-Signature: v=1; a=ed25519-sha256; d=a.example; s=\xff; h=from; bh=AA==; b=AA==",
    ):
        results = check(raw + b"\r\n" + MESSAGE, f)
        assert [r.result for r in results] == [R.PERMERROR], raw[:60]
        assert results[0].reason.startswith("signature syntax error")


def test_dkimpy_signature_with_subdomain_identity_passes(rsa2048: rsa.RSAPrivateKey) -> None:
    signed = dkim.sign(MESSAGE, b"sel", b"example.com", pem(rsa2048),
                       identity=b"joe@news.example.com",
                       canonicalize=(b"relaxed", b"simple")) + MESSAGE
    (res,) = check(signed, fake(key_record(rsa2048)), clock=REAL)
    assert (res.result, res.header_i) == (R.PASS, "joe@news.example.com")


@pytest.mark.timeout(120)
def test_fifty_megabyte_body_streams_in_bounded_memory(rsa2048: rsa.RSAPrivateKey) -> None:
    line = b"The quick brown fox \t jumps over the  lazy dog.   \r\n"
    body = line * (50 * 1024 * 1024 // len(line))
    message = MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + body
    field = sign(message, "example.com", "sel", rsa2048, canonicalization=("relaxed", "relaxed"))
    header, _ = split_message(field + message)
    f = fake(key_record(rsa2048))
    del message
    tracemalloc.start()
    try:
        v = DKIMVerifier(header, clock=CLOCK)
        chunk = 64 * 1024
        view = memoryview(body)
        for i in range(0, len(body), chunk):
            v.update(bytes(view[i : i + chunk]))
        results = asyncio.run(v.finish(f))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [r.result for r in results] == [R.PASS]
    assert peak < 4 * 1024 * 1024, peak  # the verifier keeps no body: a few chunks at most


@pytest.mark.parametrize("canon", [("simple", "simple"), ("relaxed", "relaxed")])
def test_streaming_any_chunking_gives_the_one_shot_result(
    rsa2048: rsa.RSAPrivateKey, canon: tuple[str, str]
) -> None:
    """The gateway feeds DATA as it comes: every split of the body must give the same result
    as verifying the whole message (checked for many split patterns, seeded)."""
    import random

    body = b"line one  \t\r\n\r\n trailing   \r\nx" + b" " * 300 + b"y\r\n\r\n\r\n"
    message = MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + body
    signed = sign(message, "example.com", "sel", rsa2048, canonicalization=canon) + message
    f = fake(key_record(rsa2048))
    header, rest = split_message(signed)
    rng = random.Random(5)
    for _ in range(60):
        v = DKIMVerifier(header, clock=CLOCK)
        i = 0
        while i < len(rest):
            n = rng.choice([1, 1, 2, 3, 7, 64])
            v.update(rest[i : i + n])
            i += n
        assert [r.result for r in asyncio.run(v.finish(f))] == [R.PASS]
    tampered = rest.replace(b"trailing", b"trailinG")
    v = DKIMVerifier(header, clock=CLOCK)
    for i in range(0, len(tampered), 5):
        v.update(tampered[i : i + 5])
    assert asyncio.run(v.finish(f))[0].reason == "body hash did not verify"


def test_prefetch_keys_while_the_body_streams(rsa2048: rsa.RSAPrivateKey) -> None:
    """The gateway pattern: keys are fetched while DATA arrives; finish() asks DNS no more."""
    signed = sign(MESSAGE, "example.com", "sel", rsa2048) + MESSAGE
    header, body = split_message(signed)
    f = fake(key_record(rsa2048))

    async def gateway() -> tuple[DKIMResult, ...]:
        v = DKIMVerifier(header, clock=CLOCK)
        task = asyncio.create_task(v.prefetch_keys(f))
        for i in range(0, len(body), 3):
            v.update(body[i : i + 3])
            await asyncio.sleep(0)
        await task
        asked = len(f.queries)
        results = await v.finish(f)
        assert len(f.queries) == asked == 1
        return results

    assert [r.result for r in asyncio.run(gateway())] == [R.PASS]
