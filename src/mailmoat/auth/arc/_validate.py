"""ARC chain validation (RFC 8617 §5.2 "Validator Actions").

RFC 8617 §5.2, in the order implemented here (quotations from the RFC; the RFC numbers the
steps, our reason strings name them by what they check):

* collection: "If there are none, the Chain Validation Status is "none" ... The maximum number
  of ARC Sets that can be attached to a message is 50. If more than the maximum number exist,
  the Chain Validation Status is "fail"";
* the newest seal: "If the Chain Validation Status of the highest instance ARC-Seal is "fail",
  then the Chain Validation Status is "fail"";
* structure: each ARC Set has exactly one of each of the three fields, instances form a
  continuous sequence 1..N, and "the "cv" value for all ARC-Seal header fields MUST NOT be
  "fail". For ARC Sets with instance values > 1, the values MUST be "pass". For the ARC Set
  with instance value = 1, the value MUST be "none"";
* the newest AMS: "Validate the AMS with the greatest instance value (most recent). If
  validation fails, then the Chain Validation Status is "fail"";
* (optional) the older AMSs, newest first, for "oldest-pass": here the lowest instance from
  which every AMS up to the newest validates, 0 when all of them do;
* every seal: "Validate each AS beginning with the greatest instance value and proceeding in
  decreasing order to the AS with the instance value of 1. If any AS fails to validate, the
  Chain Validation Status is "fail"";
* otherwise the Chain Validation Status is "pass".

An ARC-Seal signs, with relaxed header canonicalisation, the ARC Sets 1..i in increasing
instance order, each as ARC-Authentication-Results, ARC-Message-Signature, ARC-Seal, with its
own b= value emptied (RFC 8617 §5.1.1). An AMS is verified like a DKIM signature.

SECURITY: all ARC fields and key records are untrusted (see :mod:`._fields`). The header
section is split by the bounded DKIM field splitter; more than 3 x ``limits.ARC_MAX_INSTANCES``
ARC fields fail the chain before any parsing of their tags; keys are fetched once per name;
at most 2 x N signatures are verified; at most ``limits.ARC_MAX_BODY_HASHES`` body hashes are
computed (each a pass over the body). Outcomes are :class:`ARCValidation` values.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mailmoat.auth.arc._fields import (
    AAR_NAME,
    AMS_NAME,
    ARC_NAMES,
    AS_NAME,
    AMSig,
    ASeal,
    check_key,
    fetch_key,
    parse_ams,
    parse_arc_field,
    parse_as,
    relaxed,
    relaxed_without_crlf,
    verify_signature,
)
from mailmoat.auth.arc._types import ARCSetCheck, ARCStatus, ARCValidation
from mailmoat.auth.authres import authserv_id_of
from mailmoat.auth.dkim._fields import checked_fields
from mailmoat.auth.dkim.internals import (
    DKIMTagError,
    KeyRecord,
    RawField,
    hash_input,
    index_fields,
    split_message,
)
from mailmoat.clock import Clock
from mailmoat.limits import (
    ARC_MAX_BODY_HASHES,
    ARC_MAX_INSTANCES,
    DKIM_CLOCK_SKEW,
    DKIM_RSA_MIN_BITS,
    MESSAGE_HEADER_MAX,
    MESSAGE_MAX_HEADER_FIELDS,
)
from mailmoat.message.dkim_canon import BodyCanonicalizer
from mailmoat.resolver import Resolver

__all__ = ["DEFAULT_ARC_POLICY", "ARCPolicy", "ARCValidator", "seal_hash_input", "validate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ARCPolicy:
    """What this validator accepts."""

    #: RFC 8301 §3.2 floor (the ARC test suite signs with 1024-bit keys: at the floor).
    min_rsa_bits: int = DKIM_RSA_MIN_BITS
    #: check t= (future) and x= (expired, AMS only) against the clock, with this slack
    check_time: bool = True
    clock_skew: int = DKIM_CLOCK_SKEW
    #: §5.2 (optional step): also validate the older AMSs, to report oldest-pass
    oldest_pass: bool = True


DEFAULT_ARC_POLICY = ARCPolicy()


@dataclass(slots=True)
class _Set:
    aar: list[RawField]
    ams: list[RawField]
    seal: list[RawField]


def _has_no_arc_field(header: bytes) -> bool:
    """True when no field of ``header`` can be an ARC field and :func:`split_fields` would
    not refuse ``header`` either (so skipping the split changes nothing). Every ARC field
    name starts with "ARC-" (any case), so its absence from the lower-cased section is
    proof; the limits are those split_fields enforces (a field is at least one line)."""
    return (
        len(header) <= MESSAGE_HEADER_MAX
        and header.count(b"\n") < MESSAGE_MAX_HEADER_FIELDS
        and b"arc-" not in header.lower()
    )


def _fail(reason: str, n: int, instance: int | None = None, **extra: object) -> ARCValidation:
    return ARCValidation(result=ARCStatus.FAIL, instance_count=n, failed_instance=instance,
                         reason=reason, **extra)  # type: ignore[arg-type]


class ARCValidator:
    """Validate the chain of one message; the body is streamed (for the AMS body hashes).

    ``header`` is the header section. ``fields``: its fields when the caller already split
    it, exactly as :func:`~mailmoat.auth.dkim.internals.split_fields` splits ``header`` (the
    size and field-count limits are checked on either path). :meth:`update` takes body
    chunks; :meth:`finish` looks up keys and returns the :class:`ARCValidation`.
    """

    def __init__(self, header: bytes, *, clock: Clock,
                 policy: ARCPolicy = DEFAULT_ARC_POLICY,
                 fields: Sequence[RawField] | None = None) -> None:
        self._clock = clock
        self._policy = policy
        if _has_no_arc_field(header):
            # (most messages: the split below would find nothing to validate)
            self._fields: list[RawField] = []
            self._index: dict[bytes, list[RawField]] = {}
        else:
            self._fields = checked_fields(header, fields)
            self._index = index_fields(self._fields)
        self._early: ARCValidation | None = None
        self._sets: dict[int, _Set] = {}
        self._n = 0
        self._ams: dict[int, AMSig | str] = {}
        self._seals: dict[int, ASeal | str] = {}
        self._bodies: dict[tuple[str, str, int | None], BodyCanonicalizer] = {}
        #: older AMSs left unchecked (limits.ARC_MAX_BODY_HASHES)
        self._unchecked: set[int] = set()
        self._result: ARCValidation | None = None
        self._collect()

    # -- §5.2 collection and structure (no DNS, no body) -----------------------------------

    def _collect(self) -> None:
        arc = [f for f in self._fields if f.lname in ARC_NAMES]
        if not arc:
            self._early = ARCValidation(result=ARCStatus.NONE, reason="no ARC Sets")
            return
        if len(arc) > 3 * ARC_MAX_INSTANCES:
            self._early = _fail(f"more than {ARC_MAX_INSTANCES} ARC Sets (RFC 8617 §5.2)",
                                0)
            return
        for f in arc:
            parsed = parse_arc_field(f)
            if parsed.instance is None:
                # A field that belongs to no instance breaks the structure (§5.2).
                name = f.name.decode("ascii", "replace")
                self._early = _fail(f"{name} with no valid instance: {parsed.problem}", 0)
                return
            entry = self._sets.setdefault(parsed.instance, _Set([], [], []))
            {AAR_NAME: entry.aar, AMS_NAME: entry.ams, AS_NAME: entry.seal}[f.lname].append(f)
        n = self._n = max(self._sets)
        # the newest seal already says the chain failed
        newest = self._sets[n].seal
        if len(newest) == 1:
            seal = self._parse_seal(n, newest[0])
            if isinstance(seal, ASeal) and seal.cv == "fail":
                self._early = _fail(
                    f"the newest ARC-Seal (i={n}) reports cv=fail (RFC 8617 §5.2)",
                    n, n, highest_cv_fail=True)
                return
        # structure
        for i in range(1, n + 1):
            found = self._sets.get(i)
            if found is None:
                self._early = _fail(f"ARC Set i={i} is missing (instances must run 1..{n})", n, i)
                return
            entry = found
            for what, items in (("ARC-Authentication-Results", entry.aar),
                                ("ARC-Message-Signature", entry.ams),
                                ("ARC-Seal", entry.seal)):
                if len(items) != 1:
                    count = "no" if not items else f"{len(items)}"
                    self._early = _fail(f"ARC Set i={i} has {count} {what} (exactly one "
                                        "required, RFC 8617 §5.2 structure)", n, i)
                    return
            seal = self._parse_seal(i, entry.seal[0])
            if isinstance(seal, str):
                self._early = _fail(f"ARC-Seal i={i} is malformed: {seal}", n, i)
                return
            want = "none" if i == 1 else "pass"
            if seal.cv != want:
                self._early = _fail(f"ARC-Seal i={i} has cv={seal.cv}, must be {want} "
                                    "(RFC 8617 §5.2 structure)", n, i)
                return
        # AMSs: parse all that will be checked; prepare their body hashes.
        last = 1 if self._policy.oldest_pass else n
        for i in range(n, last - 1, -1):
            ams = self._parse_ams(i, self._sets[i].ams[0])
            if isinstance(ams, AMSig):
                key = (ams.body_canon, ams.hash_name, ams.length)
                if key not in self._bodies:
                    if len(self._bodies) >= ARC_MAX_BODY_HASHES:
                        self._unchecked.add(i)
                        continue
                    self._bodies[key] = BodyCanonicalizer(ams.body_canon, ams.length,
                                                          hash_name=ams.hash_name)

    def _parse_seal(self, i: int, f: RawField) -> ASeal | str:
        if i not in self._seals:
            try:
                self._seals[i] = parse_as(f, i)
            except DKIMTagError as exc:
                self._seals[i] = str(exc)
        return self._seals[i]

    def _parse_ams(self, i: int, f: RawField) -> AMSig | str:
        if i not in self._ams:
            try:
                self._ams[i] = parse_ams(f, i)
            except DKIMTagError as exc:
                self._ams[i] = str(exc)
        return self._ams[i]

    # -- body --------------------------------------------------------------------------------

    def update(self, chunk: bytes) -> None:
        """Feed the next piece of the body."""
        for canon in self._bodies.values():
            canon.update(chunk)

    # -- §5.2 signatures ------------------------------------------------------------------------

    async def finish(self, resolver: Resolver) -> ARCValidation:
        if self._result is None:
            self._result = await self._finish(resolver)
        return self._result

    async def _finish(self, resolver: Resolver) -> ARCValidation:
        if self._early is not None:
            return self._early
        n = self._n
        keys: dict[str, KeyRecord | str] = {}
        checks = {i: self._set_info(i) for i in range(1, n + 1)}
        # the newest AMS
        reason = await self._check_ams(n, resolver, keys)
        checks[n] = replace(checks[n], ams_valid=not reason, ams_reason=reason)
        if reason:
            return _fail(f"ARC-Message-Signature i={n} did not validate: {reason} "
                         "(RFC 8617 §5.2: newest AMS)", n, n, sets=_ordered(checks))
        # (optional) oldest-pass
        oldest: int | None = None
        if self._policy.oldest_pass:
            oldest = 0
            for i in range(n - 1, 0, -1):
                if i in self._unchecked:
                    checks[i] = replace(checks[i], ams_reason=(
                        f"not checked: more than {ARC_MAX_BODY_HASHES} distinct body hashes"))
                    oldest = i + 1
                    break
                reason = await self._check_ams(i, resolver, keys)
                checks[i] = replace(checks[i], ams_valid=not reason, ams_reason=reason)
                if reason:
                    oldest = i + 1
                    break
        # every seal, newest first
        for i in range(n, 0, -1):
            reason = await self._check_seal(i, resolver, keys)
            checks[i] = replace(checks[i], as_valid=not reason, as_reason=reason)
            if reason:
                return _fail(f"ARC-Seal i={i} did not validate: {reason} "
                             "(RFC 8617 §5.2: seals)", n, i, sets=_ordered(checks))
        return ARCValidation(result=ARCStatus.PASS, instance_count=n, oldest_pass=oldest,
                             reason=f"{n} ARC Set{'s' if n > 1 else ''} validated",
                             sets=_ordered(checks))

    def _set_info(self, i: int) -> ARCSetCheck:
        entry = self._sets[i]
        seal = self._seals.get(i)
        ams = self._ams.get(i)
        aar = entry.aar[0].value
        semi = aar.find(b";")
        return ARCSetCheck(
            instance=i,
            ams_domain=ams.domain if isinstance(ams, AMSig) else None,
            ams_selector=ams.selector if isinstance(ams, AMSig) else None,
            as_domain=seal.domain if isinstance(seal, ASeal) else None,
            as_selector=seal.selector if isinstance(seal, ASeal) else None,
            cv=seal.cv if isinstance(seal, ASeal) else None,
            authserv_id=authserv_id_of(aar[semi + 1 :]) if semi >= 0 else None,
        )

    def _time_problem(self, t: int | None, x: int | None) -> str:
        if not self._policy.check_time:
            return ""
        now = self._clock.now()
        skew = self._policy.clock_skew
        if x is not None and now > x + skew:
            return "signature expired (x=)"
        if t is not None and t > now + skew:
            return "signature timestamp (t=) is in the future"
        return ""

    async def _check_ams(self, i: int, resolver: Resolver,
                         keys: dict[str, KeyRecord | str]) -> str:
        ams = self._parse_ams(i, self._sets[i].ams[0])
        if isinstance(ams, str):
            return f"malformed: {ams}"
        problem = self._time_problem(ams.timestamp, ams.expiration)
        if problem:
            return problem
        record = await fetch_key(resolver, ams.selector, ams.domain, keys)
        if isinstance(record, str):
            return record
        problem = check_key(record, ams.key_type, ams.hash_name, self._policy.min_rsa_bits)
        if problem:
            return problem
        body = self._bodies[(ams.body_canon, ams.hash_name, ams.length)]
        if ams.length is not None and ams.length > body.length:
            return "l= is longer than the body"
        if not hmac.compare_digest(body.digest(), ams.body_hash):
            return "body hash did not verify"
        data = hash_input(self._index, ams.signed_headers, ams.header_canon == "relaxed",
                          ams.raw_without_b)
        if not verify_signature(record, ams.hash_name, ams.signature, data):
            return "signature did not verify"
        return ""

    async def _check_seal(self, i: int, resolver: Resolver,
                          keys: dict[str, KeyRecord | str]) -> str:
        seal = self._seals[i]
        assert isinstance(seal, ASeal)  # parsed with the structure checks
        problem = self._time_problem(seal.timestamp, None)
        if problem:
            return problem
        record = await fetch_key(resolver, seal.selector, seal.domain, keys)
        if isinstance(record, str):
            return record
        problem = check_key(record, seal.key_type, seal.hash_name, self._policy.min_rsa_bits)
        if problem:
            return problem
        triples = [(self._sets[j].aar[0], self._sets[j].ams[0], self._sets[j].seal[0])
                   for j in range(1, i + 1)]
        data = seal_hash_input(triples, seal.raw_without_b)
        if not verify_signature(record, seal.hash_name, seal.signature, data):
            return "signature did not verify"
        return ""


def seal_hash_input(
    sets: Sequence[tuple[RawField, RawField, RawField]], raw_without_b: bytes
) -> bytes:
    """RFC 8617 §5.1.1: the ARC Sets (AAR, AMS, AS fields) in increasing instance order, each
    as AAR, AMS, AS in relaxed header canonicalisation; the seal being made or checked (the
    last set's) is replaced by ``raw_without_b``: b= emptied, no final CRLF."""
    parts: list[bytes] = []
    for k, (aar, ams, seal) in enumerate(sets):
        parts.append(relaxed(aar))
        parts.append(relaxed(ams))
        if k < len(sets) - 1:
            parts.append(relaxed(seal))
    parts.append(relaxed_without_crlf(raw_without_b))
    return b"".join(parts)


def _ordered(checks: dict[int, ARCSetCheck]) -> tuple[ARCSetCheck, ...]:
    return tuple(checks[i] for i in sorted(checks, reverse=True))


async def validate(
    message: bytes,
    resolver: Resolver,
    *,
    clock: Clock,
    policy: ARCPolicy = DEFAULT_ARC_POLICY,
) -> ARCValidation:
    """Validate the ARC chain of a whole message (CRLF line endings) held in memory."""
    header, body = split_message(message)
    validator = ARCValidator(header, clock=clock, policy=policy)
    validator.update(body)
    return await validator.finish(resolver)
