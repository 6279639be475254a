"""Outbound transport security for one destination (layer L2, pure): which MX hosts to try,
in which order, and what TLS each one must offer before a message may be handed to it.

* :func:`order_mx` - RFC 5321 §5.1 preference order, equal preferences shuffled with an
  injected random source; :func:`is_null_mx` - RFC 7505;
* :func:`plan_host` -> :class:`HostPlan` - the policy for one MX before connecting: DANE
  (RFC 7672) when its TLSA RRset is DNSSEC-authenticated, else MTA-STS (RFC 8461)
  ``enforce``/``testing``, else opportunistic STARTTLS (RFC 7435); REQUIRETLS (RFC 8689) on
  top for the messages that ask for it;
* :func:`check_session` -> :class:`Verdict` - after TLS and the second EHLO, before MAIL:
  may the message go to this server;
* :func:`classify_certificate_error` - an OpenSSL / ``cryptography`` verification message as
  an RFC 8460 §4.3 result type, for TLS reporting.

Outcomes are values, never exceptions (ARCHITECTURE.md rule 5). No I/O, no clock: the DANE
match (:func:`mailmoat.auth.dane.match_chain`) is done by the caller, which passes its
result in.

Precedence (RFC 8461 §2): DANE comes first - MTA-STS validation must not override a failing
DANE validation - so a host with secure, usable TLSA records is judged by DANE only.
RFC 7672 §2.2.1: "the SMTP client MAY proceed to use DANE TLS [...] even with MX hosts
obtained via an 'insecure' MX RRSet" - we do (as Postfix >= 3.6,
``smtp_tls_dane_insecure_mx_policy = dane``): the host's secure TLSA records were published
by its operator, so honouring them only adds protection. The TLSA records of a host are
looked up (by the caller) only when its address records are secure (RFC 7672 §2.2.2).

Opportunistic TLS (RFC 7435: encrypt whenever possible, authenticate when possible):
STARTTLS when offered, cleartext when it is not. When the handshake itself fails, the
plan allows (``plaintext_fallback``) one reconnection to the same host in cleartext - as
KumoMTA's ``opportunistic_tls_reconnect_on_failed_handshake``; Postfix at
``smtp_tls_security_level = may`` defers the message instead. A broken TLS stack on the
receiver then costs no delay; the caller may turn the retry off. The fallback is never
allowed under DANE, MTA-STS ``enforce`` or REQUIRETLS.

SECURITY: everything judged here comes from the network (DNS answers, the policy file, the
server's certificate and EHLO). Nothing unauthenticated is used to authenticate: TLSA records
count only from a secure lookup, and an MX host outside an ``enforce`` policy is never tried.
Error texts are classified by substring only (bounded input, no regex backtracking).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from mailmoat.auth.dane import DANEResult, DANEStatus, LookupStatus, TLSALookup, classify
from mailmoat.auth.mtasts import Mode, Policy
from mailmoat.resolver import MX, TLSA

__all__ = [
    "HostPlan",
    "PolicyKind",
    "ResultType",
    "Verdict",
    "Verification",
    "check_session",
    "classify_certificate_error",
    "is_null_mx",
    "order_mx",
    "plan_host",
]


class PolicyKind(enum.StrEnum):
    """The policy that governed a delivery attempt (kept with the attempt for TLS-RPT)."""

    NONE = "none"  # TLS not attempted (configured off, or cleartext after a failed handshake)
    OPPORTUNISTIC = "opportunistic"  # RFC 7435
    MTA_STS_ENFORCE = "mta-sts-enforce"  # RFC 8461 §5
    MTA_STS_TESTING = "mta-sts-testing"
    DANE = "dane"  # RFC 7672
    REQUIRETLS = "requiretls"  # RFC 8689


class Verification(enum.StrEnum):
    """How the server's certificate is authenticated."""

    NONE = "none"  # encrypted if possible, not authenticated
    WEBPKI = "webpki"  # PKIX chain to a trusted CA and the MX host name (RFC 6125)
    DANE = "dane"  # a usable TLSA record (RFC 7672 §3)


class ResultType(enum.StrEnum):
    """RFC 8460 §4.3 result types, plus mailmoat's own ``requiretls-*`` (RFC 8460 creates a
    registry of result types; these two are not in it and are reported to the sender only)."""

    # §4.3.1 negotiation failures
    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    # §4.3.2.1 DANE
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    # §4.3.2.2 MTA-STS
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"
    # RFC 8689 (mailmoat): the next hop does not offer REQUIRETLS / the MX is unauthenticated
    REQUIRETLS_NOT_SUPPORTED = "requiretls-not-supported"
    REQUIRETLS_MX_UNAUTHENTICATED = "requiretls-mx-unauthenticated"


# --- MX ordering (RFC 5321 §5.1, RFC 7505) -----------------------------------------------------
def is_null_mx(records: Sequence[MX]) -> bool:
    """RFC 7505 §3: a null MX is a single MX RR whose exchange is the root (".", stored as
    ``""``); a domain publishing one must publish no other MX RR, so a "." among other
    records is not a null MX (:func:`order_mx` drops it)."""
    return len(records) == 1 and records[0].exchange in ("", ".")


def order_mx(records: Sequence[MX], rng: random.Random) -> tuple[str, ...]:
    """The MX hosts in the order to try them.

    RFC 5321 §5.1: MX records carry "a preference indication that MUST be used in sorting
    [...]. Lower numbers are more preferred than higher ones", and with several destinations
    of the same preference "the sender-SMTP MUST randomize them to spread the load". A host
    listed twice is tried once, at its best preference; "." entries are dropped.
    """
    groups: dict[int, list[str]] = {}
    for record in records:
        if record.exchange in ("", "."):
            continue
        groups.setdefault(record.preference, []).append(record.exchange.lower().rstrip("."))
    hosts: list[str] = []
    for preference in sorted(groups):
        group = sorted(set(groups[preference]))  # a deterministic start for the injected rng
        rng.shuffle(group)
        hosts += [h for h in group if h not in hosts]
    return tuple(hosts)


# --- the plan for one host ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class HostPlan:
    """What one MX host must offer.

    ``skip`` True: do not connect at all (``failure``/``reason`` say why; ``temporary`` says
    whether another attempt later may succeed). ``report`` is a failure to report in
    TLS-RPT while delivering anyway (MTA-STS ``testing``, unusable TLSA records).
    """

    mx: str
    policy: PolicyKind
    tls_required: bool
    verification: Verification
    tlsa: tuple[TLSA, ...] = ()
    tlsa_base: str | None = None  # RFC 7672 §2.2.2: TLSA found at the CNAME-expanded name
    requiretls: bool = False
    plaintext_fallback: bool = False
    judge_webpki: bool = False  # MTA-STS testing: check the certificate, only to report
    skip: bool = False
    temporary: bool = True
    failure: ResultType | None = None
    report: ResultType | None = None
    reason: str = ""


def plan_host(
    mx: str,
    *,
    mx_secure: bool,
    dane: TLSALookup | None,
    sts: Policy | None,
    requiretls: bool = False,
    opportunistic: bool = True,
) -> HostPlan:
    """The policy for ``mx`` before connecting.

    ``mx_secure``: the MX RRset (or, for the implicit MX, the address RRset) was
    DNSSEC-authenticated - it matters for REQUIRETLS (RFC 8689 §4.1). ``dane``: the TLSA
    lookup for ``_25._tcp.<mx>``, or ``None`` when DANE does not apply (disabled - no
    validating resolver - or the host's address records are not secure). ``sts``: the
    MTA-STS policy in force for the recipient domain. ``requiretls``: the message carries
    REQUIRETLS (RFC 8689). ``opportunistic`` False: with no policy, do not even try STARTTLS.
    """
    mx = mx.lower().rstrip(".")
    sts_active = sts is not None and sts.mode is not Mode.NONE
    if dane is not None:
        if dane.status is LookupStatus.INDETERMINATE:
            # RFC 7672 §2.2: if the TLSA lookup fails (a SERVFAIL may hide a bogus
            # signature) the client must not connect to that server; it may try another
            # server or defer (RFC 8460 §4.3.2.1 "dnssec-invalid").
            return HostPlan(
                mx=mx, policy=PolicyKind.DANE, tls_required=True,
                verification=Verification.DANE, skip=True, failure=ResultType.DNSSEC_INVALID,
                reason=f"TLSA lookup for {mx} failed ({dane.error}): DANE state unknown, "
                       "host not tried (RFC 7672 §2.2)")
        if dane.status is LookupStatus.SECURE and dane.records:
            usable, _unusable = classify(dane.records)
            if usable:
                # RFC 7672 §2.2: secure usable TLSA records: TLS is mandatory and the
                # certificate must match one of them (RFC 8461 §2: DANE before MTA-STS).
                return HostPlan(
                    mx=mx, policy=PolicyKind.DANE, tls_required=True,
                    verification=Verification.DANE, tlsa=usable, requiretls=requiretls,
                    reason=f"DANE: {len(usable)} usable TLSA record(s) for {mx}")
            # RFC 7672 §2.2: secure TLSA records, none usable: TLS is still mandatory, but
            # the certificate is not authenticated ("tlsa-invalid" is reported).
            verification = Verification.WEBPKI if requiretls else Verification.NONE
            return HostPlan(
                mx=mx, policy=PolicyKind.DANE, tls_required=True, verification=verification,
                requiretls=requiretls, report=ResultType.TLSA_INVALID,
                reason=f"DANE: TLSA records for {mx} are secure but none is usable: "
                       "TLS mandatory, unauthenticated (RFC 7672 §2.2)")
    if sts_active:
        assert sts is not None
        enforce = sts.mode is Mode.ENFORCE
        if not sts.matches(mx):
            why = f"MX {mx} matches no mx pattern of the MTA-STS policy ({', '.join(sts.mx)})"
            if enforce:
                # RFC 8461 §5: "MUST NOT deliver the message to hosts that fail MX matching".
                return HostPlan(
                    mx=mx, policy=PolicyKind.MTA_STS_ENFORCE, tls_required=True,
                    verification=Verification.WEBPKI, skip=True,
                    failure=ResultType.VALIDATION_FAILURE, reason=why + " (enforce)")
            if requiretls:
                return _requiretls_unauthenticated(mx, why)
            return HostPlan(
                mx=mx, policy=PolicyKind.MTA_STS_TESTING, tls_required=False,
                verification=Verification.NONE, plaintext_fallback=opportunistic,
                report=ResultType.VALIDATION_FAILURE, reason=why + " (testing: delivered)")
        if enforce or requiretls:
            # RFC 8461 §5 enforce: STARTTLS and a PKIX certificate valid for the MX name.
            # RFC 8689 §4.1: an MX matching an MTA-STS policy is an authenticated MX.
            return HostPlan(
                mx=mx,
                policy=PolicyKind.MTA_STS_ENFORCE if enforce else PolicyKind.REQUIRETLS,
                tls_required=True, verification=Verification.WEBPKI, requiretls=requiretls,
                reason=f"MTA-STS {sts.mode.value}: {mx} matches the policy; TLS with a "
                       "valid certificate required")
        # RFC 8461 §5 testing: "messages SHOULD be delivered as though there were no
        # MTA-STS validation failure" - checked and reported, never enforced.
        return HostPlan(
            mx=mx, policy=PolicyKind.MTA_STS_TESTING, tls_required=False,
            verification=Verification.NONE, plaintext_fallback=opportunistic,
            judge_webpki=True,
            reason=f"MTA-STS testing: {mx} matches the policy; failures are reported only")
    if requiretls:
        if not mx_secure:
            return _requiretls_unauthenticated(
                mx, f"the MX {mx} is neither DNSSEC-authenticated nor covered by an MTA-STS "
                    "policy")
        # RFC 8689 §4.1: a DNSSEC-secure MX without TLSA: PKIX for the MX host name.
        return HostPlan(
            mx=mx, policy=PolicyKind.REQUIRETLS, tls_required=True,
            verification=Verification.WEBPKI, requiretls=True,
            reason=f"REQUIRETLS: {mx} (DNSSEC-secure MX) must offer TLS with a certificate "
                   "valid for its name and advertise REQUIRETLS")
    if not opportunistic:
        return HostPlan(mx=mx, policy=PolicyKind.NONE, tls_required=False,
                        verification=Verification.NONE, reason="TLS disabled by configuration")
    return HostPlan(
        mx=mx, policy=PolicyKind.OPPORTUNISTIC, tls_required=False,
        verification=Verification.NONE, plaintext_fallback=True,
        reason="no DANE or MTA-STS policy: opportunistic STARTTLS (RFC 7435)")


def _requiretls_unauthenticated(mx: str, why: str) -> HostPlan:
    """RFC 8689 §4.1: the MX of a REQUIRETLS message must come from a DNSSEC-validated lookup
    or be covered by an MTA-STS policy; otherwise this host is not a valid next hop."""
    return HostPlan(
        mx=mx, policy=PolicyKind.REQUIRETLS, tls_required=True,
        verification=Verification.WEBPKI, requiretls=True, skip=True, temporary=False,
        failure=ResultType.REQUIRETLS_MX_UNAUTHENTICATED,
        reason=f"REQUIRETLS: {why} (RFC 8689 §4.1)")


# --- after TLS, before MAIL ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """May the message be sent on this session? ``report`` holds a failure to report even
    when ``deliver`` is True (MTA-STS testing)."""

    deliver: bool
    failure: ResultType | None = None
    report: ResultType | None = None
    reason: str = ""
    temporary: bool = True


def check_session(
    plan: HostPlan,
    *,
    tls: bool,
    verified: bool,
    verify_problem: str | None,
    dane: DANEResult | None,
    capabilities: Mapping[str, str],
) -> Verdict:
    """The decision once the session is up (after STARTTLS and the second EHLO).

    ``tls``: a TLS session is established; ``verified``: the certificate was PKIX-verified
    for the MX name during the handshake; ``verify_problem``: what a PKIX check of the
    certificate found when it was not enforced (``None``: it would verify); ``dane``: the
    match of the presented chain against ``plan.tlsa`` (when ``plan.verification`` is DANE);
    ``capabilities``: the EHLO keywords in force.
    """
    if plan.tls_required and not tls:
        return Verdict(deliver=False, failure=ResultType.STARTTLS_NOT_SUPPORTED,
                       reason=f"{plan.mx}: TLS is required ({plan.policy}) and the session "
                              "is not encrypted")
    if plan.verification is Verification.DANE:
        if dane is None or dane.status is not DANEStatus.MATCHED:
            # RFC 7672 §2.2: with usable TLSA records and no match, the client must not
            # deliver to that server.
            return Verdict(deliver=False, failure=ResultType.VALIDATION_FAILURE,
                           reason=f"{plan.mx}: DANE: "
                                  + (dane.reason if dane else "the chain was not checked"))
    elif plan.verification is Verification.WEBPKI and not verified:
        failure = classify_certificate_error(verify_problem or "")
        return Verdict(deliver=False, failure=failure,
                       reason=f"{plan.mx}: the certificate is not valid for the MX name "
                              f"({verify_problem or 'not verified'})")
    if plan.requiretls and "REQUIRETLS" not in {k.upper() for k in capabilities}:
        # RFC 8689 §4.1: the sending MTA must not send the message to a server that does not
        # advertise REQUIRETLS after STARTTLS.
        return Verdict(deliver=False, failure=ResultType.REQUIRETLS_NOT_SUPPORTED,
                       temporary=False,
                       reason=f"{plan.mx} does not advertise REQUIRETLS (RFC 8689 §4.1)")
    report = plan.report
    reason = plan.reason
    if plan.judge_webpki and report is None:
        if not tls:
            report = ResultType.STARTTLS_NOT_SUPPORTED
            reason = f"MTA-STS testing: {plan.mx} offered no TLS (delivered, to be reported)"
        elif verify_problem is not None:
            report = classify_certificate_error(verify_problem)
            reason = (f"MTA-STS testing: {plan.mx}: {verify_problem} "
                      "(delivered, to be reported)")
    return Verdict(deliver=True, report=report, reason=reason)


# OpenSSL (X509_verify_cert_error_string) and cryptography verifier phrases, lower-case.
_HOST_MISMATCH: Final = ("hostname mismatch", "ip address mismatch", "no matching subjectaltname",
                         "not valid for", "does not match")
_EXPIRED: Final = ("expired", "not yet valid", "not valid at validation time",
                   "validity period")
_NOT_TRUSTED: Final = ("self-signed", "self signed", "unable to get local issuer",
                       "unknown or missing issuer", "trusted ca", "unable to get issuer",
                       "unable to verify the first certificate", "candidates exhausted")


def classify_certificate_error(text: str) -> ResultType:
    """RFC 8460 §4.3.1: "certificate-host-mismatch" (the certificate is not for the host),
    "certificate-expired", "certificate-not-trusted" (no chain to a trusted root, e.g.
    self-signed), else "validation-failure" (a general failure)."""
    lowered = text[:2000].lower()
    if any(p in lowered for p in _EXPIRED):
        return ResultType.CERTIFICATE_EXPIRED
    if any(p in lowered for p in _HOST_MISMATCH):
        return ResultType.CERTIFICATE_HOST_MISMATCH
    if any(p in lowered for p in _NOT_TRUSTED):
        return ResultType.CERTIFICATE_NOT_TRUSTED
    return ResultType.VALIDATION_FAILURE
