"""DANE for SMTP (layer L2, pure): TLSA records (RFC 6698) as RFC 7672 uses them.

* :func:`tlsa_name` - ``_PORT._tcp.HOST`` (RFC 6698 §3, RFC 7672 §2.2.3);
* :func:`lookup_tlsa` -> :class:`TLSALookup` - the TLSA RRset through an injected
  :class:`~mailmoat.resolver.Resolver`, trusted only when the answer was authenticated (the AD
  bit of a configured local validating resolver, RFC 7672 §2.1.3);
* :func:`classify` - which records are usable for SMTP (RFC 7672 §3.1);
* :func:`match_chain` -> :class:`DANEResult` - does the certificate chain a server presented
  match the usable records;
* :func:`evaluate` - lookup + match, the verdict a sending MTA (or ``mailmoat probe``) reports.

Outcomes are values (:class:`DANEStatus`), never exceptions (ARCHITECTURE.md rule 5).

(Section references are to RFC 7672 unless named; the rules are paraphrased, not quoted.)
§3.1 recommends DANE-EE(3) SPKI(1) SHA2-256(1) records for SMTP servers; §3.1.3 leaves the
client treatment of PKIX-TA(0) and PKIX-EE(1) undefined and lets clients treat them as
unusable - we do.

DANE-EE(3) (§3.1.1): the leaf matches the record, and that is all - names and validity dates
are not checked. DANE-TA(2) (§3.1.2): a certificate
of the chain (or the record itself, for a full ``2 0 0`` certificate) is the trust anchor, the
leaf must chain to it, and the server name must match one of the reference identifiers of
§3.2.2 (the TLSA base domain and the MX host name), wildcards only as the whole left-most
label (§3.2.3).

SECURITY: the chain is untrusted network input: every certificate is parsed by
``cryptography`` (a parse failure is a mismatch, never an exception), at most
``limits.DANE_MAX_CHAIN`` certificates are examined and at most ``limits.DANE_MAX_TLSA``
records are considered; TLSA data lengths are checked against their matching type. Nothing
from an unauthenticated DNS answer is ever used to authenticate a server. No I/O, no clock:
the time for the DANE-TA validity check is passed in.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from mailmoat import limits
from mailmoat.errors import DNSError
from mailmoat.resolver import TLSA, NoData, NXDomain, Resolver, RRType, is_ip_address

__all__ = [
    "DANEResult",
    "DANEStatus",
    "LookupStatus",
    "MatchingType",
    "Selector",
    "TLSALookup",
    "Usage",
    "certificate_names",
    "classify",
    "evaluate",
    "lookup_tlsa",
    "match_chain",
    "name_matches",
    "tlsa_name",
]


class Usage(enum.IntEnum):
    """Certificate usage field (RFC 6698 §2.1.1, acronyms from RFC 7218 §2.1)."""

    PKIX_TA = 0
    PKIX_EE = 1
    DANE_TA = 2
    DANE_EE = 3


class Selector(enum.IntEnum):
    """Selector field (RFC 6698 §2.1.2): the full certificate or its SubjectPublicKeyInfo."""

    CERT = 0
    SPKI = 1


class MatchingType(enum.IntEnum):
    """Matching type field (RFC 6698 §2.1.3)."""

    FULL = 0
    SHA2_256 = 1
    SHA2_512 = 2


#: RFC 6698 §2.1.3: the digest length each matching type must carry.
_DIGEST_SIZE: Final = {MatchingType.SHA2_256: 32, MatchingType.SHA2_512: 64}


class DANEStatus(enum.StrEnum):
    """The DANE verdict for one server (RFC 7672 §2.2 terms where they exist)."""

    #: A usable record matched (and, for DANE-TA, the chain and the name checked out).
    MATCHED = "matched"
    #: Usable records exist but none matched: a DANE sender MUST NOT deliver (§2.2).
    MISMATCH = "mismatch"
    #: Secure TLSA records, none usable: TLS is still mandatory but unauthenticated (§2.2).
    NO_USABLE = "no-usable-tlsa"
    #: No TLSA records at that name: DANE does not apply.
    NO_TLSA = "no-tlsa"
    #: Records exist but the answer was not authenticated (no AD bit, or a resolver we do not
    #: trust to validate): "insecure" or unknown - never used to authenticate (§2.1).
    INSECURE = "insecure"
    #: The lookup failed (timeout, SERVFAIL - which is also how a validating resolver reports
    #: "bogus"): "indeterminate", a sender defers (§2.1.1).
    INDETERMINATE = "indeterminate"


class LookupStatus(enum.StrEnum):
    SECURE = "secure"
    INSECURE = "insecure"
    NONE = "none"
    INDETERMINATE = "indeterminate"


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSALookup:
    """The TLSA RRset at ``name``; ``records`` are only to be trusted when ``status`` is
    ``secure`` (authenticated answer)."""

    name: str
    status: LookupStatus
    records: tuple[TLSA, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DANEResult:
    """The outcome of matching a chain against TLSA records (or of the lookup alone).

    ``matched`` is the record that matched and ``depth`` the chain position it matched
    (0 = leaf; ``None`` for a ``2 0 0`` trust anchor carried by the record itself);
    ``unusable`` lists the records set aside, each with the reason; ``name`` the reference
    identifier the certificate matched (DANE-TA only).
    """

    status: DANEStatus
    reason: str
    matched: TLSA | None = None
    depth: int | None = None
    usable: tuple[TLSA, ...] = ()
    unusable: tuple[tuple[TLSA, str], ...] = ()
    name: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.status is DANEStatus.MATCHED

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "reason": self.reason,
            "matched": _record_text(self.matched) if self.matched else None,
            "depth": self.depth,
            "usable": [_record_text(r) for r in self.usable],
            "unusable": [{"record": _record_text(r), "why": why} for r, why in self.unusable],
            "name": self.name,
        }


def _record_text(record: TLSA) -> str:
    """Presentation form: ``3 1 1 <hex>`` (RFC 6698 §2.2)."""
    return f"{record.usage} {record.selector} {record.mtype} {record.data.hex()}"


# --- lookup ------------------------------------------------------------------------------------
def tlsa_name(host: str, port: int = 25, protocol: str = "tcp") -> str:
    """RFC 6698 §3: "_PORT._PROTOCOL.BASE" - e.g. ``_25._tcp.mx.example.com``."""
    return f"_{port}._{protocol}.{host.lower().rstrip('.')}"


async def lookup_tlsa(resolver: Resolver, host: str, port: int = 25) -> TLSALookup:
    """Ask for the TLSA RRset of ``host:port``.

    RFC 7672 §2.1.3: DANE needs DNSSEC validation by a resolver the client trusts; the answer
    counts as ``secure`` only when :attr:`~mailmoat.resolver.Answer.authenticated` is set (the
    resolver reports AD only when configured to trust it, ``DNSResolver(trust_ad=True)``).
    A failed lookup is ``indeterminate``, never "no TLSA" (§2.1.1: a SERVFAIL may be a bogus
    signature being hidden from us).
    """
    name = tlsa_name(host, port)
    try:
        answer = await resolver.resolve(name, RRType.TLSA)
    except (NXDomain, NoData):
        return TLSALookup(name=name, status=LookupStatus.NONE)
    except DNSError as exc:  # temporary or permanent failure: no answer to rely on
        return TLSALookup(name=name, status=LookupStatus.INDETERMINATE, error=str(exc))
    records = tuple(r for r in answer.records if isinstance(r, TLSA))[: limits.DANE_MAX_TLSA]
    if not records:
        return TLSALookup(name=name, status=LookupStatus.NONE)
    status = LookupStatus.SECURE if answer.authenticated else LookupStatus.INSECURE
    return TLSALookup(name=name, status=status, records=records)


# --- records ---------------------------------------------------------------------------------
def classify(records: Sequence[TLSA]) -> tuple[tuple[TLSA, ...], tuple[tuple[TLSA, str], ...]]:
    """Split records into (usable, unusable-with-reason) for SMTP.

    RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) are treated as unusable. RFC 6698 §4.1 /
    RFC 7671 §4: unknown usages, selectors and matching types are unusable, and so is a digest
    of the wrong length. RFC 7671 §9 (digest algorithm agility): records with a weaker digest
    are ignored when a stronger one is published for the same usage and selector - SHA2-512
    beats SHA2-256 (as OpenSSL's DANE code does by default).
    """
    usable: list[TLSA] = []
    unusable: list[tuple[TLSA, str]] = []
    for record in records[: limits.DANE_MAX_TLSA]:
        if record.usage in (Usage.PKIX_TA, Usage.PKIX_EE):
            name = Usage(record.usage).name.replace("_", "-")
            unusable.append((record, f"usage {name}({record.usage}) is unusable for SMTP "
                                     "(RFC 7672 §3.1.3)"))
        elif record.usage not in (Usage.DANE_TA, Usage.DANE_EE):
            unusable.append((record, f"unknown certificate usage {record.usage}"))
        elif record.selector not in (Selector.CERT, Selector.SPKI):
            unusable.append((record, f"unknown selector {record.selector}"))
        elif record.mtype not in (MatchingType.FULL, MatchingType.SHA2_256,
                                  MatchingType.SHA2_512):
            unusable.append((record, f"unknown matching type {record.mtype}"))
        elif (size := _DIGEST_SIZE.get(MatchingType(record.mtype))) is not None and (
            len(record.data) != size
        ):
            unusable.append((record, f"digest of {len(record.data)} octets, expected {size}"))
        elif record.mtype == MatchingType.FULL and not record.data:
            unusable.append((record, "empty data"))
        else:
            usable.append(record)
    strongest = {
        (r.usage, r.selector) for r in usable if r.mtype == MatchingType.SHA2_512
    }
    kept: list[TLSA] = []
    for record in usable:
        if record.mtype == MatchingType.SHA2_256 and (record.usage, record.selector) in strongest:
            unusable.append((record, "SHA2-256 ignored: a SHA2-512 record is published for the "
                                     "same usage and selector (RFC 7671 §9)"))
        else:
            kept.append(record)
    return tuple(kept), tuple(unusable)


def _selected(cert: x509.Certificate, der: bytes, selector: int) -> bytes:
    """RFC 6698 §2.1.2: 0 = the full certificate (DER), 1 = SubjectPublicKeyInfo (DER)."""
    if selector == Selector.CERT:
        return der
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _association(data: bytes, mtype: int) -> bytes:
    """RFC 6698 §2.1.3: 0 = exact match, 1 = SHA-256, 2 = SHA-512 of the selected content."""
    if mtype == MatchingType.SHA2_256:
        return hashlib.sha256(data).digest()
    if mtype == MatchingType.SHA2_512:
        return hashlib.sha512(data).digest()
    return data


def _matches(record: TLSA, cert: x509.Certificate, der: bytes) -> bool:
    try:
        selected = _selected(cert, der, record.selector)
    except (ValueError, TypeError):  # an unsupported public key type
        return False
    return hmac.compare_digest(_association(selected, record.mtype), record.data)


# --- names (RFC 7672 §3.2.3) --------------------------------------------------------------------
def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names (and IP addresses) a certificate is for: the subjectAltName entries, or,
    when it has no DNS names, the subject common names (RFC 7672 §3.2.3: the CN is only
    considered without DNS subjectAltNames)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        san = None
    names: list[str] = []
    if san is not None:
        names = [n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    if not any(not is_ip_address(n) for n in names):
        try:
            names += [str(a.value).lower().rstrip(".")
                      for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        except ValueError:
            pass
    return tuple(dict.fromkeys(names))



def name_matches(presented: str, reference: str) -> bool:
    """One certificate name against one reference identifier, case-insensitively.

    RFC 7672 §3.2.3: a wildcard is accepted only as the complete left-most label - ``*``
    stands for exactly one label (``*.example.com`` matches ``mx.example.com``, not ``example.com``
    nor ``a.b.example.com``). IP addresses compare as addresses."""
    presented = presented.lower().rstrip(".")
    reference = reference.lower().rstrip(".").strip("[]")
    if not presented or not reference:
        return False
    if is_ip_address(reference) or is_ip_address(presented):
        try:
            return ipaddress.ip_address(presented) == ipaddress.ip_address(reference)
        except ValueError:
            return False
    if presented.startswith("*."):
        first, dot, rest = reference.partition(".")
        return bool(first) and bool(dot) and "." in rest and rest == presented[2:]
    return "*" not in presented and presented == reference


def _name_check(cert: x509.Certificate, references: Sequence[str]) -> str | None:
    names = certificate_names(cert)
    for reference in references:
        if any(name_matches(name, reference) for name in names):
            return reference
    return None


# --- chains --------------------------------------------------------------------------------------
def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """``issuer``'s name and key signed ``child`` (RFC 5280 §6.1.3 (a)(1)/(a)(4))."""
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _valid_at(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _chains_to(certs: Sequence[x509.Certificate], anchor: x509.Certificate,
               anchor_depth: int | None) -> bool:
    """The leaf chains to ``anchor`` through the presented intermediates, in order.

    With the anchor at ``anchor_depth`` of the chain, every certificate below it must be
    issued by the next one. For an anchor carried by a ``2 0 0`` record, the chain is walked
    upwards until a certificate is issued by the anchor."""
    if anchor_depth is not None:
        return all(_issued_by(certs[d], certs[d + 1]) for d in range(anchor_depth))
    for depth, cert in enumerate(certs):
        if _issued_by(cert, anchor):
            return True
        if depth + 1 >= len(certs) or not _issued_by(cert, certs[depth + 1]):
            return False
    return False


def match_chain(
    tlsa_records: Sequence[TLSA],
    chain_der: Sequence[bytes],
    *,
    hostname: str,
    base_domain: str | None = None,
    now: datetime.datetime | None = None,
) -> DANEResult:
    """Match the chain a server presented (DER, leaf first) against its TLSA records.

    Only the records themselves are judged here: call :func:`evaluate` to combine this with
    the DNSSEC status of the lookup (unauthenticated records must never reach this function
    as evidence). ``hostname`` is the MX host name and ``base_domain`` the TLSA base domain
    after CNAME expansion when it differs (§2.2.3); both are reference identifiers for
    DANE-TA(2) (§3.2.2). ``now`` enables the validity-date check of DANE-TA chains (DANE-EE
    ignores dates, §3.1.1).
    """
    usable, unusable = classify(tlsa_records)
    if not usable:
        return DANEResult(
            status=DANEStatus.NO_USABLE,
            reason="no usable TLSA records: TLS is required but unauthenticated "
                   "(RFC 7672 §2.2)" if tlsa_records else "no TLSA records",
            unusable=unusable,
        )
    if not chain_der:
        return DANEResult(status=DANEStatus.MISMATCH, reason="the server sent no certificate",
                          usable=usable, unusable=unusable)
    certs: list[x509.Certificate] = []
    for der in chain_der[: limits.DANE_MAX_CHAIN]:
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError:
            break  # the rest of the chain cannot be used
    if not certs:
        return DANEResult(status=DANEStatus.MISMATCH,
                          reason="the server's certificate cannot be parsed",
                          usable=usable, unusable=unusable)
    ders = list(chain_der[: len(certs)])
    references = tuple(dict.fromkeys(
        n.lower().rstrip(".") for n in (base_domain, hostname) if n
    ))
    problems: list[str] = []

    # DANE-EE(3) (§3.1.1): the leaf, nothing else.
    for record in usable:
        if record.usage == Usage.DANE_EE and _matches(record, certs[0], ders[0]):
            return DANEResult(
                status=DANEStatus.MATCHED,
                reason=f"DANE-EE: the server certificate matches TLSA {_short(record)}",
                matched=record, depth=0, usable=usable, unusable=unusable,
            )
    # DANE-TA(2) (§3.1.2): a trust anchor in the chain (depth >= 1), or the record itself.
    for record in usable:
        if record.usage != Usage.DANE_TA:
            continue
        anchors: list[tuple[x509.Certificate, int | None]] = [
            (cert, depth) for depth, cert in enumerate(certs)
            if depth >= 1 and _matches(record, cert, ders[depth])
        ]
        if record.selector == Selector.CERT and record.mtype == MatchingType.FULL:
            try:
                anchors.append((x509.load_der_x509_certificate(record.data), None))
            except ValueError:
                problems.append(f"TLSA {_short(record)}: data is not a certificate")
        for anchor, depth in anchors:
            if not _chains_to(certs, anchor, depth):
                problems.append(f"DANE-TA {_short(record)}: the trust anchor matched but the "
                                "server certificate does not chain to it")
                continue
            if now is not None:
                path = certs[: depth if depth is not None else len(certs)]
                expired = [c for c in path if not _valid_at(c, now)]
                if expired:
                    problems.append(f"DANE-TA {_short(record)}: certificate "
                                    f"{expired[0].subject.rfc4514_string()} is outside its "
                                    "validity period")
                    continue
            matched_name = _name_check(certs[0], references)
            if matched_name is None:
                problems.append(
                    f"DANE-TA {_short(record)}: the chain matches but the certificate names "
                    f"({', '.join(certificate_names(certs[0])) or 'none'}) match none of "
                    f"{', '.join(references)} (RFC 7672 §3.2.2)")
                continue
            where = "the TLSA record" if depth is None else f"chain depth {depth}"
            return DANEResult(
                status=DANEStatus.MATCHED,
                reason=f"DANE-TA: trust anchor at {where} matches TLSA {_short(record)}; "
                       f"the name {matched_name} matches",
                matched=record, depth=depth, usable=usable, unusable=unusable,
                name=matched_name,
            )
    reason = "; ".join(problems) if problems else (
        "no usable TLSA record matches the certificate chain")
    return DANEResult(status=DANEStatus.MISMATCH, reason=reason, usable=usable,
                      unusable=unusable)


def _short(record: TLSA) -> str:
    data = record.data.hex()
    more = "…" if len(data) > 16 else ""
    return f"{record.usage} {record.selector} {record.mtype} {data[:16]}{more}"


def evaluate(
    lookup: TLSALookup,
    chain_der: Sequence[bytes] | None,
    *,
    hostname: str,
    base_domain: str | None = None,
    now: datetime.datetime | None = None,
) -> DANEResult:
    """The DANE verdict for a server: the lookup's DNSSEC status first, then the chain.

    ``chain_der`` is ``None`` when no TLS session was established (with secure usable records
    that is a failure: §2.2 "the SMTP client MUST NOT deliver" without TLS)."""
    if lookup.status is LookupStatus.NONE:
        return DANEResult(status=DANEStatus.NO_TLSA, reason=f"no TLSA records at {lookup.name}")
    if lookup.status is LookupStatus.INDETERMINATE:
        return DANEResult(status=DANEStatus.INDETERMINATE,
                          reason=f"TLSA lookup of {lookup.name} failed: {lookup.error}")
    if lookup.status is LookupStatus.INSECURE:
        return DANEResult(
            status=DANEStatus.INSECURE,
            reason=f"{len(lookup.records)} TLSA record(s) at {lookup.name}, but the answer was "
                   "not DNSSEC-authenticated (no AD bit from a trusted validating resolver): "
                   "insecure/unknown, not used",
        )
    if chain_der is None:
        usable, unusable = classify(lookup.records)
        if not usable:
            return DANEResult(status=DANEStatus.NO_USABLE,
                              reason="no usable TLSA records (RFC 7672 §2.2)", unusable=unusable)
        return DANEResult(status=DANEStatus.MISMATCH,
                          reason="secure TLSA records are published but no TLS session was "
                                 "established (RFC 7672 §2.2: TLS is mandatory)",
                          usable=usable, unusable=unusable)
    return match_chain(lookup.records, chain_der, hostname=hostname, base_domain=base_domain,
                       now=now)
