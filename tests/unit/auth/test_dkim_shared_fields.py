"""One split of the header section for the message model, DKIM and ARC: the fields taken from
parse_headers are exactly split_fields' (when fields_from_headers vouches for them), the
verifiers give the same results with them, the limits hold on that path too, and the inbound
pipeline never splits the bytes again for an ordinary message."""

from __future__ import annotations

import asyncio
from pathlib import Path
from unittest.mock import patch

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import CONFORMANCE
from mailmoat.auth.arc import ARCValidator, seal
from mailmoat.auth.arc import validate as arc_validate
from mailmoat.auth.dkim import DKIMVerifier, key_record, sign, split_message, txt_strings
from mailmoat.auth.dkim import verify as dkim_verify
from mailmoat.auth.dkim._fields import RawField, fields_from_headers, split_fields
from mailmoat.clock import FixedClock
from mailmoat.errors import LimitExceeded
from mailmoat.gateway.inbound import InboundPipeline, InboundPolicy, verdict_for
from mailmoat.limits import MESSAGE_HEADER_MAX, MESSAGE_MAX_HEADER_FIELDS
from mailmoat.message import normalise_crlf, parse_headers
from mailmoat.resolver import FakeResolver

NOW = 1_790_000_000
TESTS = Path(__file__).resolve().parents[2]
ED = ed25519.Ed25519PrivateKey.generate()
RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _header(data: bytes) -> bytes:
    header, _ = split_message(data)
    return header


_LINES = st.lists(st.sampled_from([
    b"From: a@example.com\r\n", b"Subject: x\r\n", b" folded\r\n", b"\tfolded\r\n",
    b"Bad Name: v\r\n", b"Subject : v\r\n", b"no colon\r\n", b"X-A:\r\n", b"x:y\n",
    b"DKIM-Signature: v=1; a=rsa-sha256\r\n", b"ARC-Seal: i=1\r\n", b"From x\r\n",
    b"A: \x00\r\n", b"A: b\rc\r\n", b"B: " + b"z" * 1000 + b"\r\n",
]), max_size=15).map(b"".join)


@settings(max_examples=800, deadline=None)
@given(lines=_LINES, end=st.sampled_from([b"\r\n", b"\r\nbody\r\n", b""]))
def test_fields_from_headers_equal_split_fields(lines: bytes, end: bytes) -> None:
    header = _header(lines + end)
    fields = fields_from_headers(parse_headers(header), header)
    if fields is not None:
        assert fields == split_fields(header)
        assert all(type(f) is RawField for f in fields)


def test_fields_from_headers_declines_what_it_cannot_prove() -> None:
    for header in (b"Subject : x\r\n\r\n", b"no colon\r\nA: b\r\n\r\n", b" x: y\r\n\r\n",
                   b"A: b\nC: d\n\n", b"A: b\r\n"):
        assert fields_from_headers(parse_headers(header), header) is None, header
    header = b"A: b\r\n folded\r\nC: d\r\n\r\n"
    assert fields_from_headers(parse_headers(header), header) == split_fields(header)


def _corpus() -> list[Path]:
    out = []
    for root in (TESTS / "vectors", CONFORMANCE):
        if root.is_dir():
            out += [p for p in sorted(root.rglob("*"))
                    if p.is_file() and p.suffix in {".eml", ".message", ".msg", ".txt"}
                    and p.stat().st_size <= 1 << 20]
    return out


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.name)
def test_corpus(path: Path) -> None:
    header = _header(normalise_crlf(path.read_bytes()))
    try:
        headers = parse_headers(header)
    except LimitExceeded:
        return
    fields = fields_from_headers(headers, header)
    if fields is not None:
        assert fields == split_fields(header)


def _resolver() -> FakeResolver:
    r = FakeResolver()
    for name, key in (("ed._domainkey.example.com", ED), ("rsa._domainkey.example.com", RSA)):
        r.add_txt(name, *txt_strings(key_record(key)))
    r.add_txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")
    r.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    return r


BASE = (b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hi\r\n"
        b"  there\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\n\r\nHello.\r\n")


def _signed() -> bytes:
    message = sign(BASE, "example.com", "rsa", RSA, timestamp=NOW) + BASE
    message = sign(message, "example.com", "ed", ED, timestamp=NOW) + message
    return b"Received: from x by y; Sat, 28 Nov 2026 12:00:01 +0000\r\n" + message


async def _dkim_with_fields(message: bytes) -> tuple[object, ...]:
    header, body = split_message(message)
    fields = fields_from_headers(parse_headers(header), header)
    assert fields is not None
    verifier = DKIMVerifier(header, clock=FixedClock(wall=NOW), fields=fields)
    verifier.update(body)
    return await verifier.finish(_resolver())


def test_dkim_results_same_with_shared_fields() -> None:
    message = _signed()
    ours = asyncio.run(_dkim_with_fields(message))
    plain = asyncio.run(dkim_verify(message, _resolver(), clock=FixedClock(wall=NOW)))
    assert ours == plain
    assert [r.result.value for r in plain] == ["pass", "pass"]
    tampered = message.replace(b"Subject: hi", b"Subject: ho")
    assert asyncio.run(_dkim_with_fields(tampered)) == asyncio.run(
        dkim_verify(tampered, _resolver(), clock=FixedClock(wall=NOW)))


def test_arc_results_same_with_shared_fields() -> None:
    message = BASE
    for selector, key in (("rsa", RSA), ("ed", ED)):  # a chain of two ARC Sets
        chain = asyncio.run(arc_validate(message, _resolver(), clock=FixedClock(wall=NOW)))
        arc_set = seal(message, chain, authserv_id="mx.example.com", results=("none",),
                       domain="example.com", selector=selector, private_key=key,
                       timestamp=NOW)
        assert arc_set is not None
        message = arc_set.fields + message
    header, body = split_message(message)
    fields = fields_from_headers(parse_headers(header), header)
    assert fields is not None

    async def run() -> object:
        validator = ARCValidator(header, clock=FixedClock(wall=NOW), fields=fields)
        validator.update(body)
        return await validator.finish(_resolver())

    ours = asyncio.run(run())
    plain = asyncio.run(arc_validate(message, _resolver(), clock=FixedClock(wall=NOW)))
    assert ours == plain
    assert plain.result.value == "pass"


def test_limits_hold_with_given_fields() -> None:
    field = RawField(b"X-A", b"x-a", b"X-A: 1\r\n")
    too_many = [field] * (MESSAGE_MAX_HEADER_FIELDS + 1)
    header = b"".join(f.raw for f in too_many) + b"\r\n"
    with pytest.raises(LimitExceeded):
        DKIMVerifier(header, clock=FixedClock(), fields=too_many)
    big = b"X-A: " + b"a" * MESSAGE_HEADER_MAX + b"\r\n\r\n"
    with pytest.raises(LimitExceeded):
        DKIMVerifier(big, clock=FixedClock(), fields=[field])
    arc_header = b"ARC-Seal: i=1\r\n" + header
    arc_field = RawField(b"ARC-Seal", b"arc-seal", b"ARC-Seal: i=1\r\n")
    with pytest.raises(LimitExceeded):
        ARCValidator(arc_header, clock=FixedClock(), fields=[arc_field, *too_many])
    with pytest.raises(LimitExceeded):
        ARCValidator(b"ARC-Seal: i=1\r\n" + big, clock=FixedClock(), fields=[arc_field])


def test_pipeline_splits_the_header_once() -> None:
    """An ordinary message: DKIM and ARC take parse_headers' fields, split_fields never runs
    (and the verdict is the one of the whole-message APIs: both signatures pass)."""
    r = _resolver()
    pipeline = InboundPipeline(InboundPolicy(authserv_id="mx.example.org"), resolver=r,
                               clock=FixedClock(wall=NOW))
    with patch("mailmoat.auth.dkim._fields.split_fields", side_effect=AssertionError):
        verdict = asyncio.run(verdict_for(pipeline, _signed(), ip="192.0.2.1", helo="x",
                                          mail_from="alice@example.com"))
    assert [d.result.value for d in verdict.authentication.dkim] == ["pass", "pass"]
    assert verdict.authentication.dmarc.result.value == "pass"
