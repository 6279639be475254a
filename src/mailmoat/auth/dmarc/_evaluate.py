"""DMARC evaluation as a pure function of the SPF and DKIM outputs plus what DNS said.

ARCHITECTURE.md rule 5: "DMARC is a pure function of the SPF and DKIM outputs". Everything
DNS told us arrives in a :class:`PolicyLookup`; randomness (``pct`` sampling) is injected.

Steps (RFC 9989 §5.3.3-5.3.6; RFC 7489 §6.6.2-6.6.4):

1. Authenticated Identifiers: the SPF MAIL FROM domain if SPF passed (RFC 9989 §4.4.2: "DMARC
   relies solely on SPF validation of the MAIL FROM identity"), and the ``d=`` of every DKIM
   signature that passed (§4.4.1: "considered to produce a DMARC "pass" result if any
   DKIM-Authenticated Identifier aligns").
2. Alignment (RFC 7489 §3.1.1-3.1.2; RFC 9989 §3.2.10): strict = the same name
   (case-insensitive, RFC 4343); relaxed = the same Organizational Domain.
3. §5.3.5: "If one or more of the Authenticated Identifiers align with the Author Domain, the
   message is considered to pass"; otherwise it fails.
4. The policy (RFC 9989 §4.10.1): "If the DMARC Policy Record to be applied is that of the
   Author Domain, then the Domain Owner Assessment Policy is taken from the "p" tag"; for a
   record of the Organizational or Public Suffix Domain "the "sp" tag (if any) if the Author
   Domain exists, or the "np" tag (if any) if the Author Domain does not exist.  In the absence
   of applicable "sp" or "np" tags, the "p" tag policy is used".
5. An invalid ``p`` (or ``sp``/``np``): "If a "rua" tag is present and contains at least one
   syntactically valid reporting URI, the Mail Receiver MUST act as if a record containing
   "p=none" was retrieved and continue processing; Otherwise, the Mail Receiver applies no
   DMARC processing to this message" (RFC 9989 §4.10.1; RFC 7489 §6.6.3 step 6 says SHOULD).
   "No DMARC processing" is reported as ``permerror`` ("encountering a syntactically
   incorrect DMARC record", RFC 7489 §11.2) so the receiver sees the broken record.
6. The disposition of a failing message: the policy, lowered one step ("reject" →
   "quarantine" → "none") when RFC 7489 ``pct`` sampling leaves the message out (§6.6.4: "If
   the message is not subject to the "reject" policy (due to the "pct" tag), the Mail Receiver
   SHOULD treat the email as though the "quarantine" policy applies"; for quarantine, "apply
   local message classification as normal") or, in RFC 9989 mode, when ``t=y`` ("if the policy
   is "quarantine" and the value of the "t" tag is "y", a policy of "none" will be applied ...
   if the policy is "reject" ... a policy of "quarantine"", §4.7).
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Sequence

from mailmoat.auth.dkim import DKIMResult, DKIMResultCode
from mailmoat.auth.dmarc._orgdomain import psl_organizational_domain
from mailmoat.auth.dmarc._record import Alignment, DMARCRecord, Policy
from mailmoat.auth.dmarc._result import (
    AuthorExistence,
    DiscoveryMode,
    Disposition,
    DMARCResult,
    DMARCVerdict,
    IdentifierCheck,
    LookupStatus,
    PolicyLookup,
)
from mailmoat.auth.spf import SPFResult, SPFVerdict

__all__ = ["RandomSource", "evaluate", "explain"]

#: Returns a float in [0, 1); ``pct`` sampling applies the policy when ``100 * r < pct``.
RandomSource = Callable[[], float]

_SYSTEM_RANDOM = _random.SystemRandom()

_LOWER = {
    Policy.REJECT: Policy.QUARANTINE,
    Policy.QUARANTINE: Policy.NONE,
    Policy.NONE: Policy.NONE,
}


def _norm(domain: str) -> str:
    return domain.rstrip(".").lower()


def _org_of(domain: str, lookup: PolicyLookup) -> str | None:
    if domain == _norm(lookup.from_domain) and lookup.org_domain:
        return lookup.org_domain
    known = lookup.org_domains.get(domain)
    if known is not None:
        return known
    if lookup.mode is DiscoveryMode.PSL:
        return psl_organizational_domain(domain)
    return None


def _aligned(identifier: str, lookup: PolicyLookup, mode: Alignment) -> tuple[bool, str]:
    """(aligned, note) for one identifier that passed its mechanism."""
    author = _norm(lookup.from_domain)
    if identifier == author:
        return True, "identical to the Author Domain"
    if mode is Alignment.STRICT:
        return False, "strict alignment needs the identical domain"
    mine, theirs = _org_of(identifier, lookup), _org_of(author, lookup)
    if mine is None or theirs is None:
        return False, "Organizational Domain unknown"
    if mine == theirs:
        return True, f"same Organizational Domain {mine}"
    return False, f"Organizational Domain {mine} differs from {theirs}"


def _identifiers(
    spf: SPFResult | None, dkim: Sequence[DKIMResult], lookup: PolicyLookup, record: DMARCRecord
) -> list[IdentifierCheck]:
    checks: list[IdentifierCheck] = []
    if spf is not None and spf.domain:
        domain = _norm(spf.domain)
        passed = spf.result is SPFVerdict.PASS
        aligned, note = _aligned(domain, lookup, record.aspf) if passed else (False, "")
        checks.append(
            IdentifierCheck(
                method="spf", domain=domain, result=spf.result.value, aligned=aligned,
                mode=record.aspf, note=note if passed else f"SPF {spf.result.value}",
            )
        )
    for sig in dkim:
        if not sig.domain:
            continue
        domain = _norm(sig.domain)
        passed = sig.result is DKIMResultCode.PASS
        aligned, note = _aligned(domain, lookup, record.adkim) if passed else (False, "")
        checks.append(
            IdentifierCheck(
                method="dkim", domain=domain, result=sig.result.value, aligned=aligned,
                mode=record.adkim, selector=sig.selector,
                note=note if passed else f"DKIM {sig.result.value}",
            )
        )
    return checks


def _has_valid_rua(record: DMARCRecord) -> bool:
    return bool(record.rua)


def _select_policy(
    record: DMARCRecord, lookup: PolicyLookup, reasons: list[str]
) -> tuple[Policy, str]:
    """(policy, tag) per RFC 9989 §4.10.1 (see the module docstring, step 4)."""
    author = _norm(lookup.from_domain)
    p = record.p if record.p is not None else Policy.NONE
    if lookup.policy_domain is None or _norm(lookup.policy_domain) == author:
        return p, "p"
    if record.np is not None:
        if lookup.author_exists is AuthorExistence.NXDOMAIN:
            reasons.append(f"{author} does not exist (NXDOMAIN): np applies")
            return record.np, "np"
        if lookup.author_exists is AuthorExistence.UNKNOWN:
            reasons.append(f"whether {author} exists is unknown: np not applied")
    if record.sp is not None:
        return record.sp, "sp"
    return p, "p"


def evaluate(
    from_domain: str,
    spf: SPFResult | None,
    dkim: Sequence[DKIMResult],
    lookup: PolicyLookup,
    *,
    random: RandomSource | None = None,
) -> DMARCResult:
    """The DMARC result for one Author Domain, given the SPF result (MAIL FROM identity), every
    DKIM signature's result, and the policy lookup. Pure: no DNS, no clock; ``random`` is
    drawn only when RFC 7489 ``pct`` < 100 must be sampled (default: the system's CSPRNG).
    """
    author = _norm(from_domain)
    # (each outcome is built once, directly: no dataclasses.replace copies)
    mode, queries = lookup.mode, lookup.queries
    if lookup.status is LookupStatus.TEMPERROR:
        return DMARCResult(
            result=DMARCVerdict.TEMPERROR, from_domain=author, mode=mode, queries=queries,
            reasons=(lookup.problem or "DNS failure during policy discovery",),
        )
    if lookup.status is LookupStatus.MULTIPLE:
        return DMARCResult(
            result=DMARCVerdict.NONE, from_domain=author, mode=mode, queries=queries,
            reasons=(lookup.problem or "several DMARC records: policy discovery terminates "
                     "(RFC 7489 §6.6.3 step 5)",),
        )
    record = lookup.record
    if lookup.status is LookupStatus.NONE or record is None:
        return DMARCResult(
            result=DMARCVerdict.NONE, from_domain=author, mode=mode, queries=queries,
            org_domain=lookup.org_domain,
            reasons=(f"no DMARC record for {author} or its Organizational Domain: DMARC "
                     "does not apply", *((lookup.problem,) if lookup.problem else ())),
        )
    reasons: list[str] = []
    if lookup.problem:
        reasons.append(lookup.problem)
    policy_domain, org_domain = lookup.policy_domain, lookup.org_domain
    act_as_none = False
    p_missing_is_error = record.p is None and not record.p_invalid and (
        lookup.mode is DiscoveryMode.PSL
    )
    if not record.policy_tags_valid or p_missing_is_error:
        bad = [t for t, bad in (("p", record.p_invalid or p_missing_is_error),
                                ("sp", record.sp_invalid), ("np", record.np_invalid)) if bad]
        what = ", ".join(f"{t}=" for t in bad)
        if _has_valid_rua(record):
            act_as_none = True
            reasons.append(f"invalid or missing {what}; rua has a valid URI, so the record "
                           "acts as p=none (RFC 9989 §4.10.1, RFC 7489 §6.6.3)")
        else:
            return DMARCResult(
                result=DMARCVerdict.PERMERROR, from_domain=author, mode=mode, queries=queries,
                policy_domain=policy_domain, org_domain=org_domain, record=record,
                reasons=(*reasons, f"invalid or missing {what} and no valid rua URI: no DMARC "
                         "processing (RFC 9989 §4.10.1, RFC 7489 §6.6.3 step 6)"),
            )
    elif record.p is None:
        reasons.append("no p= tag: treated as p=none (RFC 9989 §4.7)")
    checks = _identifiers(spf, dkim, lookup, record)
    spf_aligned = any(c.aligned for c in checks if c.method == "spf")
    dkim_aligned = any(c.aligned for c in checks if c.method == "dkim")
    if act_as_none:
        policy, tag = Policy.NONE, "p"
    else:
        policy, tag = _select_policy(record, lookup, reasons)
    identifiers = tuple(checks)
    if spf_aligned or dkim_aligned:
        which = " and ".join(m for m, ok in (("SPF", spf_aligned), ("DKIM", dkim_aligned)) if ok)
        reasons.append(f"{which} passed with an identifier aligned with {author}")
        return DMARCResult(
            result=DMARCVerdict.PASS, from_domain=author, mode=mode, queries=queries,
            policy_domain=policy_domain, org_domain=org_domain, record=record,
            policy=policy, policy_tag=tag, spf_aligned=spf_aligned,
            dkim_aligned=dkim_aligned, identifiers=identifiers,
            reasons=tuple(reasons),
        )
    failed_walks = set(lookup.org_domain_failures)
    pending = [c.domain for c in checks if c.result == "pass" and c.domain in failed_walks]
    if pending:
        return DMARCResult(
            result=DMARCVerdict.TEMPERROR, from_domain=author, mode=mode, queries=queries,
            policy_domain=policy_domain, org_domain=org_domain, record=record,
            policy=policy, policy_tag=tag, spf_aligned=spf_aligned,
            dkim_aligned=dkim_aligned, identifiers=identifiers,
            reasons=(*reasons, "the Organizational Domain of " + ", ".join(pending)
                     + " could not be found (DNS failure): alignment undecided"),
        )
    if not checks:
        reasons.append("no SPF or DKIM result to align")
    elif not any(c.result == "pass" for c in checks):
        reasons.append("neither SPF nor any DKIM signature passed")
    else:
        reasons.append("no passing identifier is aligned with " + author)
    disposition = Disposition(policy.value)
    sampled_out = testing = False
    if policy is not Policy.NONE:
        if lookup.mode is DiscoveryMode.PSL and record.pct < 100:
            draw = (random or _SYSTEM_RANDOM.random)()
            if 100 * draw >= record.pct:
                sampled_out = True
                disposition = Disposition(_LOWER[policy].value)
                reasons.append(f"pct={record.pct}: this message was sampled out, "
                               f"{policy.value} lowered to {disposition.value} (RFC 7489 §6.6.4)")
        elif lookup.mode is DiscoveryMode.TREE_WALK and record.t:
            testing = True
            disposition = Disposition(_LOWER[policy].value)
            reasons.append(f"t=y (testing): {policy.value} lowered to {disposition.value} "
                           "(RFC 9989 §4.7)")
    if lookup.mode is DiscoveryMode.TREE_WALK and record.pct_given and record.pct < 100:
        reasons.append(f"pct={record.pct} ignored: removed by RFC 9989")
    return DMARCResult(
        result=DMARCVerdict.FAIL, from_domain=author, mode=mode, queries=queries,
        policy_domain=policy_domain, org_domain=org_domain, record=record,
        policy=policy, policy_tag=tag, spf_aligned=spf_aligned,
        dkim_aligned=dkim_aligned, identifiers=identifiers,
        disposition=disposition, sampled_out=sampled_out, testing=testing,
        reasons=tuple(reasons),
    )


def explain(result: DMARCResult) -> list[str]:
    """Sentences for a person: what was found, what aligned, what is asked."""
    lines: list[str] = []
    author = result.from_domain or "(no Author Domain)"
    lines.append(f"DMARC {result.result.value} for {author}.")
    if result.record is not None:
        where = result.policy_domain or author
        lines.append(f"Policy record at _dmarc.{where}: {result.record.text.strip()}")
        if result.org_domain:
            lines.append(f"Organizational Domain: {result.org_domain} ({result.mode.value}).")
    for check in result.identifiers:
        what = check.method.upper() + (f" (s={check.selector})" if check.selector else "")
        state = "aligned" if check.aligned else "not aligned"
        mode = "strict" if check.mode is Alignment.STRICT else "relaxed"
        detail = f": {check.note}" if check.note else ""
        lines.append(f"{what} {check.result} for {check.domain}, {state} ({mode}){detail}.")
    if result.policy is not None and result.result is DMARCVerdict.FAIL:
        line = f"Requested policy {result.policy_tag}={result.policy.value}"
        if result.disposition.value != result.policy.value:
            line += f", applied as {result.disposition.value}"
        lines.append(line + ".")
    lines.extend(result.reasons)
    return lines
