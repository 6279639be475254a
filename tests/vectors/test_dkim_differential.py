"""Differential DKIM tests against dkimpy (an independent implementation; test-only).

Both directions - we sign, dkimpy verifies; dkimpy signs, we verify - for every
canonicalisation pair and both algorithms, over generated messages: folded headers, trailing
whitespace, tabs, empty bodies, blank lines at the end, 8-bit octets, long lines. dkimpy gets
the key record through its ``dnsfunc`` parameter; we get it from the fake resolver.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmoat.auth.dkim import DKIMResultCode, key_record, sign, verify
from mailmoat.clock import FixedClock
from mailmoat.resolver.fake import FakeResolver

dkim = pytest.importorskip("dkim")
pytest.importorskip("nacl")  # dkimpy's ed25519 backend

NOW = 1_700_000_000
CLOCK = FixedClock(wall=NOW)
DOMAIN, SELECTOR = "example.org", "sel"
KEY_NAME = f"{SELECTOR}._domainkey.{DOMAIN}"
PAIRS = [("simple", "simple"), ("simple", "relaxed"), ("relaxed", "simple"), ("relaxed", "relaxed")]


@functools.cache
def keys(algorithm: str) -> tuple[object, bytes, str]:
    """(our private key, dkimpy's private key bytes, key record)."""
    if algorithm == "rsa-sha256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return key, pem, key_record(key)
    ed = ed25519.Ed25519PrivateKey.generate()
    seed = ed.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return ed, base64.b64encode(seed), key_record(ed)


def dnsfunc_for(record: str):  # type: ignore[no-untyped-def]
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name.decode().rstrip(".") == KEY_NAME
        return record.encode()

    return dnsfunc


def our_verify(message: bytes, record: str, clock: FixedClock = CLOCK) -> list[DKIMResultCode]:
    fake = FakeResolver()
    fake.add_txt(KEY_NAME, record)
    return [r.result for r in asyncio.run(verify(message, fake, clock=clock))]


# --- generated messages ----------------------------------------------------------------------
_word = st.sampled_from(
    [b"hello", b"World", b"caf\xc3\xa9", b"\xff\xfe", b"a", b"=?utf-8?q?x?=", b"x" * 70, b"1:2"]
)
_space = st.sampled_from([b" ", b"  ", b"\t", b" \t ", b"\r\n ", b"\r\n\t", b"\r\n  \t"])


@st.composite
def header_value(draw: st.DrawFn) -> bytes:
    words = draw(st.lists(_word, min_size=1, max_size=6))
    out = words[0]
    for w in words[1:]:
        out += draw(_space) + w
    trailing = draw(st.sampled_from([b"", b" ", b"\t", b"  \t"]))
    return draw(st.sampled_from([b" ", b"", b"  ", b"\t"])) + out + trailing


_line = st.one_of(
    st.just(b""),
    st.sampled_from([b" ", b"\t", b"  \t  "]),
    st.lists(st.sampled_from([b"abc", b" ", b"\t", b"\xe9\xe8", b"--boundary", b"x" * 200,
                              b"y" * 997]), max_size=5).map(b"".join),
)


@st.composite
def message(draw: st.DrawFn) -> bytes:
    fields = [
        b"From:" + draw(header_value()) + b" <a@example.org>",
        b"To:" + draw(header_value()),
        b"Subject:" + draw(header_value()),
        b"Date: Mon, 01 Jan 2024 00:00:00 +0000",
    ]
    extra = draw(st.lists(st.sampled_from([b"X-Extra", b"Received", b"Cc", b"Subject"]),
                          max_size=3))
    for name in extra:
        fields.insert(draw(st.integers(0, len(fields))), name + b":" + draw(header_value()))
    if draw(st.booleans()):
        fields = [f.replace(b"From:", b"FROM:", 1) if f.startswith(b"From:") else f
                  for f in fields]
    lines = draw(st.lists(_line, max_size=12))
    blank_end = draw(st.integers(0, 3))
    body = b"".join(line + b"\r\n" for line in lines) + b"\r\n" * blank_end
    return b"\r\n".join(fields) + b"\r\n\r\n" + body


SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
@pytest.mark.parametrize("canon", PAIRS, ids=["/".join(p) for p in PAIRS])
@SETTINGS
@given(m=message())
def test_we_sign_dkimpy_verifies(algorithm: str, canon: tuple[str, str], m: bytes) -> None:
    ours, _, record = keys(algorithm)
    field = sign(m, DOMAIN, SELECTOR, ours, canonicalization=canon, timestamp=NOW)  # type: ignore[arg-type]
    signed = field + m
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(record)), signed
    assert our_verify(signed, record) == [DKIMResultCode.PASS]


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
@pytest.mark.parametrize("canon", PAIRS, ids=["/".join(p) for p in PAIRS])
@SETTINGS
@given(m=message(), tamper=st.booleans())
def test_dkimpy_signs_we_verify(
    algorithm: str, canon: tuple[str, str], m: bytes, tamper: bool
) -> None:
    _, theirs, record = keys(algorithm)
    field = dkim.sign(
        m, SELECTOR.encode(), DOMAIN.encode(), theirs,
        canonicalize=(canon[0].encode(), canon[1].encode()),
        signature_algorithm=algorithm.encode(),
    )
    signed = field + m
    if tamper:
        # a visible change to the body that survives both canonicalisations
        signed = signed + b"tampered\r\n"
    expected = DKIMResultCode.FAIL if tamper else DKIMResultCode.PASS
    assert bool(dkim.verify(signed, dnsfunc=dnsfunc_for(record))) is (not tamper)
    # dkimpy stamps t= with the real time
    assert our_verify(signed, record, FixedClock(wall=time.time())) == [expected]
