"""The pure outbound TLS policy (auth.tlspolicy): MX order, per-host plans, session checks.

Expected values are the RFC rules themselves (RFC 5321 §5.1, RFC 7505 §3, RFC 7672 §2.2,
RFC 8461 §2/§5, RFC 8689 §4.1, RFC 8460 §4.3) and, for certificate errors, the messages
OpenSSL itself prints (X509_verify_cert_error_string).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.auth.dane import DANEResult, DANEStatus, LookupStatus, TLSALookup
from mailmoat.auth.mtasts import Mode, Policy
from mailmoat.auth.tlspolicy import (
    PolicyKind,
    ResultType,
    Verification,
    check_session,
    classify_certificate_error,
    is_null_mx,
    order_mx,
    plan_host,
)
from mailmoat.resolver import MX, TLSA

EE = TLSA(usage=3, selector=1, mtype=1, data=b"\x01" * 32)
PKIX_EE = TLSA(usage=1, selector=1, mtype=1, data=b"\x01" * 32)
ENFORCE = Policy(mode=Mode.ENFORCE, max_age=3600, mx=("*.example.net",))
TESTING = Policy(mode=Mode.TESTING, max_age=3600, mx=("*.example.net",))


def _secure(*records: TLSA) -> TLSALookup:
    return TLSALookup(name="_25._tcp.mx.example.net", status=LookupStatus.SECURE,
                      records=records)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from("abcdefg")), min_size=1,
                max_size=12), st.integers(0, 2**32))
def test_order_mx_sorted_by_preference(pairs: list[tuple[int, str]], seed: int) -> None:
    records = [MX(preference=p, exchange=f"{h}.example.net") for p, h in pairs]
    hosts = order_mx(records, random.Random(seed))
    best = {}
    for p, h in pairs:
        best[f"{h}.example.net"] = min(p, best.get(f"{h}.example.net", p))
    assert sorted(hosts) == sorted(best)  # each host once
    prefs = [best[h] for h in hosts]
    assert prefs == sorted(prefs)  # RFC 5321 §5.1: lowest preference first


def test_null_mx() -> None:
    assert is_null_mx([MX(preference=0, exchange="")])
    assert not is_null_mx([MX(preference=0, exchange=""), MX(preference=10, exchange="a.b")])
    assert order_mx([MX(preference=0, exchange=""), MX(preference=10, exchange="a.b")],
                    random.Random(1)) == ("a.b",)


def test_plan_default_is_opportunistic() -> None:
    plan = plan_host("mx.example.net", mx_secure=False, dane=None, sts=None)
    assert plan.policy is PolicyKind.OPPORTUNISTIC
    assert not plan.tls_required
    assert plan.plaintext_fallback


def test_plan_dane_secure_usable() -> None:
    plan = plan_host("mx.example.net", mx_secure=True, dane=_secure(EE), sts=ENFORCE)
    assert plan.policy is PolicyKind.DANE  # RFC 8461 §2: DANE first
    assert plan.tls_required
    assert plan.verification is Verification.DANE
    assert plan.tlsa == (EE,)
    assert not plan.plaintext_fallback


def test_plan_dane_applies_with_an_insecure_mx_rrset() -> None:
    """RFC 7672 §2.2.1: the client MAY use DANE even for MX hosts from an insecure MX RRset;
    for REQUIRETLS the MX itself must still be authenticated (RFC 8689 §4.1)."""
    plan = plan_host("mx.example.net", mx_secure=False, dane=_secure(EE), sts=None)
    assert plan.policy is PolicyKind.DANE
    assert plan.verification is Verification.DANE
    req = plan_host("mx.example.net", mx_secure=False, dane=_secure(EE), sts=None,
                    requiretls=True)
    assert req.policy is PolicyKind.DANE
    assert req.requiretls


def test_plan_dane_unusable_records_tls_mandatory_unauthenticated() -> None:
    plan = plan_host("mx.example.net", mx_secure=True, dane=_secure(PKIX_EE), sts=None)
    assert plan.policy is PolicyKind.DANE
    assert plan.tls_required
    assert plan.verification is Verification.NONE
    assert plan.report is ResultType.TLSA_INVALID


def test_plan_dane_indeterminate_skips() -> None:
    lookup = TLSALookup(name="x", status=LookupStatus.INDETERMINATE, error="SERVFAIL")
    plan = plan_host("mx.example.net", mx_secure=True, dane=lookup, sts=None)
    assert plan.skip
    assert plan.temporary
    assert plan.failure is ResultType.DNSSEC_INVALID


@pytest.mark.parametrize("status", [LookupStatus.INSECURE, LookupStatus.NONE])
def test_plan_insecure_or_absent_tlsa_falls_to_sts(status: LookupStatus) -> None:
    lookup = TLSALookup(name="x", status=status, records=(EE,) if status is LookupStatus.INSECURE else ())
    plan = plan_host("mx.example.net", mx_secure=True, dane=lookup, sts=ENFORCE)
    assert plan.policy is PolicyKind.MTA_STS_ENFORCE
    assert plan.verification is Verification.WEBPKI


def test_plan_sts_enforce_mx_mismatch_skips() -> None:
    plan = plan_host("mx.other.org", mx_secure=False, dane=None, sts=ENFORCE)
    assert plan.skip
    assert plan.failure is ResultType.VALIDATION_FAILURE


def test_plan_sts_testing_reports_only() -> None:
    plan = plan_host("mx.other.org", mx_secure=False, dane=None, sts=TESTING)
    assert not plan.skip
    assert plan.policy is PolicyKind.MTA_STS_TESTING
    assert plan.report is ResultType.VALIDATION_FAILURE
    match = plan_host("mx.example.net", mx_secure=False, dane=None, sts=TESTING)
    assert match.judge_webpki
    assert not match.tls_required


def test_plan_sts_mode_none_is_no_policy() -> None:
    policy = Policy(mode=Mode.NONE, max_age=3600, mx=())
    plan = plan_host("mx.example.net", mx_secure=False, dane=None, sts=policy)
    assert plan.policy is PolicyKind.OPPORTUNISTIC


def test_plan_requiretls() -> None:
    secure = plan_host("mx.example.net", mx_secure=True, dane=None, sts=None, requiretls=True)
    assert secure.policy is PolicyKind.REQUIRETLS
    assert secure.verification is Verification.WEBPKI
    assert secure.requiretls
    assert not secure.plaintext_fallback
    insecure = plan_host("mx.example.net", mx_secure=False, dane=None, sts=None,
                         requiretls=True)
    assert insecure.skip
    assert not insecure.temporary
    via_sts = plan_host("mx.example.net", mx_secure=False, dane=None, sts=TESTING,
                        requiretls=True)
    assert not via_sts.skip
    assert via_sts.verification is Verification.WEBPKI
    with_dane = plan_host("mx.example.net", mx_secure=True, dane=_secure(EE), sts=None,
                          requiretls=True)
    assert with_dane.verification is Verification.DANE
    assert with_dane.requiretls


def test_check_session_rules() -> None:
    dane_plan = plan_host("mx.example.net", mx_secure=True, dane=_secure(EE), sts=None)
    matched = DANEResult(status=DANEStatus.MATCHED, reason="ok")
    mismatch = DANEResult(status=DANEStatus.MISMATCH, reason="no match")
    assert check_session(dane_plan, tls=True, verified=False, verify_problem="x",
                         dane=matched, capabilities={}).deliver
    refused = check_session(dane_plan, tls=True, verified=False, verify_problem=None,
                            dane=mismatch, capabilities={})
    assert not refused.deliver
    no_tls = check_session(dane_plan, tls=False, verified=False, verify_problem=None,
                           dane=None, capabilities={})
    assert no_tls.failure is ResultType.STARTTLS_NOT_SUPPORTED
    req = plan_host("mx.example.net", mx_secure=True, dane=None, sts=None, requiretls=True)
    missing = check_session(req, tls=True, verified=True, verify_problem=None, dane=None,
                            capabilities={"PIPELINING": ""})
    assert missing.failure is ResultType.REQUIRETLS_NOT_SUPPORTED
    assert not missing.temporary
    assert check_session(req, tls=True, verified=True, verify_problem=None, dane=None,
                         capabilities={"REQUIRETLS": ""}).deliver
    testing = plan_host("mx.example.net", mx_secure=False, dane=None, sts=TESTING)
    verdict = check_session(testing, tls=True, verified=False,
                            verify_problem="certificate has expired", dane=None,
                            capabilities={})
    assert verdict.deliver
    assert verdict.report is ResultType.CERTIFICATE_EXPIRED


@pytest.mark.parametrize(("text", "expected"), [
    # OpenSSL's own messages (ssl.SSLCertVerificationError.verify_message)
    ("Hostname mismatch, certificate is not valid for 'mx.example.net'.",
     ResultType.CERTIFICATE_HOST_MISMATCH),
    ("IP address mismatch, certificate is not valid for '127.0.0.1'.",
     ResultType.CERTIFICATE_HOST_MISMATCH),
    ("certificate has expired", ResultType.CERTIFICATE_EXPIRED),
    ("certificate is not yet valid", ResultType.CERTIFICATE_EXPIRED),
    ("self-signed certificate", ResultType.CERTIFICATE_NOT_TRUSTED),
    ("self signed certificate in certificate chain", ResultType.CERTIFICATE_NOT_TRUSTED),
    ("unable to get local issuer certificate", ResultType.CERTIFICATE_NOT_TRUSTED),
    ("certificate signature failure", ResultType.VALIDATION_FAILURE),
])
def test_classify_certificate_error(text: str, expected: ResultType) -> None:
    assert classify_certificate_error(text) is expected
