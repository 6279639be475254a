"""DANE TLSA matching for SMTP (RFC 6698, RFC 7671, RFC 7672) over trustme-generated chains.

The TLSA records are built in the tests from the RFC 6698 §2.1 definitions (selector 0 = the
DER certificate, 1 = the DER SubjectPublicKeyInfo; matching type 0 = exact, 1 = SHA-256,
2 = SHA-512); one test derives the SPKI digest with the ``openssl`` command line instead, as
an independent oracle. Expected verdicts follow the RFC text quoted per test.
"""

from __future__ import annotations

import datetime
import hashlib
import subprocess

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_peer
from mailmoat.auth.dane import (
    DANEStatus,
    LookupStatus,
    certificate_names,
    classify,
    evaluate,
    lookup_tlsa,
    match_chain,
    name_matches,
    tlsa_name,
)
from mailmoat.resolver import TLSA, FakeResolver

HOST = "mx.example.test"


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _spki(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _record(usage: int, selector: int, mtype: int, der: bytes) -> TLSA:
    content = der if selector == 0 else _spki(der)
    data = {0: content, 1: hashlib.sha256(content).digest(),
            2: hashlib.sha512(content).digest()}[mtype]
    return TLSA(usage=usage, selector=selector, mtype=mtype, data=data)


@pytest.fixture(scope="module")
def root() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def intermediate(root: trustme.CA) -> trustme.CA:
    return root.create_child_ca()


@pytest.fixture(scope="module")
def chain(intermediate: trustme.CA) -> list[bytes]:
    """leaf (for mx.example.test) + intermediate, as a server sends it (no root)."""
    leaf = intermediate.issue_cert(HOST)
    return [_der(blob.bytes()) for blob in leaf.cert_chain_pems]


@pytest.fixture(scope="module")
def other_chain(intermediate: trustme.CA) -> list[bytes]:
    leaf = intermediate.issue_cert("other.example.test")
    return [_der(blob.bytes()) for blob in leaf.cert_chain_pems]


# --- DANE-EE(3) ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("selector", "mtype"), [(1, 1), (1, 2), (1, 0), (0, 0), (0, 1), (0, 2)])
def test_dane_ee_matches_leaf(chain: list[bytes], selector: int, mtype: int) -> None:
    result = match_chain([_record(3, selector, mtype, chain[0])], chain, hostname=HOST)
    assert result.status is DANEStatus.MATCHED
    assert result.depth == 0


def test_dane_ee_mismatch(chain: list[bytes], other_chain: list[bytes]) -> None:
    result = match_chain([_record(3, 1, 1, other_chain[0])], chain, hostname=HOST)
    assert result.status is DANEStatus.MISMATCH


def test_dane_ee_one_bit_off(chain: list[bytes]) -> None:
    good = _record(3, 1, 1, chain[0])
    bad = TLSA(usage=3, selector=1, mtype=1, data=bytes([good.data[0] ^ 1]) + good.data[1:])
    assert match_chain([bad], chain, hostname=HOST).status is DANEStatus.MISMATCH


def test_dane_ee_ignores_names_and_dates(intermediate: trustme.CA) -> None:
    """RFC 7672 §3.1.1: with DANE-EE(3) "the certificate usage has no additional
    requirements" - the name is not checked and an expired certificate still matches."""
    past = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
    leaf = intermediate.issue_cert("unrelated.invalid", not_before=past,
                                   not_after=past + datetime.timedelta(days=1))
    der = [_der(b.bytes()) for b in leaf.cert_chain_pems]
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    result = match_chain([_record(3, 1, 1, der[0])], der, hostname=HOST, now=now)
    assert result.status is DANEStatus.MATCHED


def test_dane_ee_does_not_match_an_intermediate(chain: list[bytes]) -> None:
    """DANE-EE is about the end entity: a record for the intermediate does not match."""
    result = match_chain([_record(3, 1, 1, chain[1])], chain, hostname=HOST)
    assert result.status is DANEStatus.MISMATCH


def test_spki_digest_from_openssl(chain: list[bytes], tmp_path: object) -> None:
    """A ``3 1 1`` record whose digest the openssl CLI computed (x509 -pubkey | pkey -pubin
    -outform DER | sha256) matches; the test does not trust our own hashing recipe."""
    openssl = require_peer("openssl")
    pem = x509.load_der_x509_certificate(chain[0]).public_bytes(serialization.Encoding.PEM)
    pub = subprocess.run([openssl, "x509", "-noout", "-pubkey"], input=pem, check=True,
                         capture_output=True).stdout
    der = subprocess.run([openssl, "pkey", "-pubin", "-outform", "DER"], input=pub, check=True,
                         capture_output=True).stdout
    digest = subprocess.run([openssl, "dgst", "-sha256", "-binary"], input=der, check=True,
                            capture_output=True).stdout
    record = TLSA(usage=3, selector=1, mtype=1, data=digest)
    assert match_chain([record], chain, hostname=HOST).status is DANEStatus.MATCHED


# --- DANE-TA(2) ----------------------------------------------------------------------------------
def test_dane_ta_intermediate_in_chain(chain: list[bytes]) -> None:
    result = match_chain([_record(2, 1, 1, chain[1])], chain, hostname=HOST)
    assert result.status is DANEStatus.MATCHED
    assert result.depth == 1
    assert result.name == HOST


def test_dane_ta_root_included_in_chain(chain: list[bytes], root: trustme.CA) -> None:
    root_der = _der(root.cert_pem.bytes())
    full = [*chain, root_der]
    result = match_chain([_record(2, 0, 1, root_der)], full, hostname=HOST)
    assert result.status is DANEStatus.MATCHED
    assert result.depth == 2


def test_dane_ta_root_not_sent_needs_full_record(chain: list[bytes], root: trustme.CA) -> None:
    """RFC 7672 §3.1.2: the server must send the TA certificate unless the record carries it
    in full ("2 0 0"): a digest of a TA that is not in the chain cannot be used."""
    root_der = _der(root.cert_pem.bytes())
    assert match_chain([_record(2, 0, 1, root_der)], chain,
                       hostname=HOST).status is DANEStatus.MISMATCH
    full = match_chain([_record(2, 0, 0, root_der)], chain, hostname=HOST)
    assert full.status is DANEStatus.MATCHED
    assert full.depth is None


def test_dane_ta_name_must_match(chain: list[bytes]) -> None:
    """RFC 7672 §3.2.2: with DANE-TA the reference identifiers are the MX host name and the
    TLSA base domain; a certificate for another name fails."""
    result = match_chain([_record(2, 1, 1, chain[1])], chain, hostname="mx.elsewhere.test")
    assert result.status is DANEStatus.MISMATCH
    assert "RFC 7672 §3.2.2" in result.reason


def test_dane_ta_base_domain_is_a_reference(chain: list[bytes]) -> None:
    result = match_chain([_record(2, 1, 1, chain[1])], chain, hostname="alias.elsewhere.test",
                         base_domain=HOST)
    assert result.status is DANEStatus.MATCHED
    assert result.name == HOST


def test_dane_ta_wildcard_one_label(intermediate: trustme.CA) -> None:
    leaf = intermediate.issue_cert("*.example.test")
    der = [_der(b.bytes()) for b in leaf.cert_chain_pems]
    record = _record(2, 1, 1, der[1])
    assert match_chain([record], der, hostname="mx.example.test").status is DANEStatus.MATCHED
    assert match_chain([record], der, hostname="a.mx.example.test").status is (
        DANEStatus.MISMATCH)
    assert match_chain([record], der, hostname="example.test").status is DANEStatus.MISMATCH


def test_dane_ta_broken_chain(chain: list[bytes], other_chain: list[bytes],
                              root: trustme.CA) -> None:
    """The TA matches, but the leaf was not issued by it: mismatch."""
    unrelated = trustme.CA()
    leaf = unrelated.issue_cert(HOST)
    spliced = [_der(leaf.cert_chain_pems[0].bytes()), chain[1]]
    result = match_chain([_record(2, 1, 1, chain[1])], spliced, hostname=HOST)
    assert result.status is DANEStatus.MISMATCH
    assert "does not chain" in result.reason


def test_dane_ta_expired_leaf(intermediate: trustme.CA) -> None:
    past = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
    leaf = intermediate.issue_cert(HOST, not_before=past,
                                   not_after=past + datetime.timedelta(days=1))
    der = [_der(b.bytes()) for b in leaf.cert_chain_pems]
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    record = _record(2, 1, 1, der[1])
    assert match_chain([record], der, hostname=HOST, now=now).status is DANEStatus.MISMATCH


# --- unusable records, agility ---------------------------------------------------------------
@pytest.mark.parametrize("usage", [0, 1])
def test_pkix_usages_are_unusable(chain: list[bytes], usage: int) -> None:
    """RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) are treated as unusable for SMTP."""
    result = match_chain([_record(usage, 1, 1, chain[0])], chain, hostname=HOST)
    assert result.status is DANEStatus.NO_USABLE
    assert len(result.unusable) == 1


@pytest.mark.parametrize(("usage", "selector", "mtype", "size"),
                         [(4, 1, 1, 32), (3, 2, 1, 32), (3, 1, 3, 32), (3, 1, 1, 31),
                          (3, 1, 2, 32), (3, 1, 0, 0)])
def test_malformed_records_unusable(usage: int, selector: int, mtype: int, size: int) -> None:
    record = TLSA(usage=usage, selector=selector, mtype=mtype, data=b"\x01" * size)
    usable, unusable = classify([record])
    assert usable == ()
    assert unusable[0][0] == record


def test_unusable_does_not_hide_usable(chain: list[bytes]) -> None:
    records = [_record(1, 1, 1, chain[0]), _record(3, 1, 1, chain[0])]
    assert match_chain(records, chain, hostname=HOST).status is DANEStatus.MATCHED


def test_digest_agility_prefers_sha512(chain: list[bytes], other_chain: list[bytes]) -> None:
    """RFC 7671 §9: with a SHA2-512 record for the same usage and selector, SHA2-256 ones are
    ignored - so a matching 3 1 1 cannot rescue a non-matching 3 1 2."""
    records = [_record(3, 1, 1, chain[0]), _record(3, 1, 2, other_chain[0])]
    assert match_chain(records, chain, hostname=HOST).status is DANEStatus.MISMATCH
    records = [_record(3, 1, 1, other_chain[0]), _record(3, 1, 2, chain[0])]
    assert match_chain(records, chain, hostname=HOST).status is DANEStatus.MATCHED


def test_garbage_chain_is_mismatch(chain: list[bytes]) -> None:
    record = _record(3, 1, 1, chain[0])
    assert match_chain([record], [b"\x30\x03garbage"], hostname=HOST).status is (
        DANEStatus.MISMATCH)
    assert match_chain([record], [], hostname=HOST).status is DANEStatus.MISMATCH


# --- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("presented", "reference", "expected"), [
    ("mx.example.test", "MX.Example.Test.", True),
    ("*.example.test", "mx.example.test", True),
    ("*.example.test", "example.test", False),
    ("*.example.test", "a.b.example.test", False),
    ("*.test", "example.test", False),  # never a wildcard directly under a one-label name
    ("m*.example.test", "mx.example.test", False),  # RFC 7672 §3.2.3: whole label only
    ("192.0.2.1", "[192.0.2.1]", True),
    ("mx.example.test", "192.0.2.1", False),
])
def test_name_matches(presented: str, reference: str, expected: bool) -> None:
    assert name_matches(presented, reference) is expected


def test_certificate_names_prefer_san(root: trustme.CA) -> None:
    leaf = root.issue_cert(HOST, common_name="cn.example.test")
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    assert certificate_names(cert) == (HOST,)  # SAN has DNS names: CN not considered


# --- lookup: only authenticated answers count -------------------------------------------------
def test_tlsa_name() -> None:
    assert tlsa_name("MX.Example.COM.", 25) == "_25._tcp.mx.example.com"


async def test_authenticated_answer_is_used(chain: list[bytes]) -> None:
    fake = FakeResolver()
    record = _record(3, 1, 1, chain[0])
    fake.add_tlsa("_25._tcp.mx.example.test", record.usage, record.selector, record.mtype,
                  record.data)
    fake.set_authenticated("_25._tcp.mx.example.test")
    lookup = await lookup_tlsa(fake, HOST, 25)
    assert lookup.status is LookupStatus.SECURE
    assert evaluate(lookup, chain, hostname=HOST).status is DANEStatus.MATCHED


async def test_unauthenticated_answer_is_not_trusted(chain: list[bytes]) -> None:
    """RFC 7672 §2.1: without DNSSEC validation the records prove nothing - even a record
    that would match is reported as insecure, never "matched"."""
    fake = FakeResolver()
    record = _record(3, 1, 1, chain[0])
    fake.add_tlsa("_25._tcp.mx.example.test", record.usage, record.selector, record.mtype,
                  record.data)
    lookup = await lookup_tlsa(fake, HOST, 25)
    assert lookup.status is LookupStatus.INSECURE
    result = evaluate(lookup, chain, hostname=HOST)
    assert result.status is DANEStatus.INSECURE
    assert not result.authenticated


async def test_no_records_and_failures() -> None:
    fake = FakeResolver()
    fake.add_a("mx.example.test", "192.0.2.1")
    fake.set_servfail("_25._tcp.broken.example.test")
    none = await lookup_tlsa(fake, HOST, 25)
    assert evaluate(none, [], hostname=HOST).status is DANEStatus.NO_TLSA
    failed = await lookup_tlsa(fake, "broken.example.test", 25)
    assert failed.status is LookupStatus.INDETERMINATE
    assert evaluate(failed, [], hostname=HOST).status is DANEStatus.INDETERMINATE


async def test_secure_records_without_tls(chain: list[bytes]) -> None:
    fake = FakeResolver()
    record = _record(3, 1, 1, chain[0])
    fake.add_tlsa("_25._tcp.mx.example.test", 3, 1, 1, record.data)
    fake.set_authenticated("_25._tcp.mx.example.test")
    lookup = await lookup_tlsa(fake, HOST, 25)
    assert evaluate(lookup, None, hostname=HOST).status is DANEStatus.MISMATCH


# --- robustness (Hypothesis) ------------------------------------------------------------------
_LABEL = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)  # never an IP


@settings(max_examples=300, deadline=None)
@given(first=_LABEL, rest=st.lists(_LABEL, min_size=1, max_size=4))
def test_wildcard_is_one_label(first: str, rest: list[str]) -> None:
    """RFC 7672 §3.2.3: ``*.D`` matches ``X.D`` for one label X (when D has two labels or
    more), never ``D`` itself nor ``Y.X.D``."""
    domain = ".".join(rest)
    wildcard = "*." + domain
    assert name_matches(wildcard, f"{first}.{domain}") is (len(rest) >= 2)
    assert name_matches(wildcard, domain) is False
    assert name_matches(wildcard, f"{first}.{first}.{domain}") is False


@settings(max_examples=300, deadline=None)
@given(chain=st.lists(st.binary(max_size=64), max_size=4),
       records=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255),
                                  st.integers(0, 255), st.binary(max_size=70)), max_size=4),
       hostname=st.text(max_size=30))
def test_garbage_never_raises(chain: list[bytes], records: list[tuple[int, int, int, bytes]],
                              hostname: str) -> None:
    """Untrusted chains and records: a verdict value, never an exception, never "matched"
    (random octets are not a certificate)."""
    tlsa = [TLSA(usage=u, selector=s, mtype=m, data=d) for u, s, m, d in records]
    result = match_chain(tlsa, chain, hostname=hostname)
    assert result.status is not DANEStatus.MATCHED
