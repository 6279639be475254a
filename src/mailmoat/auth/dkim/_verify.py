"""DKIM verification (RFC 6376 §6, RFC 8463, RFC 8301), streaming over the body.

The gateway creates a :class:`DKIMVerifier` from the header section as soon as it has it,
feeds body chunks as DATA arrives (:meth:`DKIMVerifier.update`: canonicalised and hashed on
the fly, never stored), and at the end awaits :meth:`DKIMVerifier.finish`, which looks up the
keys through the injected :class:`~mailmoat.resolver.Resolver` and returns one
:class:`DKIMResult` per signature. The clock is injected (t=/x= checks).

SECURITY: everything in the message and in DNS is untrusted. At most
``policy.max_signatures`` (``limits.DKIM_MAX_SIGNATURES``) signatures are evaluated, the rest
counted in :attr:`DKIMVerifier.skipped`; each is parsed with the bounds of :mod:`._tags`; at most
``limits.DKIM_MAX_KEY_RECORDS`` TXT records are tried per key; RSA keys are bounded in size
before use; the body is held by no one (streaming canonicalisers keep a bounded tail). Every
failure is a result value with a reason, never an exception (except
:class:`~mailmoat.errors.LimitExceeded` for a header section beyond the message limits).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailmoat.auth.dkim._fields import RawField, checked_fields, split_message
from mailmoat.auth.dkim._tags import (
    DKIMTagError,
    KeyRecord,
    Signature,
    parse_key_record,
    parse_signature,
    parse_tag_list,
)
from mailmoat.auth.dkim._types import BodyLengthInfo, DKIMResult, DKIMResultCode
from mailmoat.clock import Clock
from mailmoat.errors import DNSPermanentError, DNSTemporaryError
from mailmoat.limits import (
    DKIM_CLOCK_SKEW,
    DKIM_MAX_KEY_RECORDS,
    DKIM_MAX_SIGNATURES,
    DKIM_RSA_MIN_BITS,
    DKIM_RSA_WEAK_BITS,
)
from mailmoat.message.dkim_canon import (
    BodyCanonicalizer,
    CanonKind,
    canonicalize_fields_relaxed,
)
from mailmoat.resolver import TXT, NoData, NXDomain, Resolver, RRType

__all__ = ["DEFAULT_VERIFY_POLICY", "DKIMVerifier", "VerifyPolicy", "verify"]

#: (hash algorithm objects are stateless: one instance each serves every verification)
#: rsa-sha1 is verified only when the policy allows it (RFC 8301 §3.1, checked in _check)
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(),
    "sha1": hashes.SHA1(),  # noqa: S303
}
_PKCS1 = padding.PKCS1v15()


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyPolicy:
    """What this verifier accepts (the ADMD's policy, RFC 8601 ``policy`` result)."""

    #: RFC 8301 §3.1: "Verifiers MUST NOT consider signatures using SHA-1 to be valid" unless
    #: configured otherwise; then the result carries the flag ``sha1``.
    allow_sha1: bool = False
    max_signatures: int = DKIM_MAX_SIGNATURES
    clock_skew: int = DKIM_CLOCK_SKEW
    #: RFC 8301 §3.2: keys below this are refused (permerror); below ``weak_rsa_bits`` flagged.
    min_rsa_bits: int = DKIM_RSA_MIN_BITS
    weak_rsa_bits: int = DKIM_RSA_WEAK_BITS
    #: l= with content after the signed length: report only (False) or result ``policy``.
    reject_unsigned_content: bool = False
    #: check t= (future) and x= (expired) against the clock
    check_time: bool = True


DEFAULT_VERIFY_POLICY = VerifyPolicy()


@dataclass(slots=True, kw_only=True)
class _Entry:
    field: RawField
    sig: Signature | None = None
    early: DKIMResult | None = None
    body_key: tuple[CanonKind, str, int | None] | None = None
    #: the key lookup's outcome, once fetched (by prefetch_keys or finish)
    key: KeyRecord | DKIMResult | None = None


def _salvage(raw: bytes) -> dict[str, str]:
    """Best-effort d=/s=/a=/i=/b= from a signature that did not parse (for reporting)."""
    colon = raw.find(b":")
    try:
        tags = parse_tag_list(raw[colon + 1 :].rstrip(b"\r\n"))
    except DKIMTagError:
        return {}
    out: dict[str, str] = {}
    for name in ("d", "s", "a", "i", "b"):
        if name in tags:
            text = tags[name].value[:256].decode("ascii", "replace")
            out[name] = "".join(text.split())
    return out


class DKIMVerifier:
    """Verify every DKIM-Signature of one message; the body is streamed.

    ``header`` is the header section (up to and including the empty line, or without it).
    ``fields``: its fields when the caller already split it, exactly as
    :func:`~mailmoat.auth.dkim.internals.split_fields` splits ``header`` (e.g.
    :func:`._fields.fields_from_headers`); the size and field-count limits are checked on
    either path.
    """

    def __init__(
        self,
        header: bytes,
        *,
        clock: Clock,
        policy: VerifyPolicy = DEFAULT_VERIFY_POLICY,
        fields: Sequence[RawField] | None = None,
    ) -> None:
        self._clock = clock
        self._policy = policy
        self._fields = checked_fields(header, fields)
        self._index: dict[bytes, list[RawField]] = {}
        for f in self._fields:
            self._index.setdefault(f.lname, []).append(f)
        sig_fields = self._index.get(b"dkim-signature", [])
        #: signatures present but not evaluated (beyond ``policy.max_signatures``)
        self.skipped = max(0, len(sig_fields) - policy.max_signatures)
        self._entries: list[_Entry] = []
        self._bodies: dict[tuple[CanonKind, str, int | None], BodyCanonicalizer] = {}
        for f in sig_fields[: policy.max_signatures]:
            self._entries.append(self._prepare(f))
        self._results: tuple[DKIMResult, ...] | None = None

    def _prepare(self, f: RawField) -> _Entry:
        try:
            sig = parse_signature(f.raw)
        except DKIMTagError as exc:
            info = _salvage(f.raw)
            return _Entry(
                field=f,
                early=DKIMResult(
                    result=DKIMResultCode.PERMERROR,
                    domain=info.get("d"),
                    selector=info.get("s"),
                    algorithm=info.get("a"),
                    reason=f"signature syntax error: {exc}",
                    header_d=info.get("d"),
                    header_i=info.get("i"),
                    header_b=info["b"][:8] if info.get("b") else None,
                ),
            )
        key = (sig.body_canon, sig.hash_name, sig.length)
        if key not in self._bodies:
            self._bodies[key] = BodyCanonicalizer(
                sig.body_canon, sig.length, hash_name=sig.hash_name
            )
        return _Entry(field=f, sig=sig, body_key=key)

    @property
    def signature_count(self) -> int:
        return len(self._entries) + self.skipped

    def update(self, chunk: bytes) -> None:
        """Feed the next piece of the body."""
        for canon in self._bodies.values():
            canon.update(chunk)

    async def prefetch_keys(self, resolver: Resolver) -> None:
        """Look up the keys now, e.g. concurrently with receiving the body (optional;
        :meth:`finish` looks up whatever was not fetched yet). Lookups are the same either
        way: one TXT query per signature evaluated."""
        for entry in self._entries:
            if entry.sig is not None and entry.key is None:
                entry.key = await self._fetch_key(entry.sig, resolver)

    async def finish(self, resolver: Resolver) -> tuple[DKIMResult, ...]:
        """End of body: look up keys and return the results (``none`` if unsigned)."""
        if self._results is not None:
            return self._results
        if not self._entries:
            self._results = (DKIMResult(result=DKIMResultCode.NONE, reason="no signature"),)
            return self._results
        now = self._clock.now()
        results = []
        for entry in self._entries:
            if entry.early is not None:
                results.append(entry.early)
                continue
            assert entry.sig is not None
            assert entry.body_key is not None
            results.append(await self._check(entry, self._bodies[entry.body_key], now, resolver))
        self._results = tuple(results)
        return self._results

    @staticmethod
    def _result(
        sig: Signature,
        code: DKIMResultCode,
        reason: str,
        *,
        key_bits: int | None = None,
        body_length_info: BodyLengthInfo | None = None,
        flags: tuple[str, ...] = (),
    ) -> DKIMResult:
        return DKIMResult(
            result=code,
            domain=sig.domain,
            selector=sig.selector,
            algorithm=sig.algorithm,
            reason=reason,
            key_bits=key_bits,
            body_length_info=body_length_info,
            header_d=sig.domain,
            header_i=sig.identity,
            header_b=sig.b_text[:8],
            flags=flags,
        )

    async def _check(
        self, entry: _Entry, body: BodyCanonicalizer, now: float, resolver: Resolver
    ) -> DKIMResult:
        sig = entry.sig
        assert sig is not None
        policy = self._policy
        perm = DKIMResultCode.PERMERROR
        flags: list[str] = []
        if policy.check_time:
            # §3.5 x=: "Signatures MAY be considered invalid if the verification time at the
            # Verifier is past the expiration date." §6.1.1: PERMFAIL (signature expired).
            if sig.expiration is not None and now > sig.expiration + policy.clock_skew:
                return self._result(sig, perm, "signature expired (x=)")
            # §3.5 t=: "Implementations MAY ignore signatures with a timestamp in the future."
            if sig.timestamp is not None and sig.timestamp > now + policy.clock_skew:
                return self._result(sig, perm, "signature timestamp (t=) is in the future")
        if sig.hash_name == "sha1":
            if not policy.allow_sha1:
                return self._result(
                    sig, DKIMResultCode.POLICY, "rsa-sha1 is not accepted (RFC 8301 §3.1)"
                )
            flags.append("sha1")

        # §6.1.2 Get the Public Key
        if entry.key is None:
            entry.key = await self._fetch_key(sig, resolver)
        key_or_result = entry.key
        if isinstance(key_or_result, DKIMResult):
            return key_or_result
        record = key_or_result
        checked = self._check_key(sig, record, flags)
        if checked is not None:
            return checked

        # §6.1.3 Compute the Verification: body hash first
        digest = body.digest()
        length_info: BodyLengthInfo | None = None
        if sig.length is not None:
            length_info = BodyLengthInfo(signed=sig.length, total=body.length)
            if sig.length > body.length:
                return self._result(
                    sig, DKIMResultCode.FAIL, "l= is longer than the body",
                    key_bits=record.key_bits, body_length_info=length_info,
                    flags=tuple(flags),
                )
            if length_info.unsigned:
                flags.append("unsigned_content")
        if not hmac.compare_digest(digest, sig.body_hash):
            return self._result(
                sig, DKIMResultCode.FAIL, "body hash did not verify",
                key_bits=record.key_bits, body_length_info=length_info, flags=tuple(flags),
            )
        data = self.header_hash_input(sig)
        key = record.key
        try:
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(sig.signature, data, _PKCS1, _HASHES[sig.hash_name])
            else:
                assert isinstance(key, ed25519.Ed25519PublicKey)
                # RFC 8463 §3: "signs the hash with the PureEdDSA variant Ed25519"
                key.verify(sig.signature, hashlib.sha256(data).digest())
        except InvalidSignature:
            return self._result(
                sig, DKIMResultCode.FAIL, "signature did not verify",
                key_bits=record.key_bits, body_length_info=length_info, flags=tuple(flags),
            )
        if length_info is not None and length_info.unsigned and policy.reject_unsigned_content:
            return self._result(
                sig, DKIMResultCode.POLICY,
                f"{length_info.unsigned} octets of body content follow the signed length (l=)",
                key_bits=record.key_bits, body_length_info=length_info, flags=tuple(flags),
            )
        reason = ""
        if length_info is not None and length_info.unsigned:
            reason = f"{length_info.unsigned} octets of unsigned body content follow l="
        return self._result(
            sig, DKIMResultCode.PASS, reason,
            key_bits=record.key_bits, body_length_info=length_info, flags=tuple(flags),
        )

    async def _fetch_key(self, sig: Signature, resolver: Resolver) -> KeyRecord | DKIMResult:
        # §3.6.2.1: the query is for "<selector>._domainkey.<domain>" of type TXT.
        name = f"{sig.selector}._domainkey.{sig.domain}"
        try:
            answer = await resolver.resolve(name, RRType.TXT)
        except (NXDomain, NoData):
            # §6.1.2 step 3: "...the corresponding key record does not exist, the Verifier
            # MUST immediately return PERMFAIL (no key for signature)."
            return self._result(sig, DKIMResultCode.PERMERROR, "no key for signature")
        except DNSTemporaryError as exc:
            # §6.1.2 step 2: "If the query for the public key fails to respond, the Verifier
            # MAY seek a later verification attempt by returning TEMPFAIL (key unavailable)."
            return self._result(sig, DKIMResultCode.TEMPERROR, f"key unavailable: {exc}")
        except DNSPermanentError as exc:
            return self._result(sig, DKIMResultCode.PERMERROR, f"key lookup failed: {exc}")
        first_error: str | None = None
        records = [r for r in answer.records if isinstance(r, TXT)]
        for txt in records[:DKIM_MAX_KEY_RECORDS]:
            try:
                return parse_key_record(txt.joined)
            except DKIMTagError as exc:
                first_error = first_error or str(exc)
        # §6.1.2 step 4: "...does not adhere to the format defined in this specification, the
        # Verifier MUST ignore the key record and return PERMFAIL (key syntax error)."
        return self._result(
            sig, DKIMResultCode.PERMERROR, f"key syntax error: {first_error or 'no TXT record'}"
        )

    def _check_key(self, sig: Signature, record: KeyRecord, flags: list[str]) -> DKIMResult | None:
        perm = DKIMResultCode.PERMERROR
        policy = self._policy
        # §3.6.1 p=: "An empty value means that this public key has been revoked."
        if record.key is None:
            return self._result(sig, perm, "key revoked")
        # §6.1.2 step 6/7: "If the public key data is not suitable for use with the algorithm
        # and key types defined by the "a=" and "k=" tags, the Verifier MUST immediately return
        # PERMFAIL (inappropriate key algorithm)."
        if record.key_type != sig.key_type:
            return self._result(sig, perm, "inappropriate key algorithm (k= does not match a=)")
        # §6.1.2 step 5: "If the "h=" tag exists in the public-key record and the hash
        # algorithm implied by the "a=" tag in the DKIM-Signature header field is not included
        # in the contents of the "h=" tag, the Verifier MUST ignore the key record and return
        # PERMFAIL (inappropriate hash algorithm)."
        if record.hashes is not None and sig.hash_name not in record.hashes:
            return self._result(sig, perm, "inappropriate hash algorithm (key h=)")
        # §3.6.1 s=: "*" or "email"; "Unrecognized service types MUST be ignored."
        if "*" not in record.services and "email" not in record.services:
            return self._result(sig, perm, "key is not for the email service (key s=)")
        # §3.6.1 t=s: "the "i=" domain MUST NOT be a subdomain of "d=""
        if record.strict and sig.identity_domain != sig.domain:
            return self._result(sig, perm, "i= is a subdomain of d= but the key has t=s")
        bits = record.key_bits or 0
        if record.key_type == "rsa":
            # RFC 8301 §3.2: "Verifiers MUST NOT consider signatures using RSA keys of less
            # than 1024 bits as valid signatures."
            if bits < policy.min_rsa_bits:
                return self._result(
                    sig, perm, f"RSA key of {bits} bits is below {policy.min_rsa_bits}",
                    key_bits=bits,
                )
            if bits < policy.weak_rsa_bits:
                flags.append("weak_key")
        if record.testing:
            flags.append("testing")
        return None

    def header_hash_input(self, sig: Signature) -> bytes:
        """The octets whose hash is signed (RFC 6376 §3.7), for ``sig`` over this header."""
        return header_hash_input(self._index, sig)


def header_hash_input(index: dict[bytes, list[RawField]], sig: Signature) -> bytes:
    """The octets whose hash ``sig`` signs (RFC 6376 §3.7) over the indexed header fields."""
    return hash_input(index, sig.signed_headers, sig.header_canon == "relaxed",
                      sig.raw_without_b)


def hash_input(
    index: dict[bytes, list[RawField]],
    names: Iterable[bytes],
    relaxed: bool,
    raw_without_b: bytes,
) -> bytes:
    """§5.4.2: "...the Signer MUST choose the last unused instance of that header field" for
    each name of h= in order; a name with no (unused) instance contributes nothing. Then the
    DKIM-Signature field itself, b= emptied, canonicalised, without its final CRLF (§3.7)."""
    selected = select_fields(index, names)
    raw = raw_without_b
    if not relaxed:
        return b"".join([f.raw for f in selected]) + raw
    colon = raw.index(b":")
    names_out = [f.lname for f in selected]
    names_out.append(raw[:colon].rstrip(b" \t").lower())
    values = raw_values(selected)
    values.append(raw[colon + 1 :])
    # (the signature field is hashed without its final CRLF, §3.7)
    return canonicalize_fields_relaxed(names_out, values)[:-2]


def select_fields(index: dict[bytes, list[RawField]], names: Iterable[bytes]) -> list[RawField]:
    """The fields ``h=`` names, in order (RFC 6376 §5.4.2: "the Signer MUST choose the last
    unused instance of that header field"; a name with no unused instance selects nothing).
    Signing and verifying select the same way."""
    selected: list[RawField] = []
    used: dict[bytes, int] = {}
    for name in names:
        instances = index.get(name)
        if instances:
            k = used.get(name, 0) + 1
            if k <= len(instances):
                used[name] = k
                selected.append(instances[-k])
    return selected


def raw_values(fields: Iterable[RawField]) -> list[bytes]:
    """Each field's raw bytes after the colon, without the final CRLF (RawField.value,
    inline: this runs for every selected field of every signature)."""
    return [r[c + 1 : -2] if (c := r.find(b":")) >= 0 else b"" for r in [f.raw for f in fields]]


def index_fields(fields: Iterable[RawField]) -> dict[bytes, list[RawField]]:
    index: dict[bytes, list[RawField]] = {}
    for f in fields:
        index.setdefault(f.lname, []).append(f)
    return index


async def verify(
    message: bytes,
    resolver: Resolver,
    *,
    clock: Clock,
    policy: VerifyPolicy = DEFAULT_VERIFY_POLICY,
) -> tuple[DKIMResult, ...]:
    """Verify a whole message (CRLF line endings) held in memory."""
    header, body = split_message(message)
    verifier = DKIMVerifier(header, clock=clock, policy=policy)
    verifier.update(body)
    return await verifier.finish(resolver)
