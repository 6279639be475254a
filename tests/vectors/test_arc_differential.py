"""Differential ARC tests against dkimpy (an independent implementation; test-only).

* Every validation message of the ARC suite: our chain status equals ``dkim.arc_verify``'s
  (dkimpy answers None for a chain "terminated" by a cv=fail seal: that is fail, RFC 8617
  §5.2 step 2, see test_arc_suite.py).
* Both directions over chains of 1-3 hops: we seal, dkimpy validates; dkimpy seals
  (``dkim.arc_sign``), we validate. dkimpy implements ARC with rsa-sha256 only.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import conformance
from mailmoat.auth.arc import ARCStatus, seal, validate
from mailmoat.auth.dkim import key_record, normalize_line_endings, txt_strings
from mailmoat.clock import FixedClock
from mailmoat.resolver.fake import FakeResolver

dkim = pytest.importorskip("dkim")
pytest.importorskip("authres")  # dkimpy's arc_sign reads Authentication-Results with it

NOW = 1_700_000_000
CLOCK = FixedClock(wall=NOW)
DOMAIN, SELECTOR = "lists.example", "arc"
KEY_NAME = f"{SELECTOR}._domainkey.{DOMAIN}"
BASE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: list@lists.example\r\n"
    b"Subject: differential  test\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"Message-ID: <diff@example.org>\r\n"
    b"\r\n"
    b"Body  with  spaces \r\n\r\n\r\n"
)


def _suite_cases() -> list[Any]:
    path = conformance("arc-test-suite", "tests", "arc-draft-validation-tests.yml")
    cases = []
    with path.open("rb") as f:
        for scenario in yaml.safe_load_all(f):
            if not scenario:
                continue
            records = {k: "".join(v.split("\n")).strip()
                       for k, v in (scenario.get("txt-records") or {}).items()}
            for test_id, test in scenario["tests"].items():
                cases.append(pytest.param(test["message"] or "", records, id=test_id))
    return cases


@pytest.mark.parametrize(("text", "records"), _suite_cases())
def test_suite_agrees_with_dkimpy(text: str, records: dict[str, str]) -> None:
    message = normalize_line_endings(text.encode("utf-8"))
    fake = FakeResolver()
    for name, value in records.items():
        fake.add_txt(name, value)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode("ascii").rstrip("."))
        return value.encode("ascii") if value else None

    ours = asyncio.run(validate(message, fake, clock=CLOCK)).result.value
    cv, _, _ = dkim.arc_verify(message, dnsfunc=dnsfunc)
    theirs = cv.decode("ascii") if cv else "fail"
    assert ours == theirs


@functools.cache
def _key() -> tuple[rsa.RSAPrivateKey, bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    return key, pem, key_record(key)


def _resolver() -> FakeResolver:
    fake = FakeResolver()
    fake.add_txt(KEY_NAME, *txt_strings(_key()[2]))
    return fake


def _dnsfunc(name: bytes, timeout: int = 5) -> bytes:
    assert name.decode("ascii").rstrip(".") == KEY_NAME
    return _key()[2].encode("ascii")


def _ours(message: bytes) -> bytes:
    chain = asyncio.run(validate(message, _resolver(), clock=CLOCK))
    new = seal(message, chain, authserv_id=DOMAIN, results=["spf=pass smtp.mailfrom=x.example"],
               domain=DOMAIN, selector=SELECTOR, private_key=_key()[0], timestamp=NOW,
               headers=["From", "To", "Subject", "Date", "Message-ID"])
    assert new is not None
    return new.fields + message


def _theirs(message: bytes) -> bytes:
    chain = asyncio.run(validate(message, _resolver(), clock=CLOCK))
    # dkimpy takes the chain status from our Authentication-Results arc= result
    ar = (f"Authentication-Results: {DOMAIN}; arc={chain.result.value}; "
          "spf=pass smtp.mailfrom=x.example\r\n").encode("ascii")
    fields = dkim.arc_sign(ar + message, SELECTOR.encode(), DOMAIN.encode(), _key()[1],
                           DOMAIN.encode(), include_headers=[b"from", b"to", b"subject"],
                           timestamp=str(NOW))
    return b"".join(fields) + message


@pytest.mark.parametrize("hops", ["o", "t", "oo", "ot", "to", "tt", "oto", "tot"])
def test_chains_built_by_both_validate_in_both(hops: str) -> None:
    message = BASE
    for hop in hops:
        message = _ours(message) if hop == "o" else _theirs(message)
    ours = asyncio.run(validate(message, _resolver(), clock=CLOCK))
    assert ours.result is ARCStatus.PASS, ours.reason
    assert ours.instance_count == len(hops)
    cv, _, reason = dkim.arc_verify(message, dnsfunc=_dnsfunc)
    assert cv == b"pass", reason
