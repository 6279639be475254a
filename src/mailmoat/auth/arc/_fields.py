"""ARC header fields: reading the instance and tags of ARC-Seal, ARC-Message-Signature and
ARC-Authentication-Results (RFC 8617 §4.1), and the shared key/signature checks.

SECURITY: every ARC field is untrusted message data. Tag lists are parsed by the bounded,
linear DKIM tag-list parser (:func:`mailmoat.auth.dkim.internals.parse_tag_list`, fields over
``limits.DKIM_SIGNATURE_FIELD_MAX`` refused); instances are at most two digits and must lie
in 1..``limits.ARC_MAX_INSTANCES``; ``h=`` is bounded by ``limits.DKIM_MAX_SIGNED_HEADERS``;
key records go through the DKIM key parser (RSA size bounded before use). Anything malformed
becomes a reason string, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailmoat.auth.dkim.internals import (
    DKIMTagError,
    KeyRecord,
    RawField,
    check_domain,
    parse_key_record,
    parse_tag_list,
)
from mailmoat.errors import DNSPermanentError, DNSTemporaryError
from mailmoat.limits import (
    ARC_MAX_INSTANCES,
    DKIM_MAX_KEY_RECORDS,
    DKIM_MAX_SIGNED_HEADERS,
    DKIM_SIGNATURE_FIELD_MAX,
)
from mailmoat.message.dkim_canon import CanonKind, canonicalize_header_relaxed
from mailmoat.resolver import TXT, NoData, NXDomain, Resolver, RRType

__all__ = [
    "AAR_NAME",
    "AMS_NAME",
    "ARC_NAMES",
    "AS_NAME",
    "AMSig",
    "ARCField",
    "ASeal",
    "fetch_key",
    "parse_ams",
    "parse_arc_field",
    "parse_as",
    "relaxed",
    "verify_signature",
]

AAR_NAME: Final = b"arc-authentication-results"
AMS_NAME: Final = b"arc-message-signature"
AS_NAME: Final = b"arc-seal"
ARC_NAMES: Final = (AAR_NAME, AMS_NAME, AS_NAME)

#: a= values ARC accepts. RFC 8617 §4.1.2/§4.1.3 take a= from DKIM (RFC 6376 §3.5); RFC 8301
#: §3.1: "Verifiers MUST NOT consider signatures using SHA-1 to be valid" - so rsa-sha1 is out.
ALGORITHMS: Final[dict[str, tuple[str, str]]] = {
    "rsa-sha256": ("rsa", "sha256"),
    "ed25519-sha256": ("ed25519", "sha256"),
}

_FWS: Final = b" \t\r\n"
# RFC 8617 §4.1.1:
#   arc-info = instance [CFWS] ";" authres-payload
#   instance = [CFWS] %s"i" [CFWS] "=" [CFWS] arc-instance
#   arc-instance = 1*2DIGIT  ; 1 - 50
# (comments before i= are not seen in practice; we accept FWS only)
_AAR_INSTANCE: Final = re.compile(rb"[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*([0-9]+)[ \t\r\n]*;")
_DIGITS: Final = re.compile(rb"[0-9]+")
# RFC 5322 §3.6.8 field-name = 1*ftext; ftext = %d33-57 / %d59-126
_FIELD_NAME: Final = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
# (no white space class after the padding that could also match before it: linear matching)
_B64_CHARS: Final = re.compile(rb"[A-Za-z0-9+/ \t\r\n]*(?:=[ \t\r\n]*){0,2}")
_HASHES: Final = {"sha256": hashes.SHA256}
_PKCS1: Final = padding.PKCS1v15()


def _instance(value: bytes) -> int | None:
    """An ARC instance: 1*2DIGIT in 1..ARC_MAX_INSTANCES (RFC 8617 §4.2.1 limits the i= tag
    to 1-50 inclusive)."""
    if not _DIGITS.fullmatch(value) or len(value) > 2:
        return None
    number = int(value)
    return number if 1 <= number <= ARC_MAX_INSTANCES else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ARCField:
    """One ARC header field with its instance (None: unreadable) and why it is unreadable."""

    field: RawField
    kind: bytes
    instance: int | None
    problem: str = ""


def parse_arc_field(f: RawField) -> ARCField:
    """Read the instance of one ARC field; a bad or missing ``i=`` is a problem, not an error."""
    value = f.value
    if len(f.raw) > DKIM_SIGNATURE_FIELD_MAX:
        return ARCField(field=f, kind=f.lname, instance=None,
                        problem=f"field longer than {DKIM_SIGNATURE_FIELD_MAX} octets")
    if f.lname == AAR_NAME:
        # §4.1.1: the AAR value starts with the instance tag and a ";".
        m = _AAR_INSTANCE.match(value)
        number = _instance(m.group(1)) if m else None
        if number is None:
            return ARCField(field=f, kind=f.lname, instance=None,
                            problem="ARC-Authentication-Results does not start with i=1..50;")
        return ARCField(field=f, kind=f.lname, instance=number)
    try:
        tags = parse_tag_list(value)
    except DKIMTagError as exc:
        return ARCField(field=f, kind=f.lname, instance=None, problem=str(exc))
    if "i" not in tags:
        return ARCField(field=f, kind=f.lname, instance=None, problem="no i= tag")
    number = _instance(tags["i"].value)
    if number is None:
        return ARCField(field=f, kind=f.lname, instance=None,
                        problem=f"i= is not an instance 1..{ARC_MAX_INSTANCES}")
    return ARCField(field=f, kind=f.lname, instance=number)


def _b64(value: bytes, what: str) -> bytes:
    # RFC 6376 §2.4 base64string = ALPHADIGITPS *([FWS] ALPHADIGITPS) [[FWS] "=" [[FWS] "="]]
    if not _B64_CHARS.fullmatch(value):
        raise DKIMTagError(f"{what} is not base64")
    compact = value.translate(None, _FWS)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise DKIMTagError(f"{what} is not valid base64") from None
    if not data:
        raise DKIMTagError(f"{what} is empty")
    return data


def _timestamp(value: bytes | None, name: str) -> int | None:
    if value is None:
        return None
    # RFC 6376 §3.5 t=/x=: 1*12DIGIT
    if not _DIGITS.fullmatch(value) or len(value) > 12:
        raise DKIMTagError(f"{name}= is not a number of at most 12 digits")
    return int(value)


def _algorithm(value: bytes) -> tuple[str, str, str]:
    name = value.decode("ascii", "replace")
    if name not in ALGORITHMS:
        raise DKIMTagError(f"unsupported algorithm a={name[:40]}")
    key_type, hash_name = ALGORITHMS[name]
    return name, key_type, hash_name


def _domain(value: bytes, what: str) -> str:
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise DKIMTagError(f"{what} is not ASCII") from None
    return check_domain(text, what)


def _without_b(raw: bytes, after_eq: int, end: int) -> bytes:
    """The field (no final CRLF) with the b= value removed (RFC 6376 §3.7: "the value of the
    "b=" tag ... deleted (i.e., treated as the empty string)"), as for DKIM. ``after_eq`` and
    ``end`` are the b= tag's offsets in the value (after the colon)."""
    field = raw[:-2] if raw.endswith(b"\r\n") else raw
    offset = field.find(b":") + 1
    return field[: offset + after_eq] + field[offset + end :]


@dataclass(frozen=True, slots=True, kw_only=True)
class AMSig:
    """A parsed ARC-Message-Signature (RFC 8617 §4.1.2: a DKIM-Signature "with the exception
    of" ``i=`` being the instance and no ``v=``)."""

    instance: int
    algorithm: str
    key_type: str
    hash_name: str
    signature: bytes
    body_hash: bytes
    header_canon: CanonKind
    body_canon: CanonKind
    domain: str
    selector: str
    signed_headers: tuple[bytes, ...]
    length: int | None
    timestamp: int | None
    expiration: int | None
    raw_without_b: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ASeal:
    """A parsed ARC-Seal (RFC 8617 §4.1.3)."""

    instance: int
    algorithm: str
    key_type: str
    hash_name: str
    signature: bytes
    cv: str
    domain: str
    selector: str
    timestamp: int | None
    raw_without_b: bytes


def _canon(value: bytes) -> CanonKind:
    if value == b"simple":
        return "simple"
    if value == b"relaxed":
        return "relaxed"
    raise DKIMTagError(f"unknown canonicalization {value[:20].decode('ascii', 'replace')!r}")


def parse_ams(f: RawField, instance: int) -> AMSig:
    """Parse an AMS; :class:`DKIMTagError` says what is wrong."""
    tags = parse_tag_list(f.value)
    for required in ("i", "a", "b", "bh", "d", "h", "s"):
        if required not in tags:
            raise DKIMTagError(f"required tag {required}= is missing")
    algorithm, key_type, hash_name = _algorithm(tags["a"].value)
    signature = _b64(tags["b"].value, "b=")
    body_hash = _b64(tags["bh"].value, "bh=")
    # RFC 6376 §3.5 c=: "header/body"; one name means that header algorithm and "simple"
    # body. An absent c= is DKIM's "simple/simple", but ARC signers all use relaxed/relaxed
    # and the ARC test suite (ams_fields_c_na: pass) and dkimpy read an AMS without c= as
    # relaxed/relaxed; we follow them (a signature that verifies under neither fails).
    header_canon: CanonKind = "relaxed"
    body_canon: CanonKind = "relaxed"
    if "c" in tags:
        body_canon = "simple"
        parts = tags["c"].value.split(b"/")
        if len(parts) > 2:
            raise DKIMTagError("bad c=")
        header_canon = _canon(parts[0])
        if len(parts) == 2:
            body_canon = _canon(parts[1])
    domain = _domain(tags["d"].value, "d=")
    selector = _domain(tags["s"].value, "s=")
    # §3.5 h= (hdr-name *( ":" hdr-name )). The ARC suite accepts an empty h= and empty names
    # (they select nothing); names are bounded and checked.
    names = [n.strip(_FWS).lower() for n in tags["h"].value.split(b":")]
    names = [n for n in names if n]
    if len(names) > DKIM_MAX_SIGNED_HEADERS:
        raise DKIMTagError(f"h= lists more than {DKIM_MAX_SIGNED_HEADERS} header fields")
    for name in names:
        if not _FIELD_NAME.fullmatch(name):
            raise DKIMTagError("bad header field name in h=")
    # RFC 8617 §4.1.2 keeps ARC-Seal fields out of the AMS h= list (the seals cover them);
    # an AMS listing one is invalid (the ARC suite's ams_fields_h_includes_as: fail; dkimpy
    # refuses it the same way).
    if AS_NAME in names:
        raise DKIMTagError("h= includes ARC-Seal")
    length = None
    if "l" in tags:
        value = tags["l"].value
        if not _DIGITS.fullmatch(value) or len(value) > 76:
            raise DKIMTagError("l= is not a decimal number")
        length = int(value)
    timestamp = _timestamp(tags["t"].value if "t" in tags else None, "t")
    expiration = _timestamp(tags["x"].value if "x" in tags else None, "x")
    if timestamp is not None and expiration is not None and expiration <= timestamp:
        raise DKIMTagError("x= is not greater than t=")
    return AMSig(
        instance=instance, algorithm=algorithm, key_type=key_type, hash_name=hash_name,
        signature=signature, body_hash=body_hash, header_canon=header_canon,
        body_canon=body_canon, domain=domain, selector=selector, signed_headers=tuple(names),
        length=length, timestamp=timestamp, expiration=expiration,
        raw_without_b=_without_b(f.raw, tags["b"].after_eq, tags["b"].end),
    )


def parse_as(f: RawField, instance: int) -> ASeal:
    """Parse an ARC-Seal; :class:`DKIMTagError` says what is wrong."""
    tags = parse_tag_list(f.value)
    for required in ("i", "a", "b", "cv", "d", "s"):
        if required not in tags:
            raise DKIMTagError(f"required tag {required}= is missing")
    # RFC 8617 §4.1.3: the AS signs the ARC Sets, not a list of fields: "h" is not a tag of
    # the ARC-Seal, and a seal carrying one is invalid (as dkimpy and OpenARC treat it).
    if "h" in tags:
        raise DKIMTagError("h= is not allowed in an ARC-Seal")
    algorithm, key_type, hash_name = _algorithm(tags["a"].value)
    signature = _b64(tags["b"].value, "b=")
    # §4.1.3 / §4.4: chain-status = ("none" / "fail" / "pass")
    cv = tags["cv"].value.lower()
    if cv not in (b"none", b"fail", b"pass"):
        raise DKIMTagError("cv= is not none, fail or pass")
    return ASeal(
        instance=instance, algorithm=algorithm, key_type=key_type, hash_name=hash_name,
        signature=signature, cv=cv.decode("ascii"),
        domain=_domain(tags["d"].value, "d="), selector=_domain(tags["s"].value, "s="),
        timestamp=_timestamp(tags["t"].value if "t" in tags else None, "t"),
        raw_without_b=_without_b(f.raw, tags["b"].after_eq, tags["b"].end),
    )


def relaxed(f: RawField) -> bytes:
    """RFC 6376 §3.4.2 relaxed canonical form of one field, with CRLF."""
    return canonicalize_header_relaxed(f.name, f.value)


def relaxed_without_crlf(raw_without_b: bytes) -> bytes:
    colon = raw_without_b.index(b":")
    return canonicalize_header_relaxed(raw_without_b[:colon], raw_without_b[colon + 1 :])[:-2]


async def fetch_key(
    resolver: Resolver, selector: str, domain: str, cache: dict[str, KeyRecord | str]
) -> KeyRecord | str:
    """The key record at ``<selector>._domainkey.<domain>`` (RFC 8617 §4.1.2/§4.1.3 use DKIM's
    key records, RFC 6376 §3.6.2), or the reason there is none. ``cache`` spares a second query
    when the AS and AMS share a key (the usual case)."""
    name = f"{selector}._domainkey.{domain}"
    if name in cache:
        return cache[name]
    result: KeyRecord | str
    try:
        answer = await resolver.resolve(name, RRType.TXT)
    except (NXDomain, NoData):
        result = f"no key at {name}"
    except DNSTemporaryError as exc:
        result = f"key at {name} unavailable (temporary DNS error: {exc})"
    except DNSPermanentError as exc:
        result = f"key lookup for {name} failed: {exc}"
    else:
        result = f"no usable key record at {name}"
        records = [r for r in answer.records if isinstance(r, TXT)]
        for txt in records[:DKIM_MAX_KEY_RECORDS]:
            try:
                result = parse_key_record(txt.joined)
                break
            except DKIMTagError as exc:
                result = f"key syntax error at {name}: {exc}"
    cache[name] = result
    return result


def check_key(record: KeyRecord, key_type: str, hash_name: str, min_rsa_bits: int) -> str:
    """Why ``record`` cannot verify a signature of this type ("" if it can)."""
    if record.key is None:
        return "key revoked (empty p=)"
    if record.key_type != key_type:
        return "inappropriate key algorithm (k= does not match a=)"
    if record.hashes is not None and hash_name not in record.hashes:
        return "inappropriate hash algorithm (key h=)"
    if "*" not in record.services and "email" not in record.services:
        return "key is not for the email service (key s=)"
    # RFC 8301 §3.2: "Verifiers MUST NOT consider signatures using RSA keys of less than 1024
    # bits as valid signatures."
    if record.key_type == "rsa" and (record.key_bits or 0) < min_rsa_bits:
        return f"RSA key of {record.key_bits} bits is below {min_rsa_bits}"
    return ""


def verify_signature(record: KeyRecord, hash_name: str, signature: bytes, data: bytes) -> bool:
    key = record.key
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, _PKCS1, _HASHES[hash_name]())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data
            key.verify(signature, hashlib.sha256(data).digest())
        else:
            return False
    except InvalidSignature:
        return False
    return True
